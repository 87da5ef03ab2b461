"""Store format 2 against faiss IndexBinaryFlat + a float16 file, and against format 1 (issue #10).

One data set: ``--rows`` (1M) unit vectors of 640 dims, clustered (1,000 centres), stored as 640-bit
sign codes + 640-dim float16 rescoring vectors. Each system runs in its own process (RSS and reopen
are per process); durable ingest and reopen are interleaved round by round, so machine noise hits
them alike:

- **ingest**: the vectors already in RAM (float16), written durably: this store's bulk path
  (``upsert_arrays``, 65,536 rows per transaction, each commit fsynced); faiss ``add`` of the codes +
  ``write_index_binary`` + the float16 array written to a file, both fsynced; format 1: ``upsert`` of
  10,000-row batches (its list path, as ``bench/ingest_bench.py`` drives it);
- **reopen**: ``Store(path)`` until searchable (page cache warm: the files were just written);
  faiss ``read_index_binary`` + ``np.load(mmap_mode="r")`` of the float16 file;
- **disk**: bytes in use (LMDB pages the B-trees reference; faiss: the two files) and allocated
  (``st_blocks``) against the raw bytes (codes + float16 vectors + 8-byte ids);
- **RSS** right after the reopen.

Format 1 is the code of commit 1885117 run from a git worktree (``--fmt1 /tmp/fmt1``, made with
``git worktree add /tmp/fmt1 1885117`` and the compiled ``_hamming`` copied in); without it the
"before" column is skipped. ``--before DIR``: a tree of an earlier format-2 commit (``git archive
COMMIT | tar -x -C DIR``, the compiled ``_hamming`` copied into ``DIR/store``) whose two ingest
paths run in the same rounds (a before/after of a change to the ingest path). The data (about 1.4 GB
per store) goes under ``bench/.cache`` and is deleted at the end.

Ingest is reported per round (the systems of a round run back to back, in an order that rotates
from round to round): each round's ratio ``faiss seconds / format 2 seconds``, their median, and the
CPU seconds (user + sys of the timed section, threads included) and minor page faults of each
system, which the disk's speed does not move (on a VM whose free memory goes back to the host, a
first touch of a page costs CPU, so page faults are reported with them). Before each ingest the
previous store of that system is deleted and the run waits ``--settle`` seconds (10): on such a VM
the pages just freed are cheap to reuse for a second or two and then go back to the host, so
without the pause a run that follows the deletion of a store reuses them (faiss took 1.5-1.7 s in
the rounds where it ran right after a 1.4 GB store of another system was deleted, 4.9 s in the
others) while a longer run outlasts them.

    .venv/bin/python bench/store_format.py [--rows 1000000] [--rounds 5] [--fmt1 /tmp/fmt1] [--before DIR]
    .venv/bin/python bench/store_format.py --standin 10000000   # the 10M figures (see standin())
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
DIMS = 640
BATCH = 65536
FMT1_BATCH = 10_000
BEFORE = ("fmt2b", "fmt2vb")  # format 2's ingest paths from the --before tree
INGEST_ONLY = ("fmt2v", "fmt2m", "fmt2L", *BEFORE)
# --large-variant: the codes-given path in transactions of 262,144 rows (4 synced commits for 1M
# rows instead of 16; upsert_arrays takes up to MAX_BULK_ROWS = 1,048,576 rows per call)
LARGE_BATCH = 262_144  # the same store as fmt2: only their ingest is measured
# --malloc-variant: fmt2 with glibc keeping freed memory (LMDB's dirty pages of one batch are reused
# by the next instead of being faulted in again): a process setting, not the library's
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
LABELS = {
    "fmt2": "format 2, codes + unit vectors given",
    "fmt2v": "format 2, vectors only (codes computed, norms checked)",
    "fmt2m": "format 2, codes given, MALLOC_TRIM/MMAP_THRESHOLD_ set",
    "fmt2L": "format 2, codes given, 262,144 rows per transaction",
    "fmt2b": "  before: codes + unit vectors given",
    "fmt2vb": "  before: vectors only",
    "faiss": "faiss add + write + fsync",
    "fmt1": "format 1 (list path)",
}


def rss(kind: str = "VmRSS") -> int:
    """Resident bytes: ``VmRSS`` (all), ``RssAnon`` (private memory), ``RssFile`` (mapped file pages:
    page cache the kernel may drop)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(kind + ":"):
                return int(line.split()[1]) * 1024
    return 0


def make_data(path: Path, rows: int, seed: int = 0) -> None:
    """Clustered unit vectors (float16) and their sign codes, written once and shared."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, DIMS)).astype(np.float32)
    x = np.lib.format.open_memmap(path / "x16.npy", mode="w+", dtype=np.float16, shape=(rows, DIMS))
    codes = np.lib.format.open_memmap(path / "codes.npy", mode="w+", dtype=np.uint8, shape=(rows, DIMS // 8))
    for s in range(0, rows, BATCH):
        m = min(BATCH, rows - s)
        v = centres[rng.integers(0, 1000, m)] + 0.7 * rng.standard_normal((m, DIMS), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        x[s : s + m] = v
        codes[s : s + m] = np.packbits(v > 0, axis=1)
    x.flush()
    codes.flush()
    del x, codes


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def du(path: Path) -> int:
    """Disk blocks of the store's data (LMDB: data.mdb; faiss: both files)."""
    files = [path / "data.mdb"] if (path / "data.mdb").exists() else list(path.iterdir())
    return sum(f.stat().st_blocks * 512 for f in files)


def lmdb_used(path: Path) -> int:
    """Pages the B-trees of an LMDB environment reference (either format)."""
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=32)
    psize = env.stat()["psize"]
    total = 2 * psize
    with env.begin() as txn:
        st = env.stat()
        total += (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * psize
        names = [bytes(k) for k, _ in txn.cursor()]
        for name in names:
            s = txn.stat(env.open_db(name, txn=txn, create=False))
            total += (s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]) * psize
    env.close()
    return total


# ---------------------------------------------------------------------------------------- children
def child(kind: str, action: str, data: Path, store: Path) -> dict[str, Any]:
    if action == "ingest":
        x = np.load(data / "x16.npy")  # in RAM, as a loader that has the vectors would hold them
        codes = np.load(data / "codes.npy")
        n = len(x)
        if kind == "faiss":
            import faiss
        else:
            from zembed.store import Calibration, CollectionConfig, Store
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        if kind == "faiss":
            store.mkdir(parents=True)
            index = faiss.IndexBinaryFlat(DIMS)
            index.add(codes)
            faiss.write_index_binary(index, str(store / "codes.faissb"))
            x.tofile(store / "x16.f16")
            for f in store.iterdir():
                fsync(f)
            fsync(store)
        elif kind in ("fmt2", "fmt2v", "fmt2m", "fmt2L", "fmt2b", "fmt2vb"):
            with Store(store) as s:
                s.create_collection(
                    "c", CollectionConfig(code_bits=DIMS, rescore_dims=DIMS, calibration=Calibration.NONE)
                )
                c = s.collection("c")
                ids = np.arange(n, dtype=np.int64)
                step = LARGE_BATCH if kind == "fmt2L" else BATCH
                for b in range(0, n, step):
                    # what faiss gets: the codes, and unit vectors (as a model gives them)
                    if kind in ("fmt2", "fmt2m", "fmt2L", "fmt2b"):
                        c.upsert_arrays(
                            ids[b : b + step], x[b : b + step], codes=codes[b : b + step], normalized=True
                        )
                    else:  # the vectors only: codes computed, every norm checked
                        c.upsert_arrays(ids[b : b + step], x[b : b + step])
        else:  # fmt1: its list path (ids as strings, float32 batches)
            with Store(store) as s:
                s.create_collection(
                    "c", CollectionConfig(code_bits=DIMS, rescore_dims=DIMS, calibration=Calibration.NONE)
                )
                c = s.collection("c")
                for b in range(0, n, FMT1_BATCH):
                    part = x[b : b + FMT1_BATCH].astype(np.float32)
                    c.upsert([str(i) for i in range(b, b + len(part))], part)
        secs = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "seconds": secs,
            "docs_per_s": n / secs,
            "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "user_s": r1.ru_utime - r0.ru_utime,
            "sys_s": r1.ru_stime - r0.ru_stime,
            "minflt": r1.ru_minflt - r0.ru_minflt,
            "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
    if action == "reopen":
        q = np.load(data / "x16.npy", mmap_mode="r")[123].astype(np.float32)
        if kind == "faiss":
            import faiss
        else:
            from zembed.store import Store
        base = rss()
        t = time.perf_counter()
        if kind == "faiss":
            loaded: Any = faiss.read_index_binary(str(store / "codes.faissb"))
            vecs = np.memmap(store / "x16.f16", dtype=np.float16, mode="r").reshape(-1, DIMS)
            secs = time.perf_counter() - t
            after, anon, mapped = rss(), rss("RssAnon"), rss("RssFile")
            _, hit = loaded.search(np.packbits(q > 0)[None, :], 100)
            top = int(hit[0][np.argmax(vecs[hit[0]].astype(np.float32) @ q)])
            count = loaded.ntotal
        else:
            s = Store(store)
            c = s.collection("c")
            secs = time.perf_counter() - t
            after, anon, mapped = rss(), rss("RssAnon"), rss("RssFile")
            top = int(c.search(q, top_k=1)[0][0].id)
            count = c.count()
            s.close()
        return {
            "seconds": secs,
            "rss_after_open": after,
            "rss_delta": after - base,
            "rss_anon": anon,
            "rss_file": mapped,
            "top": top,
            "count": count,
        }
    if action == "disk":
        used = sum(f.stat().st_size for f in store.iterdir()) if kind == "faiss" else lmdb_used(store)
        return {"used": used, "allocated": du(store)}
    raise ValueError(action)


def standin(base: Path, rows: int) -> dict[str, Any]:
    """The 10M figures without 26 GB of disk: ``rows`` documents with 640-bit codes and 16-dim
    float16 vectors measure what grows per document (the id trees), exactly as at full size; the
    blocks of 1280-dim float16 vectors are whole LMDB values whose pages are known in advance (one
    run of 4,096 rows = ceil((4096 x 2560 + 16) / 4096) overflow pages). Used and allocated at 10M x
    1280 dims = measured trees + exact blocks (+ the preallocation policy's ahead)."""
    from zembed.store import Calibration, CollectionConfig, Store
    from zembed.store.blocks import BLOCK_ROWS
    from zembed.store.layout import PREALLOCATE_MAX, PREALLOCATE_MIN

    small = 16
    store = base / "standin"
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    with Store(store) as s:
        s.create_collection(
            "c", CollectionConfig(code_bits=DIMS, rescore_dims=small, calibration=Calibration.NONE)
        )
        c = s.collection("c")
        for b in range(0, rows, BATCH):
            m = min(BATCH, rows - b)
            x = rng.standard_normal((m, small), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            codes = rng.integers(0, 256, (m, DIMS // 8), dtype=np.uint8)
            c.upsert_arrays(np.arange(b, b + m), x.astype(np.float16), codes=codes, normalized=True)
        usage = s.env.usage()
    secs = time.perf_counter() - t
    psize = 4096
    trees = usage["bytes_in_use"] - usage["block_bytes"]
    nblocks = -(-rows // BLOCK_ROWS)

    def block_pages(width: int) -> int:
        return nblocks * (-(-(BLOCK_ROWS * width + 16) // psize)) * psize

    used = trees + block_pages(DIMS // 8) + block_pages(1280 * 2) + nblocks * 2 * 24
    allocated = used + min(max(used // 8, PREALLOCATE_MIN), PREALLOCATE_MAX)
    raw = rows * (DIMS // 8 + 1280 * 2 + 8)
    out = {
        "rows": rows,
        "ingest_s": secs,
        "measured": usage,
        "measured_allocated_over_used": usage["bytes_allocated"] / usage["bytes_in_use"],
        "tree_bytes_per_doc": trees / rows,
        "used_1280": used,
        "allocated_1280_at_most": allocated,
        "raw_1280": raw,
    }
    shutil.rmtree(store, ignore_errors=True)
    return out


def run_child(
    kind: str, action: str, data: Path, store: Path, fmt1: Path | None, before: Path | None = None
) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(fmt1 if kind == "fmt1" else before if kind in BEFORE else ROOT)
    env["OMP_NUM_THREADS"] = "1"
    if kind == "fmt2m":
        env.update(MALLOC_ENV)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind, action, str(data), str(store)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {action} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--fmt1-rounds", type=int, default=1, help="rounds of format 1 (slow)")
    ap.add_argument("--fmt1", type=Path, default=Path("/tmp/fmt1"), help="a worktree of format-1 code")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds of pause before each ingest")
    ap.add_argument("--malloc-variant", action="store_true", help="also fmt2 with MALLOC_ENV (see above)")
    ap.add_argument(
        "--large-variant", action="store_true", help="also fmt2 in transactions of 262,144 rows (see above)"
    )
    ap.add_argument("--before", type=Path, default=None, help="a tree of earlier format-2 code (see above)")
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / ".cache" / "store_format")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--standin", type=int, default=0, help="only the 10M stand-in, at this many rows")
    args = ap.parse_args()
    if args.standin:
        from common import write_json

        args.dir.mkdir(parents=True, exist_ok=True)
        try:
            res = standin(args.dir, args.standin)
        finally:
            shutil.rmtree(args.dir, ignore_errors=True)
        used, alloc, raw = res["used_1280"], res["allocated_1280_at_most"], res["raw_1280"]
        print(
            f"stand-in {res['rows']:,} rows (640-bit codes, 16-dim float16; {res['ingest_s']:.0f} s): "
            f"trees {res['tree_bytes_per_doc']:.1f} B/doc, measured allocated/used "
            f"{res['measured_allocated_over_used']:.3f}; at 1280 dims: used {used / 1e9:.2f} GB = "
            f"{used / raw:.3f}x raw ({raw / 1e9:.2f} GB), allocated at most {alloc / 1e9:.2f} GB = "
            f"{alloc / used:.3f}x used"
        )
        write_json(f"store_format_standin_{args.standin}", res)
        return
    if args.child:
        kind, action, data, store = args.child
        print(json.dumps(child(kind, action, Path(data), Path(store))))
        return
    from common import table, write_json

    base: Path = args.dir
    shutil.rmtree(base, ignore_errors=True)
    data = base / "data"
    data.mkdir(parents=True)
    fmt1 = args.fmt1 if (args.fmt1 / "zembed" / "store" / "layout.py").exists() else None
    before = (
        args.before if args.before and (args.before / "zembed" / "store" / "layout.py").exists() else None
    )
    kinds = ["fmt2", "faiss", "fmt2v"] + (["fmt2m"] if args.malloc_variant else [])
    kinds += ["fmt2L"] if args.large_variant else []
    kinds += (list(BEFORE) if before else []) + (["fmt1"] if fmt1 else [])
    cols = [k for k in kinds if k not in INGEST_ONLY]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {k: {"ingest": [], "reopen": []} for k in kinds}
    disk: dict[str, dict[str, Any]] = {}
    try:
        t = time.perf_counter()
        make_data(data, args.rows)
        print(f"data: {args.rows} x {DIMS} float16 + codes in {time.perf_counter() - t:.1f} s", flush=True)
        print(machine_line(), flush=True)
        for r in range(args.rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # position effects rotate
            for kind in order:
                if kind == "fmt1" and r >= args.fmt1_rounds:
                    continue
                store = base / f"{kind}-store"
                shutil.rmtree(store, ignore_errors=True)
                time.sleep(args.settle)  # every system starts from the same memory state (see above)
                res = run_child(kind, "ingest", data, store, fmt1, before)
                res["round"] = r
                results[kind]["ingest"].append(res)
                if kind in INGEST_ONLY:
                    shutil.rmtree(store, ignore_errors=True)
                    print(
                        f"round {r} {kind}: ingest {res['seconds']:.2f} s, cpu {res['cpu_s']:.2f} s",
                        flush=True,
                    )
                    continue
                for _ in range(2):
                    results[kind]["reopen"].append(run_child(kind, "reopen", data, store, fmt1))
                if r == args.rounds - 1 or (kind == "fmt1" and r == args.fmt1_rounds - 1):
                    disk[kind] = run_child(kind, "disk", data, store, fmt1)
                print(
                    f"round {r} {kind}: ingest {res['seconds']:.2f} s, cpu {res['cpu_s']:.2f} s, reopen "
                    f"{results[kind]['reopen'][-1]['seconds']:.3f} s",
                    flush=True,
                )
                if kind == "fmt1" or r < args.rounds - 1:
                    shutil.rmtree(store, ignore_errors=True)  # bounded disk: one store of each at most
        raw = args.rows * (DIMS // 8 + DIMS * 2 + 8)
        rows: list[list[Any]] = []

        def med(kind: str, action: str, key: str) -> float:
            return float(np.median([x[key] for x in results[kind][action]]))

        def spread(kind: str, action: str, key: str, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
            vals = [x[key] * scale for x in results[kind][action]]
            return f"{fmt.format(min(vals))}-{fmt.format(max(vals))}"

        for kind in cols:
            assert all(x["count"] == args.rows for x in results[kind]["reopen"]), kind
        summary = ingest_summary(results, [k for k in kinds if k != "fmt1"])
        for kind, label in (
            ("fmt2", "durable ingest (docs/s)"),
            ("fmt2v", "  vectors only (codes computed, norms checked)"),
        ):
            row_: list[Any] = [label] + [
                spread(k, "ingest", "docs_per_s", 1.0, "{:,.0f}") if k in (kind, "faiss", "fmt1") else ""
                for k in cols
            ]
            rows.append([*row_, f"{summary[kind]['ratio_median']:.2f} (median of rounds)"])
        for label, action, key, scale, fmt in (
            ("reopen (s)", "reopen", "seconds", 1.0, "{:.3f}"),
            ("RSS right after open (MB)", "reopen", "rss_after_open", 1e-6, "{:.0f}"),
            ("  private (RssAnon, MB)", "reopen", "rss_anon", 1e-6, "{:.0f}"),
            ("  mapped file pages (RssFile, MB)", "reopen", "rss_file", 1e-6, "{:.0f}"),
        ):
            row: list[Any] = [label] + [spread(k, action, key, scale, fmt) for k in cols]
            ratio = med("fmt2", action, key) / (med("faiss", action, key) or 1.0)
            row.append(f"{ratio:.2f}")
            rows.append(row)
        rows.append(
            ["bytes in use / raw"]
            + [f"{disk[k]['used'] / 1e9:.3f} GB ({disk[k]['used'] / raw:.3f}x)" for k in cols]
            + [f"{disk['fmt2']['used'] / disk['faiss']['used']:.2f}"]
        )
        rows.append(
            ["allocated / in use"]
            + [
                f"{disk[k]['allocated'] / 1e9:.3f} GB ({disk[k]['allocated'] / disk[k]['used']:.3f}x)"
                for k in cols
            ]
            + [f"{disk['fmt2']['allocated'] / disk['faiss']['allocated']:.2f}"]
        )
        print(ingest_table(summary))
        headers = ["", "format 2 (this store)", "faiss IndexBinaryFlat + f16 file"]
        headers += ["format 1 (before)"] if fmt1 else []
        headers += ["format 2 / faiss"]
        print(f"\n{args.rows:,} rows, raw {raw / 1e9:.3f} GB (codes + float16 vectors + 8-byte ids)")
        print(table(headers, rows))
        path = write_json(
            "store_format",
            {
                "rows": args.rows,
                "dims": DIMS,
                "raw_bytes": raw,
                "results": results,
                "disk": disk,
                "ingest_summary": summary,
                "cpu": _cpu(),
            },
        )
        print(f"written {path}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def ingest_summary(results: dict[str, dict[str, list[dict[str, Any]]]], kinds: list[str]) -> dict[str, Any]:
    """Per system: seconds, CPU seconds and minor faults per round; each round's ratio ``faiss
    seconds / its seconds`` (the same round) and their median; CPU ratio of the medians."""
    faiss = {x["round"]: x for x in results["faiss"]["ingest"]}
    out: dict[str, Any] = {}
    for kind in kinds:
        runs = results[kind]["ingest"]
        ratios = [faiss[x["round"]]["seconds"] / x["seconds"] for x in runs if x["round"] in faiss]
        cpu = [x["cpu_s"] for x in runs]
        out[kind] = {
            "seconds": [x["seconds"] for x in runs],
            "ratios": ratios,
            "ratio_median": float(np.median(ratios)),
            "cpu_s": cpu,
            "cpu_median": float(np.median(cpu)),
            "cpu_ratio": float(np.median([x["cpu_s"] for x in faiss.values()]) / np.median(cpu)),
            "user_median": float(np.median([x["user_s"] for x in runs])),
            "sys_median": float(np.median([x["sys_s"] for x in runs])),
            "minflt_median": float(np.median([x["minflt"] for x in runs])),
        }
    return out


def ingest_table(summary: dict[str, Any]) -> str:
    from common import table

    rows = []
    for kind, s in summary.items():
        rows.append(
            [
                LABELS[kind],
                " ".join(f"{x:.2f}" for x in s["seconds"]),
                " ".join(f"{x:.2f}" for x in s["ratios"]) if kind != "faiss" else "",
                f"{s['ratio_median']:.2f}" if kind != "faiss" else "",
                " ".join(f"{x:.2f}" for x in s["cpu_s"]),
                f"{s['cpu_median']:.2f} ({s['user_median']:.2f} + {s['sys_median']:.2f})",
                f"{s['cpu_ratio']:.2f}" if kind != "faiss" else "",
                f"{s['minflt_median'] / 1e3:.0f}k",
            ]
        )
    headers = [
        "durable ingest",
        "seconds per round",
        "faiss s / s per round",
        "median",
        "CPU s per round (user+sys)",
        "CPU median (user + sys)",
        "faiss CPU / CPU",
        "minor faults",
    ]
    return "\n" + table(headers, rows)


def machine_line() -> str:
    c = _cpu()
    has = [f for f in ("avx512f", "avx512_vpopcntdq", "avx512vpopcntdq", "avx2") if f in c["avx_flags"]]
    return (
        f"machine: kernel {c['kernel']}, CPU {c['model']!r} x {c['cores']}, "
        f"avx512: {'yes' if any(f.startswith('avx512') for f in has) else 'no'}, "
        f"avx2: {'yes' if 'avx2' in has else 'no'}"
    )


def _cpu() -> dict[str, Any]:
    model, flags = "", list[str]()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = [x for x in line.split(":", 1)[1].split() if x.startswith("avx")]
    return {
        "model": model,
        "avx_flags": flags,
        "kernel": os.uname().release,
        "cores": os.cpu_count(),
    }


if __name__ == "__main__":
    main()
