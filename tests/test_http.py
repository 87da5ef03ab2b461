"""The HTTP/JSON API through the official clients, unchanged, against a real server on loopback: the
hosted API's SDK (`zeroentropy`) and the `openai` SDK, with base_url pointed at the local server.
Everything is real (uvicorn in the server's event loop, the edge, batcher, engine, LMDB) except the
model: the deterministic fake embedder (tests/fakes.py). Embeddings are compared with gRPC Embed's."""

from __future__ import annotations

import asyncio
import base64
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import grpc
import httpx
import numpy as np
import openai
import pytest
import zeroentropy
from zeroentropy import ZeroEntropy
from zeroentropy._types import SequenceNotStr

from tests.fakes import FakeEmbedder, FakeServer
from zembed.service.http.app import State
from zembed.service.http.documents import PASSAGE_TOKENS
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

TOKEN = "http-test-token-0123456789"
MODEL = "fake/embedder"
LONG = " ".join(f"Sentence {i} talks about subject {i % 11} in some detail." for i in range(120))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    with FakeServer(tmp_path_factory.mktemp("http"), http_port=0, token=TOKEN) as srv:
        yield srv


def base_url(srv: FakeServer) -> str:
    assert srv.running.http is not None
    return f"http://127.0.0.1:{srv.running.http.port}/v1"


@pytest.fixture(scope="module")
def ze(server: FakeServer) -> ZeroEntropy:
    return ZeroEntropy(api_key=TOKEN, base_url=base_url(server), max_retries=0)


@pytest.fixture(scope="module")
def grpc_embed(server: FakeServer) -> Iterator[pb_grpc.EmbeddingServiceStub]:
    ch = grpc.insecure_channel(server.target)
    yield pb_grpc.EmbeddingServiceStub(ch)
    ch.close()


def embed_grpc(stub: pb_grpc.EmbeddingServiceStub, texts: list[str], input_type: Any, dim: int) -> np.ndarray:
    res = stub.Embed(
        pb.EmbedRequest(inputs=texts, input_type=input_type, dimensions=dim, encoding=pb.ENCODING_FLOAT32),
        metadata=[("authorization", f"Bearer {TOKEN}")],
    )
    return np.stack([np.frombuffer(e.data, dtype="<f4") for e in res.embeddings])


# ---------------------------------------------------------------------------- embeddings
@pytest.mark.parametrize("input_type", ["query", "document"])
def test_sdk_embed_float_and_base64_every_dimension_equals_grpc(
    server: FakeServer, ze: ZeroEntropy, grpc_embed: pb_grpc.EmbeddingServiceStub, input_type: str
) -> None:
    texts = ["Der Hund schläft.", "a sleeping dog", "日本語のテキスト"]
    kind = pb.INPUT_TYPE_QUERY if input_type == "query" else pb.INPUT_TYPE_DOCUMENT
    dims = server.model.dims
    assert len(dims) == 3
    for dim in dims:
        want = embed_grpc(grpc_embed, texts, kind, dim)
        r = ze.models.embed(input=texts, input_type=input_type, model=MODEL, dimensions=dim)  # type: ignore[arg-type]
        got = np.array([x.embedding for x in r.results], dtype=np.float32)
        assert got.shape == (3, dim)
        np.testing.assert_array_equal(got, want)
        r64 = ze.models.embed(
            input=texts,
            input_type=input_type,  # type: ignore[arg-type]
            model=MODEL,
            dimensions=dim,
            encoding_format="base64",
        )
        raw = [base64.b64decode(str(x.embedding)) for x in r64.results]
        np.testing.assert_array_equal(np.stack([np.frombuffer(b, dtype="<f4") for b in raw]), want)
        assert r.usage.total_bytes == sum(150 + len(t.encode()) for t in texts)
        assert r.usage.total_tokens > 0
    # one string (not a list), no dimensions: the native size
    one = ze.models.embed(input="a sleeping dog", input_type=input_type, model=MODEL)  # type: ignore[arg-type]
    np.testing.assert_array_equal(
        np.array(one.results[0].embedding, dtype=np.float32),
        embed_grpc(grpc_embed, ["a sleeping dog"], kind, 0)[0],
    )


def test_embed_errors_name_the_field(ze: ZeroEntropy) -> None:
    with pytest.raises(zeroentropy.BadRequestError, match="dimensions must be one of"):
        ze.models.embed(input="x", input_type="query", model=MODEL, dimensions=2560)
    with pytest.raises(zeroentropy.BadRequestError, match="model must name the model this server serves"):
        ze.models.embed(input="x", input_type="query", model="zembed-1")
    with pytest.raises(zeroentropy.BadRequestError, match="input must not be empty"):
        ze.models.embed(input=[], input_type="query", model=MODEL)
    with pytest.raises(zeroentropy.BadRequestError, match="input_type"):
        ze.models.embed(input="x", input_type="passage", model=MODEL)  # type: ignore[arg-type]
    with pytest.raises(zeroentropy.APIStatusError, match="no reranker") as err:
        ze.models.rerank(query="q", documents=["a"], model="zerank-2")
    assert err.value.status_code == 501


def test_openai_sdk_embeddings_equal_grpc(
    server: FakeServer, grpc_embed: pb_grpc.EmbeddingServiceStub
) -> None:
    client = openai.OpenAI(api_key=TOKEN, base_url=base_url(server), max_retries=0)
    texts = ["first text", "second, longer text with more words"]
    want = embed_grpc(grpc_embed, texts, pb.INPUT_TYPE_UNSPECIFIED, 0)
    r = client.embeddings.create(model=MODEL, input=texts)  # the SDK asks for base64 and decodes it
    np.testing.assert_array_equal(np.array([d.embedding for d in r.data], dtype=np.float32), want)
    assert [d.index for d in r.data] == [0, 1] and r.usage.total_tokens > 0
    r = client.embeddings.create(model=MODEL, input="first text", encoding_format="float", dimensions=16)
    np.testing.assert_array_equal(
        np.array(r.data[0].embedding, dtype=np.float32), embed_grpc(grpc_embed, ["first text"], 0, 16)[0]
    )
    assert [m.id for m in client.models.list()] == [MODEL]
    with pytest.raises(openai.BadRequestError, match="token arrays are not supported") as err:
        client.embeddings.create(model=MODEL, input=[[101, 2023, 102]])
    assert err.value.body is not None and "message" in err.value.body  # type: ignore[operator]


# ---------------------------------------------------------------------------- auth, edge, status codes
def test_auth_is_checked_before_the_body_and_in_constant_time(server: FakeServer) -> None:
    url = base_url(server)
    bad = ZeroEntropy(api_key="wrong-token-wrong-token", base_url=url, max_retries=0)
    with pytest.raises(zeroentropy.AuthenticationError, match="invalid bearer token"):
        bad.collections.get_list()
    # an unparsable body without a token is refused for the token (401), never parsed (400)
    r = httpx.post(f"{url}/models/embed", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 401 and "Authorization" in r.json()["detail"]
    r = httpx.post(
        f"{url}/models/embed",
        content=b"{not json",
        headers=[("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")],
    )
    assert r.status_code == 401 and "exactly one" in r.json()["detail"]
    r = httpx.post(f"{url}/models/embed", content=b"{not json", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400  # now it is parsed, and refused as JSON
    r = httpx.post(f"{url}/embeddings", json={"model": MODEL}, headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"  # OpenAI's error shape
    # the OpenAPI document is served (open, like health)
    spec = httpx.get(url.removesuffix("/v1") + "/openapi.json").json()
    for path in (
        "/v1/models/embed",
        "/v1/documents/add-document",
        "/v1/queries/top-snippets",
        "/v1/embeddings",
    ):
        assert path in spec["paths"]
    assert httpx.get(url.removesuffix("/v1") + "/health").json() == {"status": "SERVING"}
    counted = server.running.metrics.requests.labels("HTTP /v1/models/embed", "400")._value.get()
    assert counted >= 1


def test_overload_is_429_for_fast_and_slow_waits(tmp_path: Path) -> None:
    model = FakeEmbedder(max_length=128, delay_per_token_s=2e-5)  # 50,000 tokens/s
    with FakeServer(tmp_path, model=model, http_port=0, max_queue_s=0.01) as srv:
        ze = ZeroEntropy(api_key="unused-token-xxxxxxxx", base_url=base_url(srv), max_retries=0)
        model.hold = threading.Event()
        texts = ["x" * 600] * 8  # ~128 tokens each
        results: dict[str, object] = {}

        def call(name: str, latency: Literal["fast", "slow"]) -> None:
            try:
                results[name] = ze.models.embed(
                    input=texts, input_type="document", model=MODEL, latency=latency
                )
            except Exception as exc:
                results[name] = exc

        first = threading.Thread(target=call, args=("first", "fast"))
        first.start()
        assert model.entered.wait(10)  # the worker holds the first batch
        second = threading.Thread(target=call, args=("second", "fast"))  # queued (an empty queue admits)
        second.start()
        deadline = time.monotonic() + 10
        while srv.running.engine.batcher.depth == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(zeroentropy.RateLimitError, match="embedding queue is full") as err:
            ze.models.embed(input=texts, input_type="document", model=MODEL, latency="fast")
        assert err.value.response.headers["retry-after"] == "1"
        slow = threading.Thread(target=call, args=("slow", "slow"))  # waits for room instead
        slow.start()
        time.sleep(0.3)
        assert "slow" not in results
        model.hold.set()
        for t in (first, second, slow):
            t.join(30)
        for name in ("first", "second", "slow"):
            assert not isinstance(results[name], Exception), results[name]


def test_draining_health_then_503_and_in_flight_calls_finish(tmp_path: Path) -> None:
    model = FakeEmbedder()
    srv = FakeServer(tmp_path, model=model, http_port=0)
    url = base_url(srv)
    root = url.removesuffix("/v1")
    model.hold = threading.Event()
    with httpx.Client(timeout=30) as client:
        box: dict[str, httpx.Response] = {}
        t = threading.Thread(
            target=lambda: box.setdefault(
                "r",
                client.post(
                    f"{url}/models/embed", json={"input": "x", "input_type": "query", "model": MODEL}
                ),
            )
        )
        t.start()
        assert model.entered.wait(10)
        drain = asyncio.run_coroutine_threadsafe(srv.running.drain(10.0, delay_s=1.0), srv.loop)
        time.sleep(0.3)
        assert httpx.get(f"{root}/health").status_code == 503  # probes see it at once
        state = srv.running.http.state if srv.running.http else None
        assert state is not None and state.draining and not state.refusing  # calls still served
        time.sleep(1.0)
        assert refusing(state)
        model.hold.set()
        t.join(30)
        assert box["r"].status_code == 200  # the in-flight call finished within the grace period
        drain.result(30)
    srv.loop.call_soon_threadsafe(srv.loop.stop)
    srv.thread.join(10)
    if not srv.thread.is_alive():
        srv.loop.close()


def refusing(state: State) -> bool:
    return state.refusing


# ---------------------------------------------------------------------------- collections, documents
def test_collections(ze: ZeroEntropy) -> None:
    ze.collections.add(collection_name="coll-a")
    with pytest.raises(zeroentropy.ConflictError, match="already exists"):
        ze.collections.add(collection_name="coll-a")
    assert "coll-a" in ze.collections.get_list().collection_names
    with pytest.raises(zeroentropy.BadRequestError, match="collection_name"):
        ze.collections.add(collection_name="Has Spaces")
    ze.collections.delete(collection_name="coll-a")
    assert "coll-a" not in ze.collections.get_list().collection_names
    with pytest.raises(zeroentropy.NotFoundError):
        ze.collections.delete(collection_name="coll-a")


def test_documents_add_overwrite_conflict_update_delete_info_and_cursor(ze: ZeroEntropy) -> None:
    ze.collections.add(collection_name="docs")
    ze.documents.add(
        collection_name="docs",
        path="a.txt",
        content={"type": "text", "text": "first version"},
        metadata={"lang": "en"},
    )
    with pytest.raises(zeroentropy.ConflictError, match="already exists"):
        ze.documents.add(collection_name="docs", path="a.txt", content={"type": "text", "text": "other"})
    info = ze.documents.get_info(collection_name="docs", path="a.txt", include_content=True).document
    assert (
        info.content == "first version" and info.metadata == {"lang": "en"} and info.index_status == "indexed"
    )
    ze.documents.add(
        collection_name="docs",
        path="a.txt",
        content={"type": "text", "text": LONG},
        metadata={"lang": "de"},
        overwrite=True,
    )
    info = ze.documents.get_info(collection_name="docs", path="a.txt", include_content=True).document
    assert info.content == LONG and info.metadata == {"lang": "de"} and info.size == len(LONG.encode())
    # overwrite with a short text again: the long version's surplus passages are gone
    ze.documents.add(
        collection_name="docs", path="a.txt", content={"type": "text", "text": "short"}, overwrite=True
    )
    snippets = ze.queries.top_snippets(collection_name="docs", query="subject", k=128).results
    assert [s.content for s in snippets if s.path == "a.txt"] == ["short"]
    before = ze.documents.get_info(collection_name="docs", path="a.txt").document
    ze.documents.update(
        collection_name="docs", path="a.txt", metadata={"lang": "fr", "list:tags": ["x", "y"]}
    )
    info = ze.documents.get_info(collection_name="docs", path="a.txt", include_content=True).document
    assert (info.id, info.to_dict()["created_at"]) == (
        before.id,
        before.to_dict()["created_at"],
    )  # update keeps the document
    assert info.metadata == {"lang": "fr", "list:tags": ["x", "y"]} and info.content == "short"
    with pytest.raises(zeroentropy.NotFoundError):
        ze.documents.update(collection_name="docs", path="missing.txt", metadata={})
    with pytest.raises(zeroentropy.BadRequestError, match="needs a `list:` key prefix"):
        ze.documents.add(
            collection_name="docs",
            path="b.txt",
            content={"type": "text", "text": "t"},
            metadata={"tags": ["x"]},
        )
    with pytest.raises(zeroentropy.BadRequestError, match="does not parse or OCR"):
        ze.documents.add(
            collection_name="docs", path="b.pdf", content={"type": "auto", "base64_data": "JVBERi0="}
        )
    with pytest.raises(zeroentropy.NotFoundError):
        ze.documents.add(collection_name="nope", path="b.txt", content={"type": "text", "text": "t"})
    # info list with the cursor (path_gt), paged by the SDK; path_prefix
    paths = [f"dir/{i:02d}.txt" for i in range(7)]
    for p in reversed(paths):
        ze.documents.add(collection_name="docs", path=p, content={"type": "text", "text": f"text {p}"})
    listed = [d.path for d in ze.documents.get_info_list(collection_name="docs", limit=2)]
    assert listed == sorted(["a.txt", *paths])
    first_page = ze.documents.get_info_list(collection_name="docs", limit=3, path_prefix="dir/")
    assert [d.path for d in first_page.documents] == paths[:3]
    nxt = ze.documents.get_info_list(collection_name="docs", limit=3, path_prefix="dir/", path_gt=paths[2])
    assert [d.path for d in nxt.documents] == paths[3:6]
    # delete one and several; missing -> 404
    assert ze.documents.delete(collection_name="docs", path=paths[0]).deleted_paths == [paths[0]]
    assert ze.documents.delete(collection_name="docs", path=[paths[1], "nope"]).deleted_paths == [paths[1]]
    with pytest.raises(zeroentropy.NotFoundError):
        ze.documents.delete(collection_name="docs", path=paths[0])
    with pytest.raises(zeroentropy.NotFoundError):
        ze.documents.get_info(collection_name="docs", path=paths[0])
    status = ze.status.get_status(collection_name="docs")
    assert status.num_documents == status.num_indexed_documents == 6 and status.num_failed_documents == 0
    assert status.num_indexed_bytes == len(b"short") + sum(len(f"text {p}".encode()) for p in paths[2:])


def test_top_documents_with_filters(ze: ZeroEntropy) -> None:
    ze.collections.add(collection_name="filtered")
    docs: dict[str, dict[str, str | SequenceNotStr[str]]] = {
        "en-1": {"lang": "en", "list:tags": ["a", "b"]},
        "en-2": {"lang": "en", "list:tags": ["c"]},
        "de-1": {"lang": "de", "list:tags": ["a"]},
        "fr-1": {"lang": "fr"},
    }
    for path, meta in docs.items():
        ze.documents.add(
            collection_name="filtered",
            path=path,
            content={"type": "text", "text": f"doc {path}"},
            metadata=meta,
        )

    def top(flt: dict[str, object] | None, k: int = 10) -> set[str]:
        r = ze.queries.top_documents(
            collection_name="filtered", query="doc", k=k, filter=flt, include_metadata=True
        )
        for x in r.results:
            assert x.metadata == docs[x.path]
        return {x.path for x in r.results}

    assert top(None) == set(docs)
    assert top({"lang": {"$eq": "en"}}) == {"en-1", "en-2"}
    assert top({"lang": {"$ne": "en"}}) == {"de-1", "fr-1"}
    assert top({"lang": {"$in": ["de", "fr"]}}) == {"de-1", "fr-1"}
    assert top({"lang": {"$nin": ["de", "fr"]}}) == {"en-1", "en-2"}
    assert top({"list:tags": {"$in": ["a"]}}) == {"en-1", "de-1"}
    assert top({"list:tags": {"$nin": ["a"]}}) == {"en-2", "fr-1"}
    assert top({"$and": [{"lang": {"$eq": "en"}}, {"list:tags": {"$in": ["a"]}}]}) == {"en-1"}
    assert top({"lang": {"$eq": "en"}, "list:tags": {"$in": ["c"]}}) == {"en-2"}
    assert top({"$or": [{"lang": {"$eq": "fr"}}, {"list:tags": {"$in": ["c"]}}]}) == {"fr-1", "en-2"}
    assert top({"lang": {"$eq": "es"}}) == set()
    assert len(top(None, k=2)) == 2
    # filter-only (query null): every match, order undefined
    r = ze.queries.top_documents(collection_name="filtered", query=None, k=10, filter={"lang": {"$eq": "de"}})
    assert [x.path for x in r.results] == ["de-1"]
    with pytest.raises(zeroentropy.BadRequestError, match="not supported by this self-hosted server"):
        top({"lang": {"$gt": "a"}})
    with pytest.raises(zeroentropy.BadRequestError, match="list: attribute"):
        top({"list:tags": {"$eq": "a"}})
    with pytest.raises(zeroentropy.BadRequestError, match="no reranker"):
        ze.queries.top_documents(collection_name="filtered", query="doc", k=1, reranker="zerank-2")
    with pytest.raises(zeroentropy.BadRequestError, match=r"k must be in \[1, 2048\]"):
        ze.queries.top_documents(collection_name="filtered", query="doc", k=0)


def test_top_snippets_on_a_document_longer_than_the_window(server: FakeServer, ze: ZeroEntropy) -> None:
    ze.collections.add(collection_name="long")
    window = server.model.max_length
    tokens = server.model.text.count([LONG], "document")[0]
    assert tokens > 4 * window  # much longer than the model's window
    ze.documents.add(collection_name="long", path="long.txt", content={"type": "text", "text": LONG})
    ze.documents.add(collection_name="long", path="short.txt", content={"type": "text", "text": "subject 3"})
    r = ze.queries.top_snippets(collection_name="long", query="subject 3 in detail", k=128)
    passages = sorted((s for s in r.results if s.path == "long.txt"), key=lambda s: s.start_index)
    assert len(passages) >= 5
    for s in passages:
        assert LONG[s.start_index : s.end_index] == s.content  # offsets are character offsets
        assert server.model.text.count([s.content], "document")[0] <= min(window, PASSAGE_TOKENS)
        assert s.page_span == [0, 1]
    assert passages[0].start_index == 0 and passages[-1].end_index == len(LONG)  # they cover it all
    for a, b in itertools.pairwise(passages):
        assert b.start_index < a.end_index  # consecutive passages overlap
    assert [s.score for s in r.results] == sorted((s.score for s in r.results), reverse=True)
    # a document's score is its best passage's
    best = max(s.score for s in passages)
    docs = ze.queries.top_documents(collection_name="long", query="subject 3 in detail", k=2).results
    assert {d.path: d.score for d in docs}["long.txt"] == pytest.approx(best, abs=1e-6)
    assert {d.path for d in r.document_results} == {"long.txt", "short.txt"}
    # precise responses: ~200 characters, offsets still into the document
    precise = ze.queries.top_snippets(
        collection_name="long", query="subject 3 in detail", k=5, precise_responses=True
    )
    assert precise.results
    for s in precise.results:
        text = LONG if s.path == "long.txt" else "subject 3"
        assert len(s.content) <= 200 and text[s.start_index : s.end_index] == s.content


def test_pages_map_to_page_spans_and_top_pages(ze: ZeroEntropy) -> None:
    ze.collections.add(collection_name="paged")
    pages = ["The first page.", "", LONG, "The last page about cats."]
    ze.documents.add(collection_name="paged", path="book", content={"type": "text-pages", "pages": pages})
    info = ze.documents.get_info(collection_name="paged", path="book", include_content=True).document
    assert info.num_pages == 4 and info.content == "\n".join(pages)
    r = ze.queries.top_snippets(collection_name="paged", query="cats", k=128)
    text = "\n".join(pages)
    seen = set()
    for s in r.results:
        assert text[s.start_index : s.end_index] == s.content
        p = s.page_span[0]
        assert s.page_span == [p, p + 1] and s.content in pages[p]
        seen.add(p)
    assert seen == {0, 2, 3}  # the empty page has no passage
    tp = ze.queries.top_pages(collection_name="paged", query="cats", k=4, include_content=True)
    assert {x.page_index for x in tp.results} == {0, 2, 3}
    for x in tp.results:
        assert x.content == pages[x.page_index]
    assert (
        ze.documents.get_page_info(
            collection_name="paged", path="book", page_index=3, include_content=True
        ).page.content
        == pages[3]
    )
    with pytest.raises(zeroentropy.NotFoundError):
        ze.documents.get_page_info(collection_name="paged", path="book", page_index=4)


def test_document_endpoints_refuse_grpc_collections(server: FakeServer, ze: ZeroEntropy) -> None:
    with grpc.insecure_channel(server.target) as ch:
        pb_grpc.SearchServiceStub(ch).CreateCollection(
            pb.CreateCollectionRequest(name="vectors-only"), metadata=[("authorization", f"Bearer {TOKEN}")]
        )
    with pytest.raises(zeroentropy.BadRequestError, match="created over gRPC"):
        ze.documents.add(collection_name="vectors-only", path="x", content={"type": "text", "text": "t"})
    assert "vectors-only" not in ze.collections.get_list().collection_names


def test_http_port_setting_is_off_by_default_and_read_from_flag_or_environment(tmp_path: Path) -> None:
    import argparse

    from tests.fakes import model_dir
    from zembed.service.config import ConfigError, Settings, add_arguments, from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["--model", str(model_dir(tmp_path / "m")), "--data", str(tmp_path / "d")]
    assert Settings(model=tmp_path, data=tmp_path).http_port == -1  # off unless asked for
    assert from_args(p.parse_args(base), environ={}).http_port == -1
    assert from_args(p.parse_args(base), environ={"ZEMBED_HTTP_PORT": "8080"}).http_port == 8080
    assert (
        from_args(p.parse_args([*base, "--http-port", "0"]), environ={"ZEMBED_HTTP_PORT": "8080"}).http_port
        == 0
    )
    with pytest.raises(ConfigError, match="--http-port must be >= -1"):
        from_args(p.parse_args([*base, "--http-port=-2"]), environ={})


def test_an_http_port_in_use_is_a_startup_error(tmp_path: Path) -> None:
    import socket

    from zembed.service.errors import StartupError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot listen for HTTP on 127.0.0.1:{port}"):
            FakeServer(tmp_path, http_port=port)


def test_a_vanished_client_is_cancelled_and_its_inputs_never_computed(tmp_path: Path) -> None:
    model = FakeEmbedder()
    with FakeServer(tmp_path, model=model, http_port=0) as srv:
        url = base_url(srv)
        model.hold = threading.Event()
        body = {"input_type": "query", "model": MODEL}
        first = threading.Thread(
            target=lambda: httpx.post(f"{url}/models/embed", json={**body, "input": "first"}, timeout=30)
        )
        first.start()
        assert model.entered.wait(10)  # the worker holds the first batch
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(f"{url}/models/embed", json={**body, "input": ["gone one", "gone two"]}, timeout=0.5)
        assert srv.running.http is not None
        state = srv.running.http.state
        deadline = time.monotonic() + 10
        while state.disconnected == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.disconnected == 1
        model.hold.set()
        first.join(30)
        stats = srv.running.engine.batcher.stats
        while stats.dropped < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stats.dropped == 2  # the worker found them cancelled in the queue
        gone = {tuple(ids) for ids in model.text.encode_counted(["gone one", "gone two"], "query")[0]}
        assert not gone & set(model.seen)  # never computed
