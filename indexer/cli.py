"""``zembed index``: the command line of :func:`zembed.indexer.index`."""

from __future__ import annotations

import argparse
import json
import sys

USAGE_ERROR = 2
FAILED = 1


def _names(raw: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in raw.split(",") if x.strip()) if raw else ()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="JSONL or Parquet files, directories (of those, or of text files with --format text), local "
        "paths or URIs any pyarrow filesystem reads (s3://, gs://, hdfs://)",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="the export folder (`zembed export`)")
    p.add_argument("--collection", required=True, metavar="NAME", help="collection to write")
    g = p.add_argument_group("target (one of)")
    g.add_argument("--out", metavar="DIR", help="write shard stores: DIR/shard-00000/ ... (LMDB data dirs)")
    g.add_argument("--shards", type=int, default=1, help="shard stores to write with --out (default: 1)")
    g.add_argument(
        "--servers",
        metavar="ADDR[,ADDR...]",
        help="running servers, one per shard in shard order; documents go over UpsertStream",
    )
    g.add_argument("--progress-dir", metavar="DIR", help="progress records with --servers (required there)")
    g.add_argument("--token", help="bearer token for --servers (or ZEMBED_TOKEN)")
    g = p.add_argument_group("input")
    g.add_argument("--format", choices=["jsonl", "parquet", "text"], help="default: by file extension")
    g.add_argument("--id-field", default="id", metavar="NAME")
    g.add_argument("--text-field", default="text", metavar="NAME")
    g.add_argument("--metadata-field", default="metadata", metavar="NAME")
    g.add_argument(
        "--metadata-columns",
        metavar="NAME[,NAME...]",
        help="other fields stored as metadata (default: every field not mapped; '' for none)",
    )
    g.add_argument("--unit-mb", type=float, default=32, help="JSONL bytes per resumable unit (default: 32)")
    g.add_argument("--files-per-unit", type=int, default=256, help="text files per unit (default: 256)")
    g = p.add_argument_group("splitting long documents (service/chunking.py)")
    g.add_argument("--chunk", action="store_true", help="split long documents into passages")
    g.add_argument("--chunk-tokens", type=int, default=0, help="tokens per passage (0: min(512, window))")
    g.add_argument("--chunk-overlap", type=int, default=-1, help="tokens shared (-1: chunk-tokens / 8)")
    g = p.add_argument_group("collection (created when missing; the server's defaults)")
    g.add_argument("--code-bits", type=int, default=0)
    g.add_argument("--rescore-dims", type=int, default=0)
    g.add_argument("--rescore-dtype", default="float16", choices=["float16", "float32", "int8"])
    g.add_argument("--calibration", default="auto", choices=["auto", "none", "median"])
    g.add_argument("--filterable", metavar="FIELD[,FIELD...]")
    g = p.add_argument_group("compute")
    g.add_argument("--ray-address", help="join this Ray cluster ('auto': this machine's); default: start one")
    g.add_argument("--num-cpus", type=int, help="CPUs of a locally started Ray instance (default: all)")
    g.add_argument(
        "--gpus", action=argparse.BooleanOptionalAction, default=None, help="default: when present"
    )
    g.add_argument("--actors", type=int, default=0, help="CPU embedding actors (0: CPUs / threads)")
    g.add_argument("--threads-per-actor", type=int, default=1, help="ONNX Runtime threads per CPU actor")
    g.add_argument(
        "--batch-tokens", type=int, default=0, help="padded tokens per run (0: 16384 CPU, 65536 GPU)"
    )
    g.add_argument("--batch-rows", type=int, default=0, help="rows per actor call (0: from the budget)")
    g.add_argument("--writers", type=int, default=8, help="writer actors at most (default: 8)")
    g = p.add_argument_group("output")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--show-errors", type=int, default=20, metavar="N")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from zembed.indexer.job import IndexError_, IndexOptions, index, summary_line
    from zembed.indexer.progress import JobMismatch
    from zembed.indexer.sources import InputError
    from zembed.service.runtime.manifest import ManifestError
    from zembed.store.errors import StoreError

    opts = IndexOptions(
        inputs=list(args.inputs),
        model=args.model,
        collection=args.collection,
        out=args.out,
        shards=args.shards,
        servers=list(_names(args.servers)) if args.servers is not None else None,
        progress_dir=args.progress_dir,
        token=args.token or os.environ.get("ZEMBED_TOKEN") or None,
        format=args.format,
        id_field=args.id_field,
        text_field=args.text_field,
        metadata_field=args.metadata_field,
        metadata_columns=None if args.metadata_columns is None else _names(args.metadata_columns),
        unit_bytes=max(1, int(args.unit_mb * (1 << 20))),
        files_per_unit=args.files_per_unit,
        chunk=args.chunk,
        chunk_tokens=args.chunk_tokens,
        chunk_overlap=args.chunk_overlap,
        code_bits=args.code_bits,
        rescore_dims=args.rescore_dims,
        rescore_dtype=args.rescore_dtype,
        calibration=args.calibration,
        filterable=_names(args.filterable),
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        gpus=args.gpus,
        actors=args.actors,
        threads_per_actor=args.threads_per_actor,
        batch_tokens=args.batch_tokens,
        batch_rows=args.batch_rows,
        writers=args.writers,
        progress=args.progress if args.progress is not None else sys.stderr.isatty(),
    )
    try:
        report = index(opts)
    except (IndexError_, JobMismatch, InputError, ManifestError, StoreError) as exc:
        print(f"zembed index: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except ImportError as exc:
        print(f"zembed index needs the 'ray' extra (pip install 'zembed-serve[ray]'): {exc}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as exc:  # a writer or an actor failed (disk full, a server down): the run stops
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
        why = lines[-1] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        print(
            f"zembed index: stopped: {type(exc).__name__}: {why[:800]}\nfinished units are recorded: re-run "
            "the same command to resume",
            file=sys.stderr,
        )
        return FAILED
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(summary_line(report))
        for line in report.failures[: args.show_errors]:
            print(f"  failed: {line}", file=sys.stderr)
        if report.failed > args.show_errors:
            print(f"  ... {report.failed - args.show_errors} more failures (--show-errors)", file=sys.stderr)
        for line in report.skipped_files[: args.show_errors]:
            print(f"  skipped: {line}", file=sys.stderr)
    return FAILED if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zembed index", description=DESCRIPTION)
    add_arguments(p)
    args = p.parse_args(argv)
    return int(args.func(args))


DESCRIPTION = (
    "Embed a corpus on Ray and write shard stores (--out, --shards) or send it to running servers "
    "(--servers). Resumable: a re-run skips the input units every shard has recorded. Exit codes: 0 "
    "done, 1 some documents failed (listed), 2 refused (the message says why)."
)
