"""The export manifest: what an export folder holds and how its model must be run.

Written by ``export`` (offline), read and checked by the runtime at start-up. Plain JSON so that any
language can read it. Only the standard library and hashing here: no torch, no onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


class ManifestError(Exception):
    """The export folder is unusable; the message names the file and the fix."""


class ParityNotAccepted(ManifestError):
    """The manifest records a failed parity check and the caller did not accept that."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # ONNX element type name: "int64", "float32", ...
    shape: list[str | int]


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to embed exactly like the reference pipeline."""

    model_id: str
    revision: str | None
    architecture: str  # e.g. "Qwen3Model", "BertModel"
    pooling: str  # "lasttoken" | "mean" | "cls"
    normalize: bool
    prompts: dict[str, str]  # input type -> prefix
    default_prompt: str | None
    suffix: str
    hidden_size: int
    dims: list[int]  # available output dims, native first
    max_length: int
    dtype: str  # "float32" | "float16" | "int8"
    opset: int
    graph: str  # ONNX file name
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    projections: str | None  # safetensors file with the [2k, k] chain, or None
    files: dict[str, str]  # output file -> sha256
    source_files: dict[str, str]  # source file -> sha256
    tools: dict[str, str]
    parity: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        d = dict(d)
        d["inputs"] = [TensorSpec(**t) for t in d["inputs"]]
        d["outputs"] = [TensorSpec(**t) for t in d["outputs"]]
        return cls(**d)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise ManifestError(
            f"{path} is missing: {folder} is not a zembed export folder. "
            f"Create one with `zembed export SOURCE --out {folder}`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run `zembed export`.") from None
    if data.get("schema") != SCHEMA_VERSION:
        raise ManifestError(
            f"{path} has manifest schema {data.get('schema')!r}; this runtime reads {SCHEMA_VERSION}. "
            "Re-export with this release of zembed-serve."
        )
    try:
        return Manifest.from_dict(data)
    except TypeError as exc:
        raise ManifestError(
            f"{path} is missing or has unknown fields ({exc}); re-run `zembed export`."
        ) from None


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest lists exists and has the recorded sha256."""
    for name, digest in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ManifestError(f"{path} is missing (listed in {folder / MANIFEST}); re-run `zembed export`.")
        got = sha256_file(path)
        if got != digest:
            raise ManifestError(
                f"{path} is corrupted or was changed: sha256 {got[:16]}... but {MANIFEST} records "
                f"{digest[:16]}...; re-run `zembed export` into an empty folder (or restore the file)."
            )


def parity_failure(manifest: Manifest) -> str | None:
    """A one-paragraph summary of the failed parity check the manifest records, or None.

    Manifests from before the check had a verdict (no ``passed`` key) fail when they record unequal
    token ids, as the export then reported but did not stop on.
    """
    p = manifest.parity
    if not p:
        return None
    failed = p.get("passed") is False or ("passed" not in p and p.get("token_ids_equal") is False)
    if not failed:
        return None
    parts = []
    if p.get("min_cosine") is not None:
        parts.append(f"min cosine {p['min_cosine']:.7f} (bar {p.get('bar', 'not recorded')})")
    parts.append(f"token ids equal: {p.get('token_ids_equal')}")
    recorded = p.get("failures") or {}
    failures = [str(f) for kind in recorded.values() for f in kind] if isinstance(recorded, dict) else []
    if failures:
        parts.append(f"{len(failures)} failing case(s), first: {failures[0]}")
    return "; ".join(parts)


def check_parity(folder: Path, manifest: Manifest, accept: bool) -> str | None:
    """Refuse a folder whose manifest records a failed parity check unless ``accept``; returns the
    failure summary (None when there is none) so that an accepting caller can log it."""
    failure = parity_failure(manifest)
    if failure is not None and not accept:
        raise ParityNotAccepted(
            f"{folder / MANIFEST} records a failed parity check: {failure}. This export does not embed "
            "like its checkpoint. Re-export with a fixed tokenizer or model (see the README, Export), or "
            "serve it anyway with --accept-parity-failure (ZEMBED_ACCEPT_PARITY_FAILURE=1)."
        )
    return failure
