"""Batcher logic with a deterministic fake model (the real model path is tested in test_service)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from zembed.service.batcher import Batcher
from zembed.service.errors import DeadlineExceeded, Overloaded


def fake_run(log: list[list[int]]) -> object:
    def run(ids: list[Sequence[int]]) -> np.ndarray:
        log.append([len(x) for x in ids])
        return np.array([[float(sum(x)), float(len(x))] for x in ids], dtype=np.float32)

    return run


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition (a loaded machine may take a while), failing after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


def test_rows_come_back_in_request_order_and_batches_respect_budgets() -> None:
    log: list[list[int]] = []
    b = Batcher(fake_run(log), max_batch=64, max_tokens=40, max_wait_s=0.01, capacity=100, max_pad_ratio=1.5)  # type: ignore[arg-type]
    b.start()
    ids = [[1] * n for n in (9, 1, 5, 3, 10, 2, 8, 4)]

    async def go() -> np.ndarray:
        return await b.submit(ids)

    out = asyncio.run(go())
    b.stop()
    np.testing.assert_array_equal(out[:, 1], [len(x) for x in ids])
    for batch in log:
        assert len(batch) * max(batch) <= 40 and max(batch) <= 1.5 * min(batch)
        assert batch == sorted(batch)
    assert sorted(n for batch in log for n in batch) == sorted(len(x) for x in ids)


def test_failed_batch_fails_its_requests_and_worker_lives_on() -> None:
    calls = [0]

    def run(ids: list[Sequence[int]]) -> np.ndarray:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("boom")
        return np.zeros((len(ids), 2), dtype=np.float32)

    b = Batcher(run, max_wait_s=0.001)
    b.start()

    async def go() -> None:
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit([[1, 2]])
        assert (await b.submit([[3]])).shape == (1, 2)

    asyncio.run(go())
    b.stop()


def test_full_queue_refuses_unary_and_streams_wait() -> None:
    gate, entered = threading.Event(), threading.Event()

    def run(ids: list[Sequence[int]]) -> np.ndarray:
        entered.set()
        gate.wait(10)
        return np.zeros((len(ids), 1), dtype=np.float32)

    b = Batcher(run, max_batch=2, max_wait_s=0.0, capacity=4)
    b.start()

    async def go() -> None:
        first = asyncio.create_task(b.submit([[1], [2]]))  # taken by the worker, which blocks
        await until(entered.is_set)
        queued = asyncio.create_task(b.submit([[1]] * 4))  # fills the queue
        await until(lambda: b.depth == 4)
        with pytest.raises(Overloaded, match="queue is full"):
            await b.submit([[9]])
        waiting = asyncio.create_task(b.submit([[5]], wait=True))  # a stream item waits for room
        await asyncio.sleep(0.05)
        assert not waiting.done()
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, queued, waiting), 10)

    asyncio.run(go())
    b.stop()


def test_cancelled_requests_are_dropped_from_the_queue() -> None:
    gate, entered = threading.Event(), threading.Event()
    seen: list[int] = []

    def run(ids: list[Sequence[int]]) -> np.ndarray:
        entered.set()
        gate.wait(10)
        seen.extend(x[0] for x in ids)
        return np.zeros((len(ids), 1), dtype=np.float32)

    b = Batcher(run, max_batch=1, max_wait_s=0.0, capacity=10)
    b.start()

    async def go() -> None:
        blocker = asyncio.create_task(b.submit([[1]]))
        await until(entered.is_set)
        gone = asyncio.create_task(b.submit([[2]]))
        await until(lambda: b.depth == 1)
        gone.cancel()
        kept = asyncio.create_task(b.submit([[3]]))
        await until(lambda: b.depth == 2)  # the cancelled item is still queued, behind it the kept one
        gate.set()
        await asyncio.wait_for(asyncio.gather(blocker, kept), 10)

    asyncio.run(go())
    b.stop()
    assert seen == [1, 3] and b.stats.dropped == 1


def test_expired_items_are_dropped_not_computed() -> None:
    """Issue 7, defect 6: an item whose caller's deadline has passed while it waited is dropped (its
    caller gets DeadlineExceeded), never computed; one with time left is computed."""
    gate, entered = threading.Event(), threading.Event()
    seen: list[int] = []

    def run(ids: list[Sequence[int]]) -> np.ndarray:
        entered.set()
        gate.wait(10)
        seen.extend(x[0] for x in ids)
        return np.zeros((len(ids), 1), dtype=np.float32)

    b = Batcher(run, max_batch=1, max_wait_s=0.0, capacity=10)
    b.start()

    async def go() -> None:
        import time

        blocker = asyncio.create_task(b.submit([[1]]))
        await until(entered.is_set)
        late = asyncio.create_task(b.submit([[2]], deadline=time.monotonic() + 0.05))
        kept = asyncio.create_task(b.submit([[3]], deadline=time.monotonic() + 30))
        await until(lambda: b.depth == 2)
        await asyncio.sleep(0.1)  # the first deadline passes while the worker is held
        gate.set()
        await asyncio.wait_for(asyncio.gather(blocker, kept), 10)
        with pytest.raises(DeadlineExceeded):
            await late

    asyncio.run(go())
    b.stop()
    assert seen == [1, 3] and b.stats.expired == 1


def test_admission_is_bounded_in_work_not_items() -> None:
    """Issue 7, defect 6: the queue was bounded in items (1,024), so 1,024 long inputs queued ~40 s of
    work. Now the tokens waiting may not exceed max_queue_s at the measured rate (an empty queue admits
    any call), refusals are immediate, and a reservation can be released or corrected."""
    gate = threading.Event()

    def run(ids: list[Sequence[int]]) -> np.ndarray:
        gate.wait(10)
        return np.zeros((len(ids), 1), dtype=np.float32)

    b = Batcher(run, max_batch=4, max_wait_s=0.0, capacity=1000, max_queue_s=1.0, rate=1000.0)

    async def go() -> None:
        big = await b.reserve(4, 5000)  # empty queue: admitted although over the bound
        with pytest.raises(Overloaded, match=r"queue is full \(~5.0 s of work"):
            await b.reserve(1, 10)
        big.release()
        small = await b.reserve(2, 600)
        small.adjust(900)
        assert b.queued_tokens == 900
        with pytest.raises(Overloaded):
            await b.reserve(1, 200)  # 900 + 200 > 1 s x 1000 tokens/s
        ok = await b.reserve(1, 100)
        assert b.queued_tokens == 1000 and b.stats.refused == 2
        ok.release()
        small.release()
        assert b.queued_tokens == 0

    asyncio.run(go())
    gate.set()
