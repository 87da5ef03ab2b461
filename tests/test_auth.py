"""The one bearer rule (gRPC edge, HTTP API, /metrics): scheme case-insensitive (RFC 7235), the
token compared in constant time, nothing else accepted."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from service.auth import bearer_matches
from tests.fakes import FakeServer
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

TOKEN = "s3cret-token-0123456789"


@pytest.mark.parametrize(
    "value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"BeArEr {TOKEN}"]
)
def test_scheme_is_case_insensitive(value: str) -> None:
    assert bearer_matches(value, TOKEN.encode())
    assert bearer_matches(value.encode(), TOKEN.encode())


@pytest.mark.parametrize(
    "value",
    [
        TOKEN,
        f"Bearer  {TOKEN}",
        f"Bearer {TOKEN} ",
        f"Bearer\t{TOKEN}",
        f"Basic {TOKEN}",
        "Bearer ",
        "",
        "Bearer x",
    ],
)
def test_anything_else_is_refused(value: str) -> None:
    assert not bearer_matches(value, TOKEN.encode())


def test_lowercase_bearer_over_grpc(tmp_path: Path) -> None:
    with FakeServer(tmp_path, token=TOKEN) as server, grpc.insecure_channel(server.target) as ch:
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        req = pb.ListCollectionsRequest()
        search.ListCollections(req, metadata=[("authorization", f"bearer {TOKEN}")], timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            search.ListCollections(req, metadata=[("authorization", f"bearer  {TOKEN}")], timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
