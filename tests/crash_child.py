"""Child process for the crash test: upserts numbered batches and reports each one acknowledged."""

from __future__ import annotations

import sys

import numpy as np

from zembed.store import CollectionConfig, RescoreDtype, Store

BATCH = 300
CONFIG = CollectionConfig(
    code_bits=64, rescore_dims=128, rescore_dtype=RescoreDtype.FLOAT32, filterable=("batch",)
)


def batch_data(b: int) -> tuple[list[str], np.ndarray, list[dict[str, object]]]:
    """Deterministic content of batch ``b``; every third batch also replaces ids of batch b-1."""
    rng = np.random.default_rng(b)
    x = rng.normal(size=(BATCH, 128)).astype(np.float32)
    ids = [f"b{b}-{i}" for i in range(BATCH)]
    if b % 3 == 2:
        ids[:50] = [f"b{b - 1}-{i}" for i in range(50)]
    return ids, x, [{"batch": b, "i": i} for i in range(BATCH)]


def main() -> None:
    path, start = sys.argv[1], int(sys.argv[2])
    s = Store(path, map_size=1 << 20)  # small map: growth happens under the kills too
    s.ensure_collection("c", CONFIG)
    c = s.collection("c")
    b = start
    while True:
        ids, x, meta = batch_data(b)
        c.upsert(ids, x[:, :64], x, meta)
        print(b, flush=True)
        b += 1


if __name__ == "__main__":
    main()
