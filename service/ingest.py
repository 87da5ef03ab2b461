"""``zembed ingest FILE COLLECTION``: JSONL, CSV or Parquet into a collection over UpsertStream.

One pass over the file: records are parsed and mapped to documents (id, text or precomputed
vectors, metadata: any JSON values), checked in batches against the collection (GetDocuments: ids
already stored are skipped, so a re-run resumes an interrupted ingest), and streamed in messages of
``--batch`` documents; the server acknowledges each message, in order, once its documents are
durably stored, with one status per document. At most ``--window`` documents are in flight.
``--chunk`` splits long texts into passages on the server (the Upsert ``chunking`` option).
A bad record (unparseable line, missing id, a vector that is not numbers, a document the server
refuses) is reported as ``FILE:LINE: why`` and skipped; the run goes on. The summary at the end
counts every record once: stored, skipped (already stored), bad (here or refused by the server).

A collection that is empty when the run starts needs no check (nothing in it came from an earlier
run). Repeated ids within one file: later lines win (every line with an id sent in this run is sent
again), as upserts do.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import grpc
import numpy as np

from zembed.service.commands import (
    FAILED,
    OK,
    Connection,
    UsageError,
    _split_names,
    describe_rpc_error,
)
from zembed.service.metadata import set_metadata
from zembed.v1 import zembed_pb2 as pb

FORMATS = ("jsonl", "csv", "parquet")
_MAX_GET_IDS = 1000  # GetDocuments' limit per call
_MAX_UPSERT = 10_000  # Upsert's limit per call
_BATCH = 1000  # documents per message
_COLUMNS_BATCH = 5000  # documents per DocumentColumns message
_WINDOW = 4096  # documents in flight
# a unary batch refused with one of these is retried document by document (the others stop the run)
_ITEM_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
}


class BadRecord(ValueError):
    """A record that cannot become a document; the message says why."""


@dataclass(frozen=True)
class FieldMap:
    id: str = "id"
    text: str = "text"
    vector: str = "vector"
    rescore: str | None = None
    metadata: str = "metadata"
    columns: tuple[str, ...] | None = None  # None: every field not mapped above

    def mapped(self) -> set[str]:
        return {self.id, self.text, self.vector, self.metadata} | ({self.rescore} if self.rescore else set())


# ---------------------------------------------------------------- readers: (line, record | BadRecord)
Row = tuple[int, "dict[str, Any] | VectorRecord | BadRecord"]


def _count_lines(path: Path) -> int:
    n = 0
    last = b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _json_loads() -> Any:
    """orjson when installed (the `cli` extra: about 3.5x faster on lines of vectors), else json."""
    try:
        import orjson
    except ImportError:
        return json.loads
    return orjson.loads


def _simdjson() -> Any:
    """pysimdjson when installed (the `cli` extra): a vector field's numbers are read straight into a
    buffer of doubles (no Python float per number: about 2x faster than orjson on lines of vectors)."""
    try:
        import simdjson  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return simdjson


class VectorRecord(NamedTuple):
    """A JSONL record that is a document with a vector and nothing to convert (read by pysimdjson):
    it travels in DocumentColumns as it is."""

    id: str
    f64: bytes  # the vector's numbers as float64 (native order), straight from the parser
    metadata: bytes  # the metadata object's compact JSON text; b"" for none


def read_jsonl(
    f: IO[Any], vector_fields: frozenset[str] = frozenset(), columns: FieldMap | None = None
) -> Iterator[Row]:
    """Records of a JSONL stream; with pysimdjson installed, the ``vector_fields`` holding arrays of
    numbers come as float32 numpy vectors (other values as plain Python values either way), and
    with ``columns`` (its field mapping) a line holding only an id, a vector and a metadata object
    comes as a :class:`VectorRecord`."""
    sj = _simdjson() if vector_fields else None
    if sj is not None:
        yield from _read_jsonl_simd(f, sj, vector_fields, columns)
        return
    loads = _json_loads()
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except json.JSONDecodeError as exc:
            yield n, BadRecord(f"not JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            yield n, BadRecord(f"expected a JSON object per line; given {type(obj).__name__}")
            continue
        yield n, obj


def _vector_record(doc: Any, fm: FieldMap, array: Any, obj_type: Any) -> VectorRecord | None:
    """The parsed line as a VectorRecord when it is one (else None: read as a record). Its keys are
    walked once (a simdjson lookup of a missing key costs more than the line's parse)."""
    vec: Any = None
    doc_id: Any = None
    meta: Any = None
    for key in doc.keys():  # noqa: SIM118 (a simdjson Object iterates its keys through keys())
        if key == fm.vector:
            vec = doc[key]
        elif key == fm.id:
            doc_id = doc[key]
        elif key == fm.metadata:
            meta = doc[key]
        elif key != fm.text and (fm.columns is None or key in fm.columns):
            return None  # a field that becomes a metadata key: merged as a record
    if type(vec) is not array:
        return None
    try:
        f64 = bytes(vec.as_buffer(of_type="d"))
    except (TypeError, ValueError):  # not all numbers
        return None
    if type(doc_id) is int:
        doc_id = str(doc_id)
    elif type(doc_id) is not str or not doc_id or not f64:
        return None
    if meta is None:
        text = b""
    elif type(meta) is obj_type:
        text = meta.mini
    else:
        return None
    return VectorRecord(doc_id, f64, b"" if text == b"{}" else text)


def _read_jsonl_simd(
    f: IO[Any], sj: Any, vector_fields: frozenset[str], columns: FieldMap | None = None
) -> Iterator[Row]:
    """Lines as bytes (a file opened in binary: no decoding, simdjson checks the UTF-8) or str."""
    parser = sj.Parser()
    array, obj_type = sj.Array, sj.Object
    for n, line in enumerate(f, 1):
        if not line or line.isspace():
            continue
        try:
            doc = parser.parse(
                line if isinstance(line, bytes) else line.encode("utf-8", errors="surrogatepass")
            )
        except ValueError as exc:
            yield n, BadRecord(f"not JSON: {exc}")
            continue
        if not isinstance(doc, obj_type):
            kind = "list" if isinstance(doc, array) else type(doc).__name__
            del doc
            yield n, BadRecord(f"expected a JSON object per line; given {kind}")
            continue
        if columns is not None:
            got = _vector_record(doc, columns, array, obj_type)
            if got is not None:
                del doc
                yield n, got
                continue
        rec: dict[str, Any] = {}
        value: Any = None
        for key in doc.keys():  # noqa: SIM118 (a simdjson Object iterates its keys through keys())
            value = doc[key]
            if isinstance(value, array):
                if key in vector_fields:
                    try:
                        value = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64).astype(
                            np.float32
                        )
                    except (TypeError, ValueError):  # not all numbers: converted, refused with its reason
                        value = value.as_list()
                else:
                    value = value.as_list()
            elif isinstance(value, obj_type):
                value = value.as_dict()
            rec[key] = value
        del doc, value  # the parser is reused only once nothing refers to its last document
        yield n, rec


def read_csv(f: IO[str], delimiter: str) -> Iterator[Row]:
    reader = csv.DictReader(f, delimiter=delimiter)
    try:
        for rec in reader:
            if None in rec:  # more cells than header columns
                yield (
                    reader.line_num,
                    BadRecord(f"{len(rec) - 1 + len(rec[None])} cells; the header has {len(rec) - 1}"),
                )
                continue
            yield reader.line_num, {k: v for k, v in rec.items() if v is not None}
    except csv.Error as exc:
        yield reader.line_num, BadRecord(f"CSV error: {exc}; reading stopped here")


def read_parquet(path: Path, vector_fields: set[str], batch_rows: int = 4096) -> Iterator[Row]:
    pq = _pyarrow_parquet()
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    vec_cols = [c for c in vector_fields if c in names]
    row = 0
    for batch in pf.iter_batches(batch_size=batch_rows):
        vectors: dict[str, list[Any]] = {c: _vector_column(batch.column(c)) for c in vec_cols}
        rest = batch.drop_columns(vec_cols) if vec_cols else batch
        for i, rec in enumerate(rest.to_pylist()):
            for c in vec_cols:
                rec[c] = vectors[c][i]
            row += 1
            yield row, rec


def _vector_column(col: Any) -> list[Any]:
    """A list<float> column as one numpy slice per row (None for nulls): no Python float per value."""
    import pyarrow as pa  # type: ignore[import-untyped]

    if not (
        pa.types.is_list(col.type)
        or pa.types.is_large_list(col.type)
        or pa.types.is_fixed_size_list(col.type)
    ):
        return col.to_pylist()  # type: ignore[no-any-return]
    if not pa.types.is_floating(col.type.value_type) and not pa.types.is_integer(col.type.value_type):
        return col.to_pylist()  # type: ignore[no-any-return]
    if col.null_count or col.values.null_count:
        return col.to_pylist()  # type: ignore[no-any-return]
    values = col.values.to_numpy(zero_copy_only=False).astype("<f4", copy=False)
    if pa.types.is_fixed_size_list(col.type):
        size = col.type.list_size
        base = col.offset * size
        return [values[base + i * size : base + (i + 1) * size] for i in range(len(col))]
    offsets = col.offsets.to_numpy()
    first = int(offsets[0])
    return [values[int(a) - first : int(b) - first] for a, b in itertools.pairwise(offsets)]


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise UsageError(
            "reading Parquet needs pyarrow: pip install 'zembed-serve[cli]' (or pip install pyarrow)"
        ) from None
    return pq


# ---------------------------------------------------------------- records -> documents
def _vector(value: Any, name: str) -> bytes:
    if isinstance(value, np.ndarray) and value.dtype == np.float32 and value.ndim == 1 and value.size:
        if not np.isfinite(value).all():
            raise BadRecord(f"field {name!r}[{int(np.argmin(np.isfinite(value)))}]: must be finite")
        return value.tobytes()
    if isinstance(value, str):
        s = value.strip()
        try:
            value = json.loads(s) if s.startswith("[") else [float(x) for x in s.replace(",", " ").split()]
        except (json.JSONDecodeError, ValueError):
            raise BadRecord(f"field {name!r}: not a list of numbers") from None
    try:
        arr = np.asarray(value, dtype="<f4")
    except (ValueError, TypeError):
        raise BadRecord(f"field {name!r}: not a list of numbers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise BadRecord(f"field {name!r}: expected a non-empty list of numbers")
    if not np.isfinite(arr).all():
        raise BadRecord(f"field {name!r}[{int(np.argmin(np.isfinite(arr)))}]: must be finite")
    return arr.tobytes()


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, str) and v == "")


def to_document(rec: dict[str, Any], fm: FieldMap, doc: pb.Document | None = None) -> pb.Document:
    """The record as a document (filled into ``doc`` when given: a message's next document, so a
    message is built in place, never copied)."""
    raw_id = rec.get(fm.id)
    if not _present(raw_id):
        raise BadRecord(f"no id (field {fm.id!r})")
    if isinstance(raw_id, bool | float | dict | list):
        raise BadRecord(f"field {fm.id!r}: must be a string or an integer; given {json.dumps(raw_id)[:80]}")
    if doc is None:
        doc = pb.Document()
    doc.id = str(raw_id)
    vec = rec.get(fm.vector)
    text = rec.get(fm.text)
    if _present(vec) and not (isinstance(vec, list | np.ndarray) and len(vec) == 0):
        doc.vectors.code_f32le = _vector(vec, fm.vector)
        if fm.rescore and _present(rec.get(fm.rescore)):
            doc.vectors.rescore_f32le = _vector(rec[fm.rescore], fm.rescore)
    elif _present(text):
        if not isinstance(text, str):
            raise BadRecord(f"field {fm.text!r}: must be a string; given {type(text).__name__}")
        doc.text = text
    else:
        raise BadRecord(f"no text (field {fm.text!r}) and no vector (field {fm.vector!r})")
    meta: dict[str, Any] = {}
    obj = rec.get(fm.metadata)
    if obj is not None:
        if isinstance(obj, str):  # CSV: a JSON object in a cell
            try:
                obj = json.loads(obj) if obj.strip() else {}
            except json.JSONDecodeError:
                raise BadRecord(f"field {fm.metadata!r}: not a JSON object") from None
        if not isinstance(obj, dict):
            raise BadRecord(f"field {fm.metadata!r}: must be an object; given {type(obj).__name__}")
        meta.update(obj)
    mapped = fm.mapped()
    for k in fm.columns if fm.columns is not None else [k for k in rec if k not in mapped]:
        v = rec.get(k)
        if _present(v):
            meta[k] = v.tolist() if isinstance(v, np.ndarray) else v
    try:
        set_metadata(doc.metadata, meta)
    except ValueError as exc:
        raise BadRecord(str(exc)) from None
    return doc


@dataclass
class _ColumnBatch:
    """The documents of one DocumentColumns message being built, in line order: vectors of one
    length (``width`` bytes of float64)."""

    width: int
    ids: list[str] = field(default_factory=list)
    vectors: list[bytes] = field(default_factory=list)
    meta: list[bytes] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, rec: VectorRecord, line: int) -> None:
        self.ids.append(rec.id)
        self.vectors.append(rec.f64)
        self.meta.append(rec.metadata)
        self.lines.append(line)
        self.seen.add(rec.id)

    def take(self, keep: list[int]) -> _ColumnBatch:
        out = _ColumnBatch(self.width)
        for k in keep:
            out.add(VectorRecord(self.ids[k], self.vectors[k], self.meta[k]), self.lines[k])
        return out


# ---------------------------------------------------------------- the run
@dataclass
class Stats:
    records: int = 0
    stored: int = 0
    skipped: int = 0
    bad: int = 0  # refused here (parse, mapping)
    refused: int = 0  # refused by the server
    unacknowledged: int = 0  # sent, no answer (the stream broke)
    sent: int = 0
    reported: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file",
        metavar="FILE",
        help="a .jsonl/.ndjson, .csv/.tsv or .parquet file; '-' reads JSONL from stdin",
    )
    p.add_argument("collection", metavar="COLLECTION")
    g = p.add_argument_group("input")
    g.add_argument("--format", choices=FORMATS, help="input format (default: from the file's extension)")
    g.add_argument("--delimiter", help="CSV delimiter (default: ',' or a tab for .tsv)")
    g.add_argument("--id-field", default="id", metavar="NAME", help="field holding the id (default: id)")
    g.add_argument(
        "--text-field", default="text", metavar="NAME", help="field holding the text (default: text)"
    )
    g.add_argument(
        "--vector-field",
        default="vector",
        metavar="NAME",
        help="field holding a precomputed code vector; a record with one is not embedded (default: vector)",
    )
    g.add_argument(
        "--rescore-field",
        metavar="NAME",
        help="field holding the rescoring vector, when the collection's rescore dims differ from its "
        "code bits",
    )
    g.add_argument(
        "--metadata-field",
        default="metadata",
        metavar="NAME",
        help="field holding a metadata object (default: metadata)",
    )
    g.add_argument(
        "--metadata-columns",
        metavar="NAME[,NAME...]",
        help="other fields to store as metadata (default: every field not mapped above; '' for none)",
    )
    g = p.add_argument_group("loading")
    g.add_argument("--overwrite", action="store_true", help="upsert every record, even ids already stored")
    g.add_argument(
        "--create",
        action="store_true",
        help="create the collection (model defaults, --filterable fields) if it does not exist",
    )
    g.add_argument("--filterable", metavar="FIELD[,FIELD...]", help="filterable fields for --create")
    g.add_argument(
        "--window",
        type=int,
        help="documents sent and not yet acknowledged, at most, in whole messages (at least one; "
        f"default: {_WINDOW}, or two messages of columns when larger)",
    )
    g.add_argument(
        "--method",
        choices=["stream", "unary"],
        default="stream",
        help="stream: one UpsertStream, messages of --batch documents, each document acknowledged with "
        "its own status (default); unary: Upsert calls of --batch documents, two in flight (a refused "
        "batch is retried one document at a time to name the bad lines)",
    )
    g.add_argument(
        "--batch",
        type=int,
        help="documents per stream message, or per Upsert call with --method unary (default: "
        f"{_COLUMNS_BATCH} for lines of an id, a vector and metadata, sent as columns; {_BATCH} for others)",
    )
    g.add_argument(
        "--chunk",
        action="store_true",
        help="split long texts into passages (token-aware, overlapping, offsets kept), each stored and "
        "searched as the document's passage; records with vectors are stored as given",
    )
    g.add_argument(
        "--chunk-tokens",
        type=int,
        default=0,
        metavar="N",
        help="tokens per passage with --chunk (default: min(512, the model's window))",
    )
    g.add_argument(
        "--chunk-overlap",
        type=int,
        default=0,
        metavar="N",
        help="tokens shared by consecutive passages with --chunk (default: a passage's 1/8)",
    )
    g.add_argument(
        "--check-batch",
        type=int,
        default=1000,
        help="ids per GetDocuments call when checking what is stored (default: 1000, the server's limit)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar with rate and ETA on stderr (default: when stderr is a terminal)",
    )
    g.add_argument(
        "--show-errors", type=int, default=100, metavar="N", help="report at most N bad lines (default: 100)"
    )
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    from zembed.service.commands import _run

    p.set_defaults(func=_run, handler=run_ingest)


def _format_of(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    if args.file == "-":
        return "jsonl"
    ext = Path(args.file).suffix.lower()
    for fmt, exts in (
        ("jsonl", (".jsonl", ".ndjson", ".json")),
        ("csv", (".csv", ".tsv")),
        ("parquet", (".parquet", ".pq")),
    ):
        if ext in exts:
            return fmt
    raise UsageError(
        f"cannot tell the format of {args.file} from its extension; give --format {'|'.join(FORMATS)}"
    )


def _open_rows(
    args: argparse.Namespace, fmt: str, fm: FieldMap, count: bool = True
) -> tuple[Iterator[Row], int | None, list[IO[str]]]:
    """The records, their number when known (``count``: lines are counted for the progress bar),
    and the files to close."""
    raw = fm if _columnar(args) and fm.rescore is None else None
    if args.file == "-":
        if fmt != "jsonl":
            raise UsageError("stdin is read as JSONL only")
        stdin = getattr(sys.stdin, "buffer", sys.stdin) if _simdjson() is not None else sys.stdin
        return read_jsonl(stdin, _vector_fields(fm), raw), None, []
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if fmt == "parquet":
        pq = _pyarrow_parquet()
        try:
            total = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # pyarrow raises its own ArrowInvalid for a non-Parquet file
            raise UsageError(f"{path}: not a readable Parquet file ({exc})") from None
        vec = {fm.vector} | ({fm.rescore} if fm.rescore else set())
        return read_parquet(path, vec), int(total), []
    try:
        if fmt == "jsonl" and _simdjson() is not None:
            f: IO[Any] = path.open("rb", buffering=1 << 20)  # bytes straight to the parser (long lines)
        else:
            f = path.open(encoding="utf-8", newline="" if fmt == "csv" else None)
        total = _count_lines(path) if count else None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    if fmt == "csv":
        delim = args.delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
        return read_csv(f, delim), None if total is None else max(0, total - 1), [f]
    return read_jsonl(f, _vector_fields(fm), raw), total, [f]


def _columnar(args: argparse.Namespace) -> bool:
    """Whether documents with vectors travel as DocumentColumns: streamed, not chunked."""
    return bool(args.method == "stream" and not args.chunk)


def _vector_fields(fm: FieldMap) -> frozenset[str]:
    return frozenset({fm.vector} | ({fm.rescore} if fm.rescore else set()))


def _check_collection(conn: Connection, args: argparse.Namespace) -> int:
    """The collection's document count (0 when created here)."""
    try:
        resp = conn.call(conn.search.GetCollection, pb.GetCollectionRequest(name=args.collection))
        return int(resp.collection.count)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        if not args.create:
            raise UsageError(
                f"collection {args.collection!r} does not exist; create it with `zembed collections create "
                f"{args.collection} --filterable FIELD,...` or add --create"
            ) from None
        conn.call(
            conn.search.CreateCollection,
            pb.CreateCollectionRequest(
                name=args.collection, config=pb.CollectionConfig(filterable=_split_names(args.filterable))
            ),
        )
        return 0


def run_ingest(conn: Connection, args: argparse.Namespace) -> int:
    if (
        (args.window is not None and args.window < 1)
        or not 1 <= args.check_batch <= _MAX_GET_IDS
        or (args.batch is not None and not 1 <= args.batch <= _MAX_UPSERT)
    ):
        raise UsageError(
            f"--window must be >= 1, --check-batch 1 to {_MAX_GET_IDS}, --batch 1 to {_MAX_UPSERT}"
        )
    if (args.chunk_tokens or args.chunk_overlap) and not args.chunk:
        raise UsageError("--chunk-tokens and --chunk-overlap need --chunk")
    if args.chunk_tokens < 0 or args.chunk_overlap < 0:
        raise UsageError("--chunk-tokens and --chunk-overlap must be >= 0 (0: the server's default)")
    fmt = _format_of(args)
    columns = None if args.metadata_columns is None else tuple(_split_names(args.metadata_columns))
    fm = FieldMap(
        args.id_field, args.text_field, args.vector_field, args.rescore_field, args.metadata_field, columns
    )
    if args.file != "-" and not Path(args.file).is_file():
        raise UsageError(f"{args.file}: no such file")
    # a collection empty at the start holds nothing from an earlier run: no resume checks needed
    # (ids sent by this run are tracked in sent_ids either way)
    stored_before = _check_collection(conn, args)
    resume = not args.overwrite and stored_before > 0
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    rows, total, files = _open_rows(args, fmt, fm, count=show)  # lines counted for the bar only

    from tqdm import tqdm

    name = "<stdin>" if args.file == "-" else args.file
    bar = tqdm(total=total, unit="doc", disable=not show, dynamic_ncols=True, smoothing=0.1, file=sys.stderr)
    st = Stats()
    pending: deque[list[tuple[int, str]]] = deque()  # per message sent: (line, id) of its documents
    columnar = _columnar(args) and fm.rescore is None
    row_batch = args.batch or _BATCH
    col_batch = args.batch or _COLUMNS_BATCH  # (a store transaction costs less per document when larger)
    window = args.window or (max(_WINDOW, 2 * col_batch) if columnar else _WINDOW)
    room = threading.Semaphore(max(1, window // (col_batch if columnar else row_batch)))  # messages in flight
    stop = threading.Event()
    failure: list[BaseException] = []

    def report(line: int, msg: str) -> None:
        with st.lock:
            st.reported += 1
            n = st.reported
        if n <= args.show_errors:
            bar.write(f"{name}:{line}: {msg}", file=sys.stderr)
        elif n == args.show_errors + 1:
            bar.write(
                f"{name}: more bad lines; only the first {args.show_errors} are shown (--show-errors)",
                file=sys.stderr,
            )

    def advance(n: int = 1) -> None:
        with st.lock:
            bar.update(n)

    sent_ids: set[str] = set()
    streaming = args.method == "stream"
    chunking = (
        pb.Chunking(enabled=True, max_tokens=args.chunk_tokens, overlap_tokens=args.chunk_overlap)
        if args.chunk
        else None
    )

    def stored_ids(ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), args.check_batch):
            chunk = ids[i : i + args.check_batch]
            resp = conn.call(
                conn.search.GetDocuments, pb.GetDocumentsRequest(collection=args.collection, ids=chunk)
            )
            found.update(d.id for d in resp.documents if d.found)
        return found

    def message() -> pb.UpsertStreamRequest:
        msg = pb.UpsertStreamRequest(collection=args.collection)
        if chunking is not None:
            msg.chunking.CopyFrom(chunking)
        return msg

    def send(
        ids: list[str],
        lines: list[int],
        build: Callable[[list[int] | None], pb.UpsertStreamRequest],
        batch: int,
    ) -> Iterator[pb.UpsertStreamRequest]:
        """A message's documents not stored yet, in messages of at most --batch documents (``build``:
        the message of the documents at these indices; None: all of them)."""
        skip: set[str] = set()
        if resume:
            check_ids = list(dict.fromkeys(i for i in ids if i not in sent_ids))
            skip = stored_ids(check_ids) if check_ids else set()
        keep = list(range(len(ids)))
        if skip:
            keep = [k for k in keep if ids[k] not in skip]
            with st.lock:
                st.skipped += len(ids) - len(keep)
            advance(len(ids) - len(keep))
        for i in range(0, len(keep), batch):
            part = keep[i : i + batch]
            out = build(None if len(part) == len(ids) else part)
            while streaming and not room.acquire(timeout=0.2):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            if not args.overwrite:
                sent_ids.update(ids[k] for k in part)
            with st.lock:
                pending.append([(lines[k], ids[k]) for k in part])
                st.sent += len(part)
            yield out

    def send_rows(msg: pb.UpsertStreamRequest, lines: list[int]) -> Iterator[pb.UpsertStreamRequest]:
        docs = msg.documents

        def build(part: list[int] | None) -> pb.UpsertStreamRequest:
            if part is None:
                return msg  # the common case: sent as built
            out = message()
            out.documents.extend(docs[k] for k in part)
            return out

        yield from send([d.id for d in docs], lines, build, row_batch)

    def send_columns(cols: _ColumnBatch) -> Iterator[pb.UpsertStreamRequest]:
        wide = np.frombuffer(b"".join(cols.vectors), dtype=np.float64)
        matrix = wide.reshape(len(cols.ids), cols.width // 8).astype(np.float32)
        finite = np.isfinite(matrix).all(axis=1)  # float64 text past float32's range is infinite here
        keep = None if finite.all() else np.flatnonzero(finite)
        if keep is not None:
            for k in np.flatnonzero(~finite).tolist():
                col = int(np.argmin(np.isfinite(matrix[k])))
                with st.lock:
                    st.bad += 1
                report(cols.lines[k], f"field {fm.vector!r}[{col}]: must be finite")
                advance()
            if not len(keep):
                return
            matrix = matrix[keep]
            cols = cols.take(keep.tolist())
        meta = cols.meta if any(cols.meta) else None

        def build(part: list[int] | None) -> pb.UpsertStreamRequest:
            out = message()
            c = out.columns
            if part is None:
                c.ids.extend(cols.ids)
                c.code_f32le = matrix.tobytes()
                if meta is not None:
                    c.metadata_json.extend(meta)
                return out
            c.ids.extend([cols.ids[k] for k in part])
            c.code_f32le = matrix[part].tobytes()
            if meta is not None:
                c.metadata_json.extend([meta[k] for k in part])
            return out

        yield from send(cols.ids, cols.lines, build, col_batch)

    # resume checks of --check-batch ids, sent as messages of --batch documents
    check = row_batch if args.overwrite else max(args.check_batch, row_batch)
    col_check = col_batch if args.overwrite else max(args.check_batch, col_batch)

    def requests() -> Iterator[pb.UpsertStreamRequest]:
        msg = message()
        lines: list[int] = []
        row_ids: set[str] = set()  # (only while columns are built too: an id's later line must win)
        cols: _ColumnBatch | None = None
        try:
            for line, rec in rows:
                if stop.is_set():
                    return
                with st.lock:
                    st.records += 1
                if isinstance(rec, VectorRecord):
                    if cols is not None and (len(rec.f64) != cols.width or rec.id in cols.seen):
                        yield from send_columns(cols)  # one width per message; a repeated id: later
                        cols = None
                    if rec.id in row_ids:  # its earlier line is in the documents being built: send them
                        yield from send_rows(msg, lines)
                        msg, lines, row_ids = message(), [], set()
                    if cols is None:
                        cols = _ColumnBatch(len(rec.f64))
                    cols.add(rec, line)
                    if len(cols.ids) >= col_check:
                        yield from send_columns(cols)
                        cols = None
                    continue
                try:
                    if isinstance(rec, BadRecord):
                        raise rec
                    doc = to_document(rec, fm, msg.documents.add())
                    lines.append(line)
                except BadRecord as exc:
                    if len(msg.documents) > len(lines):
                        del msg.documents[-1]
                    with st.lock:
                        st.bad += 1
                    report(line, str(exc))
                    advance()
                    continue
                if columnar:
                    row_ids.add(doc.id)
                    # its earlier line waits in the columns: they go first
                    if cols is not None and doc.id in cols.seen:
                        del msg.documents[-1]
                        lines.pop()
                        row_ids.discard(doc.id)
                        yield from send_columns(cols)
                        cols = None
                        to_document(rec, fm, msg.documents.add())
                        lines.append(line)
                if len(lines) >= check:
                    yield from send_rows(msg, lines)
                    msg, lines, row_ids = message(), [], set()
            if cols is not None:
                yield from send_columns(cols)
            if lines:
                yield from send_rows(msg, lines)
        except Exception as exc:  # ends the stream cleanly (half-close); raised after the acks
            failure.append(exc)

    t0 = time.perf_counter()
    error: grpc.RpcError | None = None

    def acked(line: int, doc_id: str, code: int, message: str) -> None:
        if code == 0:
            with st.lock:
                st.stored += 1
        else:
            with st.lock:
                st.refused += 1
            code_name = next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
            report(line, f"id {doc_id!r} refused: {code_name}: {message}")
        advance()

    def upsert(batch: list[tuple[int, pb.Document]]) -> None:
        """One Upsert call; a batch refused for its content is retried one document at a time."""
        timeout = max(conn.timeout, 600.0)
        try:
            req = pb.UpsertRequest(collection=args.collection, documents=[d for _, d in batch])
            if chunking is not None:
                req.chunking.CopyFrom(chunking)
            conn.call(conn.search.Upsert, req, timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() not in _ITEM_CODES:
                raise
            if len(batch) == 1:
                acked(batch[0][0], batch[0][1].id, exc.code().value[0], exc.details() or "")
                return
            for one in batch:
                upsert([one])
            return
        for line, doc in batch:
            acked(line, doc.id, 0, "")

    def unary() -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        inflight: deque[Future[None]] = deque()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="zembed-upsert") as pool:
            try:
                for req in requests():
                    with st.lock:
                        lines = pending.popleft()
                    batch = [(line, d) for (line, _), d in zip(lines, req.documents, strict=True)]
                    inflight.append(pool.submit(upsert, batch))
                    while len(inflight) >= 2:  # parse the next batch while two are on the wire
                        inflight.popleft().result()
                while inflight:
                    inflight.popleft().result()
            finally:
                stop.set()
                for f in inflight:
                    f.cancel()

    try:
        if streaming:
            call = conn.search.UpsertStream(requests(), metadata=conn.metadata)
            for resp in call:
                with st.lock:
                    sent = pending.popleft()
                room.release()
                if resp.stored == len(sent) == len(resp.statuses):  # all stored: counted at once
                    with st.lock:
                        st.stored += len(sent)
                    advance(len(sent))
                elif len(resp.statuses) == len(sent):
                    for (line, doc_id), status in zip(sent, resp.statuses, strict=True):
                        acked(line, doc_id, status.code, status.message)
                else:  # a server older than the bulk form read none of the message's documents
                    old = "" if resp.statuses else "; the server predates many documents per message"
                    for line, doc_id in sent:
                        acked(line, doc_id, resp.status.code or 13, resp.status.message + old)
        else:
            unary()
    except grpc.RpcError as exc:
        error = exc
    finally:
        stop.set()
        elapsed = time.perf_counter() - t0
        bar.close()
        for f in files:
            f.close()
    st.unacknowledged = st.sent - st.stored - st.refused
    rc = OK if st.bad == st.refused == st.unacknowledged == 0 else FAILED
    stopped: str | None = None
    if error is not None:
        stopped, code = describe_rpc_error(error, conn.address)
        rc = max(rc, code)
    elif failure:
        first = failure[0]
        if isinstance(first, grpc.RpcError):
            stopped, code = describe_rpc_error(first, conn.address)
            rc = max(rc, code)
        else:
            stopped, rc = f"{type(first).__name__}: {first}", max(rc, FAILED)
    summary = {
        "file": name,
        "collection": args.collection,
        "records": st.records,
        "stored": st.stored,
        "skipped": st.skipped,
        "bad": st.bad,
        "refused": st.refused,
        "unacknowledged": st.unacknowledged,
        "seconds": round(elapsed, 3),
        "stored_per_s": round(st.stored / elapsed, 1) if elapsed > 0 else 0.0,
        "stopped": stopped,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{name} -> {args.collection}: {st.records} records, {st.stored} stored, {st.skipped} skipped "
            f"(already stored), {st.bad + st.refused} bad ({st.bad} unreadable, {st.refused} refused by the "
            f"server) in {elapsed:.1f} s ({summary['stored_per_s']:,.0f} stored/s)"
        )
    if stopped:
        left = f"; {st.unacknowledged} sent but not acknowledged" if st.unacknowledged else ""
        print(
            f"zembed ingest: stopped early: {stopped}{left}; re-run the same command to resume",
            file=sys.stderr,
        )
    return rc
