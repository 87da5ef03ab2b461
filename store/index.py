"""The in-memory part of a collection: chunked code rows, a live mask and position -> row id.

Code chunks are kept in the scan kernel's blocked layout (``scan.blocked``): uint64
``[CHUNK_ROWS / 8, words, 8]``.

Rows are appended in row-id order into fixed-size chunks (no reallocation, no copy on growth). A
search works on an immutable :class:`View` (tuple of chunks, tuple of mask chunks, visible row count)
taken at its start. A writer appends past the visible count (invisible to readers), copies only the
mask chunks it changes, and publishes a new view with one reference assignment after its LMDB
transaction has committed: a search sees a batch entirely or not at all.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from zembed.store import _hamming

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

CHUNK_SHIFT = 16
CHUNK_ROWS = 1 << CHUNK_SHIFT


@dataclass(frozen=True)
class View:
    """What one search sees."""

    codes: tuple[U64, ...]
    masks: tuple[U8, ...]
    rowids: tuple[I64, ...]
    n: int  # positions [0, n) are visible (subject to masks)
    live: int  # number of live rows

    def rowids_of(self, positions: I64) -> I64:
        """Row ids of many positions (a shortlist), gathered in C."""
        out = np.empty(len(positions), dtype=np.int64)
        _hamming.gather_i64(self.rowids, np.ascontiguousarray(positions, dtype=np.int64), CHUNK_SHIFT, out)
        return out

    def code_rows(self, positions: I64) -> U8:
        """Row-major padded code rows at the given positions, ``[len, stride]``."""
        if not self.codes:
            return np.zeros((0, 0), dtype=np.uint8)
        words = self.codes[0].shape[1]
        out = np.empty((len(positions), words), dtype=np.uint64)
        _hamming.gather_rows(
            self.codes, np.ascontiguousarray(positions, dtype=np.int64), CHUNK_SHIFT, words, out
        )
        return out.view(np.uint8)

    def live_mask(self) -> U8:
        """The live mask over ``[0, n)`` as one array."""
        if not self.masks:
            return np.zeros(0, dtype=np.uint8)
        return np.concatenate(self.masks)[: self.n]


class CodeIndex:
    """Mutable state behind the views; only the collection's writer (under its lock) calls mutators."""

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self._codes: list[U64] = []
        self._masks: list[U8] = []
        self._rowids: list[I64] = []
        self._first_rowid: list[int] = []
        self._n = 0
        self._live = 0
        self.view = View((), (), (), 0, 0)

    @property
    def nbytes(self) -> int:
        """Bytes held by codes, masks and row ids (the index's RAM)."""
        per = sum(c.nbytes for c in self._codes) + sum(m.nbytes for m in self._masks)
        return per + sum(r.nbytes for r in self._rowids)

    def append(self, rowids: I64, codes: U8) -> None:
        """Stage rows (ascending row ids above every existing one) past the visible count."""
        start = 0
        total = len(rowids)
        while start < total:
            ci, off = divmod(self._n, CHUNK_ROWS)
            if ci == len(self._codes):
                self._codes.append(np.zeros((CHUNK_ROWS // 8, self.stride // 8, 8), dtype=np.uint64))
                self._masks.append(np.zeros(CHUNK_ROWS, dtype=np.uint8))
                self._rowids.append(np.full(CHUNK_ROWS, np.iinfo(np.int64).max, dtype=np.int64))
                self._first_rowid.append(int(rowids[start]))
            take = min(CHUNK_ROWS - off, total - start)
            lanes = np.arange(off, off + take)
            words = np.ascontiguousarray(codes[start : start + take]).view(np.uint64)
            self._codes[ci][lanes // 8, :, lanes % 8] = words
            self._rowids[ci][off : off + take] = rowids[start : start + take]
            # the mask chunk may be shared with a published view: copy before writing
            mask = self._masks[ci].copy()
            mask[off : off + take] = 1
            self._masks[ci] = mask
            self._n += take
            self._live += take
            start += take

    def position(self, rowid: int) -> int | None:
        """Position of a row id, or None when it is not in memory."""
        ci = bisect.bisect_right(self._first_rowid, rowid) - 1
        if ci < 0:
            return None
        chunk = self._rowids[ci]
        off = int(np.searchsorted(chunk, rowid))
        if off < CHUNK_ROWS and int(chunk[off]) == rowid and ci * CHUNK_ROWS + off < self._n:
            return ci * CHUNK_ROWS + off
        return None

    def kill(self, positions: list[int]) -> None:
        """Hide rows (copy-on-write of the mask chunks touched)."""
        copied: set[int] = set()
        for pos in positions:
            ci, off = divmod(pos, CHUNK_ROWS)
            if ci not in copied:
                self._masks[ci] = self._masks[ci].copy()
                copied.add(ci)
            if self._masks[ci][off]:
                self._masks[ci][off] = 0
                self._live -= 1

    @property
    def staged(self) -> int:
        """Positions used so far (visible or staged): the next row's position."""
        return self._n

    def publish(self) -> View:
        """Make everything staged so far visible to new searches."""
        self.view = View(tuple(self._codes), tuple(self._masks), tuple(self._rowids), self._n, self._live)
        return self.view
