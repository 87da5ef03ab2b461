"""The search scheduler on a real LMDB store: queued searches run as one batch, cancelled ones are
skipped, and the batch's answers equal searches run alone."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np

from zembed.service.searcher import SLOW_ON_LOOP_S, SearchScheduler
from zembed.store import CollectionConfig, Store
from zembed.store.params import SearchParams


def test_queued_searches_run_as_one_batch_and_a_cancelled_one_is_skipped(store: Store) -> None:
    store.create_collection("c", CollectionConfig(code_bits=64, rescore_dims=64))
    coll = store.collection("c")
    x = np.random.default_rng(11).standard_normal((300, 64), dtype=np.float32)
    coll.upsert([f"d{i}" for i in range(300)], x)
    sched = SearchScheduler(inline_rows=0, parallel=1, max_batch=64)
    params = SearchParams(top_k=5, float_reads=20, include_metadata=False)
    started, release = threading.Event(), threading.Event()
    real = sched._timed

    def held_first(*args: Any, **kw: Any) -> Any:
        if not started.is_set():
            started.set()
            release.wait(10)
        return real(*args, **kw)

    sched._timed = held_first  # type: ignore[method-assign]

    async def go() -> list[list[str]]:
        first = asyncio.create_task(sched.search(coll, x[0], None, params))
        while not started.is_set():
            await asyncio.sleep(0.005)
        queued = [asyncio.create_task(sched.search(coll, x[i], None, params)) for i in range(1, 5)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in queued)  # waiting behind the running search
        queued[1].cancel()  # a caller that went away
        release.set()
        out = [await first] + [await queued[i] for i in (0, 2, 3)]
        return [[h.id for h in hits] for hits in out]

    got = asyncio.run(go())
    want = [[h.id for h in coll.search(x[i], top_k=5)[0]] for i in (0, 1, 3, 4)]
    assert got == want
    assert sched.paths == {"loop": 0, "thread": 1, "batch": 3}
    assert not sched._lanes  # nothing left behind


def test_a_slow_search_on_the_event_loop_turns_that_path_off(store: Store) -> None:
    store.create_collection("c", CollectionConfig(code_bits=64, rescore_dims=64))
    coll = store.collection("c")
    x = np.random.default_rng(12).standard_normal((50, 64), dtype=np.float32)
    coll.upsert([f"d{i}" for i in range(50)], x)
    sched = SearchScheduler(inline_rows=1000)
    params = SearchParams(top_k=3, float_reads=6, include_metadata=False)
    real = sched._timed

    def slow_on_loop(*args: Any, **kw: Any) -> Any:
        if kw.get("wait") is False:
            time.sleep(SLOW_ON_LOOP_S * 2)  # as if its vectors came from disk
        return real(*args, **kw)

    sched._timed = slow_on_loop  # type: ignore[method-assign]

    async def go() -> None:
        for _ in range(3):
            await sched.search(coll, x[1], None, params)

    asyncio.run(go())
    assert sched.paths == {"loop": 1, "thread": 2, "batch": 0}  # after the slow one: threads
