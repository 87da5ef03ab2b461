"""Proto <-> domain conversions, all in one place (no business logic)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.service import metadata
from zembed.service.batcher import Latency
from zembed.service.errors import InvalidArgument
from zembed.service.metadata import MAX_DEPTH
from zembed.service.runtime.text import Overflow
from zembed.store import CollectionInfo, Hit, validate
from zembed.store.errors import clip
from zembed.store.params import DEFAULT_TOP_K, SearchParams
from zembed.v1 import zembed_pb2 as pb

F32 = npt.NDArray[np.float32]

INPUT_TYPES: dict[int, str | None] = {
    pb.INPUT_TYPE_UNSPECIFIED: None,
    pb.INPUT_TYPE_QUERY: "query",
    pb.INPUT_TYPE_DOCUMENT: "document",
}
OVERFLOW: dict[int, Overflow] = {
    pb.TRUNCATION_UNSPECIFIED: Overflow.TRUNCATE,
    pb.TRUNCATION_TRUNCATE: Overflow.TRUNCATE,
    pb.TRUNCATION_STRICT: Overflow.STRICT,
}
LATENCY: dict[int, Latency] = {
    pb.LATENCY_UNSPECIFIED: Latency.FAST,
    pb.LATENCY_FAST: Latency.FAST,
    pb.LATENCY_SLOW: Latency.SLOW,
}
FILTER_KINDS = frozenset({"string_value", "int_value", "double_value", "bool_value"})
FILTER_REFUSED = {
    "null_value": "null",
    "string_list": "a list (give its elements as separate any_of values)",
    "list_value": "a list (give its elements as separate any_of values)",
    "object_value": "a nested object",
}
ENCODINGS: set[int] = {
    pb.ENCODING_UNSPECIFIED,
    pb.ENCODING_FLOAT32,
    pb.ENCODING_FLOAT16,
    pb.ENCODING_INT8,
    pb.ENCODING_BINARY,
    pb.ENCODING_FLOAT_LIST,
}


def input_type(value: int, field: str = "input_type") -> str | None:
    if value not in INPUT_TYPES:
        raise InvalidArgument(field, f"must be one of {sorted(INPUT_TYPES)}; given {value}")
    return INPUT_TYPES[value]


def latency(value: int, field: str = "latency") -> Latency:
    if value not in LATENCY:
        raise InvalidArgument(field, f"must be one of {sorted(LATENCY)}; given {value}")
    return LATENCY[value]


def overflow(value: int, field: str = "truncation") -> Overflow:
    if value not in OVERFLOW:
        raise InvalidArgument(field, f"must be one of {sorted(OVERFLOW)}; given {value}")
    return OVERFLOW[value]


def check_encoding(value: int, field: str = "encoding") -> int:
    if value not in ENCODINGS:
        raise InvalidArgument(field, f"must be one of {sorted(ENCODINGS)}; given {value}")
    return pb.ENCODING_FLOAT32 if value == pb.ENCODING_UNSPECIFIED else value


def encode_embedding(vec: F32, encoding: int, tokens: int, truncated: bool) -> pb.Embedding:
    """One vector in the requested encoding (see the Encoding enum's comments)."""
    out = pb.Embedding(tokens=tokens, truncated=truncated)
    if encoding == pb.ENCODING_FLOAT32:
        out.data = np.asarray(vec, dtype="<f4").tobytes()
    elif encoding == pb.ENCODING_FLOAT16:
        out.data = np.asarray(vec, dtype="<f2").tobytes()
    elif encoding == pb.ENCODING_INT8:
        scale = float(np.max(np.abs(vec))) / 127.0 or 1.0
        out.data = np.clip(np.rint(vec / scale), -127, 127).astype(np.int8).tobytes()
        out.scale = scale
    elif encoding == pb.ENCODING_BINARY:
        out.data = np.packbits(vec > 0).tobytes()
    else:
        out.values.extend(vec.tolist())
    return out


PASSAGE_KEY = "\x1fpassage"  # a chunked document's row: its passage (never shown as metadata)


def metadata_to_dict(m: Mapping[str, pb.MetadataValue], field: str) -> dict[str, Any]:
    """Checked at the edge: at most MAX_METADATA_KEYS keys of at most MAX_METADATA_KEY_BYTES each,
    lists of at most MAX_STRING_LIST values, nesting at most MAX_DEPTH levels, about
    MAX_METADATA_BYTES in all (the store checks the exact compact-JSON size)."""
    if len(m) > validate.MAX_METADATA_KEYS:
        validate.count(len(m), field, validate.MAX_METADATA_KEYS, "keys")
    out: dict[str, Any] = {}
    size = 0
    for key in m:  # (not .items(): a Python-level generator over the map)
        v = m[key]
        if len(key) > validate.MAX_METADATA_KEY_BYTES // 4 or not key:
            validate.text(key, f"{field} key {clip(key)}", validate.MAX_METADATA_KEY_BYTES)
        if key == PASSAGE_KEY:
            raise InvalidArgument(f"{field} key {clip(key)}", "is reserved (chunked documents' passages)")
        kind = v.WhichOneof("kind")
        if kind == "string_value":
            x: Any = v.string_value
            size += len(key) + len(x)
        elif kind == "int_value" or kind == "bool_value":
            x = getattr(v, kind)
            size += len(key) + 8
        else:
            x = _value(v, kind, f"{field}.{clip(key, quote=False)}", 0)
            size += len(key) + (8 if kind in ("double_value", "null_value") else v.ByteSize())
        if size > validate.MAX_METADATA_BYTES + 1024:
            raise InvalidArgument(
                field, f"must be at most {validate.MAX_METADATA_BYTES} bytes in all; given more than {size}"
            )
        out[key] = x
    return out


def _value(v: pb.MetadataValue, kind: str | None, field: str, depth: int) -> Any:
    """One MetadataValue as its JSON value (lists and objects recursively), checked."""
    if kind == "string_value" or kind == "int_value" or kind == "bool_value":
        return getattr(v, kind)
    if kind == "double_value":
        if not math.isfinite(v.double_value):
            raise InvalidArgument(field, f"must be finite; given {v.double_value}")
        return v.double_value
    if kind == "null_value":
        return None
    if kind is None:
        raise InvalidArgument(field, "must set a value (null is null_value)")
    if kind == "string_list":
        validate.count(len(v.string_list.values), field, validate.MAX_STRING_LIST, "values")
        return list(v.string_list.values)
    if depth >= MAX_DEPTH:
        raise InvalidArgument(field, f"must nest at most {MAX_DEPTH} levels of lists and objects")
    if kind == "list_value":
        values = v.list_value.values
        validate.count(len(values), field, validate.MAX_STRING_LIST, "values")
        return [_value(x, x.WhichOneof("kind"), f"{field}[{i}]", depth + 1) for i, x in enumerate(values)]
    fields = v.object_value.fields
    validate.count(len(fields), field, validate.MAX_METADATA_KEYS, "keys")
    out: dict[str, Any] = {}
    for key, x in fields.items():
        validate.text(key, f"{field} key {clip(key)}", validate.MAX_METADATA_KEY_BYTES)
        out[key] = _value(x, x.WhichOneof("kind"), f"{field}.{clip(key, quote=False)}", depth + 1)
    return out


def value_to_proto(v: Any) -> pb.MetadataValue:
    """A stored JSON value as a MetadataValue (types kept: service.metadata)."""
    return metadata.value_to_proto(v, "metadata")


def dict_to_metadata(d: Mapping[str, Any]) -> dict[str, pb.MetadataValue]:
    return {k: metadata.value_to_proto(v, k) for k, v in d.items() if k != PASSAGE_KEY}


def filter_from_proto(conds: Sequence[pb.Condition]) -> dict[str, Any] | None:
    """Checked at the edge: at most MAX_FILTER_CONDITIONS conditions on field names like collection
    names, each with at most MAX_FILTER_VALUES values of at most MAX_FILTER_VALUE_BYTES."""
    validate.count(len(conds), "filter", validate.MAX_FILTER_CONDITIONS, "conditions")
    out: dict[str, Any] = {}
    for i, c in enumerate(conds):
        field = f"filter[{i}]"
        if not c.field:
            raise InvalidArgument(f"{field}.field", "must not be empty")
        validate.name(c.field, f"{field}.field")
        if c.field in out:
            raise InvalidArgument(f"{field}.field", f"repeats {c.field!r}; put all values in one any_of")
        if not c.any_of:
            raise InvalidArgument(f"{field}.any_of", "must hold at least one value")
        validate.count(len(c.any_of), f"{field}.any_of", validate.MAX_FILTER_VALUES, "values")
        values: list[Any] = []
        for j, v in enumerate(c.any_of):
            kind = v.WhichOneof("kind")
            if kind not in FILTER_KINDS:
                what = FILTER_REFUSED.get(kind or "", "an unset value")
                raise InvalidArgument(
                    f"{field}.any_of[{j}]",
                    f"cannot filter {c.field!r} on {what}: filter values are strings, numbers or "
                    "booleans (a stored list matches when any of its elements equals one)",
                )
            if kind == "string_value":
                validate.text(v.string_value, f"{field}.any_of[{j}]", validate.MAX_FILTER_VALUE_BYTES)
            if kind == "double_value" and not math.isfinite(v.double_value):
                raise InvalidArgument(f"{field}.any_of[{j}]", f"must be finite; given {v.double_value}")
            values.append(getattr(v, kind))
        out[c.field] = {"$nin" if c.negate else "$in": values}
    return out or None


def vector(values: Iterable[float], field: str, packed: bytes = b"") -> F32:
    """A float vector from a repeated float field, or from its packed little-endian float32 twin
    (one of them: both set is refused)."""
    if packed and len(values):  # type: ignore[arg-type]
        name = field.rsplit(".", 1)[-1]
        raise InvalidArgument(
            field, f"and {field}_f32le are both set; set one of `{name}` or `{name}_f32le`, not both"
        )
    if packed:
        if len(packed) % 4:
            raise InvalidArgument(f"{field}_f32le", f"must be a multiple of 4 bytes; given {len(packed)}")
        arr = np.frombuffer(packed, dtype="<f4").astype(np.float32)
    else:
        arr = np.asarray(values, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise InvalidArgument(
            f"{field}[{int(np.argmin(np.isfinite(arr)))}]", "must be finite; given NaN or infinity"
        )
    return arr


def sample_vectors(items: Sequence[pb.Vectors]) -> tuple[F32 | None, F32 | None]:
    """Calibrate's sample query vectors as (code, rescore) matrices; rescore None when none is given
    (the collection's code and rescore vectors are then the same)."""
    if not items:
        return None, None
    codes = [vector(v.code, f"sample_vectors[{i}].code", v.code_f32le) for i, v in enumerate(items)]
    rescores = [
        vector(v.rescore, f"sample_vectors[{i}].rescore", v.rescore_f32le) for i, v in enumerate(items)
    ]
    for name, rows in (("code", codes), ("rescore", rescores)):
        for i, r in enumerate(rows):
            if len(r) != len(rows[0]):
                raise InvalidArgument(
                    f"sample_vectors[{i}].{name}",
                    f"must have the length of sample_vectors[0].{name} ({len(rows[0])}); given {len(r)}",
                )
    code = np.stack(codes)
    return code, (np.stack(rescores) if len(rescores[0]) else None)


@dataclass
class Docs:
    """An Upsert's documents, converted and checked: ``code`` is one matrix when every document has
    packed code vectors of one length and nothing else (the bulk path), else one row per document
    (None for a text document)."""

    ids: list[str]
    texts: list[str | None]
    code: F32 | list[F32 | None]
    rescore: list[F32 | None]
    metadata: list[dict[str, Any]]


def _packed_size(n: int) -> int:
    """Encoded size of a Vectors message holding only ``code_f32le`` of ``n`` bytes."""
    varint = 1
    while n >= 0x80 << (7 * (varint - 1)):
        varint += 1
    return 1 + varint + n


def documents(docs: Sequence[pb.Document], labels: Sequence[int] | None = None) -> Docs:
    """Checks and converts documents; ``labels[i]`` is document i's index in its request (errors
    name ``documents[labels[i]]``). Vectors of the bulk form cost one join, one ``frombuffer`` and
    one ``isfinite`` per batch; metadata one pass per document without a per-value allocation."""

    def name(i: int) -> str:
        return f"documents[{labels[i] if labels is not None else i}]"

    n = len(docs)
    ids: list[str] = [""] * n
    meta: list[dict[str, Any]] = [{}] * n
    packed: list[bytes] = []
    bulk = True
    for i, d in enumerate(docs):
        ids[i] = doc_id = d.id
        if not doc_id or len(doc_id) > validate.MAX_ID_BYTES // 4:
            if not doc_id:
                raise InvalidArgument(f"{name(i)}.id", "must not be empty")
            validate.text(doc_id, f"{name(i)}.id", validate.MAX_ID_BYTES)  # before any embedding
        if bulk:
            v = d.vectors
            code_bytes = v.code_f32le
            # nothing but code_f32le (one size check instead of four field checks); a text
            # document has empty vectors, so it leaves the bulk path here too
            if code_bytes and v.ByteSize() == _packed_size(len(code_bytes)):
                packed.append(code_bytes)
            else:
                bulk = False
        m = d.metadata
        if m:
            try:
                meta[i] = metadata_to_dict(m, "metadata")
            except InvalidArgument:  # again, to name the document (not formatted per document)
                metadata_to_dict(m, f"{name(i)}.metadata")
                raise
    width = len(packed[0]) if bulk and packed else 0
    if bulk and width % 4 == 0 and all(len(b) == width for b in packed):
        code = np.frombuffer(b"".join(packed), dtype="<f4").reshape(n, width // 4)
        finite = np.isfinite(code)
        if not finite.all():
            row, col = np.unravel_index(int(np.argmin(finite)), finite.shape)
            raise InvalidArgument(
                f"{name(int(row))}.vectors.code[{col}]", "must be finite; given NaN or infinity"
            )
        return Docs(ids, [None] * n, code.astype(np.float32, copy=False), [None] * n, meta)
    texts: list[str | None] = [None] * n
    rows: list[F32 | None] = [None] * n
    rescore: list[F32 | None] = [None] * n
    for i, d in enumerate(docs):
        kind = d.WhichOneof("content")
        if kind is None:
            raise InvalidArgument(name(i), "must have text or vectors")
        if kind == "text":
            if not d.text:
                raise InvalidArgument(f"{name(i)}.text", "must not be empty")
            texts[i] = d.text
        else:
            v = d.vectors
            rows[i] = vector(v.code, f"{name(i)}.vectors.code", v.code_f32le)
            rescore[i] = vector(v.rescore, f"{name(i)}.vectors.rescore", v.rescore_f32le)
    return Docs(ids, texts, rows, rescore, meta)


def hit_to_proto(h: Hit) -> pb.Hit:
    meta = h.metadata or {}
    hit = pb.Hit(id=h.id, score=h.score, hamming=h.hamming, metadata=dict_to_metadata(meta))
    d = meta.get(PASSAGE_KEY)
    if isinstance(d, Mapping):  # a passage of a chunked document: answer with the document's id
        hit.id = str(d.get("doc", h.id))
        hit.passage.CopyFrom(
            pb.Passage(index=int(d["i"]), start=int(d["s"]), end=int(d["e"]), text=str(d.get("t", "")))
        )
    return hit


def collection_to_proto(info: CollectionInfo) -> pb.Collection:
    c = info.config
    return pb.Collection(
        name=info.name,
        config=pb.CollectionConfig(
            code_bits=c.code_bits,
            rescore_dims=c.rescore_dims,
            rescore_dtype=c.rescore_dtype.value,
            calibration=c.calibration.value,
            calibration_sample=c.calibration_sample,
            filterable=list(c.filterable),
        ),
        count=info.count,
        calibrated=info.calibrated,
        index_bytes=info.index_bytes,
        model_id=c.model,
        calibrated_at=info.calibrated_at,
        calibration_final=info.calibration_final,
        measured_recall=info.measured_recall,
        recall_points=[
            pb.RecallPoint(float_reads_per_result=r, shortlist_per_read=s, recall=rec)
            for r, s, rec in info.tuning.points
        ],
        bytes_in_use=info.bytes_in_use,
        bytes_allocated=info.bytes_allocated,
        bytes_per_document=info.bytes_per_document,
        measured_at=info.measured_at,
        measured_with_samples=info.measured_with_samples,
    )


def search_params(request: pb.SearchRequest, max_top_k: int) -> SearchParams:
    """The store's search parameters from a request, validated once here (top_k against the
    server's limit, which the store's caps)."""
    top_k = request.top_k if request.HasField("top_k") else DEFAULT_TOP_K
    limit = min(max_top_k, validate.MAX_TOP_K)
    if not 1 <= top_k <= limit:
        raise InvalidArgument(
            "top_k", f"must be in [1, {limit}] (unset means {DEFAULT_TOP_K}); given {top_k}"
        )
    return SearchParams.create(
        top_k=top_k,
        max_top_k=limit,
        oversampling=request.oversampling or None,
        shortlist=request.shortlist,
        float_reads=request.float_reads,
        refine=request.refine if request.HasField("refine") else True,
        rescore=request.rescore if request.HasField("rescore") else True,
        recall_target=request.recall_target,
        filter=filter_from_proto(request.filter),
        include_metadata=request.include_metadata if request.HasField("include_metadata") else True,
        high_recall=latency(request.latency) is Latency.SLOW,
    )


def status(code: int = 0, message: str = "") -> pb.Status:
    return pb.Status(code=code, message=message)
