"""Fault injection against the service (issue 7): a real gRPC server on a loopback port, the real edge,
batcher, engine and an LMDB store in a temp dir, around a deterministic fake embedder
(:mod:`tests.fakes`) so inference can be held, slowed or failed on demand, and no torch is needed.

Each test fails on the code before the fix; the defect it covers is named in its docstring.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeEmbedder, FakeServer, model_dir
from zembed.service import edge, streams
from zembed.service.config import Settings
from zembed.service.errors import StreamIdle, Undecodable
from zembed.service.metrics import Metrics
from zembed.service.status import status_of
from zembed.store import errors as store_errors
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
BAD_UTF8 = b"\x0a\x03\xff\xfe\xfd"  # field 1 (a string) holding bytes that are not UTF-8
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    with FakeServer(tmp_path, token=TOKEN) as srv:
        yield srv


@pytest.fixture
def channel(server: FakeServer) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(server.target)
    yield ch
    ch.close()


def create(ch: grpc.Channel, name: str = "docs", **config: Any) -> None:
    cfg = pb.CollectionConfig(code_bits=64, rescore_dims=64, **config)
    pb_grpc.SearchServiceStub(ch).CreateCollection(
        pb.CreateCollectionRequest(name=name, config=cfg), metadata=AUTH
    )


def vec_doc(i: int, values: np.ndarray | None = None, **kw: Any) -> pb.Document:
    v = values if values is not None else np.random.default_rng(i).standard_normal(64).astype(np.float32)
    return pb.Document(id=f"d{i}", vectors=pb.Vectors(code_f32le=v.astype("<f4").tobytes()), **kw)


def error_of(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# ---------------------------------------------------------------- 5: streams end on a reader failure
STREAMS = {
    "EmbedStream": (
        "/zembed.v1.EmbeddingService/EmbedStream",
        pb.EmbedStreamRequest(id="ok", input="hello"),
        b"\x0a\x02\xff\xfe",  # id: bad UTF-8
        "zembed.v1.EmbedStreamRequest",
    ),
    "SearchStream": (
        "/zembed.v1.SearchService/SearchStream",
        pb.SearchStreamRequest(id="ok", search=pb.SearchRequest(collection="docs", text="hello")),
        b"\x0a\x02\xff\xfe",
        "zembed.v1.SearchStreamRequest",
    ),
    "UpsertStream": (
        "/zembed.v1.SearchService/UpsertStream",
        pb.UpsertStreamRequest(collection="docs", document=pb.Document(id="ok", text="hello")),
        b"\x0a\x02\xff\xfe",
        "zembed.v1.UpsertStreamRequest",
    ),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_with_an_undecodable_message_ends_with_invalid_argument(
    name: str, server: FakeServer, channel: grpc.Channel
) -> None:
    """Defect 5: one valid message, then bytes that are not a valid message. Before: the reader task
    died, the stream never ended (held until the client's deadline: DEADLINE_EXCEEDED after 10 s).
    After: the valid item is answered and the stream ends with INVALID_ARGUMENT naming the type."""
    create(channel)
    method, good, bad, type_name = STREAMS[name]
    call: Any = channel.stream_stream(method, response_deserializer=lambda b: b)
    got: list[bytes] = []

    def run() -> None:
        for r in call(iter([good.SerializeToString(), bad]), metadata=AUTH, timeout=10):
            got.append(r)

    err = error_of(run)
    assert err.code() == INVALID and type_name in (err.details() or ""), err
    assert len(got) == 1  # the item accepted before the bad message was answered


def test_any_reader_failure_ends_the_stream_after_answering_accepted_items() -> None:
    """Defect 5 (the rule itself): a request iterator that raises anything ends the stream with that
    error, in both stream shapes, after the items accepted before it are answered."""

    async def requests() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise RuntimeError("transport gone")

    async def one(x: int) -> int:
        return x * 10

    async def group(xs: list[int]) -> list[int]:
        return [x * 10 for x in xs]

    async def drain(gen: AsyncIterator[int]) -> tuple[list[int], BaseException | None]:
        out: list[int] = []
        try:
            async with asyncio.timeout(5):
                async for r in gen:
                    out.append(r)
        except Exception as exc:
            return out, exc
        return out, None

    got, exc = asyncio.run(drain(streams.concurrent(requests(), 4, one)))
    assert sorted(got) == [10, 20] and isinstance(exc, RuntimeError)
    got, exc = asyncio.run(drain(streams.grouped(requests(), 4, 8, 0.001, group)))
    assert got == [10, 20] and isinstance(exc, RuntimeError)


def test_idle_stream_is_ended_and_a_busy_one_is_not(tmp_path: Path) -> None:
    """Defect 10 (idle-stream limit): a stream that sends nothing is ended (DEADLINE_EXCEEDED) after
    --stream-idle-s; a stream waiting on its own pending item is not idle. Before: held forever."""
    with FakeServer(tmp_path, stream_idle_s=0.5) as srv, grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.EmbeddingServiceStub(ch)
        quiet = threading.Event()

        def silent() -> Iterator[pb.EmbedStreamRequest]:
            quiet.wait(20)
            yield from ()

        t = time.monotonic()
        err = error_of(lambda: list(stub.EmbedStream(silent(), timeout=20)))
        quiet.set()
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no message for 0.5 s" in (
            err.details() or ""
        )
        assert time.monotonic() - t < 15

        # an item held in inference for longer than the idle limit: the stream stays open
        srv.model.hold = threading.Event()
        done = threading.Event()

        def one_then_wait() -> Iterator[pb.EmbedStreamRequest]:
            yield pb.EmbedStreamRequest(id="slow", input="hello")
            done.wait(20)

        answers = stub.EmbedStream(one_then_wait(), timeout=20)
        assert srv.model.entered.wait(10)
        time.sleep(1.2)  # > idle limit while the item is pending
        srv.model.hold.set()
        first = next(answers)
        done.set()
        assert first.id == "slow" and first.status.code == 0


# ---------------------------------------------------------------- 7: undecodable requests, auth first
HOSTILE = {
    "bad utf-8": BAD_UTF8,
    "lone surrogate": b"\x0a\x03\xed\xa0\x80",
    "truncated": pb.EmbedRequest(inputs=["hello world"]).SerializeToString()[:-3],
    "bad wire type": b"\x0f\x01",
    "1 MB garbage": bytes(np.random.default_rng(1).integers(0, 256, 1 << 20, dtype=np.uint8)),
}


def test_undecodable_requests_are_invalid_argument_naming_the_type(
    server: FakeServer, channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 7: bytes that are not the method's message. Before: UNKNOWN "Unexpected DecodeError"
    with an ERROR traceback per call. After: INVALID_ARGUMENT naming the message type; no ERROR log."""
    caplog.set_level(logging.INFO)
    embed: Any = channel.unary_unary("/zembed.v1.EmbeddingService/Embed")
    upsert: Any = channel.unary_unary("/zembed.v1.SearchService/Upsert")
    for label, data in HOSTILE.items():
        for call, type_name in ((embed, "zembed.v1.EmbedRequest"), (upsert, "zembed.v1.UpsertRequest")):
            err = error_of(lambda c=call, d=data: c(d, metadata=AUTH, timeout=10))
            assert err.code() == INVALID, (label, err)
            assert f"could not be parsed as a {type_name} message" in (err.details() or ""), label
            assert len(err.details() or "") < 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_unauthenticated_calls_are_refused_before_the_body_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 7: garbage without a token. Before: UNKNOWN (parsed first); a 59 MB unauthenticated Upsert
    was fully parsed. After: UNAUTHENTICATED, and no deserializer runs for a refused call."""
    parsed: list[str] = []
    real = edge.safe_deserializer

    def counting(parse: Any, type_name: str) -> Any:
        inner = real(parse, type_name)

        def run(data: bytes) -> Any:
            parsed.append(type_name)
            return inner(data)

        return run

    monkeypatch.setattr(edge, "safe_deserializer", counting)
    with FakeServer(tmp_path, token=TOKEN) as srv, grpc.insecure_channel(srv.target) as ch:
        embed: Any = ch.unary_unary("/zembed.v1.EmbeddingService/Embed")
        err = error_of(lambda: embed(BAD_UTF8, timeout=10))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        big = pb.UpsertRequest(
            collection="docs",
            documents=[
                vec_doc(i, metadata={"t": pb.MetadataValue(string_value="x" * 60_000)}) for i in range(500)
            ],
        )
        stub = pb_grpc.SearchServiceStub(ch)
        err = error_of(lambda: stub.Upsert(big, timeout=30, metadata=(("authorization", "Bearer wrong"),)))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "not valid" in (err.details() or "")
        err = error_of(lambda: list(pb_grpc.EmbeddingServiceStub(ch).EmbedStream(iter([]), timeout=10)))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert parsed == []  # none of the refused calls' bodies was deserialized
        err = error_of(
            lambda: stub.GetCollection(pb.GetCollectionRequest(name="nope"), metadata=AUTH, timeout=10)
        )
        assert err.code() == grpc.StatusCode.NOT_FOUND and parsed == ["zembed.v1.GetCollectionRequest"]


def test_more_than_one_authorization_header_is_refused(server: FakeServer, channel: grpc.Channel) -> None:
    """Defect 10: two `authorization` headers were accepted when the last was right."""
    stub = pb_grpc.EmbeddingServiceStub(channel)
    req = pb.EmbedRequest(inputs=["hello"])
    assert len(stub.Embed(req, metadata=AUTH, timeout=10).embeddings) == 1
    for md in (AUTH + AUTH, (("authorization", "Bearer wrong"), *AUTH)):
        err = error_of(lambda m=md: stub.Embed(req, metadata=m, timeout=10))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "once" in (err.details() or "")


def test_client_error_logging_is_rate_limited(
    server: FakeServer, channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 7: 1,000 undecodable calls wrote 0.76 MB of ERROR tracebacks in 3 s. After: client errors
    log at INFO, at most 5 a second per status (the rest counted), no tracebacks."""
    caplog.set_level(logging.INFO)
    embed: Any = channel.unary_unary("/zembed.v1.EmbeddingService/Embed")
    t = time.monotonic()
    for _ in range(300):
        with pytest.raises(grpc.RpcError):
            embed(BAD_UTF8, metadata=AUTH, timeout=10)
    took = time.monotonic() - t
    records = [r for r in caplog.records if "INVALID_ARGUMENT" in r.getMessage()]
    assert 1 <= len(records) <= 5 * took + 2, (len(records), took)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# ---------------------------------------------------------------- 6: overload and deadlines
def test_overload_is_refused_before_tokenizing_and_the_queue_is_bounded_in_work(tmp_path: Path) -> None:
    """Defect 6: tokenization ran on the event loop before the capacity check and the queue was bounded
    in items (1,024), so refusals were slow and admitted calls waited ~40 s. After: refused calls are
    never tokenized, and the queued work stays within --max-queue-s at the measured rate."""
    model = FakeEmbedder(max_length=128, delay_per_token_s=2e-5)  # 50,000 tokens/s
    with FakeServer(tmp_path, model=model, max_queue_s=0.5) as srv, grpc.insecure_channel(srv.target) as ch:
        batcher = srv.running.engine.batcher
        rate = batcher.rate
        assert rate is not None and 10_000 < rate < 200_000, rate  # calibrated at start
        model.hold = threading.Event()
        stub = pb_grpc.EmbeddingServiceStub(ch)
        long_texts = [f"{i} " + "lorem ipsum dolor sit amet " * 40 for i in range(32)]  # 128 tokens each
        first = stub.Embed.future(pb.EmbedRequest(inputs=long_texts), timeout=60)
        assert model.entered.wait(10)  # the worker holds the first batch
        calls_before = model.text.calls
        futures = [stub.Embed.future(pb.EmbedRequest(inputs=long_texts), timeout=60) for _ in range(40)]
        refused = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = [f for f in futures if f.done()]
            refused = sum(1 for f in done if f.code() == grpc.StatusCode.RESOURCE_EXHAUSTED)
            if len(done) == refused and refused + batcher.depth // 32 >= 40:
                break
            time.sleep(0.01)
        admitted = 40 - refused
        bound = batcher.max_queue_tokens()
        assert refused > 0 and admitted >= 1
        assert admitted * 32 * 128 <= bound + 32 * 128  # the bound, plus at most one call over it
        assert model.text.calls - calls_before == admitted  # refused calls were never tokenized
        assert batcher.queued_tokens <= bound + 32 * 128
        for f in futures:
            if f.done() and f.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert "embedding queue is full" in (f.details() or "")
        model.hold.set()
        assert len(first.result(30).embeddings) == 32
        ok = [f for f in futures if f.code() == grpc.StatusCode.OK]
        assert len(ok) == admitted


def test_long_inputs_are_tokenized_off_the_event_loop(server: FakeServer, channel: grpc.Channel) -> None:
    """Defect 6: tokenization of long inputs ran on the event loop (every other call waited for it)."""
    stub = pb_grpc.EmbeddingServiceStub(channel)
    loop_thread = server.thread.name
    stub.Embed(pb.EmbedRequest(inputs=["short"]), metadata=AUTH, timeout=10)
    assert server.model.text.threads == {loop_thread}  # a short call: inline (a thread hop costs more)
    stub.Embed(pb.EmbedRequest(inputs=["word " * 2000] * 4), metadata=AUTH, timeout=10)
    assert len(server.model.text.threads - {loop_thread}) == 1


def test_callers_deadline_drops_queued_items_uncomputed(server: FakeServer, channel: grpc.Channel) -> None:
    """Defect 6: an item whose caller's deadline has passed is dropped, not computed."""
    stub = pb_grpc.EmbeddingServiceStub(channel)
    server.model.hold = threading.Event()
    blocker = stub.Embed.future(pb.EmbedRequest(inputs=["first"]), metadata=AUTH, timeout=30)
    assert server.model.entered.wait(10)
    # a stream item queued behind the held batch, whose call deadline passes while it waits
    answers = stub.EmbedStream(
        iter([pb.EmbedStreamRequest(id="late", input="too late")]), metadata=AUTH, timeout=0.5
    )
    err = error_of(lambda: list(answers))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    seen_before = len(server.model.seen)
    server.model.hold.set()
    assert len(blocker.result(10).embeddings) == 1
    batcher = server.running.engine.batcher
    t = time.monotonic()
    while batcher.depth and time.monotonic() - t < 10:
        time.sleep(0.01)
    computed = server.model.seen[seen_before:]
    late_ids = server.model.text.encode_counted(["too late"], None)[0][0]
    assert tuple(late_ids) not in computed
    assert batcher.stats.dropped + batcher.stats.expired >= 1


# ---------------------------------------------------------------- 8, 9: limits and echoed values
LONG = "x" * 100_000


def _limit_cases() -> dict[str, tuple[str, Any]]:
    def cfg(name: str, filterable: list[str]) -> pb.CreateCollectionRequest:
        config = pb.CollectionConfig(code_bits=64, rescore_dims=64, filterable=filterable)
        return pb.CreateCollectionRequest(name=name, config=config)

    def upsert(d: pb.Document) -> pb.UpsertRequest:
        return pb.UpsertRequest(collection="docs", documents=[d])

    def search(field: str, values: list[pb.MetadataValue]) -> pb.SearchRequest:
        cond = pb.Condition(field=field, any_of=values)
        return pb.SearchRequest(collection="docs", vectors=pb.Vectors(code=[1.0] * 64), filter=[cond])

    def meta(**kw: Any) -> pb.Document:
        return vec_doc(1, metadata=kw["m"])

    f32 = np.ones(64, "<f4").tobytes()
    return {
        "filterable name of 1 MiB": ("CreateCollection", cfg("c1", ["a" * (1 << 20)])),
        "filterable duplicates": ("CreateCollection", cfg("c2", ["lang", "lang"])),
        "33 filterable names": ("CreateCollection", cfg("c3", [f"f{i}" for i in range(33)])),
        "filterable name not like a name": ("CreateCollection", cfg("c4", ["Lang Name"])),
        "collection name of 100,000 characters": ("CreateCollection", cfg(LONG, [])),
        "id of 300 bytes": ("Upsert", upsert(pb.Document(id="i" * 300, vectors=pb.Vectors(code=[1.0] * 64)))),
        "300 metadata keys": (
            "Upsert",
            upsert(meta(m={f"k{i}": pb.MetadataValue(int_value=i) for i in range(300)})),
        ),
        "metadata key of 100,000 characters": (
            "Upsert",
            upsert(meta(m={LONG: pb.MetadataValue(int_value=1)})),
        ),
        "metadata of 1 MB": ("Upsert", upsert(meta(m={"t": pb.MetadataValue(string_value="y" * 1_000_000)}))),
        "filter of 2,000 values": (
            "Search",
            search("lang", [pb.MetadataValue(int_value=i) for i in range(2000)]),
        ),
        "filter value of 100,000 characters": (
            "Search",
            search("lang", [pb.MetadataValue(string_value=LONG)]),
        ),
        "filter field of 100,000 characters": ("Search", search(LONG, [pb.MetadataValue(int_value=1)])),
        "GetDocuments of 100,000 ids": (
            "GetDocuments",
            pb.GetDocumentsRequest(collection="docs", ids=[f"{i}" for i in range(100_000)]),
        ),
        "code and code_f32le both set": (
            "Upsert",
            upsert(pb.Document(id="both", vectors=pb.Vectors(code=[1.0] * 64, code_f32le=f32))),
        ),
        "GetCollection of a 100,000-character name": ("GetCollection", pb.GetCollectionRequest(name=LONG)),
        "calibration of 10,000 characters": (
            "CreateCollection",
            pb.CreateCollectionRequest(
                name="c5", config=pb.CollectionConfig(code_bits=64, rescore_dims=64, calibration="q" * 10_000)
            ),
        ),
    }


EXPECT = {
    "filterable name of 1 MiB": "filterable[0] must match",
    "filterable duplicates": "filterable[1] repeats 'lang'",
    "33 filterable names": "filterable must hold at most 32 names; given 33",
    "filterable name not like a name": "filterable[0] must match",
    "collection name of 100,000 characters": "name must match",
    "id of 300 bytes": "documents[0].id must be at most 256 UTF-8 bytes; given 300",
    "300 metadata keys": "must hold at most 256 keys; given 300",
    "metadata key of 100,000 characters": "must be at most 256 UTF-8 bytes; given 100000",
    "metadata of 1 MB": "documents[0].metadata must be at most 65536 bytes",
    "filter of 2,000 values": "filter[0].any_of must hold at most 1024 values; given 2000",
    "filter value of 100,000 characters": "filter[0].any_of[0] must be at most 1024 UTF-8 bytes",
    "filter field of 100,000 characters": "filter[0].field must match",
    "GetDocuments of 100,000 ids": "ids must hold at most 1000 ids",
    "code and code_f32le both set": "set one of `code` or `code_f32le`",
    "GetCollection of a 100,000-character name": "name must match",
    "calibration of 10,000 characters": "calibration must be one of",
}


def test_every_string_and_list_is_limited_at_the_edge_and_echoed_at_most_80_characters(
    server: FakeServer, channel: grpc.Channel
) -> None:
    """Defects 8, 9, 10: each case was accepted, or refused with a message echoing the whole value
    (over the client's 16 KiB metadata limit: a transport error). After: INVALID_ARGUMENT naming the
    field and the limit, values clipped to 80 characters, nothing written."""
    create(channel, filterable=["lang"])
    stub = pb_grpc.SearchServiceStub(channel)
    for label, (method, req) in _limit_cases().items():
        t = time.monotonic()
        err = error_of(lambda m=method, r=req: getattr(stub, m)(r, metadata=AUTH, timeout=30))
        took = time.monotonic() - t
        details = err.details() or ""
        assert err.code() == INVALID, (label, err.code(), details[:200])
        assert EXPECT[label] in details, (label, details[:300])
        assert len(details) <= 400, (label, len(details))
        assert took < 10, (label, took)
    names = [c.name for c in stub.ListCollections(pb.ListCollectionsRequest(), metadata=AUTH).collections]
    assert names == ["docs"]
    assert stub.GetCollection(pb.GetCollectionRequest(name="docs"), metadata=AUTH).collection.count == 0


def test_get_documents_answer_never_exceeds_the_message_limit(tmp_path: Path) -> None:
    """Defect 8/10: GetDocuments read every id and then failed on the send limit. After: refused up
    front past 1,000 ids, and an answer that would outgrow the limit is RESOURCE_EXHAUSTED saying so."""
    with FakeServer(tmp_path, max_message_mb=1) as srv, grpc.insecure_channel(srv.target) as ch:
        create(ch)
        stub = pb_grpc.SearchServiceStub(ch)
        docs = [vec_doc(i, metadata={"t": pb.MetadataValue(string_value="z" * 60_000)}) for i in range(20)]
        for i in range(0, 20, 4):
            stub.Upsert(pb.UpsertRequest(collection="docs", documents=docs[i : i + 4]), timeout=30)
        ok = stub.GetDocuments(pb.GetDocumentsRequest(collection="docs", ids=["d0", "d1"]), timeout=30)
        assert [d.found for d in ok.documents] == [True, True]
        err = error_of(
            lambda: stub.GetDocuments(
                pb.GetDocumentsRequest(collection="docs", ids=[f"d{i}" for i in range(20)]), timeout=30
            )
        )
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "ask for fewer ids" in (err.details() or "")


def test_large_and_tiny_finite_vectors_are_accepted(server: FakeServer, channel: grpc.Channel) -> None:
    """Defect 10: 1e30 was refused as "NaN or infinity" and 1e-25 as "the zero vector" (float32
    norms). After: both stored and found, with finite cosine scores."""
    create(channel)
    stub = pb_grpc.SearchServiceStub(channel)
    base = np.random.default_rng(3).standard_normal(64).astype(np.float32)
    base /= np.abs(base).max()  # so 3e38 * base stays finite
    docs = [vec_doc(1, base * np.float32(1e30)), vec_doc(2, base * np.float32(1e-25)), vec_doc(3, -base)]
    assert stub.Upsert(pb.UpsertRequest(collection="docs", documents=docs), metadata=AUTH).upserted == 3
    for scale in (1e30, 1e-25, 3e38, 1e-36):
        q = (base * np.float32(scale)).astype("<f4")
        hits = stub.Search(
            pb.SearchRequest(collection="docs", vectors=pb.Vectors(code_f32le=q.tobytes()), top_k=3),
            metadata=AUTH,
        ).hits
        assert {h.id for h in hits[:2]} == {"d1", "d2"}, scale
        assert all(np.isfinite(h.score) for h in hits) and hits[0].score == pytest.approx(1.0, abs=1e-2)


# ---------------------------------------------------------------- 3: disk full, one table
def test_disk_full_is_resource_exhausted_naming_path_and_free_bytes(
    server: FakeServer, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 3: a failed commit for lack of space answered INTERNAL "internal error (Error)". After
    (the store raises DiskFull): RESOURCE_EXHAUSTED with the path and free bytes, from the one table;
    Locked and Damaged map to FAILED_PRECONDITION."""
    create(channel)
    coll = server.running.engine.store.collection("docs")

    def full(*a: Any, **k: Any) -> int:
        raise store_errors.DiskFull("/data", 4096)

    monkeypatch.setattr(type(coll), "upsert", full)
    err = error_of(
        lambda: pb_grpc.SearchServiceStub(channel).Upsert(
            pb.UpsertRequest(collection="docs", documents=[vec_doc(1)]), metadata=AUTH, timeout=10
        )
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "no space left on the data volume (/data: 4096 bytes free)" in (err.details() or "")
    assert status_of(store_errors.Locked("/d", 42))[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        status_of(store_errors.Damaged("/d/data.mdb", "truncated"))[0] == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert status_of(Undecodable("zembed.v1.X", "bad", 3))[0] == INVALID
    assert status_of(StreamIdle("idle"))[0] == grpc.StatusCode.DEADLINE_EXCEEDED


def test_domain_layers_do_not_import_grpc() -> None:
    """Structure: service/errors.py imported grpc although the engine and batcher said "no gRPC here"."""
    code = (
        "import sys; import zembed.service.errors, zembed.service.batcher, zembed.service.engine, "
        "zembed.service.streams; "
        "print('grpc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------- 10: start-up failures, keepalive
def _serve(tmp: Path, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zembed.service.cli", "serve", "--model", str(model_dir(tmp / "model")),
         "--data", str(data), "--port", "0", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _bad_data_dirs(tmp: Path) -> dict[str, Path]:
    afile = tmp / "a-file"
    afile.write_text("not a directory")
    corrupt = tmp / "corrupt"
    corrupt.mkdir()
    (corrupt / "data.mdb").write_bytes(
        bytes(np.random.default_rng(2).integers(0, 256, 12288, dtype=np.uint8))
    )
    out = {"a regular file": afile, "a corrupt data.mdb": corrupt}
    if os.geteuid() != 0:  # root reads and writes whatever the mode says
        ro = tmp / "read-only"
        ro.mkdir()
        ro.chmod(0o500)
        out["a read-only directory"] = ro
    return out


@pytest.mark.slow
def test_bad_data_directory_exits_2_with_one_line_before_listening(tmp_path: Path) -> None:
    """Defect 10: an unreadable, read-only or corrupt data directory printed "listening on port N",
    then a raw traceback and "Event loop is closed". After: one line naming the directory, exit 2,
    nothing listened. (A read-only directory is checked only when not running as root.)"""
    for label, data in _bad_data_dirs(tmp_path).items():
        proc = _serve(tmp_path, data)
        assert proc.returncode == 2, (label, proc.stdout, proc.stderr)
        lines = [x for x in proc.stderr.splitlines() if not x.startswith('{"level": "INFO"')]
        assert len(lines) == 1 and lines[0].startswith("zembed serve: cannot open the store in"), (
            label,
            lines,
        )
        assert str(data) in lines[0]
        assert "listening" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
        assert "Event loop is closed" not in proc.stderr


@pytest.mark.slow
def test_tls_key_that_does_not_match_the_certificate_is_reported_clearly(tmp_path: Path) -> None:
    """Defect 10: a key/cert mismatch was reported as "Failed to bind to address"."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    for name in ("a", "b"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.pem", "-days", "1", "-subj", "/CN=localhost"],
            cwd=tmp_path, check=True, capture_output=True,
        )  # fmt: skip
    proc = _serve(
        tmp_path,
        tmp_path / "data",
        "--tls-cert",
        str(tmp_path / "a.pem"),
        "--tls-key",
        str(tmp_path / "b.key"),
    )
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if not x.startswith('{"level": "INFO"')]
    assert lines == [
        f"zembed serve: --tls-cert {tmp_path / 'a.pem'} and --tls-key {tmp_path / 'b.key'} cannot be used: "
        "the key does not match the certificate"
    ]


def test_keepalive_and_a_vanished_clients_stream_is_closed(tmp_path: Path) -> None:
    """Defect 10: no keepalive or idle limits. After: keepalive pings find a vanished peer (options
    below); a client killed mid-stream has its stream cancelled and its queued item dropped."""
    from zembed.service.server import SERVER_OPTIONS

    opts = dict(SERVER_OPTIONS)
    assert opts["grpc.keepalive_time_ms"] <= 120_000 and opts["grpc.keepalive_timeout_ms"] <= 30_000
    assert opts["grpc.max_connection_idle_ms"] > 0
    with FakeServer(tmp_path) as srv:
        srv.model.hold = threading.Event()
        client = (
            "import sys, grpc, time\n"
            "from zembed.v1 import zembed_pb2 as pb, zembed_pb2_grpc as g\n"
            f"ch = grpc.insecure_channel('{srv.target}')\n"
            "def reqs():\n"
            "    yield pb.EmbedStreamRequest(id='a', input='first')\n"
            "    time.sleep(0.5)\n"
            "    yield pb.EmbedStreamRequest(id='b', input='queued')\n"
            "    time.sleep(60)\n"
            "it = g.EmbeddingServiceStub(ch).EmbedStream(reqs())\n"
            "print('sent', flush=True)\n"
            "next(it)\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", client], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "sent"
            assert srv.model.entered.wait(10)
            batcher = srv.running.engine.batcher
            t = time.monotonic()
            while batcher.depth < 1 and time.monotonic() - t < 10:
                time.sleep(0.01)
            assert batcher.depth == 1  # the second item waits behind the held batch
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        time.sleep(0.5)  # the kernel closes the socket; gRPC cancels the call
        srv.model.hold.set()
        t = time.monotonic()
        while batcher.stats.dropped < 1 and time.monotonic() - t < 10:
            time.sleep(0.01)
        assert batcher.stats.dropped >= 1  # the vanished client's queued item was not computed


# ---------------------------------------------------------------- 11: metrics
def test_metrics_listen_on_localhost_by_default_and_require_the_token(server: FakeServer) -> None:
    """Defect 11: /metrics was open without the token (every collection's name and count) on the
    service's address. After: 127.0.0.1 by default; with a token set, 401 without it; free space."""
    assert Settings.__dataclass_fields__["metrics_host"].default == "127.0.0.1"
    metrics = server.running.metrics
    port = metrics.serve(0, "127.0.0.1", TOKEN)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
            assert info.value.code == 401
            info.value.close()
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        free = [x for x in text.splitlines() if x.startswith("zembed_data_free_bytes ")]
        assert free and float(free[0].split()[1]) > 0
        assert "zembed_queue_seconds" in text
    finally:
        metrics.close()
    open_metrics = Metrics()
    port = open_metrics.serve(0)  # no token: localhost only, open
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert b"zembed_queue_depth" in resp.read()
    finally:
        open_metrics.close()
