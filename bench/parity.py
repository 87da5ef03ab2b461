"""Parity table: exported graphs through the runtime against the independent PyTorch reference.

Tiny random-weight Qwen3 laid out like zembed-1 (real Qwen3 vocabulary): fp32, fp16 (CPU provider) and
int8 exports, min cosine over the multilingual samples for every dim, both prompts, right and left
padding. Real all-MiniLM-L6-v2: fp32 and int8 against sentence-transformers ``encode`` (mean, min).
Prints a table; writes bench/results/parity.json.   .venv/bin/python bench/parity.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table, write_json
from embed_cache import minilm_dir
from passages import passages


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return out


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from export.onnx_export import ExportOptions, export
    from export.reference import Reference
    from export.samples import SAMPLES
    from export.source import read_source
    from export.synthetic import build_zembed_like
    from service.runtime.model import EmbeddingModel

    tmp = Path(tempfile.mkdtemp(prefix="zembed-parity-"))
    src = build_zembed_like(tmp / "tiny")
    ref = Reference(read_source(src))
    rows: list[list[object]] = []
    results: dict[str, object] = {}
    for dtype in ("float32", "float16", "int8"):
        out = tmp / f"tiny-{dtype}"
        export(src, out, ExportOptions(dtype=dtype, parity=False))
        model = EmbeddingModel(out, providers=["CPUExecutionProvider"], allow_fp16_on_cpu=True)
        worst: dict[int, float] = {}
        for it in ("query", "document"):
            ids = model.encode(SAMPLES, it)
            want = ref.embed(SAMPLES, it)
            width = max(map(len, ids))
            left_ids = np.full((len(ids), width), model.pad_id, dtype=np.int64)
            mask = np.zeros_like(left_ids)
            for i, r in enumerate(ids):
                left_ids[i, width - len(r) :] = r
                mask[i, width - len(r) :] = 1
            left = model.session.run([model.output_name], {"input_ids": left_ids, "attention_mask": mask})[0]
            for got in (model.run(ids), np.asarray(left, dtype=np.float32)):
                for dim in model.dims:
                    c = float(cos(model.project(got, dim), ref.project(want, dim)).min())
                    worst[dim] = min(worst.get(dim, 1.0), c)
        results[f"tiny-{dtype}"] = worst
        rows.append(
            [
                f"tiny Qwen3 {dtype}",
                len(SAMPLES) * 4,
                " ".join(f"{d}:{c:.6f}" for d, c in worst.items()),
                f"{min(worst.values()):.7f}",
                {"float32": ">= 0.99999", "float16": ">= 0.999", "int8": ">= 0.99"}[dtype],
            ]
        )
    texts = passages(300, seed=21)
    st = SentenceTransformer(minilm_dir(), device="cpu").encode(texts)
    for dtype in ("float32", "int8"):
        out = tmp / f"minilm-{dtype}"
        export(Path(minilm_dir()), out, ExportOptions(dtype=dtype, parity=False))
        cm = cos(EmbeddingModel(out).embed(texts), st)
        results[f"minilm-{dtype}"] = {"mean": float(cm.mean()), "min": float(cm.min())}
        rows.append(
            [
                f"all-MiniLM-L6-v2 {dtype}",
                len(texts),
                f"mean {cm.mean():.6f}",
                f"{cm.min():.7f}",
                ">= 0.99999" if dtype == "float32" else "(report)",
            ]
        )
    print("cosine against the PyTorch reference (tiny: independent transformers pipeline; MiniLM: encode)")
    print(table(["graph", "vectors", "per dim (min) / mean", "min cosine", "bar"], rows))
    print(f"wrote {write_json('parity', results)}")


if __name__ == "__main__":
    main()
