"""Metadata between JSON values and the proto's ``MetadataValue``, both ways, in one place: clients (the
Python client, the command line, ingest) and the server's answers use it. Every JSON type keeps its
type: strings, integers (64-bit), finite floats, booleans, null, lists of any values and objects
(nested at most :data:`MAX_DEPTH` levels). A list whose items are all strings travels as
``string_list`` (the form clients older than ``list_value`` read); any other list as ``list_value``.
What JSON cannot hold (NaN or infinity, integers past 64 bits, non-string keys, sets, bytes, other
objects) is refused naming the key, never coerced to a string. Proto-only: importing this loads
neither the store nor the model runtime."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, MutableMapping
from typing import Any

from google.protobuf import struct_pb2

from zembed.v1 import zembed_pb2 as pb

_INT64 = 2**63
MAX_DEPTH = 20  # nesting of lists and objects (the server refuses deeper values the same way; protobuf
# parsers stop at 100 message levels, and each level of JSON nesting takes three)
NULL: struct_pb2.NullValue = struct_pb2.NULL_VALUE  # type: ignore[assignment]


def value_to_proto(v: Any, where: str, depth: int = 0) -> pb.MetadataValue:
    """A JSON value as a MetadataValue; what JSON cannot hold is refused (never coerced)."""
    if isinstance(v, str):
        return pb.MetadataValue(string_value=v)
    if isinstance(v, bool):
        return pb.MetadataValue(bool_value=v)
    if isinstance(v, int):
        if not -_INT64 <= v < _INT64:
            raise ValueError(f"{where}: integer {v} does not fit 64 bits")
        return pb.MetadataValue(int_value=v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{where}: must be finite; given {v}")
        return pb.MetadataValue(double_value=v)
    if v is None:
        return pb.MetadataValue(null_value=NULL)
    if isinstance(v, list | tuple):
        if all(isinstance(x, str) for x in v):
            return pb.MetadataValue(string_list=pb.StringList(values=v))
        _deeper(depth, where)
        items = [value_to_proto(x, f"{where}[{i}]", depth + 1) for i, x in enumerate(v)]
        return pb.MetadataValue(list_value=pb.MetadataList(values=items))
    if isinstance(v, Mapping):
        _deeper(depth, where)
        return pb.MetadataValue(object_value=pb.MetadataObject(fields=metadata_to_proto(v, where, depth + 1)))
    raise ValueError(
        f"{where}: {type(v).__name__} is not a JSON value (metadata takes strings, numbers, booleans, "
        "null, lists and objects)"
    )


def _deeper(depth: int, where: str) -> None:
    if depth >= MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels of lists and objects")


def metadata_to_proto(
    d: Mapping[str, Any], where: str = "metadata", depth: int = 0
) -> dict[str, pb.MetadataValue]:
    out: dict[str, pb.MetadataValue] = {}
    for k, v in d.items():
        if not isinstance(k, str):
            raise ValueError(f"{where}: key {k!r} is not a string (JSON object keys are strings)")
        out[k] = value_to_proto(v, f"{where}.{k}", depth)
    return out


def value_from_proto(v: pb.MetadataValue) -> Any:
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "string_list":
        return list(v.string_list.values)
    if kind == "list_value":
        return [value_from_proto(x) for x in v.list_value.values]
    if kind == "object_value":
        return metadata_from_proto(v.object_value.fields)
    return getattr(v, kind)


def metadata_from_proto(m: Mapping[str, pb.MetadataValue]) -> dict[str, Any]:
    return {k: value_from_proto(v) for k, v in sorted(m.items())}


def set_metadata(
    target: MutableMapping[str, pb.MetadataValue], d: Mapping[str, Any], where: str = "metadata"
) -> None:
    """Fills a message's metadata map in place (no intermediate message for scalar values)."""
    for k, v in d.items():
        if not isinstance(k, str):
            raise ValueError(f"{where}: key {k!r} is not a string (JSON object keys are strings)")
        if isinstance(v, str):
            target[k].string_value = v
        elif isinstance(v, bool):
            target[k].bool_value = v
        elif isinstance(v, int) and -_INT64 <= v < _INT64:
            target[k].int_value = v
        else:
            target[k].CopyFrom(value_to_proto(v, f"{where}.{k}"))


def _stdlib_dumps(d: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(d), separators=(",", ":"), ensure_ascii=False).encode()


try:
    import orjson

    def _dumps(d: Mapping[str, Any]) -> bytes:
        return orjson.dumps(d if type(d) is dict else dict(d))

except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib writes the same JSON
    _dumps = _stdlib_dumps


def flat_json(d: Any) -> bytes | None:
    """Metadata as compact JSON text (DocumentColumns.metadata_json; b"" for none) when every value
    is a string, a boolean, null, a 64-bit integer, a finite float or a list of strings; None for
    anything else (the caller converts it with :func:`metadata_to_proto`, which keeps the other JSON
    types and refuses what JSON cannot hold, naming the key)."""
    if not d:
        return b""
    if not isinstance(d, Mapping):
        return None
    for k, v in d.items():
        if type(k) is not str:
            return None
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not -_INT64 <= v < _INT64:
                return None
        elif t is float:
            if not math.isfinite(v):
                return None
        elif t is not list or not all(type(x) is str for x in v):
            return None
    return _dumps(d)
