"""The hosted API's metadata filters, compiled to the store's filter on token fields.

Hosted metadata is ``dict[str, str | list[str]]`` (a list only under a ``list:`` key). Every
``(key, value)`` pair of a document is indexed as one token ``key + "\\x1f" + value`` in each of the
collection's :data:`TOKEN_FIELDS` (the same list in each: the store ANDs conditions on distinct
fields, so N copies allow N ANDed conditions). A filter compiles to at most one condition per field:

- ``{"k": {"$eq": v}}`` / ``{"$in": [...]}``: the document holds one of the tokens (a positive set);
  on a ``list:`` key ``$in`` is set intersection, as the hosted API defines it;
- ``$ne`` / ``$nin``: it holds none of them (missing keys match, as hosted: null is not equal);
  every negative condition of an AND merges into one set (not a and not b = not (a or b));
- ``$and``: flattened; ``$or``: allowed when each branch is one positive set (they merge into one).

What cannot be compiled exactly (``$gt``/``$gte``/``$lt``/``$lte``, an ``$or`` over negations or over
ANDs, more ANDed positive sets than fields) is refused with a message saying so: never a silent
approximation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from zembed.service.errors import InvalidArgument, clip

TOKEN_FIELDS = ("zf0", "zf1", "zf2")
SEP = "\x1f"
KEY_RE = re.compile(r"(list:)?[A-Za-z0-9_-]{1,256}")
MAX_METADATA_JSON = 8 * 1024  # each value is indexed once per token field, in every passage row
_RANGE = ("$gt", "$gte", "$lt", "$lte")


def token(key: str, value: str) -> str:
    return f"{key}{SEP}{value}"


def check_metadata(meta: Any, field: str = "metadata") -> dict[str, str | list[str]]:
    """Hosted metadata rules: keys alphanumeric/-/_ (``list:`` prefix for lists), values strings, or
    lists of strings under ``list:`` keys."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidArgument(field, f"must be an object of strings or lists of strings; given {clip(meta)}")
    out: dict[str, str | list[str]] = {}
    for k, v in meta.items():
        if not isinstance(k, str) or not KEY_RE.fullmatch(k):
            raise InvalidArgument(
                f"{field} key {clip(k)}",
                "must be alphanumeric (hyphens and underscores allowed), with a `list:` prefix for "
                "a list of strings",
            )
        if k.startswith("list:"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise InvalidArgument(
                    f"{field}.{clip(k, quote=False)}", "must be a list of strings (a list: key)"
                )
            out[k] = list(v)
        else:
            if not isinstance(v, str):
                raise InvalidArgument(
                    f"{field}.{clip(k, quote=False)}",
                    "must be a string (a list of strings needs a `list:` key prefix)",
                )
            out[k] = v
    return out


def tokens(meta: Mapping[str, str | list[str]]) -> list[str]:
    out: list[str] = []
    for k, v in meta.items():
        for x in v if isinstance(v, list) else [v]:
            out.append(token(k, x))
    return sorted(set(out))


def _strings(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidArgument(field, f"must be a non-empty list of strings; given {clip(value)}")
    if not all(isinstance(x, str) for x in value):
        raise InvalidArgument(field, f"must hold strings only; given {clip(value)}")
    return list(value)


def _atom(key: str, cond: Any, field: str) -> tuple[list[set[str]], set[str]]:
    """(positive sets, negative tokens) for one attribute's condition."""
    if not KEY_RE.fullmatch(key):
        raise InvalidArgument(field, "names an attribute that is not alphanumeric (hyphens, underscores)")
    if not isinstance(cond, Mapping):
        cond = {"$eq": cond}
    if not cond:
        raise InvalidArgument(field, "must hold an operator ($eq, $ne, $in, $nin)")
    pos: list[set[str]] = []
    neg: set[str] = set()
    is_list = key.startswith("list:")
    for op, arg in cond.items():
        where = f"{field}.{op}"
        if op in _RANGE:
            raise InvalidArgument(
                where,
                "is not supported by this self-hosted server (range comparisons need an ordered index "
                "the store does not keep); use $eq, $ne, $in or $nin",
            )
        if op in ("$eq", "$ne"):
            if is_list:
                raise InvalidArgument(where, "cannot be used on a list: attribute; use $in or $nin")
            if not isinstance(arg, str):
                raise InvalidArgument(where, f"must be a string; given {clip(arg)}")
            values = [arg]
        elif op in ("$in", "$nin"):
            values = _strings(arg, where)
        else:
            raise InvalidArgument(where, "is not an operator; use $eq, $ne, $in, $nin, $and or $or")
        toks = {token(key, v) for v in values}
        if op in ("$eq", "$in"):
            pos.append(toks)
        else:
            neg |= toks
    return pos, neg


def _conjunction(spec: Any, field: str) -> tuple[list[set[str]], set[str]]:
    if not isinstance(spec, Mapping):
        raise InvalidArgument(field, f"must be an object; given {clip(spec)}")
    pos: list[set[str]] = []
    neg: set[str] = set()
    for key, cond in spec.items():
        where = f"{field}.{key}" if field else str(key)
        if key == "$and":
            if not isinstance(cond, list) or not cond:
                raise InvalidArgument(where, "must be a non-empty list of filters")
            for i, sub in enumerate(cond):
                p, n = _conjunction(sub, f"{where}[{i}]")
                pos += p
                neg |= n
        elif key == "$or":
            if not isinstance(cond, list) or not cond:
                raise InvalidArgument(where, "must be a non-empty list of filters")
            union: set[str] = set()
            for i, sub in enumerate(cond):
                p, n = _conjunction(sub, f"{where}[{i}]")
                if n or len(p) != 1:
                    raise InvalidArgument(
                        f"{where}[{i}]",
                        "is not supported inside $or by this self-hosted server: each branch must be one "
                        "$eq or $in condition (or an $or of them)",
                    )
                union |= p[0]
            pos.append(union)
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidArgument(where, "is not a boolean operator; use $and or $or")
        else:
            p, n = _atom(str(key), cond, where)
            pos += p
            neg |= n
    return pos, neg


def compile_filter(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The store filter over :data:`TOKEN_FIELDS` equal to the hosted filter ``spec``."""
    if not spec:
        return None
    pos, neg = _conjunction(spec, "filter")
    slots = len(TOKEN_FIELDS) - (1 if neg else 0)
    # drop positive sets implied by a smaller one (a subset): a in A and a in B, A within B
    uniq: list[set[str]] = []
    for s in sorted(pos, key=len):
        if not any(u <= s for u in uniq):
            uniq.append(s)
    if len(uniq) > slots:
        raise InvalidArgument(
            "filter",
            f"ANDs {len(uniq)} positive conditions{' and negations' if neg else ''}; this self-hosted "
            f"server evaluates at most {len(TOKEN_FIELDS)} ANDed conditions exactly (all $ne/$nin "
            "together count as one)",
        )
    out: dict[str, Any] = {}
    for f, s in zip(TOKEN_FIELDS, uniq, strict=False):
        out[f] = {"$in": sorted(s)}
    if neg:
        out[TOKEN_FIELDS[-1]] = {"$nin": sorted(neg)}
    return out
