"""The two-stage search as pure functions over one published snapshot (no transactions here).

Per query (sizes from :class:`store.params.Plan`):

1. **shortlist**: binarize the code-dims vector with the collection's thresholds and scan every
   visible row's code (popcount Hamming, running top-k, filter and live masks applied inside the
   scan) for the ``shortlist`` nearest rows;
2. **refine** (on by default): the float query is scored against those rows' +-1 bits in memory (the
   asymmetric estimate of :class:`store.quantize.CodeModel`) down to ``float_reads`` candidates;
3. **rescore**: their float vectors (read through ``records``, views into the LMDB map) are scored
   exactly (cosine: all vectors are unit length); with rescore off the Hamming order is the answer
   and the score is ``1 - 2 * hamming / bits`` (the cosine of the two +-1 vectors).

The caller (``store.collection``) pairs the snapshot with a read transaction of the same generation
and turns row ids into external ids and metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from zembed.store import quantize, scan
from zembed.store.blocks import Runs
from zembed.store.filters import Condition, FilterIndex
from zembed.store.index import CHUNK_ROWS, View
from zembed.store.params import Plan, Tuning

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
#: reads the rescore records of row ids (views valid while the caller's transaction lives)
Records = Callable[[I64], Sequence[quantize.Buffer]]


@dataclass(frozen=True)
class Snapshot:
    """What one generation of a collection looks like in memory (immutable)."""

    view: View
    filters: FilterIndex
    gen: int
    thresholds: F32 | None
    model: quantize.CodeModel | None
    tuning: Tuning
    runs: Runs


@dataclass(frozen=True)
class Ranked:
    """Per query the same number ``m`` of results, best first: ``[Q, m]`` arrays."""

    positions: I64
    rowids: I64
    scores: F32
    hamming: I32


def masks(snap: Snapshot, conditions: Sequence[Condition]) -> tuple[U8, ...]:
    """Per-chunk visibility: live rows, and the filter's rows when there is one."""
    view = snap.view
    fmask = snap.filters.mask(list(conditions), view.n)
    if fmask is None:
        return view.masks
    combined = view.live_mask() & fmask
    return tuple(combined[c * CHUNK_ROWS : (c + 1) * CHUNK_ROWS] for c in range(len(view.codes)))


def query_codes(snap: Snapshot, unit_queries: F32, stride: int) -> U8:
    """The queries binarized like the stored codes, padded to the scan's row stride."""
    return quantize.pad_rows(quantize.binarize(unit_queries, snap.thresholds), stride)


def shortlist(snap: Snapshot, qcodes: U8, k: int, conditions: Sequence[Condition] = ()) -> tuple[I32, I64]:
    """Stage 1: per query the ``k`` nearest visible positions, ``(distances, positions)`` ``[Q, m]``
    sorted by (distance, position)."""
    view = snap.view
    return scan.topk(qcodes, view.codes, k, masks(snap, conditions), limit=view.n)


def ranked(
    snap: Snapshot,
    plan: Plan,
    top_k: int,
    bits: int,
    dims: int,
    dtype: quantize.RescoreDtype,
    cq: F32,
    rq: F32 | None,
    stride: int,
    records: Records,
    conditions: Sequence[Condition] = (),
) -> Ranked:
    """All three stages for unit queries ``cq`` (code dims) and ``rq`` (rescore dims, with rescore)."""
    view = snap.view
    dist, pos = shortlist(snap, query_codes(snap, cq, stride), plan.shortlist, conditions)
    weights = cq if snap.model is None else snap.model.refine_weights(cq)
    nq = cq.shape[0]
    m = min(top_k, dist.shape[1])
    out_pos = np.empty((nq, m), np.int64)
    out_score = np.empty((nq, m), np.float32)
    out_ham = np.empty((nq, m), np.int32)
    for i in range(nq):
        d, p = dist[i], pos[i]
        if plan.refine and len(p) > plan.float_reads:
            est = quantize.refine_scores(view.code_rows(p), bits, weights[i])
            keep = np.argsort(-est, kind="stable")[: plan.float_reads]
            d, p = d[keep], p[keep]
        elif len(p) > plan.float_reads:
            d, p = d[: plan.float_reads], p[: plan.float_reads]
        if plan.rescore:
            assert rq is not None
            scores = quantize.rescore_dots(records(view.rowids_of(p)), dims, dtype, rq[i])
            order = np.lexsort((p, -scores))[:m]
        else:
            scores = 1.0 - 2.0 * d.astype(np.float32) / bits
            order = np.arange(m)
        out_pos[i] = p[order]
        out_score[i] = scores[order]
        out_ham[i] = d[order]
    rowids = view.rowids_of(out_pos.ravel()).reshape(nq, m) if m else np.zeros((nq, 0), np.int64)
    return Ranked(out_pos, rowids, out_score, out_ham)


#: rows exact search decodes at a time, at most, and the float32 bytes they may take (64 MiB: 65,536
#: rows of 256 dims; 13,107 rows of 1,280 dims, not 320 MiB)
EXACT_CHUNK = 65_536
EXACT_CHUNK_BYTES = 64 << 20


def exact(
    snap: Snapshot,
    rq: F32,
    top_k: int,
    dims: int,
    dtype: quantize.RescoreDtype,
    records: Records,
    conditions: Sequence[Condition] = (),
) -> Ranked:
    """Exact float search over every visible row's rescore vector (reads them all: for evaluation
    and for measuring recall). Rows are decoded ``EXACT_CHUNK`` (and ``EXACT_CHUNK_BYTES`` of float32)
    at a time and each query keeps a running top-k, so memory stays bounded at any collection size
    and width; ties go to the lower position."""
    view = snap.view
    visible = view.live_mask()
    fmask = snap.filters.mask(list(conditions), view.n)
    if fmask is not None:
        visible &= fmask
    positions = np.flatnonzero(visible).astype(np.int64)
    nq = rq.shape[0]
    m = min(top_k, len(positions))
    best_pos = np.empty((nq, 0), np.int64)
    best_score = np.empty((nq, 0), np.float32)
    rows = max(1, min(EXACT_CHUNK, EXACT_CHUNK_BYTES // (4 * dims)))
    for start in range(0, len(positions), rows):
        pos = positions[start : start + rows]
        vecs = quantize.decode_rescore(records(view.rowids_of(pos)), dims, dtype)
        cand_pos = np.concatenate([best_pos, np.broadcast_to(pos, (nq, len(pos)))], axis=1)
        cand_score = np.concatenate([best_score, rq @ vecs.T], axis=1)
        keep = min(m, cand_pos.shape[1])
        if keep < cand_pos.shape[1]:
            # a superset of the top `keep` (every row tied with the k-th kept), then ordered exactly
            kth = -np.partition(-cand_score, keep - 1, axis=1)[:, keep - 1 : keep]
            width = int((cand_score >= kth).sum(axis=1).max())
            idx = np.argpartition(-cand_score, min(width, cand_pos.shape[1]) - 1, axis=1)[:, :width]
            cand_pos = np.take_along_axis(cand_pos, idx, axis=1)
            cand_score = np.take_along_axis(cand_score, idx, axis=1)
        order = np.lexsort((cand_pos, -cand_score), axis=1)[:, :keep]
        best_pos = np.take_along_axis(cand_pos, order, axis=1)
        best_score = np.take_along_axis(cand_score, order, axis=1)
    out_pos, out_score = best_pos[:, :m], best_score[:, :m].astype(np.float32)
    out_rows = view.rowids_of(out_pos.ravel()).reshape(nq, m)
    return Ranked(out_pos, out_rows, out_score, np.full((nq, m), -1, np.int32))
