"""Closing a store waits for transactions in flight: a worker thread still reading the map (a search,
a recall measurement) finishes instead of faulting on unmapped pages; later reads fail cleanly."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from zembed.store import CollectionConfig, RescoreDtype, Store


def test_close_waits_for_a_reader_in_flight_then_refuses_new_ones(tmp_path: Path) -> None:
    s = Store(tmp_path / "s", map_size=64 << 20)
    s.create_collection(
        "c", CollectionConfig(code_bits=16, rescore_dims=16, rescore_dtype=RescoreDtype.FLOAT32)
    )
    c = s.collection("c")
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    c.upsert([f"d{i}" for i in range(50)], x)
    inside, release, closed = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []

    def reader() -> None:
        with s.env.reader(buffers=True) as txn:
            inside.set()
            release.wait(10)
            seen.append(sum(1 for _ in txn.cursor(db=s.env.dbs["ids"])))  # reads the map after the wait

    t = threading.Thread(target=reader)
    t.start()
    assert inside.wait(10)

    def close() -> None:
        s.close()
        closed.set()

    closer = threading.Thread(target=close)
    closer.start()
    time.sleep(0.3)
    assert not closed.is_set()  # close waits for the reader
    release.set()
    t.join(10)
    closer.join(10)
    assert closed.is_set() and seen == [50]
    with pytest.raises(lmdb.Error), s.env.reader() as txn:
        txn.get(b"x")
