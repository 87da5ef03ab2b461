"""Calibration: fit the code model on a collection's code vectors and measure the search settings.

Sample queries are stored vectors (up to :data:`SAMPLE_QUERIES`), each searched leave-one-out (its
own row excluded) over the calibration sample, or queries the caller supplies (the Calibrate RPC's
sample queries: real queries of the workload, e.g. cross-lingual ones, which sit farther from the
documents than stored vectors do, so their measured recall is the one a recall_target should trust);
exact float search over the same vectors is the ground truth. The whole two-stage search is
simulated with matrix products (Hamming order from the +-1 codes, the refine estimate, exact
scores of the rows read), so measuring every setting of :data:`GRID` costs a few matrix products,
not a search per setting.

The measurement uses the code-dims vectors for both stages (the rescore vectors live on disk and
are not read here); where ``rescore_dims == code_bits`` that is exactly the search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from zembed.store import quantize
from zembed.store.errors import InvalidArgument
from zembed.store.params import DEFAULT_READS_PER_K, DEFAULT_SHORTLIST_PER_READ, SearchParams, Tuning

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

SAMPLE_QUERIES = 128
K = 10
#: (float reads per result, Hamming candidates per float read) measured at each calibration
GRID: tuple[tuple[int, int], ...] = tuple(
    (reads, per_read) for reads in (1, 2, 4, 8, 16) for per_read in (1, 4, 10, 25)
)


def calibrate(
    x: F32, measure_rows: int | None = None, seed: int = 0, queries: F32 | None = None
) -> tuple[quantize.CodeModel, Tuning]:
    """Fit the code model on unit code vectors ``x`` and measure :data:`GRID` with it on the first
    ``measure_rows`` (all when None); the refine step's centring is chosen by measurement (the
    best recall at the defaults; ties keep 0.5). ``queries`` (unit code vectors, at most
    :data:`SAMPLE_QUERIES` used) replace the stored-vector sample when given."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    model = quantize.fit_code_model(x)
    x = x[:measure_rows] if measure_rows is not None else x
    n = x.shape[0]
    if n < 2:
        return model, Tuning()
    rng = np.random.default_rng(seed)
    if queries is not None and len(queries):
        q = np.ascontiguousarray(queries[:SAMPLE_QUERIES], dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != x.shape[1]:
            raise ValueError(f"sample queries must be [n, {x.shape[1]}], got {list(q.shape)}")
        sim = _Simulation(x, q, None, model.thresholds)
    else:
        qi = np.sort(rng.choice(n, size=min(n, SAMPLE_QUERIES), replace=False))
        sim = _Simulation(x, x[qi], qi, model.thresholds)
    best: tuple[float, float] | None = None
    chosen = 0.5
    for centre in (0.5, *[c for c in quantize.CENTRES if c != 0.5]):
        m = quantize.CodeModel(model.thresholds, model.scale, centre)
        r = sim.recall(m, DEFAULT_READS_PER_K, DEFAULT_SHORTLIST_PER_READ)
        if best is None or r > best[0] + 1e-9:
            best, chosen = (r, centre), centre
    model = quantize.CodeModel(model.thresholds, model.scale, chosen)
    points = [(reads, per, sim.recall(model, reads, per)) for reads, per in GRID]
    # cheapest first: fewest float reads, then the smallest shortlist
    points.sort(key=lambda p: (p[0], p[1]))
    return model, Tuning(tuple(points))


class MeasureStopped(Exception):
    """A measurement was asked to stop (the server is shutting down); nothing was kept."""


def measure_by_search(
    search: Callable[[SearchParams], Sequence[Sequence[str]]],
    truth: Sequence[Sequence[str]],
    stop: Callable[[], bool] | None = None,
) -> Tuning:
    """Measure :data:`GRID` by running the real search: ``search(params)`` answers every sample query
    (ids of each query's hits) and ``truth`` holds exact search's top ids per query. For a collection
    far larger than the rows a calibration kept (a final calibration measures 10,000 rows; a
    collection may hold millions, where the same sizes reach less recall), or for sample queries
    whose code-side vectors are not the stored ones. Queries without truth (an empty collection) are
    skipped; with none left (no document to measure against) the call is refused (InvalidArgument),
    so an all-zero table never replaces a real one. ``stop`` is asked before each setting; when it
    answers True, :class:`MeasureStopped`."""
    if not any(truth):
        raise InvalidArgument(
            "sample_queries", "cannot be measured: the collection has no document to find (recall needs some)"
        )
    points = []
    for reads, per in GRID:
        if stop is not None and stop():
            raise MeasureStopped("the measurement was stopped")
        got = search(SearchParams(top_k=K, float_reads=K * reads, shortlist=K * reads * per))
        found = [len(set(g) & set(t)) / len(t) for g, t in zip(got, truth, strict=True) if t]
        points.append((reads, per, float(np.mean(found)) if found else 0.0))
    points.sort(key=lambda p: (p[0], p[1]))
    return Tuning(tuple(points))


class _Simulation:
    """The whole search for every sample query at once; orders are taken with partial sorts (only
    which rows make each cut matters for recall)."""

    def __init__(self, x: F32, q: F32, own_rows: I64 | None, thresholds: F32) -> None:
        """``q``: the sample queries; ``own_rows``: each query's own row in ``x`` (excluded from its
        results: leave-one-out), or None for queries from outside the collection."""
        self.x = x
        self.q = q
        n = x.shape[0]
        self.signs = np.where(x > thresholds, 1.0, -1.0).astype(np.float32)
        qsigns = np.where(q > thresholds, 1.0, -1.0).astype(np.float32)
        ham = qsigns @ self.signs.T  # bits - 2 * hamming: higher is nearer
        self.exact = q @ x.T
        if own_rows is not None:
            own = (np.arange(len(own_rows)), own_rows)
            ham[own] = -np.inf
            self.exact[own] = -np.inf
        self.n_rows = n - (0 if own_rows is None else 1)  # a query's own row is never a candidate
        self.k = min(K, self.n_rows)
        self.truth = _top(self.exact, self.k)
        # the Hamming order of the largest shortlist measured (ties by row, as the scan breaks
        # them): every smaller shortlist is a prefix of it
        most = min(self.n_rows, max(K * reads * per for reads, per in GRID))
        near = _top(ham, most)
        rank = np.take_along_axis(ham, near, axis=1).astype(np.float64) * (n + 1) - near
        self.order = np.take_along_axis(near, np.argsort(-rank, axis=1), axis=1)
        self._refine: dict[float, F32] = {}

    def _refine_scores(self, model: quantize.CodeModel) -> F32:
        if model.centre not in self._refine:
            w = model.refine_weights(self.q)
            self._refine[model.centre] = np.asarray(w @ self.signs.T, dtype=np.float32)
        return self._refine[model.centre]

    def recall(self, model: quantize.CodeModel, reads_per_k: int, per_read: int) -> float:
        """Mean recall@k against exact search with ``k x reads_per_k`` float reads out of a Hamming
        shortlist ``per_read`` times larger (refined when larger)."""
        reads = min(self.k * reads_per_k, self.n_rows)
        shortlist = min(reads * per_read, self.order.shape[1])
        cand = self.order[:, :shortlist]
        if shortlist > reads:
            est = np.take_along_axis(self._refine_scores(model), cand, axis=1)
            cand = np.take_along_axis(cand, _top(est, reads), axis=1)
        ex = np.take_along_axis(self.exact, cand, axis=1)
        top = np.take_along_axis(cand, _top(ex, self.k), axis=1)
        hits = (top[:, :, None] == self.truth[:, None, :]).any(axis=2).sum()
        return float(hits / (self.k * len(self.q)))


def _top(scores: F32, k: int) -> I64:
    """Column indices of each row's ``k`` highest scores (in no particular order)."""
    if k >= scores.shape[1]:
        return np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]
