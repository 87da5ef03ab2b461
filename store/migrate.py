"""``zembed migrate OLD NEW``: convert a format-1 data directory into a new format-2 one.

The old directory is only read (a read-only LMDB open without a lock file, nothing written; a shared
flock on it, so an earlier release writing it meanwhile is refused: ``Locked``). The new one
is built beside ``NEW`` (``.NEW.partial-PID``) and renamed into place when complete and checked, so
``NEW`` never holds half a migration. Per collection, in row-id order:

- the configuration and the whole calibration state (thresholds, refine scales and centring,
  measured recall, the document count it was made at, final or not) are kept as they are;
- codes and rescore records are copied byte for byte (never re-encoded: nothing is lost to a second
  float16 or int8 rounding) into blocks; ids, metadata, filterable fields and the code vectors kept
  for a calibration still to come move with their rows;
- row ids are renumbered densely from 0 (format 1 left gaps where rows were deleted).

The reader of format 1 here is frozen: it reads the layout of commit 1885117 (``codes`` and
``vecs``: one value per row under ``cid + rowid``). Until the conversion, ``Store`` serves the old
directory read-only (``store.format1``), so a migration needs no downtime: it may run while the old
directory is served (it writes nothing there; only an earlier release's writer is refused).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from zembed.store import blocks, quantize
from zembed.store.errors import Damaged, FormatMismatch, StoreError
from zembed.store.layout import (
    DATA_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    V1_SUBDBS,
    check_data_file,
    cid_prefix,
    pack_rowids,
    row_keys,
    share_directory,
)
from zembed.store.records import GEN, CollectionRecord, gen_key, meta_key
from zembed.store.store import Store

#: rows copied per write transaction (a multiple of the block size: each block written once)
CHUNK = 16 * blocks.BLOCK_ROWS
_CID_ROW = struct.Struct(">IQ")


@dataclass(frozen=True)
class Migrated:
    """What a migration converted."""

    collections: dict[str, int]  # name -> documents
    bytes_before: int
    bytes_after: int


def migrate(old: str | Path, new: str | Path, progress: Callable[[str], None] | None = None) -> Migrated:
    """Convert the format-1 directory ``old`` into the new directory ``new`` (absent or empty)."""
    old, new = Path(old), Path(new)
    say = progress or (lambda _msg: None)
    if not (old / DATA_FILE).exists():
        raise Damaged(str(old / DATA_FILE), "no such file (not a zembed data directory)")
    if new.exists() and (not new.is_dir() or any(new.iterdir())):
        raise StoreError(f"migration target {new} is not empty (give a new directory)")
    if new.resolve() == old.resolve():
        raise StoreError("migration target must be another directory than the source")
    check_data_file(old / DATA_FILE)
    # read without LMDB's reader table: an earlier release writing it meanwhile would tear the copy
    shared = share_directory(old)
    try:
        return _convert(old, new, say)
    finally:
        os.close(shared)


def _convert(old: Path, new: Path, say: Callable[[str], None]) -> Migrated:
    src = lmdb.open(str(old), readonly=True, lock=False, max_dbs=len(V1_SUBDBS) + 2, subdir=True)
    try:
        meta = src.open_db(b"meta", create=False)
        with src.begin() as txn:
            raw = txn.get(b"format", db=meta)
        rec = json.loads(raw) if raw is not None else {}
        if rec.get("format") != FORMAT_NAME or rec.get("version") != 1:
            hint = " (already this format: nothing to do)" if rec.get("version") == FORMAT_VERSION else ""
            raise FormatMismatch(
                f"data directory {old} holds format {rec.get('format')!r} version "
                f"{rec.get('version')!r}; `zembed migrate` converts {FORMAT_NAME!r} version 1{hint}"
            )
        dbs = {n: src.open_db(n.encode(), create=False) for n in V1_SUBDBS}
    except lmdb.Error as exc:
        src.close()
        raise Damaged(str(old / DATA_FILE), f"it is not a format-1 zembed store ({exc})") from None
    except BaseException:
        src.close()
        raise
    new.parent.mkdir(parents=True, exist_ok=True)
    tmp = new.parent / f".{new.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with src.begin(buffers=True) as txn:
            names = []
            cur = txn.cursor(db=dbs["meta"])
            if cur.set_range(b"coll:"):
                for k, _ in cur.iternext():
                    if not bytes(k).startswith(b"coll:"):
                        break
                    names.append(bytes(k)[5:].decode())
            counts: dict[str, int] = {}
            with Store(tmp) as dst:
                for name in names:
                    raw_rec = txn.get(meta_key(name), db=dbs["meta"])
                    if raw_rec is None:
                        raise Damaged(str(old / DATA_FILE), f"collection {name!r} has no record")
                    old_rec = CollectionRecord.from_bytes(bytes(raw_rec))
                    counts[name] = _collection(txn, dbs, old_rec, dst, name, say)
            with Store(tmp, readonly=True) as check:  # the real open path checks every count
                for name, n in counts.items():
                    got = check.collection(name).count()
                    if got != n:
                        raise StoreError(f"migration check failed: collection {name!r} has {got} of {n}")
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        if new.exists():
            new.rmdir()
        os.rename(tmp, new)
        _fsync(new.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        src.close()
    return Migrated(counts, _size(old / DATA_FILE), _size(new / DATA_FILE))


def _collection(
    txn: lmdb.Transaction,
    dbs: dict[str, Any],
    old: CollectionRecord,
    dst: Store,
    name: str,
    say: Callable[[str], None],
) -> int:
    dst.create_collection(name, old.config)
    coll = dst.collection(name)
    env, ndbs, cid = dst.env, dst.env.dbs, coll.cid
    cb = quantize.code_bytes(old.config.code_bits)
    rb = quantize.record_bytes(old.config.rescore_dims, old.config.rescore_dtype)
    prefix = cid_prefix(old.cid)
    rows = txn.cursor(db=dbs["rows"])
    more = rows.set_range(prefix)
    n = 0
    while more:
        ext: list[bytes] = []
        old_keys: list[bytes] = []
        while more and len(ext) < CHUNK:
            k = bytes(rows.key())
            if not k.startswith(prefix):
                more = False
                break
            old_keys.append(k)
            ext.append(bytes(rows.value()))
            more = rows.next()
        if not ext:
            break
        codes = _values(txn, dbs["codes"], old_keys, cb, "codes")
        recs = _values(txn, dbs["vecs"], old_keys, rb, "vecs")
        extra = {
            db: [(i, bytes(v)) for i, k in enumerate(old_keys) if (v := txn.get(k, db=dbs[db])) is not None]
            for db in ("docs", "fkeys", "calib")
        }
        env.write(_writer(ndbs, cid, n, ext, codes, recs, extra))
        n += len(ext)
        say(f"{name}: {n} documents")
    if n != old.count:
        raise Damaged(str(env.path), f"collection {name!r}: read {n} rows, its record says {old.count}")
    new = replace(old, cid=cid, next_row=n, count=n, dead=0, gen=1)

    def finish(wtxn: lmdb.Transaction) -> None:
        wtxn.put(meta_key(name), new.to_bytes(), db=ndbs["meta"])
        wtxn.put(gen_key(cid), GEN.pack(new.gen), db=ndbs["meta"])

    env.write(finish)
    return n


def _writer(
    dbs: dict[str, Any],
    cid: int,
    first: int,
    ext: list[bytes],
    codes: np.ndarray,
    recs: np.ndarray,
    extra: dict[str, list[tuple[int, bytes]]],
) -> Callable[[lmdb.Transaction], None]:
    """The write transaction of one chunk of rows (new row ids from ``first``)."""
    rowids = np.arange(first, first + len(ext), dtype=np.int64)

    def write(txn: lmdb.Transaction) -> None:
        keys = row_keys(cid, rowids)
        ids = (cid_prefix(cid) + e for e in ext)
        txn.cursor(db=dbs["ids"]).putmulti(zip(ids, pack_rowids(rowids), strict=True))
        txn.cursor(db=dbs["rows"]).putmulti(zip(keys, ext, strict=True))
        for db, items in extra.items():
            txn.cursor(db=dbs[db]).putmulti((keys[i], v) for i, v in items)
        blocks.append(txn, dbs, cid, first, codes, recs)

    return write


def _values(txn: lmdb.Transaction, db: Any, keys: list[bytes], width: int, what: str) -> np.ndarray:
    out = np.empty((len(keys), width), dtype=np.uint8)
    for i, k in enumerate(keys):
        v = txn.get(k, db=db)
        if v is None or len(v) != width:
            cid, row = _CID_ROW.unpack(k)
            raise FormatMismatch(
                f"collection {cid} row {row}: its {what} record is missing or not {width} bytes (damaged)"
            )
        out[i] = np.frombuffer(v, np.uint8)
    return out


def command(args: Any) -> int:
    """``zembed migrate OLD NEW`` (registered in ``service/cli.py``): exit 0 done, 2 refused."""
    import sys
    import time

    t = time.perf_counter()
    try:
        done = migrate(args.old_dir, args.new_dir, lambda m: print(f"zembed migrate: {m}", file=sys.stderr))
    except (StoreError, OSError) as exc:
        print(f"zembed migrate: {exc}", file=sys.stderr)
        return 2
    docs = sum(done.collections.values())
    print(
        f"migrated {args.old_dir} (format 1, {done.bytes_before} bytes) to {args.new_dir} (format "
        f"{FORMAT_VERSION}, {done.bytes_after} bytes): {len(done.collections)} collections, {docs} "
        f"documents, {time.perf_counter() - t:.2f} s"
    )
    return 0


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
