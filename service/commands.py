"""``zembed`` commands for a person at a terminal, talking to a running server over gRPC: ``ingest``,
``search``, ``embed``, ``collections list|create|info|delete|update``, ``health``.

Connection settings come from flags or the environment (a flag wins): ``--address`` /
``ZEMBED_ADDRESS`` (default ``localhost:50051``), ``--token`` / ``ZEMBED_TOKEN``, ``--tls`` /
``ZEMBED_TLS`` (system roots), ``--tls-ca`` / ``ZEMBED_TLS_CA`` (PEM bundle; implies TLS),
``--tls-client-cert`` / ``--tls-client-key`` (mutual TLS), ``--tls-server-name``, ``--timeout``.

Only grpc, protobuf, numpy and the generated stubs are imported here (never onnxruntime, torch or
the store); pyarrow only when a Parquet file is read.

Exit status: 0 done; 1 the server answered with an error (or, for ``ingest``, some lines were not
stored; for ``health``, not serving); 2 bad usage or an unreadable input file; 3 the server could
not be reached.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, TextIO

import grpc
import numpy as np

from zembed.service.metadata import metadata_from_proto, value_to_proto
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

COMMANDS = ("ingest", "search", "embed", "collections", "health")
DEFAULT_ADDRESS = "localhost:50051"
OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3


def version() -> str:
    """The installed package's version (package metadata)."""
    try:
        return importlib_metadata.version("zembed-serve")
    except importlib_metadata.PackageNotFoundError:
        return "unknown (zembed-serve is not installed)"


def add_version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"zembed-serve {version()}")


class UsageError(Exception):
    """Bad flags or input detected before (or without) talking to the server: exit 2."""


# ---------------------------------------------------------------- connection
def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _add_connection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (a flag beats its environment variable)")
    g.add_argument(
        "--address", metavar="HOST:PORT", help=f"server address [ZEMBED_ADDRESS; default: {DEFAULT_ADDRESS}]"
    )
    g.add_argument("--token", help="bearer token [ZEMBED_TOKEN; default: none]")
    g.add_argument(
        "--tls", action="store_true", default=None, help="use TLS with the system's roots [ZEMBED_TLS=1]"
    )
    g.add_argument(
        "--tls-ca", metavar="PEM", help="CA bundle to verify the server; implies TLS [ZEMBED_TLS_CA]"
    )
    g.add_argument(
        "--tls-client-cert", metavar="PEM", help="client certificate for mutual TLS [ZEMBED_TLS_CLIENT_CERT]"
    )
    g.add_argument("--tls-client-key", metavar="PEM", help="client private key [ZEMBED_TLS_CLIENT_KEY]")
    g.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="name to verify in the server's certificate, when it differs from HOST [ZEMBED_TLS_SERVER_NAME]",
    )
    g.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="deadline per call [ZEMBED_TIMEOUT; default: 30]"
    )


@dataclass
class Connection:
    address: str
    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...]
    timeout: float
    tls: bool

    @property
    def embedding(self) -> pb_grpc.EmbeddingServiceStub:
        return pb_grpc.EmbeddingServiceStub(self.channel)  # type: ignore[no-untyped-call]

    @property
    def search(self) -> pb_grpc.SearchServiceStub:
        return pb_grpc.SearchServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        return method(request, metadata=self.metadata, timeout=timeout or self.timeout)

    def close(self) -> None:
        self.channel.close()


def _read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def connect(args: argparse.Namespace) -> Connection:
    address = args.address or _env("ZEMBED_ADDRESS") or DEFAULT_ADDRESS
    token = args.token or _env("ZEMBED_TOKEN")
    ca = args.tls_ca or _env("ZEMBED_TLS_CA")
    cert = args.tls_client_cert or _env("ZEMBED_TLS_CLIENT_CERT")
    key = args.tls_client_key or _env("ZEMBED_TLS_CLIENT_KEY")
    server_name = args.tls_server_name or _env("ZEMBED_TLS_SERVER_NAME")
    tls_env = (_env("ZEMBED_TLS") or "").lower() in ("1", "true", "yes", "on")
    tls = bool(args.tls) or tls_env or ca is not None or cert is not None
    raw_timeout = args.timeout if args.timeout is not None else _env("ZEMBED_TIMEOUT")
    try:
        timeout = float(raw_timeout) if raw_timeout is not None else 30.0
    except ValueError:
        raise UsageError(f"--timeout / ZEMBED_TIMEOUT: not a number: {raw_timeout!r}") from None
    if not (timeout > 0 and math.isfinite(timeout)):
        raise UsageError(f"--timeout / ZEMBED_TIMEOUT must be a positive number of seconds; given {timeout}")
    if (cert is None) != (key is None):
        raise UsageError("mutual TLS needs both --tls-client-cert and --tls-client-key")
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    if tls:
        creds = grpc.ssl_channel_credentials(
            _read_pem(ca, "--tls-ca") if ca else None,
            _read_pem(key, "--tls-client-key") if key else None,
            _read_pem(cert, "--tls-client-cert") if cert else None,
        )
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(address, creds, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return Connection(address, channel, metadata, timeout, tls)


def describe_rpc_error(exc: grpc.RpcError, address: str) -> tuple[str, int]:
    """One line for a failed call and the exit status it maps to."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"cannot reach the server at {address} (UNAVAILABLE: {details}); is `zembed serve` running "
            "there? (set --address or ZEMBED_ADDRESS)",
            UNREACHABLE,
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"UNAUTHENTICATED: {details} (set --token or ZEMBED_TOKEN)", FAILED
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"DEADLINE_EXCEEDED: {details} (raise --timeout or ZEMBED_TIMEOUT)", FAILED
    return f"{name}: {details}", FAILED


def _run(args: argparse.Namespace) -> int:
    """Entry for every command of this module: connection and error handling in one place."""
    prog = f"zembed {args.command}"
    conn: Connection | None = None
    try:
        conn = connect(args)
        return int(args.handler(conn, args))
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return USAGE
    except grpc.RpcError as exc:
        msg, rc = describe_rpc_error(exc, conn.address if conn else "?")
        print(f"{prog}: {msg}", file=sys.stderr)
        return rc
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zembed search ... | head`
        return OK
    finally:
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------- metadata and filters
def parse_filter(pairs: Sequence[str], where: str | None) -> list[pb.Condition]:
    """``--filter FIELD=A[,B...]`` / ``FIELD!=A[,B...]`` (string values) and ``--where JSON``
    (``{"lang": "de"}``, ``{"year": {"$in": [2023, 2024]}}``, ``$ne``, ``$nin``; typed values)."""
    conds: dict[str, pb.Condition] = {}

    def add(field: str, values: Sequence[Any], negate: bool, src: str) -> None:
        if not field:
            raise UsageError(f"{src}: the field name is empty")
        if field in conds:
            raise UsageError(f"{src}: field {field!r} is given twice; put all its values in one condition")
        if not values:
            raise UsageError(f"{src}: no values")
        any_of = []
        for v in values:
            if not isinstance(v, str | int | bool) or isinstance(v, float):
                raise UsageError(f"{src}: filter values must be strings, integers or booleans; given {v!r}")
            any_of.append(value_to_proto(v, src))
        conds[field] = pb.Condition(field=field, any_of=any_of, negate=negate)

    for raw in pairs:
        if "=" not in raw:
            raise UsageError(f"--filter {raw!r}: expected FIELD=VALUE[,VALUE...] or FIELD!=VALUE[,...]")
        field, _, values = raw.partition("=")
        negate = field.endswith("!")
        add(field.rstrip("!").strip(), [x for x in values.split(",") if x != ""], negate, f"--filter {raw!r}")
    if where:
        try:
            spec = json.loads(where)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--where: not JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(spec, dict):
            raise UsageError('--where: expected a JSON object such as {"lang": "de"}')
        for field, cond in spec.items():
            src = f"--where {field!r}"
            if isinstance(cond, dict):
                if len(cond) != 1 or next(iter(cond)) not in ("$in", "$nin", "$eq", "$ne"):
                    raise UsageError(f"{src}: expected one of $in, $nin, $eq, $ne; given {sorted(cond)}")
                op, val = next(iter(cond.items()))
                vals = val if isinstance(val, list) else [val]
                add(field, vals, op in ("$nin", "$ne"), src)
            else:
                add(field, cond if isinstance(cond, list) else [cond], False, src)
    return list(conds.values())


def parse_vector(raw: str, what: str) -> bytes:
    """A JSON array of numbers (or @FILE holding one) as little-endian float32 bytes."""
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"{what}: cannot read {raw[1:]}: {exc.strerror or exc}") from None
    try:
        values = json.loads(text)
        arr = np.asarray(values, dtype="<f4")
    except (json.JSONDecodeError, ValueError, TypeError):
        raise UsageError(f"{what}: expected a JSON array of numbers, e.g. [0.1, -0.2, ...]") from None
    if arr.ndim != 1 or arr.size == 0:
        raise UsageError(f"{what}: expected a non-empty flat array; given shape {list(arr.shape)}")
    return arr.tobytes()


# ---------------------------------------------------------------- output
def table(rows: Sequence[Sequence[str]], header: Sequence[str], out: TextIO, last_wide: bool = True) -> None:
    """A plain text table; the last column is cut to the terminal's width."""
    width = shutil.get_terminal_size((120, 24)).columns
    cols = list(zip(header, *rows, strict=False)) if rows else [(h,) for h in header]
    widths = [max(len(str(c)) for c in col) for col in cols]
    if last_wide and len(widths) > 1:
        room = max(20, width - sum(widths[:-1]) - 2 * (len(widths) - 1))
        widths[-1] = min(widths[-1], room)

    def fmt(cells: Sequence[str]) -> str:
        parts = []
        for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
            s = str(c)
            if len(s) > w:
                s = s[: max(0, w - 3)] + "..."
            parts.append(s if i == len(widths) - 1 else s.ljust(w))
        return "  ".join(parts).rstrip()

    print(fmt(header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print(fmt(r), file=out)


def _compact(d: Mapping[str, Any]) -> str:
    return json.dumps(d, ensure_ascii=False, separators=(", ", ": ")) if d else ""


def _dump(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def _split_names(raw: str | None) -> list[str]:
    return [x.strip() for x in (raw or "").split(",") if x.strip()]


# ---------------------------------------------------------------- health
def cmd_health(conn: Connection, args: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(conn.channel)
    names = ["", "zembed.v1.EmbeddingService", "zembed.v1.SearchService"]
    deadline = time.monotonic() + (args.wait or 0.0)
    while True:
        states: dict[str, str] = {}
        error: grpc.RpcError | None = None
        for name in names:
            try:
                resp = stub.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(service=name), timeout=conn.timeout
                )
                states[name or "server"] = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    states[name or "server"] = "UNKNOWN_SERVICE"
                    continue
                error = exc
                break
        serving = error is None and states.get("server") == "SERVING"
        retry = error is None or error.code() == grpc.StatusCode.UNAVAILABLE
        if serving or not retry or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    if error is not None:
        raise error
    model: dict[str, Any] | None = None
    if serving:
        try:
            info = conn.call(conn.embedding.GetModelInfo, pb.GetModelInfoRequest())
            model = {
                "model_id": info.model_id,
                "dimensions": list(info.dimensions),
                "max_tokens": info.max_tokens,
                "dtype": info.dtype,
                "provider": info.provider,
            }
        except grpc.RpcError:
            model = None  # e.g. no token given: health itself needs none
    if args.json:
        _dump({"address": conn.address, "serving": serving, "status": states, "model": model})
    else:
        print(f"{conn.address}: {states.get('server', 'UNKNOWN')}")
        for name, state in states.items():
            if name != "server":
                print(f"  {name}: {state}")
        if model:
            dims = ",".join(str(d) for d in model["dimensions"])
            print(
                f"  model: {model['model_id']} ({model['dtype']}, {model['provider']}, dims {dims}, "
                f"max {model['max_tokens']} tokens)"
            )
    return OK if serving else FAILED


# ---------------------------------------------------------------- embed
_INPUT_TYPES = {"query": pb.INPUT_TYPE_QUERY, "document": pb.INPUT_TYPE_DOCUMENT}


def _texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    if not texts or texts == ["-"]:
        if sys.stdin.isatty() and not texts:
            raise UsageError("give TEXT arguments, or pipe one text per line on stdin")
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise UsageError("no text to embed")
    return texts


def cmd_embed(conn: Connection, args: argparse.Namespace) -> int:
    texts = _texts(args)
    resp = conn.call(
        conn.embedding.Embed,
        pb.EmbedRequest(
            inputs=texts,
            input_type=_INPUT_TYPES.get(args.input_type or "", pb.INPUT_TYPE_UNSPECIFIED),
            dimensions=args.dimensions,
            encoding=pb.ENCODING_FLOAT32,
            truncation=pb.TRUNCATION_STRICT if args.strict else pb.TRUNCATION_TRUNCATE,
        ),
    )
    vectors = [np.frombuffer(e.data, dtype="<f4") for e in resp.embeddings]
    if args.json:
        _dump(
            {
                "dimensions": resp.dimensions,
                "embeddings": [
                    {"input": t, "tokens": e.tokens, "truncated": e.truncated, "embedding": v.tolist()}
                    for t, e, v in zip(texts, resp.embeddings, vectors, strict=True)
                ],
                "usage": {"total_tokens": resp.usage.total_tokens, "total_bytes": resp.usage.total_bytes},
            }
        )
        return OK
    rows = []
    for i, (t, e, v) in enumerate(zip(texts, resp.embeddings, vectors, strict=True)):
        head = ", ".join(f"{x:+.4f}" for x in v[:4])
        rows.append([str(i), str(e.tokens), "yes" if e.truncated else "", f"[{head}, ...]", t])
    table(rows, ["#", "tokens", "cut", f"vector ({resp.dimensions} dims)", "text"], sys.stdout)
    print(f"{len(texts)} embedded, {resp.usage.total_tokens} tokens")
    return OK


# ---------------------------------------------------------------- search
def cmd_search(conn: Connection, args: argparse.Namespace) -> int:
    if args.query is None and args.vector is None:
        raise UsageError("give a QUERY text or --vector")
    if args.query is not None and args.vector is not None:
        raise UsageError("give a QUERY text or --vector, not both")
    req = pb.SearchRequest(
        collection=args.collection,
        filter=parse_filter(args.filter, args.where),
        truncation=pb.TRUNCATION_TRUNCATE,
    )
    if args.top_k is not None:
        req.top_k = args.top_k
    if args.oversampling is not None:
        req.oversampling = args.oversampling
    if args.no_rescore:
        req.rescore = False
    if args.no_metadata:
        req.include_metadata = False
    if args.vector is not None:
        req.vectors.code_f32le = parse_vector(args.vector, "--vector")
        if args.rescore_vector is not None:
            req.vectors.rescore_f32le = parse_vector(args.rescore_vector, "--rescore-vector")
    else:
        req.text = args.query
    t = time.perf_counter()
    resp = conn.call(conn.search.Search, req)
    ms = (time.perf_counter() - t) * 1000
    hits = [
        {"id": h.id, "score": h.score, "hamming": h.hamming, "metadata": metadata_from_proto(h.metadata)}
        for h in resp.hits
    ]
    if args.json:
        _dump({"hits": hits, "usage": {"total_tokens": resp.usage.total_tokens}})
        return OK
    rows = [
        [str(i + 1), f"{h['score']:.4f}", str(h["id"]), _compact(h["metadata"])] for i, h in enumerate(hits)
    ]
    table(rows, ["#", "score", "id", "metadata"], sys.stdout)
    print(f"{len(hits)} hits from {args.collection!r} in {ms:.1f} ms")
    return OK


# ---------------------------------------------------------------- collections
def collection_dict(c: pb.Collection) -> dict[str, Any]:
    return {
        "name": c.name,
        "count": c.count,
        "code_bits": c.config.code_bits,
        "rescore_dims": c.config.rescore_dims,
        "rescore_dtype": c.config.rescore_dtype,
        "calibration": c.config.calibration,
        "calibration_sample": c.config.calibration_sample,
        "calibrated": c.calibrated,
        "filterable": list(c.config.filterable),
        "index_bytes": c.index_bytes,
        "model_id": c.model_id,
        "calibrated_at": c.calibrated_at,
        "calibration_final": c.calibration_final,
        # recall@10 of the default search against exact float search, as the server measured it
        "measured_recall": round(c.measured_recall, 4) if c.HasField("measured_recall") else None,
        "measured_at": c.measured_at,
        "measured_with_samples": c.measured_with_samples,
        "recall_points": [
            {
                "float_reads_per_result": p.float_reads_per_result,
                "shortlist_per_read": p.shortlist_per_read,
                "recall": round(p.recall, 4),
            }
            for p in c.recall_points
        ],
        "bytes_in_use": c.bytes_in_use,
        "bytes_allocated": c.bytes_allocated,
        "bytes_per_document": c.bytes_per_document,
    }


def _show_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        if v and isinstance(v[0], dict):  # recall points: "reads x shortlist: recall"
            return "; ".join(
                f"{p['float_reads_per_result']}x{p['shortlist_per_read']}: {p['recall']}" for p in v
            )
        return ", ".join(str(x) for x in v)
    return str(v)


def _show_collection(c: pb.Collection, as_json: bool) -> None:
    d = collection_dict(c)
    if as_json:
        _dump(d)
        return
    for k, v in d.items():
        print(f"{k + ':':<24}{_show_value(v)}")


def cmd_collections_list(conn: Connection, args: argparse.Namespace) -> int:
    found: list[pb.Collection] = []
    token = ""
    while True:
        resp = conn.call(
            conn.search.ListCollections, pb.ListCollectionsRequest(page_size=1000, page_token=token)
        )
        found.extend(resp.collections)
        token = resp.next_page_token
        if not token:
            break
    if args.json:
        _dump([collection_dict(c) for c in found])
        return OK
    rows = [
        [
            c.name,
            str(c.count),
            str(c.config.code_bits),
            f"{c.config.rescore_dims} {c.config.rescore_dtype}",
            c.config.calibration,
            c.model_id,
            ", ".join(c.config.filterable),
        ]
        for c in found
    ]
    table(
        rows, ["name", "documents", "code bits", "rescore", "calibration", "model", "filterable"], sys.stdout
    )
    return OK


def cmd_collections_create(conn: Connection, args: argparse.Namespace) -> int:
    config = pb.CollectionConfig(
        code_bits=args.code_bits,
        rescore_dims=args.rescore_dims,
        rescore_dtype=args.rescore_dtype or "",
        calibration=args.calibration or "",
        calibration_sample=args.calibration_sample,
        filterable=_split_names(args.filterable),
    )
    resp = conn.call(conn.search.CreateCollection, pb.CreateCollectionRequest(name=args.name, config=config))
    if not args.json:
        print(f"created collection {args.name!r}")
    _show_collection(resp.collection, args.json)
    return OK


def cmd_collections_info(conn: Connection, args: argparse.Namespace) -> int:
    resp = conn.call(conn.search.GetCollection, pb.GetCollectionRequest(name=args.name))
    _show_collection(resp.collection, args.json)
    return OK


def cmd_collections_update(conn: Connection, args: argparse.Namespace) -> int:
    fields = _split_names(args.add_filterable)
    if not fields:
        raise UsageError("nothing to change: give --add-filterable FIELD[,FIELD...]")
    resp = conn.call(
        conn.search.UpdateCollection,
        pb.UpdateCollectionRequest(name=args.name, add_filterable=fields),
        timeout=max(conn.timeout, 600.0),  # indexes every stored document's values
    )
    if not args.json:
        print(f"updated collection {args.name!r}")
    _show_collection(resp.collection, args.json)
    return OK


def cmd_collections_delete(conn: Connection, args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"refusing to delete collection {args.name!r} without --yes (stdin is not a terminal)"
            )
        info = conn.call(conn.search.GetCollection, pb.GetCollectionRequest(name=args.name)).collection
        answer = input(f"delete collection {args.name!r} and its {info.count} documents? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return FAILED
    conn.call(conn.search.DeleteCollection, pb.DeleteCollectionRequest(name=args.name))
    print(f"deleted collection {args.name!r}")
    return OK


# ---------------------------------------------------------------- parsers
Handler = Callable[[Connection, argparse.Namespace], int]


def _command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    handler: Handler | None,
    help_text: str,
    description: str,
    json_flag: bool = True,
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description)
    add_version(p)
    if handler is not None:
        _add_connection(p)
        p.set_defaults(func=_run, handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def add_parsers(sub: argparse._SubParsersAction, only: str | None = None) -> None:  # type: ignore[type-arg]
    """Register this module's commands on ``zembed``'s subparsers (all, or just ``only``)."""
    if only in (None, "ingest"):
        from zembed.service.ingest import add_arguments as add_ingest

        p = _command(
            sub,
            "ingest",
            None,
            "load a JSONL, CSV or Parquet file into a collection (streaming, resumable)",
            "Stream the documents of FILE into COLLECTION over UpsertStream. Each record needs an id and "
            "either a text (embedded by the server) or a precomputed vector. Re-running skips ids the "
            "collection already holds (so an interrupted ingest resumes where it stopped) unless "
            "--overwrite. Bad lines are reported with their line numbers and skipped; a summary ends the "
            "run. Exit status 0 when every record is stored or skipped, 1 when some were not.",
        )
        _add_connection(p)
        add_ingest(p)
    if only in (None, "search"):
        p = _command(
            sub,
            "search",
            cmd_search,
            "search a collection by text or vector",
            "Search COLLECTION with a text (embedded by the server as a query) or a vector; prints a table "
            "of hits (or --json).",
        )
        p.add_argument("collection", metavar="COLLECTION")
        p.add_argument("query", metavar="QUERY", nargs="?", help="query text (or give --vector)")
        p.add_argument("-k", "--top-k", type=int, help="hits to return (default: 10)")
        p.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="FIELD=V[,V...]",
            help="keep hits whose FIELD is one of the values (FIELD!=V[,V...] excludes them); string "
            "values; repeatable, conditions are ANDed",
        )
        p.add_argument(
            "--where",
            metavar="JSON",
            help='filter as JSON with typed values: {"lang": "de"}, {"year": {"$in": [2023, 2024]}}, '
            "$ne, $nin",
        )
        p.add_argument("--oversampling", type=int, help="rescored candidates per hit (default: 4)")
        p.add_argument("--no-rescore", action="store_true", help="Hamming order only, no float rescoring")
        p.add_argument("--no-metadata", action="store_true", help="do not return metadata")
        p.add_argument(
            "--vector", metavar="JSON", help="search with this code vector (a JSON array, or @FILE)"
        )
        p.add_argument(
            "--rescore-vector",
            metavar="JSON",
            help="the rescoring vector, when the collection's rescore dims differ from its code bits",
        )
    if only in (None, "embed"):
        p = _command(
            sub,
            "embed",
            cmd_embed,
            "embed texts with the served model",
            "Embed TEXT arguments (or one text per line from stdin) and print a summary table, or every "
            "vector with --json.",
        )
        p.add_argument("texts", metavar="TEXT", nargs="*", help="texts to embed ('-' or none: stdin)")
        p.add_argument(
            "--input-type", choices=sorted(_INPUT_TYPES), help="prompt to use (default: the model's default)"
        )
        p.add_argument("--dimensions", type=int, default=0, help="one of the model's dims (default: native)")
        p.add_argument("--strict", action="store_true", help="refuse over-long texts instead of truncating")
    if only in (None, "collections"):
        p = _command(
            sub,
            "collections",
            None,
            "list, create, inspect, update or delete collections",
            "Manage collections.",
        )
        csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
        c = _command(csub, "list", cmd_collections_list, "list collections", "List every collection.")
        c = _command(
            csub,
            "create",
            cmd_collections_create,
            "create a collection",
            "Create collection NAME. Unset sizes take the served model's defaults.",
        )
        c.add_argument("name", metavar="NAME", help="[a-z0-9][a-z0-9_-]{0,63}")
        c.add_argument(
            "--code-bits", type=int, default=0, help="bits of the binary code (default: model-aware)"
        )
        c.add_argument("--rescore-dims", type=int, default=0, help="float rescoring dims (default: native)")
        c.add_argument("--rescore-dtype", choices=["float32", "float16", "int8"], help="(default: float16)")
        c.add_argument(
            "--calibration",
            choices=["auto", "median", "none"],
            help="code thresholds: auto (calibrated from the first write, refined as the collection "
            "grows), median (once, at --calibration-sample documents) or none (sign bits) (default: auto)",
        )
        c.add_argument(
            "--calibration-sample",
            type=int,
            default=0,
            help="size at which calibration becomes final (default: 10000)",
        )
        c.add_argument("--filterable", metavar="FIELD[,FIELD...]", help="metadata fields filters may name")
        c = _command(csub, "info", cmd_collections_info, "show a collection", "Show collection NAME.")
        c.add_argument("name", metavar="NAME")
        c = _command(
            csub,
            "update",
            cmd_collections_update,
            "make more metadata fields filterable",
            "Add filterable fields to collection NAME; the values its stored documents already have are "
            "indexed in one transaction.",
        )
        c.add_argument("name", metavar="NAME")
        c.add_argument("--add-filterable", metavar="FIELD[,FIELD...]", required=True)
        c = _command(
            csub,
            "delete",
            cmd_collections_delete,
            "delete a collection and its documents",
            "Delete collection NAME and every document in it (asks first unless --yes).",
            json_flag=False,
        )
        c.add_argument("name", metavar="NAME")
        c.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    if only in (None, "health"):
        p = _command(
            sub,
            "health",
            cmd_health,
            "check that a server is up and serving",
            "Ask the server's gRPC health service (no token needed) and, when serving, show its model. "
            "Exit status 0 when SERVING, 1 when not, 3 when it cannot be reached.",
        )
        p.add_argument(
            "--wait", type=float, default=0.0, metavar="SECONDS", help="retry until SERVING for this long"
        )
