"""The Python client for zembed-serve: every RPC, typed results, plain-Python metadata.

``Client`` (blocking, here) and ``AsyncClient`` (asyncio, ``zembed.service.aio_client``) build every
request and read every response with this module's functions (one :class:`Call` per RPC, stream
request generators and item parsers), so the two differ only in how they wait::

    from zembed.service.client import Client

    with Client("localhost:50051", token="...") as c:
        out = c.embed(["hello"], input_type="query")          # Embeddings: .vectors [1, dims], .usage
        c.create_collection("docs", filterable=["lang"])
        c.upsert("docs", [{"id": "a", "text": "...", "metadata": {"lang": "de"}}])
        hits = c.search("docs", text="...", top_k=5, filter={"lang": {"$ne": "fr"}})
        hits[0].id, hits[0].score, hits[0].metadata                 # metadata: a plain dict

Errors the server returns are raised as ``grpc.RpcError`` (``.code()``, ``.details()`` naming the field,
the limit and the value); stream items carry their own status instead. Inputs the contract cannot carry
(a metadata value such as a set, an unknown document key, a filter operator) are refused with a
``ValueError`` naming the key before anything is sent.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2

from zembed.service.metadata import flat_json, metadata_from_proto, metadata_to_proto, value_to_proto
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

F32 = npt.NDArray[np.float32]
T = TypeVar("T")

InputType = Literal["query", "document"] | None
EncodingName = Literal["float32", "float16", "int8", "binary", "float_list"]

INPUT_TYPES: dict[str | None, pb.InputType] = {
    None: pb.INPUT_TYPE_UNSPECIFIED,
    "query": pb.INPUT_TYPE_QUERY,
    "document": pb.INPUT_TYPE_DOCUMENT,
}
ENCODINGS: dict[str, pb.Encoding] = {
    "float32": pb.ENCODING_FLOAT32,
    "float16": pb.ENCODING_FLOAT16,
    "int8": pb.ENCODING_INT8,
    "binary": pb.ENCODING_BINARY,
    "float_list": pb.ENCODING_FLOAT_LIST,
}
_DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "i1", "binary": "u1"}
FILTER_OPS = ("$eq", "$ne", "$in", "$nin")
DOCUMENT_KEYS = ("id", "text", "code", "rescore", "metadata")


# ---------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Usage:
    total_tokens: int
    total_bytes: int  # as the hosted zembed API counts them: 150 + UTF-8 length per input


@dataclass(frozen=True)
class Embeddings:
    """One Embed call's vectors, one row per input, in the encoding asked for: float32 / float16
    arrays, int8 with a per-row ``scales`` (value = int8 x scale), ``binary`` sign bits packed
    most-significant-bit first (uint8, ``ceil(dimensions / 8)`` per row), ``float_list`` as float32."""

    vectors: npt.NDArray[Any]
    encoding: str
    dimensions: int
    tokens: list[int]
    truncated: list[bool]
    usage: Usage
    scales: F32 | None = None

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.vectors.shape)

    def as_float32(self) -> F32:
        """The vectors as float32 (int8 times its scale; binary as +-1 per dimension)."""
        return _as_float32(self.vectors, self.encoding, self.scales, self.dimensions)


@dataclass(frozen=True)
class EmbedStreamItem:
    """One EmbedStream result, in completion order, matched to its input by ``id``."""

    id: str
    code: grpc.StatusCode
    message: str
    vector: npt.NDArray[Any] | None = None
    scale: float | None = None
    tokens: int = 0
    truncated: bool = False
    dimensions: int = 0

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    dimensions: list[int]  # native first
    max_tokens: int
    prompt_names: list[str]
    dtype: str
    provider: str
    pooling: str


@dataclass(frozen=True)
class RecallPoint:
    float_reads_per_result: int
    shortlist_per_read: int
    recall: float


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    count: int
    code_bits: int
    rescore_dims: int
    rescore_dtype: str
    calibration: str
    calibration_sample: int
    filterable: list[str]
    model_id: str
    calibrated: bool
    calibrated_at: int
    calibration_final: bool
    measured_recall: float | None
    recall_points: list[RecallPoint]
    index_bytes: int


@dataclass(frozen=True)
class UpsertResult:
    upserted: int
    usage: Usage
    passages: int = 0  # rows written with chunking (one per passage)


@dataclass(frozen=True)
class UpsertAck:
    """One UpsertStream acknowledgement (in request order, once the document is durable)."""

    id: str
    code: grpc.StatusCode
    message: str

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK


@dataclass(frozen=True)
class StoredDocument:
    id: str
    found: bool
    metadata: dict[str, Any]
    rescore: F32 | None = None  # with include_vectors: the stored (normalized) rescore vector
    code: bytes = b""  # with include_vectors: the packed binary code


@dataclass(frozen=True)
class Passage:
    """Where a hit lies in a document upserted with chunking: ``text[start:end]`` of its text."""

    index: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # cosine from the float rescoring (or 1 - 2 * hamming / bits with rescore off)
    hamming: int
    metadata: dict[str, Any]
    passage: Passage | None = None  # set for a passage of a chunked document


@dataclass(frozen=True)
class ShardFailure:
    shard: int
    address: str
    code: grpc.StatusCode
    message: str


class SearchResult(list[Hit]):
    """The hits, best first (a list), with the call's ``usage``; ``partial`` and ``missing_shards``
    only from a sharded router asked for ``allow_partial``."""

    def __init__(
        self,
        hits: Iterable[Hit] = (),
        usage: Usage | None = None,
        partial: bool = False,
        missing_shards: Sequence[ShardFailure] = (),
    ) -> None:
        super().__init__(hits)
        self.usage = usage or Usage(0, 0)
        self.partial = partial
        self.missing_shards = list(missing_shards)


@dataclass(frozen=True)
class SearchStreamItem:
    id: str
    code: grpc.StatusCode
    message: str
    hits: list[Hit]

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK


@dataclass(frozen=True)
class SnapshotInfo:
    path: str  # on the server's filesystem: <data directory>/snapshots/<name>
    size_bytes: int
    seconds: float


@dataclass(frozen=True)
class Document:
    """A document to upsert (a mapping with the same keys works too): ``text`` (embedded by the
    server) or a precomputed ``code`` vector (+ ``rescore`` when the collection's rescore dims
    differ), and JSON metadata."""

    id: str
    text: str | None = None
    code: Sequence[float] | F32 | None = None
    rescore: Sequence[float] | F32 | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- requests
def _input_type(value: str | None) -> pb.InputType:
    if value not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of query, document or None; given {value!r}")
    return INPUT_TYPES[value]


def _encoding(value: str) -> pb.Encoding:
    if value not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}; given {value!r}")
    return ENCODINGS[value]


def _truncation(strict: bool) -> pb.Truncation:
    return pb.TRUNCATION_STRICT if strict else pb.TRUNCATION_TRUNCATE


def vectors(code: Any, rescore: Any = None) -> pb.Vectors:
    """Packed little-endian float32 bytes (4 bytes per dimension, cheap to build and parse)."""
    out = pb.Vectors(code_f32le=np.asarray(code, dtype="<f4").tobytes())
    if rescore is not None and len(rescore):
        out.rescore_f32le = np.asarray(rescore, dtype="<f4").tobytes()
    return out


def document(d: Mapping[str, Any] | Document) -> pb.Document:
    """A document as the proto's: text or vectors (never both), metadata converted strictly."""
    if isinstance(d, Document):
        d = {k: getattr(d, k) for k in DOCUMENT_KEYS}
    unknown = sorted(set(d) - set(DOCUMENT_KEYS))
    if unknown:
        raise ValueError(f"document: unknown keys {unknown}; expected {', '.join(DOCUMENT_KEYS)}")
    doc_id = d.get("id")
    if not isinstance(doc_id, str):
        raise ValueError(f"document: `id` must be a string; given {doc_id!r}")
    text, code = d.get("text"), d.get("code")
    if (text is None) == (code is None):
        raise ValueError(f"document {doc_id!r}: give exactly one of `text` or `code`")
    out = pb.Document(id=doc_id, metadata=metadata_to_proto(d.get("metadata") or {}, f"{doc_id}.metadata"))
    if text is not None:
        out.text = text
    else:
        out.vectors.CopyFrom(vectors(code, d.get("rescore")))
    return out


def columns(docs: Sequence[Mapping[str, Any] | Document]) -> pb.DocumentColumns | None:
    """The documents as DocumentColumns (one float32 blob, metadata as JSON text: the cheapest form
    to build and for the server to read) when every one is an id, a code vector of one length (no
    text, no rescore) and metadata of flat JSON values; None: they go as documents (which also
    reports what is wrong with any of them)."""
    if not docs:
        return None
    ids: list[str] = []
    rows: list[bytes] = []
    meta: list[bytes] = []
    width = -1
    doc_id: Any
    m: Any
    for d in docs:
        if isinstance(d, Document):
            doc_id, code, text, rescore, m = d.id, d.code, d.text, d.rescore, d.metadata
        elif isinstance(d, Mapping) and d.keys() <= _COLUMN_KEYS:
            doc_id, code, text, rescore, m = d.get("id"), d.get("code"), None, None, d.get("metadata")
        else:
            return None
        if type(doc_id) is not str or code is None or text is not None or rescore is not None:
            return None
        try:
            arr = np.asarray(code, dtype="<f4")
        except (TypeError, ValueError):
            return None
        text_json = flat_json(m)
        if arr.ndim != 1 or not arr.size or (width >= 0 and arr.size != width) or text_json is None:
            return None
        width = arr.size
        ids.append(doc_id)
        rows.append(arr.tobytes())
        meta.append(text_json)
    out = pb.DocumentColumns(ids=ids, code_f32le=b"".join(rows))
    if any(meta):
        out.metadata_json.extend(meta)
    return out


_COLUMN_KEYS = frozenset({"id", "code", "metadata"})


def filter_to_proto(spec: Mapping[str, Any] | None) -> list[pb.Condition]:
    """``{"lang": "de"}``, ``{"lang": ["de", "fr"]}`` (any of), ``{"lang": {"$in": [...]}}``,
    ``{"$eq": v}``, negated: ``{"lang": {"$ne": "fr"}}``, ``{"$nin": [...]}``. Fields are ANDed."""
    out = []
    for name, cond in (spec or {}).items():
        where = f"filter.{name}"
        negate = False
        if isinstance(cond, Mapping):
            if len(cond) != 1 or next(iter(cond)) not in FILTER_OPS:
                raise ValueError(f"{where}: expected one of {', '.join(FILTER_OPS)}; given {sorted(cond)}")
            op, value = next(iter(cond.items()))
            negate = op in ("$ne", "$nin")
            if op in ("$in", "$nin"):
                if not isinstance(value, list | tuple | set | frozenset):
                    raise ValueError(f"{where}: {op} takes a list; given {value!r}")
                values = list(value)
            else:
                values = [value]
        elif isinstance(cond, list | tuple | set | frozenset):
            values = list(cond)
        else:
            values = [cond]
        if not values:
            raise ValueError(f"{where}: no values")
        for v in values:
            if isinstance(v, list | tuple | Mapping) or v is None:
                raise ValueError(f"{where}: filter values are strings, numbers or booleans; given {v!r}")
        out.append(pb.Condition(field=name, any_of=[value_to_proto(v, where) for v in values], negate=negate))
    return out


def search_request(
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
) -> pb.SearchRequest:
    if (text is None) == (code is None):
        raise ValueError("search: give exactly one of `text` or `code` (a vector)")
    req = pb.SearchRequest(
        collection=collection,
        filter=filter_to_proto(filter),
        shortlist=shortlist,
        float_reads=float_reads,
        recall_target=recall_target,
        oversampling=oversampling,
        truncation=_truncation(strict),
        allow_partial=allow_partial,
    )
    if text is not None:
        req.text = text
    else:
        req.vectors.CopyFrom(vectors(code, rescore))
    if top_k is not None:
        req.top_k = top_k
    if refine is not None:
        req.refine = refine
    if use_rescore is not None:
        req.rescore = use_rescore
    if include_metadata is not None:
        req.include_metadata = include_metadata
    return req


# ---------------------------------------------------------------------------------------- responses
def _status(code: int) -> grpc.StatusCode:
    for s in grpc.StatusCode:
        if s.value[0] == code:
            return s
    return grpc.StatusCode.UNKNOWN


def _usage(u: pb.Usage) -> Usage:
    return Usage(total_tokens=u.total_tokens, total_bytes=u.total_bytes)


def _row(e: pb.Embedding, encoding: str) -> npt.NDArray[Any]:
    if encoding == "float_list":
        return np.asarray(e.values, dtype=np.float32)
    return np.frombuffer(e.data, dtype=_DTYPES[encoding])


def _as_float32(v: npt.NDArray[Any], encoding: str, scales: Any, dims: int) -> F32:
    if encoding == "int8":
        out: F32 = v.astype(np.float32) * np.asarray(scales, dtype=np.float32)[..., None]
        return out
    if encoding == "binary":
        bits = np.unpackbits(v, axis=-1)[..., :dims]
        return bits.astype(np.float32) * 2 - 1
    return v.astype(np.float32)


def embeddings(resp: pb.EmbedResponse, encoding: str) -> Embeddings:
    rows = [_row(e, encoding) for e in resp.embeddings]
    width = len(rows[0]) if rows else 0
    return Embeddings(
        vectors=np.stack(rows) if rows else np.empty((0, width), dtype=_DTYPES.get(encoding, "<f4")),
        encoding=encoding,
        dimensions=resp.dimensions,
        tokens=[e.tokens for e in resp.embeddings],
        truncated=[e.truncated for e in resp.embeddings],
        usage=_usage(resp.usage),
        scales=np.asarray([e.scale for e in resp.embeddings], dtype=np.float32)
        if encoding == "int8"
        else None,
    )


def embed_stream_item(r: pb.EmbedStreamResponse, encoding: str) -> EmbedStreamItem:
    code = _status(r.status.code)
    if code != grpc.StatusCode.OK:
        return EmbedStreamItem(id=r.id, code=code, message=r.status.message)
    return EmbedStreamItem(
        id=r.id,
        code=code,
        message=r.status.message,
        vector=_row(r.embedding, encoding),
        scale=r.embedding.scale if encoding == "int8" else None,
        tokens=r.embedding.tokens,
        truncated=r.embedding.truncated,
        dimensions=r.dimensions,
    )


def model_info(r: pb.GetModelInfoResponse) -> ModelInfo:
    return ModelInfo(
        model_id=r.model_id,
        dimensions=list(r.dimensions),
        max_tokens=r.max_tokens,
        prompt_names=list(r.prompt_names),
        dtype=r.dtype,
        provider=r.provider,
        pooling=r.pooling,
    )


def collection_info(c: pb.Collection) -> CollectionInfo:
    return CollectionInfo(
        name=c.name,
        count=c.count,
        code_bits=c.config.code_bits,
        rescore_dims=c.config.rescore_dims,
        rescore_dtype=c.config.rescore_dtype,
        calibration=c.config.calibration,
        calibration_sample=c.config.calibration_sample,
        filterable=list(c.config.filterable),
        model_id=c.model_id,
        calibrated=c.calibrated,
        calibrated_at=c.calibrated_at,
        calibration_final=c.calibration_final,
        measured_recall=c.measured_recall if c.HasField("measured_recall") else None,
        recall_points=[
            RecallPoint(p.float_reads_per_result, p.shortlist_per_read, p.recall) for p in c.recall_points
        ],
        index_bytes=c.index_bytes,
    )


def hit(h: pb.Hit) -> Hit:
    p = h.passage if h.HasField("passage") else None
    return Hit(
        id=h.id,
        score=h.score,
        hamming=h.hamming,
        metadata=metadata_from_proto(h.metadata),
        passage=Passage(p.index, p.start, p.end, p.text) if p is not None else None,
    )


def search_result(r: pb.SearchResponse) -> SearchResult:
    return SearchResult(
        [hit(h) for h in r.hits],
        _usage(r.usage),
        r.partial,
        [
            ShardFailure(f.shard, f.address, _status(f.status.code), f.status.message)
            for f in r.missing_shards
        ],
    )


def stored_document(d: pb.StoredDocument) -> StoredDocument:
    return StoredDocument(
        id=d.id,
        found=d.found,
        metadata=metadata_from_proto(d.metadata),
        rescore=np.asarray(d.rescore, dtype=np.float32) if len(d.rescore) else None,
        code=d.code,
    )


def search_stream_item(r: pb.SearchStreamResponse) -> SearchStreamItem:
    return SearchStreamItem(
        id=r.id, code=_status(r.status.code), message=r.status.message, hits=[hit(h) for h in r.hits]
    )


# ---------------------------------------------------------------------------------------- calls
Service = Literal["embedding", "search", "health"]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One unary RPC: which stub and method, the request, and how to read the response."""

    service: Service
    method: str
    request: Any
    parse: Callable[[Any], T]


def embed_call(
    texts: Sequence[str],
    input_type: str | None,
    dimensions: int,
    encoding: str,
    strict: bool,
) -> Call[Embeddings]:
    if isinstance(texts, str):
        raise ValueError("embed takes a list of texts; given one string")
    req = pb.EmbedRequest(
        inputs=list(texts),
        input_type=_input_type(input_type),
        dimensions=dimensions,
        encoding=_encoding(encoding),
        truncation=_truncation(strict),
    )
    return Call("embedding", "Embed", req, lambda r: embeddings(r, encoding))


def count_tokens_call(texts: Sequence[str], input_type: str | None) -> Call[list[int]]:
    req = pb.CountTokensRequest(inputs=list(texts), input_type=_input_type(input_type))
    return Call("embedding", "CountTokens", req, lambda r: list(r.tokens))


def model_info_call() -> Call[ModelInfo]:
    return Call("embedding", "GetModelInfo", pb.GetModelInfoRequest(), model_info)


def health_call(service: str) -> Call[str]:
    return Call(
        "health",
        "Check",
        health_pb2.HealthCheckRequest(service=service),
        lambda r: health_pb2.HealthCheckResponse.ServingStatus.Name(r.status),
    )


def create_collection_call(
    name: str,
    code_bits: int,
    rescore_dims: int,
    rescore_dtype: str,
    calibration: str,
    calibration_sample: int,
    filterable: Sequence[str],
) -> Call[CollectionInfo]:
    if isinstance(filterable, str):
        filterable = [filterable]
    config = pb.CollectionConfig(
        code_bits=code_bits,
        rescore_dims=rescore_dims,
        rescore_dtype=rescore_dtype,
        calibration=calibration,
        calibration_sample=calibration_sample,
        filterable=list(filterable),
    )
    req = pb.CreateCollectionRequest(name=name, config=config)
    return Call("search", "CreateCollection", req, lambda r: collection_info(r.collection))


def get_collection_call(name: str) -> Call[CollectionInfo]:
    req = pb.GetCollectionRequest(name=name)
    return Call("search", "GetCollection", req, lambda r: collection_info(r.collection))


def list_page_call(page_size: int, page_token: str) -> Call[tuple[list[CollectionInfo], str]]:
    req = pb.ListCollectionsRequest(page_size=page_size, page_token=page_token)
    return Call(
        "search",
        "ListCollections",
        req,
        lambda r: ([collection_info(c) for c in r.collections], r.next_page_token),
    )


def update_collection_call(name: str, add_filterable: Sequence[str]) -> Call[CollectionInfo]:
    if isinstance(add_filterable, str):
        add_filterable = [add_filterable]
    req = pb.UpdateCollectionRequest(name=name, add_filterable=list(add_filterable))
    return Call("search", "UpdateCollection", req, lambda r: collection_info(r.collection))


def delete_collection_call(name: str) -> Call[None]:
    return Call("search", "DeleteCollection", pb.DeleteCollectionRequest(name=name), lambda r: None)


def calibrate_call(name: str) -> Call[CollectionInfo]:
    req = pb.CalibrateRequest(name=name)
    return Call("search", "Calibrate", req, lambda r: collection_info(r.collection))


def snapshot_call(name: str) -> Call[SnapshotInfo]:
    return Call(
        "search",
        "Snapshot",
        pb.SnapshotRequest(name=name),
        lambda r: SnapshotInfo(path=r.path, size_bytes=r.size_bytes, seconds=r.seconds),
    )


def chunking_proto(enabled: bool, max_tokens: int = 0, overlap_tokens: int = 0) -> pb.Chunking:
    return pb.Chunking(enabled=enabled, max_tokens=max_tokens, overlap_tokens=overlap_tokens)


def upsert_call(
    collection: str, documents: Iterable[Mapping[str, Any] | Document], chunks: pb.Chunking
) -> Call[UpsertResult]:
    docs = list(documents)
    cols = None if chunks.enabled else columns(docs)
    if cols is not None:  # vectors only: the columnar form
        req = pb.UpsertRequest(collection=collection, columns=cols)
    else:
        req = pb.UpsertRequest(collection=collection, documents=[document(d) for d in docs], chunking=chunks)
    return Call(
        "search",
        "Upsert",
        req,
        lambda r: UpsertResult(upserted=r.upserted, usage=_usage(r.usage), passages=r.passages),
    )


def delete_call(collection: str, ids: Sequence[str]) -> Call[int]:
    req = pb.DeleteDocumentsRequest(collection=collection, ids=_ids(ids))
    return Call("search", "DeleteDocuments", req, lambda r: int(r.deleted))


def get_documents_call(
    collection: str, ids: Sequence[str], include_vectors: bool
) -> Call[list[StoredDocument]]:
    req = pb.GetDocumentsRequest(collection=collection, ids=_ids(ids), include_vectors=include_vectors)
    return Call("search", "GetDocuments", req, lambda r: [stored_document(d) for d in r.documents])


def search_call(req: pb.SearchRequest) -> Call[SearchResult]:
    return Call("search", "Search", req, search_result)


def _ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise ValueError("ids: expected a list of ids; given one string")
    return list(ids)


# ---------------------------------------------------------------------------------------- streams
def embed_stream_requests(
    items: Iterable[str | tuple[str, str]],
    input_type: str | None,
    dimensions: int,
    encoding: str,
    strict: bool,
) -> Iterator[pb.EmbedStreamRequest]:
    """A text gets its position as id ("0", "1", ...); an ``(id, text)`` pair keeps its id."""
    kind, enc, trunc = _input_type(input_type), _encoding(encoding), _truncation(strict)
    for i, item in enumerate(items):
        item_id, text = (str(i), item) if isinstance(item, str) else item
        yield pb.EmbedStreamRequest(
            id=item_id, input=text, input_type=kind, dimensions=dimensions, encoding=enc, truncation=trunc
        )


class UpsertBatches:
    """UpsertStream's bulk form: documents sent ``batch`` per message, each message answered (in
    order) with one status per document, matched back to the ids here. A document that cannot be
    converted ends the input after the documents before it are sent, then is raised (see Feed)."""

    def __init__(
        self,
        collection: str,
        documents: Iterable[Mapping[str, Any] | Document],
        batch: int,
        chunks: pb.Chunking,
    ) -> None:
        if not 1 <= batch <= 10_000:
            raise ValueError(f"batch must be 1 to 10000 documents per message; given {batch}")
        self.collection, self.documents, self.batch, self.chunks = collection, documents, batch, chunks
        self.sent: deque[list[str]] = deque()  # the ids of each message sent and not yet answered

    def _message(self, docs: list[pb.Document]) -> pb.UpsertStreamRequest:
        self.sent.append([d.id for d in docs])
        return pb.UpsertStreamRequest(collection=self.collection, documents=docs, chunking=self.chunks)

    def _messages(self, raw: list[Mapping[str, Any] | Document]) -> Iterator[pb.UpsertStreamRequest]:
        """One message of these documents: columns when they are vectors only; else documents, up
        to the first that cannot be converted (raised once the ones before it are sent)."""
        cols = None if self.chunks.enabled else columns(raw)
        if cols is not None:
            self.sent.append(list(cols.ids))
            yield pb.UpsertStreamRequest(collection=self.collection, columns=cols)
            return
        docs: list[pb.Document] = []
        error: Exception | None = None
        for d in raw:
            try:
                docs.append(document(d))
            except Exception as exc:
                error = exc
                break
        if docs:
            yield self._message(docs)
        if error is not None:
            raise error

    def requests(self) -> Iterator[pb.UpsertStreamRequest]:
        raw: list[Mapping[str, Any] | Document] = []
        error: Exception | None = None
        items = iter(self.documents)
        while True:
            try:
                raw.append(next(items))
            except StopIteration:
                break
            except Exception as exc:  # the caller's iterable failed: what came before it is sent
                error = exc
                break
            if len(raw) == self.batch:
                batch, raw = raw, []
                yield from self._messages(batch)
        if raw:
            yield from self._messages(raw)
        if error is not None:
            raise error

    def acks(self, r: pb.UpsertStreamResponse) -> list[UpsertAck]:
        ids = self.sent.popleft()
        if len(r.statuses) != len(ids):  # a server without the bulk form answers the message as one
            return [UpsertAck(id=i, code=_status(r.status.code), message=r.status.message) for i in ids]
        return [
            UpsertAck(id=i, code=_status(st.code), message=st.message)
            for i, st in zip(ids, r.statuses, strict=True)
        ]


def search_stream_requests(
    collection: str, queries: Iterable[tuple[str, str | Sequence[float] | F32]], options: Mapping[str, Any]
) -> Iterator[pb.SearchStreamRequest]:
    """Each query is ``(id, text)`` or ``(id, vector)``; ``options`` are search()'s keywords."""
    for query_id, q in queries:
        req = (
            search_request(collection, text=q, **options)
            if isinstance(q, str)
            else search_request(collection, code=q, **options)
        )
        yield pb.SearchStreamRequest(id=query_id, search=req)


class Feed:
    """A stream's request generator: an error building a request (a bad document, say) ends the
    stream's input, so what was sent is still answered, and is raised to the caller afterwards by
    :meth:`check` (gRPC would otherwise report it as a CANCELLED call)."""

    def __init__(self, requests: Iterator[Any]) -> None:
        self.requests = requests
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self.requests
        except Exception as exc:
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error


# ---------------------------------------------------------------------------------------- channel
DEFAULT_ADDRESS = "localhost:50051"


def channel_options(
    target: str | None,
    token: str | None,
    tls: bool,
    root_certificates: bytes | None,
    private_key: bytes | None,
    certificate_chain: bytes | None,
) -> tuple[str, grpc.ChannelCredentials | None, tuple[tuple[str, str], ...]]:
    """(the address, TLS credentials or None for plaintext, the call metadata carrying the bearer
    token). Address and token default to ZEMBED_ADDRESS and ZEMBED_TOKEN, as for the command line."""
    target = target or os.environ.get("ZEMBED_ADDRESS") or DEFAULT_ADDRESS
    token = token if token is not None else os.environ.get("ZEMBED_TOKEN") or None
    creds = None
    if tls or root_certificates is not None or certificate_chain is not None:
        creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    return target, creds, ((("authorization", f"Bearer {token}"),) if token else ())


class Client:
    """Blocking client over one channel (both services and the health service).

    ``target`` is ``host:port`` (default: ZEMBED_ADDRESS, else localhost:50051); ``token`` the
    server's ``--token`` (default: ZEMBED_TOKEN); ``tls`` (or ``root_certificates``,
    PEM bytes) for TLS, ``private_key`` / ``certificate_chain`` for mutual TLS. ``timeout`` (seconds)
    bounds each unary call; ``stream_timeout`` each stream (None: no limit)."""

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
            grpc.secure_channel(target, creds, options=list(options))
            if creds is not None
            else grpc.insecure_channel(target, options=list(options))
        )
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.embedding = pb_grpc.EmbeddingServiceStub(self.channel)
        self.search_service = pb_grpc.SearchServiceStub(self.channel)
        from grpc_health.v1 import health_pb2_grpc

        self._stubs: dict[str, Any] = {
            "embedding": self.embedding,
            "search": self.search_service,
            "health": health_pb2_grpc.HealthStub(self.channel),
        }

    def _run(self, call: Call[T]) -> T:
        method = getattr(self._stubs[call.service], call.method)
        return call.parse(method(call.request, metadata=self.metadata, timeout=self.timeout))

    def _stream(self, service: str, method: str, requests: Iterator[Any]) -> Iterator[Any]:
        feed = Feed(requests)
        stub = getattr(self._stubs[service], method)
        yield from stub(iter(feed), metadata=self.metadata, timeout=self.stream_timeout)
        feed.check()

    # ------------------------------------------------------------------ embedding
    def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = None,
        dimensions: int = 0,
        encoding: EncodingName = "float32",
        strict: bool = False,
    ) -> Embeddings:
        """``dimensions`` 0: native; ``strict``: refuse over-long texts instead of truncating them."""
        return self._run(embed_call(texts, input_type, dimensions, encoding, strict))

    def embed_stream(
        self,
        items: Iterable[str | tuple[str, str]],
        *,
        input_type: InputType = None,
        dimensions: int = 0,
        encoding: EncodingName = "float32",
        strict: bool = False,
    ) -> Iterator[EmbedStreamItem]:
        """Results in completion order, each with its id (a text's position, or the id of an
        ``(id, text)`` pair) and its own status: a bad item does not end the stream."""
        reqs = embed_stream_requests(items, input_type, dimensions, encoding, strict)
        for r in self._stream("embedding", "EmbedStream", reqs):
            yield embed_stream_item(r, encoding)

    def count_tokens(self, texts: Sequence[str], *, input_type: InputType = None) -> list[int]:
        return self._run(count_tokens_call(texts, input_type))

    def model_info(self) -> ModelInfo:
        return self._run(model_info_call())

    def health(self, service: str = "") -> str:
        """``SERVING`` / ``NOT_SERVING`` (starting or draining); no token needed."""
        return self._run(health_call(service))

    # ------------------------------------------------------------------ collections
    def create_collection(
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
        """0 / "" mean the server's model-aware defaults (see CollectionConfig in the proto)."""
        return self._run(
            create_collection_call(
                name, code_bits, rescore_dims, rescore_dtype, calibration, calibration_sample, filterable
            )
        )

    def get_collection(self, name: str) -> CollectionInfo:
        return self._run(get_collection_call(name))

    def list_collections(self, *, page_size: int = 0) -> list[CollectionInfo]:
        """Every collection, following the pages."""
        out: list[CollectionInfo] = []
        token = ""
        while True:
            page, token = self._run(list_page_call(page_size, token))
            out.extend(page)
            if not token:
                return out

    def update_collection(self, name: str, *, add_filterable: Sequence[str]) -> CollectionInfo:
        """Makes more metadata fields filterable (stored documents are indexed)."""
        return self._run(update_collection_call(name, add_filterable))

    def delete_collection(self, name: str) -> None:
        self._run(delete_collection_call(name))

    def calibrate(self, name: str) -> CollectionInfo:
        return self._run(calibrate_call(name))

    def snapshot(self, name: str = "") -> SnapshotInfo:
        return self._run(snapshot_call(name))

    # ------------------------------------------------------------------ documents
    def upsert(
        self,
        collection: str,
        documents: Iterable[Mapping[str, Any] | Document],
        *,
        chunking: bool = False,
        chunk_tokens: int = 0,
        chunk_overlap: int = 0,
    ) -> UpsertResult:
        """One atomic, durable batch: each document ``id`` + ``text`` or ``code`` (+ ``rescore``)
        vectors, optional ``metadata``. ``chunking``: long texts are split into passages (tokens
        per passage and overlap 0: the server's defaults), each stored as a row."""
        chunks = chunking_proto(chunking, chunk_tokens, chunk_overlap)
        return self._run(upsert_call(collection, documents, chunks))

    def upsert_stream(
        self,
        collection: str,
        documents: Iterable[Mapping[str, Any] | Document],
        *,
        batch: int = 256,
        chunking: bool = False,
    ) -> Iterator[UpsertAck]:
        """Bulk loading: ``batch`` documents per message (text documents are embedded together, so
        at most the server's --max-inputs of them); one acknowledgement per document, in order,
        once it is durable, each with its own status."""
        feed = UpsertBatches(collection, documents, batch, chunking_proto(chunking))
        for r in self._stream("search", "UpsertStream", feed.requests()):
            yield from feed.acks(r)

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        """How many of the ids existed."""
        return self._run(delete_call(collection, ids))

    def get_documents(
        self, collection: str, ids: Sequence[str], *, include_vectors: bool = False
    ) -> list[StoredDocument]:
        return self._run(get_documents_call(collection, ids, include_vectors))

    # ------------------------------------------------------------------ search
    def search(
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
        """A text query (embedded as a query) or a ``code`` vector (+ ``rescore``); ``filter`` see
        :func:`filter_to_proto`; None / 0 leave a setting to the server (top_k 10)."""
        return self._run(
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

    def search_stream(
        self,
        collection: str,
        queries: Iterable[tuple[str, str | Sequence[float] | F32]],
        **options: Any,
    ) -> Iterator[SearchStreamItem]:
        """Many queries, ``(id, text)`` or ``(id, vector)``, with search()'s keywords for all;
        results in completion order with their own status."""
        search_request(collection, text="-", **options)  # bad keywords: TypeError now, not mid-stream
        reqs = search_stream_requests(collection, queries, options)
        for r in self._stream("search", "SearchStream", reqs):
            yield search_stream_item(r)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
