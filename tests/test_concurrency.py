"""Searches from many threads during writes never see a torn batch; hundreds of readers at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from zembed.store import CollectionConfig, Store, WouldBlock

N = 100


def test_searches_never_see_a_torn_batch(store: Store) -> None:
    store.create_collection("c", CollectionConfig(code_bits=64, rescore_dims=64, filterable=("gen",)))
    c = store.collection("c")
    rng = np.random.default_rng(5)
    ids = [f"x{i}" for i in range(N)]
    c.upsert(ids, rng.normal(size=(N, 64)), None, [{"gen": 0}] * N)
    stop = threading.Event()
    errors: list[str] = []
    seen_gens: set[int] = set()

    def reader() -> None:
        q = np.ones(64, dtype=np.float32)
        while not stop.is_set():
            hits = c.search(q, top_k=N, oversampling=1, rescore=False)[0]
            gens = {h.metadata["gen"] for h in hits if h.metadata}
            if len(hits) != N or len(gens) != 1:
                errors.append(f"{len(hits)} hits, generations {sorted(gens)}")
            seen_gens.update(gens)
            # filtered view of the newest generation is whole too
            g = max(gens)
            got = c.search(q, top_k=N, rescore=False, filter={"gen": g})[0]
            if len(got) not in (0, N):
                errors.append(f"filter gen={g}: {len(got)} hits")

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for gen in range(1, 40):
        # each batch replaces every document: a torn view would mix generations
        c.upsert(ids, rng.normal(size=(N, 64)), None, [{"gen": gen}] * N)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert len(seen_gens) > 3  # readers really ran during the writes
    assert c.count() == N


def test_256_concurrent_readers(store: Store) -> None:
    store.create_collection("c", CollectionConfig(code_bits=64, rescore_dims=64))
    c = store.collection("c")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(500, 64)).astype(np.float32)
    c.upsert([str(i) for i in range(500)], x)
    expected = c.search(x[17], top_k=5)[0]
    barrier = threading.Barrier(256)
    results: list[object] = []
    failures: list[BaseException] = []

    def reader() -> None:
        try:
            with c.env.reader():  # hold a read transaction while all the others open theirs
                barrier.wait(timeout=60)
                results.append(c.search(x[17], top_k=5)[0])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(256)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert len(results) == 256 and all(r == expected for r in results)


def test_a_search_that_must_not_wait_refuses_during_a_map_resize(store: Store) -> None:
    store.create_collection("c", CollectionConfig(code_bits=64, rescore_dims=64))
    c = store.collection("c")
    x = np.random.default_rng(8).normal(size=(50, 64)).astype(np.float32)
    c.upsert([str(i) for i in range(50)], x)
    waited: list[str] = []
    with c.env.gate.exclusive():  # what a map resize holds
        with pytest.raises(WouldBlock, match="resized"):
            c.search(x[3], top_k=1, wait=False)
        t = threading.Thread(target=lambda: waited.append(c.search(x[3], top_k=1)[0][0].id))
        t.start()
        t.join(0.2)
        assert t.is_alive() and not waited  # the default waits the resize out
    t.join(10)
    assert waited == ["3"]
    assert c.search(x[3], top_k=1, wait=False)[0][0].id == "3"
