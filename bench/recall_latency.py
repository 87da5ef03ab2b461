"""Search latency at 1M rows: the new defaults against the earlier ones, in the same run.

One collection of 1,000,000 documents (640-bit codes, 1280-dim float16 rescore vectors, anisotropic
random vectors: a shared direction plus noise), calibrated automatically from its first batch. Per
query, interleaved (so machine noise hits them alike), one thread, warm (prefetched):

- earlier defaults: 200 Hamming candidates refined to 40 float reads (oversampling 4, refine 5);
- new defaults: 400 Hamming candidates refined to 40 float reads;
- no refine: the 40 nearest in Hamming distance read directly;
- recall_target 0.99 (whatever the collection's measurement chose).

The scan itself is the same for all (every code is read); the shortlist size changes the running
top-k and the refine step's work. Prints a table with the ratio against the earlier defaults.

    .venv/bin/python bench/recall_latency.py [--n 1000000] [--queries 300]
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

from zembed.store import CollectionConfig, RescoreDtype, Store
from zembed.store.params import SearchParams

SETTINGS = {
    "earlier defaults (200 cand., 40 reads)": SearchParams(top_k=10, shortlist=200, float_reads=40),
    "new defaults (400 cand., 40 reads)": SearchParams(top_k=10),
    "no refine (40 reads)": SearchParams(top_k=10, float_reads=40, refine=False),
    "recall_target 0.99": SearchParams(top_k=10, recall_target=0.99),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(3)
    shared = rng.standard_normal(1280, dtype=np.float32)
    shared *= 1.5 / np.linalg.norm(shared)
    root = Path(tempfile.mkdtemp(prefix="zembed-latency-"))
    out: dict[str, Any] = {"n": args.n, "queries": args.queries}
    try:
        with Store(root / "s", map_size=8 << 30) as s:
            s.create_collection(
                "c", CollectionConfig(code_bits=640, rescore_dims=1280, rescore_dtype=RescoreDtype.FLOAT16)
            )
            c = s.collection("c")
            t0 = time.perf_counter()
            step = 10_000
            keep = None
            for start in range(0, args.n, step):
                x = (
                    rng.standard_normal((step, 1280), dtype=np.float32) / np.sqrt(1280, dtype=np.float32)
                    + shared
                )
                c.upsert([f"d{i}" for i in range(start, start + step)], x[:, :640], x)
                if keep is None:
                    keep = x[: args.queries].copy()
            out["build_s"] = time.perf_counter() - t0
            info = c.info()
            out["calibrated_at"] = info.calibrated_at
            out["final"] = info.calibration_final
            out["plans"] = {k: vars(c.plan(p)) for k, p in SETTINGS.items()}
            c.prefetch()
            assert keep is not None
            q = keep + rng.standard_normal(keep.shape, dtype=np.float32) * 0.01
            times: dict[str, list[float]] = {k: [] for k in SETTINGS}
            for i in range(len(q)):
                for name, p in SETTINGS.items():
                    t = time.perf_counter()
                    hits = c.search(q[i, :640], q[i], p)
                    times[name].append(time.perf_counter() - t)
                    assert len(hits[0]) == 10
            out["median_ms"] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            out["p90_ms"] = {k: float(np.percentile(v, 90)) * 1e3 for k, v in times.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = out["median_ms"]["earlier defaults (200 cand., 40 reads)"]
    rows = [
        [
            k,
            out["plans"][k]["shortlist"],
            out["plans"][k]["float_reads"],
            out["median_ms"][k],
            out["p90_ms"][k],
            out["median_ms"][k] / base,
        ]
        for k in SETTINGS
    ]
    print(
        f"{args.n:,} documents (640-bit codes, 1280-dim float16), calibrated at {out['calibrated_at']:,} "
        f"(final: {out['final']}); {args.queries} queries, one thread, warm; build {out['build_s']:.0f} s"
    )
    print(table(["setting", "shortlist", "float reads", "median ms", "p90 ms", "ratio vs earlier"], rows))
    print(f"wrote {write_json('recall_latency', out)}")


if __name__ == "__main__":
    main()
