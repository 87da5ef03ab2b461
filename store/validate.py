"""Input validation and the documented limits. Every check raises ``InvalidArgument`` naming the field.

Validation happens before any transaction starts, so a refused request writes nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from zembed.store import _hamming
from zembed.store.errors import InvalidArgument, clip

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
FIELD_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MAX_CODE_BITS = 1016  # a code is at most 127 bytes
MAX_RESCORE_DIMS = 16384
MAX_ID_BYTES = 256
MAX_METADATA_BYTES = 64 * 1024
MAX_BATCH = 100_000
MAX_QUERIES = 4096
MAX_TOP_K = 1000
MAX_OVERSAMPLING = 100
MAX_FILTERABLE = 32  # filterable field names per collection (each a name like a collection's)
MAX_METADATA_KEYS = 256  # keys per document's metadata
MAX_METADATA_KEY_BYTES = 256
MAX_STRING_LIST = 1024  # values in one metadata string list
MAX_FILTER_CONDITIONS = MAX_FILTERABLE
MAX_FILTER_VALUES = 1024  # values in one filter condition
MAX_FILTER_VALUE_BYTES = 1024
MAX_GET_IDS = 1000  # ids per GetDocuments call (the answer must fit one message)
MAX_DELETE_IDS = MAX_BATCH

F32 = npt.NDArray[np.float32]


def name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidArgument(
            field, f"must match {NAME_RE.pattern}; given {clip(value)}", value=value, limit=NAME_RE.pattern
        )
    return value


def field_names(values: Sequence[Any], field: str = "filterable") -> tuple[str, ...]:
    """Metadata field names declared filterable: each matching :data:`FIELD_RE` (a collection name's
    length, with the capitals, dots and underscores JSON keys use), unique, at most
    :data:`MAX_FILTERABLE`."""
    values = tuple(values)
    if len(values) > MAX_FILTERABLE:
        raise InvalidArgument(
            field, f"must hold at most {MAX_FILTERABLE} names; given {len(values)}", limit=MAX_FILTERABLE
        )
    seen: set[str] = set()
    for i, v in enumerate(values):
        if not isinstance(v, str) or not FIELD_RE.fullmatch(v):
            raise InvalidArgument(
                f"{field}[{i}]",
                f"must match {FIELD_RE.pattern}; given {clip(v)}",
                value=v,
                limit=FIELD_RE.pattern,
            )
        if v in seen:
            raise InvalidArgument(f"{field}[{i}]", f"repeats {clip(v)}", value=v)
        seen.add(v)
    return values


def text(value: str, field: str, max_bytes: int) -> str:
    """A client string of at most ``max_bytes`` UTF-8 bytes."""
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise InvalidArgument(
            field, f"must be at most {max_bytes} UTF-8 bytes; given {size}", value=size, limit=max_bytes
        )
    return value


def count(n: int, field: str, limit: int, what: str = "items") -> int:
    if n > limit:
        raise InvalidArgument(field, f"must hold at most {limit} {what}; given {n}", value=n, limit=limit)
    return n


def int_range(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgument(field, f"must be an integer; given {clip(value)}", value=value)
    if not lo <= int(value) <= hi:
        raise InvalidArgument(
            field, f"must be in [{lo}, {hi}]; given {value}", value=int(value), limit=(lo, hi)
        )
    return int(value)


def ids(values: Sequence[Any], field: str = "ids", *, unique: bool = True) -> list[str]:
    if len(values) == 0:
        raise InvalidArgument(field, "must not be empty", value=0)
    if len(values) > MAX_BATCH:
        raise InvalidArgument(
            field, f"must hold at most {MAX_BATCH} items; given {len(values)}", limit=MAX_BATCH
        )
    seen: set[str] = set()
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise InvalidArgument(f"{field}[{i}]", f"must be a non-empty string; given {clip(v)}", value=v)
        size = len(v.encode("utf-8", errors="strict"))
        if size > MAX_ID_BYTES:
            raise InvalidArgument(
                f"{field}[{i}]",
                f"must be at most {MAX_ID_BYTES} UTF-8 bytes; given {size}",
                value=size,
                limit=MAX_ID_BYTES,
            )
        if unique:
            if v in seen:
                raise InvalidArgument(f"{field}[{i}]", f"duplicates an earlier id {clip(v)}", value=v)
            seen.add(v)
    return list(values)


class Vectors(NamedTuple):
    """Validated vectors as given (float32, C-contiguous) and their inverse L2 norms. Norms are
    computed in float64, so any finite non-zero float32 vector is accepted: 1e30 (whose square
    overflows float32) as well as 1e-25 (whose square underflows it). Where the inverse norm itself
    leaves float32's normal range (norms beyond ~1e38 or below ~1e-38), ``raw`` is pre-scaled by a
    power of two (exact) so that ``raw * inv_norm`` is the unit vector either way."""

    raw: F32
    inv_norm: F32

    def unit(self) -> F32:
        out: F32 = (self.raw.astype(np.float64) * self.inv_norm[:, None].astype(np.float64)).astype(
            np.float32
        )
        return out


def vectors(value: Any, field: str, rows: int, dims: int) -> Vectors:
    """A finite, non-zero float matrix ``[rows, dims]`` (a 1-D vector counts as one row)."""
    arr = np.ascontiguousarray(value, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidArgument(field, f"must be a matrix [{rows}, {dims}]; given shape {arr.shape}")
    if arr.shape[0] != rows:
        raise InvalidArgument(field, f"must hold {rows} vectors; given {arr.shape[0]}", value=arr.shape[0])
    if arr.shape[1] != dims:
        raise InvalidArgument(
            field, f"must have length {dims}; given {arr.shape[1]}", value=arr.shape[1], limit=dims
        )
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise InvalidArgument(f"{field}[{i}]", "must be finite; given a NaN or infinity", value="nan/inf")
    wide = arr.astype(np.float64)
    sq = np.einsum("ij,ij->i", wide, wide)  # float64: no overflow at 3.4e38, no underflow at 1e-45
    if not (sq > 0).all():
        i = int(np.argmin(sq > 0))
        raise InvalidArgument(f"{field}[{i}]", "must not be the zero vector", value=0.0)
    inv = 1.0 / np.sqrt(sq)
    # keep inv_norm a normal float32 (1e-30..1e30); move the rest of the scale into raw (exact powers of 2)
    shift = np.where((inv > 1e30) | (inv < 1e-30), np.round(np.log2(inv)), 0.0)
    if shift.any():
        arr = np.ascontiguousarray(np.ldexp(wide, shift.astype(np.int32)[:, None]).astype(np.float32))
        inv = np.ldexp(inv, -shift.astype(np.int32))
    return Vectors(arr, np.asarray(inv, dtype=np.float32))


# json.dumps with these arguments builds an encoder per call (~2 us a document); one, reused
_METADATA_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def metadata(values: Sequence[Mapping[str, Any] | None] | None, rows: int) -> list[bytes]:
    """Compact JSON of each document's metadata (empty bytes for none)."""
    if values is None:
        return [b""] * rows
    if len(values) != rows:
        raise InvalidArgument("metadata", f"must hold {rows} items; given {len(values)}", value=len(values))
    out = []
    for i, m in enumerate(values):
        if m is None or m == {}:
            out.append(b"")
            continue
        if not isinstance(m, Mapping) or not all(isinstance(k, str) for k in m):
            raise InvalidArgument(f"metadata[{i}]", "must be a map with string keys", value=type(m).__name__)
        try:
            raw = _METADATA_JSON.encode(m).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"metadata[{i}]", f"must be JSON-compatible: {clip(str(exc), quote=False)}"
            ) from None
        _metadata_size(raw, f"metadata[{i}]", "encode to")
        out.append(raw)
    return out


def _metadata_size(raw: bytes, field: str, verb: str) -> None:
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidArgument(
            field,
            f"must {verb} at most {MAX_METADATA_BYTES} bytes of JSON; given {len(raw)}",
            value=len(raw),
            limit=MAX_METADATA_BYTES,
        )


def metadata_texts(
    texts: Sequence[bytes | None], values: Sequence[Mapping[str, Any] | None], rows: int
) -> list[bytes]:
    """Each document's metadata as JSON text its caller already holds (``texts[i]``, the JSON of
    ``values[i]``; None: encode ``values[i]``), checked for count and size as :func:`metadata`."""
    if len(texts) != rows or len(values) != rows:
        raise InvalidArgument(
            "metadata_json", f"and metadata must hold {rows} items each; given {len(texts)} and {len(values)}"
        )
    out = metadata([v if t is None else None for t, v in zip(texts, values, strict=True)], rows)
    for i, t in enumerate(texts):
        if t is None:
            continue
        if not isinstance(t, bytes):
            raise InvalidArgument(f"metadata_json[{i}]", "must be bytes (UTF-8 JSON text)")
        if not values[i]:
            continue  # no metadata ({} or None): stored as none, as metadata() stores it
        _metadata_size(t, f"metadata_json[{i}]", "be")
        out[i] = t
    return out


def thresholds(value: Sequence[float] | None, bits: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    t = tuple(float(x) for x in value)
    if len(t) != bits:
        raise InvalidArgument("thresholds", f"must have length {bits}; given {len(t)}", value=len(t))
    if not all(math.isfinite(x) for x in t):
        raise InvalidArgument("thresholds", "must be finite")
    return t


# ---------------------------------------------------------------------------- the bulk (array) path
_BULK_ROWS = 8192  # float32 rows checked per step (bounds the float64 temporaries)


def id_array(values: Any, cid: int, field: str, limit: int) -> tuple[list[bytes], list[bytes]]:
    """Ids given as a numpy array (strings, or integers stored as their decimal text), checked as
    :func:`ids` checks a list, in C loops. Returns the UTF-8 ids and their ``ids`` keys (``cid``
    prefix)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidArgument(field, f"must be a 1-D array; given shape {arr.shape}")
    n = len(arr)
    if n == 0:
        raise InvalidArgument(field, "must not be empty", value=0)
    if n > limit:
        raise InvalidArgument(field, f"must hold at most {limit} items; given {n}", value=n, limit=limit)
    kind = arr.dtype.kind
    prefix = cid.to_bytes(4, "big")
    if kind in "iu":
        return _int_ids(arr, prefix, field)
    if kind == "U":
        enc = np.char.encode(arr, "utf-8")
    elif kind == "S":
        try:
            np.char.decode(arr, "utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(field, f"must be UTF-8; given bytes that are not ({exc.reason})") from None
        enc = arr
    elif kind == "O":
        enc = np.char.encode(np.asarray(ids(list(arr), field), dtype=str), "utf-8")
    else:
        raise InvalidArgument(field, f"must be an array of strings or integers; given dtype {arr.dtype}")
    lengths = np.char.str_len(enc)
    bad = np.flatnonzero((lengths == 0) | (lengths > MAX_ID_BYTES))
    if len(bad):
        i = int(bad[0])
        size = int(lengths[i])
        if size == 0:
            raise InvalidArgument(f"{field}[{i}]", "must be a non-empty string; given ''", value="")
        raise InvalidArgument(
            f"{field}[{i}]",
            f"must be at most {MAX_ID_BYTES} UTF-8 bytes; given {size}",
            value=size,
            limit=MAX_ID_BYTES,
        )
    ext: list[bytes] = enc.tolist()
    if len(set(ext)) != n:
        seen: set[bytes] = set()
        for i, e in enumerate(ext):
            if e in seen:
                raise InvalidArgument(f"{field}[{i}]", f"duplicates an earlier id {clip(e.decode())}")
            seen.add(e)
    keys: list[bytes] = np.char.add(np.bytes_(prefix), enc).tolist()
    return ext, keys


def _int_ids(arr: npt.NDArray[np.integer[Any]], prefix: bytes, field: str) -> tuple[list[bytes], list[bytes]]:
    """Integer ids as their decimal text (``astype("S20")``'s bytes), formatted in C; duplicates
    found on the integers (one sort), never empty nor longer than 20 bytes."""
    unsigned = arr.dtype.kind == "u"
    wide = np.ascontiguousarray(arr, dtype=np.uint64 if unsigned else np.int64)
    ext, keys = _hamming.int_id_keys(wide, prefix, unsigned)
    ordered = np.sort(wide)
    if len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any()):
        seen: set[bytes] = set()
        for i, e in enumerate(ext):
            if e in seen:
                raise InvalidArgument(f"{field}[{i}]", f"duplicates an earlier id {clip(e.decode())}")
            seen.add(e)
    return ext, keys


class FloatRows(NamedTuple):
    """Validated bulk vectors: the array in its own dtype, inverse L2 norms, and the sign codes
    ``np.packbits(arr > 0)`` when they were asked for (computed in the same pass where it is free)."""

    arr: npt.NDArray[np.floating]
    inv_norm: F32
    codes: npt.NDArray[np.uint8] | None


def float_array(
    value: Any, field: str, rows: int, dims: int, normalized: bool = False, *, codes: bool = False
) -> FloatRows:
    """A finite, non-zero matrix ``[rows, dims]`` of float16 or float32, kept in its own dtype (other
    dtypes are converted to float32), and its inverse L2 norms.

    float16 rows go through one C pass (``_hamming.f16_norms_codes``: squares exact in float32,
    summed in float64; NaN, infinity and zero rows found on the bits; sign codes packed on the way):
    no float32 copy of the batch. float32 rows are summed in float64 a block at a time like
    :func:`vectors` (the same norms as the list path, to the bit).

    ``normalized``: the caller vouches that the rows are unit length; only finiteness and non-zero
    rows are checked, on the bits (no float pass), and the inverse norms are 1.
    ``codes``: also return the sign codes (None otherwise)."""
    arr = np.asarray(value)
    if arr.dtype not in (np.float16, np.float32):
        arr = np.asarray(arr, dtype=np.float32)
    arr = np.ascontiguousarray(arr)
    if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] != dims:
        raise InvalidArgument(
            field, f"must be a matrix [{rows}, {dims}]; given shape {arr.shape}", value=arr.shape, limit=dims
        )
    half = arr.dtype == np.float16
    packed = np.empty((rows, (dims + 7) // 8), np.uint8) if codes else None
    if half and (codes or not normalized):
        inv = np.empty(rows, np.float32)
        _raise_bad_row(_hamming.f16_norms_codes(arr, rows, dims, inv, packed), field)
        return FloatRows(arr, np.ones(rows, np.float32) if normalized else inv, packed)
    if normalized:
        _raise_bad_row(_hamming.check_rows(arr, rows, dims, arr.itemsize), field)
        return FloatRows(arr, np.ones(rows, np.float32), sign_codes(arr) if codes else None)
    inv = np.empty(rows, np.float32)
    for s in range(0, rows, _BULK_ROWS):
        part = arr[s : s + _BULK_ROWS]
        wide = part.astype(np.float64)
        sq = np.einsum("ij,ij->i", wide, wide)
        # a NaN or infinity makes the sum of squares NaN or infinite (squares never cancel); rows
        # whose squares leave float32's normal range take the exact path of ``vectors`` instead
        if not ((sq > 1e-30) & (sq < 1e30)).all():
            v = vectors(arr, field, rows, dims)  # raises for NaN, infinity and zero rows
            return FloatRows(v.raw, v.inv_norm, sign_codes(v.raw) if codes else None)
        inv[s : s + len(part)] = 1.0 / np.sqrt(sq)
    return FloatRows(arr, inv, sign_codes(arr) if codes else None)


def _raise_bad_row(found: tuple[int, int] | None, field: str) -> None:
    """The C checks' answer: None, or (row, 1) for a NaN or infinity, (row, 2) for a zero row."""
    if found is None:
        return
    i, kind = found
    if kind == 1:
        raise InvalidArgument(f"{field}[{i}]", "must be finite; given a NaN or infinity", value="nan/inf")
    raise InvalidArgument(f"{field}[{i}]", "must not be the zero vector", value=0.0)


def sign_codes(x: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """``np.packbits(x > 0)`` for finite rows; float16 compared as its bits (numpy has no fast
    float16 comparison): ``x > 0`` exactly when the sign bit is clear and some other bit set."""
    if x.dtype == np.float16:
        u = x.view(np.uint16)
        return np.packbits((u - np.uint16(1)) < np.uint16(0x7FFF), axis=-1)
    return np.packbits(x > 0, axis=-1)


def is_unit(inv_norm: F32, tolerance: float = 2e-3) -> bool:
    """Whether every row is unit length within ``tolerance`` (float16 rounding of a unit vector)."""
    return bool(np.all(np.abs(inv_norm - 1.0) <= tolerance))


def packed_codes(value: Any, field: str, rows: int, bits: int) -> npt.NDArray[np.uint8]:
    """Pre-packed codes ``[rows, ceil(bits / 8)]`` uint8, MSB first, padding bits zero."""
    arr = np.asarray(value)
    width = (bits + 7) // 8
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape != (rows, width):
        raise InvalidArgument(
            field,
            f"must be a uint8 matrix [{rows}, {width}] (packed bits, as np.packbits); given {arr.dtype} "
            f"{arr.shape}",
            value=arr.shape,
        )
    spare = width * 8 - bits
    if spare:
        bad = np.flatnonzero(arr[:, -1] & ((1 << spare) - 1))
        if len(bad):
            i = int(bad[0])
            raise InvalidArgument(f"{field}[{i}]", f"must have its {spare} padding bits zero")
    return np.ascontiguousarray(arr)
