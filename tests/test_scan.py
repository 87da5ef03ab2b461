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


@pytest.mark.parametrize("bits", WIDTHS)
def test_distances_match_slow_reference_and_faiss(bits: int, rng: np.random.Generator) -> None:
    faiss = pytest.importorskip("faiss", reason="faiss-cpu is a dev dependency (the scan's named baseline)")
    n, nq = 700, 5
    codes = codes_for(bits, n, rng)
    queries = codes_for(bits, nq, rng)
    stride = quantize.row_stride(bits)
    d = scan.distances(quantize.pad_rows(queries, stride), quantize.pad_rows(codes, stride))
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


def test_kernel_name_is_reported() -> None:
    assert scan.kernel_name() in {"avx512vpopcntdq", "popcnt", "generic"}


def test_read_sum_reads_every_word() -> None:
    data = np.arange(1001, dtype=np.uint64)
    assert scan.read_sum(data) == int(data.sum())


@pytest.mark.parametrize("kernel", ["generic", "popcnt"])
def test_portable_kernels_agree(kernel: str, tmp_path: object) -> None:
    """The scalar kernels (chosen on CPUs without AVX-512) give the same top-k, masks and ties."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from store import scan, quantize;"
        "r=np.random.default_rng(3); c=quantize.pad_rows(np.packbits(r.normal(size=(999,70))>0,axis=-1),16);"
        "m=(r.random(999)<.5).astype(np.uint8); d,p=scan.topk(c[:5],[scan.blocked(c)],40,[m]);"
        "print(scan.kernel_name()); print(d.tolist()); print(p.tolist())"
    )
    env = {**os.environ, "ZEMBED_SCAN_KERNEL": kernel}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, d, p = out.stdout.splitlines()
    assert name == kernel
    assert (d, p) == tuple(default.stdout.splitlines()[1:])


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
