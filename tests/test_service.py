"""The real gRPC server on a loopback port with real exported models and a real LMDB store."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from zembed.service.client import Client, document
from zembed.service.config import Settings
from zembed.service.runtime.model import EmbeddingModel
from zembed.service.server import Running, start
from zembed.store import InvalidArgument, Store
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-0123456789"


class ServerThread:
    """Runs the asyncio server in its own thread and event loop."""

    def __init__(self, settings: Settings, before_start: Any = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port_ready = threading.Event()
        self.port = 0

        def announce(port: int) -> None:
            self.port = port
            self.port_ready.set()

        self.future = asyncio.run_coroutine_threadsafe(start(settings, announce=announce), self.loop)

    def running(self, timeout: float = 120) -> Running:
        return self.future.result(timeout)

    def stop(self, grace: float = 5.0) -> None:
        asyncio.run_coroutine_threadsafe(self.running().drain(grace), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class InferenceGate:
    """Holds the inference worker (at most 10 s each batch) until set(); `entered` is set once a
    batch is waiting on it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def set(self) -> None:
        self.release.set()


def block_inference(running: Running) -> InferenceGate:
    gate = InferenceGate()
    real_run = running.engine.model.run

    def slow_run(ids: Any) -> Any:
        gate.entered.set()
        gate.release.wait(10)
        return real_run(ids)

    running.engine.batcher._run = slow_run
    return gate


def settings(model: Path, data: Path, **kw: Any) -> Settings:
    return Settings(model=model, data=data, host="127.0.0.1", port=0, **kw).validate()


@pytest.fixture(scope="module")
def tiny_server(tiny_fp32: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(settings(tiny_fp32, tmp_path_factory.mktemp("tiny-data")))
    srv.running()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def minilm_server(minilm_fp32: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(settings(minilm_fp32, tmp_path_factory.mktemp("minilm-data"), token=TOKEN))
    srv.running()
    yield srv
    srv.stop()


def stubs(port: int) -> tuple[Any, Any, grpc.Channel]:
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    return pb_grpc.EmbeddingServiceStub(ch), pb_grpc.SearchServiceStub(ch), ch


def decode(e: pb.Embedding, encoding: int) -> np.ndarray:
    if encoding == pb.ENCODING_FLOAT32:
        return np.frombuffer(e.data, dtype="<f4")
    if encoding == pb.ENCODING_FLOAT16:
        return np.frombuffer(e.data, dtype="<f2").astype(np.float32)
    if encoding == pb.ENCODING_INT8:
        return np.frombuffer(e.data, dtype=np.int8).astype(np.float32) * e.scale
    if encoding == pb.ENCODING_BINARY:
        return np.frombuffer(e.data, dtype=np.uint8)
    return np.asarray(e.values, dtype=np.float32)


TEXTS = ["Berlin ist die Hauptstadt.", "x", "東京は日本の首都", "  padded text \n", "Москва — столица"]


def test_embed_over_grpc_equals_runtime_every_encoding_and_dim(
    tiny_server: ServerThread, tiny_fp32: Path
) -> None:
    model = EmbeddingModel(tiny_fp32)
    emb, _, ch = stubs(tiny_server.port)
    for dim in model.dims:
        want = model.embed(TEXTS, "query", dim)
        for enc in (
            pb.ENCODING_FLOAT32,
            pb.ENCODING_FLOAT16,
            pb.ENCODING_INT8,
            pb.ENCODING_BINARY,
            pb.ENCODING_FLOAT_LIST,
            pb.ENCODING_UNSPECIFIED,
        ):
            r = emb.Embed(
                pb.EmbedRequest(inputs=TEXTS, input_type=pb.INPUT_TYPE_QUERY, dimensions=dim, encoding=enc)
            )
            assert r.dimensions == dim and len(r.embeddings) == len(TEXTS)
            got = np.stack([decode(e, enc or pb.ENCODING_FLOAT32) for e in r.embeddings])
            if enc in (pb.ENCODING_FLOAT32, pb.ENCODING_UNSPECIFIED, pb.ENCODING_FLOAT_LIST):
                np.testing.assert_array_equal(got, want)
            elif enc == pb.ENCODING_FLOAT16:
                np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))
            elif enc == pb.ENCODING_INT8:
                np.testing.assert_allclose(got, want, atol=np.abs(want).max() / 127)
            else:
                np.testing.assert_array_equal(got, np.packbits(want > 0, axis=-1))
    r = emb.Embed(pb.EmbedRequest(inputs=TEXTS))
    assert r.dimensions == 64
    assert r.usage.total_bytes == sum(150 + len(t.encode()) for t in TEXTS)
    assert (
        r.usage.total_tokens
        == sum(e.tokens for e in r.embeddings)
        == sum(len(x) for x in model.encode(TEXTS, "document"))
    )
    ch.close()


def test_batch_item_equals_single_over_grpc(tiny_server: ServerThread) -> None:
    emb, _, ch = stubs(tiny_server.port)
    batch = emb.Embed(pb.EmbedRequest(inputs=TEXTS, dimensions=32))
    for i, t in enumerate(TEXTS):
        alone = emb.Embed(pb.EmbedRequest(inputs=[t], dimensions=32))
        np.testing.assert_allclose(decode(alone.embeddings[0], 1), decode(batch.embeddings[i], 1), atol=2e-6)
    ch.close()


def test_embed_stream_keeps_ids_and_survives_bad_items(tiny_server: ServerThread) -> None:
    emb, _, ch = stubs(tiny_server.port)
    reqs = [
        pb.EmbedStreamRequest(id="ok-1", input="hello", dimensions=16),
        pb.EmbedStreamRequest(id="empty", input=""),
        pb.EmbedStreamRequest(id="bad-dim", input="hi", dimensions=17),
        pb.EmbedStreamRequest(id="bad-enc", input="hi", encoding=99),  # type: ignore[arg-type]
        *[pb.EmbedStreamRequest(id=f"n{i}", input=f"text {i}", dimensions=8) for i in range(100)],
    ]
    out = {r.id: r for r in emb.EmbedStream(iter(reqs))}
    assert set(out) == {r.id for r in reqs}
    assert out["ok-1"].status.code == 0 and len(out["ok-1"].embedding.data) == 16 * 4
    assert out["empty"].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "input must not be empty" in out["empty"].status.message
    assert (
        "dimensions must be one of" in out["bad-dim"].status.message
        and "given 17" in out["bad-dim"].status.message
    )
    assert "encoding must be one of" in out["bad-enc"].status.message
    assert all(out[f"n{i}"].status.code == 0 and out[f"n{i}"].dimensions == 8 for i in range(100))
    ch.close()


def auth_md() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKEN}"),)


PASSAGES = [
    ("cat", "The cat sat on the warm mat by the fireplace.", "en"),
    ("stocks", "Stock markets fell sharply after the central bank raised interest rates.", "en"),
    ("rain", "Heavy rain caused flooding in several coastal towns overnight.", "en"),
    ("python", "Python is a popular programming language for data science.", "de"),
    ("football", "The football team won the championship after a dramatic penalty shootout.", "fr"),
    ("bread", "Fresh bread is baked every morning at the small village bakery.", "fr"),
]


def test_search_over_grpc_equals_store_and_real_weights_find_paraphrases(
    minilm_server: ServerThread, minilm_fp32: Path
) -> None:
    c = Client(f"127.0.0.1:{minilm_server.port}", token=TOKEN)
    info = c.create_collection("passages", filterable=["lang"])
    assert info.code_bits == 384 and info.rescore_dims == 384  # model-aware defaults
    c.upsert("passages", [{"id": i, "text": t, "metadata": {"lang": lang}} for i, t, lang in PASSAGES])
    hits = c.search("passages", text="a kitten resting on a rug near the fire", top_k=3)
    assert hits[0].id == "cat" and hits[0].metadata["lang"] == "en"
    assert c.search("passages", text="equities dropped when rates went up", top_k=1)[0].id == "stocks"
    # equals the in-process store search with the in-process runtime's query vectors
    running = minilm_server.running()
    model = EmbeddingModel(minilm_fp32)
    q = model.embed(["bakery bread in the morning"], "query")[0]
    want = running.engine.store.collection("passages").search(q, top_k=4)[0]
    got = c.search("passages", text="bakery bread in the morning", top_k=4)
    assert [h.id for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-6)
    # filters; delete hides; upsert of a new document is seen at once
    assert {h.id for h in c.search("passages", text="anything", top_k=10, filter={"lang": ["fr"]})} == {
        "football",
        "bread",
    }
    assert c.delete("passages", ["cat"]) == 1
    assert "cat" not in {h.id for h in c.search("passages", text="a kitten on a rug", top_k=10)}
    c.upsert("passages", [{"id": "dog", "text": "A dog sleeps on the carpet next to the fireplace."}])
    assert c.search("passages", text="a puppy napping on a rug by the fire", top_k=1)[0].id == "dog"
    # precomputed vectors and the stream
    vec = model.embed(["volcano eruption"], "document")[0]
    c.upsert("passages", [{"id": "volcano", "code": vec.tolist()}])
    assert c.search("passages", code=vec.tolist(), top_k=1)[0].id == "volcano"
    _, search, ch = stubs(minilm_server.port)
    stream = search.SearchStream(
        iter(
            [
                pb.SearchStreamRequest(
                    id="q1", search=pb.SearchRequest(collection="passages", text="football final")
                ),
                pb.SearchStreamRequest(id="q2", search=pb.SearchRequest(collection="nope", text="x")),
            ]
        ),
        metadata=auth_md(),
    )
    res = {r.id: r for r in stream}
    assert res["q1"].hits[0].id == "football" and res["q2"].status.code == grpc.StatusCode.NOT_FOUND.value[0]
    ups = list(
        search.UpsertStream(
            iter(
                [
                    pb.UpsertStreamRequest(
                        collection="passages", document=document({"id": "s1", "text": "first streamed"})
                    ),
                    pb.UpsertStreamRequest(
                        collection="passages", document=document({"id": "", "text": "no id"})
                    ),
                    pb.UpsertStreamRequest(
                        collection="passages", document=document({"id": "s2", "text": "second one"})
                    ),
                ]
            ),
            metadata=auth_md(),
        )
    )
    assert {u.id: u.status.code for u in ups} == {"s1": 0, "": 3, "s2": 0}
    assert running.engine.store.collection("passages").count() == len(PASSAGES) - 1 + 2 + 2
    ch.close()
    c.close()


def test_bad_inputs_get_codes_naming_the_field_and_write_nothing(minilm_server: ServerThread) -> None:
    emb, search, ch = stubs(minilm_server.port)
    md = auth_md()
    search.CreateCollection(pb.CreateCollectionRequest(name="bad", config=pb.CollectionConfig()), metadata=md)
    store = minilm_server.running().engine.store
    coll = store.collection("bad")
    coll.upsert(["keep"], np.ones(384))
    INV, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    nan_vec = [float("nan")] + [1.0] * 383
    cases: list[tuple[str, Any, Any, grpc.StatusCode, str]] = [
        ("empty input list", emb.Embed, pb.EmbedRequest(inputs=[]), INV, "inputs must not be empty"),
        (
            "too many inputs",
            emb.Embed,
            pb.EmbedRequest(inputs=["a"] * 257),
            INV,
            "at most 256 inputs; given 257",
        ),
        ("empty text", emb.Embed, pb.EmbedRequest(inputs=["a", ""]), INV, "inputs[1] must not be empty"),
        (
            "too many characters",
            emb.Embed,
            pb.EmbedRequest(inputs=["a" * 32769]),
            INV,
            "at most 32768 characters",
        ),
        (
            "over-length strict",
            emb.Embed,
            pb.EmbedRequest(inputs=["word " * 400], truncation=pb.TRUNCATION_STRICT),
            INV,
            "inputs[0] must be at most 256 tokens",
        ),
        (
            "unsupported dimension",
            emb.Embed,
            pb.EmbedRequest(inputs=["a"], dimensions=100),
            INV,
            "dimensions must be one of [384]",
        ),
        (
            "unknown encoding",
            emb.Embed,
            pb.EmbedRequest(inputs=["a"], encoding=42),  # type: ignore[arg-type]
            INV,
            "encoding must be one of",
        ),
        (
            "unknown collection",
            search.Search,
            pb.SearchRequest(collection="nope", text="x"),
            NF,
            "'nope' does not exist",
        ),
        (
            "packed vector of the wrong byte length",
            search.Search,
            pb.SearchRequest(collection="bad", vectors=pb.Vectors(code_f32le=b"\x00" * 5)),
            INV,
            "vectors.code_f32le must be a multiple of 4 bytes; given 5",
        ),
        (
            "top_k 0",
            search.Search,
            pb.SearchRequest(collection="bad", text="x", top_k=0),
            INV,
            "top_k must be in [1, 1000] (unset means 10); given 0",
        ),
        (
            "top_k over the limit",
            search.Search,
            pb.SearchRequest(collection="bad", text="x", top_k=1001),
            INV,
            "top_k must be in [1, 1000]",
        ),
        (
            "wrong vector length",
            search.Upsert,
            pb.UpsertRequest(
                collection="bad", documents=[pb.Document(id="w", vectors=pb.Vectors(code=[1.0] * 383))]
            ),
            INV,
            "documents[0].vectors.code must have length 384; given 383",
        ),
        (
            "NaN in a vector",
            search.Upsert,
            pb.UpsertRequest(
                collection="bad", documents=[pb.Document(id="n", vectors=pb.Vectors(code=nan_vec))]
            ),
            INV,
            "documents[0].vectors.code[0] must be finite",
        ),
        (
            "NaN in a query",
            search.Search,
            pb.SearchRequest(collection="bad", vectors=pb.Vectors(code=nan_vec)),
            INV,
            "vectors.code[0] must be finite",
        ),
        (
            "bad collection name",
            search.CreateCollection,
            pb.CreateCollectionRequest(name="Bad/Name"),
            INV,
            "name must match",
        ),
        (
            "duplicate ids",
            search.Upsert,
            pb.UpsertRequest(
                collection="bad", documents=[pb.Document(id="d", text="one"), pb.Document(id="d", text="two")]
            ),
            INV,
            "ids[1] duplicates",
        ),
        (
            "document without content",
            search.Upsert,
            pb.UpsertRequest(collection="bad", documents=[pb.Document(id="e")]),
            INV,
            "documents[0] must have text or vectors",
        ),
        (
            "empty filter values",
            search.Search,
            pb.SearchRequest(collection="bad", text="x", filter=[pb.Condition(field="lang")]),
            INV,
            "filter[0].any_of must hold at least one value",
        ),
    ]
    for what, method, request, code, text in cases:
        try:
            method(request, metadata=md)
        except grpc.RpcError as exc:
            assert exc.code() == code, (what, exc.details())
            assert text in exc.details(), (what, exc.details())
        else:
            pytest.fail(f"{what}: no error")
    # a failed request wrote nothing
    assert coll.count() == 1 and coll.get(["w", "n", "d", "e"]) == [None] * 4
    with pytest.raises(grpc.RpcError) as err:
        emb.Embed(pb.EmbedRequest(inputs=["a"]))  # no token
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "missing" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        emb.Embed(pb.EmbedRequest(inputs=["a"]), metadata=(("authorization", "Bearer wrong-token-xxxxxxxx"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "not valid" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        list(emb.EmbedStream(iter([pb.EmbedStreamRequest(id="x", input="a")])))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    health = health_pb2_grpc.HealthStub(ch)  # health stays open for probes
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    ch.close()


def test_health_and_drain(tiny_fp32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NOT_SERVING while warming, SERVING when ready, NOT_SERVING while draining; in-flight calls finish."""
    gate = threading.Event()
    real = EmbeddingModel.warmup

    def slow_warmup(self: EmbeddingModel) -> None:
        gate.wait(30)
        real(self)

    monkeypatch.setattr(EmbeddingModel, "warmup", slow_warmup)
    srv = ServerThread(settings(tiny_fp32, tmp_path / "d"))
    assert srv.port_ready.wait(60)
    ch = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    health = health_pb2_grpc.HealthStub(ch)
    name = "zembed.v1.EmbeddingService"
    assert (
        health.Check(health_pb2.HealthCheckRequest(service=name)).status
        == health_pb2.HealthCheckResponse.NOT_SERVING
    )
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.EmbeddingServiceStub(ch).Embed(pb.EmbedRequest(inputs=["a"]))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    gate.set()
    running = srv.running()
    assert (
        health.Check(health_pb2.HealthCheckRequest(service=name)).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    # an in-flight call finishes during the drain
    slow_gate = block_inference(running)
    stub = pb_grpc.EmbeddingServiceStub(ch)
    fut = stub.Embed.future(pb.EmbedRequest(inputs=["in flight"]))
    assert slow_gate.entered.wait(30)  # the call is being served
    drain = asyncio.run_coroutine_threadsafe(running.drain(5.0, delay_s=1.0), srv.loop)
    deadline = time.monotonic() + 10  # the drain announces NOT_SERVING first, while the call waits
    while (seen := health.Check(health_pb2.HealthCheckRequest(service=name)).status) != (
        health_pb2.HealthCheckResponse.NOT_SERVING
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not fut.done()
    slow_gate.set()
    assert len(fut.result(10).embeddings) == 1
    drain.result(20)
    assert seen == health_pb2.HealthCheckResponse.NOT_SERVING
    srv.loop.call_soon_threadsafe(srv.loop.stop)
    srv.thread.join(10)
    if not srv.thread.is_alive():
        srv.loop.close()
    ch.close()


def test_overload_gets_resource_exhausted_and_recovers(tiny_fp32: Path, tmp_path: Path) -> None:
    srv = ServerThread(settings(tiny_fp32, tmp_path / "d", queue_items=16, max_inputs=8, max_batch=8))
    running = srv.running()
    gate = block_inference(running)
    ch = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    stub = pb_grpc.EmbeddingServiceStub(ch)
    t = time.perf_counter()
    futures = [stub.Embed.future(pb.EmbedRequest(inputs=[f"t{i}"] * 8)) for i in range(200)]
    # at most 3 calls fit: one batch of 8 taken by the (blocked) worker plus 16 queued inputs
    while time.perf_counter() - t < 20 and sum(f.done() for f in futures) < len(futures) - 3:
        time.sleep(0.02)
    rejected = [f.exception() for f in futures if f.done() and f.exception() is not None]
    # all but the calls that fit in the queue were refused without waiting for the (blocked) model
    assert len(rejected) >= len(futures) - 3, len(rejected)
    assert all(
        isinstance(e, grpc.Call)
        and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        and "queue is full" in str(e.details())
        for e in rejected
    )
    assert running.engine.batcher.depth <= 16  # memory stays bounded
    gate.set()
    ok = sum(1 for f in futures if f.exception(10) is None)
    assert ok >= 1
    running.engine.batcher._run = running.engine.model.run
    assert len(stub.Embed(pb.EmbedRequest(inputs=["after"] * 8)).embeddings) == 8
    ch.close()
    srv.stop()


def _openssl(cwd: Path, *args: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def _self_signed(cwd: Path, name: str, subject: str, *extra: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, ``NAME.key`` and ``NAME.pem`` in ``cwd``."""
    _openssl(cwd, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.pem", "-days", "1", "-subj", subject, *extra)  # fmt: skip
    return cwd / f"{name}.key", cwd / f"{name}.pem"


def _tls_files(tmp: Path) -> tuple[Path, Path]:
    san = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    return _self_signed(tmp, "server", "/CN=localhost", "-addext", san)


def test_tls_port_refuses_plaintext(tiny_fp32: Path, tmp_path: Path) -> None:
    key, cert = _tls_files(tmp_path)
    srv = ServerThread(settings(tiny_fp32, tmp_path / "d", tls_cert=cert, tls_key=key))
    srv.running()
    plain = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.EmbeddingServiceStub(plain).Embed(pb.EmbedRequest(inputs=["a"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with Client(f"localhost:{srv.port}", root_certificates=cert.read_bytes()) as c:
        assert c.embed(["over TLS"]).shape == (1, 64)
    plain.close()
    srv.stop()


def test_cli_serve_starts_and_drains_on_sigterm(minilm_fp32: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ZEMBED_MODEL": str(minilm_fp32),
        "ZEMBED_DATA": str(tmp_path / "d"),
        "ZEMBED_PORT": "0",
    }
    log = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zembed.service.cli",
            "serve",
            "--default-collection",
            "docs",
            "--grace-s",
            "3",
            "--drain-delay-s",
            "0.2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert proc.stdout is not None
    port = 0
    for line in proc.stdout:
        if line.startswith("zembed: serving on port"):
            port = int(line.split()[-1])
            break
    assert port, (tmp_path / "stderr.log").read_text()
    with Client(f"127.0.0.1:{port}") as c:
        assert [x.name for x in c.list_collections()] == ["docs"]
        assert c.embed(["hello"]).shape == (1, 384)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, (tmp_path / "stderr.log").read_text()
    proc.stdout.close()
    log.close()
    assert '"draining' in (tmp_path / "stderr.log").read_text()
    with Store(tmp_path / "d") as s:  # the store was closed cleanly and reopens
        assert [x.name for x in s.list_collections()] == ["docs"]


def test_metrics_endpoint_and_redacted_settings(minilm_server: ServerThread) -> None:
    import socket
    import urllib.request

    running = minilm_server.running()
    with Client(f"127.0.0.1:{minilm_server.port}", token=TOKEN) as c:
        c.embed(["count me"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running.metrics.serve(port, "127.0.0.1")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'zembed_requests_total{code="OK",method="Embed"}' in text
    assert "zembed_batch_size_bucket" in text and "zembed_tokens_total" in text
    assert "zembed_queue_depth 0.0" in text and 'zembed_store_documents{collection="passages"}' in text
    shown = running.engine.settings.redacted()
    assert shown["token"] == "***" and TOKEN not in repr(shown)


def test_collections_pagination_documents_and_token_counts(
    tiny_server: ServerThread, tiny_fp32: Path
) -> None:
    emb, search, ch = stubs(tiny_server.port)
    for i in range(5):
        search.CreateCollection(
            pb.CreateCollectionRequest(name=f"page-{i}", config=pb.CollectionConfig(code_bits=32))
        )
    with pytest.raises(grpc.RpcError) as err:
        search.CreateCollection(pb.CreateCollectionRequest(name="page-0"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    names, token = [], ""
    while True:
        page = search.ListCollections(pb.ListCollectionsRequest(page_size=2, page_token=token))
        assert len(page.collections) <= 2
        names += [c.name for c in page.collections]
        token = page.next_page_token
        if not token:
            break
    assert [n for n in names if n.startswith("page-")] == [f"page-{i}" for i in range(5)]
    info = search.GetCollection(pb.GetCollectionRequest(name="page-1")).collection
    assert (
        info.config.code_bits == 32
        and info.config.rescore_dims == 64
        and info.config.rescore_dtype == "float16"
    )
    search.Upsert(
        pb.UpsertRequest(
            collection="page-1",
            documents=[
                pb.Document(id="t1", text="hello there", metadata={"n": pb.MetadataValue(int_value=7)})
            ],
        )
    )
    got = search.GetDocuments(
        pb.GetDocumentsRequest(collection="page-1", ids=["t1", "zz"], include_vectors=True)
    )
    assert got.documents[0].found and got.documents[0].metadata["n"].int_value == 7
    assert len(got.documents[0].rescore) == 64 and len(got.documents[0].code) == 4
    assert not got.documents[1].found
    search.DeleteCollection(pb.DeleteCollectionRequest(name="page-4"))
    with pytest.raises(grpc.RpcError) as err:
        search.GetCollection(pb.GetCollectionRequest(name="page-4"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    model = EmbeddingModel(tiny_fp32)
    counts = emb.CountTokens(pb.CountTokensRequest(inputs=TEXTS, input_type=pb.INPUT_TYPE_QUERY))
    assert list(counts.tokens) == [len(x) for x in model.encode(TEXTS, "query")]
    assert counts.max_tokens == 512
    info2 = emb.GetModelInfo(pb.GetModelInfoRequest())
    assert list(info2.dimensions) == [64, 32, 16, 8, 4, 2] and info2.pooling == "lasttoken"
    assert sorted(info2.prompt_names) == ["document", "query"] and info2.provider == "CPUExecutionProvider"
    ch.close()


def test_mutual_tls_requires_a_client_certificate(tiny_fp32: Path, tmp_path: Path) -> None:
    def ossl(*args: str) -> None:
        _openssl(tmp_path, *args)

    _self_signed(tmp_path, "ca", "/CN=test-ca")
    for name, san in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("client", "subjectAltName=DNS:client"),
    ):
        ossl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            "-addext",
            san,
        )
        (tmp_path / f"{name}.ext").write_text(san + "\n")
        ossl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
        )
    srv = ServerThread(
        settings(
            tiny_fp32,
            tmp_path / "d",
            tls_cert=tmp_path / "server.pem",
            tls_key=tmp_path / "server.key",
            tls_client_ca=tmp_path / "ca.pem",
        )
    )
    srv.running()
    ca = (tmp_path / "ca.pem").read_bytes()
    with Client(
        f"localhost:{srv.port}",
        root_certificates=ca,
        private_key=(tmp_path / "client.key").read_bytes(),
        certificate_chain=(tmp_path / "client.pem").read_bytes(),
    ) as c:
        assert c.embed(["mutual"]).shape == (1, 64)
    with (
        Client(f"localhost:{srv.port}", root_certificates=ca, timeout=5) as c,
        pytest.raises(grpc.RpcError) as err,
    ):
        c.embed(["no client certificate"])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    srv.stop()


def test_upsert_stream_groups_items_into_transactions(tiny_server: ServerThread) -> None:
    _, search, ch = stubs(tiny_server.port)
    search.CreateCollection(pb.CreateCollectionRequest(name="bulk", config=pb.CollectionConfig(code_bits=64)))
    coll = tiny_server.running().engine.store.collection("bulk")
    gen0 = coll._rec.gen
    rng = np.random.default_rng(9)
    vecs = rng.standard_normal((2000, 64), dtype=np.float32)
    reqs = [
        pb.UpsertStreamRequest(collection="bulk", document=document({"id": f"v{i}", "code": vecs[i]}))
        for i in range(2000)
    ]
    acks = list(search.UpsertStream(iter(reqs)))
    assert [a.id for a in acks] == [f"v{i}" for i in range(2000)]  # in order
    assert all(a.status.code == 0 for a in acks)
    assert coll.count() == 2000
    # grouped: far fewer commits than documents (2000 without grouping; 34-36 here, idle or loaded)
    assert coll._rec.gen - gen0 <= 500
    assert coll.search(vecs[1234], top_k=1)[0][0].id == "v1234"
    ch.close()


def test_upsert_stream_of_texts_embeds_groups(minilm_server: ServerThread) -> None:
    _, search, ch = stubs(minilm_server.port)
    md = auth_md()
    search.CreateCollection(pb.CreateCollectionRequest(name="streamed-texts"), metadata=md)
    reqs = [
        pb.UpsertStreamRequest(
            collection="streamed-texts", document=document({"id": f"t{i}", "text": f"note {i}"})
        )
        for i in range(600)
    ]
    acks = list(search.UpsertStream(iter(reqs), metadata=md))
    assert [a.id for a in acks] == [f"t{i}" for i in range(600)] and all(a.status.code == 0 for a in acks)
    coll = minilm_server.running().engine.store.collection("streamed-texts")
    assert coll.count() == 600 and coll._rec.gen <= 600 // 2
    ch.close()


def test_searches_run_on_the_loop_when_idle_and_on_threads_or_batched_under_load(
    tiny_server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a busy CI machine may preempt a search on the loop for > 20 ms: keep the path on regardless
    monkeypatch.setattr("zembed.service.searcher.SLOW_ON_LOOP_S", 60.0)
    running = tiny_server.running()
    engine = running.engine
    engine.searcher._loop_off_until = 0.0  # (an earlier test's first search may have been slow)
    c = Client(f"127.0.0.1:{tiny_server.port}")
    c.create_collection("paths", code_bits=64)
    vecs = np.random.default_rng(4).standard_normal((300, 64), dtype=np.float32)
    c.upsert("paths", [{"id": f"p{i}", "code": v.tolist()} for i, v in enumerate(vecs)])
    want = [h.id for h in engine.store.collection("paths").search(vecs[7], top_k=5)[0]]

    def search_all(qs: list[np.ndarray]) -> list[Any]:
        """Searches that arrive together; each result is its hit ids or its exception."""

        async def go() -> list[Any]:
            res = await asyncio.gather(
                *(
                    engine.search(
                        "paths",
                        None,
                        q,
                        None,
                        top_k=5,
                        oversampling=4,
                        rescore_on=True,
                        flt=None,
                        include_metadata=False,
                    )
                    for q in qs
                ),
                return_exceptions=True,
            )
            return [r if isinstance(r, BaseException) else [h.id for h in r[0]] for r in res]

        return asyncio.run_coroutine_threadsafe(go(), tiny_server.loop).result(30)

    before = dict(engine.searcher.paths)
    for _ in range(3):  # one at a time: on the event loop, over gRPC and in-process
        assert [h.id for h in c.search("paths", code=vecs[7].tolist(), top_k=5)] == want
    assert search_all([vecs[7]]) == [want]
    assert (
        engine.searcher.paths["loop"] - before["loop"] == 4
        and engine.searcher.paths["thread"] == before["thread"]
    )
    # searches that arrive together see each other: two run alone on threads, the six queued behind
    # them run as one batched search when the first finishes; every result is the same
    assert search_all([vecs[7]] * 8) == [want] * 8
    assert engine.searcher.paths["thread"] - before["thread"] == 2
    assert engine.searcher.paths["batch"] - before["batch"] == 6
    # a bad query fails its batch; the batch's queries then run one by one: only the bad one fails
    bad = vecs[7].copy()
    bad[3] = np.nan
    others = [vecs[i] for i in range(2, 9)]
    res = search_all([*others, bad])
    assert isinstance(res[-1], InvalidArgument) and "must be finite" in str(res[-1])
    store_coll = engine.store.collection("paths")
    assert res[:-1] == [[h.id for h in store_coll.search(q, top_k=5)[0]] for q in others]
    assert engine.searcher.paths["thread"] - before["thread"] == 2 + 2 + 5  # answered alone
    before = dict(engine.searcher.paths)
    # a map resize under way: the search does not wait on the event loop but on a thread
    coll = engine.store.collection("paths")
    held, release = threading.Event(), threading.Event()

    def resize() -> None:
        with coll.env.gate.exclusive():
            held.set()
            release.wait(10)

    resizer = threading.Thread(target=resize)
    resizer.start()
    assert held.wait(10)
    fut = asyncio.run_coroutine_threadsafe(
        engine.search(
            "paths",
            None,
            vecs[7],
            None,
            top_k=5,
            oversampling=4,
            rescore_on=True,
            flt=None,
            include_metadata=False,
        ),
        tiny_server.loop,
    )
    deadline = time.monotonic() + 10
    while engine.searcher.paths["thread"] - before["thread"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    health = health_pb2_grpc.HealthStub(c.channel)  # the loop still answers meanwhile
    assert (
        health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    assert not fut.done()
    release.set()
    resizer.join(10)
    assert [h.id for h in fut.result(10)[0]] == want
    assert engine.searcher.paths["thread"] - before["thread"] == 1
    # a collection over --inline-search-rows always goes to a thread
    inline_rows = engine.searcher.inline_rows  # (--inline-search-rows)
    engine.searcher.inline_rows = 100
    try:
        assert search_all([vecs[7]]) == [want]
        assert engine.searcher.paths["thread"] - before["thread"] == 2
    finally:
        engine.searcher.inline_rows = inline_rows
    # --search-batch 1: nothing queues, every search runs alone
    engine.searcher.max_batch = 1
    try:
        assert search_all([vecs[7]] * 8) == [want] * 8
        assert engine.searcher.paths["thread"] - before["thread"] == 10
        assert engine.searcher.paths["batch"] == before["batch"]
    finally:
        engine.searcher.max_batch = engine.settings.search_batch
    # over gRPC, 48 concurrent Search calls (3 shapes, some batched as they queue): each answer
    # equals the in-process search of its own query and shape
    _, stub, ch = stubs(tiny_server.port)
    store_coll = engine.store.collection("paths")
    calls = []
    for i in range(48):
        req = pb.SearchRequest(collection="paths", top_k=3 + i % 3, include_metadata=False)
        req.vectors.code_f32le = vecs[i].tobytes()
        calls.append((i, stub.Search.future(req)))
    for i, fut in calls:
        want_i = [h.id for h in store_coll.search(vecs[i], top_k=3 + i % 3)[0]]
        assert [h.id for h in fut.result(30).hits] == want_i
    ch.close()
    c.close()
