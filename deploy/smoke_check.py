"""The checks deploy/smoke.sh runs against a running CPU container, over gRPC from the host.

    python deploy/smoke_check.py ADDRESS CONTAINER serve      # health, Embed, Upsert, Search; SIGTERM drain
    python deploy/smoke_check.py ADDRESS CONTAINER persisted  # after a restart on the same data volume

`serve` waits for SERVING, checks health, GetModelInfo, Embed, CreateCollection (a filterable field),
Upsert (text embedded in the container), Search (with and without a filter) and GetDocuments; then
sends SIGTERM to the container and checks the drain: health turns NOT_SERVING at once while calls are
still answered for the drain delay, then calls are refused, and the container exits with code 0.
`persisted` checks that a fresh container on the same data volume holds and finds the documents.
Each step prints one line; any failure exits non-zero with the reason.
"""

from __future__ import annotations

import subprocess
import sys
import time

import grpc

from zembed.service.client import Client

DOCS = [
    {"id": "cat", "text": "A cat sleeps on the sofa in the afternoon sun.", "metadata": {"topic": "pets"}},
    {"id": "stocks", "text": "Stock markets fell after the rate decision.", "metadata": {"topic": "money"}},
    {"id": "bread", "text": "The bakery bakes fresh bread every morning.", "metadata": {"topic": "food"}},
    {"id": "dog", "text": "A dog naps on the rug by the fireplace.", "metadata": {"topic": "pets"}},
]
QUERY = "a kitten napping on a couch"


def fail(why: str) -> None:
    raise SystemExit(f"smoke check failed: {why}")


def wait_serving(c: Client, seconds: float) -> float:
    t0 = time.monotonic()
    while True:
        try:
            if c.health() == "SERVING":
                return time.monotonic() - t0
        except grpc.RpcError:
            pass
        if time.monotonic() - t0 > seconds:
            fail(f"the container was not SERVING within {seconds:.0f} s")
        time.sleep(0.5)


def serve(c: Client, container: str) -> None:
    print(f"SERVING after {wait_serving(c, 180):.1f} s", flush=True)
    info = c.model_info()
    print(f"model: {info.model_id}, dims {info.dimensions}, provider {info.provider}")
    out = c.embed(["hello from the container", "zweiter Text"], input_type="query")
    if out.shape != (2, info.dimensions[0]) or out.usage.total_tokens <= 0:
        fail(f"Embed answered shape {out.shape}, usage {out.usage}")
    print(f"Embed: {out.shape[0]} vectors of {out.shape[1]} dims, {out.usage.total_tokens} tokens")
    coll = c.create_collection("smoke", filterable=["topic"])
    print(f"CreateCollection: {coll.name}, {coll.code_bits}-bit codes, filterable {coll.filterable}")
    up = c.upsert("smoke", DOCS)
    if up.upserted != len(DOCS):
        fail(f"Upsert stored {up.upserted} of {len(DOCS)}")
    print(f"Upsert: {up.upserted} documents embedded and stored in the container")
    hits = c.search("smoke", text=QUERY, top_k=2)
    if [h.id for h in hits][:1] != ["cat"]:
        fail(f"Search for {QUERY!r} found {[(h.id, h.score) for h in hits]}")
    print(f"Search: {[(h.id, round(h.score, 3)) for h in hits]}")
    flt = c.search("smoke", text=QUERY, top_k=4, filter={"topic": {"$ne": "pets"}})
    if {h.id for h in flt} != {"stocks", "bread"} or any(h.metadata["topic"] == "pets" for h in flt):
        fail(f"filtered Search found {[(h.id, h.metadata) for h in flt]}")
    print(f"Search with topic != pets: {sorted(h.id for h in flt)}")
    docs = c.get_documents("smoke", ["bread", "nope"])
    if [(d.found, d.metadata) for d in docs] != [(True, {"topic": "food"}), (False, {})]:
        fail(f"GetDocuments answered {docs}")
    drain(c, container)


def drain(c: Client, container: str) -> None:
    subprocess.run(["podman", "kill", "--signal", "TERM", container], check=True, capture_output=True)
    t0 = time.monotonic()
    while c.health() != "NOT_SERVING":
        if time.monotonic() - t0 > 2:
            fail("health still SERVING 2 s after SIGTERM")
        time.sleep(0.05)
    print(f"SIGTERM: health NOT_SERVING after {time.monotonic() - t0:.2f} s")
    served = c.embed(["still answered while draining"])
    if time.monotonic() - t0 > 3:
        fail("the drain delay (3 s) was over before the call during the drain returned")
    print(f"during the drain delay: Embed answered ({served.shape[1]} dims)")
    while True:
        try:
            c.embed(["after the drain delay"], input_type="query")
        except grpc.RpcError as exc:
            print(f"after the delay: new calls refused ({exc.code().name}) at {time.monotonic() - t0:.1f} s")
            break
        if time.monotonic() - t0 > 15:
            fail("calls still answered 15 s after SIGTERM")
        time.sleep(0.1)
    code = subprocess.run(["podman", "wait", container], check=True, capture_output=True, text=True)
    if code.stdout.strip() != "0":
        fail(f"the container exited with code {code.stdout.strip()}, not 0")
    print(f"exit code 0 after {time.monotonic() - t0:.1f} s")


def persisted(c: Client) -> None:
    print(f"SERVING after {wait_serving(c, 180):.1f} s (restarted on the same data volume)")
    coll = c.get_collection("smoke")
    hits = c.search("smoke", text=QUERY, top_k=1)
    if coll.count != len(DOCS) or hits[0].id != "cat":
        fail(f"after the restart: {coll.count} documents, top hit {hits[0].id if hits else None}")
    print(f"data volume kept {coll.count} documents; Search finds {hits[0].id!r}")


def main() -> None:
    address, container, phase = sys.argv[1:4]
    with Client(address, timeout=30) as c:
        if phase == "serve":
            serve(c, container)
        elif phase == "persisted":
            persisted(c)
        else:
            fail(f"unknown phase {phase!r}")


if __name__ == "__main__":
    main()
