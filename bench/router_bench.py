"""Search through the sharded router over 3 local shards vs one store holding their union.

Builds (once, under --dir) three shard stores by ``shard_of(id, 3)`` and one union store of the same
documents (640-bit codes, 640-dim float16 rescoring vectors, random unit vectors), starts four
`zembed serve` processes on them (3 shards, the union) and a router (`zembed serve --shards`), and
runs the same vector queries, interleaved in one run (the order rotated per query):

- **router**: Search through the router (fan-out to the 3 shards, merge);
- **union**: Search on the one server holding every document (the baseline);
- **slowest shard**: the same Search sent straight to the 3 shards at once from this client (as the
  router sends it), the slowest of the three answers.

Reports median / p90 / p99 latency per path, router / union, and router / slowest shard (the
router's overhead: the bar is <= 1.2x), for one caller at a time and for --concurrency callers.
The servers all load the MiniLM export (vector queries: the model is not run per query).

    .venv/bin/python bench/router_bench.py --per-shard 300000   # the data is deleted afterwards
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, start_server, table, write_json

from zembed.store import CollectionConfig, RescoreDtype, Store
from zembed.store.config import Calibration
from zembed.store.sharding import shards_of
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

DIMS = 640
SHARDS = 3
CHUNK = 20_000
MODEL = ROOT / ".cache" / "models" / "all-minilm-l6-v2"
CONFIG = CollectionConfig(
    code_bits=DIMS,
    rescore_dims=DIMS,
    rescore_dtype=RescoreDtype.FLOAT16,
    calibration=Calibration.MEDIAN,
    calibration_sample=10_000,
    model="bench",
)


def chunk_vectors(start: int, n: int) -> np.ndarray:
    """Deterministic unit vectors of documents start..start+n (a few hundred loose clusters, so
    neighbours are not all equidistant)."""
    rng = np.random.default_rng(start)
    centers = np.random.default_rng(7).standard_normal((256, DIMS)).astype(np.float32)
    x = centers[rng.integers(0, 256, n)] + 1.5 * rng.standard_normal((n, DIMS)).astype(np.float32)
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def build(root: Path, per_shard: int) -> None:
    total = per_shard * SHARDS
    done = root / "built"
    if done.exists() and done.read_text() == str(total):
        print(f"stores already built in {root} ({total} documents)")
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    stores = [Store(root / f"shard{i}") for i in range(SHARDS)] + [Store(root / "union")]
    for s in stores:
        s.create_collection("docs", CONFIG)
    colls = [s.collection("docs") for s in stores]
    t = time.perf_counter()
    for start in range(0, total, CHUNK):
        n = min(CHUNK, total - start)
        ids = np.array([f"doc-{i:09d}" for i in range(start, start + n)])
        x = chunk_vectors(start, n).astype(np.float16)
        colls[SHARDS].upsert_arrays(ids, x)
        where = shards_of(ids.tolist(), SHARDS)
        for shard in range(SHARDS):
            sel = where == shard
            colls[shard].upsert_arrays(ids[sel], x[sel])
        if start // CHUNK % 10 == 0:
            rate = (start + n) / (time.perf_counter() - t)
            print(f"  {start + n:,} / {total:,} documents ({rate:,.0f}/s, written twice)", flush=True)
    counts = [c.count() for c in colls]
    for s in stores:
        s.close()
    assert sum(counts[:SHARDS]) == counts[SHARDS] == total, counts
    done.write_text(str(total))
    print(f"built {counts} in {time.perf_counter() - t:.0f} s")


def start_router(shards: list[int]) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "zembed.service.cli", "serve", "--model", str(MODEL), "--port", "0"]
    cmd += ["--shards", ",".join(f"127.0.0.1:{p}" for p in shards), "--log-level", "WARNING"]
    cmd += ["--drain-delay-s", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("zembed: serving on port"):
            return proc, int(line.split()[-1])
    raise SystemExit("router did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def request(q: np.ndarray, top_k: int) -> pb.SearchRequest:
    return pb.SearchRequest(
        collection="docs", vectors=pb.Vectors(code_f32le=q.astype("<f4").tobytes()), top_k=top_k
    )


async def timed(stub: Any, req: pb.SearchRequest) -> tuple[float, pb.SearchResponse]:
    t = time.perf_counter()
    resp = await stub.Search(req, timeout=60)
    return time.perf_counter() - t, resp


async def one_round(
    stubs: dict[str, Any], shard_stubs: list[Any], req: pb.SearchRequest, turn: int
) -> dict[str, float]:
    """The three paths for one query, in an order rotated by ``turn``."""
    out: dict[str, float] = {}

    async def shards_direct() -> None:
        answers = await asyncio.gather(*(timed(s, req) for s in shard_stubs))
        out["slowest shard"] = max(t for t, _ in answers)

    async def via(name: str) -> None:
        out[name], _ = await timed(stubs[name], req)

    steps = [lambda: via("router"), lambda: via("union"), shards_direct]
    for k in range(3):
        await steps[(turn + k) % 3]()
    return out


async def run(
    ports: dict[str, int], shard_ports: list[int], queries: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in [*ports.values(), *shard_ports]]
    stubs = {name: pb_grpc.SearchServiceStub(ch) for name, ch in zip(ports, channels, strict=False)}
    shard_stubs = [pb_grpc.SearchServiceStub(ch) for ch in channels[len(ports) :]]
    results: dict[str, Any] = {}
    try:
        # the router's merge equals the union's answer (same exact scores; checked on a few queries)
        for q in queries[:5]:
            exact = request(q, args.top_k)
            exact.shortlist, exact.float_reads = 20_000, 20_000
            _, a = await timed(stubs["router"], exact)
            _, b = await timed(stubs["union"], exact)
            results.setdefault("exact_equal", []).append(
                [(h.id, h.score) for h in a.hits] == [(h.id, h.score) for h in b.hits]
            )
        for q in queries[: args.warmup]:
            await one_round(stubs, shard_stubs, request(q, args.top_k), 0)
        for conc in args.concurrency:
            samples: dict[str, list[float]] = {"router": [], "union": [], "slowest shard": []}
            ratios: list[float] = []
            todo = list(enumerate(queries[args.warmup :]))
            t0 = time.perf_counter()

            async def worker(
                todo: list[tuple[int, np.ndarray]] = todo,
                samples: dict[str, list[float]] = samples,
                ratios: list[float] = ratios,
            ) -> None:
                while todo:
                    i, q = todo.pop()
                    r = await one_round(stubs, shard_stubs, request(q, args.top_k), i)
                    for k, v in r.items():
                        samples[k].append(v)
                    ratios.append(r["router"] / r["slowest shard"])

            await asyncio.gather(*(worker() for _ in range(conc)))
            wall = time.perf_counter() - t0
            results[str(conc)] = {
                k: {
                    "median_ms": 1000 * statistics.median(v),
                    "p90_ms": 1000 * float(np.percentile(v, 90)),
                    "p99_ms": 1000 * float(np.percentile(v, 99)),
                }
                for k, v in samples.items()
            } | {
                "router_over_union": statistics.median(samples["router"])
                / statistics.median(samples["union"]),
                "router_over_slowest_shard": statistics.median(samples["router"])
                / statistics.median(samples["slowest shard"]),
                "per_query_ratio_median": statistics.median(ratios),
                "queries": len(ratios),
                "wall_s": wall,
            }
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))
    return results


def machine() -> dict[str, str]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    flags = Path("/proc/cpuinfo").read_text()
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "avx512": "yes" if "avx512f" in flags else "no",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-shard", type=int, default=300_000, help="documents per shard (the union holds 3x)")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4])
    p.add_argument("--dir", type=Path, default=ROOT.parent / "bench-router-tmp", help="where the stores go")
    p.add_argument("--keep", action="store_true", help="keep the stores (default: deleted afterwards)")
    args = p.parse_args()
    root: Path = args.dir
    build(root, args.per_shard)
    disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    procs: list[subprocess.Popen[str]] = []
    try:
        shard_ports = []
        for i in range(SHARDS):
            proc, port, _ = start_server(MODEL, root / f"shard{i}", "--prefetch")
            procs.append(proc)
            shard_ports.append(port)
        union, union_port, _ = start_server(MODEL, root / "union", "--prefetch")
        procs.append(union)
        router, router_port = start_router(shard_ports)
        procs.append(router)
        rss = {
            "shards": sum(rss_mb(p.pid) for p in procs[:SHARDS]),
            "union": rss_mb(union.pid),
            "router": rss_mb(router.pid),
        }
        queries = chunk_vectors(10**9, args.queries + args.warmup)
        results = asyncio.run(run({"router": router_port, "union": union_port}, shard_ports, queries, args))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
            if proc.stdout is not None:
                proc.stdout.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows = []
    for conc in args.concurrency:
        r = results[str(conc)]
        for k in ("router", "union", "slowest shard"):
            rows.append([conc, k, r[k]["median_ms"], r[k]["p90_ms"], r[k]["p99_ms"]])
    print(
        f"\n{SHARDS} shards x {args.per_shard:,} documents vs one store of {SHARDS * args.per_shard:,} "
        f"({DIMS}-bit codes, {DIMS}-dim float16 rescoring, top_k {args.top_k}); disk {disk / 1e9:.2f} GB; "
        f"RSS MB {', '.join(f'{k} {v:.0f}' for k, v in rss.items())}"
    )
    print(table(["callers", "path", "median ms", "p90 ms", "p99 ms"], rows))
    print(
        table(
            [
                "callers",
                "router / union",
                "router / slowest shard (medians)",
                "per-query ratio median",
                "queries",
            ],
            [
                [
                    c,
                    results[str(c)]["router_over_union"],
                    results[str(c)]["router_over_slowest_shard"],
                    results[str(c)]["per_query_ratio_median"],
                    results[str(c)]["queries"],
                ]
                for c in args.concurrency
            ],
        )
    )
    print(f"router merge == union answer (exact sizes): {results['exact_equal']}")
    path = write_json(
        "router",
        {
            "per_shard": args.per_shard,
            "shards": SHARDS,
            "dims": DIMS,
            "top_k": args.top_k,
            "disk_bytes": disk,
            "rss_mb": rss,
            "results": results,
            **machine(),
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
