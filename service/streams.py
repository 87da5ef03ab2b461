"""Request streams, in one place: how a stream's messages are read, bounded, answered and ended.

**Ordering rule.** EmbedStream and SearchStream items are processed concurrently and each is
answered as soon as it is done (completion order; every response carries its request's ``id``).
UpsertStream items are written in groups and acknowledged in request order, each once the
transaction holding it is durable.

**Bounds.** One reader task per stream pulls the client's messages; at most ``limit`` items are read
ahead and pending at once (the reader stops pulling, so flow control pushes back on the client).

**Ending.** Whatever ends the reader ends the stream, always: the client's half-close ends it with OK
once every accepted item is answered; a message that cannot be parsed (``Undecodable``, i.e.
INVALID_ARGUMENT naming the message type), a stream idle past ``idle_s`` with nothing pending
(``StreamIdle``), or any other reader failure ends it with that error, after the items accepted
before it are answered. A client that goes away cancels the call, which cancels the reader and every
pending item.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from zembed.service.errors import StreamIdle

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass
class _End:
    error: BaseException | None = None


class _IdleTimer:
    """Ends a read that waited ``idle_s`` seconds since the last message while ``busy()`` is false, by
    cancelling the reading task (``fired`` then says the cancellation was the timer's). One timer
    handle per stream, re-armed only when it fires: a message costs one clock read, no task and no
    ``asyncio.wait`` (that per-message task cost 15-40% of a stream's throughput)."""

    def __init__(self, idle_s: float, busy: Callable[[], bool], task: asyncio.Task[None]) -> None:
        self.loop = asyncio.get_running_loop()
        self._idle_s = idle_s
        self._busy = busy
        self._task = task
        self.last = self.loop.time()
        self.fired = False
        self._handle = self.loop.call_later(idle_s, self._check)

    def _check(self) -> None:
        quiet = self.loop.time() - self.last
        if quiet >= self._idle_s and not self._busy():
            self.fired = True
            self._task.cancel()
            return
        wait = self._idle_s - quiet if quiet < self._idle_s else self._idle_s
        self._handle = self.loop.call_later(wait, self._check)

    def close(self) -> None:
        self._handle.cancel()


def idle_error(idle_s: float | None) -> StreamIdle:
    return StreamIdle(f"the stream sent no message for {idle_s:g} s with nothing pending")


class _Reader(Generic[Req]):
    """Reads a stream into a bounded queue; the queue always ends with one :class:`_End`."""

    def __init__(
        self, requests: AsyncIterator[Req], limit: int, idle_s: float | None, busy: Callable[[], bool]
    ) -> None:
        self.queue: asyncio.Queue[Req | _End] = asyncio.Queue(limit)
        self._requests = requests
        self._idle_s = idle_s
        self._busy = busy
        self.task = asyncio.ensure_future(self._run())

    def busy(self) -> bool:
        return not self.queue.empty() or self._busy()

    async def _run(self) -> None:
        end = _End()
        task = asyncio.current_task()
        assert task is not None
        timer = None if self._idle_s is None else _IdleTimer(self._idle_s, self.busy, task)
        try:
            async for item in self._requests:
                if timer is not None:
                    timer.last = timer.loop.time()
                await self.queue.put(item)
        except asyncio.CancelledError:
            if timer is None or not timer.fired:
                raise
            # the idle timer's cancellation: a read in progress is lost, but the stream then ends
            # with StreamIdle after answering every message read before it
            task.uncancel()
            end = _End(idle_error(self._idle_s))
        except BaseException as exc:  # a reader failure always ends its stream
            end = _End(exc)
        finally:
            if timer is not None:
                timer.close()
        await self.queue.put(end)


async def concurrent(
    requests: AsyncIterator[Req],
    limit: int,
    handle: Callable[[Req], Awaitable[Resp]],
    idle_s: float | None = None,
) -> AsyncIterator[Resp]:
    """Each item handled on its own task, at most ``limit`` at once; answered in completion order.
    ``handle`` answers an item's own failure in its response (per-item status)."""
    tasks: set[asyncio.Task[None]] = set()
    # bounded: a client that sends but never reads holds at most `limit` answers here (and `limit`
    # in progress), never an unbounded backlog
    out: asyncio.Queue[Resp | _End] = asyncio.Queue(limit)
    reader = _Reader(requests, limit, idle_s, lambda: bool(tasks))
    room = asyncio.Semaphore(limit)

    async def run(item: Req) -> None:
        try:
            await out.put(await handle(item))
        finally:
            room.release()

    async def dispatch() -> None:
        while not isinstance(item := await reader.queue.get(), _End):
            await room.acquire()  # stop taking items while `limit` are pending
            task = asyncio.create_task(run(item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
        await out.put(item)

    dispatcher = asyncio.create_task(dispatch())
    try:
        while not isinstance(res := await out.get(), _End):
            yield res
        if res.error is not None:
            raise res.error
    finally:
        for t in (dispatcher, reader.task, *tasks):
            t.cancel()


async def grouped(
    requests: AsyncIterator[Req],
    limit: int,
    max_group: int,
    linger_s: float,
    handle: Callable[[list[Req]], Awaitable[list[Resp]]],
    idle_s: float | None = None,
    weight: Callable[[Req], int] | None = None,
) -> AsyncIterator[Resp]:
    """Items that arrive together (within ``linger_s`` of a group's first, until the group weighs
    ``max_group``: one per item, or ``weight(item)``, e.g. its number of documents) are handled as
    one group; responses come back in request order. An item at least ``max_group`` heavy is a group
    of its own, handled without lingering."""
    working = [False]
    reader = _Reader(requests, limit, idle_s, lambda: working[0])
    loop = asyncio.get_running_loop()
    end: _End | None = None
    try:
        while end is None:
            first = await reader.queue.get()
            if isinstance(first, _End):
                end = first
                break
            group = [first]
            size = 1 if weight is None else weight(first)
            deadline = loop.time() + linger_s
            while size < max_group:
                try:
                    nxt = reader.queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(reader.queue.get(), left)
                    except TimeoutError:
                        break
                if isinstance(nxt, _End):
                    end = nxt
                    break
                group.append(nxt)
                size += 1 if weight is None else weight(nxt)
            working[0] = True
            try:
                answers = await handle(group)
            finally:
                working[0] = False
            for a in answers:
                yield a
        if end is not None and end.error is not None:
            raise end.error
    finally:
        reader.task.cancel()
