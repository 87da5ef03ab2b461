"""`zembed collections info` shows what the server knows about a collection's retrieval quality and
disk use: the calibration state, the measured recall of the default search and its recall table, and
the bytes in use / allocated / per document (real server on a loopback port, real LMDB)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeServer
from zembed.service import cli
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

DIM = 64  # the fake embedder's dimension


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    with FakeServer(tmp_path) as srv:
        yield srv


def run(capsys: pytest.CaptureFixture[str], server: FakeServer, *argv: str) -> tuple[int, str, str]:
    rc = cli.main([*argv, "--address", server.target])
    out = capsys.readouterr()
    return rc, out.out, out.err


def fill(server: FakeServer, name: str, n: int) -> pb.Collection:
    rng = np.random.default_rng(3)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    with grpc.insecure_channel(server.target) as ch:
        s: Any = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        s.CreateCollection(pb.CreateCollectionRequest(name=name))
        docs = [pb.Document(id=f"d{i}", vectors=pb.Vectors(code=v[i].tolist())) for i in range(n)]
        s.Upsert(pb.UpsertRequest(collection=name, documents=docs))
        resp: pb.CalibrateResponse = s.Calibrate(pb.CalibrateRequest(name=name, measure_only=True))
        return resp.collection


def test_info_shows_measured_recall_and_disk(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, server, "collections", "create", "empty")
    assert rc == 0, err
    rc, out, _ = run(capsys, server, "collections", "info", "empty", "--json")
    info = json.loads(out)
    assert info["measured_recall"] is None and info["recall_points"] == [] and info["count"] == 0
    rc, out, _ = run(capsys, server, "collections", "info", "empty")
    assert "measured_recall:        -" in out

    want = fill(server, "c", 600)
    assert want.HasField("measured_recall")
    rc, out, err = run(capsys, server, "collections", "info", "c", "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["count"] == 600
    assert info["measured_recall"] == pytest.approx(want.measured_recall, abs=1e-4)
    assert 0.0 < info["measured_recall"] <= 1.0 and info["measured_at"] == 600
    assert len(info["recall_points"]) == len(want.recall_points) > 0
    assert info["bytes_in_use"] > 0 and info["bytes_allocated"] > 0
    assert info["bytes_per_document"] == want.bytes_per_document > 0
    rc, out, _ = run(capsys, server, "collections", "info", "c")
    lines = {ln.split(":", 1)[0]: ln.split(":", 1)[1].strip() for ln in out.splitlines()}
    assert float(lines["measured_recall"]) == pytest.approx(want.measured_recall, abs=1e-4)
    first = want.recall_points[0]
    assert lines["recall_points"].startswith(f"{first.float_reads_per_result}x{first.shortlist_per_read}: ")
