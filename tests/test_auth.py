"""The one bearer rule (gRPC edge, HTTP API, /metrics): scheme case-insensitive (RFC 7235), the
token compared in constant time, nothing else accepted."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.fakes import FakeServer
from zembed.service.auth import bearer_matches
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


def test_metrics_over_https_survive_a_silent_connection(tmp_path: Path) -> None:
    """One TCP connection that never starts its TLS handshake used to stall every scrape (the
    handshake ran inside accept on the only serving thread)."""
    import shutil
    import socket
    import ssl
    import subprocess
    import urllib.request

    from zembed.service.metrics import Metrics

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    metrics = Metrics()
    port = metrics.serve(0, "127.0.0.1", TOKEN, (tmp_path / "c.pem", tmp_path / "k.pem"))
    ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    req = urllib.request.Request(
        f"https://127.0.0.1:{port}/metrics", headers={"Authorization": f"bearer {TOKEN}"}
    )
    silent = socket.create_connection(("127.0.0.1", port))
    try:
        with urllib.request.urlopen(req, timeout=3, context=ctx) as resp:
            assert resp.status == 200 and b"zembed_queue_depth" in resp.read()
    finally:
        silent.close()
        metrics.close()
