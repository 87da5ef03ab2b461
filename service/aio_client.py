"""The asyncio client for zembed-serve (``grpc.aio``): the same methods, arguments and typed results
as :class:`zembed.service.client.Client`, awaited. Requests and responses go through the same
functions of ``zembed.service.client`` (one :class:`~zembed.service.client.Call` per RPC)::

    from zembed.service.aio_client import AsyncClient

    async with AsyncClient("localhost:50051") as c:
        hits = await c.search("docs", text="...", top_k=5)
        async for ack in c.upsert_stream("docs", documents):
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from zembed.service.client import (
    F32,
    Call,
    CollectionInfo,
    Document,
    Embeddings,
    EmbedStreamItem,
    EncodingName,
    Feed,
    InputType,
    ModelInfo,
    SearchResult,
    SearchStreamItem,
    SnapshotInfo,
    StoredDocument,
    T,
    UpsertAck,
    UpsertBatches,
    UpsertResult,
    calibrate_call,
    channel_options,
    chunking_proto,
    count_tokens_call,
    create_collection_call,
    delete_call,
    delete_collection_call,
    embed_call,
    embed_stream_item,
    embed_stream_requests,
    get_collection_call,
    get_documents_call,
    health_call,
    list_page_call,
    model_info_call,
    search_call,
    search_request,
    search_stream_item,
    search_stream_requests,
    snapshot_call,
    update_collection_call,
    upsert_call,
)
from zembed.v1 import zembed_pb2_grpc as pb_grpc


class AsyncClient:
    """Asyncio client over one ``grpc.aio`` channel; create it inside the event loop that uses it.
    Arguments as :class:`zembed.service.client.Client`."""

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        timeout: float | None = 30.0,
        stream_timeout: float | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        target, creds, self.metadata = channel_options(
            target, token, tls, root_certificates, private_key, certificate_chain
        )
        self.target = target
        self.channel = (
            grpc.aio.secure_channel(target, creds, options=list(options))
            if creds is not None
            else grpc.aio.insecure_channel(target, options=list(options))
        )
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._stubs: dict[str, Any] = {
            "embedding": pb_grpc.EmbeddingServiceStub(self.channel),
            "search": pb_grpc.SearchServiceStub(self.channel),
            "health": health_pb2_grpc.HealthStub(self.channel),
        }

    async def _run(self, call: Call[T]) -> T:
        method = getattr(self._stubs[call.service], call.method)
        return call.parse(await method(call.request, metadata=self.metadata, timeout=self.timeout))

    async def _stream(self, service: str, method: str, requests: Iterator[Any]) -> AsyncIterator[Any]:
        feed = Feed(requests)
        stub = getattr(self._stubs[service], method)
        async for r in stub(iter(feed), metadata=self.metadata, timeout=self.stream_timeout):
            yield r
        feed.check()

    # ------------------------------------------------------------------ embedding
    async def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = None,
        dimensions: int = 0,
        encoding: EncodingName = "float32",
        strict: bool = False,
    ) -> Embeddings:
        return await self._run(embed_call(texts, input_type, dimensions, encoding, strict))

    async def embed_stream(
        self,
        items: Iterable[str | tuple[str, str]],
        *,
        input_type: InputType = None,
        dimensions: int = 0,
        encoding: EncodingName = "float32",
        strict: bool = False,
    ) -> AsyncIterator[EmbedStreamItem]:
        reqs = embed_stream_requests(items, input_type, dimensions, encoding, strict)
        async for r in self._stream("embedding", "EmbedStream", reqs):
            yield embed_stream_item(r, encoding)

    async def count_tokens(self, texts: Sequence[str], *, input_type: InputType = None) -> list[int]:
        return await self._run(count_tokens_call(texts, input_type))

    async def model_info(self) -> ModelInfo:
        return await self._run(model_info_call())

    async def health(self, service: str = "") -> str:
        return await self._run(health_call(service))

    # ------------------------------------------------------------------ collections
    async def create_collection(
        self,
        name: str,
        *,
        code_bits: int = 0,
        rescore_dims: int = 0,
        rescore_dtype: str = "",
        calibration: str = "",
        calibration_sample: int = 0,
        filterable: Sequence[str] = (),
    ) -> CollectionInfo:
        return await self._run(
            create_collection_call(
                name, code_bits, rescore_dims, rescore_dtype, calibration, calibration_sample, filterable
            )
        )

    async def get_collection(self, name: str) -> CollectionInfo:
        return await self._run(get_collection_call(name))

    async def list_collections(self, *, page_size: int = 0) -> list[CollectionInfo]:
        out: list[CollectionInfo] = []
        token = ""
        while True:
            page, token = await self._run(list_page_call(page_size, token))
            out.extend(page)
            if not token:
                return out

    async def update_collection(self, name: str, *, add_filterable: Sequence[str]) -> CollectionInfo:
        return await self._run(update_collection_call(name, add_filterable))

    async def delete_collection(self, name: str) -> None:
        await self._run(delete_collection_call(name))

    async def calibrate(self, name: str) -> CollectionInfo:
        return await self._run(calibrate_call(name))

    async def snapshot(self, name: str = "") -> SnapshotInfo:
        return await self._run(snapshot_call(name))

    # ------------------------------------------------------------------ documents
    async def upsert(
        self,
        collection: str,
        documents: Iterable[Mapping[str, Any] | Document],
        *,
        chunking: bool = False,
        chunk_tokens: int = 0,
        chunk_overlap: int = 0,
    ) -> UpsertResult:
        chunks = chunking_proto(chunking, chunk_tokens, chunk_overlap)
        return await self._run(upsert_call(collection, documents, chunks))

    async def upsert_stream(
        self,
        collection: str,
        documents: Iterable[Mapping[str, Any] | Document],
        *,
        batch: int = 256,
        chunking: bool = False,
    ) -> AsyncIterator[UpsertAck]:
        feed = UpsertBatches(collection, documents, batch, chunking_proto(chunking))
        async for r in self._stream("search", "UpsertStream", feed.requests()):
            for ack in feed.acks(r):
                yield ack

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        return await self._run(delete_call(collection, ids))

    async def get_documents(
        self, collection: str, ids: Sequence[str], *, include_vectors: bool = False
    ) -> list[StoredDocument]:
        return await self._run(get_documents_call(collection, ids, include_vectors))

    # ------------------------------------------------------------------ search
    async def search(
        self,
        collection: str,
        *,
        text: str | None = None,
        code: Sequence[float] | F32 | None = None,
        rescore: Sequence[float] | F32 | None = None,
        top_k: int | None = None,
        filter: Mapping[str, Any] | None = None,
        shortlist: int = 0,
        float_reads: int = 0,
        refine: bool | None = None,
        recall_target: float = 0.0,
        oversampling: int = 0,
        use_rescore: bool | None = None,
        include_metadata: bool | None = None,
        strict: bool = False,
        allow_partial: bool = False,
    ) -> SearchResult:
        return await self._run(
            search_call(
                search_request(
                    collection,
                    text=text,
                    code=code,
                    rescore=rescore,
                    top_k=top_k,
                    filter=filter,
                    shortlist=shortlist,
                    float_reads=float_reads,
                    refine=refine,
                    recall_target=recall_target,
                    oversampling=oversampling,
                    use_rescore=use_rescore,
                    include_metadata=include_metadata,
                    strict=strict,
                    allow_partial=allow_partial,
                )
            )
        )

    async def search_stream(
        self,
        collection: str,
        queries: Iterable[tuple[str, str | Sequence[float] | F32]],
        **options: Any,
    ) -> AsyncIterator[SearchStreamItem]:
        search_request(collection, text="-", **options)  # bad keywords: TypeError now, not mid-stream
        reqs = search_stream_requests(collection, queries, options)
        async for r in self._stream("search", "SearchStream", reqs):
            yield search_stream_item(r)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
