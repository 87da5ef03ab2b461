"""Reading the rows of a format-1 data directory (releases before issue #10), which is served
read-only until ``zembed migrate`` converts it.

Format 1 kept one value per row: the packed code in ``codes`` and the rescore record in ``vecs``,
both under ``cid + rowid`` (``store.layout``); a deleted row's entries were removed, so the row ids
have gaps and there are no tombstones. Ids, metadata, filterable fields and the collection record
are laid out as in format 2, so everything but these two reads is the format-2 code
(:class:`store.reader.Rows` is the seam). The converter (``store.migrate``) keeps its own frozen
reader of this layout.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import lmdb
import numpy as np
import numpy.typing as npt

from zembed.store import quantize
from zembed.store.blocks import Runs
from zembed.store.errors import FormatMismatch
from zembed.store.layout import cid_prefix, row_key, row_keys
from zembed.store.reader import Loaded
from zembed.store.records import CollectionRecord

I64 = npt.NDArray[np.int64]
_KEY = np.dtype([("cid", ">u4"), ("row", ">u8")])
_CID_ROW = struct.Struct(">IQ")


class Format1Rows:
    """:class:`store.reader.Rows` of format 1: one code and one rescore record per key."""

    record_db = "vecs"

    def __init__(self, dbs: Mapping[str, Any], code_bytes: int, record_bytes: int) -> None:
        self.dbs = dbs
        self.code_bytes = code_bytes
        self.record_bytes = record_bytes

    def load(self, txn: lmdb.Transaction, rec: CollectionRecord, name: str) -> Loaded:
        """Every code of the collection in row-id order (one cursor pass; copied into one array)."""
        prefix = cid_prefix(rec.cid)
        keys: list[bytes] = []
        values: list[bytes] = []
        cur = txn.cursor(db=self.dbs["codes"])
        if cur.set_range(prefix):
            for k, v in cur.iternext():
                kb = bytes(k)
                if kb[:4] != prefix:
                    break
                keys.append(kb)
                values.append(bytes(v))
        n = len(keys)
        raw = b"".join(values)
        # checked before the keys are decoded as (cid, row) pairs
        if len(raw) != n * self.code_bytes or any(len(k) != _KEY.itemsize for k in keys):
            raise FormatMismatch(
                f"collection {name!r}: a stored code or its key is not {self.code_bytes} / "
                f"{_KEY.itemsize} bytes: the environment is damaged"
            )
        rowids = np.frombuffer(b"".join(keys), dtype=_KEY)["row"].astype(np.int64)
        if n != rec.count or (n and int(rowids[-1]) >= rec.next_row):
            raise FormatMismatch(
                f"collection {name!r}: {n} stored codes do not match its record (next row "
                f"{rec.next_row}, {rec.count} documents): the environment is damaged"
            )
        codes = np.frombuffer(raw, np.uint8).reshape(n, self.code_bytes)
        return Loaded(rowids, [codes] if n else [], np.zeros(0, np.int64), Runs.empty())

    def records(self, txn: lmdb.Transaction, cid: int, runs: Runs, rowids: I64) -> Sequence[quantize.Buffer]:
        db = self.dbs["vecs"]
        out: list[quantize.Buffer] = []
        for k in row_keys(cid, rowids):
            out.append(self._value(txn.get(k, db=db), k, self.record_bytes, "rescore record"))
        return out

    def code_of(self, txn: lmdb.Transaction, cid: int, rowid: int) -> bytes:
        k = row_key(cid, rowid)
        return bytes(self._value(txn.get(k, db=self.dbs["codes"]), k, self.code_bytes, "code"))

    def record_of(self, txn: lmdb.Transaction, cid: int, rowid: int) -> quantize.Buffer:
        k = row_key(cid, rowid)
        return self._value(txn.get(k, db=self.dbs["vecs"]), k, self.record_bytes, "rescore record")

    @staticmethod
    def _value(value: quantize.Buffer | None, key: bytes, width: int, what: str) -> quantize.Buffer:
        if value is None or len(value) != width:
            cid, row = _CID_ROW.unpack(key)
            raise FormatMismatch(
                f"collection {cid} row {row}: its {what} is missing or not {width} bytes: the "
                "environment is damaged"
            )
        return value
