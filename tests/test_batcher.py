"""Batcher logic with a deterministic fake model (the real model path is tested in test_service)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from zembed.service.batcher import Batcher, Latency
from zembed.service.errors import DeadlineExceeded, InvalidArgument, Overloaded


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


FAST, SLOW = Latency.FAST, Latency.SLOW


class Held:
    """A model that records each row's first id, one list per batch, and blocks every batch until
    ``gate`` is set (``entered`` is set when a batch starts)."""

    def __init__(self) -> None:
        self.gate, self.entered = threading.Event(), threading.Event()
        self.batches: list[list[int]] = []
        self.on_batch: Callable[[], None] | None = None

    def __call__(self, ids: list[Sequence[int]]) -> np.ndarray:
        self.entered.set()
        if self.on_batch is not None:
            self.on_batch()
        self.gate.wait(10)
        self.batches.append([x[0] for x in ids])
        return np.zeros((len(ids), 1), dtype=np.float32)

    @property
    def order(self) -> list[int]:
        return [i for b in self.batches for i in b]


async def queue_behind_blocker(
    b: Batcher, model: Held, calls: list[tuple[int, Latency]]
) -> list[asyncio.Task[np.ndarray]]:
    """Submit a blocker (id 0) that the worker takes and holds, then ``calls`` (id, lane) one by one,
    each queued before the next is submitted; returns every task, the blocker's first."""
    tasks = [asyncio.create_task(b.submit([[0]]))]
    await until(model.entered.is_set)
    for n, (i, lane) in enumerate(calls, 1):
        tasks.append(asyncio.create_task(b.submit([[i]], lane=lane, wait=lane is SLOW)))
        await until(lambda n=n: b.depth == n)  # type: ignore[misc]
    return tasks


def test_fast_items_are_taken_before_queued_slow_ones() -> None:
    """Issue 12: FAST calls overtake a queue of SLOW ones (queue positions, not timings)."""
    model = Held()
    b = Batcher(model, max_batch=1, max_wait_s=0.0, slow_wait_s=0.0, capacity=100)
    b.start()

    async def go() -> None:
        slow = [(i, SLOW) for i in (11, 12, 13, 14)]
        tasks = await queue_behind_blocker(b, model, [*slow, (21, FAST), (22, FAST)])
        assert b.lane_depth(SLOW) == 4 and b.lane_depth(FAST) == 2
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    asyncio.run(go())
    b.stop()
    assert model.order == [0, 21, 22, 11, 12, 13, 14]
    assert b.stats.fast_items == 3 and b.stats.slow_items == 4 and b.stats.overtakes == 2
    assert b.stats.forced == 0


def test_slow_items_are_overtaken_at_most_max_overtake_batches_in_a_row() -> None:
    """No starvation: with SLOW items waiting, at most ``max_overtake`` FAST batches run in a row."""
    model = Held()
    b = Batcher(model, max_batch=1, max_wait_s=0.0, slow_wait_s=0.0, capacity=100, max_overtake=2)
    b.start()

    async def go() -> None:
        calls = [(11, SLOW), (12, SLOW), *((20 + i, FAST) for i in range(1, 7))]
        tasks = await queue_behind_blocker(b, model, calls)
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    asyncio.run(go())
    b.stop()
    assert model.order == [0, 21, 22, 11, 23, 24, 12, 25, 26]
    assert b.stats.forced == 2 and b.stats.overtakes == 4
    with pytest.raises(ValueError, match="max_overtake must be at least 1"):
        Batcher(model, max_overtake=0)


def test_a_slow_take_yields_to_fast_items_between_its_sub_batches() -> None:
    """A SLOW take split into sub-batches: a FAST item that arrives while the first runs goes next;
    the rest of the SLOW take goes back to the front of its lane, in order."""
    model = Held()
    # max_tokens 1: every row is its own sub-batch; the SLOW batch fills to 3 items before it is taken
    b = Batcher(model, max_batch=3, max_tokens=1, max_wait_s=0.0, slow_wait_s=30.0, capacity=100)
    b.start()

    async def go() -> None:
        slow = [asyncio.create_task(b.submit([[i]], lane=SLOW)) for i in (11, 12, 13)]
        await until(model.entered.is_set)  # the SLOW take's first sub-batch is running
        assert model.batches == [] and b.depth == 0
        fast = asyncio.create_task(b.submit([[21]]))
        await until(lambda: b.lane_depth(FAST) == 1)
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(*slow, fast), 10)

    asyncio.run(go())
    b.stop()
    assert model.batches == [[11], [21], [12], [13]]
    assert b.stats.yielded == 2 and b.stats.slow_items == 3 and b.stats.fast_items == 1


def test_slow_batches_fill_for_throughput_fast_ones_flush() -> None:
    """A SLOW batch waits (up to slow_wait_s) until it is full; FAST items are flushed after
    max_wait_s (0 here) without waiting for company."""
    model = Held()
    model.gate.set()
    b = Batcher(model, max_batch=3, max_wait_s=0.0, slow_wait_s=30.0, capacity=100)
    b.start()

    async def go() -> None:
        first = [asyncio.create_task(b.submit([[i]], lane=SLOW)) for i in (11, 12)]
        await until(lambda: b.lane_depth(SLOW) == 2)
        await asyncio.wait_for(b.submit([[21]]), 10)  # flushed alone, ahead of the filling batch
        assert model.batches == [[21]] and b.lane_depth(SLOW) == 2
        await asyncio.wait_for(asyncio.gather(*first, b.submit([[13]], lane=SLOW)), 10)

    asyncio.run(go())
    b.stop()
    assert model.batches == [[21], [11, 12, 13]]


def test_fast_admission_counts_only_fast_work_slow_counts_all() -> None:
    """SLOW work filling the queue does not refuse a FAST call (it overtakes that work); a SLOW call
    that does not fit is refused (or, waiting, admitted when room frees)."""
    b = Batcher(Held(), max_batch=4, max_wait_s=0.0, capacity=4, max_queue_s=1.0, rate=1000.0)

    async def go() -> None:
        slow = await b.reserve(4, 900, lane=SLOW)
        with pytest.raises(Overloaded, match="queue is full"):
            await b.reserve(1, 10, lane=SLOW)
        fast = await b.reserve(3, 900)  # admitted: no FAST work ahead of it
        with pytest.raises(Overloaded):
            await b.reserve(1, 200)  # 900 FAST tokens + 200 > 1 s x 1000 tokens/s
        assert b.queued_tokens == 1800
        waiting = asyncio.create_task(b.reserve(1, 10, lane=SLOW, wait=True))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        slow.release()
        fast.release()
        (await asyncio.wait_for(waiting, 10)).release()
        assert b.queued_tokens == 0 and b.stats.refused == 2

    asyncio.run(go())


def test_latency_words() -> None:
    assert [Latency.parse(w, "latency") for w in (None, "fast", "low", "slow", "high")] == [
        FAST,
        FAST,
        FAST,
        SLOW,
        SLOW,
    ]
    with pytest.raises(InvalidArgument, match=r"latency.*must be one of"):
        Latency.parse("medium", "latency")


def test_slow_sub_batches_hold_at_most_slow_batch_tokens() -> None:
    """A FAST item waits at most for one short SLOW sub-batch: SLOW takes are split at
    ``slow_batch_tokens`` padded tokens, FAST ones at ``max_tokens``."""
    model = Held()
    model.gate.set()
    b = Batcher(model, max_batch=8, max_tokens=100, max_wait_s=30.0, slow_wait_s=30.0, slow_batch_tokens=20)
    b.start()

    async def go() -> None:
        slow = [b.submit([[i] * 5], lane=SLOW) for i in range(10, 18)]  # a full SLOW batch of 8 x 5
        await asyncio.wait_for(asyncio.gather(*slow), 10)
        fast = [b.submit([[i] * 5]) for i in range(20, 28)]
        await asyncio.wait_for(asyncio.gather(*fast), 10)

    asyncio.run(go())
    b.stop()
    assert [len(x) for x in model.batches] == [4, 4, 8]  # 4 x 5 = 20 tokens; 8 x 5 = 40 <= 100
    assert Batcher(model, max_tokens=16384).slow_batch_tokens == 2048
