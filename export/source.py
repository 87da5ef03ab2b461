"""Read what a sentence-transformers model folder says about how to run it.

Prompts come from ``config_sentence_transformers.json``; the suffix from ``sentence_bert_config.json``
or ``config_sentence_transformers.json`` (key ``suffix``; empty when absent); pooling from the Pooling
module's ``config.json``; normalization from a Normalize module in ``modules.json``; the projection
chain from ``projections.safetensors``; max length from ``sentence_bert_config.json``. Nothing about
zembed-1 is hard-coded: a folder that says something else is exported as it says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POOLING_KEYS = {
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
}


class SourceError(Exception):
    """The source folder cannot be exported as it is; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    path: Path
    model_id: str
    revision: str | None
    model_type: str
    hidden_size: int
    pooling: str
    normalize: bool
    prompts: dict[str, str]
    default_prompt: str | None
    suffix: str
    max_length: int
    projection_dims: list[int]  # descending, empty when the folder has no projections
    transformer_path: Path  # folder of the backbone (config.json + weights)
    do_lower_case: bool = False  # sentence-transformers lowercases the text first (a Lowercase normalizer)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise SourceError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SourceError(f"{path} must hold a JSON object")
    return data


def read_source(
    path: Path,
    model_id: str | None = None,
    revision: str | None = None,
    *,
    suffix: str | None = None,
    prompts: dict[str, str] | None = None,
) -> Source:
    """What ``path`` says; ``suffix`` and ``prompts`` (from the command line) override the files."""
    if not path.is_dir():
        raise SourceError(f"{path} is not a folder")
    modules = json.loads((path / "modules.json").read_text()) if (path / "modules.json").exists() else []
    pooling_dir = None
    normalize = False
    transformer_path = path
    for m in modules:
        kind = str(m.get("type", ""))
        if kind.endswith("Pooling"):
            pooling_dir = path / m.get("path", "1_Pooling")
        elif kind.endswith("Normalize"):
            normalize = True
        elif kind.endswith("Transformer") and m.get("path"):
            transformer_path = path / m["path"]
    if not (transformer_path / "config.json").exists():
        raise SourceError(f"{transformer_path / 'config.json'} is missing: not a transformers checkpoint")
    config = _json(transformer_path / "config.json")
    pooling = "lasttoken" if config.get("model_type") == "qwen3" else "mean"
    if pooling_dir is not None:
        pcfg = _json(pooling_dir / "config.json")
        chosen = [name for key, name in POOLING_KEYS.items() if pcfg.get(key)]
        others = [k for k in ("pooling_mode_max_tokens", "pooling_mode_weightedmean_tokens") if pcfg.get(k)]
        if others or len(chosen) != 1:
            raise SourceError(
                f"{pooling_dir / 'config.json'}: exactly one of mean, cls or lasttoken pooling is supported; "
                f"given {chosen + others}"
            )
        pooling = chosen[0]
    st = _json(path / "config_sentence_transformers.json")
    sb = _json(path / "sentence_bert_config.json")
    prompts = {**{str(k): str(v) for k, v in (st.get("prompts") or {}).items()}, **(prompts or {})}
    if suffix is None:
        suffix = str(sb.get("suffix", st.get("suffix", "")))
    max_len = int(sb.get("max_seq_length") or config.get("max_position_embeddings") or 512)
    hidden = int(config.get("hidden_size", 0))
    dims: list[int] = []
    proj = path / "projections.safetensors"
    if proj.exists():
        from safetensors import safe_open

        with safe_open(str(proj), framework="numpy") as f:
            keys = list(f.keys())
            shapes = {k: f.get_slice(k).get_shape() for k in keys}
        dims = sorted((int(k) for k in keys), reverse=True)
        width = hidden
        for k in dims:
            if shapes[str(k)] != [width, k]:
                raise SourceError(
                    f"{proj}: projection {k!r} has shape {shapes[str(k)]}; the chain needs [{width}, {k}]"
                )
            width = k
    return Source(
        path=path,
        model_id=model_id or path.name,
        revision=revision,
        model_type=str(config.get("model_type", "")),
        hidden_size=hidden,
        pooling=pooling,
        normalize=normalize,
        prompts=prompts,
        default_prompt=st.get("default_prompt_name"),
        suffix=suffix,
        max_length=max_len,
        projection_dims=dims,
        transformer_path=transformer_path,
        do_lower_case=bool(sb.get("do_lower_case", False)),
    )
