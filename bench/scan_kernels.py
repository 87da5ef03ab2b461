"""Scan kernels against faiss IndexBinaryFlat and the memory floor, interleaved in one process.

1M random 640-bit codes (80 bytes) in the store's in-memory layout (blocked chunks of 65,536 rows,
store/index.py), shortlist k = 100:

- single query: every kernel this CPU runs (``avx512``, ``avx2`` Harley-Seal, scalar ``popcnt``,
  ``generic``) on 1 thread, faiss ``IndexBinaryFlat.search`` on 1 thread, and a read-only pass over
  the same codes (bench/floor.py: the memory-bandwidth floor);
- batch of 64 queries: the default and the ``avx2`` kernel on 1 and 2 threads, faiss on 1 and 2
  threads (``faiss.omp_set_num_threads``).

Every round runs each measurement once, in a rotating order (the machine is shared: interleaving
spreads other load over all of them); medians over rounds. Ratios: ours / faiss and ours / floor
for one query (bars <= 1.0 and <= 1.15), faiss / ours for batches (bar on 2 threads >= 2).

    python bench/scan_kernels.py [--rows 1000000] [--rounds 30] [--quick] [--before SO]

``--before`` adds the extension as an earlier commit built it, with its scalar ``popcnt`` kernel (what
AVX2 machines ran before the AVX2 kernel; one thread, no prefetch), e.g. for the commit before #10:

    git show 1885117:store/_hamming.c > /tmp/old.c
    cc -O3 -shared -fPIC -I"$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
        /tmp/old.c -o /tmp/hamming_before.so
"""

from __future__ import annotations

import argparse
import functools
import importlib.machinery
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table, write_json
from floor import read_sum

from zembed.store import scan
from zembed.store.index import CHUNK_ROWS

CODE_BYTES = 80
K = 100
BATCH = 64


def cpu_info() -> dict[str, str]:
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model.strip():
                    model = line.split(":", 1)[1].strip()
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1]
                    break
    except OSError:
        pass
    wanted = (
        "popcnt",
        "avx2",
        "bmi2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vpopcntdq",
        "avx512_bitalg",
    )
    have = [f for f in wanted if f in flags.split()]
    return {
        "cpu": model,
        "flags": " ".join(have),
        "kernel": scan.kernel_name(),
        "kernel_choices": " ".join(scan.kernels()),
    }


def load() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return ""


def load_before(path: Path) -> Any:
    """An earlier build of the extension, its kernel forced to ``popcnt`` at import."""
    saved = os.environ.get("ZEMBED_SCAN_KERNEL")
    os.environ["ZEMBED_SCAN_KERNEL"] = "popcnt"
    try:
        loader = importlib.machinery.ExtensionFileLoader("zembed.store._hamming", str(path))
        spec = importlib.util.spec_from_file_location("zembed.store._hamming", str(path), loader=loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    finally:
        if saved is None:
            del os.environ["ZEMBED_SCAN_KERNEL"]
        else:
            os.environ["ZEMBED_SCAN_KERNEL"] = saved
    assert module.kernel() == "popcnt", module.kernel()
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="100k rows, 5 rounds (a smoke run)")
    ap.add_argument("--before", type=Path, help="an earlier build of the extension (.so), see above")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.rounds = 100_000, 5
    import faiss

    n = args.rows
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n, CODE_BYTES), dtype=np.uint8)
    chunks = [scan.blocked(codes[i : i + CHUNK_ROWS]) for i in range(0, n, CHUNK_ROWS)]
    index = faiss.IndexBinaryFlat(CODE_BYTES * 8)
    index.add(codes)
    del codes  # faiss holds its own copy; the store's chunks are ours
    queries = rng.integers(0, 256, (args.rounds * BATCH + BATCH, CODE_BYTES), dtype=np.uint8)

    # correctness first: every kernel, both thread counts, the same distances as faiss
    fd, _ = index.search(queries[:BATCH], K)
    for kern in scan.kernels():
        for t in (1, 2):
            d, _ = scan.topk(queries[:BATCH], chunks, K, limit=n, threads=t, kernel=kern)
            assert (d == fd).all(), f"{kern} on {t} threads: distances differ from faiss"

    kernels = scan.kernels()

    def ours(q: np.ndarray, kern: str, t: int, nq: int) -> object:
        return scan.topk(q[:nq], chunks, K, limit=n, threads=t, kernel=kern)

    def theirs(q: np.ndarray, t: int, nq: int) -> object:
        faiss.omp_set_num_threads(t)
        return index.search(q[:nq], K)

    before = None if args.before is None else load_before(args.before)

    def old(q: np.ndarray, nq: int) -> object:
        hd = np.zeros((nq, K), dtype=np.int32)
        hi = np.zeros((nq, K), dtype=np.int64)
        hc = np.zeros(nq, dtype=np.int32)
        base = 0
        assert before is not None
        for c in chunks:
            before.scan_topk(q[:nq], c, c.shape[0] * 8, CODE_BYTES // 8, None, base, hd, hi, hc)
            base += c.shape[0] * 8
        return hd

    def floor(q: np.ndarray) -> object:
        return [read_sum(c) for c in chunks]

    single: dict[str, Callable[[np.ndarray], object]] = {}
    for kern in kernels:
        single[f"ours {kern}"] = functools.partial(ours, kern=kern, t=1, nq=1)
    if before is not None:
        single["before: popcnt"] = functools.partial(old, nq=1)
    single["faiss"] = functools.partial(theirs, t=1, nq=1)
    single["floor (read-only pass)"] = floor
    batch: dict[str, Callable[[np.ndarray], object]] = {}
    for kern in dict.fromkeys([kernels[0], "avx2"] if "avx2" in kernels else [kernels[0]]):
        for t in (1, 2):
            batch[f"ours {kern}, {t} thr"] = functools.partial(ours, kern=kern, t=t, nq=BATCH)
    if before is not None:
        batch["before: popcnt, 1 thr"] = functools.partial(old, nq=BATCH)
    for t in (1, 2):
        batch[f"faiss, {t} thr"] = functools.partial(theirs, t=t, nq=BATCH)

    wall: dict[str, list[float]] = {name: [] for name in [*single, *batch]}
    cpu: dict[str, list[float]] = {name: [] for name in [*single, *batch]}
    calls = {**single, **batch}
    names = list(calls)
    for name in names:  # warm-up
        calls[name](queries[:BATCH])
    for r in range(args.rounds):
        q = queries[r * BATCH : (r + 1) * BATCH]
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            if name == "ours generic" and r % 3:  # the slow portable kernel: every third round
                continue
            c0, t0 = time.process_time(), time.perf_counter()
            calls[name](q)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)

    med = {name: statistics.median(v) * 1e3 for name, v in wall.items()}
    lo = {name: min(v) * 1e3 for name, v in wall.items()}
    cmed = {name: statistics.median(v) * 1e3 for name, v in cpu.items()}
    info = cpu_info()
    print(f"uname -r: {platform.release()}; CPU: {info['cpu']}; cores: {os.cpu_count()}; {load()}")
    print(
        f"flags: {info['flags']}; default kernel: {info['kernel']} (this CPU runs: {info['kernel_choices']})"
    )
    size = f"{n:,} codes x {CODE_BYTES * 8} bits ({n * CODE_BYTES / 1e6:.0f} MB)"
    print(f"{size}, k = {K}, {args.rounds} rounds interleaved (generic: every third)")
    print("wall: elapsed ms (median, min over rounds); CPU: process CPU ms (median; all threads summed),")
    print("which a shared machine disturbs least for one thread\n")
    rows = []
    fl, fa = "floor (read-only pass)", "faiss"
    for name in single:
        rows.append(
            [
                name,
                med[name],
                lo[name],
                cmed[name],
                cmed[name] / cmed[fa],
                lo[name] / lo[fa],
                cmed[name] / cmed[fl],
                lo[name] / lo[fl],
            ]
        )
    heads = ["single query, 1 thread", "wall med", "wall min", "CPU med", "/ faiss (CPU)", "/ faiss (min)"]
    print(table([*heads, "/ floor (CPU)", "/ floor (min)"], rows))
    print()
    rows = []
    for name in batch:
        t = 1 if "1 thr" in name else 2
        f = f"faiss, {t} thr"
        rows.append(
            [name, med[name], lo[name], lo[name] / BATCH, cmed[name], med[f] / med[name], lo[f] / lo[name]]
        )
    heads = [f"batch of {BATCH}", "wall med", "wall min", "min ms/query", "CPU med", "faiss / this (med)"]
    print(table([*heads, "faiss / this (min)"], rows))
    path = write_json(
        "scan_kernels",
        {
            **info,
            "uname_r": platform.release(),
            "rows": n,
            "rounds": args.rounds,
            "median_ms": med,
            "min_ms": lo,
        },
    )
    print(f"\n{path}")


if __name__ == "__main__":
    main()
