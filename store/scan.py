"""Hamming top-k over chunked code matrices: typed wrappers around the C kernels, split over threads.

Codes are scanned in a blocked layout (see ``csrc/scan.h``): a chunk is a uint64 array
``[rows / 8, words, 8]`` holding word ``w`` of 8 consecutive rows side by side. :func:`blocked` and
:func:`rows_of` convert from and to row-major padded codes.

``topk`` scans a sequence of chunks with an optional per-chunk visibility mask and returns, per query,
the ``k`` nearest rows by Hamming distance sorted by (distance, position). Masked rows are skipped
inside the kernel, so filtered and deleted rows never take a place in the shortlist.

Kernels: the extension picks the best one this CPU runs (``avx512`` VPOPCNTDQ, ``avx2`` nibble-table
popcount with Harley-Seal accumulation, ``neon`` on ARM, scalar ``popcnt``, portable ``generic``);
``ZEMBED_SCAN_KERNEL`` forces one at import, ``topk(kernel=...)`` per call. :func:`kernel_name` says
which one runs.

Threads: the visible rows are cut into contiguous ranges, one per thread (the GIL is released inside
the kernel); each range keeps its own heaps and the heaps merge by (distance, position), so the result
is identical to one thread's. The default count is the machine's cores (``ZEMBED_SCAN_THREADS``
overrides it, :func:`set_threads` too); scans of fewer than ``MIN_ROWS_PER_THREAD`` rows per thread
use fewer threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from zembed.store import _hamming

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

MIN_ROWS_PER_THREAD = 32768  # below this a thread's start-up and the merge cost more than the scan
_CUT = 256  # ranges start on a tile boundary (the kernels' 256-row tiles)


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _threads_from_env() -> int:
    raw = os.environ.get("ZEMBED_SCAN_THREADS", "").strip()
    if not raw:
        return _cores()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"ZEMBED_SCAN_THREADS must be an integer in [1, 256]; given {raw!r}") from None
    if not 1 <= value <= 256:
        raise ValueError(f"ZEMBED_SCAN_THREADS must be in [1, 256]; given {value}")
    return value


_threads = _threads_from_env()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def kernel_name() -> str:
    """The scan kernel in use: ``avx512``, ``avx2``, ``neon``, ``popcnt`` or ``generic``."""
    return str(_hamming.kernel())


def kernels() -> tuple[str, ...]:
    """Every kernel this CPU runs, best first (the first is the default unless one is forced)."""
    return tuple(str(k) for k in _hamming.kernels())


def threads() -> int:
    """The default number of threads a scan uses."""
    return _threads


def set_threads(n: int) -> None:
    """Set the default number of threads a scan uses (1 to 256)."""
    global _threads
    if not 1 <= n <= 256:
        raise ValueError(f"scan threads must be in [1, 256]; given {n}")
    _threads = n


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zembed-scan")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


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


# one piece of a scan: (blocked codes, rows, mask or None, position of its first row)
_Piece = tuple[U64, int, U8 | None, int]


def _pieces(
    chunks: Sequence[U64], words: int, masks: Sequence[U8 | None] | None, limit: int | None
) -> list[_Piece]:
    out: list[_Piece] = []
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
            mask = mask[:rows]
        if rows > 0:
            out.append((chunk, rows, mask, base))
        base += chunk.shape[0] * 8
    return out


def _split(pieces: list[_Piece], parts: int) -> list[list[_Piece]]:
    """Cut the pieces into `parts` runs of about equal rows, each in position order."""
    total = sum(p[1] for p in pieces)
    per = -(-total // parts)
    per = -(-per // _CUT) * _CUT
    runs: list[list[_Piece]] = [[]]
    room = per
    for chunk, rows, mask, base in pieces:
        start = 0
        while start < rows:
            if room == 0:
                runs.append([])
                room = per
            take = min(rows - start, room)
            b0, b1 = start // 8, -(-(start + take) // 8)
            sub_mask = None if mask is None else mask[start : start + take]
            runs[-1].append((chunk[b0:b1], take, sub_mask, base + start))
            start += take
            room -= take
    return [r for r in runs if r]


def _scan_run(q: U8, run: list[_Piece], k: int, words: int, kernel: str | None) -> tuple[I32, I64, int]:
    nq = q.shape[0]
    hd = np.zeros((nq, k), dtype=np.int32)
    hi = np.zeros((nq, k), dtype=np.int64)
    hc = np.zeros(nq, dtype=np.int32)
    for chunk, rows, mask, base in run:
        _hamming.scan_topk(q, chunk, rows, words, mask, base, hd, hi, hc, kernel)
    return hd, hi, int(hc[0])


def topk(
    queries: U8,
    chunks: Sequence[U64],
    k: int,
    masks: Sequence[U8 | None] | None = None,
    limit: int | None = None,
    *,
    threads: int | None = None,
    kernel: str | None = None,
) -> tuple[I32, I64]:
    """Per query the ``k`` nearest rows: ``(dist [Q, m], pos [Q, m])`` with ``m <= k``, pos global.

    ``queries`` is ``[Q, stride]``; ``limit`` caps the rows scanned (rows at or past it are invisible;
    a chunk made by :func:`blocked` from a row count that is not a multiple of 8 needs it, or a mask).
    Every query gets the same number of results (the number of visible rows, at most ``k``).
    ``threads`` (default :func:`threads`) and ``kernel`` (default :func:`kernel_name`) never change
    the result.
    """
    q = np.ascontiguousarray(queries, dtype=np.uint8)
    if q.ndim != 2 or q.shape[1] % 8 or q.shape[1] == 0:
        raise ValueError(f"queries must be [Q, stride] with stride % 8 == 0; given {q.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1; given {k}")
    nthreads = _threads if threads is None else threads
    if nthreads < 1:
        raise ValueError(f"threads must be at least 1; given {nthreads}")
    nq, stride = q.shape
    words = stride // 8
    pieces = _pieces(chunks, words, masks, limit)
    total = sum(p[1] for p in pieces)
    parts = max(1, min(nthreads, total // MIN_ROWS_PER_THREAD))
    if nq == 0:
        return np.zeros((0, 0), dtype=np.int32), np.zeros((0, 0), dtype=np.int64)
    runs = _split(pieces, parts) if pieces else [[]]
    if len(runs) == 1:
        hd, hi, m = _scan_run(q, runs[0], k, words, kernel)
        hd, hi = hd[:, :m], hi[:, :m]
    else:
        pool = _executor(len(runs) - 1)
        futures: list[Future[tuple[I32, I64, int]]] = [
            pool.submit(_scan_run, q, run, k, words, kernel) for run in runs[1:]
        ]
        results = [_scan_run(q, runs[0], k, words, kernel)]
        for run, future in zip(runs[1:], futures, strict=True):
            # a run no worker has started yet (they are busy with other searches) runs here instead
            results.append(_scan_run(q, run, k, words, kernel) if future.cancel() else future.result())
        hd = np.concatenate([d[:, :m] for d, _, m in results], axis=1)
        hi = np.concatenate([i[:, :m] for _, i, m in results], axis=1)
    m = min(k, hd.shape[1])
    order = np.lexsort((hi, hd), axis=-1)[:, :m]
    return np.take_along_axis(hd, order, axis=-1), np.take_along_axis(hi, order, axis=-1)
