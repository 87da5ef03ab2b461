"""Codes and rescore vectors in blocks (format 2): many rows per LMDB value.

Row ids are allocated in order, so a collection's rows tile ``[first, next_row)`` without gaps. The
rows are stored in **runs**: one value in ``cblocks`` (the packed codes, ``code_bytes`` per row) and
one in ``vblocks`` (the rescore records, ``record_bytes`` per row) under the same key
``cid + first row id`` (big-endian). A run never crosses a block boundary (row ids that are a
multiple of :data:`BLOCK_ROWS`); in a block the runs shrink left to right, at least by half each
(like a binary counter): an append merges its run into the previous run of that block while that one
is not larger, and a block that becomes full is merged into one run. So

- a bulk write of whole blocks writes each block once, as one value (a few MB of overflow pages,
  one page of waste per value at most: no per-row page rounding);
- single-document writes rewrite O(log ``BLOCK_ROWS``) times on average per row, never a whole
  block per write;
- a block holds at most ``log2(BLOCK_ROWS) + 1`` runs: reopen reads a handful of large values.

A deleted or replaced row keeps its slot in its run (a tombstone in ``dead``, see ``layout``) until
the collection is compacted (``Collection.compact``).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lmdb
import numpy as np
import numpy.typing as npt

from zembed.store.errors import FormatMismatch

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

BLOCK_ROWS = 4096
_KEY = struct.Struct(">IQ")
_CID = struct.Struct(">I")


def run_key(cid: int, first: int) -> bytes:
    return _KEY.pack(cid, first)


@dataclass(frozen=True)
class Runs:
    """The run directory of one collection at one generation: ``starts`` ascending, ``lengths``."""

    starts: I64
    lengths: I64

    @classmethod
    def empty(cls) -> Runs:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))

    @property
    def rows(self) -> int:
        return int(self.lengths.sum())

    def find(self, rowids: I64) -> I64:
        """Index of the run holding each row id."""
        return np.searchsorted(self.starts, rowids, side="right").astype(np.int64) - 1

    def replace_from(self, first: int, starts: list[int], lengths: list[int]) -> Runs:
        """This directory with every run starting at or after ``first`` replaced by the given ones."""
        keep = self.starts < first
        return Runs(
            np.concatenate([self.starts[keep], np.asarray(starts, np.int64)]),
            np.concatenate([self.lengths[keep], np.asarray(lengths, np.int64)]),
        )


def read_runs(
    txn: lmdb.Transaction, dbs: Mapping[str, Any], cid: int, code_bytes: int
) -> tuple[Runs, list[memoryview]]:
    """The run directory and the code values (views, valid while ``txn`` lives) of a collection."""
    prefix = _CID.pack(cid)
    cur = txn.cursor(db=dbs["cblocks"])
    starts: list[int] = []
    values: list[memoryview] = []
    if cur.set_range(prefix):
        for k, v in cur.iternext():
            kb = bytes(k)
            if kb[:4] != prefix:
                break
            starts.append(_KEY.unpack(kb)[1])
            values.append(memoryview(v))
    lengths = [len(v) // code_bytes if code_bytes else 0 for v in values]
    runs = Runs(np.asarray(starts, np.int64), np.asarray(lengths, np.int64))
    for i in range(1, len(starts)):
        if starts[i] != starts[i - 1] + lengths[i - 1]:
            raise FormatMismatch(
                f"collection {cid}: code runs are not contiguous at row {starts[i]}: "
                "the environment is damaged"
            )
    return runs, values


def read_all(txn: lmdb.Transaction, dbs: Mapping[str, Any], cid: int, width: int, db: str) -> tuple[Runs, U8]:
    """Every row of the collection's ``db`` runs as one ``[rows, width]`` array (a copy)."""
    prefix = _CID.pack(cid)
    cur = txn.cursor(db=dbs[db])
    starts: list[int] = []
    parts: list[U8] = []
    if cur.set_range(prefix):
        for k, v in cur.iternext():
            kb = bytes(k)
            if kb[:4] != prefix:
                break
            starts.append(_KEY.unpack(kb)[1])
            parts.append(np.frombuffer(v, np.uint8).reshape(-1, width))
    lengths = np.asarray([len(p) for p in parts], np.int64)
    data = np.concatenate(parts) if parts else np.zeros((0, width), np.uint8)
    return Runs(np.asarray(starts, np.int64), lengths), data


def append(
    txn: lmdb.Transaction,
    dbs: Mapping[str, Any],
    cid: int,
    first: int,
    codes: U8,
    records: U8,
) -> tuple[int, list[int], list[int]]:
    """Write rows ``first ..`` (``codes [n, code_bytes]``, ``records [n, record_bytes]``) as runs,
    merging per the rule in the module doc. Returns ``(from_row, starts, lengths)``: the runs that
    now start at or after ``from_row`` (what a run directory must take over)."""
    n = codes.shape[0]
    cdb, vdb = dbs["cblocks"], dbs["vblocks"]
    out_starts: list[int] = []
    out_lengths: list[int] = []
    from_row = first
    puts: list[tuple[bytes, U8, U8]] = []
    pos = 0
    while pos < n:
        row = first + pos
        block = row - row % BLOCK_ROWS
        take = min(n - pos, block + BLOCK_ROWS - row)
        c_parts = [codes[pos : pos + take]]
        v_parts = [records[pos : pos + take]]
        start, length = row, take
        # the earlier runs of this block (at most log2(BLOCK_ROWS) + 1), newest last
        prev = _runs_in(txn, cdb, cid, block, row)
        full = row + take == block + BLOCK_ROWS
        while prev and (full or prev[-1][1] <= length):
            p_start, p_len, p_codes = prev.pop()
            p_vecs = txn.get(run_key(cid, p_start), db=vdb)
            if p_vecs is None:
                raise FormatMismatch(f"collection {cid}: run {p_start} has codes but no vectors (damaged)")
            c_parts.insert(0, np.frombuffer(p_codes, np.uint8).reshape(p_len, -1))
            v_parts.insert(0, np.frombuffer(p_vecs, np.uint8).reshape(p_len, -1))
            txn.delete(run_key(cid, p_start), db=cdb)
            txn.delete(run_key(cid, p_start), db=vdb)
            start, length = p_start, length + p_len
        c_val = c_parts[0] if len(c_parts) == 1 else np.concatenate(c_parts)
        v_val = v_parts[0] if len(v_parts) == 1 else np.concatenate(v_parts)
        puts.append((run_key(cid, start), c_val, v_val))
        if not out_starts:
            from_row = start
        out_starts.append(start)
        out_lengths.append(length)
        pos += take
    # all code runs first, then all vector runs: the codes of a batch get neighbouring pages, so a
    # reopen that maps them (large page-cache folios included) maps little of the vectors
    for key, c_val, _ in puts:
        txn.put(key, np.ascontiguousarray(c_val).data, db=cdb)
    for key, _, v_val in puts:
        txn.put(key, np.ascontiguousarray(v_val).data, db=vdb)
    return from_row, out_starts, out_lengths


def _runs_in(
    txn: lmdb.Transaction, db: Any, cid: int, block: int, before: int
) -> list[tuple[int, int, bytes]]:
    """The runs of ``block`` that start before row ``before``: ``(start, rows, codes)``."""
    cur = txn.cursor(db=db)
    out: list[tuple[int, int, bytes]] = []
    if not cur.set_range(run_key(cid, block)):
        return out
    for k, v in cur.iternext():
        c, start = _KEY.unpack(bytes(k))
        if c != cid or start >= before:
            break
        out.append((start, 0, bytes(v)))
    # lengths from the code width: rows = len / code_bytes, derived from the span to the next run
    fixed: list[tuple[int, int, bytes]] = []
    for i, (start, _, val) in enumerate(out):
        end = out[i + 1][0] if i + 1 < len(out) else before
        fixed.append((start, end - start, val))
    return fixed


def rewrite_codes(txn: lmdb.Transaction, dbs: Mapping[str, Any], cid: int, runs: Runs, codes: U8) -> None:
    """Overwrite the codes of every run (``codes`` holds all rows in run order)."""
    pos = 0
    for start, length in zip(runs.starts.tolist(), runs.lengths.tolist(), strict=True):
        txn.put(
            run_key(cid, start),
            np.ascontiguousarray(codes[pos : pos + length]).data,
            db=dbs["cblocks"],
        )
        pos += length


def delete_all(txn: lmdb.Transaction, dbs: Mapping[str, Any], cid: int) -> None:
    prefix = _CID.pack(cid)
    for name in ("cblocks", "vblocks"):
        cur = txn.cursor(db=dbs[name])
        while cur.set_range(prefix) and bytes(cur.key())[:4] == prefix:
            cur.delete()


def gather_records(
    txn: lmdb.Transaction, db: Any, cid: int, runs: Runs, rowids: I64, record_bytes: int
) -> list[memoryview]:
    """The rescore records of ``rowids`` as views into the map (valid while ``txn`` lives)."""
    idx = runs.find(rowids)
    cache: dict[int, memoryview] = {}
    out: list[memoryview] = []
    starts = runs.starts
    for r, i in zip(rowids.tolist(), idx.tolist(), strict=True):
        if i < 0:
            raise FormatMismatch(f"collection {cid}: row {r} lies in no run: the environment is damaged")
        mv = cache.get(i)
        if mv is None:
            val = txn.get(run_key(cid, int(starts[i])), db=db)
            if val is None:
                raise FormatMismatch(
                    f"collection {cid}: a run of vectors is missing: the environment is damaged"
                )
            mv = cache[i] = memoryview(val)
        off = (r - int(starts[i])) * record_bytes
        out.append(mv[off : off + record_bytes])
    return out


def row_of(txn: lmdb.Transaction, db: Any, cid: int, rowid: int, width: int) -> memoryview:
    """One row's bytes from the run holding it (a view while ``txn`` lives)."""
    cur = txn.cursor(db=db)
    found = cur.set_range(run_key(cid, rowid + 1))
    found = cur.prev() if found else cur.last()
    if found:
        c, start = _KEY.unpack(bytes(cur.key()))
        val = memoryview(cur.value())
        off = (rowid - start) * width
        if c == cid and off >= 0 and off + width <= len(val):
            return val[off : off + width]
    raise FormatMismatch(f"collection {cid}: row {rowid} lies in no run: the environment is damaged")


def run_bytes(runs: Runs, width: int, page_size: int) -> int:
    """Pages the runs of one kind take (values above about half a page go to overflow pages)."""
    sizes = runs.lengths * width
    big = sizes + 8 + 12 > (page_size - 16) // 2  # LMDB's largest node in a leaf page (2 a page)
    overflow = ((sizes[big] + 16 + page_size - 1) // page_size).sum() * page_size
    return int(overflow + sizes[~big].sum())
