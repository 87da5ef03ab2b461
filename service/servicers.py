"""gRPC servicers: validate the request's shape, convert with ``convert``, call the engine, convert
back. Every method runs inside ``guarded``: domain errors map to status codes through the one table in
``service.status``; metrics are recorded per method and status. Streams live in ``service.streams``
(reading, bounds, ordering, ending); the edge (``service.edge``) authenticates and decodes first."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import grpc
import numpy as np

from zembed.service import columns, convert, passages, streams
from zembed.service.engine import Engine, usage_bytes
from zembed.service.errors import InvalidArgument, TooLarge, Unavailable
from zembed.service.metrics import Metrics
from zembed.service.status import status_of
from zembed.store import scan, validate
from zembed.store.errors import InvalidArgument as StoreInvalidArgument
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, Ctx], Awaitable[Resp]]


def snap_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def guarded(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: Ctx) -> Resp:
        t = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await method(self, request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = status_of(exc, name)
            await context.abort(code, message)
            raise  # unreachable: abort raises
        finally:
            self.metrics.requests.labels(name, code.name).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t)

    return wrapper


MAX_UPSERT = 10_000  # documents per Upsert call or UpsertStream message
OK = pb.Status()
# an UpsertStream message converted ahead: documents (None: the general path converts them), or
# columns (or why the whole message is refused)
Prepared: TypeAlias = "convert.Docs | columns.Columns | BaseException | None"
UNANSWERED = pb.Status(code=13, message="internal error: the document was not processed")


def item_status(exc: BaseException) -> pb.Status:
    code, message = status_of(exc)
    return convert.status(code.value[0], message)


class _Base:
    """Holds the engine once it is ready; until then every call is UNAVAILABLE."""

    def __init__(self, engine: Engine | None, metrics: Metrics) -> None:
        self._engine = engine
        self.metrics = metrics

    def attach(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise Unavailable("the server is starting (model loading); retry shortly")
        return self._engine


class EmbeddingServicer(_Base, pb_grpc.EmbeddingServiceServicer):
    @guarded
    async def Embed(self, request: pb.EmbedRequest, context: Ctx) -> pb.EmbedResponse:
        encoding = convert.check_encoding(request.encoding)
        texts = list(request.inputs)
        emb = await self.engine.embed(
            texts,
            convert.input_type(request.input_type),
            request.dimensions,
            convert.overflow(request.truncation),
            latency=convert.latency(request.latency),
        )
        return pb.EmbedResponse(
            embeddings=[
                convert.encode_embedding(v, encoding, t, tr)
                for v, t, tr in zip(emb.vectors, emb.tokens, emb.truncated, strict=True)
            ],
            usage=pb.Usage(total_tokens=emb.total_tokens, total_bytes=usage_bytes(texts)),
            dimensions=emb.dim,
        )

    async def EmbedStream(
        self, request_iterator: AsyncIterator[pb.EmbedStreamRequest], context: Ctx
    ) -> AsyncIterator[pb.EmbedStreamResponse]:
        async def handle(req: pb.EmbedStreamRequest) -> pb.EmbedStreamResponse:
            try:
                encoding = convert.check_encoding(req.encoding)
                emb = await self.engine.embed(
                    [req.input],
                    convert.input_type(req.input_type),
                    req.dimensions,
                    convert.overflow(req.truncation),
                    wait=True,
                    field="input",
                    names=["input"],
                    latency=convert.latency(req.latency),
                )
                return pb.EmbedStreamResponse(
                    id=req.id,
                    status=convert.status(),
                    dimensions=emb.dim,
                    embedding=convert.encode_embedding(
                        emb.vectors[0], encoding, emb.tokens[0], emb.truncated[0]
                    ),
                )
            except Exception as exc:
                return pb.EmbedStreamResponse(id=req.id, status=item_status(exc))

        settings = self.engine.settings
        async for res in streams.concurrent(
            request_iterator, settings.stream_in_flight, handle, settings.stream_idle_s
        ):
            yield res

    @guarded
    async def CountTokens(self, request: pb.CountTokensRequest, context: Ctx) -> pb.CountTokensResponse:
        tokens = await self.engine.count_tokens(list(request.inputs), convert.input_type(request.input_type))
        return pb.CountTokensResponse(tokens=tokens, max_tokens=self.engine.model.manifest.max_length)

    @guarded
    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: Ctx) -> pb.GetModelInfoResponse:
        m = self.engine.model.manifest
        return pb.GetModelInfoResponse(
            model_id=m.model_id,
            dimensions=m.dims,
            max_tokens=m.max_length,
            prompt_names=sorted(m.prompts),
            dtype=m.dtype,
            provider=self.engine.model.provider,
            pooling=m.pooling,
            scan_kernel=scan.kernel_name(),
            scan_threads=scan.threads(),
        )


class SearchServicer(_Base, pb_grpc.SearchServiceServicer):
    @guarded
    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: Ctx
    ) -> pb.CreateCollectionResponse:
        c = request.config
        cfg = self.engine.default_config(
            c.code_bits,
            c.rescore_dims,
            rescore_dtype=c.rescore_dtype or None,
            calibration=c.calibration or None,
            calibration_sample=c.calibration_sample,
            filterable=tuple(c.filterable),
        )
        info = await asyncio.to_thread(self.engine.store.create_collection, request.name, cfg)
        return pb.CreateCollectionResponse(collection=convert.collection_to_proto(info))

    @guarded
    async def GetCollection(self, request: pb.GetCollectionRequest, context: Ctx) -> pb.GetCollectionResponse:
        info = self.engine.store.collection(request.name).info()
        return pb.GetCollectionResponse(collection=convert.collection_to_proto(info))

    @guarded
    async def Calibrate(self, request: pb.CalibrateRequest, context: Ctx) -> pb.CalibrateResponse:
        code, rescore = convert.sample_vectors(request.sample_vectors)
        info = await self.engine.calibrate_collection(
            request.name, list(request.sample_texts), code, rescore, request.measure_only
        )
        return pb.CalibrateResponse(collection=convert.collection_to_proto(info))

    @guarded
    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: Ctx
    ) -> pb.ListCollectionsResponse:
        size = request.page_size or 100
        if not 1 <= size <= 1000:
            raise InvalidArgument(
                "page_size", f"must be in [1, 1000] (0 means 100); given {request.page_size}"
            )
        if request.page_token and not validate.NAME_RE.fullmatch(request.page_token):
            raise InvalidArgument(  # tokens are collection names: this one no answer gave
                "page_token",
                f"must be a next_page_token of ListCollections; given {request.page_token[:80]!r}",
            )
        infos = [i for i in self.engine.store.list_collections() if i.name > request.page_token]
        page: list[pb.Collection] = []
        room = self.engine.settings.max_message_mb * 1024 * 1024 // 2
        for info in infos[:size]:  # a page also ends before it could outgrow the message limit
            proto = convert.collection_to_proto(info)
            room -= proto.ByteSize() + 8
            if room < 0 and page:
                break
            page.append(proto)
        token = page[-1].name if len(infos) > len(page) else ""
        return pb.ListCollectionsResponse(collections=page, next_page_token=token)

    @guarded
    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: Ctx
    ) -> pb.DeleteCollectionResponse:
        await asyncio.to_thread(self.engine.store.drop_collection, request.name)
        self.engine.recent_queries.forget(request.name)  # a new one of that name starts its own sample
        return pb.DeleteCollectionResponse()

    @guarded
    async def UpdateCollection(
        self, request: pb.UpdateCollectionRequest, context: Ctx
    ) -> pb.UpdateCollectionResponse:
        info = await asyncio.to_thread(
            self.engine.store.add_filterable, request.name, list(request.add_filterable)
        )
        return pb.UpdateCollectionResponse(collection=convert.collection_to_proto(info))

    @guarded
    async def Snapshot(self, request: pb.SnapshotRequest, context: Ctx) -> pb.SnapshotResponse:
        t = time.perf_counter()
        snap = await asyncio.to_thread(self.engine.store.snapshot_named, request.name)
        return pb.SnapshotResponse(
            path=str(snap), size_bytes=snap_size(snap), seconds=time.perf_counter() - t
        )

    async def _upsert(
        self,
        collection: str,
        docs: Sequence[pb.Document],
        wait: bool,
        chunking: pb.Chunking | None = None,
        labels: Sequence[int] | None = None,
    ) -> tuple[int, int, int, int]:
        """Returns (documents, tokens, bytes, rows). ``labels``: each document's index in its request
        message (for error fields)."""
        if not docs:
            raise InvalidArgument("documents", "must not be empty")
        if len(docs) > MAX_UPSERT:
            raise InvalidArgument("documents", f"must hold at most {MAX_UPSERT} documents; given {len(docs)}")
        batch = convert.documents(docs, labels)
        if chunking is not None and chunking.enabled:
            return await passages.upsert(self.engine, collection, batch, chunking, wait=wait, labels=labels)
        if isinstance(batch.code, np.ndarray):
            bits = self.engine.store.collection(collection).config.code_bits
            if batch.code.shape[1] != bits:
                first = labels[0] if labels is not None else 0
                raise InvalidArgument(
                    f"documents[{first}].vectors.code",
                    f"must have length {bits}; given {batch.code.shape[1]}",
                )
        n, tokens, nbytes = await self.engine.upsert(
            collection, batch.ids, batch.texts, batch.code, batch.rescore, batch.metadata, wait=wait
        )
        return n, tokens, nbytes, n

    @guarded
    async def Upsert(self, request: pb.UpsertRequest, context: Ctx) -> pb.UpsertResponse:
        if request.HasField("columns"):  # the columnar form (vectors only)
            n = await columns.upsert(self.engine, request)
            return pb.UpsertResponse(upserted=n, usage=pb.Usage(), passages=n)
        chunking = request.chunking if request.HasField("chunking") else None
        n, tokens, nbytes, rows = await self._upsert(
            request.collection, request.documents, wait=False, chunking=chunking
        )
        return pb.UpsertResponse(
            upserted=n, usage=pb.Usage(total_tokens=tokens, total_bytes=nbytes), passages=rows
        )

    async def UpsertStream(
        self, request_iterator: AsyncIterator[pb.UpsertStreamRequest], context: Ctx
    ) -> AsyncIterator[pb.UpsertStreamResponse]:
        """Messages that arrive together (within max_wait_ms of the first, up to max_inputs documents)
        are written as one transaction; a message of many documents is a transaction of its own. Each
        message is acknowledged, in order, once that commit is durable, with one status per document."""
        settings = self.engine.settings

        async def prepared() -> AsyncIterator[tuple[pb.UpsertStreamRequest, Prepared]]:
            # converted as read (on the stream's reader task), so a message is converted while the
            # one before it is being written
            async for req in request_iterator:
                if req.HasField("columns"):
                    yield req, columns.prepare_message(self.engine, req)
                else:
                    yield req, self._prepare(req)

        async def handle(
            group: list[tuple[pb.UpsertStreamRequest, Prepared]],
        ) -> list[pb.UpsertStreamResponse]:
            req, batch = group[0]
            if any(r.HasField("columns") for r, _ in group):
                return await columns.handle_group(group, self.engine, self._upsert_group, OK)
            if len(group) == 1 and isinstance(batch, convert.Docs):
                try:
                    n, _, _ = await self.engine.upsert(
                        req.collection, batch.ids, batch.texts, batch.code, batch.rescore, batch.metadata
                    )
                except Exception:
                    pass  # nothing was written: the general path finds each document's status
                else:
                    return [pb.UpsertStreamResponse(status=OK, statuses=[OK] * n, stored=n)]
            return await self._upsert_group([req for req, _ in group])

        async for ack in streams.grouped(
            prepared(),
            settings.stream_in_flight,
            settings.max_inputs,  # one Embed call's worth of texts per transaction
            settings.max_wait_ms / 1000,
            handle,
            settings.stream_idle_s,
            weight=lambda r: len(r[0].documents) or len(r[0].columns.ids) or 1,
        ):
            yield ack

    def _prepare(self, req: pb.UpsertStreamRequest) -> convert.Docs | None:
        """A bulk-form message of vectors converted ahead (None: the general path handles it)."""
        docs = req.documents
        if not docs or len(docs) > MAX_UPSERT or req.HasField("document") or req.chunking.enabled:
            return None
        try:
            batch = convert.documents(docs)
            bits = self.engine.store.collection(req.collection).config.code_bits
        except Exception:
            return None
        if not isinstance(batch.code, np.ndarray) or batch.code.shape[1] != bits:
            return None
        if len(set(batch.ids)) != len(batch.ids):
            return None
        return batch

    async def _upsert_group(self, group: list[pb.UpsertStreamRequest]) -> list[pb.UpsertStreamResponse]:
        """Documents of the same collection and chunking are written together; duplicates of an id
        start a new transaction (stream order: a later one wins). A batch refused for a document's
        content is split in halves until the refused documents are alone, so every other document is
        stored and each refused one gets its own status."""
        docs: list[list[pb.Document]] = []
        status: list[list[pb.Status | None]] = []
        runs: dict[tuple[str, bytes], list[tuple[int, int]]] = {}
        for m, req in enumerate(group):
            many = req.documents
            if many and req.HasField("document"):
                docs.append(list(many))
                bad = item_status(
                    InvalidArgument("document", "and `documents` are both set; send one or the other")
                )
                status.append([bad] * len(many))
                continue
            if len(many) > MAX_UPSERT:
                docs.append(list(many))
                bad = item_status(
                    InvalidArgument(
                        "documents", f"must hold at most {MAX_UPSERT} documents; given {len(many)}"
                    )
                )
                status.append([bad] * len(many))
                continue
            listed = list(many) if many else [req.document]
            docs.append(listed)
            status.append([None] * len(listed))
            key = (req.collection, req.chunking.SerializeToString() if req.HasField("chunking") else b"")
            runs.setdefault(key, []).extend((m, j) for j in range(len(listed)))
        for (name, chunk_key), where in runs.items():
            chunking = pb.Chunking.FromString(chunk_key) if chunk_key else None
            seg: list[tuple[int, int]] = []
            seen: set[str] = set()
            for m, j in where:
                doc_id = docs[m][j].id
                if doc_id in seen:
                    await self._write(name, seg, docs, status, chunking)
                    seg, seen = [], set()
                seen.add(doc_id)
                seg.append((m, j))
            if seg:
                await self._write(name, seg, docs, status, chunking)
        out = []
        for m, req in enumerate(group):
            st = [x if x is not None else UNANSWERED for x in status[m]]
            refused = [x for x in st if x.code != 0]
            stored = len(st) - len(refused)
            if not req.documents:
                out.append(pb.UpsertStreamResponse(id=req.document.id, status=st[0], stored=stored))
                continue
            summary = OK
            if refused:
                first = refused[0]
                summary = convert.status(
                    first.code, f"{len(refused)} of {len(st)} documents refused; the first: {first.message}"
                )
            out.append(pb.UpsertStreamResponse(status=summary, statuses=st, stored=stored))
        return out

    async def _write(
        self,
        name: str,
        seg: list[tuple[int, int]],
        docs: list[list[pb.Document]],
        status: list[list[pb.Status | None]],
        chunking: pb.Chunking | None,
    ) -> None:
        try:
            await self._upsert(name, [docs[m][j] for m, j in seg], True, chunking, [j for _, j in seg])
        except Exception as exc:
            if len(seg) > 1 and isinstance(exc, InvalidArgument | StoreInvalidArgument):
                half = len(seg) // 2  # one of the documents (or more) is bad: find them
                await self._write(name, seg[:half], docs, status, chunking)
                await self._write(name, seg[half:], docs, status, chunking)
                return
            bad = item_status(exc)
            for m, j in seg:
                status[m][j] = bad
        else:
            for m, j in seg:
                status[m][j] = OK

    @guarded
    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: Ctx
    ) -> pb.DeleteDocumentsResponse:
        validate.count(len(request.ids), "ids", validate.MAX_DELETE_IDS, "ids")
        coll = self.engine.store.collection(request.collection)
        n = await asyncio.to_thread(passages.delete_documents, coll, list(request.ids))
        return pb.DeleteDocumentsResponse(deleted=n)

    @guarded
    async def GetDocuments(self, request: pb.GetDocumentsRequest, context: Ctx) -> pb.GetDocumentsResponse:
        # refused up front past MAX_GET_IDS; the answer is sized as it is built (never over the limit)
        validate.count(len(request.ids), "ids", validate.MAX_GET_IDS, "ids (page larger requests)")
        coll = self.engine.store.collection(request.collection)
        recs = await asyncio.to_thread(coll.get, list(request.ids), with_vectors=request.include_vectors)
        room = self.engine.settings.max_message_mb * 1024 * 1024 - 1024
        out = []
        for ext, r in zip(request.ids, recs, strict=True):
            if r is None:
                out.append(pb.StoredDocument(id=ext, found=False))
                continue
            doc = pb.StoredDocument(id=ext, found=True, metadata=convert.dict_to_metadata(r.metadata))
            if request.include_vectors and r.rescore is not None:
                doc.rescore.extend(r.rescore.tolist())
                doc.code = r.code
            room -= doc.ByteSize() + 8
            if room < 0:
                limit = self.engine.settings.max_message_mb
                raise TooLarge(
                    f"the {len(request.ids)} documents asked for exceed the {limit} MiB message limit "
                    f"(after {len(out)}); ask for fewer ids per call"
                )
            out.append(doc)
        return pb.GetDocumentsResponse(documents=out)

    async def _search(self, request: pb.SearchRequest, wait: bool) -> tuple[list[pb.Hit], pb.Usage]:
        kind = request.WhichOneof("query")
        if kind is None:
            raise InvalidArgument("query", "must be text or vectors")
        if kind == "text" and not request.text:
            raise InvalidArgument("text", "must not be empty")
        params = convert.search_params(request, self.engine.settings.max_top_k)
        hits, tokens, nbytes = await self.engine.search(
            request.collection,
            request.text if kind == "text" else None,
            convert.vector(request.vectors.code, "vectors.code", request.vectors.code_f32le)
            if kind == "vectors"
            else None,
            convert.vector(request.vectors.rescore, "vectors.rescore", request.vectors.rescore_f32le)
            if kind == "vectors"
            else None,
            params,
            overflow=convert.overflow(request.truncation),
            wait=wait,
            latency=convert.latency(request.latency),
        )
        return [convert.hit_to_proto(h) for h in hits], pb.Usage(total_tokens=tokens, total_bytes=nbytes)

    @guarded
    async def Search(self, request: pb.SearchRequest, context: Ctx) -> pb.SearchResponse:
        hits, usage = await self._search(request, wait=False)
        return pb.SearchResponse(hits=hits, usage=usage)

    async def SearchStream(
        self, request_iterator: AsyncIterator[pb.SearchStreamRequest], context: Ctx
    ) -> AsyncIterator[pb.SearchStreamResponse]:
        async def handle(req: pb.SearchStreamRequest) -> pb.SearchStreamResponse:
            try:
                hits, _ = await self._search(req.search, wait=True)
                return pb.SearchStreamResponse(id=req.id, status=convert.status(), hits=hits)
            except Exception as exc:
                return pb.SearchStreamResponse(id=req.id, status=item_status(exc))

        settings = self.engine.settings
        async for res in streams.concurrent(
            request_iterator, settings.stream_in_flight, handle, settings.stream_idle_s
        ):
            yield res
