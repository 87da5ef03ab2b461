"""Review tests for issue #8's recall re-measurement over a real server (FakeServer: real gRPC on
loopback, real LMDB in a temp dir): the background re-measurement against a Calibrate RPC running at
the same time, collections it cannot measure, and a server stopped while it runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.fakes import FakeServer
from zembed.store import calibrate as calibration
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
FAILED = "measuring its recall table again failed"


def _docs(batch: int) -> list[pb.Document]:
    return [
        pb.Document(id=f"t{batch}-{i}", text=f"text {i} of batch {batch} about {i % 7}") for i in range(100)
    ]


def _grow(search: Any, cfg: pb.CollectionConfig, batches: int) -> None:
    search.CreateCollection(pb.CreateCollectionRequest(name="c", config=cfg))
    for b in range(batches):
        search.Upsert(pb.UpsertRequest(collection="c", documents=_docs(b)), timeout=60)


def test_a_calibrate_rpc_during_a_background_measurement_is_not_overwritten_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write starts a background re-measurement with stored rows (slow on a large collection); the
    user's Calibrate with workload sample texts meanwhile must be the table that stays (the one
    recall_target should trust), not be overwritten when the background one finishes later."""
    real = calibration.measure_by_search
    entered, release = threading.Event(), threading.Event()
    calls = []

    def held(search: Any, truth: Any, stop: Any = None) -> Any:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:  # the background measurement: held until released
            entered.set()
            release.wait(60)
        return real(search, truth, stop)

    monkeypatch.setattr(calibration, "measure_by_search", held)
    with FakeServer(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        _grow(search, pb.CollectionConfig(code_bits=64, rescore_dims=64, calibration_sample=100), 2)
        assert entered.wait(30), "no background measurement started at 2x growth"
        result: dict[str, Any] = {}

        def calibrate() -> None:
            texts = [f"a question about {i}" for i in range(20)]
            try:
                result["got"] = search.Calibrate(
                    pb.CalibrateRequest(name="c", sample_texts=texts), timeout=60
                )
            except grpc.RpcError as exc:
                result["error"] = exc

        caller = threading.Thread(target=calibrate)
        caller.start()
        caller.join(3.0)  # before the fix it finished here, while the background one was held
        release.set()
        caller.join(60)
        assert "error" not in result, result.get("error")
        assert result["got"].collection.measured_with_samples
        deadline = time.monotonic() + 30
        while len(calls) < 2 or server.running.engine._measuring:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        got = search.GetCollection(pb.GetCollectionRequest(name="c")).collection
        assert got.measured_with_samples and got.measured_at == 200, got


def test_no_background_measurement_where_stored_rows_cannot_be_queries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """code_bits != rescore_dims: Collection.measure needs sample queries, so a background
    re-measurement can only fail; before the fix every write past 2x growth started one and logged
    a warning (every write, forever)."""
    caplog.set_level(logging.INFO, logger="zembed.service.engine")
    with FakeServer(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        _grow(search, pb.CollectionConfig(code_bits=32, rescore_dims=64, calibration_sample=100), 4)
        time.sleep(0.5)
        assert not server.running.engine._measuring
        got = search.GetCollection(pb.GetCollectionRequest(name="c")).collection
        assert got.count == 400 and got.measured_at == 100
    assert not [r for r in caplog.records if FAILED in r.getMessage()]


CHILD = r"""
import sys, threading, time
from pathlib import Path
import grpc
from tests.fakes import FakeServer
from zembed.store import quantize, search as stages
from zembed.v1 import zembed_pb2 as pb, zembed_pb2_grpc as pb_grpc

stages.EXACT_CHUNK = 16  # exact search in many chunks: the measurement holds views into the map
entered, release = threading.Event(), threading.Event()
real = quantize.decode_rescore
def held(*a, **k):
    if threading.current_thread().name.startswith("asyncio") and not entered.is_set():
        import traceback
        if any("exact" in f.name for f in traceback.extract_stack()):
            entered.set()
            release.wait(30)
    return real(*a, **k)
quantize.decode_rescore = held
s = FakeServer(Path(sys.argv[1]))
with grpc.insecure_channel(s.target) as ch:
    r = pb_grpc.SearchServiceStub(ch)
    cfg = pb.CollectionConfig(code_bits=64, rescore_dims=64, calibration_sample=100)
    r.CreateCollection(pb.CreateCollectionRequest(name="c", config=cfg))
    for b in range(2):
        docs = [pb.Document(id=f"t{b}-{i}", text=f"text {i} of {b}") for i in range(100)]
        r.Upsert(pb.UpsertRequest(collection="c", documents=docs), timeout=60)
assert entered.wait(30)
threading.Timer(1.0, release.set).start()  # the measurement goes on while the server stops
s.stop()
time.sleep(2.0)
print("stopped cleanly", flush=True)
"""


def test_stopping_the_server_during_a_background_measurement_does_not_crash(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "stopped cleanly" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_measuring_an_empty_collection_is_refused_and_keeps_the_table(tmp_path: Path) -> None:
    """Sample queries against a collection with no documents left: there is nothing to measure
    recall against. Before the fix an all-zero recall table was stored (GetCollection's
    measured_recall 0.0, measured_at 0) over the real one, and recall_target chose the smallest
    sizes."""
    import numpy as np

    from zembed.store import CollectionConfig, InvalidArgument, RescoreDtype, Store

    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with Store(tmp_path / "s", map_size=64 << 20) as s:
        s.create_collection(
            "e", CollectionConfig(code_bits=16, rescore_dims=16, rescore_dtype=RescoreDtype.FLOAT32)
        )
        c = s.collection("e")
        ids = [f"d{i}" for i in range(300)]
        c.upsert(ids, x)
        before = c.measure(x[:20] + 0.01)
        assert before.measured_recall is not None and before.measured_recall > 0
        c.delete(ids)
        with pytest.raises(InvalidArgument, match=r"sample_queries.*no document"):
            c.measure(x[:20] + 0.01)
        after = c.info()
        assert after.tuning == before.tuning and after.measured_at == before.measured_at


def test_exact_search_decodes_a_bounded_number_of_bytes_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ground truth of every measurement reads every rescore vector: the rows decoded at once
    are bounded in bytes (EXACT_CHUNK_BYTES of float32), not only in rows. Before the fix 65,536
    rows of a 1280-dim collection were 335 MB of float32 at once in a background task."""
    import numpy as np

    from zembed.store import CollectionConfig, RescoreDtype, Store, quantize
    from zembed.store import search as stages

    monkeypatch.setattr(stages, "EXACT_CHUNK_BYTES", 64 * 512 * 4)  # 64 rows of 512 float32
    seen: list[int] = []
    real = quantize.decode_rescore

    def counted(bufs: Any, dims: int, dtype: Any) -> Any:
        out = real(bufs, dims, dtype)
        seen.append(int(out.shape[0]) * dims * 4)
        return out

    monkeypatch.setattr(quantize, "decode_rescore", counted)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1000, 512)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with Store(tmp_path / "s", map_size=256 << 20) as s:
        s.create_collection(
            "b", CollectionConfig(code_bits=64, rescore_dims=512, rescore_dtype=RescoreDtype.FLOAT32)
        )
        c = s.collection("b")
        c.upsert([f"d{i:04d}" for i in range(1000)], x[:, :64], x)
        seen.clear()
        got = c.exact_search(x[:3], top_k=5)
    assert seen and max(seen) <= 64 * 512 * 4 and sum(seen) == 1000 * 512 * 4
    want = np.argsort(-(x[:3] @ x.T), axis=1, kind="stable")[:, :5]
    assert [[h.id for h in hs] for hs in got] == [[f"d{j:04d}" for j in row] for row in want]


def test_a_measurement_refused_by_a_concurrent_recalibration_is_retryable_over_grpc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calibrate(measure_only) while the codes are recalibrated (a collecting collection recalibrates
    as writes double it): the store refuses the measurement (WouldBlock, "call again"). Before the
    fix that reached the client as INTERNAL "see the server log" with an ERROR traceback; it is
    UNAVAILABLE (retry) with the reason, and the recalibration's table is kept."""
    import numpy as np

    with FakeServer(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        _grow(search, pb.CollectionConfig(code_bits=64, rescore_dims=64, calibration_sample=100_000), 2)
        coll = server.running.engine.store.collection("c")
        real = calibration.measure_by_search

        def recalibrating(search_fn: Any, truth: Any, *rest: Any) -> Any:
            out = real(search_fn, truth, *rest)
            rng = np.random.default_rng(1)
            coll.calibrate(rng.standard_normal((10, 64)).astype(np.float32) + 1.0)  # new thresholds
            return out

        monkeypatch.setattr(calibration, "measure_by_search", recalibrating)
        with pytest.raises(grpc.RpcError) as err:
            search.Calibrate(pb.CalibrateRequest(name="c", measure_only=True), timeout=60)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert "recalibrated while it was measured" in str(err.value.details())
        got = search.GetCollection(pb.GetCollectionRequest(name="c")).collection
        assert got.measured_with_samples  # the recalibration's (with its samples), not overwritten
