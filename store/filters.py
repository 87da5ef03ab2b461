"""Metadata filters: parsing, validation and an in-memory inverted index over declared fields.

A filter is a map from field name to a condition; all conditions must hold (AND):

- ``{"lang": "de"}``: equality;
- ``{"lang": {"$in": ["de", "fr"]}}``: set membership;
- ``{"lang": {"$ne": "en"}}`` and ``{"lang": {"$nin": ["en", "es"]}}``: their negations.

Only fields declared ``filterable`` when the collection is created can be filtered on; their values
(strings, numbers, booleans, or lists of those: a list matches when any element matches) are indexed
in memory, so a filter becomes a row mask that the scan applies while it reads the codes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.store.errors import InvalidArgument

Scalar = str | int | bool | float
Key = tuple[str, Scalar]  # (type tag, value): keeps 1, True and "1" apart
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

_OPS = ("$in", "$nin", "$ne", "$eq")
MAX_FILTER_VALUES = 1024


def _key(value: Any, field: str) -> Key:
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int):
        return ("i", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, float) and math.isfinite(value):  # JSON numbers: 2.0 equals 2
        return ("i", int(value)) if value.is_integer() else ("f", value)
    what = "null" if value is None else "a nested object" if isinstance(value, Mapping) else "a list"
    if not isinstance(value, Mapping | list | tuple | None):
        what = repr(value)
    raise InvalidArgument(
        f"filter.{field}",
        f"cannot filter on {what}: values must be strings, numbers or booleans (a stored list matches "
        "when any of its elements does)",
        value=repr(value),
    )


def _finite(v: Any) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


@dataclass(frozen=True)
class Condition:
    field: str
    keys: frozenset[Key]
    negate: bool


def parse_filter(spec: Mapping[str, Any] | None, filterable: Iterable[str]) -> list[Condition]:
    """Validate a filter against the collection's filterable fields."""
    if not spec:
        return []
    allowed = set(filterable)
    out: list[Condition] = []
    for field, cond in spec.items():
        if field not in allowed:
            raise InvalidArgument(
                "filter",
                f"may only name filterable fields {sorted(allowed)}; given {field!r}",
                value=field,
            )
        if isinstance(cond, Mapping):
            if len(cond) != 1 or next(iter(cond)) not in _OPS:
                raise InvalidArgument(
                    f"filter.{field}", f"must be a value or one of {list(_OPS)}; given {dict(cond)!r}"
                )
            op, arg = next(iter(cond.items()))
            if op in ("$in", "$nin"):
                if not isinstance(arg, list | tuple) or not arg:
                    raise InvalidArgument(f"filter.{field}.{op}", "must be a non-empty list", value=arg)
                if len(arg) > MAX_FILTER_VALUES:
                    raise InvalidArgument(
                        f"filter.{field}.{op}",
                        f"must have at most {MAX_FILTER_VALUES} values; given {len(arg)}",
                        limit=MAX_FILTER_VALUES,
                    )
                keys = frozenset(_key(v, field) for v in arg)
            else:
                keys = frozenset([_key(arg, field)])
            out.append(Condition(field, keys, op in ("$nin", "$ne")))
        else:
            out.append(Condition(field, frozenset([_key(cond, field)]), False))
    return out


def doc_keys(metadata: Mapping[str, Any], filterable: Iterable[str]) -> dict[str, list[Key]]:
    """The index keys a document contributes, per filterable field (unindexable values are skipped)."""
    out: dict[str, list[Key]] = {}
    for field in filterable:
        if field not in metadata:
            continue
        value = metadata[field]
        values = value if isinstance(value, list) else [value]
        keys = [_key(v, field) for v in values if isinstance(v, str | int | bool | float) and _finite(v)]
        if keys:
            out[field] = keys
    return out


class _Postings:
    """A growable array of positions; (array, count) is replaced as one reference for readers."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: tuple[I64, int] = (np.empty(16, dtype=np.int64), 0)

    def extend(self, pos: I64) -> None:
        arr, n = self.state
        need = n + len(pos)
        if need > arr.shape[0]:
            grown = np.empty(max(need, 2 * arr.shape[0]), dtype=np.int64)
            grown[:n] = arr[:n]
            arr = grown
        arr[n:need] = pos
        self.state = (arr, need)

    def positions(self) -> I64:
        arr, n = self.state
        return arr[:n]


class FilterIndex:
    """field -> key -> positions. Positions are only appended; deletion is the live mask's job."""

    def __init__(self, fields: Iterable[str]) -> None:
        self.fields = tuple(fields)
        self._index: dict[str, dict[Key, _Postings]] = {f: {} for f in self.fields}

    def add(self, pos: int, keys: Mapping[str, list[Key]]) -> None:
        self.add_many(np.array([pos], dtype=np.int64), keys)

    def add_many(self, positions: I64, keys: Mapping[str, list[Key]]) -> None:
        """Add several positions (ascending) that share the same keys."""
        for field, ks in keys.items():
            bucket = self._index[field]
            for k in set(ks):
                p = bucket.get(k)
                if p is None:
                    p = bucket[k] = _Postings()
                p.extend(positions)

    def mask(self, conditions: list[Condition], n: int) -> U8 | None:
        """A 0/1 mask over positions ``[0, n)``, or None when there are no conditions."""
        if not conditions:
            return None
        result = np.ones(n, dtype=np.uint8)
        for cond in conditions:
            hit = np.zeros(n, dtype=np.uint8)
            bucket = self._index[cond.field]
            for k in cond.keys:
                p = bucket.get(k)
                if p is not None:
                    pos = p.positions()
                    hit[pos[pos < n]] = 1
            if cond.negate:
                hit ^= 1
            result &= hit
        return result
