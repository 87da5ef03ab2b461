"""The sharded router on loopback: three shard servers and a router (real gRPC servers, real LMDB
stores in temp dirs, the fake embedder), checked against one server holding the union of the shards.

- Search through the router equals Search on the union store (ids and scores, exactly: every search
  here reads and scores every candidate's float vector, so both sides are exact cosine top-k);
  text queries are embedded once by the router and equal the union server's own embedding.
- Writes land on shard_of(id, 3) and nowhere else; a bad document is refused before any shard writes.
- A shard killed mid-query (a child process, SIGKILL) is UNAVAILABLE naming it, within the caller's
  deadline; a shard that hangs past the deadline too; allow_partial answers from the others, marked.
- A shard address naming two replicas is balanced round-robin over both.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeEmbedder, FakeServer, ServerThread, model_dir
from zembed.service import fanout
from zembed.service.config import ConfigError, Settings, add_arguments, from_args
from zembed.service.router import ShardSet
from zembed.store.sharding import shard_of
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
N = 600  # documents
CONFIG = pb.CollectionConfig(code_bits=32, rescore_dims=64, rescore_dtype="float16", filterable=["tag"])
EXACT: dict[str, Any] = {"shortlist": 2000, "float_reads": 2000}  # every float vector read and scored


def unit(n: int, seed: int, dim: int = 64) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def document(doc_id: str, v: np.ndarray, tag: str) -> pb.Document:
    return pb.Document(
        id=doc_id,
        vectors=pb.Vectors(
            code_f32le=v[:32].astype("<f4").tobytes(), rescore_f32le=v.astype("<f4").tobytes()
        ),
        metadata={"tag": pb.MetadataValue(string_value=tag)},
    )


def query(v: np.ndarray, **kw: Any) -> pb.SearchRequest:
    return pb.SearchRequest(
        collection="docs",
        vectors=pb.Vectors(
            code_f32le=v[:32].astype("<f4").tobytes(), rescore_f32le=v.astype("<f4").tobytes()
        ),
        **{**EXACT, **kw},
    )


def detail(err: grpc.RpcError) -> str:
    return str(err.details())


_channels: dict[str, grpc.Channel] = {}


def channel(target: str) -> grpc.Channel:
    if target not in _channels:
        _channels[target] = grpc.insecure_channel(target)
    return _channels[target]


def stub(target: str) -> pb_grpc.SearchServiceStub:
    return pb_grpc.SearchServiceStub(channel(target))


@pytest.fixture(scope="module", autouse=True)
def _close_channels() -> Iterator[None]:
    yield
    for ch in _channels.values():
        ch.close()
    _channels.clear()


def ranked(resp: pb.SearchResponse | pb.SearchStreamResponse) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in resp.hits]


def router_settings(tmp: Path, shards: tuple[str, ...], **kw: Any) -> Settings:
    return Settings(
        model=model_dir(tmp / "router-model"), data=Path(""), host="127.0.0.1", port=0, shards=shards, **kw
    ).validate()


@dataclass
class Cluster:
    shards: list[FakeServer]
    union: FakeServer
    router: ServerThread
    ids: list[str]
    vectors: np.ndarray

    @property
    def r(self) -> pb_grpc.SearchServiceStub:
        return stub(self.router.target)

    @property
    def u(self) -> pb_grpc.SearchServiceStub:
        return stub(self.union.target)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("router")
    shards = [FakeServer(tmp / f"shard{i}") for i in range(3)]
    union = FakeServer(tmp / "union")
    router = ServerThread(router_settings(tmp, tuple(s.target for s in shards)), model=FakeEmbedder())
    try:
        ids = [f"doc-{i}" for i in range(N)]
        x = unit(N, 1)
        r, u = stub(router.target), stub(union.target)
        r.CreateCollection(pb.CreateCollectionRequest(name="docs", config=CONFIG), timeout=30)
        u.CreateCollection(pb.CreateCollectionRequest(name="docs", config=CONFIG), timeout=30)
        for lo in range(0, N, 200):
            docs = [document(ids[i], x[i], f"t{i % 3}") for i in range(lo, lo + 200)]
            assert r.Upsert(pb.UpsertRequest(collection="docs", documents=docs), timeout=30).upserted == 200
            u.Upsert(pb.UpsertRequest(collection="docs", documents=docs), timeout=30)
        yield Cluster(shards, union, router, ids, x)
    finally:
        router.stop()
        union.stop()
        for s in shards:
            s.stop()


# ---------------------------------------------------------------------------------- results
def test_search_equals_one_store_holding_the_union(cluster: Cluster) -> None:
    q = unit(25, 2)
    for i, v in enumerate(q):
        for kw in (
            {"top_k": 10},
            {
                "top_k": 37,
                "filter": [pb.Condition(field="tag", any_of=[pb.MetadataValue(string_value="t1")])],
            },
        ):
            got = cluster.r.Search(query(v, **kw), timeout=30)
            want = cluster.u.Search(query(v, **kw), timeout=30)
            assert ranked(got) == ranked(want), (i, kw)
            assert len(got.hits) == kw["top_k"] and not got.partial and not got.missing_shards
            assert {h.id for h in got.hits} <= set(cluster.ids)
    # the hits come from every shard, so the merge is really exercised
    shards_hit = {
        shard_of(h.id, 3) for v in q[:5] for h in cluster.r.Search(query(v, top_k=30), timeout=30).hits
    }
    assert shards_hit == {0, 1, 2}


def test_text_query_is_embedded_once_by_the_router_and_matches(cluster: Cluster) -> None:
    for text in ("binary codes", "a query about sharding", "z" * 300):
        req = pb.SearchRequest(collection="docs", text=text, top_k=15, shortlist=2000, float_reads=2000)
        got, want = cluster.r.Search(req, timeout=30), cluster.u.Search(req, timeout=30)
        assert ranked(got) == ranked(want)
        assert got.usage.total_tokens == want.usage.total_tokens > 0
    # the shards received vectors, never text: none of them ran its model
    assert all(not s.model.seen for s in cluster.shards)


def test_ties_merge_in_a_deterministic_order() -> None:
    a = pb.Hit(id="b", score=0.5)
    b = pb.Hit(id="a", score=0.5)
    c = pb.Hit(id="c", score=0.75)
    d = pb.Hit(id="a", score=0.5, passage=pb.Passage(index=2))
    merged = fanout.merge_hits([[c, a], [d, b]], 3)
    assert [(h.id, h.score, h.passage.index) for h in merged] == [
        ("c", 0.75, 0),
        ("a", 0.5, 0),
        ("a", 0.5, 2),
    ]
    assert fanout.merge_hits([[d, b], [c, a]], 10) == fanout.merge_hits([[c, a], [d, b]], 10)


def test_writes_land_on_their_shard_and_reads_route_back(cluster: Cluster) -> None:
    for s, server in enumerate(cluster.shards):
        mine = [i for i in cluster.ids if shard_of(i, 3) == s]
        got = stub(server.target).GetDocuments(
            pb.GetDocumentsRequest(collection="docs", ids=cluster.ids), timeout=30
        )
        assert [d.id for d in got.documents if d.found] == mine
        info = stub(server.target).GetCollection(pb.GetCollectionRequest(name="docs"), timeout=30)
        assert info.collection.count == len(mine) > 0
    merged = cluster.r.GetCollection(pb.GetCollectionRequest(name="docs"), timeout=30).collection
    assert merged.count == N and merged.config.code_bits == 32
    ask = ["doc-5", "missing", "doc-599", "doc-0", "doc-5"]
    got = cluster.r.GetDocuments(
        pb.GetDocumentsRequest(collection="docs", ids=ask, include_vectors=True), timeout=30
    )
    assert [(d.id, d.found) for d in got.documents] == [(i, i != "missing") for i in ask]
    assert got.documents[0].metadata["tag"].string_value == "t2"
    np.testing.assert_allclose(got.documents[0].rescore, cluster.vectors[5], atol=1e-3)


def test_a_bad_document_is_refused_before_any_shard_writes(cluster: Cluster) -> None:
    v = unit(3, 9)
    docs = [document(f"new-{i}", v[i], "t0") for i in range(3)]
    assert len({shard_of(d.id, 3) for d in docs}) > 1
    docs[2].vectors.code_f32le = v[2][:31].astype("<f4").tobytes()
    with pytest.raises(grpc.RpcError) as err:
        cluster.r.Upsert(pb.UpsertRequest(collection="docs", documents=docs), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "documents[2].vectors.code" in detail(err.value) and "32" in detail(err.value)
    got = cluster.r.GetDocuments(
        pb.GetDocumentsRequest(collection="docs", ids=[d.id for d in docs]), timeout=30
    )
    assert not any(d.found for d in got.documents)
    with pytest.raises(grpc.RpcError) as err:
        cluster.r.Search(pb.SearchRequest(collection="docs", text="x", top_k=0), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in detail(err.value)
    with pytest.raises(grpc.RpcError) as err:  # every shard says NOT_FOUND: passed on as one server's
        cluster.r.Search(pb.SearchRequest(collection="nope", text="x"), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "shard" not in detail(err.value)


def test_upsert_stream_and_delete_route_by_id(cluster: Cluster) -> None:
    v = unit(6, 11)
    docs = [document(f"s-{i}", v[i], "t0") for i in range(6)]
    docs[3].vectors.rescore_f32le = b"\0" * 12  # 3 floats: refused, alone
    acks = list(
        cluster.r.UpsertStream(iter([pb.UpsertStreamRequest(collection="docs", documents=docs)]), timeout=30)
    )
    assert len(acks) == 1 and acks[0].stored == 5
    assert [s.code for s in acks[0].statuses] == [0, 0, 0, grpc.StatusCode.INVALID_ARGUMENT.value[0], 0, 0]
    assert "documents[3].vectors.rescore" in acks[0].statuses[3].message  # its place in the message
    for d in docs:
        on = stub(cluster.shards[shard_of(d.id, 3)].target)
        found = (
            on.GetDocuments(pb.GetDocumentsRequest(collection="docs", ids=[d.id]), timeout=30)
            .documents[0]
            .found
        )
        assert found == (d.id != "s-3")
    with pytest.raises(grpc.RpcError) as err:  # refused whole at the router, as one store refuses it
        cluster.r.DeleteDocuments(pb.DeleteDocumentsRequest(collection="docs", ids=["s-0", ""]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ids[1]" in detail(err.value)
    deleted = cluster.r.DeleteDocuments(
        pb.DeleteDocumentsRequest(collection="docs", ids=[d.id for d in docs]), timeout=30
    )
    assert deleted.deleted == 5
    assert cluster.r.GetCollection(pb.GetCollectionRequest(name="docs"), timeout=30).collection.count == N


def test_search_stream_through_the_router(cluster: Cluster) -> None:
    q = unit(4, 3)
    reqs = [pb.SearchStreamRequest(id=str(i), search=query(v, top_k=5)) for i, v in enumerate(q)]
    got = {r.id: r for r in cluster.r.SearchStream(iter(reqs), timeout=30)}
    for i, v in enumerate(q):
        assert got[str(i)].status.code == 0
        assert [(h.id, h.score) for h in got[str(i)].hits] == ranked(
            cluster.u.Search(query(v, top_k=5), timeout=30)
        )


def test_collection_admin_goes_to_every_shard(cluster: Cluster) -> None:
    r = cluster.r
    r.CreateCollection(pb.CreateCollectionRequest(name="other", config=CONFIG), timeout=30)
    for s in cluster.shards:
        names = [
            c.name
            for c in stub(s.target).ListCollections(pb.ListCollectionsRequest(), timeout=30).collections
        ]
        assert names == ["docs", "other"]
    page = r.ListCollections(pb.ListCollectionsRequest(page_size=1), timeout=30)
    assert [c.name for c in page.collections] == ["docs"] and page.collections[0].count == N
    assert page.next_page_token == "docs"
    page = r.ListCollections(pb.ListCollectionsRequest(page_size=1, page_token="docs"), timeout=30)
    assert [c.name for c in page.collections] == ["other"] and page.next_page_token == ""
    with pytest.raises(grpc.RpcError) as err:
        r.CreateCollection(pb.CreateCollectionRequest(name="other", config=CONFIG), timeout=30)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    r.DeleteCollection(pb.DeleteCollectionRequest(name="other"), timeout=30)
    for s in cluster.shards:
        assert len(stub(s.target).ListCollections(pb.ListCollectionsRequest(), timeout=30).collections) == 1
    with pytest.raises(grpc.RpcError) as err:
        r.DeleteCollection(pb.DeleteCollectionRequest(name="other"), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_update_calibrate_snapshot_and_embed_through_the_router(cluster: Cluster) -> None:
    r = cluster.r
    got = r.UpdateCollection(pb.UpdateCollectionRequest(name="docs", add_filterable=["kind"]), timeout=30)
    assert "kind" in got.collection.config.filterable and got.collection.count == N
    for s in cluster.shards:
        info = stub(s.target).GetCollection(pb.GetCollectionRequest(name="docs"), timeout=30).collection
        assert "kind" in info.config.filterable
    calibrated = r.Calibrate(pb.CalibrateRequest(name="docs"), timeout=60).collection
    assert calibrated.calibrated and calibrated.count == N
    snap = r.Snapshot(pb.SnapshotRequest(name="routed"), timeout=60)
    lines = snap.path.splitlines()
    assert len(lines) == 3 and snap.size_bytes > 0
    for i, (line, s) in enumerate(zip(lines, cluster.shards, strict=True)):
        assert line.startswith(f"shard {i} ({s.target}): ")
        assert (s.settings.data / "snapshots" / "routed").is_dir()
    with pytest.raises(grpc.RpcError) as err:  # taken on every shard: passed on as one server's error
        r.Snapshot(pb.SnapshotRequest(name="routed"), timeout=60)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # the router serves embeddings with its own model
    emb = pb_grpc.EmbeddingServiceStub(channel(cluster.router.target))
    out = emb.Embed(pb.EmbedRequest(inputs=["hello"], dimensions=32), timeout=30)
    assert out.dimensions == 32 and len(out.embeddings[0].data) == 32 * 4


def test_the_router_presents_its_token_to_the_shards(tmp_path: Path) -> None:
    token, other = "t" * 20, "o" * 20
    shard = FakeServer(tmp_path / "s", token=token)
    good = ServerThread(router_settings(tmp_path / "g", (shard.target,), token=token), model=FakeEmbedder())
    bad = ServerThread(router_settings(tmp_path / "b", (shard.target,), token=other), model=FakeEmbedder())
    try:
        meta = (("authorization", f"Bearer {token}"),)
        req = pb.CreateCollectionRequest(name="docs", config=CONFIG)
        with pytest.raises(grpc.RpcError) as err:  # the caller must present the router's token
            stub(good.target).CreateCollection(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stub(good.target).CreateCollection(req, timeout=30, metadata=meta)
        with pytest.raises(
            grpc.RpcError
        ) as err:  # a router whose token the shard refuses: not the caller's fault
            stub(bad.target).GetCollection(
                pb.GetCollectionRequest(name="docs"),
                timeout=30,
                metadata=(("authorization", f"Bearer {other}"),),
            )
        assert err.value.code() == grpc.StatusCode.INTERNAL and "--token" in detail(err.value)
    finally:
        good.stop()
        bad.stop()
        shard.stop()


# ---------------------------------------------------------------------------------- failures
class Child:
    """A shard server in its own process (searches take ``delay`` s), so it can be SIGKILLed."""

    def __init__(self, tmp: Path, delay: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.router_shard_child", str(tmp), str(delay)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("port "), line
        self.target = f"127.0.0.1:{int(line.split()[1])}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture()
def with_child(tmp_path: Path) -> Iterator[tuple[list[FakeServer], Child, ServerThread]]:
    shards = [FakeServer(tmp_path / "a"), FakeServer(tmp_path / "b")]
    child = Child(tmp_path / "c", delay=3.0)
    router = ServerThread(
        router_settings(tmp_path, (shards[0].target, shards[1].target, child.target)), model=FakeEmbedder()
    )
    try:
        r = stub(router.target)
        r.CreateCollection(pb.CreateCollectionRequest(name="docs", config=CONFIG), timeout=30)
        x = unit(90, 4)
        docs = [document(f"d{i}", x[i], "t0") for i in range(90)]
        r.Upsert(pb.UpsertRequest(collection="docs", documents=docs), timeout=30)
        yield shards, child, router
    finally:
        child.kill()
        router.stop()
        for s in shards:
            s.stop()


def test_a_shard_killed_mid_query_is_unavailable_within_the_deadline(
    with_child: tuple[list[FakeServer], Child, ServerThread],
) -> None:
    shards, child, router = with_child
    r = stub(router.target)
    v = unit(1, 5)[0]
    result: dict[str, Any] = {}

    def call() -> None:
        t = time.monotonic()
        try:
            r.Search(query(v), timeout=20)
        except grpc.RpcError as exc:
            result["error"] = exc
        result["seconds"] = time.monotonic() - t

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.0)  # the query waits in the child's 3 s search
    assert caller.is_alive()
    child.kill()
    caller.join(20)
    err = result["error"]
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "shard 2" in detail(err) and child.target in detail(err) and "allow_partial" in detail(err)
    assert result["seconds"] < 3.0  # answered at the kill, not at the deadline (20 s) nor the search's end

    # allow_partial: the other shards' merge, marked, never a silent short list
    got = r.Search(query(v, top_k=10, allow_partial=True), timeout=20)
    assert got.partial and [m.shard for m in got.missing_shards] == [2]
    assert got.missing_shards[0].address == child.target
    assert got.missing_shards[0].status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    want = fanout.merge_hits([stub(s.target).Search(query(v, top_k=10), timeout=20).hits for s in shards], 10)
    assert ranked(got) == [(h.id, h.score) for h in want]
    streamed = list(
        r.SearchStream(
            iter(
                [
                    pb.SearchStreamRequest(id="p", search=query(v, top_k=10, allow_partial=True)),
                    pb.SearchStreamRequest(id="q", search=query(v, top_k=10)),
                ]
            ),
            timeout=20,
        )
    )
    by_id = {m.id: m for m in streamed}
    assert by_id["p"].status.code == 0 and by_id["p"].partial
    assert [m.shard for m in by_id["p"].missing_shards] == [2] and ranked(by_id["p"]) == ranked(got)
    assert (
        by_id["q"].status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        and "shard 2" in by_id["q"].status.message
    )
    # writes routed to the dead shard fail naming it; those for live shards went through
    x = unit(40, 6)
    docs = [document(f"w{i}", x[i], "t0") for i in range(40)]
    with pytest.raises(grpc.RpcError) as err2:
        r.Upsert(pb.UpsertRequest(collection="docs", documents=docs), timeout=20)
    assert err2.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shard 2" in detail(err2.value) and "shards 0, 1 were written" in detail(err2.value)


def test_a_hung_shard_is_unavailable_before_the_callers_deadline(
    with_child: tuple[list[FakeServer], Child, ServerThread],
) -> None:
    router = with_child[2]
    r = stub(router.target)
    t = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        r.Search(query(unit(1, 7)[0]), timeout=1.5)  # the child's search takes 3 s
    took = time.monotonic() - t
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, detail(err.value)
    assert "shard 2" in detail(err.value) and "DEADLINE_EXCEEDED" in detail(err.value)
    assert took < 1.5
    got = r.Search(query(unit(1, 7)[0], allow_partial=True), timeout=1.5)
    assert got.partial and [m.shard for m in got.missing_shards] == [2] and len(got.hits) == 10


# ---------------------------------------------------------------------------------- replicas
def test_replicas_behind_one_address_take_every_write_and_balance_reads(tmp_path: Path) -> None:
    replicas = [FakeServer(tmp_path / f"r{i}") for i in range(2)]
    single = FakeServer(tmp_path / "s1")
    static = "ipv4:" + ";".join(s.target for s in replicas)  # as a DNS name of two pods resolves
    router = ServerThread(router_settings(tmp_path, (static, single.target)), model=FakeEmbedder())
    try:
        r = stub(router.target)
        r.CreateCollection(pb.CreateCollectionRequest(name="docs", config=CONFIG), timeout=30)
        x = unit(50, 8)
        docs = [document(f"d{i}", x[i], "t0") for i in range(50)]
        assert r.Upsert(pb.UpsertRequest(collection="docs", documents=docs), timeout=30).upserted == 50
        mine = [d.id for d in docs if shard_of(d.id, 2) == 0]
        for s in replicas:  # every replica of shard 0 holds all of shard 0's documents, nothing else
            got = stub(s.target).GetDocuments(
                pb.GetDocumentsRequest(collection="docs", ids=[d.id for d in docs])
            )
            assert [d.id for d in got.documents if d.found] == mine
        deleted = r.DeleteDocuments(pb.DeleteDocumentsRequest(collection="docs", ids=mine[:3]), timeout=30)
        assert deleted.deleted == 3
        for s in replicas:
            assert (
                stub(s.target).GetCollection(pb.GetCollectionRequest(name="docs")).collection.count
                == len(mine) - 3
            )
        before = [sum(s.running.engine.searcher.paths.values()) for s in replicas]
        for i in range(20):
            assert len(r.Search(query(x[i]), timeout=30).hits) == 10
        served = [
            sum(s.running.engine.searcher.paths.values()) - b for s, b in zip(replicas, before, strict=True)
        ]
        assert sum(served) == 20 and min(served) >= 5, served  # round-robin: about 10 each
        # a replica down: reads go on (the other replica), writes to that shard are refused naming it
        replicas[1].stop()
        for i in range(4):
            assert len(r.Search(query(x[i]), timeout=30).hits) == 10
        with pytest.raises(grpc.RpcError) as err:
            r.Upsert(
                pb.UpsertRequest(
                    collection="docs", documents=[docs[i] for i in range(50) if docs[i].id in mine[:1]]
                ),
                timeout=30,
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"replica {replicas[1].target}" in detail(err.value) and "shard 0" in detail(err.value)
    finally:
        router.stop()
        single.stop()
        replicas[0].stop()


def test_replicas_of_a_dns_name_are_followed(tmp_path: Path) -> None:
    """A shard named by DNS: writes reach every address the name resolves to now; when the set
    changes (a replica added), the balanced read channel is renewed (gRPC's own resolver would only
    look again after a connection failed)."""
    model = model_dir(tmp_path / "m")
    a = ServerThread(Settings(model=model, data=tmp_path / "a", port=0).validate(), model=FakeEmbedder())
    b = ServerThread(
        Settings(model=model, data=tmp_path / "b", host="127.0.0.2", port=a.port).validate(),
        model=FakeEmbedder(),
    )
    answers = [["127.0.0.1"], ["127.0.0.1", "127.0.0.2"]]
    asked: list[str] = []

    async def resolve(host: str, port: int, type: int = 0) -> list[tuple[Any, ...]]:
        asked.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[min(len(asked), 2) - 1]
        ]

    async def main() -> None:
        shards = ShardSet((f"localhost:{a.port}",), router_settings(tmp_path, ("x:1",)))
        shards.getaddrinfo = resolve
        try:
            assert await shards.replicas(0) == [f"127.0.0.1:{a.port}"]
            first = shards.channels[0]
            await shards.refresh()  # the name now resolves to two replicas
            assert asked == ["localhost", "localhost"]
            assert await shards.replicas(0) == [f"127.0.0.1:{a.port}", f"127.0.0.2:{a.port}"]
            assert shards.channels[0] is not first
            made = await shards.call_replicas(
                0, "CreateCollection", pb.CreateCollectionRequest(name="docs", config=CONFIG), 10
            )
            assert not isinstance(made, fanout.Failure), made
            got = await shards.call(0, "GetCollection", pb.GetCollectionRequest(name="docs"), 10)
            assert not isinstance(got, fanout.Failure) and got.collection.name == "docs"
        finally:
            await shards.close()

    try:
        asyncio.run(main())
        for server in (a, b):  # the admin call reached both replicas
            assert (
                stub(server.target)
                .GetCollection(pb.GetCollectionRequest(name="docs"), timeout=10)
                .collection.name
                == "docs"
            )
    finally:
        a.stop()
        b.stop()


# ---------------------------------------------------------------------------------- settings
def test_router_settings(tmp_path: Path) -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    model = str(model_dir(tmp_path / "m"))
    s = from_args(p.parse_args(["--model", model, "--shards", "a:1, b:2,c:3"]), environ={})
    assert s.shard_addresses() == ("a:1", "b:2", "c:3")
    f = tmp_path / "shards.txt"
    f.write_text("# shard order is the layout\nzembed-shard-0.zembed-shard-0:50051\nzembed-shard-1:50051\n")
    s = from_args(p.parse_args(["--model", model]), environ={"ZEMBED_SHARDS_FILE": str(f)})
    assert s.shard_addresses() == ("zembed-shard-0.zembed-shard-0:50051", "zembed-shard-1:50051")
    for argv, needle in (
        (["--shards", "a:1,a:1"], "listed twice"),
        (["--shards", "nohost"], "HOST:PORT"),
        (["--shards", "a:1", "--shards-file", str(f)], "give one"),
        (["--shards", "a:1", "--http-port", "0"], "not for a router"),
        (["--shards-file", str(tmp_path / "absent")], "cannot read"),
        (["--shards", "a:1", "--shard-timeout-s", "0"], "shard-timeout-s"),
    ):
        with pytest.raises(ConfigError, match=needle):
            from_args(p.parse_args(["--model", model, *argv]), environ={})
    with pytest.raises(ConfigError, match="--data"):  # a plain server still needs its store
        from_args(p.parse_args(["--model", model]), environ={})
    assert fanout.channel_target("zembed-shard-0:50051") == "dns:///zembed-shard-0:50051"
    assert fanout.channel_target("ipv4:1.2.3.4:5;1.2.3.5:5") == "ipv4:1.2.3.4:5,1.2.3.5:5"


def test_failure_rules() -> None:
    down = fanout.Failure(1, "b:1", grpc.StatusCode.UNAVAILABLE, "connection refused")
    slow = fanout.Failure(2, "c:1", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    bad = fanout.Failure(0, "a:1", grpc.StatusCode.INVALID_ARGUMENT, "`top_k` must be ...")
    assert fanout.search_failure([], 3, False) is None
    assert fanout.search_failure([down], 3, True) is None
    err = fanout.search_failure([down, slow], 3, False)
    assert err is not None and err.code == grpc.StatusCode.UNAVAILABLE and "2 of 3 shards" in str(err)
    every = fanout.search_failure([down, slow, down], 3, True)  # nothing left to answer from
    assert every is not None and every.code == grpc.StatusCode.UNAVAILABLE
    hard = fanout.search_failure([bad, down], 3, True)  # a caller's error is never hidden by partial
    assert hard is not None and hard.code == grpc.StatusCode.INVALID_ARGUMENT and "shard 0" in str(hard)
    same = [fanout.Failure(i, f"{i}:1", grpc.StatusCode.INVALID_ARGUMENT, "x") for i in range(3)]
    assert str(fanout.failure_error(same, 3)) == "x"
    auth = fanout.failure_error([fanout.Failure(0, "a:1", grpc.StatusCode.UNAUTHENTICATED, "no")], 3)
    assert auth.code == grpc.StatusCode.INTERNAL and "--token" in str(auth)
    assert fanout.shard_timeout(1.0, 30) == pytest.approx(0.9)
    assert fanout.shard_timeout(None, 30) == pytest.approx(29.75)
    assert fanout.route(["x", "y", "z", "x"], 1) == {0: [0, 1, 2, 3]}
    assert all(
        shard_of(i, 5) == s
        for s, pos in fanout.route([f"i{k}" for k in range(50)], 5).items()
        for i in [f"i{k}" for k in pos]
    )


def test_zembed_serve_shards_from_the_command_line(tmp_path: Path, tiny_fp32: Path) -> None:
    """The real command (`zembed serve --shards`, no --data) over two shard servers, with a real
    exported model in the router: it serves searches (vectors) and embeddings."""
    shards = [FakeServer(tmp_path / f"s{i}") for i in range(2)]
    cmd = [sys.executable, "-m", "zembed.service.cli", "serve", "--model", str(tiny_fp32), "--port", "0"]
    cmd += ["--shards", ",".join(s.target for s in shards), "--drain-delay-s", "0", "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = 0
        for line in proc.stdout:
            if line.startswith("zembed: serving on port"):
                port = int(line.split()[-1])
                break
        assert port, proc.stderr.read() if proc.stderr else ""
        target = f"127.0.0.1:{port}"
        r = stub(target)
        r.CreateCollection(pb.CreateCollectionRequest(name="docs", config=CONFIG), timeout=60)
        x = unit(40, 12)
        docs = [document(f"c{i}", x[i], "t0") for i in range(40)]
        assert r.Upsert(pb.UpsertRequest(collection="docs", documents=docs), timeout=60).upserted == 40
        counts = [
            stub(s.target).GetCollection(pb.GetCollectionRequest(name="docs")).collection.count
            for s in shards
        ]
        assert sum(counts) == 40 and min(counts) > 0
        got = r.Search(query(x[3], top_k=3), timeout=60)
        assert got.hits[0].id == "c3" and got.hits[0].score == pytest.approx(1.0, abs=1e-3)
        emb = pb_grpc.EmbeddingServiceStub(channel(target)).Embed(
            pb.EmbedRequest(inputs=["hello"]), timeout=60
        )
        assert emb.dimensions > 0 and len(emb.embeddings) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        for s in shards:
            s.stop()
