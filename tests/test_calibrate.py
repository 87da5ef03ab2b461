"""store/calibrate.py with the caller's sample queries (the Calibrate RPC's workload sample): the
simulated two-stage search agrees with a query-by-query brute-force reference, and bad shapes are
refused with the shape expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from zembed.store import CollectionConfig, RescoreDtype, Store, quantize
from zembed.store.calibrate import GRID, K, calibrate, measure_by_search

F32 = npt.NDArray[np.float32]


def unit(x: npt.NDArray[np.floating]) -> F32:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def reference_recall(x: F32, q: F32, model: quantize.CodeModel, reads_per_k: int, per_read: int) -> float:
    """One query at a time: Hamming shortlist (ties by row), refine to the float reads, exact top k."""
    signs = np.where(x > model.thresholds, 1.0, -1.0)
    reads = K * reads_per_k
    shortlist = reads * per_read
    found = 0
    for qq in q:
        qs = np.where(qq > model.thresholds, 1.0, -1.0)
        near = qs @ signs.T
        order = np.lexsort((np.arange(len(x)), -near))[:shortlist]
        if shortlist > reads:
            est = model.refine_weights(qq[None, :])[0] @ signs[order].T
            order = order[np.argsort(-est, kind="stable")[:reads]]
        top = order[np.argsort(-(x[order] @ qq))[:K]]
        truth = np.argsort(-(x @ qq))[:K]
        found += len(set(top.tolist()) & set(truth.tolist()))
    return found / (K * len(q))


def test_sample_queries_are_measured_like_a_search_would_run_them() -> None:
    rng = np.random.default_rng(3)
    shared = rng.normal(size=48).astype(np.float32)
    x = unit(rng.normal(size=(600, 48)).astype(np.float32) / 7 + shared / np.linalg.norm(shared))
    # queries from outside the collection, farther from the documents than stored rows are
    q = unit(x[:40] + rng.normal(size=(40, 48)).astype(np.float32) / 5)
    model, tuning = calibrate(x, queries=q)
    measured = {(r, p): v for r, p, v in tuning.points}
    assert len(measured) == len(GRID)
    for reads, per in ((1, 1), (1, 10), (2, 4), (4, 10)):
        assert measured[(reads, per)] == pytest.approx(reference_recall(x, q, model, reads, per), abs=1e-9)
    # the measurement is of these queries, not of stored rows: it differs from the leave-one-out one
    _, stored = calibrate(x)
    assert [v for *_, v in stored.points] != [v for *_, v in tuning.points]


def test_sample_queries_of_the_wrong_width_are_refused() -> None:
    x = unit(np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32))
    with pytest.raises(ValueError, match=r"sample queries must be \[n, 16\], got \[3, 8\]"):
        calibrate(x, queries=np.ones((3, 8), np.float32))


def test_measuring_by_search_equals_the_simulation_on_a_real_collection(tmp_path: Path) -> None:
    """The same grid measured two ways on a real store: the calibration's matrix simulation (sample
    queries from outside) and running the collection's own search at every grid point."""
    rng = np.random.default_rng(5)
    x = unit(rng.normal(size=(400, 32)).astype(np.float32) + 1.5)
    q = unit(x[:30] + rng.normal(size=(30, 32)).astype(np.float32) / 3)
    with Store(tmp_path / "s", map_size=64 << 20) as s:
        s.create_collection(
            "c", CollectionConfig(code_bits=32, rescore_dims=32, rescore_dtype=RescoreDtype.FLOAT32)
        )
        c = s.collection("c")
        c.upsert([f"d{i}" for i in range(len(x))], x)
        c.calibrate()
        exact = [[h.id for h in hs] for hs in c.exact_search(q, top_k=K)]
        measured = measure_by_search(lambda p: [[h.id for h in hs] for hs in c.search(q, q, p)], exact)
        thresholds = c.info().thresholds
    assert thresholds is not None
    _, simulated = calibrate(x, queries=q)
    # same thresholds (calibrated from every row both times): the same recall at every grid point
    assert [(r, p) for r, p, _ in measured.points] == [(r, p) for r, p, _ in simulated.points]
    for (_, _, a), (_, _, b) in zip(measured.points, simulated.points, strict=True):
        assert a == pytest.approx(b, abs=1e-9)
    assert any(v < 1.0 for *_, v in measured.points)  # the grid is not trivially perfect here
