"""The content of ``tests/fixtures/format1`` (a store written by format-1 code, commit 1885117) and the
script that wrote it. Regenerate (only ever with format-1 code on the path)::

    git worktree add /tmp/fmt1 1885117 && cp store/_hamming*.so /tmp/fmt1/store/
    PYTHONPATH=/tmp/fmt1 python tests/format1_fixture.py /tmp/f1 && \
        python -c "import lmdb; lmdb.open('/tmp/f1', max_dbs=16).copy('tests/fixtures/format1', compact=True)"

The test of ``zembed migrate`` rebuilds the expected documents from :func:`batches` and checks that
nothing was lost.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

COLLECTIONS: dict[str, dict[str, Any]] = {
    # auto calibration crossing its sample (final), filterable fields, deletes and replacements
    "alpha": {
        "code_bits": 64,
        "rescore_dims": 96,
        "rescore_dtype": "float16",
        "calibration_sample": 100,
        "filterable": ["lang"],
    },
    # median calibration still collecting: the kept code vectors must survive the migration
    "beta": {"code_bits": 32, "rescore_dims": 32, "rescore_dtype": "float32", "calibration": "median"},
    # sign codes, int8 rescore vectors
    "gamma": {"code_bits": 48, "rescore_dims": 80, "rescore_dtype": "int8", "calibration": "none"},
    "empty": {},
}


def batches(name: str) -> list[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
    """The upserts made into collection ``name``, in order (vectors are the rescore vectors; the
    code vector is their first ``code_bits`` dimensions, or the same vector)."""
    cfg = COLLECTIONS[name]
    if not cfg:
        return []
    dims = cfg["rescore_dims"]
    out = []
    for b in range(3):
        rng = np.random.default_rng(len(name) * 10 + b)
        n = 60
        x = rng.normal(size=(n, dims)).astype(np.float32)
        ids = [f"{name}-{b}-{i}" for i in range(n)]
        if b == 2:
            ids[:10] = [f"{name}-0-{i}" for i in range(10)]  # replacements
        meta: list[dict[str, Any]] = [
            {"lang": ["de", "en", "fr"][i % 3], "i": i, "b": b, "tags": ["x", "y"][: i % 3]} if i % 4 else {}
            for i in range(n)
        ]
        out.append((ids, x, meta))
    return out


DELETED: dict[str, list[str]] = {"alpha": [f"alpha-1-{i}" for i in range(5)], "gamma": ["gamma-0-3"]}


def expected(name: str) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """id -> (rescore vector, metadata) after every upsert and delete."""
    out: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    for ids, x, meta in batches(name):
        for i, ext in enumerate(ids):
            out[ext] = (x[i], meta[i])
    for ext in DELETED.get(name, []):
        out.pop(ext, None)
    return out


def write(path: str) -> None:
    from zembed.store import CollectionConfig, Store

    with Store(path) as s:
        for name, cfg in COLLECTIONS.items():
            config = {**cfg, "filterable": tuple(cfg.get("filterable", ()))}
            s.create_collection(name, CollectionConfig(**config))
            c = s.collection(name)
            for ids, x, meta in batches(name):
                c.upsert(ids, x[:, : cfg["code_bits"]], x, meta)
            if name in DELETED:
                c.delete(DELETED[name])


if __name__ == "__main__":
    write(sys.argv[1])
