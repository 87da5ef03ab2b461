"""One collection: writes (one LMDB transaction per batch), reads, and the two-stage search.

Search, per query (sizes from :class:`store.params.SearchParams`):

1. binarize the code-dims vector with the collection's thresholds and scan every visible row's code
   (popcount Hamming, running top-k, filter and live masks applied inside the scan) for the
   ``shortlist`` nearest rows;
2. refine (on by default): the float query is scored against those rows' +-1 bits in memory (the
   asymmetric estimate of :class:`store.quantize.CodeModel`) down to ``float_reads`` candidates,
   whose float vectors are read from LMDB and scored exactly (cosine: all vectors are unit length);
3. with ``rescore`` off, the Hamming order is the answer and the score is ``1 - 2 * hamming / bits``
   (the cosine of the two +-1 vectors).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import lmdb
import numpy as np
import numpy.typing as npt

from zembed.store import calibrate as calibration
from zembed.store import quantize, scan, validate
from zembed.store.config import Calibration, CollectionConfig
from zembed.store.errors import FormatMismatch, InvalidArgument, NotFound, WouldBlock
from zembed.store.filters import FilterIndex, doc_keys, parse_filter
from zembed.store.index import CHUNK_ROWS, CodeIndex, View
from zembed.store.layout import (
    ROW_SUBDBS,
    Env,
    cid_prefix,
    get,
    id_key,
    iter_prefix,
    must,
    pack_rowid,
    row_key,
    row_keys,
    rowid_of,
    unpack_rowid,
)
from zembed.store.params import DEFAULT_READS_PER_K, DEFAULT_SHORTLIST_PER_READ, Plan, SearchParams, Tuning

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

DEFAULT_OVERSAMPLING = DEFAULT_READS_PER_K  # the earlier name: float reads per result
DEFAULT_REFINE = DEFAULT_SHORTLIST_PER_READ  # the earlier name: Hamming candidates per float read
MAX_REFINE = 100
_KEY_DTYPE = np.dtype([("cid", ">u4"), ("row", ">u8")])
_KEEP_GENERATIONS = 3
_PUBLISH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Hit:
    """One search result. ``hamming`` is the code distance; ``score`` the cosine (see module doc)."""

    id: str
    score: float
    hamming: int
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Record:
    """A stored document as ``get`` returns it."""

    id: str
    metadata: dict[str, Any]
    code: bytes
    rescore: F32 | None


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    config: CollectionConfig
    count: int
    thresholds: tuple[float, ...] | None
    calibrated: bool
    index_bytes: int
    #: documents held when the codes were last calibrated (0: never), and whether that was final
    calibrated_at: int = 0
    calibration_final: bool = False
    #: recall@10 against exact search measured at that calibration, per setting; and at the defaults
    tuning: Tuning = field(default_factory=Tuning)
    measured_recall: float | None = None


@dataclass(frozen=True)
class _Record:
    """The collection's row in ``meta``: updated in the same transaction as every batch."""

    cid: int
    config: CollectionConfig
    next_row: int = 0
    count: int = 0
    gen: int = 0
    thresholds: tuple[float, ...] | None = None
    # calibration (absent from records written before calibration was automatic): the refine
    # step's per-dimension scales and centring, the document count it was computed at, whether it
    # is final (the kept code vectors dropped), and the recall measured for each setting
    scale: tuple[float, ...] | None = None
    centre: float = 0.5
    calibrated_at: int = 0
    final: bool = False
    tuning: Tuning = field(default_factory=Tuning)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "cid": self.cid,
                "config": self.config.to_json(),
                "next_row": self.next_row,
                "count": self.count,
                "gen": self.gen,
                "thresholds": list(self.thresholds) if self.thresholds is not None else None,
                "scale": list(self.scale) if self.scale is not None else None,
                "centre": self.centre,
                "calibrated_at": self.calibrated_at,
                "final": self.final,
                "tuning": self.tuning.to_json(),
            }
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> _Record:
        d = json.loads(raw)
        t = d.get("thresholds")
        sc = d.get("scale")
        config = CollectionConfig.from_json(d["config"])
        return cls(
            cid=d["cid"],
            config=config,
            next_row=d["next_row"],
            count=d["count"],
            gen=d["gen"],
            thresholds=tuple(t) if t is not None else None,
            scale=tuple(sc) if sc is not None else None,
            centre=float(d.get("centre", 0.5)),
            calibrated_at=int(d.get("calibrated_at", 0)),
            # a median calibration written by the earlier version was final once it existed
            final=bool(d.get("final", config.calibration is Calibration.MEDIAN and t is not None)),
            tuning=Tuning.from_json(d.get("tuning")),
        )

    @property
    def collecting(self) -> bool:
        """Code vectors are kept (in ``calib``) for a calibration still to come."""
        cal = self.config.calibration
        return (cal is Calibration.MEDIAN and self.thresholds is None) or (
            cal is Calibration.AUTO and not self.final
        )

    @property
    def pending_calibration(self) -> bool:
        return self.collecting

    def due(self) -> bool:
        """Whether the collection's size calls for a calibration now (see :class:`Calibration`)."""
        cap = self.config.calibration_sample
        if not self.collecting or self.count < 2:
            return False
        if self.config.calibration is Calibration.MEDIAN:
            return self.count >= cap
        return self.count >= cap or self.count >= 2 * max(self.calibrated_at, 1)

    def code_model(self) -> quantize.CodeModel | None:
        """The refine step's model; None for sign codes (the query itself is the weight)."""
        t = self.thresholds if self.thresholds is not None else self.config.thresholds
        if t is None:
            return None
        tt = np.asarray(t, dtype=np.float32)
        scale = np.asarray(self.scale, dtype=np.float32) if self.scale is not None else np.ones_like(tt)
        return quantize.CodeModel(tt, scale, self.centre)


@dataclass(frozen=True)
class _Built:
    """An in-memory index built from one transaction, ready to install."""

    rec: _Record
    index: CodeIndex
    filters: FilterIndex


@dataclass(frozen=True)
class _Snapshot:
    view: View
    filters: FilterIndex
    gen: int
    thresholds: F32 | None
    model: quantize.CodeModel | None
    tuning: Tuning


_GEN = struct.Struct(">Q")


def meta_key(name: str) -> bytes:
    return b"coll:" + name.encode()


def gen_key(cid: int) -> bytes:
    return b"gen:" + cid_prefix(cid)


class Collection:
    """Created and opened by :class:`store.Store`; all methods are thread-safe."""

    def __init__(self, env: Env, name: str, record: _Record) -> None:
        self.env = env
        self.name = name
        self._rec = record
        self.config = record.config
        self.bits = self.config.code_bits
        self.stride = quantize.row_stride(self.bits)
        self._snap: _Snapshot
        self._snaps: dict[int, _Snapshot] = {}
        self._published = threading.Condition()
        self._index: CodeIndex
        self._filters: FilterIndex
        self.dropped = False
        self._load()

    # ------------------------------------------------------------------ open / rebuild
    def _load(self) -> None:
        """Rebuild the in-memory index from LMDB (at open)."""
        with self.env.reader() as txn:
            rec = _Record.from_bytes(must(get(txn, meta_key(self.name), self.env.dbs["meta"])))
            built = self._build(txn, rec)
        self._install(built)

    def _build(self, txn: lmdb.Transaction, rec: _Record) -> _Built:
        """The in-memory index of ``rec`` as ``txn`` sees it. Writers that rebuild (a recalibration,
        new filterable fields) call this inside their write transaction and install the result right
        after the commit, so readers of the new generation wait microseconds, not a rebuild."""
        prefix = cid_prefix(rec.cid)
        index = CodeIndex(self.stride)
        filters = FilterIndex(rec.config.filterable)
        keys, vals = _read_rows(txn, self.env.dbs["codes"], prefix, rec.count)
        rowids = np.frombuffer(b"".join(keys), dtype=_KEY_DTYPE)["row"].astype(np.int64)
        cb = quantize.code_bytes(self.bits)
        codes = np.frombuffer(b"".join(vals), dtype=np.uint8).reshape(len(vals), cb)
        for start in range(0, len(rowids), CHUNK_ROWS):
            part = codes[start : start + CHUNK_ROWS]
            index.append(rowids[start : start + CHUNK_ROWS], quantize.pad_rows(part, self.stride))
        if rec.config.filterable:
            # rows with the same filterable values share one JSON text: parse each text once and
            # add its rows' positions in bulk (positions follow row ids: one searchsorted)
            groups: dict[bytes, list[int]] = {}
            for k, v in iter_prefix(txn, self.env.dbs["fkeys"], prefix):
                groups.setdefault(v, []).append(rowid_of(k))
            for raw, rows in groups.items():
                pos = np.searchsorted(rowids, np.asarray(rows, dtype=np.int64))
                filters.add_many(pos, _keys_from_json(raw))
        return _Built(rec, index, filters)

    def _install(self, built: _Built) -> None:
        self._rec = built.rec
        self.config = built.rec.config
        self._index = built.index
        self._filters = built.filters
        self._publish()

    def _publish(self) -> None:
        snap = _Snapshot(
            self._index.publish(),
            self._filters,
            self._rec.gen,
            self._current_thresholds(),  # the codes' thresholds: explicit ones too
            self._rec.code_model(),
            self._rec.tuning,
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
        )

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
        resc_blobs = quantize.encode_rescore(resc.raw, self.config.rescore_dtype, resc.inv_norm)
        ext_bytes = [e.encode() for e in id_list]

        with self.env.write_lock:
            self._check_open()
            # under the lock: add_filterable cannot change the fields between this and the commit
            filterable = self.config.filterable
            fkeys = [_keys_to_json(doc_keys(json.loads(m), filterable)) if m else b"" for m in meta]
            thresholds = self._current_thresholds()
            # sign bits need no normalization; calibrated thresholds apply to unit vectors
            packed = quantize.binarize(code.raw if thresholds is None else code.unit(), thresholds)
            dbs = self.env.dbs
            cid = self._rec.cid

            def txn_fn(txn: lmdb.Transaction) -> tuple[_Record, list[int], _Built | None]:
                rec = self._record_in(txn)
                row = rec.next_row
                id_keys = [id_key(cid, e) for e in id_list]
                old = [unpack_rowid(bytes(v)) for _, v in txn.cursor(db=dbs["ids"]).getmulti(id_keys)]
                for r in old:
                    _delete_row(txn, dbs, cid, r)
                rks = [row_key(cid, row + i) for i in range(n)]
                code_rows = quantize.split_rows(packed)
                _putmulti(txn, dbs["ids"], zip(id_keys, (pack_rowid(row + i) for i in range(n)), strict=True))
                _putmulti(txn, dbs["rows"], zip(rks, ext_bytes, strict=True))
                _putmulti(txn, dbs["codes"], zip(rks, code_rows, strict=True))
                _putmulti(txn, dbs["vecs"], zip(rks, resc_blobs, strict=True))
                _putmulti(txn, dbs["docs"], ((k, m) for k, m in zip(rks, meta, strict=True) if m))
                _putmulti(txn, dbs["fkeys"], ((k, f) for k, f in zip(rks, fkeys, strict=True) if f))
                new = replace(rec, next_row=row + n, count=rec.count - len(old) + n, gen=rec.gen + 1)
                recalibrated = False
                if rec.collecting:
                    unit = code.unit()
                    if new.due():
                        new = _calibrate_in_txn(txn, dbs, new, self.bits, rks, unit)
                        recalibrated = True
                    else:
                        _putmulti(txn, dbs["calib"], ((rks[i], unit[i].tobytes()) for i in range(n)))
                self._write_record(txn, new)
                return new, old, (self._build(txn, new) if recalibrated else None)

            rec, old, rebuilt = self.env.write(txn_fn)
            if rebuilt is not None:
                self._install(rebuilt)
                return n
            self._rec = rec
            positions = [p for p in (self._index.position(r) for r in old) if p is not None]
            self._index.kill(positions)
            start_pos = self._index.staged
            new_rowids = np.arange(rec.next_row - n, rec.next_row, dtype=np.int64)
            self._index.append(new_rowids, quantize.pad_rows(packed, self.stride))
            for i, fk in enumerate(fkeys):
                if fk:
                    self._filters.add(start_pos + i, _keys_from_json(fk))
            self._publish()
        return n

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (missing ids are ignored); returns how many existed."""
        id_list = validate.ids(ids, "ids", unique=False)
        with self.env.write_lock:
            self._check_open()
            dbs = self.env.dbs
            cid = self._rec.cid

            def txn_fn(txn: lmdb.Transaction) -> tuple[_Record, list[int]]:
                old: list[int] = []
                for ext in dict.fromkeys(id_list):
                    ik = id_key(cid, ext)
                    prev = get(txn, ik, dbs["ids"])
                    if prev is None:
                        continue
                    txn.delete(ik, db=dbs["ids"])
                    old.append(unpack_rowid(prev))
                    _delete_row(txn, dbs, cid, unpack_rowid(prev))
                rec = self._record_in(txn)
                new = replace(rec, count=rec.count - len(old), gen=rec.gen + (1 if old else 0))
                if old:
                    self._write_record(txn, new)
                return new, old

            rec, old = self.env.write(txn_fn)
            self._rec = rec
            if old:
                self._index.kill([p for p in (self._index.position(r) for r in old) if p is not None])
                self._publish()
            return len(old)

    def calibrate(self) -> tuple[float, ...]:
        """Calibrate now from the documents held (thresholds, refine model, measured recall) and
        rebuild every code; for ``auto`` the next calibration comes when the count doubles again."""
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
                new = _calibrate_in_txn(txn, self.env.dbs, replace(rec, gen=rec.gen + 1), self.bits)
                self._write_record(txn, new)
                return self._build(txn, new)

            self._install(self.env.write(txn_fn))
            assert self._rec.thresholds is not None
            return self._rec.thresholds

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

    def _record_in(self, txn: lmdb.Transaction) -> _Record:
        """The collection's allocation record as this write transaction sees it (never the cached
        copy: row ids and counts are allocated from what is committed, whoever committed it)."""
        raw = get(txn, meta_key(self.name), self.env.dbs["meta"])
        if raw is None:
            raise NotFound("collection", self.name)
        rec = _Record.from_bytes(raw)
        if rec.cid != self._rec.cid:
            raise NotFound("collection", self.name)  # dropped and created again elsewhere
        return rec

    def _write_record(self, txn: lmdb.Transaction, rec: _Record) -> None:
        txn.put(meta_key(self.name), rec.to_bytes(), db=self.env.dbs["meta"])
        txn.put(gen_key(rec.cid), _GEN.pack(rec.gen), db=self.env.dbs["meta"])

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
            for name in ("vecs", "rows", "docs"):
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
    def _consistent(self, wait: bool = True) -> Iterator[tuple[_Snapshot, lmdb.Transaction]]:
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
                gen = _GEN.unpack(raw)[0]
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
        with self.env.reader() as txn:
            for ext in id_list:
                prev = get(txn, id_key(cid, ext), dbs["ids"])
                if prev is None:
                    out.append(None)
                    continue
                rk = row_key(cid, unpack_rowid(prev))
                doc = get(txn, rk, dbs["docs"])
                vec = None
                if with_vectors:
                    vec = quantize.decode_rescore(
                        [must(get(txn, rk, dbs["vecs"]))], self.config.rescore_dims, self.config.rescore_dtype
                    )[0]
                code = must(get(txn, rk, dbs["codes"]))
                out.append(Record(ext, json.loads(doc) if doc else {}, code, vec))
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
        cq, rq = self._queries(code_queries, rescore_queries, params.rescore)
        top_k = params.top_k
        dbs = self.env.dbs
        cid = self._rec.cid
        with self._consistent(wait) as (snap, txn):
            view = snap.view
            plan = params.plan(snap.tuning, view.live)
            masks = self._masks(snap, list(params.filter))
            qcodes = quantize.pad_rows(quantize.binarize(cq, snap.thresholds), self.stride)
            dist, pos = scan.topk(qcodes, view.codes, plan.shortlist, masks, limit=view.n)
            weights = cq if snap.model is None else snap.model.refine_weights(cq)
            results: list[list[Hit]] = []
            for i in range(cq.shape[0]):
                d, p = dist[i], pos[i]
                if plan.refine and len(p) > plan.float_reads:
                    est = quantize.refine_scores(view.code_rows(p), self.bits, weights[i])
                    keep = np.argsort(-est, kind="stable")[: plan.float_reads]
                    d, p = d[keep], p[keep]
                elif len(p) > plan.float_reads:
                    d, p = d[: plan.float_reads], p[: plan.float_reads]
                keys = row_keys(cid, view.rowids_of(p))
                if plan.rescore:
                    assert rq is not None
                    vdb, read = dbs["vecs"], txn.get
                    # zero-copy views into the map, valid while the transaction lives
                    found = [read(k, db=vdb) for k in keys]
                    if None in found:
                        raise FormatMismatch("a row's vector is missing: the environment is damaged")
                    blobs = cast(list[quantize.Buffer], found)
                    scores = quantize.rescore_dots(
                        blobs, self.config.rescore_dims, self.config.rescore_dtype, rq[i]
                    )
                    order = np.lexsort((p, -scores))[:top_k]
                else:
                    scores = 1.0 - 2.0 * d.astype(np.float32) / self.bits
                    order = np.arange(min(top_k, len(p)))
                results.append(
                    [
                        self._hit(txn, keys[j], float(scores[j]), int(d[j]), params.include_metadata)
                        for j in order
                    ]
                )
            return results

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
        dbs = self.env.dbs
        with self._consistent() as (snap, txn):
            view = snap.view
            visible = view.live_mask()
            fmask = snap.filters.mask(conditions, view.n)
            if fmask is not None:
                visible &= fmask
            all_rowids = np.concatenate(view.rowids)[: view.n] if view.rowids else np.zeros(0, np.int64)
            rowids = all_rowids[visible.astype(bool)]
            positions = np.flatnonzero(visible)
            keys = [row_key(self._rec.cid, int(r)) for r in rowids]
            blobs = [must(get(txn, k, dbs["vecs"])) for k in keys]
            vecs = quantize.decode_rescore(blobs, self.config.rescore_dims, self.config.rescore_dtype)
            scores = rq @ vecs.T
            results: list[list[Hit]] = []
            for i in range(nq):
                order = np.lexsort((positions, -scores[i]))[:top_k]
                results.append(
                    [self._hit(txn, keys[j], float(scores[i, j]), -1, include_metadata) for j in order]
                )
            return results

    def _masks(self, snap: _Snapshot, conditions: list[Any]) -> tuple[U8, ...]:
        view = snap.view
        fmask = snap.filters.mask(conditions, view.n)
        if fmask is None:
            return view.masks
        combined = view.live_mask() & fmask
        return tuple(combined[c * CHUNK_ROWS : (c + 1) * CHUNK_ROWS] for c in range(len(view.codes)))

    def _hit(self, txn: lmdb.Transaction, key: bytes, score: float, hamming: int, with_meta: bool) -> Hit:
        dbs = self.env.dbs
        ext = must(get(txn, key, dbs["rows"])).decode()
        meta: dict[str, Any] | None = None
        if with_meta:
            raw = txn.get(key, db=dbs["docs"])
            meta = json.loads(str(raw, "utf-8")) if raw else {}
        return Hit(ext, score, hamming, meta)


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


def _read_rows(
    txn: lmdb.Transaction, db: Any, prefix: bytes, count: int
) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """The ``count`` rows under ``prefix`` in key order, read in C-level loops (fast reopen)."""
    if count == 0:
        return (), ()
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        raise FormatMismatch(f"collection rows under {prefix.hex()} are missing: the environment is damaged")
    items = list(itertools.islice(cur.iternext(), count))
    keys, vals = zip(*items, strict=True)
    if len(keys) != count or not bytes(keys[-1]).startswith(prefix) or not bytes(keys[0]).startswith(prefix):
        raise FormatMismatch(
            f"collection rows under {prefix.hex()} do not match its count: the environment is damaged"
        )
    if cur.next() and bytes(cur.key()).startswith(prefix):
        raise FormatMismatch(
            f"collection under {prefix.hex()} has more rows than its count: the environment is damaged"
        )
    return keys, vals


def _putmulti(txn: lmdb.Transaction, db: Any, items: Iterable[tuple[bytes, quantize.Buffer]]) -> None:
    """Put many items in one C-level loop (overwriting)."""
    txn.cursor(db=db).putmulti(items, dupdata=False, overwrite=True)


def _delete_row(txn: lmdb.Transaction, dbs: Mapping[str, Any], cid: int, rowid: int) -> None:
    rk = row_key(cid, rowid)
    for name in ROW_SUBDBS:
        txn.delete(rk, db=dbs[name])


def _calibrate_in_txn(
    txn: lmdb.Transaction,
    dbs: Mapping[str, Any],
    rec: _Record,
    bits: int,
    new_keys: Sequence[bytes] = (),
    new_vecs: F32 | None = None,
) -> _Record:
    """Calibrate from the kept code vectors plus this batch's (``new_keys`` / ``new_vecs``, not yet
    kept), rewrite all those rows' codes, and keep the batch's vectors, or, when the calibration is
    final (the collection reached ``calibration_sample``), drop them all. The model is fitted on at
    most ``calibration_sample`` vectors (kept ones first)."""
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
    model, tuning = calibration.calibrate(x, measure_rows=cap)
    final = rec.count >= cap or rec.config.calibration is Calibration.MEDIAN  # median: one calibration
    codes = quantize.binarize(x, model.thresholds)
    all_keys = [*keys, *new_keys]
    _putmulti(txn, dbs["codes"], zip(all_keys, quantize.split_rows(codes), strict=True))
    if final:
        for k in keys:
            txn.delete(k, db=dbs["calib"])
    elif len(batch):
        _putmulti(txn, dbs["calib"], zip(new_keys, quantize.split_rows(batch), strict=True))
    return replace(
        rec,
        thresholds=tuple(float(v) for v in model.thresholds),
        scale=tuple(float(v) for v in model.scale),
        centre=model.centre,
        calibrated_at=rec.count,
        final=final,
        tuning=tuning,
    )


def _keys_to_json(keys: Mapping[str, list[tuple[str, Any]]]) -> bytes:
    if not keys:
        return b""
    return json.dumps({f: [[t, v] for t, v in ks] for f, ks in keys.items()}, separators=(",", ":")).encode()


def _keys_from_json(raw: bytes) -> dict[str, list[tuple[str, Any]]]:
    return {f: [(t, v) for t, v in ks] for f, ks in json.loads(raw).items()}
