"""Upsert's columnar bulk form (``DocumentColumns``): ids, one float32 blob per vector kind and one
JSON text per document's metadata, checked and converted without a message or a Python float per
document. Every limit of the ``documents`` form holds (ids, finite non-zero vectors, metadata keys,
sizes, nesting, 64-bit integers, the reserved key); errors name ``columns.<field>[i]`` (and the key).

Unary Upsert is all or nothing (the first refused document is the error). UpsertStream answers one
status per document: a refused document gets its own, the others are written as one transaction."""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from zembed.service.convert import PASSAGE_KEY
from zembed.service.errors import InvalidArgument
from zembed.service.metadata import MAX_DEPTH
from zembed.service.status import status_of
from zembed.store import validate
from zembed.store.errors import InvalidArgument as StoreInvalidArgument
from zembed.store.errors import clip
from zembed.v1 import zembed_pb2 as pb

if TYPE_CHECKING:
    from zembed.service.engine import Engine

F32 = npt.NDArray[np.float32]
MAX_DOCUMENTS = 10_000  # as Upsert's `documents`
_INT64 = 2**63
# raw JSON text this long may exceed the stored (compact) size limit: measured exactly (a number's
# literal can grow about 5x when re-encoded, e.g. 9e15 -> 9000000000000000.0)
_EXACT_SIZE_FROM = validate.MAX_METADATA_BYTES // 8


def _stdlib_loads(raw: bytes) -> Any:
    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=constant)


try:
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib parser gives the same values
    _loads = _stdlib_loads


@dataclass
class Columns:
    """A message's documents, converted; ``errors[i]``: document i refused (the rest are valid)."""

    ids: list[str]
    code: F32
    rescore: F32 | None
    metadata: list[dict[str, Any]]
    errors: dict[int, InvalidArgument]
    # each document's metadata JSON text as received (None: the store encodes the parsed value), so
    # the store stores it without encoding it again
    metadata_json: list[bytes | None] | None = None

    def take(self, keep: Sequence[int]) -> Columns:
        idx = np.asarray(keep, dtype=np.intp)
        return Columns(
            [self.ids[i] for i in keep],
            self.code[idx],
            None if self.rescore is None else self.rescore[idx],
            [self.metadata[i] for i in keep],
            {},
            None if self.metadata_json is None else [self.metadata_json[i] for i in keep],
        )


def _matrix(blob: bytes, n: int, dims: int, field: str, errors: dict[int, InvalidArgument]) -> F32:
    if len(blob) != n * dims * 4:
        raise InvalidArgument(
            field,
            f"must hold len(ids) x {dims} float32 values, little-endian: {n} x {dims} x 4 = {n * dims * 4} "
            f"bytes; given {len(blob)}",
        )
    m: F32 = np.frombuffer(blob, dtype="<f4").reshape(n, dims).astype(np.float32, copy=False)
    sq = np.einsum("ij,ij->i", m, m)  # NaN or infinity: not finite; all zeros: 0 (checked exactly below)
    for i in np.flatnonzero(~np.isfinite(sq) | (sq == 0)).tolist():
        row = m[i]
        finite = np.isfinite(row)
        if not finite.all():
            col = int(np.argmin(finite))
            errors.setdefault(i, InvalidArgument(f"{field}[{i}][{col}]", f"must be finite; given {row[col]}"))
        elif not row.any():
            errors.setdefault(i, InvalidArgument(f"{field}[{i}]", "must not be the zero vector"))
    return m


def convert(cols: pb.DocumentColumns, code_bits: int, rescore_dims: int) -> Columns:
    """Raises InvalidArgument for the message as a whole (counts, blob sizes); a single document's
    problem is recorded in ``errors`` (its id, vector rows, metadata)."""
    ids = list(cols.ids)
    n = len(ids)
    if n == 0:
        raise InvalidArgument("columns.ids", f"must hold 1 to {MAX_DOCUMENTS} ids; given none")
    if n > MAX_DOCUMENTS:
        raise InvalidArgument("columns.ids", f"must hold at most {MAX_DOCUMENTS} documents; given {n}")
    raws = cols.metadata_json
    if len(raws) not in (0, n):
        raise InvalidArgument(
            "columns.metadata_json", f"must be empty or hold one entry per id ({n}); given {len(raws)}"
        )
    errors: dict[int, InvalidArgument] = {}
    code = _matrix(cols.code_f32le, n, code_bits, "columns.code_f32le", errors)
    rescore: F32 | None = None
    if cols.rescore_f32le or rescore_dims != code_bits:
        if not cols.rescore_f32le:
            raise InvalidArgument(
                "columns.rescore_f32le",
                f"is required: the collection's rescore_dims ({rescore_dims}) differ from its code_bits "
                f"({code_bits})",
            )
        rescore = _matrix(cols.rescore_f32le, n, rescore_dims, "columns.rescore_f32le", errors)
    if min(map(len, ids)) == 0 or max(map(len, ids)) > validate.MAX_ID_BYTES // 4:
        for i, x in enumerate(ids):
            if not x:
                errors[i] = InvalidArgument(f"columns.ids[{i}]", "must not be empty")
            elif len(x.encode("utf-8", errors="surrogatepass")) > validate.MAX_ID_BYTES:
                errors[i] = InvalidArgument(
                    f"columns.ids[{i}]",
                    f"must be at most {validate.MAX_ID_BYTES} UTF-8 bytes; given "
                    f"{len(x.encode('utf-8', errors='surrogatepass'))}",
                )
    if len(set(ids)) != n:
        first: dict[str, int] = {}
        for i, x in enumerate(ids):
            j = first.setdefault(x, i)
            if j != i:
                errors.setdefault(
                    i, InvalidArgument(f"columns.ids[{i}]", f"repeats columns.ids[{j}] {clip(x)}")
                )
    meta: list[dict[str, Any]] = [{}] * n
    texts: list[bytes | None] | None = [None] * n if raws else None
    for i, raw in enumerate(raws):
        if raw:
            try:
                meta[i] = metadata_json(raw, f"columns.metadata_json[{i}]")
            except InvalidArgument as exc:
                errors.setdefault(i, exc)
                continue
            if texts is not None and len(raw) <= _EXACT_SIZE_FROM:  # larger: the store encodes it
                texts[i] = raw
    return Columns(ids, code, rescore, meta, errors, texts)


def metadata_json(raw: bytes, field: str) -> dict[str, Any]:
    """One document's metadata from its JSON text, checked as Document.metadata is."""
    try:
        d = _loads(raw)
    except ValueError as exc:  # orjson's JSONDecodeError and json's are ValueErrors
        raise InvalidArgument(
            field, f"must be a JSON object as UTF-8 text: {clip(str(exc), quote=False)}"
        ) from None
    if type(d) is not dict:
        raise InvalidArgument(field, f"must be a JSON object; given {type(d).__name__}")
    try:
        _object(d, field, 0, top=True)
    except _Inexact:  # an integer past 64 bits read as a double: the exact parser says which
        _object(_stdlib_loads(raw), field, 0, top=True)
    if len(raw) > _EXACT_SIZE_FROM:
        size = len(json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode())
        if size > validate.MAX_METADATA_BYTES:
            raise InvalidArgument(
                field, f"must encode to at most {validate.MAX_METADATA_BYTES} bytes of JSON; given {size}"
            )
    return d


class _Inexact(Exception):
    """A double at or past 2**63: perhaps an integer the fast parser could not hold."""


def _object(d: dict[str, Any], field: str, depth: int, top: bool = False) -> None:
    if len(d) > validate.MAX_METADATA_KEYS:
        raise InvalidArgument(field, f"must hold at most {validate.MAX_METADATA_KEYS} keys; given {len(d)}")
    for key, v in d.items():
        if len(key) > validate.MAX_METADATA_KEY_BYTES // 4:
            validate.text(key, f"{field} key {clip(key)}", validate.MAX_METADATA_KEY_BYTES)
        if top and key == PASSAGE_KEY:
            raise InvalidArgument(f"{field} key {clip(key)}", "is reserved (chunked documents' passages)")
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not -_INT64 <= v < _INT64:
                raise InvalidArgument(
                    f"{field}.{clip(key, quote=False)}", f"integer {v} does not fit 64 bits"
                )
        elif t is float:
            _float(v, f"{field}.{clip(key, quote=False)}")
        else:
            _value(v, f"{field}.{clip(key, quote=False)}", depth)


def _float(v: float, field: str) -> None:
    if not math.isfinite(v):
        raise InvalidArgument(field, f"must be finite; given {v}")
    if abs(v) >= _INT64:
        raise _Inexact


def _value(v: Any, field: str, depth: int) -> None:
    t = type(v)
    if t is str or t is bool or v is None:
        return
    if t is int:
        if not -_INT64 <= v < _INT64:
            raise InvalidArgument(field, f"integer {v} does not fit 64 bits")
        return
    if t is float:
        _float(v, field)
        return
    if t is list:
        if len(v) > validate.MAX_STRING_LIST:
            raise InvalidArgument(
                field, f"must hold at most {validate.MAX_STRING_LIST} values; given {len(v)}"
            )
        if all(type(x) is str for x in v):  # a list of strings (the proto's string_list): no nesting
            return
        if depth >= MAX_DEPTH:
            raise InvalidArgument(field, f"must nest at most {MAX_DEPTH} levels of lists and objects")
        for i, x in enumerate(v):
            _value(x, f"{field}[{i}]", depth + 1)
        return
    if depth >= MAX_DEPTH:
        raise InvalidArgument(field, f"must nest at most {MAX_DEPTH} levels of lists and objects")
    _object(v, field, depth + 1)


# ---------------------------------------------------------------- writing
def check_request(documents: int, document: bool, chunking: bool) -> None:
    """A request with ``columns`` holds no other documents and no chunking."""
    if documents or document:
        raise InvalidArgument("columns", "and `documents` (or `document`) are both set; send one form")
    if chunking:
        raise InvalidArgument("chunking", "is for text documents; `columns` hold vectors")


def prepare(engine: Engine, collection: str, cols: pb.DocumentColumns) -> Columns:
    cfg = engine.store.collection(collection).config
    return convert(cols, cfg.code_bits, cfg.rescore_dims)


def prepare_message(engine: Engine, req: pb.UpsertStreamRequest) -> Columns | BaseException:
    """An UpsertStream message's columns converted ahead (on the stream's reader task), or why the
    whole message is refused."""
    try:
        check_request(len(req.documents), req.HasField("document"), req.chunking.enabled)
        return prepare(engine, req.collection, req.columns)
    except Exception as exc:  # every document of the message gets this status
        return exc


async def _store(engine: Engine, collection: str, c: Columns) -> int:
    """One transaction through the store's bulk path (``upsert_arrays``: ids as one numpy array),
    or its list path when an id ends in NUL (numpy strings drop trailing NULs)."""
    coll = engine.store.collection(collection)
    if c.ids[-1].endswith("\0") or "\0" in "".join(c.ids):
        n = len(c.ids)
        written, _, _ = await engine.upsert(
            collection, c.ids, [None] * n, c.code, [None] * n if c.rescore is None else c.rescore, c.metadata
        )
        return written
    if c.rescore is None:
        resc, code = c.code, None
    else:
        resc, code = c.rescore, c.code
    written = await asyncio.to_thread(
        functools.partial(
            coll.upsert_arrays,
            np.asarray(c.ids),
            resc,
            code,
            metadata=c.metadata,
            metadata_json=c.metadata_json,
        )
    )
    engine.remeasure_if_due(collection, coll)
    return int(written)


async def upsert(engine: Engine, req: pb.UpsertRequest) -> int:
    """Unary Upsert: all or nothing."""
    check_request(len(req.documents), False, req.chunking.enabled)
    c = prepare(engine, req.collection, req.columns)
    if c.errors:
        raise c.errors[min(c.errors)]
    return await _store(engine, req.collection, c)


async def write(
    engine: Engine, collection: str, prepared: Columns | BaseException, documents: int, ok: pb.Status
) -> pb.UpsertStreamResponse:
    """UpsertStream: one status per document (``documents``: the message's count, for a message
    refused as a whole); refused documents never block the others."""
    if isinstance(prepared, BaseException):
        return _answer([_status(prepared)] * documents, ok)
    c = prepared
    n = len(c.ids)
    statuses: list[pb.Status | None] = [None] * n
    for i, exc in c.errors.items():
        statuses[i] = _status(exc)
    keep = [i for i in range(n) if i not in c.errors] if c.errors else list(range(n))

    async def part(idx: list[int]) -> None:
        try:
            await _store(engine, collection, c if len(idx) == n else c.take(idx))
        except Exception as exc:
            if len(idx) > 1 and isinstance(exc, InvalidArgument | StoreInvalidArgument):
                half = len(idx) // 2  # a document the checks above let through: find it
                await part(idx[:half])
                await part(idx[half:])
                return
            st = _status(exc)
            for i in idx:
                statuses[i] = st
        else:
            for i in idx:
                statuses[i] = ok

    if keep:
        await part(keep)
    return _answer([s if s is not None else ok for s in statuses], ok)


def _status(exc: BaseException) -> pb.Status:
    code, message = status_of(exc)
    return pb.Status(code=code.value[0], message=message)


def _answer(statuses: list[pb.Status], ok: pb.Status) -> pb.UpsertStreamResponse:
    refused = [s for s in statuses if s.code != 0]
    if not refused:
        return pb.UpsertStreamResponse(status=ok, statuses=statuses, stored=len(statuses))
    first = refused[0]
    summary = pb.Status(
        code=first.code,
        message=f"{len(refused)} of {len(statuses)} documents refused; the first: {first.message}",
    )
    return pb.UpsertStreamResponse(status=summary, statuses=statuses, stored=len(statuses) - len(refused))


async def handle_group(
    group: Sequence[tuple[pb.UpsertStreamRequest, Any]],
    engine: Engine,
    rows: Callable[[list[pb.UpsertStreamRequest]], Awaitable[list[pb.UpsertStreamResponse]]],
    ok: pb.Status,
) -> list[pb.UpsertStreamResponse]:
    """Messages in stream order: each columns message on its own, runs of the other forms together."""
    out: list[pb.UpsertStreamResponse] = []
    run: list[pb.UpsertStreamRequest] = []
    for req, prepared in group:
        if not req.HasField("columns"):
            run.append(req)
            continue
        if run:
            out += await rows(run)
            run = []
        out.append(await write(engine, req.collection, prepared, max(1, len(req.columns.ids)), ok))
    if run:
        out += await rows(run)
    return out
