"""Parity table: exported graphs through the runtime against the independent PyTorch reference.

Tiny random-weight Qwen3 laid out like zembed-1 (real Qwen3 vocabulary): fp32, fp16 (CPU provider) and
int8 exports, min cosine over the multilingual samples for every dim, both prompts, right and left
padding. Real all-MiniLM-L6-v2: fp32 and int8 against sentence-transformers ``encode`` (mean, min).
Parity matrix (issue 9): each family the export claims (tiny Qwen3 last-token; real MiniLM mean;
tiny XLM-RoBERTa mean with the real XLM-R tokenizer and e5 prompts; tiny BGE-style BERT CLS) at float32
and int8, exported with the export's own gate on (samples + hostile sample, every prompt): min cosine,
token ids equal, and how many hostile strings the folder's raw tokenizer.json (what earlier exports
shipped) tokenizes differently from the checkpoint's transformers tokenizer.
Prints tables; writes bench/results/parity.json.   .venv/bin/python bench/parity.py [--matrix-only]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
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


def matrix(tmp: Path) -> dict[str, object]:
    from zembed.export.onnx_export import PARITY_BARS, ExportOptions, export
    from zembed.export.samples import HOSTILE
    from zembed.export.source import read_source
    from zembed.export.synthetic import build_bge_like, build_xlmr_like, build_zembed_like
    from zembed.export.tokens import compare_token_ids, load_hf_tokenizer

    minilm = Path(minilm_dir())
    families = {
        "Qwen3 decoder, last token (tiny, real vocab)": build_zembed_like(tmp / "m-qwen"),
        "BERT mean (all-MiniLM-L6-v2, real)": minilm,
        "XLM-RoBERTa mean, e5 prompts (tiny, real XLM-R tokenizer)": build_xlmr_like(tmp / "m-xlmr"),
        "BGE-style BERT CLS + instruction (tiny, MiniLM vocab)": build_bge_like(tmp / "m-bge", minilm),
    }
    rows: list[list[object]] = []
    out: dict[str, object] = {}
    for name, src in families.items():
        source = read_source(src)
        hf = load_hf_tokenizer(src)
        types: list[str | None] = [*source.prompts, None]
        n, raw = compare_token_ids(src / "tokenizer.json", hf, source.prompts, source.suffix, HOSTILE, types)
        raw_texts = sorted({m.text for m in raw})
        for dtype in ("float32", "int8"):
            folder = tmp / f"m-{len(out)}-{dtype}"
            t = time.perf_counter()
            m = export(src, folder, ExportOptions(dtype=dtype))  # raises ParityFailure under the bar
            p = m.parity
            out[f"{name} / {dtype}"] = {
                "min_cosine": p["min_cosine"],
                "bar": p["bar"],
                "token_ids_equal": p["token_ids_equal"],
                "strings_checked": p["tokenizer"]["strings"],
                "raw_file_mismatches": len(raw),
                "raw_file_mismatch_texts": raw_texts,
                "export_s": time.perf_counter() - t,
            }
            rows.append(
                [
                    name,
                    dtype,
                    f"{p['min_cosine']:.7f}",
                    f">= {PARITY_BARS[dtype]}",
                    f"{p['token_ids_equal']} ({p['tokenizer']['strings']} strings)",
                    f"{len(raw)} of {n}",
                ]
            )
    print("parity matrix (export gate: samples + hostile sample, every prompt; cosine vs PyTorch reference)")
    print(
        table(
            ["family", "dtype", "min cosine", "bar", "token ids equal", "raw tokenizer.json differs"],
            rows,
        )
    )
    return out


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "--matrix-only" in sys.argv:
        tmp = Path(tempfile.mkdtemp(prefix="zembed-parity-"))
        print(f"wrote {write_json('parity_matrix', matrix(tmp))}")
        return
    from sentence_transformers import SentenceTransformer

    from zembed.export.onnx_export import ExportOptions, export
    from zembed.export.reference import Reference
    from zembed.export.samples import SAMPLES
    from zembed.export.source import read_source
    from zembed.export.synthetic import build_zembed_like
    from zembed.service.runtime.model import EmbeddingModel

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
    print(f"wrote {write_json('parity_matrix', matrix(tmp))}")


if __name__ == "__main__":
    main()
