"""The scan kernel and thread count a server runs, as GetModelInfo and /metrics report them."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import grpc

from tests.fakes import FakeServer
from zembed.store import scan
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc


def test_model_info_and_metrics_name_the_scan_kernel(tmp_path: Path) -> None:
    with FakeServer(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.EmbeddingServiceStub(ch)  # type: ignore[no-untyped-call]
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        assert info.scan_kernel == scan.kernel_name() == scan.kernels()[0]
        assert info.scan_kernel in {"avx512", "avx2", "neon", "popcnt", "generic"}
        assert info.scan_threads == scan.threads() >= 1
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server.running.metrics.serve(port, "127.0.0.1")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        line = f'zembed_scan_info{{kernel="{info.scan_kernel}",threads="{info.scan_threads}"}} 1.0'
        assert line in text.splitlines()
