"""Hamming distances and top-k against faiss IndexBinaryFlat and a slow numpy reference."""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
import pytest

from zembed.store import quantize, scan
from zembed.store.index import CHUNK_ROWS

WIDTHS = [1, 7, 8, 9, 33, 64, 384, 640, 1016]


def slow_hamming(q: npt.NDArray[np.uint8], codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Bit-by-bit reference: unpack and count differing bits."""
    qb = np.unpackbits(q, axis=-1).astype(np.int64)
    cb = np.unpackbits(codes, axis=-1).astype(np.int64)
    out: npt.NDArray[np.int64] = np.abs(qb[:, None, :] - cb[None, :, :]).sum(-1)
    return out


def codes_for(bits: int, n: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    x = rng.normal(size=(n, bits)).astype(np.float32)
    return quantize.binarize(x)


def check_topk_within_ties(
    dist: npt.NDArray[np.int32], pos: npt.NDArray[np.int64], ref: npt.NDArray[np.int64], k: int
) -> None:
    """Same distance multiset; every returned row truly has its distance; strict-better rows all in."""
    order = np.sort(ref)[:k]
    assert list(dist) == list(order)
    assert all(ref[p] == d for p, d in zip(pos, dist, strict=True))
    kth = order[-1]
    assert set(np.flatnonzero(ref < kth)) <= set(pos.tolist())


def all_distances(
    q: npt.NDArray[np.uint8], padded: npt.NDArray[np.uint8], kernel: str | None = None
) -> npt.NDArray[np.int64]:
    """Every row's distance to each query, read back from a top-k of k = n."""
    n = padded.shape[0]
    dist, pos = scan.topk(q, [scan.blocked(padded)], n, limit=n, kernel=kernel)
    out = np.empty((q.shape[0], n), dtype=np.int64)
    for i in range(q.shape[0]):
        out[i, pos[i]] = dist[i]
    return out


@pytest.mark.parametrize("bits", WIDTHS)
def test_distances_match_slow_reference_and_faiss(bits: int, rng: np.random.Generator) -> None:
    faiss = pytest.importorskip("faiss", reason="faiss-cpu is a dev dependency (the scan's named baseline)")
    n, nq = 700, 5
    codes = codes_for(bits, n, rng)
    queries = codes_for(bits, nq, rng)
    stride = quantize.row_stride(bits)
    d = all_distances(quantize.pad_rows(queries, stride), quantize.pad_rows(codes, stride))
    ref = slow_hamming(queries, codes)
    np.testing.assert_array_equal(d, ref)
    # faiss needs whole bytes: the packed codes' zero padding adds nothing to a distance
    index = faiss.IndexBinaryFlat(quantize.code_bytes(bits) * 8)
    index.add(codes)
    fd, fi = index.search(queries, n)
    for i in range(nq):
        np.testing.assert_array_equal(np.sort(ref[i]), fd[i])
        np.testing.assert_array_equal(ref[i][fi[i]], fd[i])


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("nq", [1, 3, 9])
def test_topk_matches_faiss_within_ties(bits: int, nq: int, rng: np.random.Generator) -> None:
    faiss = pytest.importorskip("faiss", reason="faiss-cpu is a dev dependency (the scan's named baseline)")
    n, k = 3000, 25
    codes = codes_for(bits, n, rng)
    queries = codes_for(bits, nq, rng)
    stride = quantize.row_stride(bits)
    padded = quantize.pad_rows(codes, stride)
    chunks = [scan.blocked(padded[i : i + 1000]) for i in range(0, n, 1000)]  # the heap crosses chunks
    dist, pos = scan.topk(quantize.pad_rows(queries, stride), chunks, k)
    ref = slow_hamming(queries, codes)
    index = faiss.IndexBinaryFlat(quantize.code_bytes(bits) * 8)
    index.add(codes)
    fd, _ = index.search(queries, k)
    for i in range(nq):
        np.testing.assert_array_equal(dist[i], fd[i])
        check_topk_within_ties(dist[i], pos[i], ref[i], min(k, n))
        # deterministic tie-break: (distance, position) ascending, like a stable sort
        expect = np.lexsort((np.arange(n), ref[i]))[:k]
        np.testing.assert_array_equal(pos[i], expect)


def test_mask_excludes_rows_during_scan(rng: np.random.Generator) -> None:
    n, k = 5000, 50
    codes = quantize.pad_rows(codes_for(640, n, rng), 80)
    q = quantize.pad_rows(codes_for(640, 2, rng), 80)
    mask = (rng.random(n) < 0.1).astype(np.uint8)
    dist, pos = scan.topk(q, [scan.blocked(codes)], k, [mask])
    assert dist.shape == (2, k)
    assert mask[pos].all()
    ref = slow_hamming(q, codes)
    for i in range(2):
        r = np.where(mask.astype(bool), ref[i], 10**9)
        np.testing.assert_array_equal(pos[i], np.lexsort((np.arange(n), r))[:k])


def test_fewer_visible_rows_than_k(rng: np.random.Generator) -> None:
    codes = quantize.pad_rows(codes_for(64, 100, rng), 8)
    mask = np.zeros(100, dtype=np.uint8)
    mask[[3, 50, 99]] = 1
    _, pos = scan.topk(codes[:4], [scan.blocked(codes)], 10, [mask])
    assert pos.shape == (4, 3)
    assert set(pos[0].tolist()) == {3, 50, 99}
    _dist, pos = scan.topk(codes[:1], [scan.blocked(codes)], 10, limit=0)
    assert pos.shape == (1, 0)


def test_batch_equals_single_queries_across_chunk_boundary(rng: np.random.Generator) -> None:
    n = CHUNK_ROWS + 300
    codes = quantize.pad_rows(codes_for(640, n, rng), 80)
    chunks = [scan.blocked(codes[:CHUNK_ROWS]), scan.blocked(codes[CHUNK_ROWS:])]
    q = quantize.pad_rows(codes_for(640, 11, rng), 80)
    bd, bp = scan.topk(q, chunks, 30)
    for i in range(11):
        sd, sp = scan.topk(q[i : i + 1], chunks, 30)
        np.testing.assert_array_equal(bd[i], sd[0])
        np.testing.assert_array_equal(bp[i], sp[0])


def test_index_gathers_rows_and_rowids_across_chunks(rng: np.random.Generator) -> None:
    from zembed.store.index import CodeIndex

    n = CHUNK_ROWS * 2 + 77
    codes = quantize.pad_rows(codes_for(300, n, rng), 40)
    idx = CodeIndex(40)
    idx.append(np.arange(n, dtype=np.int64) * 7 + 3, codes)
    view = idx.publish()
    pos = np.concatenate([rng.integers(0, n, 300), [0, CHUNK_ROWS - 1, CHUNK_ROWS, n - 1]]).astype(np.int64)
    np.testing.assert_array_equal(view.code_rows(pos), codes[pos])
    np.testing.assert_array_equal(view.rowids_of(pos), pos * 7 + 3)
    with pytest.raises(IndexError, match="out of range"):
        view.code_rows(np.array([CHUNK_ROWS * 3], dtype=np.int64))
    with pytest.raises(IndexError, match="out of range"):
        view.rowids_of(np.array([n - 1, CHUNK_ROWS * 3], dtype=np.int64))


# ---------------------------------------------------------------- kernels and threads
KERNELS = scan.kernels()


def test_kernel_name_is_reported() -> None:
    assert scan.kernel_name() in {"avx512", "avx2", "neon", "popcnt", "generic"}
    assert scan.kernel_name() == KERNELS[0]  # the best this CPU runs, unless ZEMBED_SCAN_KERNEL says
    assert KERNELS[-1] == "generic"


def random_codes(nbytes: int, n: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Random bytes of an odd or even width, zero padded to the row stride (as the store keeps them)."""
    return quantize.pad_rows(rng.integers(0, 256, (n, nbytes), dtype=np.uint8), (nbytes + 7) // 8 * 8)


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k != "generic"])
def test_every_kernel_matches_scalar_at_every_width(kernel: str, rng: np.random.Generator) -> None:
    """Every code width from 8 to 1024 bits (1 to 128 bytes: odd byte counts, zero-padded word tails),
    row counts off the 8-row block (a partial last block), masks, 1 to 9 queries, small and big k:
    the same (distance, position) lists as the scalar reference kernel, which is checked against a
    bit-by-bit reference."""
    for nbytes in range(1, 129):
        n = 37 + 8 * (nbytes % 5) + nbytes  # never a multiple of 8 for odd nbytes
        codes = random_codes(nbytes, n, rng)
        # queries near some rows, so distances spread from 0 to many (the heap gets ties and updates)
        q = codes[rng.integers(0, n, 1 + nbytes % 9)].copy()
        q[:, : max(1, nbytes // 3)] ^= rng.integers(0, 256, (q.shape[0], max(1, nbytes // 3)), dtype=np.uint8)
        mask = (rng.random(n) < 0.8).astype(np.uint8) if nbytes % 2 else None
        chunks = [scan.blocked(codes[: n // 2 // 8 * 8]), scan.blocked(codes[n // 2 // 8 * 8 :])]
        masks = None if mask is None else [mask[: n // 2 // 8 * 8], mask[n // 2 // 8 * 8 :]]
        for k in (1, 7, n):
            want = scan.topk(q, chunks, k, masks, limit=n, kernel="generic", threads=1)
            got = scan.topk(q, chunks, k, masks, limit=n, kernel=kernel, threads=1)
            np.testing.assert_array_equal(got[0], want[0], err_msg=f"{kernel} {nbytes} bytes k={k}")
            np.testing.assert_array_equal(got[1], want[1], err_msg=f"{kernel} {nbytes} bytes k={k}")
        if nbytes in (1, 9, 80, 127):
            ref = slow_hamming(q, codes)
            if mask is not None:
                ref = np.where(mask.astype(bool), ref, 10**9)
            dist, pos = scan.topk(q, chunks, 10, masks, limit=n, kernel=kernel, threads=1)
            for i in range(q.shape[0]):
                np.testing.assert_array_equal(pos[i], np.lexsort((np.arange(n), ref[i]))[:10])
                np.testing.assert_array_equal(dist[i], ref[i][pos[i]])


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_batches_equal_single_queries(kernel: str, rng: np.random.Generator) -> None:
    """Batched kernels (queries in lanes on AVX-512) agree with query-by-query scans, incl. 8k+1 queries."""
    codes = random_codes(80, 3001, rng)
    q = codes[rng.integers(0, 3001, 17)] ^ np.uint8(3)
    chunks = [scan.blocked(codes)]
    bd, bp = scan.topk(q, chunks, 40, limit=3001, kernel=kernel, threads=1)
    for i in range(17):
        sd, sp = scan.topk(q[i : i + 1], chunks, 40, limit=3001, kernel=kernel, threads=1)
        np.testing.assert_array_equal(bd[i], sd[0])
        np.testing.assert_array_equal(bp[i], sp[0])


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_threads_give_the_one_thread_result(threads: int, rng: np.random.Generator) -> None:
    """Rows split over threads (ranges crossing chunk boundaries, ties across ranges, masks, a limit
    inside a block): identical distances and positions, in the same order, as one thread."""
    n = CHUNK_ROWS * 2 + 5000
    codes = random_codes(16, n, rng)  # 128 bits: many equal distances, so ties cross the ranges
    codes[::97] = codes[5]  # exact duplicates everywhere
    chunks = [scan.blocked(codes[i : i + CHUNK_ROWS]) for i in range(0, n, CHUNK_ROWS)]
    mask = (rng.random(n) < 0.9).astype(np.uint8)
    masks = [mask[i : i + CHUNK_ROWS] for i in range(0, n, CHUNK_ROWS)]
    q = np.concatenate([codes[[5, 6, 7]], codes[rng.integers(0, n, 6)] ^ np.uint8(1)])
    for limit, k in ((n, 100), (n - 3, 1), (CHUNK_ROWS + 12345, 2000)):
        one = scan.topk(q, chunks, k, masks, limit=limit, threads=1)
        many = scan.topk(q, chunks, k, masks, limit=limit, threads=threads)
        assert one[0].shape == (len(q), k)
        np.testing.assert_array_equal(many[0], one[0])
        np.testing.assert_array_equal(many[1], one[1])
        assert (many[1] < limit).all() and mask[many[1]].all()


def test_threads_default_and_bounds() -> None:
    import os as _os

    assert scan.threads() >= 1
    before = scan.threads()
    try:
        scan.set_threads(3)
        assert scan.threads() == 3
        with pytest.raises(ValueError, match=r"scan threads must be in \[1, 256\]; given 0"):
            scan.set_threads(0)
    finally:
        scan.set_threads(before)
    if "ZEMBED_SCAN_THREADS" not in _os.environ:
        assert before == len(_os.sched_getaffinity(0))
    codes = random_codes(8, 100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="threads must be at least 1; given 0"):
        scan.topk(codes[:1], [scan.blocked(codes)], 5, limit=100, threads=0)


def test_unknown_or_unsupported_kernel_is_refused() -> None:
    codes = random_codes(8, 100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="scan kernel 'sse9' is unknown on this CPU"):
        scan.topk(codes[:1], [scan.blocked(codes)], 5, limit=100, kernel="sse9")
    absent = [k for k in ("avx512", "avx2", "popcnt", "neon") if k not in KERNELS]
    for name in absent:  # e.g. neon on x86: not built in, hence unknown; avx512 on an AVX2 CPU: unsupported
        with pytest.raises(ValueError, match=f"scan kernel '{name}' is (unknown|not supported) on this CPU"):
            scan.topk(codes[:1], [scan.blocked(codes)], 5, limit=100, kernel=name)


PROBE = (
    "import numpy as np; from zembed.store import scan, quantize;"
    "r=np.random.default_rng(3); c=quantize.pad_rows(np.packbits(r.normal(size=(999,70))>0,axis=-1),16);"
    "m=(r.random(999)<.5).astype(np.uint8); d,p=scan.topk(c[:5],[scan.blocked(c)],40,[m]);"
    "print(scan.kernel_name()); print(d.tolist()); print(p.tolist())"
)


@pytest.mark.parametrize("kernel", KERNELS)
def test_env_var_forces_the_kernel(kernel: str) -> None:
    """ZEMBED_SCAN_KERNEL picks the kernel at import (what an operator uses); same top-k."""
    import subprocess
    import sys

    env = {**os.environ, "ZEMBED_SCAN_KERNEL": kernel}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    default = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    name, d, p = out.stdout.splitlines()
    assert name == kernel
    assert (d, p) == tuple(default.stdout.splitlines()[1:])


def test_env_var_with_a_bad_kernel_fails_the_import_naming_the_choices() -> None:
    import subprocess
    import sys

    env = {**os.environ, "ZEMBED_SCAN_KERNEL": "avx9000"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ZEMBED_SCAN_KERNEL=avx9000 is unknown on this CPU; choose one of: auto, " in out.stderr
    assert ", generic" in out.stderr


def test_concurrent_searches_share_the_pool_and_get_their_own_results(rng: np.random.Generator) -> None:
    """Searches from many threads at once (as the service runs them), each split over threads: the
    pool's workers are busy with others' ranges, so callers run unstarted ranges themselves; every
    caller still gets exactly its one-thread result."""
    from concurrent.futures import ThreadPoolExecutor

    n = CHUNK_ROWS + 40000
    codes = random_codes(80, n, rng)
    chunks = [scan.blocked(codes[:CHUNK_ROWS]), scan.blocked(codes[CHUNK_ROWS:])]
    queries = [codes[rng.integers(0, n, 1 + i % 3)] ^ np.uint8(i) for i in range(24)]
    want = [scan.topk(q, chunks, 50, limit=n, threads=1) for q in queries]
    with ThreadPoolExecutor(max_workers=8) as callers:
        got = list(callers.map(lambda q: scan.topk(q, chunks, 50, limit=n, threads=3), queries))
    for (wd, wp), (gd, gp) in zip(want, got, strict=True):
        np.testing.assert_array_equal(gd, wd)
        np.testing.assert_array_equal(gp, wp)


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "must be in [1, 256]; given 0"), ("two", "must be an integer in [1, 256]; given 'two'")],
)
def test_bad_thread_count_in_the_environment_fails_the_import(value: str, message: str) -> None:
    import subprocess
    import sys

    env = {**os.environ, "ZEMBED_SCAN_THREADS": value}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert f"ZEMBED_SCAN_THREADS {message}" in out.stderr


def test_thread_count_from_the_environment() -> None:
    import subprocess
    import sys

    env = {**os.environ, "ZEMBED_SCAN_THREADS": "3"}
    code = "from zembed.store import scan; print(scan.threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
