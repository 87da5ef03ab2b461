"""Where and how store searches run: the event loop, a worker thread, or a batch.

- An otherwise idle server runs a search on the event loop (no thread hand-off) when the collection
  is small enough to hold the loop for only a few ms and no other search is running or ready; it
  never waits there (``wait=False``: a map resize under way sends it to a thread instead), and a
  search that held the loop over 20 ms (vectors read from disk rather than memory) turns the path
  off for 10 s.
- Otherwise searches run on worker threads (the scan releases the GIL).
- Under load, searches of the same shape (collection, the same search parameters, a rescore
  query or not) that find ``parallel`` of their kind already running queue up and run together as one
  batched search when one finishes: one pass over the codes scores up to ``max_batch`` queries
  (8 per AVX-512 register), so queued queries cost a fraction of a scan each (``max_batch`` 1: no
  queueing at all, every search runs alone). Nothing waits for a
  batch to fill: a lone search never queues. If a batch fails (one bad query), its queries run one
  by one so each gets its own result or error.

No gRPC and no model here: the engine hands in collections and query vectors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.store import Collection, Hit, WouldBlock
from zembed.store.params import SearchParams

F32 = npt.NDArray[np.float32]
# A search that held the event loop longer than this (its vectors came from disk, say) turns the
# event-loop path off for LOOP_BACKOFF_S: the loop must not wait on I/O.
SLOW_ON_LOOP_S = 0.02
LOOP_BACKOFF_S = 10.0


@dataclass
class _Queued:
    code: F32
    rescore: F32 | None
    future: asyncio.Future[list[Hit]]


@dataclass
class _Lane:
    """Searches of one shape: how many are running, and those waiting to run as a batch."""

    coll: Collection
    params: SearchParams
    running: int = 0
    queued: list[_Queued] = field(default_factory=list)


def _noop(_: float) -> None:
    pass


class SearchScheduler:
    def __init__(
        self,
        inline_rows: int,
        *,
        parallel: int = 2,
        max_batch: int = 64,
        on_search: Callable[[float], None] = _noop,
    ) -> None:
        self.inline_rows = inline_rows
        self.parallel = parallel
        self.max_batch = max_batch
        self.on_search = on_search
        # where searches ran: alone on the loop, alone on a thread, or inside a batch (a metric)
        self.paths = {"loop": 0, "thread": 0, "batch": 0}
        self._lanes: dict[tuple[Any, ...], _Lane] = {}
        self._threaded = 0  # calls running on worker threads
        self._deciding = 0  # searches choosing between the event loop and a worker thread
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_off_until = 0.0  # the event-loop path is off until then (a search there was slow)

    async def search(self, coll: Collection, code: F32, rescore: F32 | None, p: SearchParams) -> list[Hit]:
        if self.max_batch <= 1:  # batching off: every search runs alone
            return await self._alone(coll, code, rescore, p)
        key = (coll, p, rescore is None)  # the parameters are hashable (filter conditions included)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(coll, p)
        if lane.running >= self.parallel or lane.queued:  # busy: join the next batch
            fut: asyncio.Future[list[Hit]] = asyncio.get_running_loop().create_future()
            lane.queued.append(_Queued(code, rescore, fut))
            return await fut
        lane.running += 1
        try:
            return await self._alone(coll, code, rescore, p)
        finally:
            lane.running -= 1
            self._start_batches(key, lane)

    # ------------------------------------------------------------------ one search
    async def _alone(self, coll: Collection, code: F32, rescore: F32 | None, p: SearchParams) -> list[Hit]:
        if await self._idle(coll.count()):
            t = time.monotonic()
            try:
                hits = self._timed(coll, code, rescore, p, wait=False)
                self.paths["loop"] += 1
                return hits[0]
            except WouldBlock:
                pass
            finally:
                if time.monotonic() - t > SLOW_ON_LOOP_S:  # e.g. vectors read from disk, not memory
                    self._loop_off_until = time.monotonic() + LOOP_BACKOFF_S
        self.paths["thread"] += 1
        return (await self._on_thread(coll, code, rescore, p))[0]

    async def _idle(self, rows: int) -> bool:
        """True when nothing else is searching or about to: searches that arrive together (queued
        while the loop was busy) each yield once here, see each other, and go to threads."""
        if rows > self.inline_rows or self._threaded or time.monotonic() < self._loop_off_until:
            return False
        self._deciding += 1
        try:
            await asyncio.sleep(0)
            return self._deciding == 1 and self._threaded == 0
        finally:
            self._deciding -= 1

    async def _on_thread(
        self, coll: Collection, code: F32, rescore: F32 | None, p: SearchParams
    ) -> list[list[Hit]]:
        self._threaded += 1
        try:
            return await asyncio.to_thread(self._timed, coll, code, rescore, p)
        finally:
            self._threaded -= 1

    def _timed(
        self, coll: Collection, code: F32, rescore: F32 | None, p: SearchParams, wait: bool = True
    ) -> list[list[Hit]]:
        t = time.perf_counter()
        hits = coll.search(code, rescore, p, wait=wait)
        self.on_search(time.perf_counter() - t)
        return hits

    # ------------------------------------------------------------------ batches
    def _start_batches(self, key: tuple[Any, ...], lane: _Lane) -> None:
        while lane.running < self.parallel and lane.queued:
            items = [q for q in lane.queued[: self.max_batch] if not q.future.done()]  # skip cancelled
            del lane.queued[: self.max_batch]
            if not items:
                continue
            lane.running += 1
            task = asyncio.ensure_future(self._batch(key, lane, items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if lane.running == 0 and not lane.queued:
            self._lanes.pop(key, None)

    async def _batch(self, key: tuple[Any, ...], lane: _Lane, items: list[_Queued]) -> None:
        try:
            results: list[list[Hit]] | None = None
            if len(items) > 1:
                try:
                    codes = np.stack([q.code for q in items])
                    rescores = None  # all or none of a lane's queries carry one (it is in the key)
                    if items[0].rescore is not None:
                        rescores = np.stack([q.rescore for q in items if q.rescore is not None])
                    results = await self._on_thread(lane.coll, codes, rescores, lane.params)
                    self.paths["batch"] += len(items)
                except Exception:
                    results = None  # one bad query fails a batch: run each alone for its own answer
            if results is not None:
                for q, hits in zip(items, results, strict=True):
                    if not q.future.done():
                        q.future.set_result(hits)
                return
            for q in items:
                try:
                    one = await self._on_thread(lane.coll, q.code, q.rescore, lane.params)
                    self.paths["thread"] += 1
                    if not q.future.done():
                        q.future.set_result(one[0])
                except Exception as exc:
                    if not q.future.done():
                        q.future.set_exception(exc)
        finally:
            for q in items:  # only if this task itself was cancelled (shutdown): nobody waits forever
                if not q.future.done():
                    q.future.cancel()
            lane.running -= 1
            self._start_batches(key, lane)
