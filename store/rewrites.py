"""Transaction bodies that rewrite a collection's stored rows (called inside ``Env.write`` by
``store.collection``): tombstones and compaction, and the calibration that rebuilds every code.

Compaction rewrites the live rows under new row ids from ``next_row`` on, dropping the tombstoned
slots of the blocks. It is due in the write that makes the tombstones at least
:data:`COMPACT_MIN_DEAD` and at least as many as the live rows: its cost is proportional to the live
rows, so it is paid at most once per as many deletes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import lmdb
import numpy as np
import numpy.typing as npt

from zembed.store import blocks, quantize
from zembed.store import calibrate as calibration
from zembed.store.config import Calibration
from zembed.store.layout import ROW_SUBDBS, cid_prefix, iter_prefix, pack_rowids, row_key, row_keys, rowid_of
from zembed.store.records import CollectionRecord

F32 = npt.NDArray[np.float32]

#: tombstones that make a compaction due (together with: at least as many as the live rows)
COMPACT_MIN_DEAD = blocks.BLOCK_ROWS
_KEY_DTYPE = np.dtype([("cid", ">u4"), ("row", ">u8")])


def putmulti(txn: lmdb.Transaction, db: Any, items: Iterable[tuple[bytes, quantize.Buffer]]) -> None:
    """Put many items in one C-level loop (overwriting)."""
    txn.cursor(db=db).putmulti(items, dupdata=False, overwrite=True)


def kill_row(txn: lmdb.Transaction, dbs: Mapping[str, Any], cid: int, rowid: int) -> None:
    """Drop a row's per-row entries and leave a tombstone for its slot in the blocks."""
    rk = row_key(cid, rowid)
    for name in ROW_SUBDBS:
        txn.delete(rk, db=dbs[name])
    txn.put(rk, b"", db=dbs["dead"])


def compaction_due(rec: CollectionRecord) -> bool:
    return rec.dead >= COMPACT_MIN_DEAD and rec.dead >= rec.count


def compact(
    txn: lmdb.Transaction, dbs: Mapping[str, Any], rec: CollectionRecord, code_bytes: int, record_bytes: int
) -> CollectionRecord:
    """Rewrite the live rows under new row ids from ``rec.next_row`` on, in row order, dropping the
    tombstoned slots: blocks, ``ids``, and the per-row entries move with their rows."""
    cid = rec.cid
    prefix = cid_prefix(cid)
    runs, codes = blocks.read_all(txn, dbs, cid, code_bytes, "cblocks")
    _, records = blocks.read_all(txn, dbs, cid, record_bytes, "vblocks")
    first = int(runs.starts[0]) if len(runs.starts) else rec.next_row
    live = np.ones(len(codes), dtype=bool)
    dead = np.asarray([rowid_of(k) for k, _ in iter_prefix(txn, dbs["dead"], prefix)], np.int64)
    live[dead - first] = False
    old_rows = first + np.flatnonzero(live)
    new_first = rec.next_row
    for name in ROW_SUBDBS:
        entries = list(iter_prefix(txn, dbs[name], prefix))
        if not entries:
            continue
        old = np.frombuffer(b"".join(k for k, _ in entries), dtype=_KEY_DTYPE)["row"].astype(np.int64)
        new = new_first + np.searchsorted(old_rows, old).astype(np.int64)
        values = [v for _, v in entries]
        delete_prefix(txn, dbs[name], prefix)
        putmulti(txn, dbs[name], zip(row_keys(cid, new), values, strict=True))
        if name == "rows":
            putmulti(txn, dbs["ids"], zip((prefix + v for v in values), pack_rowids(new), strict=True))
    delete_prefix(txn, dbs["dead"], prefix)
    blocks.delete_all(txn, dbs, cid)
    n = len(old_rows)
    if n:
        blocks.append(txn, dbs, cid, new_first, codes[live], records[live])
    return replace(rec, next_row=new_first + n, dead=0)


def delete_prefix(txn: lmdb.Transaction, db: Any, prefix: bytes) -> None:
    cur = txn.cursor(db=db)
    while cur.set_range(prefix) and bytes(cur.key()).startswith(prefix):
        cur.delete()


def recalibrate(
    txn: lmdb.Transaction,
    dbs: Mapping[str, Any],
    rec: CollectionRecord,
    bits: int,
    new_keys: Sequence[bytes] = (),
    new_vecs: F32 | None = None,
    queries: F32 | None = None,
) -> CollectionRecord:
    """Calibrate from the kept code vectors plus this batch's (``new_keys`` / ``new_vecs``, not yet
    kept), rewrite all those rows' codes in their blocks, and keep the batch's vectors, or, when the
    calibration is final (the collection reached ``calibration_sample``), drop them all. The model is
    fitted on at most ``calibration_sample`` vectors (kept ones first)."""
    prefix = cid_prefix(rec.cid)
    keys: list[bytes] = []
    vals: list[bytes] = []
    for k, v in iter_prefix(txn, dbs["calib"], prefix):
        keys.append(k)
        vals.append(v)
    kept = np.frombuffer(b"".join(vals), dtype=np.float32).reshape(len(vals), bits)
    batch = new_vecs if new_vecs is not None else np.zeros((0, bits), np.float32)
    x = np.concatenate([kept, batch]) if len(batch) else kept
    cap = rec.config.calibration_sample
    model, tuning = calibration.calibrate(x, measure_rows=cap, queries=queries)
    final = rec.count >= cap or rec.config.calibration is Calibration.MEDIAN  # median: one calibration
    new_codes = quantize.binarize(x, model.thresholds)
    runs, codes = blocks.read_all(txn, dbs, rec.cid, quantize.code_bytes(bits), "cblocks")
    if len(runs.starts):
        rowids = np.asarray([rowid_of(k) for k in [*keys, *new_keys]], dtype=np.int64)
        codes = codes.copy()
        codes[rowids - int(runs.starts[0])] = new_codes
        blocks.rewrite_codes(txn, dbs, rec.cid, runs, codes)
    if final:
        for k in keys:
            txn.delete(k, db=dbs["calib"])
    elif len(batch):
        putmulti(txn, dbs["calib"], zip(new_keys, quantize.split_rows(batch), strict=True))
    return replace(
        rec,
        thresholds=tuple(float(v) for v in model.thresholds),
        scale=tuple(float(v) for v in model.scale),
        centre=model.centre,
        calibrated_at=rec.count,
        final=final,
        tuning=tuning,
        measured_at=0,
        measured_with_samples=queries is not None,
    )
