from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InputType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPUT_TYPE_UNSPECIFIED: _ClassVar[InputType]
    INPUT_TYPE_QUERY: _ClassVar[InputType]
    INPUT_TYPE_DOCUMENT: _ClassVar[InputType]

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    ENCODING_FLOAT32: _ClassVar[Encoding]
    ENCODING_FLOAT16: _ClassVar[Encoding]
    ENCODING_INT8: _ClassVar[Encoding]
    ENCODING_BINARY: _ClassVar[Encoding]
    ENCODING_FLOAT_LIST: _ClassVar[Encoding]

class Truncation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRUNCATION_UNSPECIFIED: _ClassVar[Truncation]
    TRUNCATION_TRUNCATE: _ClassVar[Truncation]
    TRUNCATION_STRICT: _ClassVar[Truncation]

class Latency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LATENCY_UNSPECIFIED: _ClassVar[Latency]
    LATENCY_FAST: _ClassVar[Latency]
    LATENCY_SLOW: _ClassVar[Latency]
INPUT_TYPE_UNSPECIFIED: InputType
INPUT_TYPE_QUERY: InputType
INPUT_TYPE_DOCUMENT: InputType
ENCODING_UNSPECIFIED: Encoding
ENCODING_FLOAT32: Encoding
ENCODING_FLOAT16: Encoding
ENCODING_INT8: Encoding
ENCODING_BINARY: Encoding
ENCODING_FLOAT_LIST: Encoding
TRUNCATION_UNSPECIFIED: Truncation
TRUNCATION_TRUNCATE: Truncation
TRUNCATION_STRICT: Truncation
LATENCY_UNSPECIFIED: Latency
LATENCY_FAST: Latency
LATENCY_SLOW: Latency

class Embedding(_message.Message):
    __slots__ = ("data", "values", "scale", "tokens", "truncated")
    DATA_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    values: _containers.RepeatedScalarFieldContainer[float]
    scale: float
    tokens: int
    truncated: bool
    def __init__(self, data: _Optional[bytes] = ..., values: _Optional[_Iterable[float]] = ..., scale: _Optional[float] = ..., tokens: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("total_tokens", "total_bytes")
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    total_tokens: int
    total_bytes: int
    def __init__(self, total_tokens: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("inputs", "input_type", "dimensions", "encoding", "truncation", "latency")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    input_type: InputType
    dimensions: int
    encoding: Encoding
    truncation: Truncation
    latency: Latency
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., input_type: _Optional[_Union[InputType, str]] = ..., dimensions: _Optional[int] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., truncation: _Optional[_Union[Truncation, str]] = ..., latency: _Optional[_Union[Latency, str]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "usage", "dimensions")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    usage: Usage
    dimensions: int
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., dimensions: _Optional[int] = ...) -> None: ...

class EmbedStreamRequest(_message.Message):
    __slots__ = ("id", "input", "input_type", "dimensions", "encoding", "truncation", "latency")
    ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    input: str
    input_type: InputType
    dimensions: int
    encoding: Encoding
    truncation: Truncation
    latency: Latency
    def __init__(self, id: _Optional[str] = ..., input: _Optional[str] = ..., input_type: _Optional[_Union[InputType, str]] = ..., dimensions: _Optional[int] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., truncation: _Optional[_Union[Truncation, str]] = ..., latency: _Optional[_Union[Latency, str]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EmbedStreamResponse(_message.Message):
    __slots__ = ("id", "status", "embedding", "dimensions")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: Status
    embedding: Embedding
    dimensions: int
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ..., dimensions: _Optional[int] = ...) -> None: ...

class CountTokensRequest(_message.Message):
    __slots__ = ("inputs", "input_type")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPE_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    input_type: InputType
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., input_type: _Optional[_Union[InputType, str]] = ...) -> None: ...

class CountTokensResponse(_message.Message):
    __slots__ = ("tokens", "max_tokens")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    max_tokens: int
    def __init__(self, tokens: _Optional[_Iterable[int]] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_id", "dimensions", "max_tokens", "prompt_names", "dtype", "provider", "pooling", "scan_kernel", "scan_threads")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAMES_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    SCAN_KERNEL_FIELD_NUMBER: _ClassVar[int]
    SCAN_THREADS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dimensions: _containers.RepeatedScalarFieldContainer[int]
    max_tokens: int
    prompt_names: _containers.RepeatedScalarFieldContainer[str]
    dtype: str
    provider: str
    pooling: str
    scan_kernel: str
    scan_threads: int
    def __init__(self, model_id: _Optional[str] = ..., dimensions: _Optional[_Iterable[int]] = ..., max_tokens: _Optional[int] = ..., prompt_names: _Optional[_Iterable[str]] = ..., dtype: _Optional[str] = ..., provider: _Optional[str] = ..., pooling: _Optional[str] = ..., scan_kernel: _Optional[str] = ..., scan_threads: _Optional[int] = ...) -> None: ...

class CollectionConfig(_message.Message):
    __slots__ = ("code_bits", "rescore_dims", "rescore_dtype", "calibration", "calibration_sample", "filterable")
    CODE_BITS_FIELD_NUMBER: _ClassVar[int]
    RESCORE_DIMS_FIELD_NUMBER: _ClassVar[int]
    RESCORE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FILTERABLE_FIELD_NUMBER: _ClassVar[int]
    code_bits: int
    rescore_dims: int
    rescore_dtype: str
    calibration: str
    calibration_sample: int
    filterable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, code_bits: _Optional[int] = ..., rescore_dims: _Optional[int] = ..., rescore_dtype: _Optional[str] = ..., calibration: _Optional[str] = ..., calibration_sample: _Optional[int] = ..., filterable: _Optional[_Iterable[str]] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("name", "config", "count", "calibrated", "index_bytes", "model_id", "calibrated_at", "calibration_final", "measured_recall", "recall_points", "bytes_in_use", "bytes_allocated", "bytes_per_document", "measured_at", "measured_with_samples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_FIELD_NUMBER: _ClassVar[int]
    INDEX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_AT_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FINAL_FIELD_NUMBER: _ClassVar[int]
    MEASURED_RECALL_FIELD_NUMBER: _ClassVar[int]
    RECALL_POINTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_USE_FIELD_NUMBER: _ClassVar[int]
    BYTES_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    MEASURED_WITH_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: CollectionConfig
    count: int
    calibrated: bool
    index_bytes: int
    model_id: str
    calibrated_at: int
    calibration_final: bool
    measured_recall: float
    recall_points: _containers.RepeatedCompositeFieldContainer[RecallPoint]
    bytes_in_use: int
    bytes_allocated: int
    bytes_per_document: int
    measured_at: int
    measured_with_samples: bool
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[CollectionConfig, _Mapping]] = ..., count: _Optional[int] = ..., calibrated: _Optional[bool] = ..., index_bytes: _Optional[int] = ..., model_id: _Optional[str] = ..., calibrated_at: _Optional[int] = ..., calibration_final: _Optional[bool] = ..., measured_recall: _Optional[float] = ..., recall_points: _Optional[_Iterable[_Union[RecallPoint, _Mapping]]] = ..., bytes_in_use: _Optional[int] = ..., bytes_allocated: _Optional[int] = ..., bytes_per_document: _Optional[int] = ..., measured_at: _Optional[int] = ..., measured_with_samples: _Optional[bool] = ...) -> None: ...

class RecallPoint(_message.Message):
    __slots__ = ("float_reads_per_result", "shortlist_per_read", "recall")
    FLOAT_READS_PER_RESULT_FIELD_NUMBER: _ClassVar[int]
    SHORTLIST_PER_READ_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    float_reads_per_result: int
    shortlist_per_read: int
    recall: float
    def __init__(self, float_reads_per_result: _Optional[int] = ..., shortlist_per_read: _Optional[int] = ..., recall: _Optional[float] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "config")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: CollectionConfig
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[CollectionConfig, _Mapping]] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "next_page_token")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    next_page_token: str
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateCollectionRequest(_message.Message):
    __slots__ = ("name", "add_filterable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADD_FILTERABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    add_filterable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., add_filterable: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("path", "size_bytes", "seconds")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    path: str
    size_bytes: int
    seconds: float
    def __init__(self, path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "text", "vectors", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetadataValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    vectors: Vectors
    metadata: _containers.MessageMap[str, MetadataValue]
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., vectors: _Optional[_Union[Vectors, _Mapping]] = ..., metadata: _Optional[_Mapping[str, MetadataValue]] = ...) -> None: ...

class Vectors(_message.Message):
    __slots__ = ("code", "rescore", "code_f32le", "rescore_f32le")
    CODE_FIELD_NUMBER: _ClassVar[int]
    RESCORE_FIELD_NUMBER: _ClassVar[int]
    CODE_F32LE_FIELD_NUMBER: _ClassVar[int]
    RESCORE_F32LE_FIELD_NUMBER: _ClassVar[int]
    code: _containers.RepeatedScalarFieldContainer[float]
    rescore: _containers.RepeatedScalarFieldContainer[float]
    code_f32le: bytes
    rescore_f32le: bytes
    def __init__(self, code: _Optional[_Iterable[float]] = ..., rescore: _Optional[_Iterable[float]] = ..., code_f32le: _Optional[bytes] = ..., rescore_f32le: _Optional[bytes] = ...) -> None: ...

class MetadataValue(_message.Message):
    __slots__ = ("string_value", "int_value", "double_value", "bool_value", "string_list", "null_value", "list_value", "object_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_LIST_FIELD_NUMBER: _ClassVar[int]
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    double_value: float
    bool_value: bool
    string_list: StringList
    null_value: _struct_pb2.NullValue
    list_value: MetadataList
    object_value: MetadataObject
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., bool_value: _Optional[bool] = ..., string_list: _Optional[_Union[StringList, _Mapping]] = ..., null_value: _Optional[_Union[_struct_pb2.NullValue, str]] = ..., list_value: _Optional[_Union[MetadataList, _Mapping]] = ..., object_value: _Optional[_Union[MetadataObject, _Mapping]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class MetadataList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[MetadataValue]
    def __init__(self, values: _Optional[_Iterable[_Union[MetadataValue, _Mapping]]] = ...) -> None: ...

class MetadataObject(_message.Message):
    __slots__ = ("fields",)
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetadataValue, _Mapping]] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.MessageMap[str, MetadataValue]
    def __init__(self, fields: _Optional[_Mapping[str, MetadataValue]] = ...) -> None: ...

class Chunking(_message.Message):
    __slots__ = ("enabled", "max_tokens", "overlap_tokens")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    max_tokens: int
    overlap_tokens: int
    def __init__(self, enabled: _Optional[bool] = ..., max_tokens: _Optional[int] = ..., overlap_tokens: _Optional[int] = ...) -> None: ...

class Passage(_message.Message):
    __slots__ = ("index", "start", "end", "text")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    index: int
    start: int
    end: int
    text: str
    def __init__(self, index: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "documents", "chunking", "columns")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    chunking: Chunking
    columns: DocumentColumns
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., chunking: _Optional[_Union[Chunking, _Mapping]] = ..., columns: _Optional[_Union[DocumentColumns, _Mapping]] = ...) -> None: ...

class DocumentColumns(_message.Message):
    __slots__ = ("ids", "code_f32le", "rescore_f32le", "metadata_json")
    IDS_FIELD_NUMBER: _ClassVar[int]
    CODE_F32LE_FIELD_NUMBER: _ClassVar[int]
    RESCORE_F32LE_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    code_f32le: bytes
    rescore_f32le: bytes
    metadata_json: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., code_f32le: _Optional[bytes] = ..., rescore_f32le: _Optional[bytes] = ..., metadata_json: _Optional[_Iterable[bytes]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted", "usage", "passages")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    usage: Usage
    passages: int
    def __init__(self, upserted: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., passages: _Optional[int] = ...) -> None: ...

class UpsertStreamRequest(_message.Message):
    __slots__ = ("collection", "document", "documents", "chunking", "columns")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document: Document
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    chunking: Chunking
    columns: DocumentColumns
    def __init__(self, collection: _Optional[str] = ..., document: _Optional[_Union[Document, _Mapping]] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., chunking: _Optional[_Union[Chunking, _Mapping]] = ..., columns: _Optional[_Union[DocumentColumns, _Mapping]] = ...) -> None: ...

class UpsertStreamResponse(_message.Message):
    __slots__ = ("id", "status", "statuses", "stored")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: Status
    statuses: _containers.RepeatedCompositeFieldContainer[Status]
    stored: int
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., statuses: _Optional[_Iterable[_Union[Status, _Mapping]]] = ..., stored: _Optional[int] = ...) -> None: ...

class DeleteDocumentsRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteDocumentsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetDocumentsRequest(_message.Message):
    __slots__ = ("collection", "ids", "include_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class StoredDocument(_message.Message):
    __slots__ = ("id", "found", "metadata", "rescore", "code")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetadataValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RESCORE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    found: bool
    metadata: _containers.MessageMap[str, MetadataValue]
    rescore: _containers.RepeatedScalarFieldContainer[float]
    code: bytes
    def __init__(self, id: _Optional[str] = ..., found: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, MetadataValue]] = ..., rescore: _Optional[_Iterable[float]] = ..., code: _Optional[bytes] = ...) -> None: ...

class GetDocumentsResponse(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[StoredDocument]
    def __init__(self, documents: _Optional[_Iterable[_Union[StoredDocument, _Mapping]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("field", "any_of", "negate")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    NEGATE_FIELD_NUMBER: _ClassVar[int]
    field: str
    any_of: _containers.RepeatedCompositeFieldContainer[MetadataValue]
    negate: bool
    def __init__(self, field: _Optional[str] = ..., any_of: _Optional[_Iterable[_Union[MetadataValue, _Mapping]]] = ..., negate: _Optional[bool] = ...) -> None: ...

class CalibrateRequest(_message.Message):
    __slots__ = ("name", "sample_texts", "sample_vectors", "measure_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_TEXTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    MEASURE_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    sample_texts: _containers.RepeatedScalarFieldContainer[str]
    sample_vectors: _containers.RepeatedCompositeFieldContainer[Vectors]
    measure_only: bool
    def __init__(self, name: _Optional[str] = ..., sample_texts: _Optional[_Iterable[str]] = ..., sample_vectors: _Optional[_Iterable[_Union[Vectors, _Mapping]]] = ..., measure_only: _Optional[bool] = ...) -> None: ...

class CalibrateResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "text", "vectors", "top_k", "oversampling", "rescore", "filter", "include_metadata", "truncation", "shortlist", "float_reads", "refine", "recall_target", "allow_partial", "latency")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    OVERSAMPLING_FIELD_NUMBER: _ClassVar[int]
    RESCORE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    SHORTLIST_FIELD_NUMBER: _ClassVar[int]
    FLOAT_READS_FIELD_NUMBER: _ClassVar[int]
    REFINE_FIELD_NUMBER: _ClassVar[int]
    RECALL_TARGET_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    text: str
    vectors: Vectors
    top_k: int
    oversampling: int
    rescore: bool
    filter: _containers.RepeatedCompositeFieldContainer[Condition]
    include_metadata: bool
    truncation: Truncation
    shortlist: int
    float_reads: int
    refine: bool
    recall_target: float
    allow_partial: bool
    latency: Latency
    def __init__(self, collection: _Optional[str] = ..., text: _Optional[str] = ..., vectors: _Optional[_Union[Vectors, _Mapping]] = ..., top_k: _Optional[int] = ..., oversampling: _Optional[int] = ..., rescore: _Optional[bool] = ..., filter: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., include_metadata: _Optional[bool] = ..., truncation: _Optional[_Union[Truncation, str]] = ..., shortlist: _Optional[int] = ..., float_reads: _Optional[int] = ..., refine: _Optional[bool] = ..., recall_target: _Optional[float] = ..., allow_partial: _Optional[bool] = ..., latency: _Optional[_Union[Latency, str]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "hamming", "metadata", "passage")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetadataValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    HAMMING_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    hamming: int
    metadata: _containers.MessageMap[str, MetadataValue]
    passage: Passage
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., hamming: _Optional[int] = ..., metadata: _Optional[_Mapping[str, MetadataValue]] = ..., passage: _Optional[_Union[Passage, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "usage", "partial", "missing_shards")
    HITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    usage: Usage
    partial: bool
    missing_shards: _containers.RepeatedCompositeFieldContainer[ShardFailure]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., partial: _Optional[bool] = ..., missing_shards: _Optional[_Iterable[_Union[ShardFailure, _Mapping]]] = ...) -> None: ...

class ShardFailure(_message.Message):
    __slots__ = ("shard", "address", "status")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    shard: int
    address: str
    status: Status
    def __init__(self, shard: _Optional[int] = ..., address: _Optional[str] = ..., status: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class SearchStreamRequest(_message.Message):
    __slots__ = ("id", "search")
    ID_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    id: str
    search: SearchRequest
    def __init__(self, id: _Optional[str] = ..., search: _Optional[_Union[SearchRequest, _Mapping]] = ...) -> None: ...

class SearchStreamResponse(_message.Message):
    __slots__ = ("id", "status", "hits", "partial", "missing_shards")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: Status
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    partial: bool
    missing_shards: _containers.RepeatedCompositeFieldContainer[ShardFailure]
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., partial: _Optional[bool] = ..., missing_shards: _Optional[_Iterable[_Union[ShardFailure, _Mapping]]] = ...) -> None: ...
