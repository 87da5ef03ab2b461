"""The read side of a collection: ``get``, ``search``, ``exact_search``, ``shortlist`` and the
pairing of a read transaction with the published snapshot of the same generation.

:class:`CollectionReader` is a **mixin** of :class:`store.collection.Collection` (chosen over a
reader object the collection delegates to: every read keeps its name on ``Collection`` with no
forwarding method, and the state both sides share, the record, the published snapshots and the
environment, stays one set of attributes that the writer updates and the reader only reads). The
writer (``store.collection``) builds and publishes snapshots; this module only reads them and the
stored rows; the search itself is ``store.search`` (pure functions).

Where the codes and rescore records of rows live depends on the data directory's format: the
:class:`Rows` seam reads them, :class:`BlockRows` from the runs of format 2 (``store.blocks``),
:class:`store.format1.Format1Rows` from format 1's one value per row (a format-1 directory is served
read-only until ``zembed migrate`` converts it). Everything else (ids, metadata, filters, the
search) is the same code for both.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import lmdb
import numpy as np
import numpy.typing as npt

from zembed.store import blocks, quantize, validate
from zembed.store import calibrate as calibration
from zembed.store import search as stages
from zembed.store.blocks import Runs
from zembed.store.config import CollectionConfig
from zembed.store.errors import FormatMismatch, InvalidArgument, NotFound, WouldBlock
from zembed.store.filters import parse_filter
from zembed.store.index import CodeIndex
from zembed.store.layout import (
    Env,
    cid_prefix,
    get,
    id_key,
    iter_prefix,
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
    Tuning,
)
from zembed.store.records import GEN, CollectionInfo, CollectionRecord, Hit, Record, gen_key

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

MAX_REFINE = 100
_PUBLISH_TIMEOUT_S = 10.0


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


# ---------------------------------------------------------------------- the layout seam
@dataclass(frozen=True)
class Loaded:
    """A collection's stored codes as one read transaction sees them (views valid while it lives).

    ``rowids``: every stored slot's row id, ascending (format 2: dense, tombstoned slots included;
    format 1: with gaps where rows were deleted); ``codes``: their packed codes in the same order,
    in parts of ``[k, code_bytes]``; ``dead``: tombstoned row ids (hidden); ``runs``: the run
    directory (format 2; empty for format 1)."""

    rowids: I64
    codes: list[U8]
    dead: I64
    runs: Runs

    def positions(self, rowids: I64) -> I64:
        """Index positions (order in ``self.rowids``) of stored row ids."""
        n = len(self.rowids)
        if n and int(self.rowids[-1]) - int(self.rowids[0]) + 1 == n:  # dense: no search needed
            return rowids - int(self.rowids[0])
        return np.searchsorted(self.rowids, rowids).astype(np.int64)


class Rows(Protocol):
    """Reads the codes and rescore records of one collection's rows from one store layout."""

    #: the sub-database holding the rescore records (what ``prefetch`` touches)
    record_db: str

    def load(self, txn: lmdb.Transaction, rec: CollectionRecord, name: str) -> Loaded:
        """Every stored code, checked against the collection's record (FormatMismatch if not)."""
        ...

    def records(self, txn: lmdb.Transaction, cid: int, runs: Runs, rowids: I64) -> Sequence[quantize.Buffer]:
        """The rescore records of ``rowids`` (views valid while ``txn`` lives)."""
        ...

    def code_of(self, txn: lmdb.Transaction, cid: int, rowid: int) -> bytes:
        """One row's packed code."""
        ...

    def record_of(self, txn: lmdb.Transaction, cid: int, rowid: int) -> quantize.Buffer:
        """One row's rescore record."""
        ...


class BlockRows:
    """Format 2: codes and records in runs of many rows per value (``store.blocks``)."""

    record_db = "vblocks"

    def __init__(self, dbs: Mapping[str, Any], code_bytes: int, record_bytes: int) -> None:
        self.dbs = dbs
        self.code_bytes = code_bytes
        self.record_bytes = record_bytes

    def load(self, txn: lmdb.Transaction, rec: CollectionRecord, name: str) -> Loaded:
        runs, values = blocks.read_runs(txn, self.dbs, rec.cid, self.code_bytes)
        rows = runs.rows
        first = int(runs.starts[0]) if rows else rec.next_row
        dead = np.asarray(
            [rowid_of(k) for k, _ in iter_prefix(txn, self.dbs["dead"], cid_prefix(rec.cid))], np.int64
        )
        if (rows and first + rows != rec.next_row) or rows - len(dead) != rec.count:
            raise FormatMismatch(
                f"collection {name!r}: {rows} stored rows from row {first} with {len(dead)} "
                f"tombstones do not match its record (next row {rec.next_row}, {rec.count} documents): "
                "the environment is damaged"
            )
        codes = [np.frombuffer(v, np.uint8).reshape(-1, self.code_bytes) for v in values]
        return Loaded(np.arange(first, first + rows, dtype=np.int64), codes, dead, runs)

    def records(self, txn: lmdb.Transaction, cid: int, runs: Runs, rowids: I64) -> Sequence[quantize.Buffer]:
        return blocks.gather_records(txn, self.dbs["vblocks"], cid, runs, rowids, self.record_bytes)

    def code_of(self, txn: lmdb.Transaction, cid: int, rowid: int) -> bytes:
        return bytes(blocks.row_of(txn, self.dbs["cblocks"], cid, rowid, self.code_bytes))

    def record_of(self, txn: lmdb.Transaction, cid: int, rowid: int) -> quantize.Buffer:
        return blocks.row_of(txn, self.dbs["vblocks"], cid, rowid, self.record_bytes)


def rows_for(env: Env, code_bytes: int, record_bytes: int) -> Rows:
    """The :class:`Rows` reader of ``env``'s layout."""
    if env.format == 1:
        from zembed.store.format1 import Format1Rows  # imports this module

        return Format1Rows(env.dbs, code_bytes, record_bytes)
    return BlockRows(env.dbs, code_bytes, record_bytes)


# ---------------------------------------------------------------------- the reads
class CollectionReader:
    """The reads of :class:`store.collection.Collection` (a mixin: see the module doc). The
    attributes below are set by the collection; nothing here writes."""

    env: Env
    name: str
    config: CollectionConfig
    bits: int
    stride: int
    code_bytes: int
    record_bytes: int
    dropped: bool
    _rec: CollectionRecord
    _snap: stages.Snapshot
    _snaps: dict[int, stages.Snapshot]
    _published: threading.Condition
    _index: CodeIndex
    _runs: Runs
    _rows: Rows

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

    def _measure_tuning(
        self,
        code_queries: npt.ArrayLike | None,
        rescore_queries: npt.ArrayLike | None,
        stop: Callable[[], bool] | None,
    ) -> tuple[Tuning, bool, CollectionRecord]:
        """The measuring half of ``Collection.measure`` (reads only): the recall table of this
        collection's own search at every setting of the calibration grid against exact search;
        whether workload sample queries were used; and the record it was measured at (the writer
        refuses the result if the codes were recalibrated since)."""
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
        assert rq is not None  # asked for with need_rescore / the stored rows themselves
        before = self._rec  # read before the snapshot: a recalibration in between refuses the result
        extra = 0 if own is None else 1
        # one snapshot for the truth and every setting: writes meanwhile cannot make a setting look
        # worse (or better) than it is (the read transaction pins its pages while it measures)
        with self._consistent() as (snap, txn):
            records = self._records(txn, snap)
            dims, dtype = self.config.rescore_dims, self.config.rescore_dtype
            exact = stages.exact(snap, rq, k + extra, dims, dtype, records, ())
            truth = [[str(i) for i in row] for row in self._ids(txn, exact.rowids)]

            def run(p: SearchParams) -> list[list[str]]:
                if extra:
                    p = replace(p, top_k=k + 1, float_reads=p.float_reads + 1, shortlist=p.shortlist + 1)
                r = self._ranked(snap, txn, p, cq, rq)
                return [[str(i) for i in row] for row in self._ids(txn, r.rowids)]

            def give_way() -> bool:
                # a map resize waits for this transaction to end, and every reader and writer
                # behind it: the grid is far longer than the truth, so the measurement gives way
                if self.env.gate._resizing:
                    raise WouldBlock(
                        f"collection {self.name!r}: the map was resized while it was measured; measure again"
                    )
                return stop is not None and stop()

            if own is not None:
                truth = [[i for i in t if i != o][:k] for t, o in zip(truth, own, strict=True)]
                search = run

                def run_loo(p: SearchParams) -> list[list[str]]:
                    got = search(p)
                    return [[i for i in g if i != o][:k] for g, o in zip(got, own, strict=True)]

                tuning = calibration.measure_by_search(run_loo, truth, give_way)
            else:
                tuning = calibration.measure_by_search(run, truth, give_way)
        return tuning, own is None, before

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
            for name in (self._rows.record_db, "rows", "docs"):
                cur = txn.cursor(db=self.env.dbs[name])
                if not cur.set_range(prefix):
                    continue
                for k, v in cur.iternext():
                    if bytes(k[:4]) != prefix:
                        break
                    arr = np.frombuffer(v, dtype=np.uint8)
                    total += int(arr[:: self.env.page_size].sum() >= 0) * len(arr)
        return total

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
                    blob = self._rows.record_of(txn, cid, rowid)
                    vec = quantize.decode_rescore(
                        [blob], self.config.rescore_dims, self.config.rescore_dtype
                    )[0]
                code = self._rows.code_of(txn, cid, rowid)
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
        rows, cid, runs = self._rows, self._rec.cid, snap.runs
        return lambda rowids: rows.records(txn, cid, runs, rowids)

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


def _text(value: bytes | memoryview | None) -> str:
    if value is None:
        raise FormatMismatch("a stored row has no id: the environment is damaged")
    return str(value, "utf-8")


__all__ = [
    "BlockRows",
    "CollectionReader",
    "Loaded",
    "Rows",
    "SearchArrays",
    "Shortlist",
    "rows_for",
    "search_params",
]
