"""Store benchmarks: the Hamming scan against faiss IndexBinaryFlat and the memory-bandwidth floor,
batched scans, 10M-code RAM, end-to-end search with LMDB rescoring, bulk upsert and reopen.

One thread throughout (faiss is pinned to one OpenMP thread); methods are interleaved query by query
so that machine noise hits them alike. Prints a table and writes bench/results/store.json.

    make bench-store            # or: .venv/bin/python bench/store_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table, write_json
from floor import read_sum

from zembed.store import CollectionConfig, RescoreDtype, Store, scan
from zembed.store.index import CodeIndex

CODE_BYTES = 80
SHORTLIST = 100


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def resident(path: Path) -> int | None:
    """Bytes of ``path`` in the page cache (util-linux fincore), or None where unavailable."""
    import subprocess

    try:
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", str(path)], capture_output=True, text=True)
        return int(out.stdout.split()[0])
    except (OSError, ValueError, IndexError):
        return None


def build_index(n: int, seed: int) -> CodeIndex:
    rng = np.random.default_rng(seed)
    index = CodeIndex(CODE_BYTES)
    step = 1 << 16
    for start in range(0, n, step):
        m = min(step, n - start)
        index.append(
            np.arange(start, start + m, dtype=np.int64), rng.integers(0, 256, (m, CODE_BYTES), np.uint8)
        )
    index.publish()
    return index


def floor_read(view_codes: tuple[Any, ...], n: int) -> None:
    for c in view_codes:
        read_sum(c[: min(len(c), n)])
        n -= len(c)
        if n <= 0:
            break


def scan_bench(n: int, queries: int, batch: int) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(1)
    index = build_index(n, 0)
    view = index.view
    codes = np.concatenate([scan.rows_of(c, np.arange(c.shape[0] * 8)) for c in view.codes])[:n]
    fidx = faiss.IndexBinaryFlat(CODE_BYTES * 8)
    fidx.add(codes)
    rng = np.random.default_rng(1)
    qs = rng.integers(0, 256, (max(queries, batch), CODE_BYTES), np.uint8)
    ours, theirs, floor = [], [], []
    for i in range(queries):  # interleaved
        q = qs[i : i + 1]
        t = time.perf_counter()
        scan.topk(q, view.codes, SHORTLIST, view.masks, limit=view.n)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        fidx.search(q, SHORTLIST)
        theirs.append(time.perf_counter() - t)
        t = time.perf_counter()
        floor_read(view.codes, n)
        floor.append(time.perf_counter() - t)
    # sanity: same distances as faiss
    d, _ = scan.topk(qs[:4], view.codes, SHORTLIST, view.masks, limit=view.n)
    fd, _ = fidx.search(qs[:4], SHORTLIST)
    assert (d == fd).all(), "distances differ from faiss"
    ob, fb = [], []
    for _ in range(5):
        t = time.perf_counter()
        scan.topk(qs[:batch], view.codes, SHORTLIST, view.masks, limit=view.n)
        ob.append((time.perf_counter() - t) / batch)
        t = time.perf_counter()
        fidx.search(qs[:batch], SHORTLIST)
        fb.append((time.perf_counter() - t) / batch)
    med = statistics.median
    return {
        "n": n,
        "kernel": scan.kernel_name(),
        "single_ms": med(ours) * 1e3,
        "faiss_single_ms": med(theirs) * 1e3,
        "floor_ms": med(floor) * 1e3,
        "floor_gbps": n * CODE_BYTES / med(floor) / 1e9,
        "batch_per_query_ms": med(ob) * 1e3,
        "faiss_batch_per_query_ms": med(fb) * 1e3,
        "index_bytes": index.nbytes,
    }


def big_bench(n: int) -> dict[str, Any]:
    before = rss_bytes()
    index = build_index(n, 2)
    after = rss_bytes()
    view = index.view
    rng = np.random.default_rng(3)
    times = []
    for i in range(7):
        q = rng.integers(0, 256, (1, CODE_BYTES), np.uint8)
        t = time.perf_counter()
        scan.topk(q, view.codes, SHORTLIST, view.masks, limit=view.n)
        times.append(time.perf_counter() - t)
        del i
    return {
        "n": n,
        "index_bytes": index.nbytes,
        "rss_delta": after - before,
        "single_ms": statistics.median(times) * 1e3,
    }


def store_bench(n: int, root: Path, queries: int) -> dict[str, Any]:
    """1M-document store (640-bit codes, 2560-dim float16 rescore, metadata): e2e search and reopen."""
    path = root / "e2e"
    rng = np.random.default_rng(4)
    cfg = CollectionConfig(
        code_bits=640, rescore_dims=2560, rescore_dtype=RescoreDtype.FLOAT16, filterable=("lang",)
    )
    out: dict[str, Any] = {"n": n}
    with Store(path, map_size=8 << 30) as s:
        s.create_collection("c", cfg)
        c = s.collection("c")
        step = 10_000
        t0 = time.perf_counter()
        spent = 0.0
        for start in range(0, n, step):
            x = rng.standard_normal((step, 2560), dtype=np.float32)
            ids = [f"doc-{i}" for i in range(start, start + step)]
            meta = [{"lang": "de" if i % 2 else "en", "n": i} for i in range(start, start + step)]
            t = time.perf_counter()
            c.upsert(ids, x[:, :640], x, meta)
            spent += time.perf_counter() - t
        out["build_s"] = time.perf_counter() - t0
        out["build_upsert_per_s"] = n / spent
    t = time.perf_counter()
    s = Store(path)
    out["reopen_s"] = time.perf_counter() - t
    c = s.collection("c")
    view = c._snap.view
    cold = []
    for _ in range(min(queries, 40)):  # first queries after open: every page is touched for the first time
        q = rng.standard_normal(2560, dtype=np.float32)
        t = time.perf_counter()
        c.search(q[:640], q, top_k=10, oversampling=10, refine=1)
        cold.append(time.perf_counter() - t)
    t = time.perf_counter()
    touched = c.prefetch()
    out["prefetch_s"] = time.perf_counter() - t
    out["prefetch_bytes"] = touched
    out["resident_bytes"] = resident(path / "data.mdb")
    e2e, e2e_refine, scan_only = [], [], []
    for _ in range(queries):
        q = rng.standard_normal(2560, dtype=np.float32)
        qc = np.packbits(q[:640] > 0)[None, :]
        t = time.perf_counter()
        scan.topk(qc, view.codes, 10 * 10, view.masks, limit=view.n)
        scan_only.append(time.perf_counter() - t)
        t = time.perf_counter()
        hits = c.search(q[:640], q, top_k=10, oversampling=10, refine=1)
        e2e.append(time.perf_counter() - t)
        t = time.perf_counter()
        c.search(q[:640], q, top_k=10, oversampling=4)
        e2e_refine.append(time.perf_counter() - t)
        assert len(hits[0]) == 10 and hits[0][0].metadata
    s.close()
    med = statistics.median
    out.update(
        scan_ms=med(scan_only) * 1e3,
        e2e_ms=med(e2e) * 1e3,
        e2e_cold_ms=med(cold) * 1e3,
        e2e_default_ms=med(e2e_refine) * 1e3,
        disk_bytes=sum(f.stat().st_size for f in path.iterdir()),
    )
    return out


def upsert_bench(n: int, root: Path) -> dict[str, Any]:
    """Bulk upsert: 640-bit codes + 1280-dim float16, batches of 10,000, sync on (the default)."""
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((10_000, 1280), dtype=np.float32) for _ in range(n // 10_000)]
    with Store(root / "bulk", map_size=4 << 30) as s:
        s.create_collection("c", CollectionConfig(code_bits=640, rescore_dims=1280))
        c = s.collection("c")
        t = time.perf_counter()
        for b, x in enumerate(batches):
            c.upsert([f"{b}-{i}" for i in range(len(x))], x[:, :640], x)
        secs = time.perf_counter() - t
    return {"n": n, "per_s": n / secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the bars)")
    ap.add_argument("--e2e-only", action="store_true", help="only the end-to-end search part")
    args = ap.parse_args()
    if args.e2e_only:
        root = Path(tempfile.mkdtemp(prefix="zembed-bench-"))
        try:
            e = store_bench(100_000 if args.quick else 1_000_000, root, 40 if args.quick else 300)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in e.items()})
        print(f"wrote {write_json('store_e2e', e)}")
        return
    n1 = 100_000 if args.quick else 1_000_000
    n10 = 1_000_000 if args.quick else 10_000_000
    root = Path(tempfile.mkdtemp(prefix="zembed-bench-"))
    try:
        s = scan_bench(n1, 15 if args.quick else 60, 64)
        big = big_bench(n10)
        up = upsert_bench(50_000 if args.quick else 200_000, root)  # first: a fresh disk and page cache
        e2e = store_bench(n1 // 10 if args.quick else n1, root, 15 if args.quick else 300)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_code_1m = s["single_ms"] / s["n"] * 1e6
    per_code_10m = big["single_ms"] / big["n"] * 1e6
    rows = [
        [
            "scan 1 query, shortlist 100",
            f"{s['single_ms']:.2f} ms",
            "faiss IndexBinaryFlat",
            f"{s['faiss_single_ms']:.2f} ms",
            s["single_ms"] / s["faiss_single_ms"],
            "<= 1.0",
        ],
        [
            "scan 1 query vs bandwidth floor",
            f"{s['single_ms']:.2f} ms",
            f"read-only pass ({s['floor_gbps']:.1f} GB/s)",
            f"{s['floor_ms']:.2f} ms",
            s["single_ms"] / s["floor_ms"],
            "<= 1.3",
        ],
        [
            "faiss vs bandwidth floor",
            f"{s['faiss_single_ms']:.2f} ms",
            "read-only pass",
            f"{s['floor_ms']:.2f} ms",
            s["faiss_single_ms"] / s["floor_ms"],
            "(info)",
        ],
        [
            "batch of 64, per query",
            f"{s['batch_per_query_ms']:.3f} ms",
            "faiss batch of 64, per query",
            f"{s['faiss_batch_per_query_ms']:.3f} ms",
            s["faiss_batch_per_query_ms"] / s["batch_per_query_ms"],
            ">= 2 (speed-up)",
        ],
        [
            f"{big['n']:,} codes: index RAM",
            f"{big['index_bytes'] / 1e9:.3f} GB",
            "RSS growth while building",
            f"{big['rss_delta'] / 1e9:.3f} GB",
            big["index_bytes"] / 1e9,
            "<= 1.2 GB",
        ],
        [
            f"{big['n']:,} codes: ns per code",
            f"{per_code_10m:.2f} ns",
            f"{s['n']:,} codes",
            f"{per_code_1m:.2f} ns",
            per_code_10m / per_code_1m,
            "~1.0",
        ],
        [
            f"e2e search {e2e['n']:,} docs (100 rescored, warm)",
            f"{e2e['e2e_ms']:.2f} ms",
            "scan alone",
            f"{e2e['scan_ms']:.2f} ms",
            e2e["e2e_ms"] / e2e["scan_ms"],
            "<= 1.3",
        ],
        [
            "e2e, first queries after open (no prefetch)",
            f"{e2e['e2e_cold_ms']:.2f} ms",
            "scan alone",
            f"{e2e['scan_ms']:.2f} ms",
            e2e["e2e_cold_ms"] / e2e["scan_ms"],
            "(info)",
        ],
        [
            "e2e search, defaults (refine 5, 40 rescored)",
            f"{e2e['e2e_default_ms']:.2f} ms",
            "scan alone",
            f"{e2e['scan_ms']:.2f} ms",
            e2e["e2e_default_ms"] / e2e["scan_ms"],
            "(info)",
        ],
        [
            f"bulk upsert {up['n']:,} (640b + 1280 f16)",
            f"{up['per_s']:,.0f} /s",
            "bar",
            "100,000 /s",
            up["per_s"] / 100_000,
            ">= 1.0",
        ],
        [
            f"reopen {e2e['n']:,}-doc store",
            f"{e2e['reopen_s']:.2f} s",
            "bar",
            "3 s",
            e2e["reopen_s"] / 3.0,
            "<= 1.0",
        ],
    ]
    res = e2e.get("resident_bytes")
    print(f"page cache held {res / 1e9:.2f} GB of the e2e store after the prefetch" if res else "")
    print(
        f"kernel: {s['kernel']}   e2e store on disk: {e2e['disk_bytes'] / 1e9:.2f} GB, "
        f"built at {e2e['build_upsert_per_s']:,.0f} docs/s (2560 f16 + metadata)"
    )
    print(table(["measure", "ours", "baseline", "baseline value", "ratio", "bar"], rows))
    path = write_json("store", {"scan": s, "big": big, "e2e": e2e, "upsert": up, "quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
