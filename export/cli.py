"""``zembed export SOURCE --out DIR``: convert a checkpoint folder (or hub id) to an ONNX export folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    p.add_argument("--no-parity", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--force", action="store_true", help="delete the contents of a non-empty --out first")
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
    from export.onnx_export import ExportOptions, export

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
    if manifest.parity:
        print(
            f"parity: min cosine {manifest.parity['min_cosine']:.7f} over {manifest.parity['texts']} texts "
            f"x {len(manifest.parity['dims'])} dims; token ids equal: {manifest.parity['token_ids_equal']}"
        )
    return 0
