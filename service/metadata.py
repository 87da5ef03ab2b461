"""Metadata between JSON-compatible Python values and the proto's ``MetadataValue``, for clients (the
Python client, the command line): types the contract cannot carry (null, nested objects, lists of
non-strings, non-finite floats, integers past 64 bits) are refused with the key, never coerced to a
string. Proto-only: importing this loads neither the store nor the model runtime."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from zembed.v1 import zembed_pb2 as pb

_INT64 = 2**63


def value_to_proto(v: Any, where: str) -> pb.MetadataValue:
    """A JSON value as a MetadataValue; types the contract cannot carry are refused (never coerced)."""
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
    if isinstance(v, str):
        return pb.MetadataValue(string_value=v)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return pb.MetadataValue(string_list=pb.StringList(values=v))
    kind = (
        "null" if v is None else "a list with non-string items" if isinstance(v, list) else type(v).__name__
    )
    raise ValueError(
        f"{where}: {kind} is not a metadata value the server accepts (strings, integers, floats, "
        "booleans, lists of strings)"
    )


def metadata_to_proto(d: Mapping[str, Any], where: str = "metadata") -> dict[str, pb.MetadataValue]:
    return {str(k): value_to_proto(v, f"{where}.{k}") for k, v in d.items()}


def value_from_proto(v: pb.MetadataValue) -> Any:
    kind = v.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "string_list":
        return list(v.string_list.values)
    return getattr(v, kind)


def metadata_from_proto(m: Mapping[str, pb.MetadataValue]) -> dict[str, Any]:
    return {k: value_from_proto(v) for k, v in sorted(m.items())}
