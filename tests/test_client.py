"""The Python clients (zembed.service.client.Client, zembed.service.aio_client.AsyncClient) against
the real server (tests/fakes.py: real gRPC on loopback, edge, servicers, batcher, LMDB; a
deterministic fake embedder): every RPC, typed results with plain-Python metadata, every encoding,
negated filters, per-item stream statuses, and the client-side refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeServer
from zembed.service.aio_client import AsyncClient
from zembed.service.client import Client, CollectionInfo, Document

TOKEN = "client-test-token-0123456789"
DOCS: list[dict[str, Any]] = [
    {"id": "de-1", "text": "Der Hund schläft.", "metadata": {"lang": "de", "year": 2023, "ok": True}},
    {"id": "de-2", "text": "Die Katze spielt.", "metadata": {"lang": "de", "year": 2024, "ok": False}},
    {"id": "fr-1", "text": "Le chien dort.", "metadata": {"lang": "fr", "year": 2024, "tags": ["a", "b"]}},
    {"id": "en-1", "text": "The dog sleeps.", "metadata": {"lang": "en", "score": 0.5}},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    with FakeServer(tmp_path_factory.mktemp("client"), token=TOKEN) as srv:
        yield srv


@pytest.fixture
def client(server: FakeServer) -> Iterator[Client]:
    with Client(server.target, token=TOKEN) as c:
        yield c


def fresh(c: Client, name: str, **kw: Any) -> CollectionInfo:
    if name in {x.name for x in c.list_collections()}:
        c.delete_collection(name)
    return c.create_collection(name, **kw)


def test_embed_in_every_encoding_agrees_with_float32(client: Client, server: FakeServer) -> None:
    texts = ["hello world", "zweiter Text", "third"]
    f32 = client.embed(texts, input_type="query", dimensions=32)
    assert f32.vectors.shape == (3, 32) and f32.vectors.dtype == np.float32 and len(f32) == 3
    assert f32.dimensions == 32 and f32.encoding == "float32"
    want = server.model.embed(texts, "query", 32)
    np.testing.assert_allclose(f32.vectors, want, rtol=1e-5, atol=1e-6)
    assert f32.tokens == server.model.text.count(texts, "query") and f32.truncated == [False] * 3
    assert f32.usage.total_tokens == sum(f32.tokens)
    assert f32.usage.total_bytes == sum(150 + len(t.encode()) for t in texts)

    f16 = client.embed(texts, input_type="query", dimensions=32, encoding="float16")
    assert f16.vectors.dtype == np.float16
    np.testing.assert_allclose(f16.as_float32(), f32.vectors, atol=1e-3)
    i8 = client.embed(texts, input_type="query", dimensions=32, encoding="int8")
    assert i8.vectors.dtype == np.int8 and i8.scales is not None and i8.scales.shape == (3,)
    np.testing.assert_allclose(i8.as_float32(), f32.vectors, atol=float(i8.scales.max()))
    bits = client.embed(texts, input_type="query", dimensions=32, encoding="binary")
    assert bits.vectors.shape == (3, 4)
    np.testing.assert_array_equal(bits.vectors, np.packbits(f32.vectors > 0, axis=1))
    np.testing.assert_array_equal(bits.as_float32(), np.where(f32.vectors > 0, 1.0, -1.0))
    fl = client.embed(texts, input_type="query", dimensions=32, encoding="float_list")
    np.testing.assert_array_equal(fl.vectors, f32.vectors)
    native = client.embed(["x"])
    assert native.vectors.shape == (1, 64)


def test_embed_stream_statuses_per_item(client: Client) -> None:
    out = {r.id: r for r in client.embed_stream(["first", ("mine", "second"), "", "fourth"], dimensions=16)}
    assert set(out) == {"0", "mine", "2", "3"}
    assert not out["2"].ok and out["2"].code == grpc.StatusCode.INVALID_ARGUMENT
    assert "must not be empty" in out["2"].message and out["2"].vector is None
    one = client.embed(["second"], dimensions=16).vectors[0]
    assert out["mine"].ok and out["mine"].dimensions == 16
    np.testing.assert_allclose(out["mine"].vector, one, rtol=1e-6)  # type: ignore[arg-type]


def test_count_tokens_model_info_health(client: Client, server: FakeServer) -> None:
    assert client.count_tokens(["abcd", "abcdefgh"]) == server.model.text.count(["abcd", "abcdefgh"], None)
    info = client.model_info()
    assert info.model_id == "fake/embedder" and info.dimensions == [64, 32, 16]
    assert info.prompt_names == ["query", "document"] or set(info.prompt_names) == {"query", "document"}
    assert client.health() == "SERVING"
    assert client.health("zembed.v1.SearchService") == "SERVING"
    with Client(server.target) as anonymous:
        assert anonymous.health() == "SERVING"  # probes need no token
        with pytest.raises(grpc.RpcError) as err:
            anonymous.model_info()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_collections_create_get_list_pages_update_calibrate_delete(client: Client) -> None:
    for n in ("coll-a", "coll-b", "coll-c"):
        fresh(client, n, filterable=["lang"])
    made = client.get_collection("coll-b")
    assert made.filterable == ["lang"] and made.count == 0 and made.code_bits == 64
    assert made.rescore_dims == 64 and made.calibration == "auto" and made.model_id == "fake/embedder"
    names = [c.name for c in client.list_collections(page_size=1)]  # one RPC per page
    assert {"coll-a", "coll-b", "coll-c"} <= set(names) and names == sorted(names)
    client.upsert("coll-b", DOCS)
    upd = client.update_collection("coll-b", add_filterable=["year", "ok"])
    assert upd.filterable == ["lang", "year", "ok"] and upd.count == 4
    assert {h.id for h in client.search("coll-b", text="x", filter={"year": 2024})} == {"de-2", "fr-1"}
    cal = client.calibrate("coll-b")
    assert cal.calibrated and cal.calibrated_at == 4
    assert cal.measured_recall is None or 0 <= cal.measured_recall <= 1
    fresh(client, "coll-none", calibration="none")
    client.upsert("coll-none", DOCS[:1])
    with pytest.raises(grpc.RpcError) as err:
        client.calibrate("coll-none")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for n in ("coll-a", "coll-b", "coll-c", "coll-none"):
        client.delete_collection(n)
    with pytest.raises(grpc.RpcError) as err:
        client.get_collection("coll-a")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_upsert_get_documents_delete_with_plain_metadata(client: Client) -> None:
    fresh(client, "docs-crud", filterable=["lang"])
    res = client.upsert("docs-crud", [*DOCS[:3], Document(id="en-1", text="The dog sleeps.", metadata={})])
    assert res.upserted == 4 and res.usage.total_tokens > 0
    got = client.get_documents("docs-crud", ["fr-1", "nope", "de-1"], include_vectors=True)
    assert [(d.id, d.found) for d in got] == [("fr-1", True), ("nope", False), ("de-1", True)]
    assert got[0].metadata == {"lang": "fr", "tags": ["a", "b"], "year": 2024}
    assert got[2].metadata == {"lang": "de", "ok": True, "year": 2023}
    assert got[0].rescore is not None and got[0].rescore.shape == (64,) and len(got[0].code) == 8
    assert abs(float(np.linalg.norm(got[0].rescore)) - 1) < 1e-3
    assert got[1].metadata == {} and got[1].rescore is None
    assert client.delete("docs-crud", ["de-1", "nope"]) == 1
    assert client.get_collection("docs-crud").count == 3
    vec = np.ones(64, dtype=np.float32)
    assert client.upsert("docs-crud", [{"id": "v", "code": vec, "metadata": {"lang": "xx"}}]).upserted == 1
    (top,) = client.search("docs-crud", code=vec, top_k=1)
    assert (top.id, top.hamming, top.metadata, top.passage) == ("v", 0, {"lang": "xx"}, None)
    assert top.score == pytest.approx(1.0, abs=1e-3)


def test_search_filters_including_negations(client: Client) -> None:
    fresh(client, "filters", filterable=["lang", "year", "ok", "tags"])
    client.upsert("filters", DOCS)

    def ids(flt: dict[str, Any]) -> set[str]:
        return {h.id for h in client.search("filters", text="dog", top_k=10, filter=flt)}

    assert ids({"lang": "de"}) == {"de-1", "de-2"}
    assert ids({"lang": ["fr", "en"]}) == {"fr-1", "en-1"}
    assert ids({"lang": {"$in": ["fr", "en"]}}) == {"fr-1", "en-1"}
    assert ids({"lang": {"$eq": "fr"}}) == {"fr-1"}
    assert ids({"lang": {"$ne": "de"}}) == {"fr-1", "en-1"}
    assert ids({"lang": {"$nin": ["de", "fr"]}}) == {"en-1"}
    assert ids({"lang": "de", "year": {"$ne": 2023}}) == {"de-2"}
    assert ids({"ok": True}) == {"de-1"}
    assert ids({"tags": "b"}) == {"fr-1"}
    hits = client.search("filters", text="dog", top_k=2, include_metadata=False, use_rescore=False)
    assert len(hits) == 2 and all(h.metadata == {} for h in hits)
    assert all(h.score == pytest.approx(1 - 2 * h.hamming / 64) for h in hits)
    with pytest.raises(grpc.RpcError) as err:
        client.search("filters", text="dog", filter={"score": "high"})  # not filterable
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "score" in str(err.value.details())


def test_client_side_refusals_name_the_key_and_send_nothing(client: Client) -> None:
    fresh(client, "refusals")
    cases: list[tuple[Any, str]] = [
        (lambda: client.search("refusals", text="x", filter={"lang": {"$gt": 1}}), r"filter.lang: expected"),
        (lambda: client.search("refusals", text="x", filter={"lang": {"$in": "de"}}), r"\$in takes a list"),
        (lambda: client.search("refusals", text="x", filter={"lang": []}), "filter.lang: no values"),
        (lambda: client.search("refusals", filter={"lang": "de"}), "exactly one of `text` or `code`"),
        (lambda: client.upsert("refusals", [{"id": "a", "txt": "typo"}]), r"unknown keys \['txt'\]"),
        (lambda: client.upsert("refusals", [{"id": "a", "text": "t", "code": [1.0]}]), "exactly one"),
        (lambda: client.upsert("refusals", [{"id": 7, "text": "t"}]), "`id` must be a string"),
        (
            lambda: client.upsert("refusals", [{"id": "a", "text": "t", "metadata": {"m": {1}}}]),
            "a.metadata.m",
        ),
        (lambda: client.embed("one string"), "a list of texts"),
        (lambda: client.embed(["x"], encoding="bf16"), "encoding must be one of"),  # type: ignore[arg-type]
        (lambda: client.embed(["x"], input_type="passage"), "input_type must be"),  # type: ignore[arg-type]
        (lambda: client.delete("refusals", "abc"), "a list of ids"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert client.get_collection("refusals").count == 0


@pytest.mark.parametrize("batch", [256, 7, 1])
def test_upsert_stream_acks_in_order_and_a_bad_document_keeps_its_status(client: Client, batch: int) -> None:
    fresh(client, "streamed", filterable=["lang"])
    docs: list[dict[str, Any]] = [
        {"id": f"s{i}", "text": f"streamed {i}", "metadata": {"lang": "de"}} for i in range(50)
    ]
    docs[10] = {"id": "bad", "code": [1.0, 2.0]}  # wrong dimension: the server refuses this one only
    acks = list(client.upsert_stream("streamed", docs, batch=batch))
    assert [a.id for a in acks] == [d["id"] for d in docs]
    assert [a.ok for a in acks].count(False) == 1 and acks[10].code == grpc.StatusCode.INVALID_ARGUMENT
    assert "64" in acks[10].message
    assert client.get_collection("streamed").count == 49

    def with_unconvertible() -> Iterator[dict[str, Any]]:
        yield {"id": "t0", "text": "fine"}
        yield {"id": "t1", "text": "fine too"}
        yield {"id": "t2", "text": "x", "metadata": {"m": object()}}
        yield {"id": "t3", "text": "never sent"}

    seen: list[str] = []
    with pytest.raises(ValueError, match=r"t2\.metadata\.m"):
        for ack in client.upsert_stream("streamed", with_unconvertible(), batch=batch):
            seen.append(ack.id)
    assert seen == ["t0", "t1"]  # what was sent before the bad one is stored and acknowledged
    found = client.get_documents("streamed", ["t0", "t1", "t2", "t3"])
    assert [d.found for d in found] == [True, True, False, False]


def test_search_stream_statuses_per_query(client: Client) -> None:
    fresh(client, "ss", filterable=["lang"])
    client.upsert("ss", DOCS)
    vec = client.embed(["Le chien dort."], input_type="document").vectors[0]
    queries: list[tuple[str, Any]] = [("text", "dog"), ("vec", vec), ("short", np.ones(2, np.float32))]
    out = {r.id: r for r in client.search_stream("ss", queries, top_k=2, filter={"lang": {"$ne": "en"}})}
    assert out["text"].ok and len(out["text"].hits) == 2
    assert all(h.metadata["lang"] != "en" for h in out["text"].hits)
    assert out["vec"].ok and out["vec"].hits[0].id == "fr-1"
    assert out["vec"].hits == client.search("ss", code=vec, top_k=2, filter={"lang": {"$ne": "en"}})
    assert out["short"].code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(TypeError):
        list(client.search_stream("ss", queries, topk=2))


def test_snapshot_writes_a_servable_copy(client: Client, server: FakeServer) -> None:
    fresh(client, "snapped")
    client.upsert("snapped", DOCS)
    snap = client.snapshot("snap-client-test")
    assert Path(snap.path) == server.settings.data / "snapshots" / "snap-client-test"
    assert (Path(snap.path) / "data.mdb").stat().st_size == snap.size_bytes > 0 and snap.seconds >= 0
    with pytest.raises(grpc.RpcError) as err:
        client.snapshot("snap-client-test")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_async_client_gives_the_same_results(client: Client, server: FakeServer) -> None:
    fresh(client, "aio", filterable=["lang"])

    async def run() -> dict[str, Any]:
        async with AsyncClient(server.target, token=TOKEN) as a:
            out: dict[str, Any] = {"health": await a.health(), "info": await a.model_info()}
            out["embed"] = await a.embed(["a", "b"], input_type="query", dimensions=32, encoding="int8")
            out["count"] = await a.count_tokens(["abcd"])
            out["stream"] = [r async for r in a.embed_stream(["x", ""], dimensions=16)]
            out["upsert"] = await a.upsert("aio", DOCS[:2])
            out["acks"] = [r async for r in a.upsert_stream("aio", DOCS[2:])]
            out["search"] = await a.search("aio", text="dog", top_k=3, filter={"lang": {"$nin": ["en"]}})
            out["sstream"] = [r async for r in a.search_stream("aio", [("q", "dog")], top_k=3)]
            out["docs"] = await a.get_documents("aio", ["fr-1"])
            out["update"] = await a.update_collection("aio", add_filterable=["year"])
            out["get"] = await a.get_collection("aio")
            out["list"] = [c.name for c in await a.list_collections(page_size=1)]
            out["calibrate"] = await a.calibrate("aio")
            out["deleted"] = await a.delete("aio", ["en-1"])
            out["snapshot"] = await a.snapshot("")
            await a.create_collection("aio-tmp")
            await a.delete_collection("aio-tmp")
            return out

    got = asyncio.run(run())
    assert got["health"] == "SERVING" and got["info"] == client.model_info()
    want = client.embed(["a", "b"], input_type="query", dimensions=32, encoding="int8")
    np.testing.assert_array_equal(got["embed"].vectors, want.vectors)
    assert got["count"] == client.count_tokens(["abcd"])
    assert sorted((r.id, r.ok) for r in got["stream"]) == [("0", True), ("1", False)]
    assert got["upsert"].upserted == 2 and [a.id for a in got["acks"]] == ["fr-1", "en-1"]
    assert got["search"] == client.search("aio", text="dog", top_k=3, filter={"lang": {"$nin": ["en"]}})
    assert {h.id for h in got["search"]} == {"de-1", "de-2", "fr-1"}
    assert got["sstream"][0].hits[0].id == got["search"][0].id or got["sstream"][0].ok
    assert got["docs"][0].metadata == {"lang": "fr", "tags": ["a", "b"], "year": 2024}
    assert got["update"].filterable == ["lang", "year"] and got["get"].count == 4
    assert "aio" in got["list"] and got["calibrate"].calibrated and got["deleted"] == 1
    assert Path(got["snapshot"].path).name.startswith("snapshot-")
    assert "aio-tmp" not in {c.name for c in client.list_collections()}


def test_async_client_errors_are_grpc_errors(server: FakeServer) -> None:
    async def run() -> grpc.StatusCode:
        async with AsyncClient(server.target, token=TOKEN) as a:
            try:
                await a.get_collection("no-such-collection")
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        raise AssertionError("no error")

    assert asyncio.run(run()) == grpc.StatusCode.NOT_FOUND


def test_address_and_token_default_to_the_command_line_variables(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZEMBED_ADDRESS", server.target)
    monkeypatch.setenv("ZEMBED_TOKEN", TOKEN)
    with Client() as c:
        assert c.target == server.target and c.model_info().model_id == "fake/embedder"
    with Client(token="wrong-token-0123456789") as c, pytest.raises(grpc.RpcError) as err:
        c.model_info()  # an explicit argument beats the variable
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    monkeypatch.delenv("ZEMBED_ADDRESS")
    with Client() as c:
        assert c.target == "localhost:50051"
