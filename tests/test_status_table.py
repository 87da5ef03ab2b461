"""The one table from domain errors to gRPC status codes (service/status.py): every store error a
request can meet maps to a specific, documented code, never INTERNAL."""

from __future__ import annotations

import grpc
import pytest

from zembed.service.status import code_of
from zembed.store import errors as e

CASES = [
    (e.InvalidArgument("ids", "must be unique"), grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound("collection", "x"), grpc.StatusCode.NOT_FOUND),
    (e.DiskFull("/data", 10), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.NeedsMigration("format 1: run zembed migrate OLD NEW"), grpc.StatusCode.FAILED_PRECONDITION),
    (e.FormatMismatch("other format"), grpc.StatusCode.FAILED_PRECONDITION),
    (e.WouldBlock("map resize"), grpc.StatusCode.UNAVAILABLE),  # transient: a retry succeeds
]


@pytest.mark.parametrize(("exc", "code"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_store_errors_map_to_their_status(exc: BaseException, code: grpc.StatusCode) -> None:
    assert code_of(exc) is code


def test_unknown_errors_are_internal() -> None:
    assert code_of(RuntimeError("boom")) is None  # the caller answers INTERNAL and logs the traceback


def test_relayed_answers_keep_their_code_and_message() -> None:
    from zembed.service.fanout import ShardError
    from zembed.service.status import status_of

    exc = ShardError(grpc.StatusCode.UNAVAILABLE, "shard 2 of 3 (10.0.0.3:50051) unavailable")
    assert status_of(exc, "Search") == (grpc.StatusCode.UNAVAILABLE, str(exc))
    long = ShardError(grpc.StatusCode.INVALID_ARGUMENT, "x" * 5000)
    code, message = status_of(long)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and len(message) == 1024 and message.endswith("\u2026")
