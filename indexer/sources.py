"""The corpus: input files listed through pyarrow's filesystems, cut into units, and read as rows.

A **unit** is the resumable piece of work: one Parquet row group, one byte range of a JSONL file
(``unit_bytes`` each, cut at line boundaries when read), or a run of text files (one document per
file, ``files_per_unit`` files). A unit's key is stable across runs as long as the input does not
change (path, row group or byte range, or the first and last file of the run), so a re-run skips the
units the progress records name.

Inputs are local paths or URIs any pyarrow filesystem reads (``s3://``, ``gs://``, ``hdfs://``,
``file://``): a file, or a directory (every file below it, sorted; JSONL and Parquet by extension,
the rest as text files with ``--format text``).

Rows: ``id``, ``text``, ``meta`` (compact JSON of the metadata, or ""), ``error`` (why the record
cannot become a document, or ""), ``where`` (``path:line`` or ``path@byte``), plus the unit's key and
its number of rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from zembed.service.ingest import BadRecord, FieldMap
from zembed.service.metadata import metadata_to_proto

FORMATS = ("jsonl", "parquet", "text")
JSONL_EXT = (".jsonl", ".ndjson", ".json")
PARQUET_EXT = (".parquet", ".pq")
DEFAULT_UNIT_BYTES = 32 << 20
DEFAULT_FILES_PER_UNIT = 256
MIN_PARTS = 16
_BLOCK = 1 << 20


class InputError(ValueError):
    """The input cannot be read at all (missing path, unknown format); the message says why."""


@dataclass(frozen=True)
class Unit:
    kind: str  # jsonl | parquet | text
    path: str  # a file (jsonl, parquet) or the input root (text)
    start: int = 0  # jsonl: first byte; parquet: row group
    end: int = 0  # jsonl: byte after the range
    files: tuple[str, ...] = ()  # text: the files (paths as the filesystem names them)
    root: str = ""  # text: ids are paths relative to this

    @property
    def key(self) -> str:
        if self.kind == "parquet":
            return f"parquet:{self.path}#rg={self.start}"
        if self.kind == "jsonl":
            return f"jsonl:{self.path}@{self.start}-{self.end}"
        return f"text:{self.files[0]}..{self.files[-1]}#{len(self.files)}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = list(self.files)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        return cls(
            str(d["kind"]),
            str(d["path"]),
            int(d["start"]),
            int(d["end"]),
            tuple(str(f) for f in d["files"]),
            str(d["root"]),
        )


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path within it) for a local path or a URI."""
    import pyarrow.fs as pafs  # type: ignore[import-untyped]

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, str(path)
    except (pafs.pa.ArrowInvalid, ValueError):
        # a relative local path (from_uri wants absolute ones)
        import os

        return pafs.LocalFileSystem(), os.path.abspath(uri)


def format_of(path: str, given: str | None) -> str | None:
    low = path.lower()
    if low.endswith(JSONL_EXT):
        return "jsonl"
    if low.endswith(PARQUET_EXT):
        return "parquet"
    return given if given in FORMATS else None


def plan_units(
    inputs: Sequence[str],
    fmt: str | None = None,
    *,
    unit_bytes: int = DEFAULT_UNIT_BYTES,
    files_per_unit: int = DEFAULT_FILES_PER_UNIT,
) -> tuple[list[Unit], list[str]]:
    """The units of every input, in a stable order; and the files skipped (unknown format), each
    with the reason."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    units: list[Unit] = []
    skipped: list[str] = []
    for uri in inputs:
        fs, root = filesystem(uri)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"{uri}: no such file or directory")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
            files = sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)
            base = root.rstrip("/")
        else:
            files = [info]
            base = root.rsplit("/", 1)[0] if "/" in root else ""
        texts: list[str] = []
        for f in files:
            name = f.path.rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            kind = (
                format_of(f.path, fmt)
                if info.type == pafs.FileType.Directory
                else (fmt if fmt else format_of(f.path, None))
            )
            if kind is None:
                skipped.append(f"{_uri(uri, f.path, root)}: unknown format (--format text reads it)")
                continue
            if kind == "parquet":
                with fs.open_input_file(f.path) as fh:
                    try:
                        groups = pq.ParquetFile(fh).metadata.num_row_groups
                    except Exception as exc:  # pyarrow's own ArrowInvalid
                        raise InputError(f"{f.path}: not a readable Parquet file ({exc})") from None
                units.extend(Unit("parquet", _uri(uri, f.path, root), g) for g in range(groups))
            elif kind == "jsonl":
                size = int(f.size or 0)
                # at least MIN_PARTS units per file of over MIN_PARTS x 64 KiB, so that a small corpus
                # still spreads over the actors (a unit is read as one block, embedded by one actor)
                parts = max(1, math.ceil(size / max(1, unit_bytes)), min(MIN_PARTS, size // (64 << 10)))
                step = math.ceil(size / parts) if size else 0
                for p in range(parts):
                    units.append(Unit("jsonl", _uri(uri, f.path, root), p * step, min(size, (p + 1) * step)))
            else:
                texts.append(f.path)
        for i in range(0, len(texts), max(1, files_per_unit)):
            run = tuple(_uri(uri, t, root) for t in texts[i : i + files_per_unit])
            units.append(Unit("text", _uri(uri, base, root) if base else uri, files=run, root=base))
    return units, skipped


def _uri(given: str, path: str, root: str) -> str:
    """``path`` (as the filesystem names it) in the form the caller gave ``root`` (URI or path)."""
    if "://" in given and not given.startswith("file://"):
        scheme = given.split("://", 1)[0]
        return f"{scheme}://{path}"
    return path


# ---------------------------------------------------------------- reading a unit
ROW_COLUMNS = ("id", "text", "meta", "error", "where")


def read_unit(unit: Unit, fm: FieldMap) -> list[dict[str, str]]:
    """Every record of the unit as a row (see the module doc); a record that cannot become a
    document is a row with ``error`` set, never dropped."""
    if unit.kind == "text":
        return list(_read_texts(unit))
    rows = _parquet_records(unit) if unit.kind == "parquet" else _jsonl_records(unit)
    out = []
    for where, rec in rows:
        if isinstance(rec, BadRecord):
            out.append(_bad(where, str(rec)))
            continue
        try:
            out.append(to_row(rec, fm, where))
        except BadRecord as exc:
            out.append(_bad(where, str(exc)))
    return out


def _bad(where: str, why: str) -> dict[str, str]:
    return {"id": "", "text": "", "meta": "", "error": why, "where": where}


def to_row(rec: dict[str, Any], fm: FieldMap, where: str) -> dict[str, str]:
    """A record as (id, text, metadata) with ``zembed ingest``'s mapping rules (the same fields, the
    same refusals), for text documents only: a record without text is refused."""
    raw_id = rec.get(fm.id)
    if raw_id is None or raw_id == "":
        raise BadRecord(f"no id (field {fm.id!r})")
    if isinstance(raw_id, bool | float | dict | list):
        raise BadRecord(f"field {fm.id!r}: must be a string or an integer; given {json.dumps(raw_id)[:80]}")
    text = rec.get(fm.text)
    if text is None or text == "":
        raise BadRecord(f"no text (field {fm.text!r}); zembed ingest loads precomputed vectors")
    if not isinstance(text, str):
        raise BadRecord(f"field {fm.text!r}: must be a string; given {type(text).__name__}")
    meta: dict[str, Any] = {}
    obj = rec.get(fm.metadata)
    if obj is not None:
        if not isinstance(obj, dict):
            raise BadRecord(f"field {fm.metadata!r}: must be an object; given {type(obj).__name__}")
        meta.update(obj)
    mapped = fm.mapped()
    for k in fm.columns if fm.columns is not None else [k for k in rec if k not in mapped]:
        v = rec.get(k)
        if v is not None and v != "":
            meta[k] = v.tolist() if hasattr(v, "tolist") else v
    try:
        metadata_to_proto(meta)  # the same refusals as zembed ingest (and what UpsertStream can carry)
    except ValueError as exc:
        raise BadRecord(str(exc)) from None
    return {
        "id": str(raw_id),
        "text": text,
        "meta": json.dumps(meta, separators=(",", ":"), ensure_ascii=False) if meta else "",
        "error": "",
        "where": where,
    }


def _jsonl_records(unit: Unit) -> Iterator[tuple[str, dict[str, Any] | BadRecord]]:
    from zembed.service.ingest import _json_loads

    loads = _json_loads()
    fs, path = filesystem(unit.path)
    with fs.open_input_file(path) as f:
        for offset, line in _lines(f, unit.start, unit.end):
            where = f"{unit.path}@{offset}"
            if not line.strip():
                continue
            try:
                obj = loads(line)
            except (json.JSONDecodeError, ValueError) as exc:
                yield where, BadRecord(f"not JSON: {getattr(exc, 'msg', exc)}")
                continue
            if not isinstance(obj, dict):
                yield where, BadRecord(f"expected a JSON object per line; given {type(obj).__name__}")
                continue
            yield where, obj


def _lines(f: Any, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of every line that starts in [start, end): a line that starts before
    ``start`` belongs to the previous range, one that starts before ``end`` is read to its end."""
    pos = start
    if start > 0:
        f.seek(start - 1)
        skip = b""
        while True:
            block = f.read(_BLOCK)
            if not block:
                return
            i = block.find(b"\n")
            if i >= 0:
                pos = start - 1 + len(skip) + i + 1
                break
            skip += block
    f.seek(pos)
    buf = b""
    buf_at = pos
    while buf_at < end or buf:
        nl = buf.find(b"\n")
        if nl < 0:
            block = f.read(_BLOCK)
            if not block:
                if buf and buf_at < end:
                    yield buf_at, buf
                return
            buf += block
            continue
        if buf_at >= end:
            return
        yield buf_at, buf[:nl]
        buf = buf[nl + 1 :]
        buf_at += nl + 1


def _parquet_records(unit: Unit) -> Iterator[tuple[str, dict[str, Any] | BadRecord]]:
    import pyarrow.parquet as pq

    fs, path = filesystem(unit.path)
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        first = sum(pf.metadata.row_group(g).num_rows for g in range(unit.start))
        table = pf.read_row_group(unit.start)
        for i, rec in enumerate(table.to_pylist()):
            yield f"{unit.path}:row {first + i + 1}", rec


def _read_texts(unit: Unit) -> Iterator[dict[str, str]]:
    fs, _ = filesystem(unit.files[0])
    for uri in unit.files:
        _, path = filesystem(uri)
        rel = path[len(unit.root) :].lstrip("/") if unit.root and path.startswith(unit.root) else path
        try:
            with fs.open_input_file(path) as f:
                raw = f.read()
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _bad(uri, f"not UTF-8 text (byte {exc.start})")
            continue
        except OSError as exc:
            yield _bad(uri, f"cannot be read ({exc})")
            continue
        if not text.strip():
            yield _bad(uri, "empty file")
            continue
        yield {"id": rel, "text": text, "meta": "", "error": "", "where": uri}
