"""Embedding throughput on CPU: the runtime (ONNX Runtime, fp32 and int8 exports of the real
all-MiniLM-L6-v2) against sentence-transformers ``encode`` (PyTorch CPU) on the same texts, same batch
size, interleaved in one run. Prints a table with ratios; writes bench/results/embed_throughput.json.

    .venv/bin/python bench/embed_throughput.py [--texts 2000] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table, write_json
from embed_cache import minilm_dir
from passages import passages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from zembed.export.onnx_export import ExportOptions, export
    from zembed.service.runtime.model import EmbeddingModel

    texts = passages(args.texts, seed=3)
    src = Path(minilm_dir())
    tmp = Path(tempfile.mkdtemp(prefix="zembed-tp-"))
    export(src, tmp / "fp32", ExportOptions(dtype="float32", parity=False))
    export(src, tmp / "int8", ExportOptions(dtype="int8", parity=False))
    st = SentenceTransformer(str(src), device="cpu")
    models = {"fp32": EmbeddingModel(tmp / "fp32"), "int8": EmbeddingModel(tmp / "int8")}

    def ours(m: EmbeddingModel) -> None:
        # same order and batch composition as encode(): sorted by length, fixed batch size
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for s in range(0, len(order), args.batch):
            m.embed([texts[i] for i in order[s : s + args.batch]])

    timings: dict[str, list[float]] = {"sentence-transformers": [], "fp32": [], "int8": []}
    for _ in range(args.rounds):  # interleaved
        t = time.perf_counter()
        st.encode(texts, batch_size=args.batch)
        timings["sentence-transformers"].append(time.perf_counter() - t)
        for name, m in models.items():
            t = time.perf_counter()
            ours(m)
            timings[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in timings.items()}
    base = best["sentence-transformers"]
    rows = [[k, f"{len(texts) / v:,.0f}", f"{v:.2f}", base / v] for k, v in best.items()]
    print(
        f"MiniLM on CPU, {len(texts)} passages, batch {args.batch}, best of {args.rounds} interleaved rounds"
    )
    print(table(["engine", "texts/s", "seconds", "speed-up vs sentence-transformers"], rows))
    print(
        f"wrote {write_json('embed_throughput', {'texts': len(texts), 'batch': args.batch, 'seconds': best})}"
    )


if __name__ == "__main__":
    main()
