"""Issue 7 probes: each service-side defect exercised once over real gRPC, reporting what a client sees.

Runs against the tree it is started from (``cd OLD_TREE && python /path/to/faults_probe.py`` for the
"before" column; the fake embedder is injected into older trees by patching the model loader), so one
script gives both columns of the issue note's table. Real gRPC server on loopback, real LMDB in a temp
dir, the deterministic fake embedder from tests/fakes.py (no torch).

    python bench/faults_probe.py [--json OUT]
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import logging
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd()))

import grpc
import numpy as np

import tests.fakes as fakes
import zembed.service.server as server_mod
from zembed.store import errors as store_errors
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

TOKEN = "s3cret-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def _inject_into_old_trees() -> None:
    """Older trees' start() has no model/store parameters: load the fake through the model loader."""
    if "model" in inspect.signature(server_mod.start).parameters:
        return
    real_start = server_mod.start

    async def start(settings: Any, *, model: Any = None, store: Any = None, **kw: Any) -> Any:
        server_mod.EmbeddingModel = lambda *a, **k: model  # type: ignore[attr-defined]
        return await real_start(settings, **kw)

    setattr(fakes, "start", start)  # noqa: B010


def outcome(call: Callable[[], Any]) -> tuple[str, str, float]:
    t = time.monotonic()
    try:
        call()
    except grpc.RpcError as e:
        return e.code().name, e.details() or "", time.monotonic() - t
    return "OK", "", time.monotonic() - t


def doc(i: int, v: np.ndarray | None = None, **kw: Any) -> pb.Document:
    v = v if v is not None else np.random.default_rng(i).standard_normal(64).astype(np.float32)
    return pb.Document(id=f"d{i}", vectors=pb.Vectors(code_f32le=v.astype("<f4").tobytes()), **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    _inject_into_old_trees()
    log_buf = io.StringIO()
    handler = logging.StreamHandler(log_buf)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    rows: list[tuple[str, str, str]] = []

    def row(name: str, code: str, figure: str) -> None:
        rows.append((name, code, figure))
        print(f"{name:55s} {code:20s} {figure}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        srv = fakes.FakeServer(Path(tmp), token=TOKEN)
        ch = grpc.insecure_channel(srv.target, options=[("grpc.max_receive_message_length", 64 << 20)])
        emb: Any = pb_grpc.EmbeddingServiceStub(ch)  # type: ignore[no-untyped-call]
        search: Any = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        cfg = pb.CollectionConfig(code_bits=64, rescore_dims=64, filterable=["lang"])
        search.CreateCollection(pb.CreateCollectionRequest(name="docs", config=cfg), metadata=AUTH)

        # 5: undecodable message inside a stream
        for method, good in (
            ("/zembed.v1.EmbeddingService/EmbedStream", pb.EmbedStreamRequest(id="ok", input="hello")),
            (
                "/zembed.v1.SearchService/UpsertStream",
                pb.UpsertStreamRequest(collection="docs", document=pb.Document(id="ok", text="hi")),
            ),
        ):
            call: Any = ch.stream_stream(method)
            code, det, took = outcome(
                lambda c=call, g=good: list(
                    c(iter([g.SerializeToString(), b"\x0a\x02\xff\xfe"]), metadata=AUTH, timeout=10)
                )  # type: ignore[misc]
            )
            row(f"5 {method.rsplit('/', 1)[1]}: valid then undecodable", code, f"ended after {took:.2f} s")

        # 7: undecodable unary, auth before parsing, log volume
        raw: Any = ch.unary_unary("/zembed.v1.EmbeddingService/Embed")
        code, det, _ = outcome(lambda: raw(b"\x0a\x03\xff\xfe\xfd", metadata=AUTH, timeout=10))
        row("7 Embed with bad UTF-8", code, det[:60])
        code, det, _ = outcome(lambda: raw(b"\x0a\x03\xff\xfe\xfd", timeout=10))
        row("7 same, without a token", code, det[:60])
        before = len(log_buf.getvalue())
        t = time.monotonic()
        errors = 0
        for _ in range(1000):
            try:
                raw(b"\x0a\x03\xff\xfe\xfd", timeout=10)
            except grpc.RpcError:
                errors += 1
        took = time.monotonic() - t
        size = len(log_buf.getvalue()) - before
        row(
            "7 1,000 undecodable calls without a token",
            f"{errors} errors",
            f"{size:,} bytes of log in {took:.1f} s",
        )
        big = pb.UpsertRequest(
            collection="docs",
            documents=[
                doc(i, metadata={"t": pb.MetadataValue(string_value="x" * 60_000)}) for i in range(900)
            ],
        )
        code, _, took = outcome(lambda: search.Upsert(big, timeout=60))
        row(
            f"7 {big.ByteSize() / 1e6:.0f} MB Upsert without a token",
            code,
            f"answered in {took * 1000:.0f} ms",
        )
        md2 = (("authorization", "Bearer wrong"), *AUTH)
        code, det, _ = outcome(lambda: emb.Embed(pb.EmbedRequest(inputs=["x"]), metadata=md2, timeout=10))
        row("10 two authorization headers, the last right", code, det[:60])

        # 8, 9: strings and lists
        names = [f"f{i:02d}" + "a" * (1 << 20) for i in range(32)]
        code, det, took = outcome(
            lambda: search.CreateCollection(
                pb.CreateCollectionRequest(
                    name="huge", config=pb.CollectionConfig(code_bits=64, rescore_dims=64, filterable=names)
                ),
                metadata=AUTH,
                timeout=60,
            )
        )
        fig = f"message {len(det)} chars"
        if code == "OK":
            t = time.monotonic()
            for i in range(5):
                search.Upsert(
                    pb.UpsertRequest(collection="huge", documents=[doc(i)]), metadata=AUTH, timeout=60
                )
            fig = f"then 1-doc upsert {(time.monotonic() - t) / 5 * 1000:.0f} ms"
        row("8 32 filterable names of 1 MiB", code, fig)
        code, det, _ = outcome(
            lambda: search.ListCollections(pb.ListCollectionsRequest(), metadata=AUTH, timeout=60)
        )
        row("8 ListCollections after that", code, det[:60])
        code, det, took = outcome(
            lambda: search.GetDocuments(
                pb.GetDocumentsRequest(collection="docs", ids=[str(i) for i in range(100_000)]),
                metadata=AUTH,
                timeout=60,
            )
        )
        row("10 GetDocuments of 100,000 ids", code, f"{took:.2f} s; {det[:50]}")
        long_name = "Z" * 100_000
        for label, call2 in (
            (
                "GetCollection",
                lambda: search.GetCollection(pb.GetCollectionRequest(name=long_name), metadata=AUTH),
            ),
            (
                "CreateCollection",
                lambda: search.CreateCollection(pb.CreateCollectionRequest(name=long_name), metadata=AUTH),
            ),
        ):
            code, det, _ = outcome(call2)
            row(f"9 {label} of a 100,000-character name", code, f"message {len(det):,} chars")

        # 10: vectors
        base = np.random.default_rng(3).standard_normal(64).astype(np.float32)
        base /= np.abs(base).max()
        for scale in (1e30, 1e-25):
            code, det, _ = outcome(
                lambda s=scale: search.Upsert(  # type: ignore[misc]
                    pb.UpsertRequest(collection="docs", documents=[doc(7, base * np.float32(s))]),
                    metadata=AUTH,
                )
            )
            row(f"10 vector x {scale:g}", code, det[:60])
        both = pb.Document(
            id="b", vectors=pb.Vectors(code=[1.0] * 64, code_f32le=np.ones(64, "<f4").tobytes())
        )
        code, det, _ = outcome(
            lambda: search.Upsert(pb.UpsertRequest(collection="docs", documents=[both]), metadata=AUTH)
        )
        row("10 code and code_f32le both set", code, det[:60])

        # 3: disk full through the table
        coll_type = type(srv.running.engine.store.collection("docs"))
        real_upsert = coll_type.upsert

        def full(*a: Any, **k: Any) -> int:
            raise store_errors.DiskFull("/data", 4096)

        coll_type.upsert = full  # type: ignore[method-assign]
        code, det, _ = outcome(
            lambda: search.Upsert(pb.UpsertRequest(collection="docs", documents=[doc(1)]), metadata=AUTH)
        )
        coll_type.upsert = real_upsert  # type: ignore[method-assign]
        row("3 commit fails with DiskFull", code, det[:70])

        # 11: metrics without the token
        metrics = srv.running.metrics
        try:
            port = metrics.serve(0, "127.0.0.1", TOKEN)  # new signature
        except TypeError:
            import socket

            from prometheus_client import start_http_server

            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                row(
                    "11 GET /metrics without the token",
                    str(r.status),
                    "collection names listed" if b"docs" in r.read() else "",
                )
        except urllib.error.HTTPError as e:
            row("11 GET /metrics without the token", str(e.code), "refused")
            e.close()
        ch.close()
        srv.stop()
    if args.json:
        args.json.write_text(
            json.dumps([{"defect": r[0], "code": r[1], "figure": r[2]} for r in rows], indent=1)
        )


if __name__ == "__main__":
    main()
