"""Dynamic batching for the embedding model: one dedicated inference thread owns the queue.

Requests put their inputs (token id lists) on the queue as items, each with an asyncio future. The
worker takes up to ``max_batch`` items, drops items whose caller went away (cancelled futures) or whose
deadline has passed (never computed), sorts the rest by length and splits them into sub-batches whose
padded size (rows x longest) stays within ``max_tokens`` and whose longest input is at most
``max_pad_ratio`` times the shortest, runs each, and resolves every item's future: with its row, or
with the batch's exception (the worker lives on).

Two lanes (:class:`Latency`, the hosted API's ``latency`` fast/slow):

- **FAST** items are taken before queued SLOW ones, and a FAST batch is flushed once its oldest item
  has waited ``max_wait_s`` (low latency; it holds FAST items only).
- **SLOW** items batch for throughput: a SLOW batch waits up to ``slow_wait_s`` (from its oldest
  item) to fill, and gives way to FAST items that arrive meanwhile. Between the sub-batches of a SLOW
  take, waiting FAST items go first (the rest of the SLOW take goes back to the front of its lane), and
  SLOW sub-batches hold at most ``slow_batch_tokens`` padded tokens, so a FAST item waits for at most
  one short running sub-batch.
- No starvation: at most ``max_overtake`` FAST batches in a row are taken while SLOW items wait; then
  a SLOW batch is taken (``stats.forced``). A SLOW item is overtaken by at most that many FAST
  batches between two SLOW batches.

Admission (back-pressure) is decided BEFORE tokenizing, from an estimate of each call's tokens
(:meth:`Batcher.reserve`), and the queue is bounded in work, not items: the tokens waiting (reserved
or queued) divided by the measured inference rate (tokens per second, a moving average over recent
batches) may not exceed ``max_queue_s``, and at most ``capacity`` items wait. An empty queue admits
any call. A unary call that does not fit fails at once with :class:`Overloaded` (no await, so in
microseconds); streams pass ``wait=True`` and wait for room (their own in-flight bound keeps that
wait short). The reservation is corrected to the real token count once the call is tokenized. A FAST
call is bounded by the FAST work ahead of it (it overtakes SLOW work), a SLOW call by all the work.

No gRPC here. The caller's deadline travels in the :data:`call_deadline` context variable (set at the
edge), so every layer can read it without threading it through every signature.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import ctypes
import ctypes.util
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from zembed.service.errors import DeadlineExceeded, InvalidArgument, Overloaded, Unavailable

log = logging.getLogger("zembed.batcher")
F32 = npt.NDArray[np.float32]

# time.monotonic() by which the current call must be answered (None: no deadline)
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): hands freed heap pages back to the OS after a burst (no-op elsewhere)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None

    def run() -> None:
        trim(0)

    return run


class Latency(enum.Enum):
    """A call's lane in the embedding queue (the hosted API's ``latency`` fast/slow and
    ``latency_mode`` low/high; gRPC ``Latency``)."""

    FAST = "fast"  # taken first, flushed after max_wait_s; refused when its lane has no room
    SLOW = "slow"  # batched for throughput, overtaken by FAST (bounded); waits for room

    @classmethod
    def parse(cls, value: str | None, field: str) -> Latency:
        """From the HTTP API's words: fast/low (or unset) and slow/high."""
        lane = _WORDS.get(value or "fast")
        if lane is None:
            raise InvalidArgument(field, f"must be one of {sorted(_WORDS)}; given {value!r}")
        return lane


_WORDS = {"fast": Latency.FAST, "low": Latency.FAST, "slow": Latency.SLOW, "high": Latency.SLOW}


@dataclass
class _Item:
    ids: Sequence[int]
    future: asyncio.Future[F32]
    loop: asyncio.AbstractEventLoop
    deadline: float | None = None
    lane: Latency = Latency.FAST
    enqueued: float = field(default_factory=time.perf_counter)
    yielded: bool = False  # put back by a SLOW take that gave way: taken again without a fill wait


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    tokens: int = 0
    dropped: int = 0  # caller went away before its item ran
    expired: int = 0  # deadline passed before its item ran: dropped, not computed
    refused: int = 0  # calls refused at admission
    failed_batches: int = 0
    last_batch_size: int = 0
    busy_s: float = 0.0
    trims: int = 0
    fast_items: int = 0  # items taken from the FAST lane
    slow_items: int = 0  # items taken from the SLOW lane
    overtakes: int = 0  # FAST batches taken while SLOW items waited
    forced: int = 0  # SLOW batches taken ahead of waiting FAST items (the max_overtake bound)
    yielded: int = 0  # SLOW items put back to let waiting FAST items run between sub-batches


class Reservation:
    """Room in the queue held for one call, from admission until its items are queued (or it fails)."""

    def __init__(self, batcher: Batcher, items: int, tokens: int, lane: Latency = Latency.FAST) -> None:
        self._b = batcher
        self.items = items
        self.tokens = tokens
        self.lane = lane
        self.active = True

    def adjust(self, tokens: int) -> None:
        """Replace the estimate with the real token count (after tokenizing)."""
        with self._b._cond:
            if self.active:
                self._b._account(self.lane, 0, tokens - self.tokens)
            self.tokens = tokens

    def release(self) -> None:
        with self._b._cond:
            if not self.active:
                return
            self.active = False
            self._b._account(self.lane, -self.items, -self.tokens)
        self._b._wake_waiters()


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
        max_queue_s: float = 2.0,
        rate: float | None = None,
        on_batch: Callable[[int, int, float], None] | None = None,
        on_idle: Callable[[], None] | None = None,
        slow_wait_s: float | None = None,
        max_overtake: int = 4,
        slow_batch_tokens: int | None = None,
    ) -> None:
        """``max_wait_s``: how long a FAST batch waits to fill (from its oldest item);
        ``slow_wait_s``: the same for a SLOW batch (default 10 x ``max_wait_s``, at least 20 ms);
        ``max_overtake``: FAST batches taken in a row while SLOW items wait (then a SLOW batch);
        ``slow_batch_tokens``: the padded-token budget of a SLOW sub-batch (default ``max_tokens`` / 8,
        at least 1), so that a FAST item waits for a short sub-batch at most (on a CPU, throughput
        hardly grows past a few thousand tokens per batch)."""
        self._run = run
        self._on_idle = on_idle
        self.max_batch = max_batch
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self.max_pad_ratio = max_pad_ratio
        self.max_queue_s = max_queue_s
        self.slow_wait_s = max(10 * max_wait_s, 0.02) if slow_wait_s is None else slow_wait_s
        if max_overtake < 1:
            raise ValueError(f"max_overtake must be at least 1; given {max_overtake}")
        self.max_overtake = max_overtake
        self.slow_batch_tokens = max(max_tokens // 8, 1) if slow_batch_tokens is None else slow_batch_tokens
        self.rate = rate  # padded tokens per second of inference (None until measured)
        self._on_batch = on_batch
        self._lanes: dict[Latency, collections.deque[_Item]] = {
            Latency.FAST: collections.deque(),
            Latency.SLOW: collections.deque(),
        }
        self._cond = threading.Condition()
        # per lane: tokens / items reserved or queued, not yet taken by the worker
        self._work_by = dict.fromkeys(Latency, 0)
        self._items_by = dict.fromkeys(Latency, 0)
        self._overtakes = 0  # FAST batches taken in a row while SLOW items waited
        self._space: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._stopping = False
        self._trim = _malloc_trim()
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
        return sum(len(q) for q in self._lanes.values())

    def lane_depth(self, lane: Latency) -> int:
        return len(self._lanes[lane])

    def lane_figures(self) -> dict[str, dict[str, int]]:
        """Per lane: inputs waiting and taken so far; and how often one lane went ahead of the other
        (for /metrics)."""
        st = self.stats
        return {
            "waiting": {lane.value: len(q) for lane, q in self._lanes.items()},
            "taken": {Latency.FAST.value: st.fast_items, Latency.SLOW.value: st.slow_items},
            "events": {"overtake": st.overtakes, "forced": st.forced, "yielded": st.yielded},
        }

    @property
    def _work(self) -> int:
        return sum(self._work_by.values())

    @property
    def _items(self) -> int:
        return sum(self._items_by.values())

    def _account(self, lane: Latency, items: int, tokens: int) -> None:
        """Change a lane's reserved/queued counts (under ``_cond``)."""
        self._items_by[lane] += items
        self._work_by[lane] += tokens

    @property
    def queued_tokens(self) -> int:
        return self._work

    def max_queue_tokens(self) -> float:
        """The work bound in tokens: ``max_queue_s`` of inference at the measured rate."""
        if self.rate is None:
            return float(self.max_tokens) * 4  # before any measurement: four full batches
        return self.rate * self.max_queue_s

    def estimated_wait_s(self) -> float:
        return self._work / self.rate if self.rate else 0.0

    def _fits(self, items: int, tokens: int, lane: Latency) -> bool:
        """FAST calls count the FAST work ahead of them (they overtake SLOW work); SLOW calls all."""
        ahead_items = self._items_by[lane] if lane is Latency.FAST else self._items
        ahead_work = self._work_by[lane] if lane is Latency.FAST else self._work
        if ahead_items == 0:
            return True  # an empty queue admits any call (it is bounded by the call limits)
        return ahead_items + items <= self.capacity and ahead_work + tokens <= self.max_queue_tokens()

    async def reserve(
        self,
        items: int,
        tokens: int,
        *,
        wait: bool = False,
        deadline: float | None = None,
        lane: Latency = Latency.FAST,
    ) -> Reservation:
        """Admit a call of ``items`` inputs estimated at ``tokens`` tokens, or refuse it at once
        (``Overloaded``) unless ``wait`` (streams, SLOW calls: wait for room, at most until
        ``deadline``)."""
        if self._stopping:
            raise Unavailable("the server is shutting down")
        if items > self.capacity:
            raise Overloaded(f"inputs must be at most {self.capacity} per call; given {items}")
        loop = asyncio.get_running_loop()
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded("the call's deadline passed while it waited for the embedding queue")
            with self._cond:
                if self._fits(items, tokens, lane):
                    self._account(lane, items, tokens)
                    return Reservation(self, items, tokens, lane)
                if not wait:
                    self.stats.refused += 1
                    raise Overloaded(
                        f"the embedding queue is full (~{self.estimated_wait_s():.1f} s of work, "
                        f"{self._items} inputs waiting; limit {self.max_queue_s:g} s, "
                        f"{self.capacity} inputs); retry with backoff"
                    )
                event = asyncio.Event()
                self._space.append((loop, event))
            if deadline is None:
                await event.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), max(deadline - time.monotonic(), 0.0))

    async def submit(
        self,
        ids: Sequence[Sequence[int]],
        *,
        wait: bool = False,
        reservation: Reservation | None = None,
        deadline: float | None = None,
        lane: Latency = Latency.FAST,
    ) -> F32:
        """Embed token id lists; rows come back in input order. Without a ``reservation`` the call is
        admitted here (by its real token count); with one, the reservation's lane is used."""
        if deadline is None:
            deadline = call_deadline.get()
        tokens = sum(len(x) for x in ids)
        if reservation is None:
            reservation = await self.reserve(len(ids), tokens, wait=wait, deadline=deadline, lane=lane)
        else:
            reservation.adjust(tokens)
        lane = reservation.lane
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._stopping:
                reservation.active = False
                self._account(lane, -reservation.items, -reservation.tokens)
                raise Unavailable("the server is shutting down")
            items = [_Item(x, loop.create_future(), loop, deadline, lane) for x in ids]
            self._lanes[lane].extend(items)
            reservation.active = False  # the queued items carry the accounting from here
            self._account(lane, len(items) - reservation.items, 0)
            self._cond.notify()
        try:
            rows = await asyncio.gather(*(i.future for i in items))
        except BaseException:
            for i in items:
                i.future.cancel()  # the worker skips them
            raise
        return np.stack(rows)

    def _wake_waiters(self) -> None:
        with self._cond:
            waiters, self._space = self._space, []
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    # ------------------------------------------------------------------ worker thread
    def _pick(self) -> Latency:
        """The lane to take from next (under ``_cond``; some lane is not empty)."""
        fast, slow = self._lanes[Latency.FAST], self._lanes[Latency.SLOW]
        if slow and (not fast or self._overtakes >= self.max_overtake):
            return Latency.SLOW
        return Latency.FAST

    def _take(self) -> list[_Item]:
        with self._cond:
            while not self.depth and not self._stopping:
                if not self._cond.wait(1.0) and self.stats.batches != self.stats.trims:
                    self.stats.trims = self.stats.batches
                    return []  # idle for a second after work: the worker releases memory
            if not self.depth:
                return []
            while True:  # a FAST item arriving while a SLOW batch fills is picked at once
                lane = self._pick()
                queue = self._lanes[lane]
                wait = self.max_wait_s if lane is Latency.FAST else self.slow_wait_s
                left = 0.0 if queue[0].yielded else queue[0].enqueued + wait - time.perf_counter()
                if len(queue) >= self.max_batch or self._stopping or left <= 0:
                    break
                self._cond.wait(left)
            slow_waiting = bool(self._lanes[Latency.SLOW])
            if lane is Latency.FAST:
                self._overtakes = self._overtakes + 1 if slow_waiting else 0
                self.stats.overtakes += slow_waiting
            else:
                self.stats.forced += bool(self._lanes[Latency.FAST])
                self._overtakes = 0
            n = min(self.max_batch, len(queue))
            taken = [queue.popleft() for _ in range(n)]
            self._account(lane, -n, -sum(len(i.ids) for i in taken))
            if lane is Latency.FAST:
                self.stats.fast_items += n
            else:
                self.stats.slow_items += n
        self._wake_waiters()
        return taken

    def _yield_to_fast(self, rest: list[_Item]) -> bool:
        """Between a SLOW take's sub-batches: when FAST items wait (and the overtake bound allows),
        put ``rest`` back at the front of the SLOW lane and return True."""
        with self._cond:
            if not self._lanes[Latency.FAST] or self._overtakes >= self.max_overtake:
                return False
            for i in rest:
                i.yielded = True
            self._lanes[Latency.SLOW].extendleft(reversed(rest))
            self._account(Latency.SLOW, len(rest), sum(len(i.ids) for i in rest))
            self.stats.yielded += len(rest)
            self.stats.slow_items -= len(rest)
            return True

    def _worker(self) -> None:
        while True:
            taken = self._take()
            if not taken:
                if self._stopping:
                    self._fail_all(Unavailable("the server is shutting down"))
                    return
                self._release_memory()
                continue
            now = time.monotonic()
            live = []
            for i in taken:
                if i.future.done():
                    self.stats.dropped += 1
                elif i.deadline is not None and i.deadline <= now:
                    self.stats.expired += 1
                    i.loop.call_soon_threadsafe(
                        _set_exception,
                        i.future,
                        DeadlineExceeded("the call's deadline passed before its input was embedded"),
                    )
                else:
                    live.append(i)
            live.sort(key=lambda i: len(i.ids))
            slow = bool(live) and live[0].lane is Latency.SLOW
            batches = self._split(live, self.slow_batch_tokens if slow else self.max_tokens)
            for k, batch in enumerate(batches):
                if k and batch[0].lane is Latency.SLOW:
                    rest = [i for b in batches[k:] for i in b]
                    if self._yield_to_fast(rest):
                        break
                self._run_batch(batch)

    def _release_memory(self) -> None:
        """After a burst: the model's own hook (e.g. shrinking ONNX Runtime's arena), then glibc's
        malloc_trim so freed heap pages go back to the OS."""
        try:
            if self._on_idle is not None:
                self._on_idle()
        except Exception:  # never let housekeeping kill the worker
            log.exception("releasing memory after a burst failed")
        self._trim()

    def _split(self, items: list[_Item], budget: int) -> list[list[_Item]]:
        """Consecutive runs (sorted by length) whose rows x longest stays within the token budget and
        whose longest is at most ``max_pad_ratio`` x their shortest (padding is wasted compute)."""
        out: list[list[_Item]] = []
        cur: list[_Item] = []
        for it in items:
            n = max(len(it.ids), 1)
            if cur and ((len(cur) + 1) * n > budget or n > self.max_pad_ratio * max(len(cur[0].ids), 1)):
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
        padded = len(batch) * max(len(i.ids) for i in batch)
        if took > 0 and padded >= min(1024, self.max_tokens // 4):
            # only batches big enough to show throughput (a lone short input is mostly fixed overhead)
            rate = padded / took
            self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
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
        items: list[_Item] = []
        with self._cond:
            for lane, queue in self._lanes.items():
                self._account(lane, -len(queue), -sum(len(i.ids) for i in queue))
                items.extend(queue)
                queue.clear()
        for i in items:
            i.loop.call_soon_threadsafe(_set_exception, i.future, exc)


def _set_result(fut: asyncio.Future[F32], value: F32) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[F32], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
