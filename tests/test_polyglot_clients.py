"""The Node and Go example clients (clients/node, clients/go) against a real gRPC server on loopback
(tests/fakes.py: real edge, servicers, batcher and LMDB around a fake embedder), and buf.gen.yaml's
Go / TypeScript / Java generation.

Toolchains: Node.js + npm (packages from the npm registry, `npm ci` with the committed lock file);
Go from Debian's packages, offline (clients/go/build.sh lists them). A missing toolchain skips its
test saying why; ZEMBED_CLIENT_TESTS=require (CI) turns those skips into failures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes import FakeServer

ROOT = Path(__file__).resolve().parents[1]
REQUIRE = os.environ.get("ZEMBED_CLIENT_TESTS", "") == "require"
GOCODE = Path("/usr/share/gocode/src")


def unavailable(why: str) -> None:
    if REQUIRE:
        pytest.fail(f"ZEMBED_CLIENT_TESTS=require but {why}")
    pytest.skip(why)


def check_transcript(out: str, lang: str) -> None:
    lines = out.splitlines()
    assert lines[0].startswith("embed: 2 vectors of 64 dims"), out
    assert "upsert: 3 documents" in lines
    assert "stream: 3 acknowledged" in lines
    hits = [x for x in lines if x.startswith("hit: ")]
    assert len(hits) == 4 and all(x.endswith("lang=de") for x in hits), out  # de-1 + 3 streamed
    assert "search: 4 hits, all lang=de" in lines
    assert any(
        x.startswith("error handled: ")
        and "no_such_collection" in x
        and ("NOT_FOUND" in x or "NotFound" in x)
        for x in lines
    ), out
    assert lines[-1] == f"{lang} client: OK"


def test_node_client_against_a_real_server(tmp_path: Path) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("Node.js and npm are not installed (apt-get install nodejs npm)")
    assert node is not None and npm is not None
    work = tmp_path / "node"
    work.mkdir()
    for name in ("package.json", "package-lock.json", "client.js"):
        shutil.copy(ROOT / "clients" / "node" / name, work / name)
    install = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0:
        unavailable(
            f"npm ci could not install @grpc/grpc-js (npm registry unreachable?): {install.stderr[-500:]}"
        )
    with FakeServer(tmp_path / "srv") as srv:
        run = subprocess.run(
            [node, "client.js", "--addr", srv.target, "--protos", str(ROOT / "protos")],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    check_transcript(run.stdout, "node")


def test_go_client_against_a_real_server(tmp_path: Path) -> None:
    missing = [t for t in ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc") if shutil.which(t) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed (Debian packages: see clients/go/build.sh)")
    if not (GOCODE / "google.golang.org" / "grpc").is_dir():
        unavailable("golang-google-grpc-dev is not installed (/usr/share/gocode/src/google.golang.org/grpc)")
    if (GOCODE / "github.com/golang/protobuf/proto/table_unmarshal.go").exists():
        unavailable(
            "github.com/golang/protobuf 1.3 is installed, which cannot carry protoc-gen-go's APIv2 messages: "
            "install golang-github-golang-protobuf-1-5-dev"
        )
    binary = tmp_path / "zembed-go-client"
    build = subprocess.run(
        ["sh", str(ROOT / "clients" / "go" / "build.sh"), str(tmp_path / "gowork"), str(binary)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    token = "polyglot-token-0123456789"
    with FakeServer(tmp_path / "srv", token=token) as srv:
        bad = subprocess.run(
            [str(binary), "-addr", srv.target, "-token", "wrong-token-wrong-token"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        run = subprocess.run(
            [str(binary), "-addr", srv.target],  # the token from ZEMBED_TOKEN
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "ZEMBED_TOKEN": token},
        )
    assert bad.returncode != 0 and "Unauthenticated" in bad.stderr, bad.stdout + bad.stderr
    assert run.returncode == 0, run.stdout + run.stderr
    check_transcript(run.stdout, "go")


def test_buf_gen_yaml_generates_go_typescript_and_java(tmp_path: Path) -> None:
    npx = shutil.which("npx")
    if npx is None:
        unavailable("npx (Node.js) is not installed: buf runs from npm")
    assert npx is not None
    text = (ROOT / "buf.gen.yaml").read_text()
    assert "version: v2" in text
    for plugin in (
        "protoc-gen-go",
        "protoc-gen-go-grpc",
        "protoc-gen-es",
        "protoc_builtin: java",
        "protoc-gen-grpc-java",
    ):
        assert plugin in text, plugin
    # the plugins present here; protoc-gen-grpc-java (a Maven Central binary) usually is not
    dropped = [
        p for p in ("protoc-gen-go", "protoc-gen-go-grpc", "protoc-gen-grpc-java") if shutil.which(p) is None
    ]
    if shutil.which("protoc") is None:
        dropped.append("java")
    template = text.replace("out: gen/", f"out: {tmp_path}/gen/")
    for p in dropped:
        entry = f"  - local: {p}\n" if p != "java" else "  - protoc_builtin: java\n"
        start = template.index(entry)
        end = template.find("\n  - ", start + len(entry))
        template = template[:start] + (template[end + 1 :] if end != -1 else "")
    (tmp_path / "buf.gen.yaml").write_text(template)
    gen = subprocess.run(
        [npx, "--yes", "@bufbuild/buf@1.75.0", "generate", "--template", str(tmp_path / "buf.gen.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if gen.returncode != 0 and ("ENOTFOUND" in gen.stderr or "EAI_AGAIN" in gen.stderr):
        unavailable(f"npm registry unreachable for buf / protoc-gen-es: {gen.stderr[-300:]}")
    assert gen.returncode == 0, gen.stderr
    out = tmp_path / "gen"
    ts = (out / "ts/zembed/v1/zembed_pb.ts").read_text()
    assert "export const SearchService" in ts and "UpsertStream" in ts
    if "protoc-gen-go" not in dropped:
        go = (out / "go/zembed/v1/zembed.pb.go").read_text()
        assert "package zembedv1" in go
    if "protoc-gen-go-grpc" not in dropped:
        assert "func NewSearchServiceClient" in (out / "go/zembed/v1/zembed_grpc.pb.go").read_text()
    if "java" not in dropped:
        assert (out / "java/dev/zembed/v1/SearchRequest.java").is_file()
    if "protoc-gen-grpc-java" not in dropped:
        assert (out / "java/dev/zembed/v1/SearchServiceGrpc.java").is_file()
