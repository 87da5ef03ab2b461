"""Latency modes (issue 12) through a real server: gRPC ``Latency`` and the HTTP ``latency`` /
``latency_mode`` words pick the embedding queue's lane (FAST inputs are computed before queued SLOW
ones) and, for searches, the sizes (SLOW / high: 4x the default float reads and shortlist).

Order is asserted from the queue (the fake model holds its first batch; every later call is queued
before it is released, and ``max_batch`` 1 makes each input its own batch), never from timings.
Sizes are read from the engine's ``search_sizes`` (what each search was planned with).
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from zeroentropy import ZeroEntropy

from tests.fakes import FakeEmbedder, FakeServer
from zembed.service.batcher import Latency
from zembed.service.engine import SearchSizes
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

MODEL = "fake/embedder"


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def row(model: FakeEmbedder, text: str, input_type: str | None = None) -> tuple[int, ...]:
    """The token ids the server computes for ``text`` (what ``model.seen`` records)."""
    ids, _ = model.text.encode_counted([text], input_type)
    return tuple(ids[0])


def positions(model: FakeEmbedder, texts: list[str], input_type: str | None = None) -> list[int]:
    seen = {r: i for i, r in enumerate(model.seen)}
    return [seen[row(model, t, input_type)] for t in texts]


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[FakeServer, FakeEmbedder]]:
    model = FakeEmbedder()
    with FakeServer(tmp_path, model=model, max_batch=1, http_port=0) as srv:
        yield srv, model


def grown(before: SearchSizes, after: SearchSizes) -> SearchSizes:
    """What the searches between two readings of ``engine.search_sizes`` added."""
    return SearchSizes(*(getattr(after, f.name) - getattr(before, f.name) for f in fields(SearchSizes)))


def sdk(srv: FakeServer) -> ZeroEntropy:
    assert srv.running.http is not None
    url = f"http://127.0.0.1:{srv.running.http.port}/v1"
    return ZeroEntropy(api_key="unused-token-xxxxxxxx", base_url=url, max_retries=0)


def hold_worker(srv: FakeServer, model: FakeEmbedder, start: Callable[[], Any]) -> None:
    """Hold the inference worker: ``start`` submits a call whose batch the model then blocks in."""
    model.hold = threading.Event()
    start()
    assert model.entered.wait(10)
    wait_for(lambda: srv.running.engine.batcher.depth == 0, "the blocker to be taken")


def test_grpc_fast_embeds_overtake_a_queue_of_slow_ones(held: tuple[FakeServer, FakeEmbedder]) -> None:
    srv, model = held
    batcher = srv.running.engine.batcher
    with grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.EmbeddingServiceStub(ch)  # type: ignore[no-untyped-call]

        def embed(text: str, latency: int) -> Any:
            return stub.Embed.future(pb.EmbedRequest(inputs=[text], latency=latency))  # type: ignore[arg-type]

        calls: list[Any] = []
        hold_worker(srv, model, lambda: calls.append(embed("blocker", pb.LATENCY_SLOW)))
        slow = [f"slow {i}" for i in range(5)]
        for i, t in enumerate(slow, 1):
            calls.append(embed(t, pb.LATENCY_SLOW))
            wait_for(lambda i=i: batcher.lane_depth(Latency.SLOW) == i, f"{i} slow inputs queued")  # type: ignore[misc]
        fast = {"fast explicit": pb.LATENCY_FAST, "fast unspecified": pb.LATENCY_UNSPECIFIED}
        for i, (t, lat) in enumerate(fast.items(), 1):
            calls.append(embed(t, lat))
            wait_for(lambda i=i: batcher.lane_depth(Latency.FAST) == i, f"{i} fast inputs queued")  # type: ignore[misc]
        port = free_port()
        srv.running.metrics.serve(port, "127.0.0.1")
        queued = scrape(port)  # the lanes as /metrics shows them while the worker is held
        assert 'zembed_lane_queue_depth{lane="slow"} 5.0' in queued
        assert 'zembed_lane_queue_depth{lane="fast"} 2.0' in queued
        assert model.hold is not None
        model.hold.set()
        for c in calls:
            assert len(c.result(timeout=30).embeddings) == 1
    fast_pos, slow_pos = positions(model, list(fast)), positions(model, slow)
    # queued last, computed first (right after the held batch), in their order; the slow ones after
    assert fast_pos == [1, 2] and slow_pos == [3, 4, 5, 6, 7], (fast_pos, slow_pos)
    assert batcher.stats.overtakes == 2 and batcher.stats.forced == 0
    after = scrape(port)
    assert 'zembed_lane_queue_depth{lane="slow"} 0.0' in after
    assert 'zembed_lane_events_total{event="overtake"} 2.0' in after
    assert 'zembed_lane_events_total{event="forced"} 0.0' in after
    assert f'zembed_lane_inputs_total{{lane="fast"}} {float(batcher.stats.fast_items)}' in after
    assert f'zembed_lane_inputs_total{{lane="slow"}} {float(batcher.stats.slow_items)}' in after
    assert batcher.stats.slow_items >= 6  # the blocker and the five queued slow inputs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body: bytes = resp.read()
    return body.decode().splitlines()


def test_grpc_latency_is_checked_and_slow_search_plans_4x(held: tuple[FakeServer, FakeEmbedder]) -> None:
    srv, _ = held
    engine = srv.running.engine
    with grpc.insecure_channel(srv.target) as ch:
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        emb = pb_grpc.EmbeddingServiceStub(ch)  # type: ignore[no-untyped-call]
        search.CreateCollection(pb.CreateCollectionRequest(name="docs"))
        docs = [pb.Document(id=f"d{i}", text=f"document number {i} about topic {i % 7}") for i in range(500)]
        for s in (0, 250):
            search.Upsert(pb.UpsertRequest(collection="docs", documents=docs[s : s + 250]))

        def sizes(latency: int) -> tuple[SearchSizes, int]:
            before, slow_before = replace(engine.search_sizes), engine.batcher.stats.slow_items
            r = search.Search(
                pb.SearchRequest(collection="docs", text="topic 3", top_k=3, latency=latency)  # type: ignore[arg-type]
            )
            assert len(r.hits) == 3
            return grown(before, engine.search_sizes), engine.batcher.stats.slow_items - slow_before

        for lat in (pb.LATENCY_UNSPECIFIED, pb.LATENCY_FAST):
            assert sizes(lat) == (SearchSizes(1, 0, 120, 12), 0)  # defaults: 4 x top_k, 10 x reads
        assert sizes(pb.LATENCY_SLOW) == (SearchSizes(1, 1, 480, 48), 1)  # 4x; the query ran SLOW

        bad: list[tuple[Any, Any]] = [
            (search.Search, pb.SearchRequest(collection="docs", text="x", latency=7)),  # type: ignore[arg-type]
            (emb.Embed, pb.EmbedRequest(inputs=["x"], latency=7)),  # type: ignore[arg-type]
        ]
        for method, request in bad:
            with pytest.raises(grpc.RpcError) as err:
                method(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "latency" in (err.value.details() or "") and "given 7" in (err.value.details() or "")


def test_http_fast_embeds_overtake_slow_ones_and_unset_latency_runs_fast(
    held: tuple[FakeServer, FakeEmbedder],
) -> None:
    srv, model = held
    batcher = srv.running.engine.batcher
    ze = sdk(srv)
    errors: list[BaseException] = []

    def call(text: str, latency: Any) -> threading.Thread:
        def run() -> None:
            try:
                kw = {} if latency is None else {"latency": latency}
                ze.models.embed(input=text, input_type="query", model=MODEL, **kw)
            except BaseException as exc:  # reported below
                errors.append(exc)

        t = threading.Thread(target=run)
        t.start()
        return t

    threads = []
    hold_worker(srv, model, lambda: threads.append(call("blocker", "slow")))
    slow = [f"slow {i}" for i in range(3)]
    for i, t in enumerate(slow, 1):
        threads.append(call(t, "slow"))
        wait_for(lambda i=i: batcher.lane_depth(Latency.SLOW) == i, f"{i} slow inputs queued")  # type: ignore[misc]
    fast = {"fast explicit": "fast", "fast unset": None}
    for i, (t, lat) in enumerate(fast.items(), 1):
        threads.append(call(t, lat))
        wait_for(lambda i=i: batcher.lane_depth(Latency.FAST) == i, f"{i} fast inputs queued")  # type: ignore[misc]
    assert model.hold is not None
    model.hold.set()
    for th in threads:
        th.join(30)
    assert not errors, errors
    assert positions(model, list(fast), "query") == [1, 2]
    assert positions(model, slow, "query") == [3, 4, 5]


def test_http_latency_mode_high_searches_the_larger_shortlist(held: tuple[FakeServer, FakeEmbedder]) -> None:
    srv, _ = held
    engine = srv.running.engine
    ze = sdk(srv)
    ze.collections.add(collection_name="papers")
    for i in range(30):
        ze.documents.add(
            collection_name="papers",
            path=f"p{i}",
            content={"type": "text-pages", "pages": [f"paper {i} page one", f"paper {i} on topic {i % 4}"]},
        )

    def run(kind: str, mode: Any) -> tuple[SearchSizes, int]:
        before, slow_before = replace(engine.search_sizes), engine.batcher.stats.slow_items
        kw = {} if mode is None else {"latency_mode": mode}
        if kind == "documents":
            r: Any = ze.queries.top_documents(collection_name="papers", query="topic 2", k=2, **kw)
        elif kind == "pages":
            r = ze.queries.top_pages(collection_name="papers", query="topic 2", k=2, **kw)
        else:  # the SDK has no latency_mode here: the server's extension, sent as an extra field
            r = ze.queries.top_snippets(
                collection_name="papers", query="topic 2", k=2, extra_body={} if mode is None else kw
            )
        assert len(r.results) == 2
        return grown(before, engine.search_sizes), engine.batcher.stats.slow_items - slow_before

    # the measured recall behind the sizes: over HTTP (an extension path) as over gRPC GetCollection
    info = httpx.post(
        f"{ze.base_url}collections/get-collection-info", json={"collection_name": "papers"}
    ).json()
    with grpc.insecure_channel(srv.target) as ch:
        got = pb_grpc.SearchServiceStub(ch).GetCollection(pb.GetCollectionRequest(name="papers")).collection  # type: ignore[no-untyped-call]
    assert info["num_passages"] == got.count == 60 and info["calibrated_at"] == got.calibrated_at > 0
    assert info["measured_recall"] == pytest.approx(got.measured_recall) and 0 < info["measured_recall"] <= 1
    points = [(p.float_reads_per_result, p.shortlist_per_read) for p in got.recall_points]
    assert [(p["float_reads_per_result"], p["shortlist_per_read"]) for p in info["recall_points"]] == points
    assert [p["recall"] for p in info["recall_points"]] == pytest.approx(
        [p.recall for p in got.recall_points]
    )
    assert len(points) == 20
    missing = httpx.post(f"{ze.base_url}collections/get-collection-info", json={"collection_name": "nope"})
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]

    for kind in ("documents", "pages", "snippets"):
        low, low_slow = run(kind, None)
        assert run(kind, "low") == (low, low_slow)
        high, high_slow = run(kind, "high")
        assert low.searches == high.searches == 1 and (low.high_recall, high.high_recall) == (0, 1)
        assert high.float_reads == 4 * low.float_reads, (kind, low, high)
        # the shortlist is capped at the 60 passages held: 4 x 14 reads -> 60; 16 x 14 -> 224
        assert high.shortlist > low.shortlist if kind != "snippets" else high.shortlist == low.shortlist == 60
        assert (low_slow, high_slow) == (0, 1)  # the high query was embedded in the SLOW lane
