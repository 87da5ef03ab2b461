"""The one table mapping domain errors to gRPC status codes, and the service's own errors.

Every handler runs inside :func:`status_of`'s mapping (through the servicers' guard): a known error
becomes its status with its message ("`field` must ...; given ..."); anything else becomes INTERNAL
with the traceback logged, never a hang.
"""

from __future__ import annotations

import logging

import grpc

from service.runtime.manifest import ManifestError
from service.runtime.text import TooLong
from store import errors as store_errors

log = logging.getLogger("zembed.errors")


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field} {message}")


class Overloaded(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


# (exception type, status code), first match wins: the ONE table.
TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (ServiceError, grpc.StatusCode.INTERNAL),  # subclasses carry their own code (below)
    (TooLong, grpc.StatusCode.INVALID_ARGUMENT),
    (store_errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (store_errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (store_errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (store_errors.FormatMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (ManifestError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``exc``."""
    for kind, code in TABLE:
        if isinstance(exc, kind):
            if isinstance(exc, ServiceError):
                code = exc.code
            return code, str(exc)
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"
