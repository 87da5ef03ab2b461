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


async def messages(
    requests: AsyncIterator[Req], idle_s: float | None, busy: Callable[[], bool]
) -> AsyncIterator[Req]:
    """The client's messages; raises :class:`StreamIdle` when none arrives for ``idle_s`` seconds
    while ``busy()`` is false (a stream waiting on its own pending items is not idle). The pending
    read is never cancelled by the idle timer (a cancelled read could lose a message)."""
    it = aiter(requests)
    while True:
        nxt: asyncio.Task[Req] = asyncio.ensure_future(anext(it))
        try:
            while True:
                done, _ = await asyncio.wait({nxt}, timeout=idle_s)
                if done:
                    break
                if not busy():
                    raise StreamIdle(f"the stream sent no message for {idle_s:g} s with nothing pending")
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
        finally:
            if not nxt.done():
                nxt.cancel()
                # the read may still finish (end of stream, an error): retrieve it, never log it
                nxt.add_done_callback(lambda t: t.cancelled() or t.exception())
        yield item


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
        try:
            async for item in messages(self._requests, self._idle_s, self.busy):
                await self.queue.put(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a reader failure always ends its stream
            end = _End(exc)
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
) -> AsyncIterator[Resp]:
    """Items that arrive together (within ``linger_s`` of a group's first, up to ``max_group``) are
    handled as one group; responses come back in request order."""
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
            deadline = loop.time() + linger_s
            while len(group) < max_group:
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
