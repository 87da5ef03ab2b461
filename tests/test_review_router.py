"""Review tests for the sharded router (issue #13): a shard that hangs must not cost the calls that do
not need it their deadline. Real gRPC servers on loopback (two FakeServer shards with LMDB stores, and
a third shard that accepts calls and never answers in time), the real router in its own thread."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeEmbedder, FakeServer, ServerThread, model_dir
from zembed.service.config import Settings
from zembed.store.sharding import shard_of
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

CONFIG = pb.CollectionConfig(code_bits=32, rescore_dims=64, rescore_dtype="float16")
HANG_S = 6.0


class Hung(pb_grpc.SearchServiceServicer):
    """A shard that takes every call and answers none before HANG_S (a stuck pod)."""

    def _hang(self, request: Any, context: grpc.ServicerContext) -> Any:
        time.sleep(HANG_S)
        context.abort(grpc.StatusCode.UNAVAILABLE, "hung")

    GetCollection = Search = Upsert = GetDocuments = DeleteDocuments = CreateCollection = _hang


def vec_doc(doc_id: str, v: np.ndarray) -> pb.Document:
    return pb.Document(
        id=doc_id,
        vectors=pb.Vectors(
            code_f32le=v[:32].astype("<f4").tobytes(), rescore_f32le=v.astype("<f4").tobytes()
        ),
    )


@pytest.fixture()
def hung_cluster(tmp_path: Path) -> Iterator[tuple[list[FakeServer], ServerThread]]:
    live = [FakeServer(tmp_path / "a"), FakeServer(tmp_path / "b")]
    hung = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_SearchServiceServicer_to_server(Hung(), hung)  # type: ignore[no-untyped-call]
    port = hung.add_insecure_port("127.0.0.1:0")
    hung.start()
    shards = (live[0].target, live[1].target, f"127.0.0.1:{port}")
    settings = Settings(
        model=model_dir(tmp_path / "router-model"), data=Path(""), host="127.0.0.1", port=0, shards=shards
    ).validate()
    router = ServerThread(settings, model=FakeEmbedder())
    try:
        for s in live:  # the collection on the live shards (the hung one never answers)
            with grpc.insecure_channel(s.target) as ch:
                pb_grpc.SearchServiceStub(ch).CreateCollection(  # type: ignore[no-untyped-call]
                    pb.CreateCollectionRequest(name="docs", config=CONFIG), timeout=30
                )
        yield live, router
    finally:
        router.stop()
        hung.stop(None)
        for s in live:
            s.stop()


def test_writes_to_live_shards_and_partial_text_search_do_not_wait_for_a_hung_shard(
    hung_cluster: tuple[list[FakeServer], ServerThread],
) -> None:
    """The router reads a collection's config (for text queries and write checks) from the shards:
    the first shard that answers is enough. Before the fix it waited for every shard, so a hung shard
    took the whole deadline: an Upsert touching only live shards ran past the caller's deadline
    (DEADLINE_EXCEEDED, the write landing after), and a text search with allow_partial left the
    live shards 1 ms and failed as UNAVAILABLE on all three."""
    _, router = hung_cluster
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [i for i in (f"d{j}" for j in range(400)) if shard_of(i, 3) != 2][:60]
    with grpc.insecure_channel(router.target) as ch:
        r = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        t = time.monotonic()
        got = r.Upsert(
            pb.UpsertRequest(collection="docs", documents=[vec_doc(i, x[j]) for j, i in enumerate(ids)]),
            timeout=5.0,
        )
        assert got.upserted == 60 and time.monotonic() - t < 2.5  # not the hung shard's 4.5 s
        router.call(_forget(router, "docs"))  # a cold config cache, as every 30 s
        t = time.monotonic()
        res = r.Search(
            pb.SearchRequest(collection="docs", text="hello", top_k=5, allow_partial=True), timeout=5.0
        )
        assert time.monotonic() - t < 5.0
        assert res.partial and [m.shard for m in res.missing_shards] == [2] and len(res.hits) == 5
        # a write routed to the hung shard: UNAVAILABLE naming it, before the caller's deadline
        bad = next(i for i in (f"h{j}" for j in range(100)) if shard_of(i, 3) == 2)
        t = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            r.Upsert(pb.UpsertRequest(collection="docs", documents=[vec_doc(bad, x[0])]), timeout=4.0)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert "shard 2" in str(err.value.details()) and time.monotonic() - t < 4.0


async def _forget(router: ServerThread, name: str) -> None:
    search = getattr(router.running, "router", None)
    assert search is not None
    search.forget(name)


@pytest.fixture()
def three(tmp_path: Path) -> Iterator[tuple[ServerThread, FakeServer]]:
    """A router over three FakeServer shards, and one FakeServer alone (what the router must match)."""
    live = [FakeServer(tmp_path / f"s{i}") for i in range(3)]
    single = FakeServer(tmp_path / "single")
    settings = Settings(
        model=model_dir(tmp_path / "router-model"),
        data=Path(""),
        host="127.0.0.1",
        port=0,
        shards=tuple(s.target for s in live),
    ).validate()
    router = ServerThread(settings, model=FakeEmbedder())
    try:
        for target in (router.target, single.target):
            with grpc.insecure_channel(target) as ch:
                pb_grpc.SearchServiceStub(ch).CreateCollection(  # type: ignore[no-untyped-call]
                    pb.CreateCollectionRequest(name="docs", config=CONFIG), timeout=30
                )
        yield router, single
    finally:
        router.stop()
        single.stop()
        for s in live:
            s.stop()


def _stream(target: str, reqs: list[pb.UpsertStreamRequest]) -> list[pb.UpsertStreamResponse]:
    with grpc.insecure_channel(target) as ch:
        s = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        return list(s.UpsertStream(iter(reqs), timeout=120))


def _count(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        s = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        return int(s.GetCollection(pb.GetCollectionRequest(name="docs"), timeout=30).collection.count)


def test_upsert_stream_bad_messages_are_answered_as_a_single_server_does(
    three: tuple[ServerThread, FakeServer],
) -> None:
    """Bulk-form messages that a single server refuses whole (``document`` and ``documents`` both
    set; more than 10,000 documents) are refused whole by the router too, writing nothing; before the
    fix the router wrote the lone ``document`` and dropped the list, and wrote an oversized message's
    10,001 documents one call at a time. A single-form ack says ``stored`` like a server's; a bulk
    message with one bad document stores the others and answers a status per document, in order."""
    router, single = three
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10_001, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    docs = [vec_doc(f"d{i}", x[i]) for i in range(10_001)]
    short = pb.Document(id="short", vectors=pb.Vectors(code=[1.0] * 8))
    reqs = [
        pb.UpsertStreamRequest(collection="docs", document=docs[0], documents=docs[1:4]),
        pb.UpsertStreamRequest(collection="docs", documents=docs),
        pb.UpsertStreamRequest(collection="docs", document=docs[5]),
        pb.UpsertStreamRequest(collection="docs", documents=[*docs[10:13], short, *docs[13:16]]),
    ]
    want = _stream(single.target, reqs)
    t = time.monotonic()
    got = _stream(router.target, reqs)
    took = time.monotonic() - t
    assert len(got) == len(want) == 4
    for g, w in zip(got, want, strict=True):
        assert [s.code for s in g.statuses] == [s.code for s in w.statuses]
        assert (g.id, g.status.code, g.stored) == (w.id, w.status.code, w.stored), (g.status, w.status)
    assert got[0].statuses[0].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "document" in got[0].statuses[0].message
    assert "10000" in got[1].status.message or "10,000" in got[1].status.message, got[1].status.message
    assert "documents[3].vectors.code" in got[3].statuses[3].message, got[3].statuses[3].message
    assert _count(router.target) == _count(single.target) == 7
    assert took < 30  # not 10,001 writes one at a time


def test_create_collection_after_a_partial_create(
    hung_cluster: tuple[list[FakeServer], ServerThread],
) -> None:
    """A CreateCollection that reached some shards only: the retry must not answer ALREADY_EXISTS
    while a shard still lacks the collection (before the fix it did: the shards that had it won over
    the one that was down), and it names what is where."""
    _, router = hung_cluster
    with grpc.insecure_channel(router.target) as ch:
        r = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        req = pb.CreateCollectionRequest(name="new", config=CONFIG)
        for attempt in range(2):
            with pytest.raises(grpc.RpcError) as err:
                r.CreateCollection(req, timeout=3.0)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (attempt, err.value.details())
            assert "shard 2" in str(err.value.details())


def test_a_retried_create_finishes_the_job_when_configs_agree(three: tuple[ServerThread, FakeServer]) -> None:
    """Shards 0 and 1 got the collection, shard 2 did not (a partial create): a retry creates it on
    shard 2 and succeeds, as a retried DeleteCollection does; a shard holding it with another config
    is FAILED_PRECONDITION naming that shard (and the shards this call created it on)."""
    router, _ = three
    with grpc.insecure_channel(router.target) as ch:
        r = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        shards = router.settings.shard_addresses()
        for i, cfg in ((0, CONFIG), (1, CONFIG)):
            with grpc.insecure_channel(shards[i]) as sch:
                pb_grpc.SearchServiceStub(sch).CreateCollection(  # type: ignore[no-untyped-call]
                    pb.CreateCollectionRequest(name="half", config=cfg), timeout=30
                )
        got = r.CreateCollection(pb.CreateCollectionRequest(name="half", config=CONFIG), timeout=30)
        assert got.collection.name == "half" and got.collection.config.code_bits == 32
        assert r.GetCollection(pb.GetCollectionRequest(name="half"), timeout=30).collection.name == "half"
        with pytest.raises(grpc.RpcError) as err:  # everywhere already: as a single server says
            r.CreateCollection(pb.CreateCollectionRequest(name="half", config=CONFIG), timeout=30)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        other = pb.CollectionConfig(code_bits=16, rescore_dims=64, rescore_dtype="float16")
        with grpc.insecure_channel(shards[1]) as sch:
            pb_grpc.SearchServiceStub(sch).CreateCollection(  # type: ignore[no-untyped-call]
                pb.CreateCollectionRequest(name="odd", config=other), timeout=30
            )
        with pytest.raises(grpc.RpcError) as err:
            r.CreateCollection(pb.CreateCollectionRequest(name="odd", config=CONFIG), timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
        assert "shard 1" in str(err.value.details())
