"""One collection: its writes (one LMDB transaction per batch), the in-memory index they keep in
step, and the snapshots they publish for readers.

The reads (``get``, ``search*``, ``shortlist``, ``exact_search``, and the pairing of a read
transaction with the published snapshot of its generation) are ``store.reader`` (a mixin of
:class:`Collection`, with the seam that reads codes and records from either store format). What is
stored where is in ``store.layout`` (the table) and ``store.blocks`` (codes and vectors in runs);
the search itself is ``store.search`` (pure functions); calibration is ``store.calibrate``;
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

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import lmdb
import numpy as np
import numpy.typing as npt

from zembed.store import blocks, quantize, rewrites, validate
from zembed.store import search as stages
from zembed.store.blocks import Runs
from zembed.store.config import Calibration, CollectionConfig
from zembed.store.errors import FormatMismatch, InvalidArgument, NotFound, WouldBlock
from zembed.store.filters import FilterIndex, doc_keys
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
from zembed.store.quantize import RescoreDtype
from zembed.store.reader import CollectionReader, Rows, SearchArrays, Shortlist, rows_for, search_params
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

#: rows one ``upsert_arrays`` call may carry (one transaction); multiples of ``blocks.BLOCK_ROWS``
#: write each block once
MAX_BULK_ROWS = 1 << 20
# bytes per row beyond its code and record that a write adds (its ids and rows entries, page fill)
_ROW_BYTES = 96
_KEEP_GENERATIONS = 3


@dataclass(frozen=True)
class _Built:
    """An in-memory index built from one transaction, ready to install."""

    rec: CollectionRecord
    index: CodeIndex
    filters: FilterIndex
    runs: Runs


class FilterKeys(NamedTuple):
    """A batch's filter keys per document: as stored (``fkeys``: JSON, empty for none) and parsed
    (for the in-memory postings, so they are not parsed back from the JSON)."""

    stored: list[bytes]
    keys: list[dict[str, list[tuple[str, Any]]]]


@dataclass(frozen=True)
class _Batch:
    """A validated batch, ready for the transaction (no per-document Python left to do)."""

    id_keys: list[bytes]
    ext: list[bytes]
    codes: U8  # [n, code_bytes] (computed with the thresholds current under the write lock)
    records: U8  # [n, record_bytes]
    meta: list[bytes] | None
    fkeys: FilterKeys | None  # per document: the filter keys' stored JSON and the keys themselves
    unit: F32 | None  # unit code vectors, kept for a calibration still to come
    bulk: bool = False

    @property
    def n(self) -> int:
        return len(self.id_keys)


class Collection(CollectionReader):
    """Created and opened by :class:`store.Store`; all methods are thread-safe. The reads (``get``,
    ``search``, ``exact_search``, ``shortlist`` ...) are :class:`store.reader.CollectionReader`'s."""

    def __init__(self, env: Env, name: str, record: CollectionRecord) -> None:
        self.env = env
        self.name = name
        self._rec = record
        self.config = record.config
        self.bits = self.config.code_bits
        self.stride = quantize.row_stride(self.bits)
        self.code_bytes = quantize.code_bytes(self.bits)
        self.record_bytes = quantize.record_bytes(self.config.rescore_dims, self.config.rescore_dtype)
        self._rows: Rows = rows_for(env, self.code_bytes, self.record_bytes)
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
        index = CodeIndex(self.stride)
        filters = FilterIndex(rec.config.filterable)
        loaded = self._rows.load(txn, rec, self.name)  # checked against the record
        rowids = loaded.rowids
        pos = 0
        for part in loaded.codes:
            for s in range(0, len(part), CHUNK_ROWS):
                chunk = part[s : s + CHUNK_ROWS]
                index.append(rowids[pos : pos + len(chunk)], quantize.pad_rows(chunk, self.stride))
                pos += len(chunk)
        if len(loaded.dead):
            index.kill(loaded.positions(loaded.dead).tolist())
        if rec.config.filterable:
            # rows with the same filterable values share one JSON text: parse each text once and
            # add its rows' positions in bulk
            groups: dict[bytes, list[int]] = {}
            for k, fk in iter_prefix(txn, self.env.dbs["fkeys"], cid_prefix(rec.cid)):
                groups.setdefault(fk, []).append(rowid_of(k))
            for raw, rws in groups.items():
                filters.add_many(loaded.positions(np.asarray(rws, dtype=np.int64)), _keys_from_json(raw))
        return _Built(rec, index, filters, loaded.runs)

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
        metadata_json: Sequence[bytes | None] | None = None,
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
        refused (checked on the bits), and the rows are stored as given. ``metadata_json``: for a
        caller that parsed the metadata from JSON text (a server): each document's JSON text, stored
        as given instead of encoding ``metadata`` again (None: encoded), which must be the parsed
        values of exactly these texts (the filters index ``metadata``)."""
        ext, id_keys = validate.id_array(ids, self.cid, "ids", MAX_BULK_ROWS)
        n = len(ext)
        if rescore_vectors is None:
            raise InvalidArgument("rescore_vectors", f"are required (length {self.config.rescore_dims})")
        if codes is not None and code_vectors is not None:
            raise InvalidArgument("codes", "cannot be given together with code_vectors")
        # the sign codes come with the float16 norm pass at no cost: computed while the collection
        # takes sign codes, used if it still does under the write lock
        same = codes is None and code_vectors is None and self.config.rescore_dims == self.bits
        resc, resc_inv, resc_codes = validate.float_array(
            rescore_vectors,
            "rescore_vectors",
            n,
            self.config.rescore_dims,
            normalized,
            codes=same and self._current_thresholds() is None and not self._rec.collecting,
        )
        parsed = None
        meta: list[bytes] | None
        if metadata_json is not None:
            if metadata is None:
                raise InvalidArgument("metadata_json", "needs metadata: the parsed values, for the filters")
            meta = validate.metadata_texts(metadata_json, metadata, n)
            parsed = metadata
        else:
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
                    cv, cinv, signs = resc, resc_inv, resc_codes
                else:
                    cv, cinv, signs = validate.float_array(
                        code_vectors, "code_vectors", n, self.bits, normalized, codes=True
                    )
                if thresholds is None and not collecting:
                    packed = signs if signs is not None else validate.sign_codes(cv)
                else:
                    unit = _unit(cv, cinv)
                    packed = quantize.binarize(unit, thresholds)
            return self._write(
                _Batch(id_keys, ext, packed, records, meta, self._fkeys(meta, parsed), unit, bulk=True)
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

    def _fkeys(
        self, meta: list[bytes] | None, parsed: Sequence[Mapping[str, Any] | None] | None = None
    ) -> FilterKeys | None:
        # under the write lock: add_filterable cannot change the fields before the commit
        filterable = self.config.filterable
        if meta is None or not filterable:
            return None
        if parsed is not None:  # the values these texts hold, as their caller parsed them
            keys = [doc_keys(p, filterable) if m and p else {} for m, p in zip(meta, parsed, strict=True)]
        else:
            keys = [doc_keys(json.loads(m), filterable) if m else {} for m in meta]
        return FilterKeys([_keys_to_json(k) for k in keys], keys)

    def _write(self, batch: _Batch) -> int:
        """One batch in one transaction (the caller holds the write lock)."""
        dbs = self.env.dbs
        cid = self._rec.cid
        n = batch.n

        def txn_fn(txn: lmdb.Transaction) -> tuple[CollectionRecord, list[int], _Built | None, Any]:
            rec = self._record_in(txn)
            row = rec.next_row
            rowids = np.arange(row, row + n, dtype=np.int64)
            rks = row_keys(cid, rowids) if batch.bulk else [row_key(cid, r) for r in range(row, row + n)]
            old = _put_ids(txn, dbs["ids"], batch.id_keys, pack_rowids(rowids), row)
            for r in old:
                rewrites.kill_row(txn, dbs, cid, r)
            _put_rows(txn, dbs["rows"], zip(rks, batch.ext, strict=True), rks[0], n)
            if batch.meta is not None:
                docs = [(k, m) for k, m in zip(rks, batch.meta, strict=True) if m]
                _put_rows(txn, dbs["docs"], docs, rks[0], len(docs))
            if batch.fkeys is not None:
                fks = [(k, f) for k, f in zip(rks, batch.fkeys.stored, strict=True) if f]
                _put_rows(txn, dbs["fkeys"], fks, rks[0], len(fks))
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

        # about the bytes this batch adds (blocks, id trees, metadata): the map grows for them first
        reserve = batch.codes.nbytes + batch.records.nbytes + n * _ROW_BYTES
        reserve += sum(map(len, batch.meta)) if batch.meta is not None else 0
        rec, old, rebuilt, runs = self.env.write(txn_fn, reserve=reserve)
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
            for i, keys in enumerate(batch.fkeys.keys):
                if keys:
                    self._filters.add(start_pos + i, keys)
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
        tuning, with_samples, before = self._measure_tuning(code_queries, rescore_queries, stop)
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
                    measured_with_samples=with_samples,
                )
                self._write_record(txn, new)
                return self._build(txn, new)

            self._install(self.env.write(txn_fn))
        return self.info()

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
        """Before every write: the collection exists, and the data directory is not a format-1
        one served read-only (NeedsMigration names the command that converts it)."""
        if self.dropped:
            raise NotFound("collection", self.name)
        self.env.check_writable()


def _put_ids(txn: lmdb.Transaction, db: Any, keys: list[bytes], rowids: list[bytes], first: int) -> list[int]:
    """Map the batch's ids to their new row ids (``first`` on); returns the row ids they replaced.

    One pass when no id of the batch exists yet (a bulk load): the keys are inserted without
    overwriting, and only when fewer were added than given are the existing ones' old row ids
    (still in place: below ``first``) read back and overwritten."""
    cur = txn.cursor(db=db)
    _, added = cur.putmulti(zip(keys, rowids, strict=True), dupdata=False, overwrite=False)
    if added == len(keys):
        return []
    old: list[int] = []
    again: list[tuple[bytes, bytes]] = []
    for (key, value), new in zip(cur.getmulti(keys), rowids, strict=True):
        r = unpack_rowid(bytes(value))
        if r < first:
            old.append(r)
            again.append((bytes(key), new))
    cur.putmulti(again, dupdata=False, overwrite=True)
    return old


def _put_rows(
    txn: lmdb.Transaction, db: Any, items: Iterable[tuple[bytes, bytes]], first_key: bytes, n: int
) -> None:
    """Put ``n`` entries keyed by new row ids (ascending, from ``first_key``): as appends when they
    sort after every key of ``db`` (no B-tree search per key; no later collection holds rows)."""
    if n == 0:
        return
    cur = txn.cursor(db=db)
    append = not cur.last() or bytes(cur.key()) < first_key
    _, added = cur.putmulti(items, dupdata=False, overwrite=True, append=append)
    if added != n:
        raise FormatMismatch(f"{n - added} new row keys already existed: the environment is damaged")


def _unit(x: npt.NDArray[np.floating], inv: F32) -> F32:
    out = np.empty(x.shape, np.float32)
    for i in range(0, len(x), 4096):
        out[i : i + 4096] = x[i : i + 4096].astype(np.float32) * inv[i : i + 4096, None]
    return out


_KEYS_JSON = json.JSONEncoder(separators=(",", ":"))  # reused: json.dumps builds one per call


def _keys_to_json(keys: Mapping[str, list[tuple[str, Any]]]) -> bytes:
    if not keys:
        return b""
    return _KEYS_JSON.encode({f: [[t, v] for t, v in ks] for f, ks in keys.items()}).encode()


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
