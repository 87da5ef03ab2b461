"""Export a sentence-transformers folder to a self-contained ONNX folder with a manifest.

Route: ``torch.onnx.export(dynamo=True)`` at opset 23 on :class:`export.graph.EmbeddingGraph` (the
standard Attention / RMSNormalization / RotaryEmbedding ops, exact parity; see the README for why not
optimum). float16: the backbone is loaded in half precision (no fp32 copy is ever made, so the real 4B
model fits in 24 GiB) and pooled/normalized in fp32 inside the graph. int8: dynamic quantization of
the MatMul weights of the fp32 graph.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zembed.export.source import Source, read_source
from zembed.service.runtime.manifest import MANIFEST, Manifest, TensorSpec, sha256_file

TOKENIZER_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")  # copied for reference
GRAPH = "model.onnx"
EXTERNAL_DATA_OVER = 1_800_000_000  # bytes of weights; protobuf's hard limit is 2 GB
# min cosine against the PyTorch reference that an export must reach, per dtype (every sample, prompt
# and dim); token ids must be equal in every case (that check catches tokenizer drift at any dtype).
# int8: dynamic quantization of real MiniLM weights gives 0.98+ on text and 0.966 on a text with no
# content ([CLS] [SEP] only); random-weight models 0.995+.
PARITY_BARS = {"float32": 0.99999, "float16": 0.999, "int8": 0.95}
SHOW_FAILURES = 8


class ParityFailure(Exception):
    """The export does not embed like the checkpoint; ``manifest`` (written) records it."""

    def __init__(self, manifest: Manifest, out: Path) -> None:
        self.manifest = manifest
        self.out = out
        super().__init__(failure_message(manifest.parity))


def failure_message(report: dict[str, Any]) -> str:
    """The first few failures of each kind, one per line, for people."""
    failures: dict[str, list[str]] = report.get("failures") or {}
    lines: list[str] = []
    for kind, items in failures.items():
        lines += items[:SHOW_FAILURES]
        if len(items) > SHOW_FAILURES:
            lines.append(f"... and {len(items) - SHOW_FAILURES} more {kind} failures (manifest.json, parity)")
    return "\n".join(lines)


@dataclass(frozen=True)
class ExportOptions:
    dtype: str = "float32"  # float32 | float16 | int8
    device: str = "cpu"
    max_length: int | None = None
    opset: int = 23
    parity: bool = True
    model_id: str | None = None
    revision: str | None = None
    external_data: bool | None = None  # None: only when the weights pass EXTERNAL_DATA_OVER
    suffix: str | None = None  # overrides the checkpoint's suffix
    prompts: dict[str, str] | None = None  # override or add prompts by input type
    allow_parity_failure: bool = False  # record a failed check in the manifest instead of raising


def _say(step: str, progress: Callable[[str], None] | None) -> None:
    if progress is not None:
        progress(step)


def _tool_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "tokenizers", "zembed-serve"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out


EXPORT_MARKER = ".zembed-export"  # marks a folder the export owns (see prepare_out)


def prepare_out(out: Path, force: bool, source: Path | None = None) -> None:
    """Make ``out`` ready: empty, or (``force``) an earlier export's folder whose files are removed.

    Export never writes into, or deletes, its source: ``out`` equal to, inside or around the source
    is refused, and ``force`` removes only the files an earlier export recorded in its manifest.json
    (a folder holding anything else is refused, naming what it holds)."""
    if source is not None:
        o, src = out.resolve(), source.resolve()
        if o == src or src in o.parents or o in src.parents:
            raise FileExistsError(
                f"--out {out} is the source folder {source} or overlaps it; export never writes into "
                "its source: choose another folder"
            )
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty; choose an empty folder or pass --force to clean it")
        manifest, marker = out / MANIFEST, out / EXPORT_MARKER
        if manifest.is_file():
            ours = {MANIFEST, EXPORT_MARKER, *json.loads(manifest.read_text()).get("files", {})}
        elif marker.is_file():  # an export that did not finish: the folder was its own from the start
            ours = {p.name for p in out.iterdir() if p.is_file()}
        else:
            raise FileExistsError(
                f"--force only cleans a folder an earlier `zembed export` wrote (it has {MANIFEST}); "
                f"{out} has none: choose an empty folder"
            )
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if foreign:
            raise FileExistsError(
                f"--force only removes an earlier export's files; {out} also holds {foreign[:5]}"
                f"{' ...' if len(foreign) > 5 else ''}: move them or choose an empty folder"
            )
        for name in ours:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPORT_MARKER).write_text("written by zembed export; --force may clean this folder\n")


def _export_graph(
    source: Source, dest: Path, dtype: str, device: str, opset: int, external: bool | None = None
) -> None:
    import torch
    from transformers import AutoModel

    from zembed.export.graph import EmbeddingGraph

    torch_dtype = torch.float16 if dtype == "float16" else torch.float32
    backbone = AutoModel.from_pretrained(str(source.transformer_path), dtype=torch_dtype).eval().to(device)
    rope = getattr(backbone.config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(backbone.config, "rope_theta", None))
    src_cfg = json.loads((source.transformer_path / "config.json").read_text())
    want = (src_cfg.get("rope_parameters") or {}).get("rope_theta", src_cfg.get("rope_theta"))
    if want is not None and theta is not None and float(theta) != float(want):
        raise RuntimeError(
            f"loaded rope_theta {theta} differs from config.json's {want}: transformers version trap"
        )
    graph = EmbeddingGraph(
        backbone, source.pooling, source.normalize, decoder=source.pooling == "lasttoken"
    ).eval()
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]], device=device)
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]], device=device)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    # torch's exporter warns about its own internals (deprecations, axis renames): not the user's business
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        program = torch.onnx.export(
            graph,
            (ids, mask),
            dynamo=True,
            opset_version=opset,
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            verbose=False,
        )
    n_bytes = sum(p.numel() * p.element_size() for p in backbone.parameters())
    del backbone, graph
    assert program is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        program.save(str(dest), external_data=n_bytes > EXTERNAL_DATA_OVER if external is None else external)


def _quantize_int8(fp32_graph: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    big = sum(f.stat().st_size for f in fp32_graph.parent.iterdir()) > EXTERNAL_DATA_OVER
    quantize_dynamic(
        str(fp32_graph),
        str(dest),
        op_types_to_quantize=["MatMul"],  # at opset 23 anything more writes an invalid QAttention
        weight_type=QuantType.QInt8,
        per_channel=True,  # per-tensor scales lost too much on real weights (MiniLM min cosine 0.88 vs 0.985)
        use_external_data_format=big,
    )


def token_report(
    hf_tok: Any, shipped: Path, prompts: dict[str, str], suffix: str
) -> tuple[dict[str, Any], list[str]]:
    """Token ids of the shipped tokenizer vs the checkpoint's tokenizer class on the samples and the
    hostile sample, for every prompt and for no prompt. (report, failure lines)."""
    from zembed.export.samples import HOSTILE, SAMPLES
    from zembed.export.tokens import compare_token_ids

    input_types: list[str | None] = [*prompts, None]
    n, bad = compare_token_ids(shipped, hf_tok, prompts, suffix, [*SAMPLES, *HOSTILE], input_types)
    report = {
        "strings": n,
        "samples": len(SAMPLES),
        "hostile": len(HOSTILE),
        "prompts": input_types,
        "mismatch_count": len(bad),
        "mismatches": [m.to_json() for m in bad[:SHOW_FAILURES]],
    }
    return report, [m.describe() for m in bad]


def parity_report(
    source: Source, out: Path, dtype: str, tokenizer: Any = None
) -> tuple[dict[str, Any], list[str]]:
    """Cosine of the exported folder (runtime, padded batch) against the PyTorch reference on every
    sample and hostile text that fits, every prompt and dim: (report, failure lines under the bar)."""
    from zembed.export.reference import Reference
    from zembed.export.samples import HOSTILE, SAMPLES
    from zembed.service.runtime.model import EmbeddingModel

    bar = PARITY_BARS[dtype]
    ref = Reference(source, tokenizer=tokenizer)
    model = EmbeddingModel(
        out, providers=["CPUExecutionProvider"], allow_fp16_on_cpu=True, verify_hashes=False
    )
    input_types: list[str | None] = [*source.prompts] or [None]
    # the reference runs whole sequences: compare only texts that fit without truncation
    limit = model.manifest.max_length
    texts = [
        t
        for t in dict.fromkeys([*SAMPLES, *HOSTILE])
        if all(0 < len(ref.token_ids(t, it)) <= limit for it in input_types)
    ]
    report: dict[str, Any] = {"texts": len(texts), "provider": "CPUExecutionProvider", "dims": {}}
    report["token_ids_equal"] = all(
        model.encode([t], it)[0] == ref.token_ids(t, it) for t in texts for it in input_types
    )
    worst: list[tuple[float, str, str | None, int]] = []
    for it in input_types:
        want = ref.embed(texts, it)
        got = model.run(model.encode(texts, it))
        for dim in [source.hidden_size, *source.projection_dims]:
            a, b = model.project(got, dim), ref.project(want, dim)
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            worst += [(float(c), t, it, dim) for c, t in zip(cos, texts, strict=True)]
            prev = report["dims"].get(str(dim), {"min_cosine": 1.0, "mean_cosine": 0.0, "n": 0})
            n = prev["n"] + len(cos)
            report["dims"][str(dim)] = {
                "min_cosine": float(min(prev["min_cosine"], cos.min())),
                "mean_cosine": float((prev["mean_cosine"] * prev["n"] + cos.sum()) / n),
                "n": n,
            }
    worst.sort(key=lambda w: w[0])
    report["min_cosine"] = min(d["min_cosine"] for d in report["dims"].values())
    report["worst"] = [
        {"cosine": c, "text": t, "input_type": it, "dim": dim} for c, t, it, dim in worst[:SHOW_FAILURES]
    ]
    report["dtype"] = dtype
    report["bar"] = bar
    failures = [
        f"text {t[:80]!r}{'...' if len(t) > 80 else ''} (prompt {it!r}, dim {dim}): "
        f"cosine {c:.7f} < {bar} ({dtype} bar)"
        for c, t, it, dim in worst
        if c < bar
    ]
    if not report["token_ids_equal"] and not failures:
        failures.append("the runtime's token ids differ from the reference's (see the token check)")
    return report, failures


def export(
    source_path: Path,
    out: Path,
    opts: ExportOptions,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    t0 = time.perf_counter()
    if opts.dtype not in ("float32", "float16", "int8"):
        raise ValueError(f"dtype must be float32, float16 or int8; given {opts.dtype!r}")
    if opts.dtype == "int8" and opts.device != "cpu":
        raise ValueError("int8 graphs are for CPU: use --device cpu")
    _say(f"reading {source_path}", progress)
    source = read_source(source_path, opts.model_id, opts.revision, suffix=opts.suffix, prompts=opts.prompts)
    if source.pooling == "lasttoken" and not source.suffix:
        _say(
            "WARNING: last-token pooling with no suffix: zembed-1 appends '<|im_end|>\\n' after the text; "
            "if the checkpoint's files do not say so, pass --suffix",
            progress,
        )
    from zembed.export.tokens import load_hf_tokenizer, ship_tokenizer

    # before anything slow: a folder without one fails at once
    hf_tok = load_hf_tokenizer(source.path, source.do_lower_case)
    prepare_out(out, force, source.path)
    max_length = opts.max_length or source.max_length
    _say(
        f"exporting {source.model_type} ({source.pooling} pooling) to ONNX "
        f"opset {opts.opset} as {opts.dtype}",
        progress,
    )
    if opts.dtype == "int8":
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            fp32 = Path(tmp) / GRAPH
            _export_graph(source, fp32, "float32", opts.device, opts.opset, opts.external_data)
            _say("quantizing MatMul weights to int8 (dynamic)", progress)
            _quantize_int8(fp32, out / GRAPH)
    else:
        _export_graph(source, out / GRAPH, opts.dtype, opts.device, opts.opset, opts.external_data)
    _say("writing the tokenizer the checkpoint's tokenizer class runs, and projections", progress)
    ship_tokenizer(hf_tok, out / "tokenizer.json")
    for name in TOKENIZER_CONFIG_FILES:
        if (source.path / name).exists():
            shutil.copy2(source.path / name, out / name)
    projections = None
    if source.projection_dims:
        projections = "projections.safetensors"
        shutil.copy2(source.path / projections, out / projections)
    source_files = {
        str(p.relative_to(source.path)): sha256_file(p)
        for p in sorted(source.path.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }
    manifest = Manifest(
        model_id=source.model_id,
        revision=source.revision,
        architecture=source.model_type,
        pooling=source.pooling,
        normalize=source.normalize,
        prompts=source.prompts,
        default_prompt=source.default_prompt,
        suffix=source.suffix,
        hidden_size=source.hidden_size,
        dims=[source.hidden_size, *source.projection_dims],
        max_length=max_length,
        dtype=opts.dtype,
        opset=opts.opset,
        graph=GRAPH,
        inputs=[
            TensorSpec("input_ids", "int64", ["batch", "seq"]),
            TensorSpec("attention_mask", "int64", ["batch", "seq"]),
        ],
        outputs=[TensorSpec("sentence_embedding", "float32", ["batch", source.hidden_size])],
        projections=projections,
        files={},
        source_files=source_files,
        tools=_tool_versions(),
    )
    (out / MANIFEST).write_text(manifest.to_json())
    _say("checking token ids: shipped tokenizer vs transformers, samples + hostile sample", progress)
    tokens, token_failures = token_report(hf_tok, out / "tokenizer.json", source.prompts, source.suffix)
    report: dict[str, Any] = {"model_checked": opts.parity, "tokenizer": tokens}
    report["token_ids_equal"] = not token_failures
    cosine_failures: list[str] = []
    if opts.parity:
        _say("checking parity against the PyTorch reference", progress)
        model_report, cosine_failures = parity_report(source, out, opts.dtype, hf_tok)
        report.update(model_report)
        report["token_ids_equal"] = not token_failures and model_report["token_ids_equal"]
    report["failures"] = {"token_ids": token_failures, "cosine": cosine_failures}
    failed = bool(token_failures or cosine_failures)
    report["passed"] = not failed
    report["allowed_failure"] = failed and opts.allow_parity_failure
    manifest = Manifest(**{**manifest.__dict__, "parity": report})
    skip = (MANIFEST, EXPORT_MARKER)
    files = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file() and p.name not in skip}
    manifest = Manifest(**{**manifest.__dict__, "files": files})
    (out / MANIFEST).write_text(manifest.to_json())
    if failed and not opts.allow_parity_failure:
        raise ParityFailure(manifest, out)
    _say(f"done in {time.perf_counter() - t0:.1f} s: {out}", progress)
    return manifest
