"""The ASGI app (FastAPI on Starlette): routes, auth, limits, errors and metrics.

- Auth is decided from the headers before the body is read: exactly one ``Authorization: Bearer
  TOKEN`` header, compared in constant time, on every ``/v1`` path (``/health`` and
  ``/openapi.json`` stay open). Bodies over ``--max-message-mb`` are refused with 413 while reading.
- Errors come from the one status table (``service.status``) and map to HTTP: invalid 400, unknown
  404, exists 409, overload 429 (``Retry-After``), starting or draining 503, deadline 504. The hosted
  paths answer ``{"detail": message}``; the OpenAI paths ``{"error": {"message", "type", "param",
  "code"}}``. Request-shape errors are 400 naming the field (not FastAPI's 422).
- ``latency`` (embed) and ``latency_mode`` (queries) pick the embedding queue's lane
  (``batcher.Latency``): fast / low go before queued slow work, with a small batching wait, and are
  refused with 429 when the fast work queued ahead has no room; slow / high batch for throughput,
  wait for room, and queries search 4x the default float reads and shortlist
  (``SearchParams.high_recall``). As in the hosted API, an embed without ``latency`` is tried fast
  and runs slow when the fast lane is full.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from zembed.service.auth import bearer_matches, expected_token
from zembed.service.batcher import Latency
from zembed.service.chunking import precise_window
from zembed.service.engine import Embedded, Engine, usage_bytes
from zembed.service.errors import InvalidArgument, Overloaded, ServiceError, TooLarge, Unavailable, clip
from zembed.service.http import models as m
from zembed.service.http.documents import KIND, Conflict, Documents, Missing, Row, check_name, file_url
from zembed.service.metrics import Metrics
from zembed.service.runtime.manifest import ManifestError
from zembed.service.runtime.text import Overflow, TooLong
from zembed.service.status import status_of
from zembed.store import Hit
from zembed.store import errors as store_errors

F32 = npt.NDArray[np.float32]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
OPENAI_PATHS = ("/v1/embeddings", "/v1/models")
OPEN_PATHS = ("/health", "/openapi.json")

HTTP_OF: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    # the store's state forbids it (e.g. a read-only format-1 directory: the message names the fix)
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.INTERNAL: 500,
}


class NotServed(Exception):
    """A request this server cannot serve (HTTP 501), with a message saying why."""


KNOWN_ERRORS: tuple[type[Exception], ...] = (
    ServiceError,
    store_errors.StoreError,
    TooLong,
    ManifestError,
    Conflict,
    Missing,
    NotServed,
)


@dataclass
class State:
    settings: Any
    metrics: Metrics
    engine: Engine | None = None
    documents: Documents | None = None
    draining: bool = False  # /health answers 503 (calls still served)
    refusing: bool = False  # every call answers 503
    disconnected: int = 0  # requests cancelled because their client went away
    paths: set[str] = field(default_factory=set)

    def attach(self, engine: Engine) -> None:
        self.documents = Documents(engine)
        self.engine = engine

    def ready(self) -> tuple[Engine, Documents]:
        if self.engine is None or self.documents is None:
            raise Unavailable("the server is starting (model loading); retry shortly")
        return self.engine, self.documents


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return Response(raw, status_code=status, media_type="application/json", headers=headers)


def error_response(path: str, status: int, message: str, param: str | None = None) -> Response:
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    if path in OPENAI_PATHS:
        kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
        body: Any = {
            "error": {
                "message": message,
                "type": kind.get(status, "server_error"),
                "param": param,
                "code": None,
            }
        }
    else:
        body = {"detail": message}
    return _json(status, body, headers)


def error_of(exc: BaseException, path: str) -> tuple[int, str]:
    if isinstance(exc, Conflict):
        return 409, str(exc)
    if isinstance(exc, NotServed):
        return 501, str(exc)
    if isinstance(exc, Missing):
        return 404, str(exc)
    code, message = status_of(exc, f"HTTP {path}")
    status = HTTP_OF.get(code, 500)
    if isinstance(exc, TooLarge):
        status = 413
    elif isinstance(exc, store_errors.DiskFull):
        status = 507
    return status, message


# ---------------------------------------------------------------------------- ASGI edge
class Edge:
    """Readiness, auth (headers only, before the body), body size, metrics, per request."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state
        token = state.settings.token
        self.expected = expected_token(token)
        self.max_body = state.settings.max_message_mb * 1024 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        t = time.perf_counter()
        status = [500]

        async def send_status(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            refused = self.refuse(scope)
            if refused is not None:
                await refused(scope, receive, send_status)
                return
            await self.until_disconnect(scope, self.limited(receive, path), send_status)
        finally:
            label = f"HTTP {path}" if path in self.state.paths else "HTTP other"
            self.state.metrics.requests.labels(label, str(status[0])).inc()
            self.state.metrics.latency.labels(label).observe(time.perf_counter() - t)

    async def until_disconnect(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, cancelled if its client goes away once the body is read (as gRPC cancels
        a vanished caller's call): its queued inputs are then dropped by the batcher, never computed."""
        body_read = asyncio.Event()
        gone = asyncio.Event()

        async def app_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request" and not msg.get("more_body", False):
                body_read.set()
            elif msg["type"] == "http.disconnect":
                gone.set()
            return msg

        task = asyncio.ensure_future(self.app(scope, app_receive, send))

        async def watch() -> None:
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await task
        except asyncio.CancelledError:
            if not gone.is_set():
                raise  # cancelled from outside (shutdown), not by the client leaving
            self.state.disconnected += 1
        finally:
            watcher.cancel()

    def refuse(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        if path in OPEN_PATHS:
            return None
        if self.expected is not None:
            given = [v for k, v in scope["headers"] if k == b"authorization"]
            if len(given) != 1:
                return error_response(
                    path,
                    401,
                    "exactly one Authorization: Bearer header is required"
                    if given
                    else "missing Authorization: Bearer header",
                )
            if not bearer_matches(given[0], self.expected):
                return error_response(path, 401, "invalid bearer token")
        if self.state.refusing:
            return error_response(path, 503, "the server is shutting down; retry on another replica")
        if self.state.engine is None:
            return error_response(path, 503, "the server is starting (model loading); retry shortly")
        for k, v in scope["headers"]:
            if k == b"content-length" and v.isdigit() and int(v) > self.max_body:
                return error_response(
                    path, 413, f"request body must be at most {self.max_body} bytes; given {int(v)}"
                )
        return None

    def limited(self, receive: Receive, path: str) -> Receive:
        seen = [0]

        async def wrapped() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                seen[0] += len(msg.get("body", b""))
                if seen[0] > self.max_body:
                    raise TooLarge(f"request body must be at most {self.max_body} bytes")
            return msg

        return wrapped


# ---------------------------------------------------------------------------- the app
def build_app(state: State) -> ASGIApp:
    app = FastAPI(
        title="zembed-serve HTTP API",
        version="1",
        description="The hosted zembed API's paths (as its official SDK sends them) and the OpenAI "
        "embeddings shape, served from this process's model and store.",
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        msg = f"{loc} {first.get('msg', 'is invalid')}"
        if "input" in first and first.get("type") != "missing":
            msg += f"; given {clip(first['input'])}"
        return error_response(request.url.path, 400, msg, loc)

    async def failed(request: Request, exc: Exception) -> Response:
        status, message = error_of(exc, request.url.path)
        return error_response(request.url.path, status, message, getattr(exc, "field", None))

    # known errors answer here; anything else reaches Starlette's 500 handler (logged with traceback)
    for kind in (*KNOWN_ERRORS, Exception):
        app.add_exception_handler(kind, failed)

    def model_names(engine: Engine) -> set[str]:
        mid = engine.model.manifest.model_id
        names = {mid, mid.rsplit("/", 1)[-1]}
        if "zembed-1" in mid:
            names.add("zembed-1")
        return names

    def check_model(engine: Engine, model: str, field: str = "model") -> None:
        if model not in model_names(engine):
            raise InvalidArgument(
                field,
                f"must name the model this server serves, one of {sorted(model_names(engine))}; "
                + f"given {clip(model)}",
            )

    def encode(v: F32, fmt: str) -> list[float] | str:
        if fmt == "base64":
            return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")
        out: list[float] = v.tolist()
        return out

    def inputs(value: str | list[str], field: str = "input") -> list[str]:
        texts = [value] if isinstance(value, str) else list(value)
        if not texts:
            raise InvalidArgument(field, "must not be empty")
        return texts

    # ------------------------------------------------------------------ models
    @app.post("/v1/models/embed", response_model=m.EmbedResponse, tags=["models"])
    async def embed(body: m.EmbedBody) -> Response:
        engine, _ = state.ready()
        check_model(engine, body.model)
        texts = inputs(body.input)
        lane = Latency.parse(body.latency, "latency")

        async def run(lane: Latency) -> Embedded:
            return await engine.embed(
                texts, body.input_type, body.dimensions or 0, Overflow.TRUNCATE, field="input", latency=lane
            )

        try:
            emb = await run(lane)
        except Overloaded:
            if body.latency is not None:
                raise  # explicitly fast: 429 when it cannot run fast (the hosted API's rule)
            emb = await run(Latency.SLOW)  # unset: tried fast, runs slow when the fast lane is full
        fmt = body.encoding_format
        return _json(
            200,
            {
                "results": [{"embedding": encode(v, fmt)} for v in emb.vectors],
                "usage": {"total_bytes": usage_bytes(texts), "total_tokens": emb.total_tokens},
            },
        )

    @app.post("/v1/models/rerank", tags=["models"], status_code=501)
    async def rerank(body: m.RerankBody) -> Response:
        raise NotServed(
            "reranking is not served here: this server has no reranker model "
            f"(asked for {clip(body.model)}); "
            "call the hosted API for rerankers, or rerank client-side"
        )

    # ------------------------------------------------------------------ collections
    @app.post("/v1/collections/add-collection", response_model=m.Message, tags=["collections"])
    async def add_collection(body: m.CollectionBody) -> Response:
        engine, docs = state.ready()
        if body.num_shards not in (1, 8, 16, 32, 64):
            raise InvalidArgument("num_shards", f"must be one of [1, 8, 16, 32, 64]; given {body.num_shards}")
        try:
            name = check_name(body.collection_name)
            await asyncio.to_thread(engine.store.create_collection, name, docs.config())
        except store_errors.AlreadyExists:
            raise Conflict(f"collection {clip(body.collection_name)} already exists") from None
        return _json(200, {"message": "Success!"})

    @app.post("/v1/collections/delete-collection", response_model=m.Message, tags=["collections"])
    async def delete_collection(body: m.NameBody) -> Response:
        engine, docs = state.ready()
        docs.collection(body.collection_name)
        await asyncio.to_thread(engine.store.drop_collection, body.collection_name)
        return _json(200, {"message": "Success!"})

    @app.post("/v1/collections/get-collection-list", response_model=m.CollectionList, tags=["collections"])
    async def list_collections() -> Response:
        engine, _ = state.ready()
        names = [c.name for c in engine.store.list_collections() if c.config.extra.get("api") == KIND]
        return _json(200, {"collection_names": sorted(names)})

    @app.post("/v1/collections/get-collection-info", response_model=m.CollectionInfo, tags=["collections"])
    async def collection_info(body: m.NameBody) -> Response:
        """Extension: the calibration and measured recall (gRPC GetCollection's fields)."""
        _, docs = state.ready()
        info = await asyncio.to_thread(docs.collection(body.collection_name).info)
        points = [
            {"float_reads_per_result": r, "shortlist_per_read": s, "recall": rec}
            for r, s, rec in info.tuning.points
        ]
        return _json(
            200,
            {
                "collection_name": info.name,
                "num_passages": info.count,
                "calibrated_at": info.calibrated_at,
                "calibration_final": info.calibration_final,
                "measured_recall": info.measured_recall,
                "recall_points": points,
            },
        )

    # ------------------------------------------------------------------ documents
    @app.post("/v1/documents/add-document", response_model=m.Message, tags=["documents"])
    async def add_document(body: m.AddDocumentBody) -> Response:
        _, docs = state.ready()
        c = body.content
        if isinstance(c, m.BinaryContent):
            raise InvalidArgument(
                "content.type",
                "auto (binary files: PDF, DOCX, images...) is not served by this self-hosted server: it "
                "does not parse or OCR files; send the extracted text as {type: text} or {type: text-pages}",
            )
        text = c.text if isinstance(c, m.TextContent) else None
        pages = c.pages if isinstance(c, m.PagesContent) else None
        await docs.add(body.collection_name, body.path, text, pages, body.metadata, overwrite=body.overwrite)
        return _json(200, {"message": "Success!"})

    @app.post("/v1/documents/update-document", response_model=m.Message, tags=["documents"])
    async def update_document(body: m.UpdateDocumentBody) -> Response:
        _, docs = state.ready()
        await docs.update(body.collection_name, body.path, body.metadata)
        return _json(200, {"message": "Success!"})

    @app.post("/v1/documents/delete-document", tags=["documents"])
    async def delete_document(body: m.DeleteDocumentBody) -> Response:
        _, docs = state.ready()
        paths = [body.path] if isinstance(body.path, str) else list(body.path)
        if not 1 <= len(paths) <= 64:
            raise InvalidArgument("path", f"must hold 1 to 64 paths; given {len(paths)}")
        deleted = await docs.delete(body.collection_name, paths)
        return _json(200, {"deleted_paths": deleted})

    @app.post("/v1/documents/get-document-info", tags=["documents"])
    async def document_info(body: m.DocumentInfoBody, request: Request) -> Response:
        _, docs = state.ready()
        doc = await asyncio.to_thread(
            docs.info, body.collection_name, body.path, body.include_content, str(request.base_url)
        )
        return _json(200, {"document": doc})

    @app.post("/v1/documents/get-document-info-list", tags=["documents"])
    async def document_list(body: m.DocumentListBody, request: Request) -> Response:
        _, docs = state.ready()
        if not 1 <= body.limit <= 1024:
            raise InvalidArgument("limit", f"must be in [1, 1024]; given {body.limit}")
        out = await asyncio.to_thread(
            docs.list_documents,
            body.collection_name,
            body.limit,
            body.path_gt,
            body.path_prefix,
            str(request.base_url),
        )
        return _json(200, {"documents": out})

    @app.post("/v1/documents/get-page-info", tags=["documents"])
    async def page_info(body: m.PageInfoBody) -> Response:
        _, docs = state.ready()
        page = await asyncio.to_thread(
            docs.page, body.collection_name, body.path, body.page_index, body.include_content
        )
        return _json(200, {"page": page})

    @app.get("/v1/documents/get-document-content", tags=["documents"])
    async def document_content(collection_name: str, path: str) -> Response:
        """The document's text (what ``file_url`` points at)."""
        _, docs = state.ready()
        text = await asyncio.to_thread(docs.content, collection_name, path)
        return Response(text, media_type="text/plain; charset=utf-8")

    # ------------------------------------------------------------------ queries
    def check_k(k: int, hosted_max: int) -> None:
        engine, _ = state.ready()
        if not 1 <= k <= hosted_max:
            raise InvalidArgument("k", f"must be in [1, {hosted_max}]; given {k}")
        if k > engine.settings.max_top_k:
            raise InvalidArgument(
                "k", f"must be at most {engine.settings.max_top_k} on this server (--max-top-k); given {k}"
            )

    def check_query(q: str, chars: bool) -> None:
        size = len(q) if chars else len(q.encode("utf-8", errors="surrogatepass"))
        if size > 4096:
            raise InvalidArgument(
                "query", f"must be at most 4096 {'characters' if chars else 'UTF-8 bytes'}; given {size}"
            )
        if not q:
            raise InvalidArgument("query", "must not be empty")

    def no_reranker(reranker: str | None) -> None:
        if reranker:
            raise InvalidArgument(
                "reranker",
                f"{clip(reranker)} is not available: this self-hosted server has no reranker model",
            )

    def doc_results(
        name: str, best: dict[str, float], with_meta: bool, base: str, docs: Documents
    ) -> list[dict[str, Any]]:
        heads = docs.heads(name, list(best)) if with_meta else {}
        return [
            {
                "path": p,
                "score": s,
                "file_url": file_url(base, name, p),
                "metadata": heads.get(p, {}).get("_m", {}) if with_meta else None,
            }
            for p, s in best.items()
        ]

    async def query_passages(
        docs: Documents, body: m.TopDocumentsBody | m.TopPagesBody | m.TopSnippetsBody, group: str
    ) -> tuple[list[tuple[Hit, Row]], int]:
        """The passages a query body asks for; ``latency_mode`` picks the lane and the sizes."""
        lane = Latency.parse(body.latency_mode, "latency_mode")
        return await docs.passages(body.collection_name, body.query, body.k, body.filter, lane, group)

    @app.post("/v1/queries/top-documents", tags=["queries"])
    async def top_documents(body: m.TopDocumentsBody, request: Request) -> Response:
        _, docs = state.ready()
        check_k(body.k, 2048)
        no_reranker(body.reranker)
        if body.query is not None:
            check_query(body.query, chars=False)
        docs.collection(body.collection_name)
        hits, _ = await query_passages(docs, body, "path")
        best: dict[str, float] = {}
        for h, r in hits:
            if r.path not in best and len(best) < body.k:
                best[r.path] = h.score
        results = await asyncio.to_thread(
            doc_results, body.collection_name, best, body.include_metadata, str(request.base_url), docs
        )
        return _json(200, {"results": results})

    @app.post("/v1/queries/top-pages", tags=["queries"])
    async def top_pages(body: m.TopPagesBody, request: Request) -> Response:
        _, docs = state.ready()
        check_k(body.k, 1024)
        check_query(body.query, chars=False)
        hits, _ = await query_passages(docs, body, "page")
        pages: dict[tuple[str, int], float] = {}
        best: dict[str, float] = {}
        for h, r in hits:
            key = (r.path, r.page or 0)
            if key not in pages and len(pages) < body.k:
                pages[key] = h.score
                best.setdefault(r.path, h.score)

        def build() -> dict[str, Any]:
            results = []
            for (path, page), score in pages.items():
                content = None
                if body.include_content:
                    content = docs.page(body.collection_name, path, page, True)["content"]
                results.append(
                    {"path": path, "page_index": page, "score": score, "content": content, "image_url": None}
                )
            return {
                "results": results,
                "document_results": doc_results(
                    body.collection_name, best, body.include_metadata, str(request.base_url), docs
                ),
            }

        return _json(200, await asyncio.to_thread(build))

    @app.post("/v1/queries/top-snippets", tags=["queries"])
    async def top_snippets(body: m.TopSnippetsBody, request: Request) -> Response:
        _, docs = state.ready()
        check_k(body.k, 128)
        no_reranker(body.reranker)
        check_query(body.query, chars=True)
        hits, _ = await query_passages(docs, body, "passage")
        results = []
        best: dict[str, float] = {}
        for h, r in hits[: body.k]:
            s, e, text = r.start, r.end, r.text
            if body.precise_responses:
                a, b = precise_window(text, body.query)
                s, e, text = r.start + a, r.start + b, text[a:b]
            page = r.page or 0
            results.append(
                {
                    "path": r.path,
                    "content": text,
                    "start_index": s,
                    "end_index": e,
                    "page_span": [page, page + 1],
                    "score": h.score,
                }
            )
            best.setdefault(r.path, h.score)
        doc_res = await asyncio.to_thread(
            doc_results,
            body.collection_name,
            best,
            body.include_document_metadata,
            str(request.base_url),
            docs,
        )
        return _json(200, {"results": results, "document_results": doc_res})

    # ------------------------------------------------------------------ status
    @app.post("/v1/status/get-status", tags=["status"])
    async def get_status(body: m.StatusBody | None = None) -> Response:
        _, docs = state.ready()
        name = body.collection_name if body is not None else None
        return _json(200, await asyncio.to_thread(docs.status, name))

    # ------------------------------------------------------------------ OpenAI shape
    @app.post("/v1/embeddings", tags=["openai"])
    async def openai_embeddings(body: m.OpenAIEmbeddingsBody) -> Response:
        engine, _ = state.ready()
        check_model(engine, body.model)
        raw = body.input
        if isinstance(raw, str):
            texts = [raw]
        elif raw and all(isinstance(x, str) for x in raw):
            texts = [str(x) for x in raw]
        elif raw and all(isinstance(x, int) for x in raw):
            texts = [decode_tokens(engine, [int(str(x)) for x in raw], "input")]
        elif raw and all(isinstance(x, list) for x in raw):
            texts = [
                decode_tokens(engine, [int(t) for t in x], f"input[{i}]")
                for i, x in enumerate(raw)
                if isinstance(x, list)
            ]
        else:
            raise InvalidArgument("input", "must be a string, a list of strings, or token arrays (not empty)")
        emb = await engine.embed(texts, body.input_type, body.dimensions or 0, field="input")
        fmt = body.encoding_format
        return _json(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": encode(v, fmt)}
                    for i, v in enumerate(emb.vectors)
                ],
                "model": body.model,
                "usage": {"prompt_tokens": emb.total_tokens, "total_tokens": emb.total_tokens},
            },
        )

    @app.get("/v1/models", tags=["openai"])
    async def openai_models() -> Response:
        engine, _ = state.ready()
        mid = engine.model.manifest.model_id
        return _json(
            200,
            {
                "object": "list",
                "data": [{"id": mid, "object": "model", "created": 0, "owned_by": "zembed-serve"}],
            },
        )

    @app.get("/health", tags=["health"])
    async def health() -> Response:
        if state.draining or state.refusing or state.engine is None:
            return _json(503, {"status": "NOT_SERVING"})
        return _json(200, {"status": "SERVING"})

    state.paths = {getattr(r, "path", "") for r in app.routes}
    return Edge(app, state)


def decode_tokens(engine: Engine, ids: list[int], field: str) -> str:
    """Token arrays (OpenAI input) back to text with the model's own tokenizer; the text is then
    embedded as any text is (prompt, suffix and length policy applied)."""
    tok = getattr(engine.model.text, "tokenizer", None)
    if tok is None or not hasattr(tok, "decode"):
        raise InvalidArgument(field, "token arrays are not supported by this model's tokenizer; send text")
    if not ids:
        raise InvalidArgument(field, "must not be empty")
    vocab = tok.get_vocab_size() if hasattr(tok, "get_vocab_size") else None
    bad = [t for t in ids if t < 0 or (vocab is not None and t >= vocab)]
    if bad:
        raise InvalidArgument(field, f"holds token ids outside the vocabulary [0, {vocab}); given {bad[0]}")
    text: str = tok.decode(ids, skip_special_tokens=True)
    return text
