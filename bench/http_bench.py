"""HTTP embed throughput against gRPC Embed on the same texts (MiniLM on CPU, one `zembed serve`
subprocess on loopback serving both protocols from the same engine and batcher).

8 concurrent callers x 8 texts per call; 8 rounds, each running every client kind once on the same
texts (order reversed every other round); the ratio is the median over rounds of each kind's rate
over the gRPC rate of the same round:

- gRPC ``Embed`` through ``service.client.Client`` (float32 bytes): the baseline;
- HTTP ``POST /v1/models/embed`` (the hosted API's path) with ``encoding_format`` float (JSON
  numbers, the SDK's default) and base64, over keep-alive httpx connections;
- HTTP ``POST /v1/embeddings`` (OpenAI shape, base64 as the openai SDK asks by default).

Then both protocols AT ONCE on the same server (half the callers gRPC, half HTTP, for a fixed
time): the texts each completed, HTTP / gRPC. On a shared, loaded VM the sequential rounds drift
(other work comes and goes); the simultaneous run sees one load for both, so it is the figure to
read there. Prints tables and the ratios (bar >= 0.9); writes bench/results/http.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

sys.path.insert(0, os.path.dirname(__file__))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import start_server, table, write_json  # noqa: E402
from embed_cache import minilm_dir  # noqa: E402
from passages import passages  # noqa: E402

from zembed.service.client import Client  # noqa: E402

PER_CALL = 8
CLIENTS = 8


def concurrent(chunks: list[list[str]], make: Callable[[], Callable[[list[str]], None]]) -> float:
    """texts/s with CLIENTS threads, each with its own connection, taking every CLIENTS-th call."""
    callers = [make() for _ in range(CLIENTS)]
    t = time.perf_counter()

    def work(k: int) -> None:
        for j in range(k, len(chunks), CLIENTS):
            callers[k](chunks[j])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(len(c) for c in chunks) / (time.perf_counter() - t)


REFUSED: dict[str, int] = {}  # calls refused for overload (429 / RESOURCE_EXHAUSTED), then retried


def mixed(
    chunks: list[list[str]],
    a: Callable[[], Callable[[list[str]], None]],
    b: Callable[[], Callable[[list[str]], None]],
    seconds: float,
) -> tuple[int, int]:
    """Texts completed in ``seconds`` by CLIENTS/2 callers of kind ``a`` and CLIENTS/2 of kind ``b``
    running AT THE SAME TIME against the same server (one queue): both see the same machine load, so
    their ratio is what one protocol costs against the other, free of this VM's drift."""
    half = CLIENTS // 2
    callers = [a() for _ in range(half)] + [b() for _ in range(half)]
    done = [0] * len(callers)
    stop = threading.Event()

    def work(k: int) -> None:
        j = k
        while not stop.is_set():
            callers[k](chunks[j % len(chunks)])
            if not stop.is_set():
                done[k] += len(chunks[j % len(chunks)])
            j += len(callers)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(callers))]
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join()
    return sum(done[:half]), sum(done[half:])


def grpc_caller(port: int, name: str) -> Callable[[], Callable[[list[str]], None]]:
    def make() -> Callable[[list[str]], None]:
        client = Client(f"127.0.0.1:{port}")

        def call(texts: list[str]) -> None:
            while True:
                try:
                    out = client.embed(texts)
                    break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    REFUSED[name] = REFUSED.get(name, 0) + 1
                    time.sleep(0.05)
            assert len(out) == len(texts)

        return call

    return make


def http_caller(
    port: int, name: str, path: str, body: dict[str, object]
) -> Callable[[], Callable[[list[str]], None]]:
    def make() -> Callable[[list[str]], None]:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

        def call(texts: list[str]) -> None:
            while True:
                r = client.post(path, json={**body, "input": texts})
                if r.status_code != 429:
                    break
                REFUSED[name] = REFUSED.get(name, 0) + 1
                time.sleep(0.05)
            r.raise_for_status()
            out = r.json()
            assert len(out.get("results", out.get("data", []))) == len(texts)

        return call

    return make


def machine() -> dict[str, str]:
    cpu = ""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "avx512": "yes" if "avx512f" in flags else "no",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=400, help="passages per round and client kind")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--mixed-rounds", type=int, default=3)
    ap.add_argument("--mixed-seconds", type=float, default=20.0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from zembed.export.onnx_export import ExportOptions, export

    tmp = Path(tempfile.mkdtemp(prefix="zembed-http-"))
    model = tmp / "minilm"
    export(Path(minilm_dir()), model, ExportOptions(parity=False))
    texts = passages(args.texts, seed=5)
    chunks = [texts[i : i + PER_CALL] for i in range(0, len(texts), PER_CALL)]
    proc, grpc_port, http = start_server(model, tmp / "data", http=True)
    assert http is not None
    http_port = http
    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    with httpx.Client() as c:
        model_id = c.get(f"http://127.0.0.1:{http_port}/v1/models").json()["data"][0]["id"]
    g, hf, hb, oa = (
        "gRPC Embed (float32 bytes)",
        "HTTP /v1/models/embed, float JSON",
        "HTTP /v1/models/embed, base64",
        "HTTP /v1/embeddings (OpenAI), base64",
    )
    kinds: dict[str, Callable[[], Callable[[list[str]], None]]] = {
        g: grpc_caller(grpc_port, g),
        hf: http_caller(http_port, hf, "/v1/models/embed", {"input_type": "document", "model": model_id}),
        hb: http_caller(
            http_port,
            hb,
            "/v1/models/embed",
            {"input_type": "document", "model": model_id, "encoding_format": "base64"},
        ),
        oa: http_caller(http_port, oa, "/v1/embeddings", {"model": model_id, "encoding_format": "base64"}),
    }
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    names = list(kinds)
    together: dict[str, list[float]] = {k: [] for k in names if k != g}
    try:
        concurrent(chunks[:20], kinds[g])  # warm-up
        for r in range(args.rounds):  # interleaved rounds, the order reversed every other round
            for name in names if r % 2 == 0 else names[::-1]:
                rates[name].append(concurrent(chunks, kinds[name]))
        for _ in range(args.mixed_rounds):
            for name in together:
                n_grpc, n_http = mixed(chunks, kinds[g], kinds[name], args.mixed_seconds)
                together[name].append(n_http / max(n_grpc, 1))
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout:
            proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)
    best = {k: max(v) for k, v in rates.items()}
    # the ratio of each round to the gRPC rate of the same round, median over rounds (this VM's load
    # drifts between rounds; pairing within a round cancels most of it)
    paired = {k: statistics.median(x / b for x, b in zip(v, rates[g], strict=True)) for k, v in rates.items()}
    rows = [
        [
            k,
            f"{statistics.median(v):,.0f}",
            f"{best[k]:,.0f}",
            paired[k],
            REFUSED.get(k, 0),
            "baseline" if k == g else ">= 0.9",
        ]
        for k, v in rates.items()
    ]
    print(
        f"Embed throughput, {len(texts)} passages, {CLIENTS} concurrent callers x {PER_CALL} texts, "
        f"{args.rounds} interleaved rounds (MiniLM, CPU)\n"
    )
    print(
        table(
            [
                "client",
                "texts/s (median)",
                "texts/s (best)",
                "vs gRPC Embed (median of per-round ratios)",
                "calls refused (retried)",
                "bar",
            ],
            rows,
        )
    )
    m = machine()
    print(
        f"\nSame server, both protocols at once: {CLIENTS // 2} gRPC callers and {CLIENTS // 2} HTTP callers "
        f"for {args.mixed_seconds:g} s, {args.mixed_rounds} rounds; texts completed HTTP / gRPC (median):\n"
    )
    print(
        table(
            ["HTTP client", "HTTP / gRPC texts completed (median)", "rounds", "bar"],
            [
                [k, statistics.median(v), " ".join(f"{x:.2f}" for x in v), ">= 0.9"]
                for k, v in together.items()
            ],
        )
    )
    print(f"\nmachine: {m}")
    path = write_json(
        "http",
        {
            "texts": len(texts),
            "clients": CLIENTS,
            "per_call": PER_CALL,
            "rounds": rates,
            "best": best,
            "paired_ratio": paired,
            "together_ratio": together,
            "refused": REFUSED,
            **m,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
