"""The service's own domain errors. No gRPC here: the one table that maps these (and the store's and
the runtime's errors) to status codes lives at the edge, in :mod:`service.status`.

Messages read "`field` must ...; given ..." and echo a client's value at most :data:`ECHO_CHARS`
characters (:func:`clip`), so an error can never outgrow a client's metadata limit.
"""

from __future__ import annotations

from zembed.store.errors import MAX_MESSAGE_CHARS, clip

__all__ = [
    "DeadlineExceeded",
    "InvalidArgument",
    "Overloaded",
    "ServiceError",
    "StartupError",
    "StreamIdle",
    "TooLarge",
    "Unavailable",
    "Undecodable",
    "clip",
]


class ServiceError(Exception):
    """Base of the service's own errors (anything else unexpected is INTERNAL)."""


class InvalidArgument(ServiceError):
    """A request field is invalid (INVALID_ARGUMENT)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(clip(f"{clip(field, 120, quote=False)} {message}", MAX_MESSAGE_CHARS, quote=False))


class Undecodable(InvalidArgument):
    """A request's bytes are not a valid protobuf message of the method's request type."""

    def __init__(self, type_name: str, reason: str, nbytes: int) -> None:
        self.type_name = type_name
        super().__init__(
            "request",
            f"could not be parsed as a {type_name} message ({nbytes} bytes): "
            + clip(reason, 200, quote=False),
        )


class Overloaded(ServiceError):
    """The server has no room for the call now; retry with backoff (RESOURCE_EXHAUSTED)."""


class TooLarge(ServiceError):
    """The answer would exceed the message size limit; ask for less (RESOURCE_EXHAUSTED)."""


class Unavailable(ServiceError):
    """Starting or shutting down (UNAVAILABLE)."""


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before the work was done; it was dropped (DEADLINE_EXCEEDED)."""


class StreamIdle(ServiceError):
    """A stream sent no message for too long while nothing of it was pending (DEADLINE_EXCEEDED)."""


class StartupError(ServiceError):
    """The server cannot start (bad TLS files, port taken...); one line for the operator, exit code 2."""
