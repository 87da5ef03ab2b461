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

    GetCollection = Search = Upsert = GetDocuments = DeleteDocuments = _hang


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
