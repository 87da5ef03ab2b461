"""Service benchmarks (MiniLM on CPU, one `zembed serve` subprocess on loopback):

1. Embed throughput through gRPC with concurrent clients against the in-process runtime behind the
   same batcher settings (and against sentence-transformers ``encode``), texts/s and ratios.
2. Search RPC latency at 1,000,000 documents (384-bit codes, 384-dim float16 rescore) against the
   in-process store search on the same data: medians single-client, then p50/p99 under 8 concurrent
   clients (medians of 3 rounds), alternating with a second server started with --search-batch 1
   (queued searches not batched). A control runs alongside the single-client part: a bare gRPC
   server (bench/null_server.py) whose handler only reads as many bytes as the scan, against the
   same read in-process: what gRPC-Python and the machine add to a memory-bound call of that size,
   with no service code involved.

Prints tables; writes bench/results/service.json.   make bench-service  [--docs N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import start_server as common_start_server  # noqa: E402
from common import table, write_json  # noqa: E402
from embed_cache import minilm_dir  # noqa: E402
from floor import read_sum  # noqa: E402
from null_server import METHOD  # noqa: E402
from null_server import buffer as null_buffer  # noqa: E402
from passages import passages  # noqa: E402

from zembed.service.client import Client  # noqa: E402
from zembed.store import CollectionConfig, Store  # noqa: E402

PER_CALL = 8
CLIENTS = 8


def start_server(model: Path, data: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    proc, port, _ = common_start_server(model, data, "--prefetch", *extra)
    return proc, port


def grpc_embed(port: int, texts: list[str]) -> float:
    chunks = [texts[i : i + PER_CALL] for i in range(0, len(texts), PER_CALL)]
    clients = [Client(f"127.0.0.1:{port}") for _ in range(CLIENTS)]
    t = time.perf_counter()

    def work(k: int) -> None:
        for j in range(k, len(chunks), CLIENTS):
            clients[k].embed(chunks[j])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    secs = time.perf_counter() - t
    for c in clients:
        c.close()
    return len(texts) / secs


def inprocess_embed(model_dir: Path, texts: list[str]) -> float:
    from zembed.service.batcher import Batcher
    from zembed.service.runtime.model import EmbeddingModel

    model = EmbeddingModel(model_dir)
    batcher = Batcher(
        model.run, max_batch=64, max_tokens=16384, max_wait_s=0.002, capacity=1024, max_pad_ratio=1.5
    )
    batcher.start()
    chunks = [texts[i : i + PER_CALL] for i in range(0, len(texts), PER_CALL)]

    async def run() -> float:
        sem = asyncio.Semaphore(CLIENTS)

        async def one(chunk: list[str]) -> None:
            async with sem:
                await batcher.submit(model.encode(chunk, None))

        t = time.perf_counter()
        await asyncio.gather(*(one(c) for c in chunks))
        return len(texts) / (time.perf_counter() - t)

    rate = asyncio.run(run())
    batcher.stop()
    return rate


def st_encode(texts: list[str]) -> float:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_dir(), device="cpu")
    t = time.perf_counter()
    st.encode(texts, batch_size=32)
    return len(texts) / (time.perf_counter() - t)


def build_store(data: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    with Store(data, map_size=4 << 30) as s:
        s.create_collection("big", CollectionConfig(code_bits=384, rescore_dims=384, model="bench"))
        c = s.collection("big")
        for start in range(0, n, 20_000):
            x = rng.standard_normal((min(20_000, n - start), 384), dtype=np.float32)
            c.upsert([f"d{i}" for i in range(start, start + len(x))], x)


def search_latency(port: int, model: Path, data: Path, queries: np.ndarray, docs: int) -> dict[str, Any]:
    client = Client(f"127.0.0.1:{port}")
    store = Store(data)  # the same LMDB environment, opened in this process too (LMDB is multi-process)
    coll = store.collection("big")
    coll.prefetch()  # steady state on both sides: the servers are started with --prefetch
    # the control: a bare gRPC server reading as many bytes as the scan does, and the same read here
    nbytes = docs * 384 // 8
    null = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "null_server.py"), str(nbytes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert null.stdout is not None
    null_channel = grpc.insecure_channel(f"127.0.0.1:{int(null.stdout.readline())}")
    null_call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = null_channel.unary_unary(METHOD)
    buf = null_buffer(nbytes)
    times: dict[str, list[float]] = {"rpc": [], "local": [], "null_rpc": [], "null_local": []}
    calls: dict[str, Callable[[np.ndarray], object]] = {
        "rpc": lambda q: client.search("big", code=q.tolist(), top_k=10),
        "local": lambda q: coll.search(q, top_k=10),
        "null_rpc": lambda q: null_call(q.tobytes()),
        "null_local": lambda q: read_sum(buf),
    }
    for q in queries[:5]:
        for call in calls.values():
            call(q)
    names = list(calls)
    for i, q in enumerate(queries):  # interleaved, rotating which goes first
        for name in names[i % 4 :] + names[: i % 4]:
            t = time.perf_counter()
            calls[name](q)
            times[name].append(time.perf_counter() - t)
    null_channel.close()
    null.terminate()
    null.wait(30)
    rpc, local = times["rpc"], times["local"]
    store.close()
    client.close()
    # under load, batching on (this server) and off (a second one), alternating rounds
    off, off_port = start_server(model, data, "--search-batch", "1")
    rounds: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    try:
        for _ in range(3):
            rounds["on"].append(loaded_run(port, queries))
            rounds["off"].append(loaded_run(off_port, queries))
    finally:
        off.terminate()
        off.wait(30)
        if off.stdout:
            off.stdout.close()
    med = statistics.median
    loaded = {
        f"loaded_{k}{'' if mode == 'on' else '_unbatched'}": med(r[k] for r in rounds[mode])
        for mode in rounds
        for k in ("p50_ms", "p99_ms", "qps")
    }
    return {
        "rpc_ms": med(rpc) * 1e3,
        "local_ms": med(local) * 1e3,
        **loaded,
        "null_rpc_ms": med(times["null_rpc"]) * 1e3,
        "null_local_ms": med(times["null_local"]) * 1e3,
    }


def loaded_run(port: int, queries: np.ndarray) -> dict[str, float]:
    """CLIENTS threads, each with its own channel, sending its share of the queries back to back."""
    loaded: list[float] = []
    lock = threading.Lock()

    def load(k: int) -> None:
        c = Client(f"127.0.0.1:{port}")
        mine = []
        for q in queries[k::CLIENTS]:
            t = time.perf_counter()
            c.search("big", code=q.tolist(), top_k=10)
            mine.append(time.perf_counter() - t)
        with lock:
            loaded.extend(mine)
        c.close()

    threads = [threading.Thread(target=load, args=(k,)) for k in range(CLIENTS)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return {
        "p50_ms": float(np.percentile(loaded, 50) * 1e3),
        "p99_ms": float(np.percentile(loaded, 99) * 1e3),
        "qps": len(loaded) / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--parts", default="embed,search", help="which parts to run (comma-separated)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from zembed.export.onnx_export import ExportOptions, export

    tmp = Path(tempfile.mkdtemp(prefix="zembed-svc-"))
    model = tmp / "minilm"
    export(Path(minilm_dir()), model, ExportOptions(parity=False))
    texts = passages(args.texts, seed=5)
    build_store(tmp / "data", args.docs if "search" in parts else 1000)
    proc, port = start_server(model, tmp / "data")
    try:
        if "embed" in parts:
            rates: dict[str, list[float]] = {"grpc": [], "inprocess": []}
            for _ in range(2):  # interleaved rounds
                rates["grpc"].append(grpc_embed(port, texts))
                rates["inprocess"].append(inprocess_embed(model, texts))
            st = st_encode(texts)
        if "search" in parts:
            rng = np.random.default_rng(1)
            lat = search_latency(
                port,
                model,
                tmp / "data",
                rng.standard_normal((args.queries, 384), dtype=np.float32),
                args.docs,
            )
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout:
            proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if "embed" in parts:
        report_embed(texts, max(rates["grpc"]), max(rates["inprocess"]), st)
    if "search" in parts:
        report_search(args.docs, lat)


def report_embed(texts: list[str], g: float, ip: float, st: float) -> None:
    print(
        f"Embed throughput, MiniLM CPU, {len(texts)} passages, {PER_CALL} per call, "
        f"{CLIENTS} concurrent callers"
    )
    print(
        table(
            ["path", "texts/s", "ratio to in-process", "bar"],
            [
                ["gRPC (zembed serve subprocess)", f"{g:,.0f}", g / ip, ">= 0.9"],
                ["in-process runtime + same batcher", f"{ip:,.0f}", 1.0, ""],
                ["sentence-transformers encode (batch 32)", f"{st:,.0f}", st / ip, "(info)"],
            ],
        )
    )
    print(f"wrote {write_json('service_embed', {'grpc': g, 'inprocess': ip, 'st': st, 'texts': len(texts)})}")


def report_search(docs: int, lat: dict[str, Any]) -> None:
    print(f"\nSearch RPC, {docs:,} documents (384-bit codes, 384-dim f16 rescore), top_k 10, oversampling 4")
    print(
        table(
            ["measure", "ms", "ratio", "bar"],
            [
                [
                    "Search RPC median (1 client)",
                    f"{lat['rpc_ms']:.2f}",
                    lat["rpc_ms"] / lat["local_ms"],
                    "<= 1.5",
                ],
                ["in-process store search median", f"{lat['local_ms']:.2f}", 1.0, ""],
                [
                    "control: bare gRPC call reading the same bytes",
                    f"{lat['null_rpc_ms']:.2f}",
                    lat["null_rpc_ms"] / lat["null_local_ms"],
                    "(info)",
                ],
                ["control: the same read in-process", f"{lat['null_local_ms']:.2f}", 1.0, ""],
                [f"p50 under {CLIENTS} concurrent clients", f"{lat['loaded_p50_ms']:.2f}", "", ""],
                [
                    f"p99 under {CLIENTS} concurrent clients",
                    f"{lat['loaded_p99_ms']:.2f}",
                    "",
                    f"{lat['loaded_qps']:.0f} qps",
                ],
                [
                    "  same, --search-batch 1 (no batching): p50",
                    f"{lat['loaded_p50_ms_unbatched']:.2f}",
                    lat["loaded_p50_ms_unbatched"] / lat["loaded_p50_ms"],
                    "",
                ],
                [
                    "  same, --search-batch 1 (no batching): p99",
                    f"{lat['loaded_p99_ms_unbatched']:.2f}",
                    lat["loaded_p99_ms_unbatched"] / lat["loaded_p99_ms"],
                    f"{lat['loaded_qps_unbatched']:.0f} qps",
                ],
            ],
        )
    )
    print(f"wrote {write_json('service_search', {**lat, 'docs': docs})}")


if __name__ == "__main__":
    main()
