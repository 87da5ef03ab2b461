"""DeleteCollection racing searches and upserts over gRPC (issue #7, defect 4): every call ends
promptly with OK or NOT_FOUND, and health checks keep answering meanwhile.

Before the fix, a search that found its collection dropped spun through up to 100,000 read
transactions (~10 s) on the event loop, freezing every call on the server, then failed with INTERNAL.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fakes import FakeServer
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

DIMS = 64
OK_CODES = {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}


def vec(rng: np.random.Generator) -> pb.Vectors:
    return pb.Vectors(code=rng.normal(size=DIMS).astype(np.float32).tolist())


def test_delete_collection_during_searches_and_upserts_over_grpc(tmp_path: Path) -> None:
    with FakeServer(tmp_path) as server:
        ch = grpc.insecure_channel(server.target)
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        health = health_pb2_grpc.HealthStub(ch)
        cfg = pb.CollectionConfig(code_bits=DIMS, rescore_dims=DIMS, rescore_dtype="float32")
        rng = np.random.default_rng(0)
        seed_docs = [pb.Document(id=f"d{i}", vectors=vec(rng)) for i in range(1000)]

        def recreate() -> None:
            search.CreateCollection(pb.CreateCollectionRequest(name="c", config=cfg), timeout=10)
            search.Upsert(pb.UpsertRequest(collection="c", documents=seed_docs), timeout=10)

        recreate()
        stop = threading.Event()
        calls: list[tuple[str, grpc.StatusCode, float]] = []
        health_s: list[float] = []

        def timed(kind: str, fn: object, *args: object) -> None:
            t = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                fn(*args, timeout=15)  # type: ignore[operator]
            except grpc.RpcError as exc:
                code = exc.code()
            calls.append((kind, code, time.perf_counter() - t))

        def searcher(seed: int) -> None:
            r = np.random.default_rng(seed)
            while not stop.is_set():
                timed("search", search.Search, pb.SearchRequest(collection="c", vectors=vec(r), top_k=5))

        def upserter() -> None:
            r = np.random.default_rng(99)
            i = 0
            while not stop.is_set():
                doc = pb.Document(id=f"w{i}", vectors=vec(r))
                timed("upsert", search.Upsert, pb.UpsertRequest(collection="c", documents=[doc]))
                i += 1

        def prober() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                health.Check(health_pb2.HealthCheckRequest(), timeout=15)  # type: ignore[attr-defined]
                health_s.append(time.perf_counter() - t)
                time.sleep(0.005)

        threads = [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
        threads += [threading.Thread(target=upserter), threading.Thread(target=prober)]
        for t in threads:
            t.start()
        try:
            for _ in range(10):
                time.sleep(0.1)
                timed("delete", search.DeleteCollection, pb.DeleteCollectionRequest(name="c"))
                time.sleep(0.03)
                recreate()
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        ch.close()

    bad = [(k, c) for k, c, _ in calls if c not in OK_CODES]
    assert not bad, bad[:5]
    by_kind = {k: [s for kk, _, s in calls if kk == k] for k in ("search", "upsert", "delete")}
    not_found = sum(1 for k, c, _ in calls if k == "search" and c == grpc.StatusCode.NOT_FOUND)
    lat = np.array([s for _, _, s in calls])
    summary = ", ".join(
        f"{k} n={len(v)} p99={np.quantile(v, 0.99) * 1e3:.1f} ms max={max(v) * 1e3:.1f} ms"
        for k, v in by_kind.items()
    )
    print(
        f"\n{summary}; searches NOT_FOUND: {not_found}; health n={len(health_s)} "
        f"p99={np.quantile(health_s, 0.99) * 1e3:.1f} ms max={max(health_s) * 1e3:.1f} ms"
    )
    assert not_found > 0, "the race never happened: no search met a dropped collection"
    # bounds are loose for a loaded 2-core CI machine; the defect held every call ~10 s
    assert float(np.quantile(lat, 0.99)) < 0.25 and float(lat.max()) < 2.0
    assert float(np.quantile(health_s, 0.99)) < 0.1 and max(health_s) < 1.0
