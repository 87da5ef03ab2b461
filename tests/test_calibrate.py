"""store/calibrate.py with the caller's sample queries (the Calibrate RPC's workload sample): the
simulated two-stage search agrees with a query-by-query brute-force reference, and bad shapes are
refused with the shape expected."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from tests.fakes import FakeServer
from zembed.store import Collection, CollectionConfig, InvalidArgument, RescoreDtype, Store, quantize
from zembed.store import calibrate as calibration
from zembed.store import search as search_stages
from zembed.store.calibrate import GRID, K, calibrate, measure_by_search
from zembed.store.errors import WouldBlock
from zembed.store.params import SearchParams
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

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


def _grown_final_collection(s: Store, x: F32) -> Collection:
    """Final calibration at 200 rows, then grown to len(x)."""
    s.create_collection(
        "g",
        CollectionConfig(
            code_bits=x.shape[1],
            rescore_dims=x.shape[1],
            rescore_dtype=RescoreDtype.FLOAT32,
            calibration_sample=200,
        ),
    )
    c = s.collection("g")
    for i in range(0, len(x), 100):
        c.upsert([f"d{j}" for j in range(i, min(i + 100, len(x)))], x[i : i + 100])
    return c


def _recall_at_defaults(c: Collection, q: F32) -> float:
    got = c.search(q, q, SearchParams(top_k=K))
    truth = c.exact_search(q, top_k=K)
    return float(
        np.mean([len({h.id for h in g} & {h.id for h in t}) / K for g, t in zip(got, truth, strict=True)])
    )


def test_measure_again_when_the_collection_has_outgrown_its_calibration(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    x = unit(rng.normal(size=(3000, 32)).astype(np.float32) / 4 + 1.0)
    with Store(tmp_path / "s", map_size=256 << 20) as s:
        c = _grown_final_collection(s, x)
        before = c.info()
        assert before.calibration_final and before.calibrated_at == 200 and before.measured_at == 200
        with pytest.raises(InvalidArgument, match="already calibrated"):
            c.calibrate()
        after = c.measure()  # stored rows, leave-one-out, on all 3,000
        assert after.measured_at == 3000 and not after.measured_with_samples
        assert after.tuning.points != before.tuning.points
        assert after.thresholds == before.thresholds  # codes untouched
        # workload queries from outside: the recall kept at the defaults is the one the search gets
        q = unit(x[rng.choice(3000, 60, replace=False)] + rng.normal(size=(60, 32)).astype(np.float32) / 6)
        sampled = c.measure(q)
        assert sampled.measured_with_samples
        assert sampled.measured_recall == pytest.approx(_recall_at_defaults(c, q[:128]), abs=1e-9)
        # recall_target now resolves against the new table, and it survives a reopen
        want = sampled.tuning.choose(0.97)
        assert want is not None
        plan = c.plan(SearchParams(top_k=K, recall_target=0.97))
        assert (plan.float_reads, plan.shortlist) == (K * want[0], min(K * want[0] * want[1], 3000))
    with Store(tmp_path / "s", map_size=256 << 20) as s:
        assert s.collection("g").info().tuning == sampled.tuning


def test_measure_needs_samples_where_code_and_rescore_vectors_differ(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = unit(rng.normal(size=(50, 16)).astype(np.float32))
    with Store(tmp_path / "s", map_size=64 << 20) as s:
        s.create_collection(
            "d", CollectionConfig(code_bits=8, rescore_dims=16, rescore_dtype=RescoreDtype.FLOAT32)
        )
        c = s.collection("d")
        c.upsert([f"d{i}" for i in range(50)], x[:, :8], x)
        with pytest.raises(InvalidArgument, match=r"sample_queries.*8 dims.*16 dims"):
            c.measure()
        info = c.measure(unit(x[:5, :8] + 0.1), unit(x[:5] + 0.1))
        assert info.measured_with_samples and info.measured_at == 50


def test_a_recalibration_during_measure_refuses_it_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(4)
    x = unit(rng.normal(size=(300, 16)).astype(np.float32) + 0.5)
    with Store(tmp_path / "s", map_size=64 << 20) as s:
        s.create_collection(
            "r", CollectionConfig(code_bits=16, rescore_dims=16, rescore_dtype=RescoreDtype.FLOAT32)
        )
        c = s.collection("r")
        c.upsert([f"d{i}" for i in range(300)], x)
        real = calibration.measure_by_search

        def racing(search: Any, truth: Any, stop: Any = None) -> Any:
            out = real(search, truth, stop)
            # a writer adds different documents and recalibrates meanwhile (new thresholds)
            c.upsert([f"e{i}" for i in range(100)], unit(x[:100] - 1.0))
            c.calibrate(x[:20] + 0.05)
            return out

        monkeypatch.setattr(calibration, "measure_by_search", racing)
        with pytest.raises(WouldBlock, match="recalibrated while it was measured"):
            c.measure()
        info = c.info()
        assert info.measured_with_samples and info.measured_at == 400  # the calibration's, kept


def test_calibrate_rpc_measures_again_with_workload_samples_over_grpc(tmp_path: Path) -> None:
    """A final collection over gRPC: Calibrate measures again (before: refused), with sample texts or
    vectors; GetCollection shows when and how; bad samples are INVALID_ARGUMENT naming the field."""
    with FakeServer(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        cfg = pb.CollectionConfig(code_bits=64, rescore_dims=64, calibration_sample=100)
        search.CreateCollection(pb.CreateCollectionRequest(name="c", config=cfg))
        docs = [pb.Document(id=f"t{i}", text=f"text number {i} about {i % 7}") for i in range(300)]
        for i in range(0, 300, 100):
            search.Upsert(pb.UpsertRequest(collection="c", documents=docs[i : i + 100]), timeout=60)
        got = search.GetCollection(pb.GetCollectionRequest(name="c")).collection
        assert got.calibration_final and got.calibrated_at == 100 and got.measured_at == 100
        again = search.Calibrate(pb.CalibrateRequest(name="c"), timeout=60).collection
        assert again.measured_at == 300 and not again.measured_with_samples
        assert list(again.config.filterable) == list(got.config.filterable) and again.calibrated_at == 100
        texts = [f"a question about {i}" for i in range(20)]
        by_text = search.Calibrate(pb.CalibrateRequest(name="c", sample_texts=texts), timeout=60).collection
        assert by_text.measured_with_samples and by_text.HasField("measured_recall")
        # the same queries as vectors (what the server embedded) measure the same
        embed = pb_grpc.EmbeddingServiceStub(ch)  # type: ignore[no-untyped-call]
        emb = embed.Embed(
            pb.EmbedRequest(
                inputs=texts, input_type=pb.INPUT_TYPE_QUERY, dimensions=64, encoding=pb.ENCODING_FLOAT_LIST
            )
        )
        vecs = [pb.Vectors(code=list(e.values)) for e in emb.embeddings]
        by_vec = search.Calibrate(pb.CalibrateRequest(name="c", sample_vectors=vecs), timeout=60).collection
        assert by_vec.measured_recall == pytest.approx(by_text.measured_recall, abs=1e-6)
        assert search.GetCollection(pb.GetCollectionRequest(name="c")).collection.measured_with_samples
        bad = (
            (pb.CalibrateRequest(name="c", sample_texts=["x"] * 129), "sample_texts"),
            (pb.CalibrateRequest(name="c", sample_texts=["x"], sample_vectors=vecs[:1]), "sample_vectors"),
            (
                pb.CalibrateRequest(name="c", sample_vectors=[vecs[0], pb.Vectors(code=[1.0] * 8)]),
                "sample_vectors[1]",
            ),
            (pb.CalibrateRequest(name="c", sample_vectors=[pb.Vectors(code=[1.0] * 8)]), "code_queries"),
        )
        for req, field in bad:
            with pytest.raises(grpc.RpcError) as err:
                search.Calibrate(req, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert field in str(err.value.details())
        after = search.GetCollection(pb.GetCollectionRequest(name="c")).collection
        assert after.measured_recall == by_vec.measured_recall  # refused calls changed nothing


def _measured_at_after_growth(tmp_path: Path, **settings: Any) -> list[int]:
    """measured_at as GetCollection reports it after each of three batches of 100 (final at 100),
    waiting up to 60 s for a background measurement to land."""
    seen = []
    with FakeServer(tmp_path, **settings) as server, grpc.insecure_channel(server.target) as ch:
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        cfg = pb.CollectionConfig(code_bits=64, rescore_dims=64, calibration_sample=100)
        search.CreateCollection(pb.CreateCollectionRequest(name="c", config=cfg))
        for b in range(3):
            docs = [
                pb.Document(id=f"t{b}-{i}", text=f"text {i} of batch {b} about {i % 7}") for i in range(100)
            ]
            search.Upsert(pb.UpsertRequest(collection="c", documents=docs), timeout=60)
            deadline = time.monotonic() + 60
            while True:
                got = search.GetCollection(pb.GetCollectionRequest(name="c")).collection
                if (
                    got.measured_at == got.count
                    or time.monotonic() > deadline
                    or not settings.get("remeasure_growth", 2.0)
                ):
                    break
                if got.count < 2 * got.measured_at:
                    break  # not due
                time.sleep(0.05)
            seen.append(got.measured_at)
    return seen


def test_a_grown_collection_is_measured_again_in_the_background(tmp_path: Path) -> None:
    # final at 100; 200 is twice that: measured again at 200; 300 < 2 x 200: not yet
    assert _measured_at_after_growth(tmp_path / "on") == [100, 200, 200]
    assert _measured_at_after_growth(tmp_path / "off", remeasure_growth=0.0) == [100, 100, 100]


@pytest.mark.parametrize("chunk", [7, 64, 65_536])
def test_exact_search_in_chunks_equals_a_full_sort_ties_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Exact search (the ground truth of every recall measurement) keeps a running top-k over
    chunks of rows; any chunk size gives the full sort's answer, ties by position."""
    monkeypatch.setattr(search_stages, "EXACT_CHUNK", chunk)
    rng = np.random.default_rng(8)
    x = unit(rng.normal(size=(300, 16)).astype(np.float32))
    x[100:140] = x[5]  # 41 identical rows: ties across chunk boundaries
    q = np.concatenate([x[5:6], unit(rng.normal(size=(9, 16)).astype(np.float32))])
    with Store(tmp_path / "s", map_size=64 << 20) as s:
        s.create_collection(
            "e", CollectionConfig(code_bits=16, rescore_dims=16, rescore_dtype=RescoreDtype.FLOAT32)
        )
        c = s.collection("e")
        c.upsert([f"d{i:03d}" for i in range(300)], x)
        c.delete(["d007", "d120"])
        got = c.exact_search(q, top_k=50)
    live = [i for i in range(300) if i not in (7, 120)]
    scores = q @ x[live].T
    for qi, hits in enumerate(got):
        want = sorted(range(len(live)), key=lambda j: (-scores[qi, j], j))[:50]
        assert [h.id for h in hits] == [f"d{live[j]:03d}" for j in want]


def test_measure_reads_one_snapshot_while_writes_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The truth (exact search) and every setting's search read the same snapshot: a write that
    commits between them (here: an exact copy of every sample query, which any later read ranks
    first) cannot move the measured recall."""
    rng = np.random.default_rng(21)
    x = unit(rng.normal(size=(1500, 32)).astype(np.float32))
    q = unit(rng.normal(size=(40, 32)).astype(np.float32))
    with Store(tmp_path / "s", map_size=256 << 20) as s:
        s.create_collection("m", CollectionConfig(code_bits=32, rescore_dims=32, calibration_sample=1000))
        c = s.collection("m")
        c.upsert([f"d{i}" for i in range(len(x))], x)
        quiet = c.measure(q)
        real = calibration.measure_by_search
        wrote = []

        def measure_after_a_write(run: Any, truth: Any, stop: Any = None) -> Any:
            def write() -> None:  # another thread, as a writer would be, committed before the search
                c.upsert([f"copy{i}" for i in range(len(q))], q)
                wrote.append(c.count())

            t = threading.Thread(target=write)
            t.start()
            t.join()
            return real(run, truth, stop)

        monkeypatch.setattr(calibration, "measure_by_search", measure_after_a_write)
        busy = c.measure(q)
        assert wrote == [len(x) + len(q)]
    assert busy.measured_recall == quiet.measured_recall and busy.tuning == quiet.tuning
    assert busy.measured_recall is not None and busy.measured_recall < 1.0  # not trivially equal
