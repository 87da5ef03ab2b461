"""Child process for the bulk crash test: runs the deterministic op sequence of :func:`ops` from a
given op on, through the bulk path (``upsert_arrays``, float16 vectors, int64 ids) and ``delete``,
and reports each op acknowledged. Replacements and deletes make tombstones, so compactions run in the
write transactions too."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np

from zembed.store import Calibration, CollectionConfig, Store

BATCH = 2000
REPLACED = 1000  # of the previous batch's ids, per batch
DIMS = 64
CONFIG = CollectionConfig(code_bits=DIMS, rescore_dims=DIMS, calibration=Calibration.NONE)


def batch_ids(b: int) -> np.ndarray:
    """Batch ``b`` replaces the new ids of batch ``b - 1`` and adds as many new ones (its last
    ``BATCH - REPLACED``)."""
    new = np.arange(b * BATCH + REPLACED, (b + 1) * BATCH, dtype=np.int64)
    old = np.arange((b - 1) * BATCH + REPLACED, b * BATCH) if b else np.arange(0, REPLACED)
    return np.concatenate([old, new])


def batch_vectors(b: int) -> np.ndarray:
    x = np.random.default_rng(b).standard_normal((BATCH, DIMS), dtype=np.float32)
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    return out


def deleted_ids(b: int) -> np.ndarray:
    """After every fourth upsert: delete the new ids of batch ``b - 2`` (replaced by batch b - 1)."""
    return np.arange((b - 2) * BATCH + REPLACED, (b - 1) * BATCH)


def ops() -> Iterator[tuple[str, int]]:
    b = 0
    while True:
        yield "u", b
        if b % 4 == 3:
            yield "d", b
        b += 1


def op_at(k: int) -> tuple[str, int]:
    for i, op in enumerate(ops()):
        if i == k:
            return op
    raise AssertionError


def main() -> None:
    path, start = sys.argv[1], int(sys.argv[2])
    s = Store(path, map_size=1 << 20)  # small map: growth happens under the kills too
    s.ensure_collection("c", CONFIG)
    c = s.collection("c")
    for k, (kind, b) in enumerate(ops()):
        if k < start:
            continue
        if kind == "u":
            c.upsert_arrays(batch_ids(b), batch_vectors(b))
        else:
            c.delete([str(i) for i in deleted_ids(b)])
        print(k, flush=True)


if __name__ == "__main__":
    main()
