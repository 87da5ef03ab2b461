"""Proto <-> domain conversions, all in one place (no business logic)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.service.errors import InvalidArgument
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


def metadata_to_dict(m: Mapping[str, pb.MetadataValue], field: str) -> dict[str, Any]:
    """Checked at the edge: at most MAX_METADATA_KEYS keys of at most MAX_METADATA_KEY_BYTES each,
    string lists of at most MAX_STRING_LIST values, about MAX_METADATA_BYTES in all."""
    validate.count(len(m), field, validate.MAX_METADATA_KEYS, "keys")
    out: dict[str, Any] = {}
    size = 0
    for key, v in m.items():
        validate.text(key, f"{field} key {clip(key)}", validate.MAX_METADATA_KEY_BYTES)
        kind = v.WhichOneof("kind")
        if kind is None:
            raise InvalidArgument(f"{field}.{clip(key, quote=False)}", "must set a value")
        size += len(key) + (v.ByteSize() if kind in ("string_value", "string_list") else 8)
        if size > validate.MAX_METADATA_BYTES + 1024:  # the store checks the exact JSON size
            raise InvalidArgument(
                field, f"must be at most {validate.MAX_METADATA_BYTES} bytes in all; given more than {size}"
            )
        if kind == "string_list":
            validate.count(
                len(v.string_list.values),
                f"{field}.{clip(key, quote=False)}",
                validate.MAX_STRING_LIST,
                "values",
            )
            out[key] = list(v.string_list.values)
        elif kind == "double_value":
            if not math.isfinite(v.double_value):
                raise InvalidArgument(f"{field}.{key}", f"must be finite; given {v.double_value}")
            out[key] = v.double_value
        else:
            out[key] = getattr(v, kind)
    return out


def value_to_proto(v: Any) -> pb.MetadataValue:
    if isinstance(v, bool):
        return pb.MetadataValue(bool_value=v)
    if isinstance(v, int):
        return pb.MetadataValue(int_value=v)
    if isinstance(v, float):
        return pb.MetadataValue(double_value=v)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return pb.MetadataValue(string_list=pb.StringList(values=v))
    return pb.MetadataValue(string_value=str(v))


def dict_to_metadata(d: Mapping[str, Any]) -> dict[str, pb.MetadataValue]:
    return {k: value_to_proto(v) for k, v in d.items()}


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
        values = []
        for j, v in enumerate(c.any_of):
            kind = v.WhichOneof("kind")
            if kind not in ("string_value", "int_value", "bool_value"):
                raise InvalidArgument(
                    f"{field}.any_of", f"values must be strings, integers or booleans; given {kind}"
                )
            if kind == "string_value":
                validate.text(v.string_value, f"{field}.any_of[{j}]", validate.MAX_FILTER_VALUE_BYTES)
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


def hit_to_proto(h: Hit) -> pb.Hit:
    return pb.Hit(id=h.id, score=h.score, hamming=h.hamming, metadata=dict_to_metadata(h.metadata or {}))


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
    )


def status(code: int = 0, message: str = "") -> pb.Status:
    return pb.Status(code=code, message=message)
