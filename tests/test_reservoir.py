"""Recent real queries for the background re-measurement (service/reservoir.py): the sample itself,
and through a real server: a grown collection is measured again on the queries it was searched
with (GetCollection's measured_with_samples), also where code and rescore vectors differ (stored
rows cannot stand for queries there, so before this it was never measured again)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeServer
from zembed.service.reservoir import MIN_QUERIES, QueryReservoir
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc


def vec(rng: np.random.Generator, n: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = rng.standard_normal(n).astype(np.float32)
    out: np.ndarray[Any, np.dtype[np.float32]] = v / np.linalg.norm(v)
    return out


def test_sample_is_uniform_bounded_and_starts_over() -> None:
    r = QueryReservoir(size=16, max_collections=2, seed=1)
    rng = np.random.default_rng(0)
    assert r.take("c", 8, 8) is None
    for i in range(MIN_QUERIES - 1):
        r.add("c", np.full(8, float(i), np.float32), None, 8)
    assert r.count("c") == 16 and r.take("c", 8, 8) is None  # fewer than MIN_QUERIES seen: kept
    firsts = []
    for trial in range(200):  # Algorithm R: every one of 100 queries equally likely to be kept
        r = QueryReservoir(size=16, seed=trial)
        for i in range(100):
            r.add("c", np.full(8, float(i), np.float32), None, 8)
        got = r.take("c", 8, 8)
        assert got is not None and got[1] is None and got[0].shape == (16, 8)
        firsts.extend(got[0][:, 0].tolist())
        assert r.take("c", 8, 8) is None  # taken: a new sample starts
    counts = np.bincount(np.array(firsts, dtype=int), minlength=100)
    assert counts.sum() == 3200 and counts.min() > 10 and counts.max() < 60  # mean 32
    # separate rescore vectors: kept beside the codes; a query without one is skipped
    r = QueryReservoir(size=64)
    for _ in range(MIN_QUERIES):
        r.add("d", vec(rng, 8), vec(rng, 16), 16)
        r.add("d", vec(rng, 8), None, 16)
    got = r.take("d", 8, 16)
    assert got is not None and got[0].shape == (MIN_QUERIES, 8)
    assert got[1] is not None and got[1].shape == (MIN_QUERIES, 16)
    # other lengths (the collection was made again): dropped, never measured
    for _ in range(MIN_QUERIES):
        r.add("e", vec(rng, 8), None, 8)
    assert r.take("e", 16, 16) is None and r.count("e") == 0
    # only the most recently searched collections are kept
    r = QueryReservoir(max_collections=2)
    for name in ("a", "b", "c"):
        r.add(name, vec(rng, 8), None, 8)
    assert (r.count("a"), r.count("b"), r.count("c")) == (0, 1, 1)


def _grow_and_measure(tmp_path: Path, code_bits: int, searches: int) -> pb.Collection:
    rng = np.random.default_rng(5)
    with FakeServer(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        s = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        cfg = pb.CollectionConfig(code_bits=code_bits, rescore_dims=64, calibration_sample=100)
        s.CreateCollection(pb.CreateCollectionRequest(name="c", config=cfg))

        def docs(b: int) -> list[pb.Document]:
            out = []
            for i in range(100):
                r = vec(rng, 64)
                v = pb.Vectors(code=r[:code_bits].tolist())
                if code_bits != 64:
                    v.rescore.extend(r.tolist())
                out.append(pb.Document(id=f"b{b}-{i}", vectors=v))
            return out

        s.Upsert(pb.UpsertRequest(collection="c", documents=docs(0)), timeout=60)
        first = s.GetCollection(pb.GetCollectionRequest(name="c")).collection
        assert first.measured_at == 100 and not first.measured_with_samples
        for _ in range(searches):
            q = vec(rng, 64)
            v = pb.Vectors(code=q[:code_bits].tolist())
            if code_bits != 64:
                v.rescore.extend(q.tolist())
            assert len(s.Search(pb.SearchRequest(collection="c", vectors=v, top_k=5)).hits) == 5
        s.Upsert(pb.UpsertRequest(collection="c", documents=docs(1)), timeout=60)  # 200: due
        deadline = time.monotonic() + 60
        while True:
            got: pb.Collection = s.GetCollection(pb.GetCollectionRequest(name="c")).collection
            if got.measured_at == 200 or time.monotonic() > deadline:
                return got
            if code_bits != 64 and searches < MIN_QUERIES and time.monotonic() > deadline - 55:
                return got  # nothing to measure with: it stays as it was
            time.sleep(0.05)


@pytest.mark.parametrize("code_bits", [64, 32])
def test_grown_collection_is_measured_on_recent_queries(tmp_path: Path, code_bits: int) -> None:
    got = _grow_and_measure(tmp_path, code_bits, searches=MIN_QUERIES + 8)
    assert got.measured_at == 200 and got.measured_with_samples
    assert 0.0 < got.measured_recall <= 1.0


def test_too_few_queries_fall_back_to_stored_rows(tmp_path: Path) -> None:
    got = _grow_and_measure(tmp_path / "same", 64, searches=3)
    assert got.measured_at == 200 and not got.measured_with_samples
    got = _grow_and_measure(tmp_path / "split", 32, searches=3)  # rows cannot be queries: not measured
    assert got.measured_at == 100 and not got.measured_with_samples


def test_a_dropped_collection_forgets_its_queries(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    with FakeServer(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        s = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        s.CreateCollection(pb.CreateCollectionRequest(name="c"))
        docs = [pb.Document(id=f"d{i}", vectors=pb.Vectors(code=vec(rng, 64).tolist())) for i in range(20)]
        s.Upsert(pb.UpsertRequest(collection="c", documents=docs))
        for _ in range(5):
            s.Search(pb.SearchRequest(collection="c", vectors=pb.Vectors(code=vec(rng, 64).tolist())))
        sample = server.running.engine.recent_queries
        assert sample.count("c") == 5
        s.DeleteCollection(pb.DeleteCollectionRequest(name="c"))
        assert sample.count("c") == 0
