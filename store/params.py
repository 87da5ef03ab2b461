"""Search parameters: one type, owned by the store, holding the defaults and validated once.

A search has three stages, each sized here:

1. the **Hamming shortlist**: the ``shortlist`` rows nearest the query's code (popcount scan);
2. **refine** (on by default): those rows' +-1 bits are scored against the float query in memory (the
   asymmetric estimate, see :class:`store.quantize.CodeModel`) and the best ``float_reads`` kept;
   with refine off the Hamming order picks them;
3. **rescore** (on by default): the ``float_reads`` candidates' float vectors are read from LMDB and
   scored exactly; the best ``top_k`` are the answer. With rescore off the Hamming order is the answer.

Sizes are either explicit (``shortlist``, ``float_reads``) or chosen: from ``recall_target`` (the
cheapest setting whose recall@10 against exact search, measured on the collection when it was
calibrated, reaches the target) or from the defaults (``DEFAULT_READS_PER_K`` float reads and
``DEFAULT_SHORTLIST_PER_READ`` Hamming candidates per float read), which the recall benchmark chose.
``high_recall`` (the hosted API's ``latency_mode: high``, gRPC ``LATENCY_SLOW``) chooses
``HIGH_RECALL_READS_PER_K`` float reads instead: 4x the defaults' reads and shortlist.

Built once where a request enters (the gRPC edge, or a Python caller), then passed through unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zembed.store import validate
from zembed.store.errors import InvalidArgument
from zembed.store.filters import Condition, parse_filter

DEFAULT_TOP_K = 10
#: float vectors read per result: 4 x top_k (40 at top_k 10; bench/recall_multilingual.py)
DEFAULT_READS_PER_K = 4
#: Hamming candidates refined per float read (400 at top_k 10; bench/recall_multilingual.py)
DEFAULT_SHORTLIST_PER_READ = 10
#: high_recall: 16 float reads per result (160 reads, 1600 candidates at top_k 10): the calibration
#: grid's largest read count. Float reads are what limits recall at the defaults (more candidates per
#: read add <= 0.006, bench/recall_multilingual.py); recall and cost: bench/latency_modes.py.
HIGH_RECALL_READS_PER_K = 16
MAX_FLOAT_READS = 100_000  # top_k 1000 x the earlier oversampling 100
MAX_SHORTLIST = 1_000_000


@dataclass(frozen=True)
class Plan:
    """The sizes one search runs with (what :meth:`SearchParams.plan` resolved)."""

    shortlist: int
    float_reads: int
    refine: bool
    rescore: bool


@dataclass(frozen=True)
class Tuning:
    """What a calibration measured on a collection: recall@10 against exact search for settings
    ``(float_reads_per_k, shortlist_per_read, recall)``, cheapest first."""

    points: tuple[tuple[int, int, float], ...] = ()

    def choose(self, target: float) -> tuple[int, int] | None:
        """The cheapest measured setting reaching ``target`` (the best measured when none does)."""
        if not self.points:
            return None
        for reads, per_read, recall in self.points:
            if recall >= target:
                return reads, per_read
        best = max(self.points, key=lambda p: (p[2], -p[0], -p[1]))
        return best[0], best[1]

    def recall_at(self, reads: int, per_read: int) -> float | None:
        for r, s, rec in self.points:
            if (r, s) == (reads, per_read):
                return rec
        return None

    def to_json(self) -> list[list[float]]:
        return [[r, s, rec] for r, s, rec in self.points]

    @classmethod
    def from_json(cls, raw: Any) -> Tuning:
        if not raw:
            return cls()
        return cls(tuple((int(r), int(s), float(rec)) for r, s, rec in raw))


@dataclass(frozen=True)
class SearchParams:
    """One search's parameters, validated on construction.

    ``shortlist`` / ``float_reads``: 0 means chosen (``recall_target``, else the defaults).
    ``recall_target``: 0 means the defaults; else in (0, 1], resolved against the collection's
    measured :class:`Tuning` (a collection not yet measured uses the defaults).
    ``filter``: the parsed conditions (build with :meth:`create` from the mapping form).
    ``high_recall``: chosen sizes use ``HIGH_RECALL_READS_PER_K`` float reads per result (explicit
    sizes and ``recall_target`` take precedence).
    """

    top_k: int = DEFAULT_TOP_K
    shortlist: int = 0
    float_reads: int = 0
    refine: bool = True
    rescore: bool = True
    recall_target: float = 0.0
    filter: tuple[Condition, ...] = ()
    include_metadata: bool = True
    high_recall: bool = False

    def __post_init__(self) -> None:
        validate.int_range(self.top_k, "top_k", 1, validate.MAX_TOP_K)
        validate.int_range(self.shortlist, "shortlist", 0, MAX_SHORTLIST)
        validate.int_range(self.float_reads, "float_reads", 0, MAX_FLOAT_READS)
        for name in ("refine", "rescore", "include_metadata", "high_recall"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(name, f"must be a bool; given {getattr(self, name)!r}")
        rt = self.recall_target
        ok = isinstance(rt, int | float) and not isinstance(rt, bool) and math.isfinite(rt)
        if not ok or not 0 <= rt <= 1:
            raise InvalidArgument(
                "recall_target", f"must be in (0, 1] (0 means the defaults); given {rt!r}", value=rt
            )
        if self.shortlist and self.float_reads and self.shortlist < self.float_reads:
            raise InvalidArgument(
                "shortlist",
                f"must be at least float_reads ({self.float_reads}); given {self.shortlist}",
                value=self.shortlist,
            )
        if self.float_reads and self.float_reads < self.top_k and self.rescore:
            raise InvalidArgument(
                "float_reads",
                f"must be at least top_k ({self.top_k}) or 0 (chosen); given {self.float_reads}",
                value=self.float_reads,
            )

    @classmethod
    def create(
        cls,
        *,
        top_k: int = DEFAULT_TOP_K,
        max_top_k: int = validate.MAX_TOP_K,
        filter: Mapping[str, Any] | None = None,
        oversampling: int | None = None,
        **kw: Any,
    ) -> SearchParams:
        """Build from the public (mapping) form of a filter, checking ``top_k`` against the caller's
        limit (at most the store's). ``oversampling`` is the earlier form of ``float_reads``
        (``top_k x oversampling``)."""
        limit = min(max_top_k, validate.MAX_TOP_K)
        validate.int_range(top_k, "top_k", 1, limit)
        if oversampling is not None:
            validate.int_range(oversampling, "oversampling", 1, validate.MAX_OVERSAMPLING)
            if kw.get("float_reads"):
                raise InvalidArgument("oversampling", "cannot be given together with float_reads")
            kw["float_reads"] = top_k * oversampling
        conditions = tuple(parse_filter(filter, filter.keys())) if filter else ()
        return cls(top_k=top_k, filter=conditions, **kw)

    def plan(self, tuning: Tuning | None, live: int) -> Plan:
        """The sizes to run with on a collection holding ``live`` rows."""
        if not self.rescore:
            return Plan(self.top_k, self.top_k, False, False)
        reads_per_k, per_read = DEFAULT_READS_PER_K, DEFAULT_SHORTLIST_PER_READ
        if self.high_recall:
            reads_per_k = HIGH_RECALL_READS_PER_K
        if self.recall_target and tuning is not None:
            chosen = tuning.choose(self.recall_target)
            if chosen is not None:
                reads_per_k, per_read = chosen
        reads = self.float_reads or self.top_k * reads_per_k
        if not self.refine:
            return Plan(max(reads, self.shortlist), reads, False, True)
        shortlist = self.shortlist or reads * per_read
        # no point scanning for more candidates than there are rows (or refining fewer than read)
        shortlist = max(min(shortlist, max(live, reads)), reads)
        return Plan(shortlist, reads, shortlist > reads, True)
