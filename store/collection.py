"""One collection: its writes (one LMDB transaction per batch), the in-memory index they keep in
step, and the read transactions that searches pair with a published snapshot.

What is stored where is in ``store.layout`` (the table) and ``store.blocks`` (codes and vectors in
runs); the search itself is ``store.search`` (pure functions); calibration is ``store.calibrate``;
the transaction bodies that rewrite stored rows (compaction, the calibration rewrite of every code)
are ``store.rewrites``.

Writes:

- ``upsert`` (lists, per-document validation) and ``upsert_arrays`` (numpy arrays: ids as a string
  or int64 array, float16 or float32 vectors, or pre-packed sign codes) share one transaction body;
- a replaced or deleted row becomes a tombstone (``dead``): its entries in ``rows``, ``docs``,
  ``fkeys``, ``calib`` are deleted at once, its slot in the blocks stays until **compaction**, which
  rewrites the live rows under new row ids in one transaction (``store.rewrites``). It runs inside
  the write that makes the tombstones at least ``rewrites.COMPACT_MIN_DEAD`` (4,096) and at least as
  many as the live rows (so its cost, proportional to the live rows, is paid at most once per as many
  deletes), or on request (``compact``);
- writers that rebuild the index (a recalibration, new filterable fields, a compaction) build it
  inside their transaction and install it right after the commit.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import lmdb
import numpy as np
import numpy.typing as npt

from zembed.store import blocks, quantize, rewrites, validate
from zembed.store import calibrate as calibration
from zembed.store import search as stages
from zembed.store.blocks import Runs
from zembed.store.config import Calibration, CollectionConfig
from zembed.store.errors import FormatMismatch, InvalidArgument, NotFound, WouldBlock
from zembed.store.filters import FilterIndex, doc_keys, parse_filter
from zembed.store.index import CHUNK_ROWS, CodeIndex
from zembed.store.layout import (
    Env,
    cid_prefix,
    get,
    id_key,
    iter_prefix,
    must,
    pack_rowids,
    row_key,
    row_keys,
    rowid_of,
    unpack_rowid,
)
from zembed.store.params import (
    DEFAULT_READS_PER_K,
    DEFAULT_SHORTLIST_PER_READ,
    MAX_SHORTLIST,
    Plan,
    SearchParams,
)
from zembed.store.quantize import RescoreDtype
from zembed.store.records import (
    GEN,
    CollectionInfo,
    CollectionRecord,
    Hit,
    Record,
    gen_key,
    meta_key,
)
from zembed.store.rewrites import putmulti as _putmulti

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

MAX_REFINE = 100
#: rows one ``upsert_arrays`` call may carry (one transaction); multiples of ``blocks.BLOCK_ROWS``
#: write each block once
MAX_BULK_ROWS = 1 << 20
_KEEP_GENERATIONS = 3
_PUBLISH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class _Built:
    """An in-memory index built from one transaction, ready to install."""

    rec: CollectionRecord
    index: CodeIndex
    filters: FilterIndex
    runs: Runs


@dataclass(frozen=True)
class _Batch:
    """A validated batch, ready for the transaction (no per-document Python left to do)."""

    id_keys: list[bytes]
    ext: list[bytes]
    codes: U8  # [n, code_bytes] (computed with the thresholds current under the write lock)
    records: U8  # [n, record_bytes]
    meta: list[bytes] | None
    fkeys: list[bytes] | None
    unit: F32 | None  # unit code vectors, kept for a calibration still to come
    bulk: bool = False

    @property
    def n(self) -> int:
        return len(self.id_keys)


@dataclass(frozen=True)
class SearchArrays:
    """A search's answer as arrays (``[Q, m]``, best first): positions in the snapshot searched, row
    ids, scores, Hamming distances (-1 for exact search) and the external ids (an object array)."""

    positions: I64
    rowids: I64
    scores: F32
    hamming: I32
    ids: npt.NDArray[np.object_]


@dataclass(frozen=True)
class Shortlist:
    """Stage one alone: per query the nearest positions by Hamming distance (``[Q, m]``, sorted by
    distance then position) and their row ids (stable until a compaction)."""

    positions: I64
    distances: I32
    rowids: I64


class Collection:
    """Created and opened by :class:`store.Store`; all methods are thread-safe."""

    def __init__(self, env: Env, name: str, record: CollectionRecord) -> None:
        self.env = env
        self.name = name
        self._rec = record
        self.config = record.config
        self.bits = self.config.code_bits
        self.stride = quantize.row_stride(self.bits)
        self.code_bytes = quantize.code_bytes(self.bits)
        self.record_bytes = quantize.record_bytes(self.config.rescore_dims, self.config.rescore_dtype)
        self._snap: stages.Snapshot
        self._snaps: dict[int, stages.Snapshot] = {}
        self._published = threading.Condition()
        self._index: CodeIndex
        self._filters: FilterIndex
        self._runs = Runs.empty()
        self.dropped = False
        self._load()

    # ------------------------------------------------------------------ open / rebuild
    def _load(self) -> None:
        """Rebuild the in-memory index from LMDB (at open)."""
        with self.env.reader(buffers=True) as txn:
            rec = CollectionRecord.from_bytes(must(get(txn, meta_key(self.name), self.env.dbs["meta"])))
            built = self._build(txn, rec)
        self._install(built)

    def _build(self, txn: lmdb.Transaction, rec: CollectionRecord) -> _Built:
        """The in-memory index of ``rec`` as ``txn`` sees it: the code runs (a handful of large
        values), the tombstones, and the filterable fields."""
        prefix = cid_prefix(rec.cid)
        dbs = self.env.dbs
        index = CodeIndex(self.stride)
        filters = FilterIndex(rec.config.filterable)
        runs, values = blocks.read_runs(txn, dbs, rec.cid, self.code_bytes)
        rows = runs.rows
        first = int(runs.starts[0]) if rows else rec.next_row
        dead = np.asarray([rowid_of(k) for k, _ in iter_prefix(txn, dbs["dead"], prefix)], np.int64)
        if (rows and first + rows != rec.next_row) or rows - len(dead) != rec.count:
            raise FormatMismatch(
                f"collection {self.name!r}: {rows} stored rows from row {first} with {len(dead)} "
                f"tombstones do not match its record (next row {rec.next_row}, {rec.count} documents): "
                "the environment is damaged"
            )
        rowids = np.arange(first, first + rows, dtype=np.int64)
        pos = 0
        for v in values:
            part = np.frombuffer(v, np.uint8).reshape(-1, self.code_bytes)
            for s in range(0, len(part), CHUNK_ROWS):
                chunk = part[s : s + CHUNK_ROWS]
                index.append(rowids[pos : pos + len(chunk)], quantize.pad_rows(chunk, self.stride))
                pos += len(chunk)
        if len(dead):
            index.kill((dead - first).tolist())
        if rec.config.filterable:
            # rows with the same filterable values share one JSON text: parse each text once and
            # add its rows' positions in bulk
            groups: dict[bytes, list[int]] = {}
            for k, fk in iter_prefix(txn, dbs["fkeys"], prefix):
                groups.setdefault(fk, []).append(rowid_of(k))
            for raw, rws in groups.items():
                filters.add_many(np.asarray(rws, dtype=np.int64) - first, _keys_from_json(raw))
        return _Built(rec, index, filters, runs)

    def _install(self, built: _Built) -> None:
        self._rec = built.rec
        self.config = built.rec.config
        self._index = built.index
        self._filters = built.filters
        self._runs = built.runs
        self._publish()

    def _publish(self) -> None:
        snap = stages.Snapshot(
            self._index.publish(),
            self._filters,
            self._rec.gen,
            self._current_thresholds(),  # the codes' thresholds: explicit ones too
            self._rec.code_model(),
            self._rec.tuning,
            self._runs,
        )
        with self._published:
            self._snap = snap
            # the last few generations: a reader whose transaction began just before this commit
            # still finds its own (views are immutable)
            kept = {g: s for g, s in self._snaps.items() if g >= snap.gen - _KEEP_GENERATIONS}
            kept[snap.gen] = snap
            self._snaps = kept
            self._published.notify_all()

    # ------------------------------------------------------------------ info
    def info(self) -> CollectionInfo:
        rec = self._rec
        used = allocated = 0
        with contextlib.suppress(WouldBlock):
            used, allocated = self._disk_usage()
        return CollectionInfo(
            self.name,
            self.config,
            rec.count,
            rec.thresholds if rec.thresholds is not None else self.config.thresholds,
            rec.thresholds is not None,
            self._index.nbytes,
            rec.calibrated_at,
            rec.final,
            rec.tuning,
            rec.tuning.recall_at(DEFAULT_READS_PER_K, DEFAULT_SHORTLIST_PER_READ),
            used,
            allocated,
            used // rec.count if rec.count else 0,
            rec.measured_at or rec.calibrated_at,
            rec.measured_with_samples,
        )

    def _disk_usage(self) -> tuple[int, int]:
        """``(bytes in use, bytes allocated)``: the blocks from the run sizes (exact for the large
        values of a bulk load), the key trees' pages by this collection's share of the documents,
        the file's allocated blocks pro rata."""
        env = self.env.usage()
        psize = self.env.page_size
        runs = self._runs
        own = blocks.run_bytes(runs, self.code_bytes, psize) + blocks.run_bytes(
            runs, self.record_bytes, psize
        )
        with self.env.reader(wait=False) as txn:
            docs = int(txn.stat(self.env.dbs["ids"])["entries"])
        rest = env["bytes_in_use"] - env["block_bytes"]  # key trees and meta pages
        used = own + (rest * self._rec.count // docs if docs else 0)
        share = env["bytes_allocated"] / env["bytes_in_use"] if env["bytes_in_use"] else 0.0
        return used, int(used * share)

    @property
    def cid(self) -> int:
        return self._rec.cid

    def count(self) -> int:
        return self._snap.view.live

    # ------------------------------------------------------------------ writes
    def upsert(
        self,
        ids: Sequence[str],
        code_vectors: Any,
        rescore_vectors: Any | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Insert or replace documents as one atomic, durable batch; returns the number written.

        ``rescore_vectors`` may be None only when ``rescore_dims == code_bits`` (the same vector).
        """
        id_list = validate.ids(ids, "ids")
        n = len(id_list)
        code = validate.vectors(code_vectors, "code_vectors", n, self.bits)
        if rescore_vectors is None:
            if self.config.rescore_dims != self.bits:
                raise InvalidArgument(
                    "rescore_vectors", f"are required (length {self.config.rescore_dims}); given none"
                )
            resc = code
        else:
            resc = validate.vectors(rescore_vectors, "rescore_vectors", n, self.config.rescore_dims)
        meta = validate.metadata(metadata, n)
        records = quantize.rescore_records(resc.raw, self.config.rescore_dtype, resc.inv_norm)
        ext = [e.encode() for e in id_list]
        with self.env.write_lock:
            self._check_open()
            thresholds = self._current_thresholds()
            # sign bits need no normalization; calibrated thresholds apply to unit vectors
            unit = code.unit() if thresholds is not None or self._rec.collecting else None
            packed = quantize.binarize(code.raw if thresholds is None or unit is None else unit, thresholds)
            batch = self._batch(ext, packed, records, meta, unit if self._rec.collecting else None)
            return self._write(batch)

    def upsert_arrays(
        self,
        ids: npt.ArrayLike,
        rescore_vectors: npt.ArrayLike | None = None,
        code_vectors: npt.ArrayLike | None = None,
        *,
        codes: npt.ArrayLike | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        normalized: bool = False,
    ) -> int:
        """The bulk path: insert or replace up to :data:`MAX_BULK_ROWS` documents from numpy arrays
        as one atomic, durable batch (no per-document Python besides metadata).

        ``ids``: a string (``U``/``S``) or integer array (integers are stored as their decimal
        text). ``rescore_vectors`` ``[n, rescore_dims]`` and ``code_vectors`` ``[n, code_bits]``:
        float16 or float32, used as given (float16 is scaled in float32 one block of rows at a time,
        never widened as a whole); ``code_vectors`` defaults to ``rescore_vectors`` when the dims
        agree. ``codes``: pre-packed codes ``[n, ceil(code_bits / 8)]`` uint8 instead of code vectors,
        bits MSB first as ``np.packbits`` (sentence-transformers' ``ubinary``); only for collections
        whose codes are sign bits (calibration ``none`` without thresholds). ``normalized``: the
        caller vouches that the vectors are unit length (as sentence-transformers'
        ``normalize_embeddings=True`` gives them): no norm pass, only NaN, infinity and zero rows are
        refused (checked on the bits), and the rows are stored as given."""
        ext, id_keys = validate.id_array(ids, self.cid, "ids", MAX_BULK_ROWS)
        n = len(ext)
        if rescore_vectors is None:
            raise InvalidArgument("rescore_vectors", f"are required (length {self.config.rescore_dims})")
        resc, resc_inv = validate.float_array(
            rescore_vectors, "rescore_vectors", n, self.config.rescore_dims, normalized
        )
        if codes is not None and code_vectors is not None:
            raise InvalidArgument("codes", "cannot be given together with code_vectors")
        meta = validate.metadata(metadata, n) if metadata is not None else None
        dtype = self.config.rescore_dtype
        if dtype is RescoreDtype.FLOAT16 and resc.dtype == np.float16 and validate.is_unit(resc_inv):
            records = resc.view(np.uint8)  # unit float16 rows are stored as given: no copy
        else:
            records = quantize.rescore_records(resc, dtype, resc_inv)
        with self.env.write_lock:
            self._check_open()
            thresholds = self._current_thresholds()
            collecting = self._rec.collecting
            unit: F32 | None = None
            if codes is not None:
                if thresholds is not None or self.config.calibration is not Calibration.NONE:
                    raise InvalidArgument(
                        "codes",
                        "(pre-packed) are accepted only by collections of sign codes (calibration "
                        f"'none' without thresholds); collection {self.name!r} has calibration "
                        f"{self.config.calibration.value!r}",
                    )
                packed = validate.packed_codes(codes, "codes", n, self.bits)
            else:
                if code_vectors is None:
                    if self.config.rescore_dims != self.bits:
                        raise InvalidArgument(
                            "code_vectors", f"are required (length {self.bits}) when rescore_dims differs"
                        )
                    cv, cinv = resc, resc_inv
                else:
                    cv, cinv = validate.float_array(code_vectors, "code_vectors", n, self.bits, normalized)
                if thresholds is None and not collecting:
                    packed = _sign_codes(cv)
                else:
                    unit = _unit(cv, cinv)
                    packed = quantize.binarize(unit, thresholds)
            return self._write(
                _Batch(id_keys, ext, packed, records, meta, self._fkeys(meta), unit, bulk=True)
            )

    def _batch(
        self, ext: list[bytes], packed: U8, records: U8, meta: list[bytes], unit: F32 | None
    ) -> _Batch:
        cid = self._rec.cid
        prefix = cid_prefix(cid)
        id_keys = [prefix + e for e in ext]
        has_meta = any(meta)
        return _Batch(
            id_keys,
            ext,
            packed,
            records,
            meta if has_meta else None,
            self._fkeys(meta if has_meta else None),
            unit,
        )

    def _fkeys(self, meta: list[bytes] | None) -> list[bytes] | None:
        # under the write lock: add_filterable cannot change the fields before the commit
        filterable = self.config.filterable
        if meta is None or not filterable:
            return None
        return [_keys_to_json(doc_keys(json.loads(m), filterable)) if m else b"" for m in meta]

    def _write(self, batch: _Batch) -> int:
        """One batch in one transaction (the caller holds the write lock)."""
        dbs = self.env.dbs
        cid = self._rec.cid
        n = batch.n

        def txn_fn(txn: lmdb.Transaction) -> tuple[CollectionRecord, list[int], _Built | None, Any]:
            rec = self._record_in(txn)
            row = rec.next_row
            old = [unpack_rowid(bytes(v)) for _, v in txn.cursor(db=dbs["ids"]).getmulti(batch.id_keys)]
            for r in old:
                rewrites.kill_row(txn, dbs, cid, r)
            rowids = np.arange(row, row + n, dtype=np.int64)
            rks = row_keys(cid, rowids) if batch.bulk else [row_key(cid, r) for r in range(row, row + n)]
            _putmulti(txn, dbs["ids"], zip(batch.id_keys, pack_rowids(rowids), strict=True))
            _putmulti(txn, dbs["rows"], zip(rks, batch.ext, strict=True))
            if batch.meta is not None:
                _putmulti(txn, dbs["docs"], ((k, m) for k, m in zip(rks, batch.meta, strict=True) if m))
            if batch.fkeys is not None:
                _putmulti(txn, dbs["fkeys"], ((k, f) for k, f in zip(rks, batch.fkeys, strict=True) if f))
            runs = blocks.append(txn, dbs, cid, row, batch.codes, batch.records)
            new = replace(
                rec,
                next_row=row + n,
                count=rec.count - len(old) + n,
                dead=rec.dead + len(old),
                gen=rec.gen + 1,
            )
            rebuild = False
            if rec.collecting and batch.unit is not None:
                if new.due():
                    new = rewrites.recalibrate(txn, dbs, new, self.bits, rks, batch.unit)
                    rebuild = True
                else:
                    _putmulti(txn, dbs["calib"], zip(rks, quantize.split_rows(batch.unit), strict=True))
            if rewrites.compaction_due(new):
                new = rewrites.compact(txn, dbs, new, self.code_bytes, self.record_bytes)
                rebuild = True
            self._write_record(txn, new)
            return new, old, (self._build(txn, new) if rebuild else None), runs

        rec, old, rebuilt, runs = self.env.write(txn_fn)
        if rebuilt is not None:
            self._install(rebuilt)
            return n
        self._rec = rec
        self._index.kill([p for p in (self._index.position(r) for r in old) if p is not None])
        start_pos = self._index.staged
        new_rowids = np.arange(rec.next_row - n, rec.next_row, dtype=np.int64)
        for s in range(0, n, CHUNK_ROWS):
            self._index.append(
                new_rowids[s : s + CHUNK_ROWS],
                quantize.pad_rows(batch.codes[s : s + CHUNK_ROWS], self.stride),
            )
        if batch.fkeys is not None:
            for i, fk in enumerate(batch.fkeys):
                if fk:
                    self._filters.add(start_pos + i, _keys_from_json(fk))
        self._runs = self._runs.replace_from(*runs)
        self._publish()
        return n

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (missing ids are ignored); returns how many existed."""
        id_list = validate.ids(ids, "ids", unique=False)
        with self.env.write_lock:
            self._check_open()
            dbs = self.env.dbs
            cid = self._rec.cid

            def txn_fn(txn: lmdb.Transaction) -> tuple[CollectionRecord, list[int], _Built | None]:
                old: list[int] = []
                for ext in dict.fromkeys(id_list):
                    ik = id_key(cid, ext)
                    prev = get(txn, ik, dbs["ids"])
                    if prev is None:
                        continue
                    txn.delete(ik, db=dbs["ids"])
                    old.append(unpack_rowid(prev))
                    rewrites.kill_row(txn, dbs, cid, unpack_rowid(prev))
                rec = self._record_in(txn)
                if not old:
                    return rec, old, None
                new = replace(rec, count=rec.count - len(old), dead=rec.dead + len(old), gen=rec.gen + 1)
                built = None
                if rewrites.compaction_due(new):
                    new = rewrites.compact(txn, dbs, new, self.code_bytes, self.record_bytes)
                    built = self._build(txn, new)
                self._write_record(txn, new)
                return new, old, built

            rec, old, built = self.env.write(txn_fn)
            if built is not None:
                self._install(built)
                return len(old)
            self._rec = rec
            if old:
                self._index.kill([p for p in (self._index.position(r) for r in old) if p is not None])
                self._publish()
            return len(old)

    def compact(self) -> int:
        """Rewrite the live rows without the tombstones' slots (one transaction); returns the number
        of slots freed. Runs by itself when due (see the module doc)."""
        with self.env.write_lock:
            self._check_open()
            dbs = self.env.dbs

            def txn_fn(txn: lmdb.Transaction) -> tuple[int, _Built | None]:
                rec = self._record_in(txn)
                if not rec.dead:
                    return 0, None
                new = rewrites.compact(
                    txn, dbs, replace(rec, gen=rec.gen + 1), self.code_bytes, self.record_bytes
                )
                self._write_record(txn, new)
                return rec.dead, self._build(txn, new)

            freed, built = self.env.write(txn_fn)
            if built is not None:
                self._install(built)
            return freed

    def calibrate(self, sample_queries: npt.ArrayLike | None = None) -> tuple[float, ...]:
        """Calibrate now from the documents held (thresholds, refine model, measured recall) and
        rebuild every code; for ``auto`` the next calibration comes when the count doubles again.
        ``sample_queries`` (code vectors of real queries, at most 128 used) are what the recall
        table is measured with instead of stored rows. A final calibration is refused: see
        :meth:`measure` to measure it again."""
        samples = None
        if sample_queries is not None:
            arr = np.asarray(sample_queries, dtype=np.float32)
            nq = 1 if arr.ndim == 1 else int(arr.shape[0])
            samples = validate.vectors(arr, "sample_queries", nq, self.bits).unit()
        with self.env.write_lock:
            self._check_open()
            if self.config.calibration is Calibration.NONE:
                raise InvalidArgument(
                    "calibration",
                    f"must be 'auto' or 'median' to calibrate; collection {self.name!r} has 'none'",
                )
            if not self._rec.collecting:
                raise InvalidArgument(
                    "calibration",
                    f"collection {self.name!r} is already calibrated (final, at "
                    f"{self._rec.calibrated_at or self.config.calibration_sample} documents)",
                )
            if self._rec.count < 2:
                raise InvalidArgument(
                    "calibration",
                    f"needs at least 2 documents; given {self._rec.count}",
                    value=self._rec.count,
                )

            def txn_fn(txn: lmdb.Transaction) -> _Built:
                rec = self._record_in(txn)
                new = rewrites.recalibrate(
                    txn, self.env.dbs, replace(rec, gen=rec.gen + 1), self.bits, queries=samples
                )
                self._write_record(txn, new)
                return self._build(txn, new)

            self._install(self.env.write(txn_fn))
            assert self._rec.thresholds is not None
            return self._rec.thresholds

    def measure(
        self,
        code_queries: npt.ArrayLike | None = None,
        rescore_queries: npt.ArrayLike | None = None,
        *,
        stop: Callable[[], bool] | None = None,
    ) -> CollectionInfo:
        """Measure the recall table again on the collection as it is now, by running its own search
        at every setting of the calibration grid against exact search (which reads every rescore
        vector once per call), and keep it for ``recall_target`` and GetCollection. A calibration
        measures the rows it fits (at most ``calibration_sample``); a collection that has grown past
        that reaches less recall with the same sizes, and real queries (e.g. in another language)
        sit farther from the documents than stored rows do. Sample queries: ``code_queries`` (and
        ``rescore_queries`` where the rescore vectors differ; at most 128 used), else 128 stored
        rows, each searched leave-one-out (only where code and rescore vectors are the same).
        Writers are not blocked while it measures; if the codes are recalibrated meanwhile the
        call is refused (WouldBlock) and can be repeated."""
        self._check_open()
        k = calibration.K
        if code_queries is not None:
            cq, rq = self._queries(code_queries, rescore_queries, need_rescore=True)
            cq, rq = (
                cq[: calibration.SAMPLE_QUERIES],
                rq[: calibration.SAMPLE_QUERIES] if rq is not None else None,
            )
            own: list[str] | None = None
        else:
            if self.config.rescore_dims != self.bits:
                raise InvalidArgument(
                    "sample_queries",
                    f"are required for collection {self.name!r}: its code vectors ({self.bits} dims) are "
                    f"not its rescore vectors ({self.config.rescore_dims} dims), so stored rows cannot "
                    "stand for queries",
                )
            ids = self._sample_ids(calibration.SAMPLE_QUERIES)
            if len(ids) < 2:
                raise InvalidArgument(
                    "sample_queries", f"stored rows as queries need at least 2 documents; given {len(ids)}"
                )
            vecs = [(r.id, r.rescore) for r in self.get(ids, with_vectors=True) if r is not None]
            own = [i for i, v in vecs if v is not None]
            cq = np.stack([v for _, v in vecs if v is not None]).astype(np.float32)
            rq = cq
        before = self._rec
        extra = 0 if own is None else 1
        exact = self.exact_search(rq, top_k=k + extra)
        truth = [[h.id for h in hs] for hs in exact]

        def run(p: SearchParams) -> list[list[str]]:
            if extra:
                p = replace(p, top_k=k + 1, float_reads=p.float_reads + 1, shortlist=p.shortlist + 1)
            return [[h.id for h in hs] for hs in self.search(cq, rq, p)]

        if own is not None:
            truth = [[i for i in t if i != o][:k] for t, o in zip(truth, own, strict=True)]
            search = run

            def run_loo(p: SearchParams) -> list[list[str]]:
                got = search(p)
                return [[i for i in g if i != o][:k] for g, o in zip(got, own, strict=True)]

            tuning = calibration.measure_by_search(run_loo, truth, stop)
        else:
            tuning = calibration.measure_by_search(run, truth, stop)
        with self.env.write_lock:
            self._check_open()

            def txn_fn(txn: lmdb.Transaction) -> _Built:
                rec = self._record_in(txn)
                if rec.thresholds != before.thresholds or rec.centre != before.centre:
                    raise WouldBlock(
                        f"collection {self.name!r} was recalibrated while it was measured; call again"
                    )
                new = replace(
                    rec,
                    gen=rec.gen + 1,
                    tuning=tuning,
                    measured_at=rec.count,
                    measured_with_samples=own is None,
                )
                self._write_record(txn, new)
                return self._build(txn, new)

            self._install(self.env.write(txn_fn))
        return self.info()

    def measure_due(self, growth: float) -> bool:
        """Whether the collection, its calibration final, has grown ``growth`` times past the
        document count its recall table was measured at (the caller then runs :meth:`measure`)."""
        rec = self._rec
        if growth <= 0 or not rec.final or rec.thresholds is None:
            return False
        return rec.count >= growth * max(rec.measured_at or rec.calibrated_at, 1)

    def _sample_ids(self, n: int) -> list[str]:
        """Up to ``n`` stored ids spread over the collection (a fixed stride over the live rows)."""
        with self.env.reader(buffers=True) as txn:
            ids = [
                str(k[len(cid_prefix(self._rec.cid)) :], "utf-8")
                for k, _ in iter_prefix(txn, self.env.dbs["ids"], cid_prefix(self._rec.cid))
            ]
        if len(ids) <= n:
            return ids
        step = len(ids) / n
        return [ids[int(i * step)] for i in range(n)]

    def add_filterable(self, fields: Sequence[str]) -> CollectionInfo:
        """Declare more metadata fields filterable, indexing the values the stored documents already
        have. One transaction: an interrupted call leaves the collection as it was and can simply be
        repeated. Fields already filterable are ignored; fields are never removed."""
        new = list(validate.field_names(fields, "add_filterable"))
        with self.env.write_lock:
            self._check_open()
            new = [f for f in new if f not in self.config.filterable]
            if not new:
                return self.info()
            names = (*self.config.filterable, *new)
            if len(names) > validate.MAX_FILTERABLE:
                raise InvalidArgument(
                    "add_filterable",
                    f"would make {len(names)} filterable fields; at most {validate.MAX_FILTERABLE}",
                    value=len(names),
                    limit=validate.MAX_FILTERABLE,
                )
            config = CollectionConfig.from_json({**self.config.to_json(), "filterable": list(names)})
            dbs = self.env.dbs

            def txn_fn(txn: lmdb.Transaction) -> _Built:
                rec = self._record_in(txn)
                for k, v in iter_prefix(txn, dbs["docs"], cid_prefix(rec.cid)):
                    fk = _keys_to_json(doc_keys(json.loads(v), names))
                    if fk:
                        txn.put(k, fk, db=dbs["fkeys"])
                new_rec = replace(rec, config=config, gen=rec.gen + 1)
                self._write_record(txn, new_rec)
                return self._build(txn, new_rec)

            self._install(self.env.write(txn_fn))
            return self.info()

    def _record_in(self, txn: lmdb.Transaction) -> CollectionRecord:
        """The collection's allocation record as this write transaction sees it (never the cached
        copy: row ids and counts are allocated from what is committed, whoever committed it)."""
        raw = get(txn, meta_key(self.name), self.env.dbs["meta"])
        if raw is None:
            raise NotFound("collection", self.name)
        rec = CollectionRecord.from_bytes(raw)
        if rec.cid != self._rec.cid:
            raise NotFound("collection", self.name)  # dropped and created again elsewhere
        return rec

    def _write_record(self, txn: lmdb.Transaction, rec: CollectionRecord) -> None:
        txn.put(meta_key(self.name), rec.to_bytes(), db=self.env.dbs["meta"])
        txn.put(gen_key(rec.cid), GEN.pack(rec.gen), db=self.env.dbs["meta"])

    def _current_thresholds(self) -> F32 | None:
        t = self._rec.thresholds if self._rec.thresholds is not None else self.config.thresholds
        return np.asarray(t, dtype=np.float32) if t is not None else None

    def mark_dropped(self) -> None:
        """Called by the store after the drop committed: readers waiting here end with NotFound."""
        with self._published:
            self.dropped = True
            self._published.notify_all()

    def _check_open(self) -> None:
        if self.dropped:
            raise NotFound("collection", self.name)

    def prefetch(self) -> int:
        """Read every stored vector, id and metadata record once; returns the bytes touched.

        LMDB serves reads from a memory map; a page's first touch in a process costs a page fault
        (and a disk read when the page is not cached). Rescoring reads ``top_k x oversampling``
        random vectors per query, so a freshly started server pays those faults on its first
        queries. This pass pays them up front (the service's ``--prefetch`` option).
        """
        prefix = cid_prefix(self._rec.cid)
        total = 0
        with self.env.reader(buffers=True) as txn:
            for name in ("vblocks", "rows", "docs"):
                cur = txn.cursor(db=self.env.dbs[name])
                if not cur.set_range(prefix):
                    continue
                for k, v in cur.iternext():
                    if bytes(k[:4]) != prefix:
                        break
                    arr = np.frombuffer(v, dtype=np.uint8)
                    total += int(arr[:: self.env.page_size].sum() >= 0) * len(arr)
        return total

    # ------------------------------------------------------------------ reads
    @contextlib.contextmanager
    def _consistent(self, wait: bool = True) -> Iterator[tuple[stages.Snapshot, lmdb.Transaction]]:
        """A snapshot and a read transaction at the same generation.

        A read transaction sees either the generation last published or the one committed just
        after it (the writer publishes right after its commit, under the write lock); the last
        snapshots are kept by generation, so the pair is found without retrying. Only in the short
        window between a commit and its publish does a reader wait (on a condition, not a spin), and
        with ``wait`` off it raises :class:`WouldBlock` instead (callers on an event loop retry on a
        thread). A collection dropped meanwhile raises :class:`NotFound` at once.
        """
        deadline = time.monotonic() + _PUBLISH_TIMEOUT_S
        while True:
            with self.env.reader(buffers=True, wait=wait) as txn:
                if self.dropped:
                    raise NotFound("collection", self.name)
                raw = get(txn, gen_key(self._rec.cid), self.env.dbs["meta"])
                if raw is None:
                    raise NotFound("collection", self.name)
                gen = GEN.unpack(raw)[0]
                snap = self._snaps.get(gen)
                if snap is not None:
                    yield snap, txn
                    return
            if gen < self._snap.gen:
                continue  # several commits happened since this transaction began: take a new one
            if not wait:
                raise WouldBlock(f"collection {self.name!r}: a commit is being published")
            with self._published:
                if gen > self._snap.gen and not self.dropped:
                    self._published.wait(0.05)
            if time.monotonic() > deadline:
                raise FormatMismatch(
                    f"collection {self.name!r}: generation {gen} is committed but this process never "
                    f"built it (in {_PUBLISH_TIMEOUT_S:.0f} s); another process wrote the data directory "
                    "(restart this server)"
                )

    def get(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Record | None]:
        """Documents by id, in order; None for an id that is not stored."""
        id_list = validate.ids(ids, "ids", unique=False)
        dbs = self.env.dbs
        cid = self._rec.cid
        out: list[Record | None] = []
        with self.env.reader(buffers=True) as txn:
            for ext in id_list:
                prev = get(txn, id_key(cid, ext), dbs["ids"])
                if prev is None:
                    out.append(None)
                    continue
                rowid = unpack_rowid(prev)
                doc = get(txn, row_key(cid, rowid), dbs["docs"])
                vec = None
                if with_vectors:
                    blob = blocks.row_of(txn, dbs["vblocks"], cid, rowid, self.record_bytes)
                    vec = quantize.decode_rescore(
                        [blob], self.config.rescore_dims, self.config.rescore_dtype
                    )[0]
                code = bytes(blocks.row_of(txn, dbs["cblocks"], cid, rowid, self.code_bytes))
                out.append(Record(ext, json.loads(doc) if doc else {}, code, vec))
        return out

    def ids_of(self, rowids: npt.ArrayLike) -> npt.NDArray[np.object_]:
        """External ids of row ids (None where a row id is not stored), as an object array."""
        rows = np.asarray(rowids, dtype=np.int64)
        out = np.empty(rows.shape, dtype=object)
        flat = out.reshape(-1)
        with self.env.reader(buffers=True) as txn:
            db = self.env.dbs["rows"]
            for i, k in enumerate(row_keys(self._rec.cid, rows.reshape(-1))):
                v = txn.get(k, db=db)
                flat[i] = None if v is None else str(v, "utf-8")
        return out

    def _queries(
        self, code_queries: Any, rescore_queries: Any | None, need_rescore: bool
    ) -> tuple[F32, F32 | None]:
        cq_arr = np.asarray(code_queries, dtype=np.float32)
        nq = 1 if cq_arr.ndim == 1 else int(cq_arr.shape[0])
        validate.int_range(nq, "queries", 1, validate.MAX_QUERIES)
        cq = validate.vectors(cq_arr, "code_queries", nq, self.bits).unit()
        if not need_rescore:
            return cq, None
        if rescore_queries is None:
            if self.config.rescore_dims != self.bits:
                raise InvalidArgument(
                    "rescore_queries",
                    f"are required with rescore on (length {self.config.rescore_dims}); given none",
                )
            return cq, cq
        return cq, validate.vectors(rescore_queries, "rescore_queries", nq, self.config.rescore_dims).unit()

    def _params(self, params: SearchParams | None, options: dict[str, Any]) -> SearchParams:
        if params is None:
            params = search_params(**options)
        elif options:
            raise TypeError(f"give params or keywords, not both: {sorted(options)}")
        for c in params.filter:
            if c.field not in self.config.filterable:
                raise InvalidArgument(
                    "filter",
                    f"may only name filterable fields {sorted(self.config.filterable)}; given {c.field!r}",
                    value=c.field,
                )
        return params

    def _records(self, txn: lmdb.Transaction, snap: stages.Snapshot) -> stages.Records:
        db = self.env.dbs["vblocks"]
        cid, width = self._rec.cid, self.record_bytes
        return lambda rowids: blocks.gather_records(txn, db, cid, snap.runs, rowids, width)

    def search(
        self,
        code_queries: Any,
        rescore_queries: Any | None = None,
        params: SearchParams | None = None,
        *,
        wait: bool = True,
        **options: Any,
    ) -> list[list[Hit]]:
        """Search a batch of queries (a 1-D vector is one query); one hit list per query.

        ``params`` is built once by the caller; or give its fields as keywords (``top_k``,
        ``shortlist``, ``float_reads``, ``refine``, ``rescore``, ``recall_target``, ``filter`` as a
        mapping, ``include_metadata``; the earlier ``oversampling`` and integer ``refine`` too).
        With ``wait`` off, :class:`WouldBlock` is raised rather than waiting for a map resize (for
        callers that must not block, such as an event loop)."""
        params = self._params(params, options)
        cq, rq = self._queries(code_queries, rescore_queries, params.rescore)
        with self._consistent(wait) as (snap, txn):
            r = self._ranked(snap, txn, params, cq, rq)
            return self._hits(txn, r.rowids, r.scores, r.hamming, params.include_metadata)

    def search_arrays(
        self,
        code_queries: Any,
        rescore_queries: Any | None = None,
        params: SearchParams | None = None,
        *,
        wait: bool = True,
        **options: Any,
    ) -> SearchArrays:
        """:meth:`search` with the answer as arrays (:class:`SearchArrays`), no ``Hit`` objects."""
        params = self._params(params, options)
        cq, rq = self._queries(code_queries, rescore_queries, params.rescore)
        with self._consistent(wait) as (snap, txn):
            r = self._ranked(snap, txn, params, cq, rq)
            return SearchArrays(r.positions, r.rowids, r.scores, r.hamming, self._ids(txn, r.rowids))

    def shortlist(
        self, code_queries: Any, k: int, *, filter: Mapping[str, Any] | None = None, wait: bool = True
    ) -> Shortlist:
        """Stage one alone: per query the ``k`` visible rows nearest by Hamming distance."""
        validate.int_range(k, "k", 1, MAX_SHORTLIST)
        conditions = parse_filter(filter, self.config.filterable)
        cq, _ = self._queries(code_queries, None, False)
        with self._consistent(wait) as (snap, _txn):
            dist, pos = stages.shortlist(snap, stages.query_codes(snap, cq, self.stride), k, conditions)
            rowids = snap.view.rowids_of(pos.ravel()).reshape(pos.shape) if pos.size else pos.copy()
            return Shortlist(pos, dist, rowids)

    def _ranked(
        self, snap: stages.Snapshot, txn: lmdb.Transaction, params: SearchParams, cq: F32, rq: F32 | None
    ) -> stages.Ranked:
        return stages.ranked(
            snap,
            params.plan(snap.tuning, snap.view.live),
            params.top_k,
            self.bits,
            self.config.rescore_dims,
            self.config.rescore_dtype,
            cq,
            rq,
            self.stride,
            self._records(txn, snap),
            params.filter,
        )

    def plan(self, params: SearchParams) -> Plan:
        """The sizes a search with ``params`` runs with on this collection now."""
        snap = self._snap
        return params.plan(snap.tuning, snap.view.live)

    def exact_search(
        self,
        rescore_queries: Any,
        *,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        include_metadata: bool = False,
    ) -> list[list[Hit]]:
        """Exact float search over every visible rescore vector (for evaluation; reads them all).

        Hits carry ``hamming = -1``: no code query is involved.
        """
        top_k = validate.int_range(top_k, "top_k", 1, validate.MAX_TOP_K)
        arr = np.asarray(rescore_queries, dtype=np.float32)
        nq = 1 if arr.ndim == 1 else int(arr.shape[0])
        rq = validate.vectors(arr, "rescore_queries", nq, self.config.rescore_dims).unit()
        conditions = parse_filter(filter, self.config.filterable)
        with self._consistent() as (snap, txn):
            r = stages.exact(
                snap,
                rq,
                top_k,
                self.config.rescore_dims,
                self.config.rescore_dtype,
                self._records(txn, snap),
                conditions,
            )
            return self._hits(txn, r.rowids, r.scores, r.hamming, include_metadata)

    def _ids(self, txn: lmdb.Transaction, rowids: I64) -> npt.NDArray[np.object_]:
        out = np.empty(rowids.shape, dtype=object)
        flat = out.reshape(-1)
        db = self.env.dbs["rows"]
        for i, k in enumerate(row_keys(self._rec.cid, rowids.reshape(-1))):
            flat[i] = _text(txn.get(k, db=db))
        return out

    def _hits(
        self, txn: lmdb.Transaction, rowids: I64, scores: F32, hamming: I32, with_meta: bool
    ) -> list[list[Hit]]:
        dbs = self.env.dbs
        cid = self._rec.cid
        results: list[list[Hit]] = []
        for i in range(rowids.shape[0]):
            hits: list[Hit] = []
            for key, s, h in zip(
                row_keys(cid, rowids[i]), scores[i].tolist(), hamming[i].tolist(), strict=True
            ):
                ext = _text(txn.get(key, db=dbs["rows"]))
                meta: dict[str, Any] | None = None
                if with_meta:
                    raw = txn.get(key, db=dbs["docs"])
                    meta = json.loads(str(raw, "utf-8")) if raw else {}
                hits.append(Hit(ext, float(s), int(h), meta))
            results.append(hits)
        return results


def search_params(*, refine: bool | int = True, **options: Any) -> SearchParams:
    """:class:`SearchParams` from keywords, accepting the earlier integer ``refine`` (Hamming
    candidates per float read; 1 turns the refine step off)."""
    if isinstance(refine, bool):
        return SearchParams.create(refine=refine, **options)
    r = validate.int_range(refine, "refine", 1, MAX_REFINE)
    params = SearchParams.create(refine=r > 1, **options)
    if r > 1 and not params.shortlist:
        reads = params.float_reads or params.top_k * DEFAULT_READS_PER_K
        params = replace(params, shortlist=reads * r)
    return params


def _sign_codes(x: npt.NDArray[np.floating]) -> U8:
    """``np.packbits(x > 0)`` for finite rows; float16 compared as its bits (numpy has no fast
    float16 comparison): ``x > 0`` exactly when the sign bit is clear and some other bit set."""
    if x.dtype == np.float16:
        u = x.view(np.uint16)
        return np.packbits((u - np.uint16(1)) < np.uint16(0x7FFF), axis=-1)
    return np.packbits(x > 0, axis=-1)


def _text(value: bytes | memoryview | None) -> str:
    if value is None:
        raise FormatMismatch("a stored row has no id: the environment is damaged")
    return str(value, "utf-8")


def _unit(x: npt.NDArray[np.floating], inv: F32) -> F32:
    out = np.empty(x.shape, np.float32)
    for i in range(0, len(x), 4096):
        out[i : i + 4096] = x[i : i + 4096].astype(np.float32) * inv[i : i + 4096, None]
    return out


def _keys_to_json(keys: Mapping[str, list[tuple[str, Any]]]) -> bytes:
    if not keys:
        return b""
    return json.dumps({f: [[t, v] for t, v in ks] for f, ks in keys.items()}, separators=(",", ":")).encode()


def _keys_from_json(raw: bytes) -> dict[str, list[tuple[str, Any]]]:
    return {f: [(t, v) for t, v in ks] for f, ks in json.loads(raw).items()}


__all__ = [
    "Collection",
    "CollectionInfo",
    "Hit",
    "Record",
    "SearchArrays",
    "Shortlist",
    "meta_key",
    "search_params",
]
