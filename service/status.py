"""The edge: the ONE table mapping domain errors to gRPC status codes, and rate-limited logging.

Domain code (engine, batcher, store, runtime) raises plain exceptions and never imports gRPC; the
servicers, streams and interceptors turn them into a status here. A known error becomes its status
with its own message ("`field` must ...; given ...", values clipped to ~80 characters); anything else
is INTERNAL with the traceback logged (rate-limited, so a client cannot flood the log).
"""

from __future__ import annotations

import logging
import threading
import time

import grpc

from zembed.service import errors
from zembed.service.runtime.manifest import ManifestError
from zembed.service.runtime.text import TooLong
from zembed.store import errors as store_errors

log = logging.getLogger("zembed.errors")
MAX_MESSAGE_CHARS = 1024  # a status message never exceeds this (clients cap metadata at 8-16 KiB)

# (exception type, status code), first match wins: the ONE table.
TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),  # Undecodable included
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.StreamIdle, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.StartupError, grpc.StatusCode.FAILED_PRECONDITION),
    (TooLong, grpc.StatusCode.INVALID_ARGUMENT),
    (store_errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (store_errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (store_errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (store_errors.DiskFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (store_errors.Locked, grpc.StatusCode.FAILED_PRECONDITION),
    (store_errors.Damaged, grpc.StatusCode.FAILED_PRECONDITION),
    (store_errors.FormatMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    # a read asked not to wait met a map resize: the service retries these on a thread, so one
    # escaping here is transient (retryable), not an internal error
    (store_errors.WouldBlock, grpc.StatusCode.UNAVAILABLE),
    (ManifestError, grpc.StatusCode.FAILED_PRECONDITION),
)


class RateLimitedLog:
    """At most ``per_s`` records a second per key (the rest are counted and reported with the next
    record that gets through), so a client sending garbage in a loop cannot flood the log."""

    def __init__(self, logger: logging.Logger, per_s: float = 5.0) -> None:
        self.logger = logger
        self.interval = 1.0 / per_s
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *, exc: BaseException | None = None) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e9) < self.interval:
                self._dropped[key] = self._dropped.get(key, 0) + 1
                return False
            self._last[key] = now
            dropped = self._dropped.pop(key, 0)
        if dropped:
            msg = f"{msg} ({dropped} similar suppressed)"
        self.logger.log(level, "%s", msg, exc_info=exc)
        return True


client_errors = RateLimitedLog(logging.getLogger("zembed.requests"))
internal_errors = RateLimitedLog(log, per_s=2.0)


def code_of(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in TABLE:
        if isinstance(exc, kind):
            return code
    return None


class Relayed(Exception):
    """An answer another server already gave with a status (e.g. a shard behind the router): passed
    on with its own code and message rather than mapped through :data:`TABLE`."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        super().__init__(message)


def status_of(exc: BaseException, method: str = "") -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``exc`` (client errors logged at INFO,
    unexpected ones at ERROR with the traceback; both rate-limited)."""
    code = exc.code if isinstance(exc, Relayed) else code_of(exc)
    if code is None:
        internal_errors.log(
            logging.ERROR, type(exc).__name__, f"unexpected error in {method or 'a call'}", exc=exc
        )
        return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"
    message = str(exc)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "\u2026"
    client_errors.log(logging.INFO, code.name, f"{method or 'call'} -> {code.name}: {message}")
    return code, message
