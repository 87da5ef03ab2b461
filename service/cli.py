"""The ``zembed`` command. Subcommands import their modules lazily: ``export`` (torch, transformers)
is never imported by ``serve``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="zembed", description="zembed-serve: embedding + binary vector search"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = argv[0] if argv else ""
    everything = cmd == "" or cmd.startswith("-")
    if everything or cmd == "export":
        try:
            from zembed.export.cli import add_parser
        except ImportError as exc:  # the export extra is not installed
            missing = str(exc)
            p = sub.add_parser(
                "export", help="(needs the 'export' extra: pip install 'zembed-serve[export]')"
            )
            p.set_defaults(func=lambda _a: _missing_export(missing))
        else:
            add_parser(sub)
    if everything or cmd == "serve":
        from zembed.service.config import add_arguments

        p = sub.add_parser(
            "serve",
            help="serve an export folder over gRPC with an embedded LMDB store",
            description="Serve embeddings and search. Every flag can also be set as ZEMBED_<FLAG> "
            "(e.g. ZEMBED_PORT=50051); a flag beats the environment.",
        )
        add_arguments(p)
        p.set_defaults(func=_serve)
    if everything or cmd == "snapshot":
        p = sub.add_parser(
            "snapshot",
            help="hot copy of a data directory (safe while a server uses it)",
            description="Write a consistent, compacted copy of DATA_DIR's store into OUT_DIR (absent or "
            "empty), complete or not at all: it is written beside OUT_DIR and renamed into place. Safe "
            "while `zembed serve` runs on DATA_DIR (read-only, no lock taken). Restore by serving "
            "OUT_DIR with --data. Exit codes: 0 done, 2 refused (the message says why).",
        )
        p.add_argument("data_dir", metavar="DATA_DIR", help="the store's data directory")
        p.add_argument("out_dir", metavar="OUT_DIR", help="where the snapshot goes (absent or empty)")
        p.set_defaults(func=_snapshot)
    if everything or cmd == "index":
        from zembed.indexer.cli import DESCRIPTION
        from zembed.indexer.cli import add_arguments as add_index_arguments

        p = sub.add_parser(
            "index", help="bulk indexing on Ray into shard stores or servers", description=DESCRIPTION
        )
        add_index_arguments(p)  # Ray itself is imported only when the command runs (the 'ray' extra)
    if everything or cmd == "migrate":
        from zembed.store.migrate import command as migrate

        p = sub.add_parser(
            "migrate",
            help="convert a data directory of an earlier store format (1) into a new directory",
            description="Convert OLD_DIR (store format 1, written by releases before issue #10) into "
            "NEW_DIR (absent or empty) in the current format, losing nothing; OLD_DIR is only read (a "
            "server may keep serving it meanwhile: this release serves format 1 read-only), then serve "
            "NEW_DIR. Exit codes: 0 done, 2 refused (the message says why).",
        )
        p.add_argument("old_dir", metavar="OLD_DIR", help="the format-1 data directory (read only)")
        p.add_argument("new_dir", metavar="NEW_DIR", help="where the converted store goes")
        p.set_defaults(func=migrate)
    from zembed.service import commands  # client commands: grpc and the stubs only (no onnxruntime, no torch)

    if everything or cmd in commands.COMMANDS:
        commands.add_parsers(sub, None if everything else cmd)
    commands.add_version(parser)
    for name, p in sub.choices.items():
        if name not in commands.COMMANDS:  # theirs carry --version already
            commands.add_version(p)
    args = parser.parse_args(argv)
    return int(args.func(args))


def _snapshot(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from zembed.store import errors
    from zembed.store.store import snapshot_directory

    t = time.perf_counter()
    try:
        out = snapshot_directory(args.data_dir, args.out_dir)
    except (errors.StoreError, OSError) as exc:
        print(f"zembed snapshot: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    print(f"snapshot of {args.data_dir} written to {out} ({size} bytes, {time.perf_counter() - t:.2f} s)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import logging

    from zembed.service.config import ConfigError, from_args
    from zembed.service.errors import StartupError
    from zembed.service.runtime.manifest import ManifestError
    from zembed.service.server import JsonFormatter, serve
    from zembed.store.errors import StoreError

    try:
        settings = from_args(args)
    except ConfigError as exc:
        print(f"zembed serve: {exc}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("zembed").info("settings %s", json.dumps(settings.redacted(), default=str))
    try:
        asyncio.run(serve(settings))
    except (StartupError, StoreError, ManifestError, OSError) as exc:
        # one clear line, no traceback: the store and TLS files are checked before anything listens
        print(f"zembed serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _missing_export(exc: str) -> int:
    print(
        f"zembed export needs the 'export' extra (pip install 'zembed-serve[export]'): {exc}", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
