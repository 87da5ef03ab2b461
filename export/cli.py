"""``zembed export SOURCE --out DIR``: convert a checkpoint folder (or hub id) to an ONNX export folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PARITY_FAILED = 3  # exit status of an export whose parity check failed


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export",
        help="convert a zembed-1 / sentence-transformers checkpoint to ONNX",
        description=(
            "Export SOURCE (a local sentence-transformers folder, or a Hugging Face hub id when a network "
            "is available) to a self-contained folder: model.onnx (+ external data over 2 GB), tokenizer, "
            "projection matrices and manifest.json with hashes, settings and a parity report."
        ),
    )
    p.add_argument("source", help="local checkpoint folder or hub id (e.g. zeroentropy/zembed-1-embedding)")
    p.add_argument("--out", required=True, type=Path, help="output folder (must be empty unless --force)")
    p.add_argument(
        "--dtype",
        choices=["float32", "float16", "int8"],
        default="float32",
        help="float16 for GPUs; float32 or int8 (dynamic, MatMul weights) for CPU (default: float32)",
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="device used to trace (default: cpu)"
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="max tokens per input incl. prompt and suffix (default: the checkpoint's max_seq_length)",
    )
    p.add_argument(
        "--opset", type=int, default=23, help="ONNX opset (default 23; 18 is the conservative fallback)"
    )
    p.add_argument("--revision", default=None, help="hub revision (hub ids only)")
    p.add_argument("--model-id", default=None, help="model id to record (default: the hub id or folder name)")
    p.add_argument(
        "--suffix",
        default=None,
        help="text appended after every input, overriding the checkpoint's "
        "(Python escapes, e.g. '<|im_end|>\\n')",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TYPE=TEXT",
        help="prompt for an input type, overriding or adding to the checkpoint's "
        "(Python escapes; repeatable)",
    )
    p.add_argument(
        "--no-parity",
        action="store_true",
        help="skip the model check against PyTorch (the token-id check of the tokenizer always runs)",
    )
    p.add_argument(
        "--allow-parity-failure",
        action="store_true",
        help="exit 0 when the parity check fails: the failure is recorded in manifest.json and "
        "`zembed serve` then refuses the folder unless given --accept-parity-failure",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="clean an --out an earlier export wrote (only the files it listed; never a folder "
        "holding anything else)",
    )
    p.set_defaults(func=run)


def resolve_source(source: str, revision: str | None) -> tuple[Path, str, str | None]:
    path = Path(source)
    if path.is_dir():
        return path, path.name, revision
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(source, revision=revision)
    except Exception as exc:
        raise SystemExit(
            f"zembed export: {source!r} is not a local folder and could not be fetched from the hub ({exc}). "
            "Download the checkpoint elsewhere and pass its folder."
        ) from None
    return Path(local), source, revision


def _unescape(text: str) -> str:
    """Python string escapes (``\\n``, ``\\t``, ``\\u00e9``) typed on a command line."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def run(args: argparse.Namespace) -> int:
    from zembed.export.onnx_export import PARITY_BARS, ExportOptions, ParityFailure, export, failure_message
    from zembed.export.source import SourceError
    from zembed.export.tokens import TokenizerError

    src, model_id, revision = resolve_source(args.source, args.revision)
    model_id = args.model_id or model_id
    prompts = {}
    for item in args.prompt:
        name, sep, text = item.partition("=")
        if not sep or not name:
            print(f"zembed export: --prompt must be TYPE=TEXT; given {item!r}", file=sys.stderr)
            return 2
        prompts[name] = _unescape(text)
    opts = ExportOptions(
        dtype=args.dtype,
        device=args.device,
        max_length=args.max_length,
        opset=args.opset,
        parity=not args.no_parity,
        suffix=None if args.suffix is None else _unescape(args.suffix),
        prompts=prompts or None,
        model_id=model_id,
        revision=revision,
        allow_parity_failure=args.allow_parity_failure,
    )
    step = [0]

    def progress(msg: str) -> None:
        step[0] += 1
        print(f"[{step[0]}] {msg}", file=sys.stderr, flush=True)

    try:
        manifest = export(src, args.out, opts, force=args.force, progress=progress)
    except FileExistsError as exc:
        print(f"zembed export: {exc}", file=sys.stderr)
        return 2
    except (SourceError, TokenizerError) as exc:
        print(f"zembed export: {exc}", file=sys.stderr)
        return 2
    except ParityFailure as exc:
        print(
            f"zembed export: PARITY FAILED: {args.out} does not embed like {args.source} "
            f"({args.dtype}; bar: min cosine >= {PARITY_BARS[args.dtype]} and equal token ids):\n"
            f"{exc}\n"
            f"The folder is kept for inspection and its manifest.json records the failure: `zembed serve` "
            f"refuses it (unless --accept-parity-failure). Pass --allow-parity-failure to exit 0 anyway.",
            file=sys.stderr,
        )
        return PARITY_FAILED
    p = manifest.parity
    if p.get("model_checked"):
        print(
            f"parity: min cosine {p['min_cosine']:.7f} (bar {p['bar']}) over {p['texts']} texts "
            f"x {len(p['dims'])} dims; token ids equal: {p['token_ids_equal']} "
            f"({p['tokenizer']['strings']} strings incl. the hostile sample, every prompt)"
        )
    elif p:
        print(
            f"parity: model not checked (--no-parity); token ids equal: {p['token_ids_equal']} "
            f"({p['tokenizer']['strings']} strings incl. the hostile sample, every prompt)"
        )
    if p.get("allowed_failure"):
        banner = "!" * 78
        print(
            f"{banner}\nWARNING: PARITY FAILED and --allow-parity-failure was given. {args.out} does NOT "
            f"embed like {args.source}:\n{failure_message(p)}\nmanifest.json records the failure; "
            f"`zembed serve` refuses this folder unless given --accept-parity-failure.\n{banner}",
            file=sys.stderr,
        )
    return 0
