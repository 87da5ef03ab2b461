"""The committed generated code matches protos/ (run `make protos` after editing the .proto)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) generates the code")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iprotos",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            "protos/zembed/v1/zembed.proto",
        ],
        cwd=ROOT,
        check=True,
    )
    for name in ("zembed_pb2.py", "zembed_pb2_grpc.py", "zembed_pb2.pyi"):
        fresh = (tmp_path / "zembed" / "v1" / name).read_text()
        assert fresh == (ROOT / "zembed" / "v1" / name).read_text(), (
            f"zembed/v1/{name} is stale: run `make protos`"
        )


def test_proto_documents_defaults_and_errors() -> None:
    text = (ROOT / "protos" / "zembed" / "v1" / "zembed.proto").read_text()
    for needle in (
        "INVALID_ARGUMENT",
        "RESOURCE_EXHAUSTED",
        "UNAUTHENTICATED",
        "unset means 10",
        "default 256",
    ):
        assert needle in text
