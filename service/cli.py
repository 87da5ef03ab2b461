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
            from export.cli import add_parser
        except ImportError as exc:  # the export extra is not installed
            missing = str(exc)
            p = sub.add_parser(
                "export", help="(needs the 'export' extra: pip install 'zembed-serve[export]')"
            )
            p.set_defaults(func=lambda _a: _missing_export(missing))
        else:
            add_parser(sub)
    if everything or cmd == "serve":
        from service.config import add_arguments

        p = sub.add_parser(
            "serve",
            help="serve an export folder over gRPC with an embedded LMDB store",
            description="Serve embeddings and search. Every flag can also be set as ZEMBED_<FLAG> "
            "(e.g. ZEMBED_PORT=50051); a flag beats the environment.",
        )
        add_arguments(p)
        p.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    return int(args.func(args))


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from service.config import ConfigError, from_args
    from service.server import JsonFormatter, serve

    try:
        settings = from_args(args)
    except ConfigError as exc:
        print(f"zembed serve: {exc}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("zembed").info("settings %s", settings.redacted())
    asyncio.run(serve(settings))
    return 0


def _missing_export(exc: str) -> int:
    print(
        f"zembed export needs the 'export' extra (pip install 'zembed-serve[export]'): {exc}", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
