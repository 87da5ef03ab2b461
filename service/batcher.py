"""Dynamic batching for the embedding model: one dedicated inference thread owns the queue.

Requests put their inputs (token id lists) on the queue as items, each with an asyncio future. The
worker takes up to ``max_batch`` items (waiting at most ``max_wait_s`` for the batch to fill), drops
items whose caller went away (cancelled futures), sorts the rest by length and splits them into
sub-batches whose padded size (rows x longest) stays within ``max_tokens`` and whose longest input is
at most ``max_pad_ratio`` times the shortest, runs each, and resolves every item's future: with its
row, or with the batch's exception (the worker lives on).

Back-pressure: at most ``capacity`` items wait. A unary call that does not fit fails at once with
:class:`Overloaded`; streams pass ``wait=True`` and wait for room (their own in-flight bound keeps
that wait short).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from service.errors import Overloaded, Unavailable

log = logging.getLogger("zembed.batcher")
F32 = npt.NDArray[np.float32]


@dataclass
class _Item:
    ids: Sequence[int]
    future: asyncio.Future[F32]
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    tokens: int = 0
    dropped: int = 0
    failed_batches: int = 0
    last_batch_size: int = 0
    busy_s: float = 0.0


class Batcher:
    def __init__(
        self,
        run: Callable[[list[Sequence[int]]], F32],
        *,
        max_batch: int = 64,
        max_tokens: int = 16384,
        max_wait_s: float = 0.002,
        capacity: int = 1024,
        max_pad_ratio: float = 1.5,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self.max_pad_ratio = max_pad_ratio
        self._on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._space: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._worker, name="zembed-inference", daemon=True)
        self.stats = BatchStats()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, ids: Sequence[Sequence[int]], *, wait: bool = False) -> F32:
        """Embed token id lists; rows come back in input order."""
        if self._stopping:
            raise Unavailable("the server is shutting down")
        if len(ids) > self.capacity:
            raise Overloaded(f"inputs must be at most {self.capacity} per call; given {len(ids)}")
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if len(self._queue) + len(ids) <= self.capacity:
                    items = [_Item(x, loop.create_future(), loop) for x in ids]
                    self._queue.extend(items)
                    self._cond.notify()
                    break
                if not wait:
                    raise Overloaded(
                        f"the embedding queue is full ({len(self._queue)} of {self.capacity} inputs "
                        "waiting); retry with backoff"
                    )
                event = asyncio.Event()
                self._space.append((loop, event))
            await event.wait()
        try:
            rows = await asyncio.gather(*(i.future for i in items))
        except BaseException:
            for i in items:
                i.future.cancel()  # the worker skips them
            raise
        return np.stack(rows)

    # ------------------------------------------------------------------ worker thread
    def _take(self) -> list[_Item]:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return []
            deadline = time.perf_counter() + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._stopping:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(self.max_batch, len(self._queue))
            taken = [self._queue.popleft() for _ in range(n)]
            waiters, self._space = self._space, []
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)
        return taken

    def _worker(self) -> None:
        while True:
            taken = self._take()
            if not taken:
                if self._stopping:
                    self._fail_all(Unavailable("the server is shutting down"))
                    return
                continue
            live = [i for i in taken if not i.future.done()]
            self.stats.dropped += len(taken) - len(live)
            live.sort(key=lambda i: len(i.ids))
            for batch in self._split(live):
                self._run_batch(batch)

    def _split(self, items: list[_Item]) -> list[list[_Item]]:
        """Consecutive runs (sorted by length) whose rows x longest stays within the token budget and
        whose longest is at most ``max_pad_ratio`` x their shortest (padding is wasted compute)."""
        out: list[list[_Item]] = []
        cur: list[_Item] = []
        for it in items:
            n = max(len(it.ids), 1)
            if cur and (
                (len(cur) + 1) * n > self.max_tokens or n > self.max_pad_ratio * max(len(cur[0].ids), 1)
            ):
                out.append(cur)
                cur = []
            cur.append(it)
        if cur:
            out.append(cur)
        return out

    def _run_batch(self, batch: list[_Item]) -> None:
        t = time.perf_counter()
        try:
            rows = self._run([i.ids for i in batch])
        except Exception as exc:  # a failed batch fails its requests; the worker lives on
            log.exception("inference batch of %d failed", len(batch))
            self.stats.failed_batches += 1
            for i in batch:
                i.loop.call_soon_threadsafe(_set_exception, i.future, exc)
            return
        took = time.perf_counter() - t
        tokens = sum(len(i.ids) for i in batch)
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.tokens += tokens
        self.stats.last_batch_size = len(batch)
        self.stats.busy_s += took
        if self._on_batch is not None:
            self._on_batch(len(batch), tokens, took)
        for i, row in zip(batch, rows, strict=True):
            i.loop.call_soon_threadsafe(_set_result, i.future, row)

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            items, self._queue = list(self._queue), collections.deque()
        for i in items:
            i.loop.call_soon_threadsafe(_set_exception, i.future, exc)


def _set_result(fut: asyncio.Future[F32], value: F32) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[F32], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
