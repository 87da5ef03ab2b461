"""Request bodies (pydantic: they also make the OpenAPI document). Shapes follow the hosted API's
official SDK (``zeroentropy`` types) and the OpenAI embeddings API; unknown fields are ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EmbedBody(_Body):
    input: str | list[str]
    input_type: Literal["query", "document"]
    model: str
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    latency: Literal["fast", "slow"] | None = None


class EmbedResult(_Body):
    embedding: list[float] | str


class Usage(_Body):
    total_bytes: int
    total_tokens: int


class EmbedResponse(_Body):
    results: list[EmbedResult]
    usage: Usage


class RerankBody(_Body):
    query: str
    documents: list[str]
    model: str
    top_n: int | None = None


class CollectionBody(_Body):
    collection_name: str
    num_shards: int = 1


class NameBody(_Body):
    collection_name: str


class Message(_Body):
    message: str = "Success!"


class CollectionList(_Body):
    collection_names: list[str]


class RecallPoint(_Body):
    float_reads_per_result: int
    shortlist_per_read: int
    recall: float


class CollectionInfo(_Body):
    """Extension (the hosted API has no such path): a collection's calibration and the recall@10
    against exact search measured at it, at the defaults (latency_mode low) and per setting."""

    collection_name: str
    num_passages: int
    calibrated_at: int
    calibration_final: bool
    measured_recall: float | None
    recall_points: list[RecallPoint]


class TextContent(_Body):
    type: Literal["text"]
    text: str


class PagesContent(_Body):
    type: Literal["text-pages", "text-pages-unordered"]
    pages: list[str]


class BinaryContent(_Body):
    type: Literal["auto"]
    base64_data: str


class AddDocumentBody(_Body):
    collection_name: str
    path: str
    content: TextContent | PagesContent | BinaryContent = Field(discriminator="type")
    metadata: dict[str, str | list[str]] | None = None
    overwrite: bool = False


class UpdateDocumentBody(_Body):
    collection_name: str
    path: str
    metadata: dict[str, str | list[str]] | None = None
    index_status: Literal["not_parsed", "not_indexed"] | None = None


class DeleteDocumentBody(_Body):
    collection_name: str
    path: str | list[str]


class DocumentInfoBody(_Body):
    collection_name: str
    path: str
    include_content: bool = False


class DocumentListBody(_Body):
    collection_name: str
    limit: int = 1024
    path_gt: str | None = None
    path_prefix: str | None = None


class PageInfoBody(_Body):
    collection_name: str
    path: str
    page_index: int
    include_content: bool = False


class TopDocumentsBody(_Body):
    collection_name: str
    k: int
    query: str | None
    filter: dict[str, Any] | None = None
    include_metadata: bool = False
    latency_mode: Literal["low", "high"] = "low"
    reranker: str | None = None


class TopPagesBody(_Body):
    collection_name: str
    k: int
    query: str
    filter: dict[str, Any] | None = None
    include_content: bool = False
    include_metadata: bool = False
    latency_mode: Literal["low", "high"] = "low"


class TopSnippetsBody(_Body):
    collection_name: str
    k: int
    query: str
    filter: dict[str, Any] | None = None
    include_document_metadata: bool = False
    precise_responses: bool = False
    reranker: str | None = None
    latency_mode: Literal["low", "high"] = "low"  # extension: as top-documents (the SDK has no such field)


class StatusBody(_Body):
    collection_name: str | None = None


class OpenAIEmbeddingsBody(_Body):
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    input_type: Literal["query", "document"] | None = None  # extension: the model's prompt
