"""Hamming top-k over chunked code matrices: thin, typed wrappers around the C kernel.

Codes are scanned in a blocked layout (see ``_hamming.c``): a chunk is a uint64 array
``[rows / 8, words, 8]`` holding word ``w`` of 8 consecutive rows side by side. :func:`blocked` and
:func:`rows_of` convert from and to row-major padded codes.

``topk`` scans a sequence of chunks with an optional per-chunk visibility mask and returns, per query,
the ``k`` nearest rows by Hamming distance sorted by (distance, position). Masked rows are skipped
inside the kernel, so filtered and deleted rows never take a place in the shortlist.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from zembed.store import _hamming

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


def kernel_name() -> str:
    """Which kernel the CPU got: ``avx512vpopcntdq``, ``popcnt`` or ``generic``."""
    return str(_hamming.kernel())


def blocked(codes: U8) -> U64:
    """Row-major padded codes ``[n, stride]`` as one blocked chunk ``[ceil(n/8), stride/8, 8]``."""
    n, stride = codes.shape
    words = stride // 8
    nb = (n + 7) // 8
    rows = np.zeros((nb * 8, words), dtype=np.uint64)
    rows[:n] = np.ascontiguousarray(codes).view(np.uint64).reshape(n, words)
    return np.ascontiguousarray(rows.reshape(nb, 8, words).transpose(0, 2, 1))


def rows_of(chunk: U64, lanes: npt.NDArray[np.intp]) -> U8:
    """Row-major padded codes of the given row offsets within one blocked chunk."""
    words = chunk.shape[1]
    out = chunk[lanes // 8, :, lanes % 8]  # [len, words]
    return np.ascontiguousarray(out).view(np.uint8).reshape(len(lanes), words * 8)


def topk(
    queries: U8,
    chunks: Sequence[U64],
    k: int,
    masks: Sequence[U8 | None] | None = None,
    limit: int | None = None,
) -> tuple[I32, I64]:
    """Per query the ``k`` nearest rows: ``(dist [Q, m], pos [Q, m])`` with ``m <= k``, pos global.

    ``queries`` is ``[Q, stride]``; ``limit`` caps the rows scanned (rows at or past it are invisible;
    a chunk made by :func:`blocked` from a row count that is not a multiple of 8 needs it, or a mask).
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
        if chunk.ndim != 3 or chunk.shape[1] != words or chunk.shape[2] != 8:
            raise ValueError(f"chunk {ci} must be blocked [blocks, {words}, 8]; given {chunk.shape}")
        rows = chunk.shape[0] * 8
        if limit is not None:
            rows = max(0, min(rows, limit - base))
        if rows == 0:
            break
        mask = None if masks is None else masks[ci]
        if mask is not None:
            rows = min(rows, mask.shape[0])  # rows past the mask's end are invisible
        _hamming.scan_topk(q, chunk, rows, words, None if mask is None else mask[:rows], base, hd, hi, hc)
        base += chunk.shape[0] * 8
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
