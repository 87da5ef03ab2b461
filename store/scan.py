"""Hamming top-k over chunked code matrices: thin, typed wrappers around the C kernel.

``topk`` scans a sequence of chunks (each ``[rows, stride]`` uint8, C-contiguous) with an optional
per-chunk visibility mask and returns, per query, the ``k`` nearest rows by Hamming distance sorted by
(distance, position). Masked rows are skipped inside the kernel, so filtered and deleted rows never
take a place in the shortlist.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from store import _hamming

U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


def kernel_name() -> str:
    """Which kernel the CPU got: ``avx512vpopcntdq``, ``popcnt`` or ``generic``."""
    return str(_hamming.kernel())


def topk(
    queries: U8,
    chunks: Sequence[U8],
    k: int,
    masks: Sequence[U8 | None] | None = None,
    limit: int | None = None,
) -> tuple[I32, I64]:
    """Per query the ``k`` nearest rows: ``(dist [Q, m], pos [Q, m])`` with ``m <= k``, pos global.

    ``queries`` is ``[Q, stride]``; ``limit`` caps the rows scanned (rows at or past it are invisible).
    Every query gets the same number of results (the number of visible rows, at most ``k``).
    """
    q = np.ascontiguousarray(queries, dtype=np.uint8)
    if q.ndim != 2 or q.shape[1] % 8:
        raise ValueError(f"queries must be [Q, stride] with stride % 8 == 0; given {q.shape}")
    nq, stride = q.shape
    words = stride // 8
    hd = np.zeros((nq, k), dtype=np.int32)
    hi = np.zeros((nq, k), dtype=np.int64)
    hc = np.zeros(nq, dtype=np.int32)
    base = 0
    for ci, chunk in enumerate(chunks):
        rows = chunk.shape[0]
        if limit is not None:
            rows = max(0, min(rows, limit - base))
        if rows == 0:
            break
        view = chunk[:rows]
        mask = None if masks is None else masks[ci]
        _hamming.scan_topk(q, view, words, None if mask is None else mask[:rows], base, hd, hi, hc)
        base += chunk.shape[0]
    m = int(hc[0])
    dist = np.empty((nq, m), dtype=np.int32)
    pos = np.empty((nq, m), dtype=np.int64)
    for i in range(nq):
        order = np.lexsort((hi[i, :m], hd[i, :m]))
        dist[i] = hd[i, order]
        pos[i] = hi[i, order]
    return dist, pos


def distances(queries: U8, codes: U8) -> I32:
    """All pairwise Hamming distances ``[Q, n]`` between padded query and code rows."""
    q = np.ascontiguousarray(queries, dtype=np.uint8)
    c = np.ascontiguousarray(codes, dtype=np.uint8)
    if q.shape[1] != c.shape[1] or q.shape[1] % 8:
        raise ValueError(f"query and code strides differ or are not multiples of 8: {q.shape}, {c.shape}")
    out = np.empty((q.shape[0], c.shape[0]), dtype=np.int32)
    if q.shape[0] and c.shape[0]:
        _hamming.distances(q, c, q.shape[1] // 8, out)
    return out


def read_sum(buffer: npt.NDArray[np.generic]) -> int:
    """Read a whole buffer as 64-bit words once (the memory-bandwidth floor of a scan)."""
    return int(_hamming.read_sum(np.ascontiguousarray(buffer)))
