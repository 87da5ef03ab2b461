"""Ingest benchmark: `zembed ingest` of N JSONL lines with precomputed vectors, against the store's own
bulk upsert of the same documents, and UpsertStream against unary Upsert for the same documents.

The server runs in a subprocess: the real server (edge, servicers, engine, LMDB) around the tests'
fake embedder (tests/fakes.py), which documents with vectors never reach. `zembed ingest` runs as a
subprocess, exactly as a person would run it.

Rows:
- store bulk: ``Collection.upsert`` in batches of 10,000 (sync on), in process: the baseline.
- `zembed ingest` (JSONL, vectors): stored/s from its summary (parse + resume check + stream +
  server + store), the same with `--overwrite` (no GetDocuments check), and with `--method unary`
  (Upsert calls of 1,000 documents, two in flight, instead of one document per stream message).
- UpsertStream vs unary Upsert: the same pre-built documents (packed float32 vectors, metadata),
  from one Python client, into fresh collections: one stream for everything vs sequential Upsert
  calls of 1,000 and of 64 documents.

    .venv/bin/python bench/ingest_bench.py [--docs 100000] [--dim 384]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.path.dirname(__file__))

from common import table, write_json  # noqa: E402

from zembed.store import Calibration, CollectionConfig, Store  # noqa: E402
from zembed.v1 import zembed_pb2 as pb  # noqa: E402
from zembed.v1 import zembed_pb2_grpc as pb_grpc  # noqa: E402

LANGS = ["de", "en", "fr", "ja"]


def serve_fake(dim: int, data: Path) -> None:
    """Child mode: the real server around the fake embedder until stdin closes."""
    from tests.fakes import FakeEmbedder, FakeServer

    srv = FakeServer(data, model=FakeEmbedder(hidden=dim), log_level="WARNING")
    print(f"port {srv.port}", flush=True)
    sys.stdin.read()
    srv.stop()


def start_server(dim: int, data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-fake", str(dim), str(data)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("port "):
        raise SystemExit("the server did not start")
    return proc, f"127.0.0.1:{line.split()[1]}"


def vectors(n: int, dim: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = np.random.default_rng(7).standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray[Any, np.dtype[np.float32]] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def write_jsonl(path: Path, vecs: np.ndarray[Any, np.dtype[np.float32]]) -> None:
    with path.open("w") as f:
        for i, v in enumerate(vecs):
            vec = ",".join(f"{x:.6f}" for x in v.tolist())
            meta = f'{{"lang": "{LANGS[i % 4]}", "n": {i}}}'
            f.write(f'{{"id": "doc-{i}", "vector": [{vec}], "metadata": {meta}}}\n')


def store_bulk(tmp: Path, vecs: np.ndarray[Any, np.dtype[np.float32]], dim: int) -> float:
    store = Store(tmp / "baseline")
    try:
        store.create_collection(
            "bulk",
            CollectionConfig(
                code_bits=dim, rescore_dims=dim, calibration=Calibration.NONE, filterable=("lang",)
            ),
        )
        coll = store.collection("bulk")
        t = time.perf_counter()
        for i in range(0, len(vecs), 10_000):
            chunk = range(i, min(i + 10_000, len(vecs)))
            coll.upsert(
                [f"doc-{j}" for j in chunk],
                vecs[chunk.start : chunk.stop],
                None,
                [{"lang": LANGS[j % 4], "n": j} for j in chunk],
            )
        return len(vecs) / (time.perf_counter() - t)
    finally:
        store.close()


def create(stub: Any, name: str) -> None:
    # calibration off on both sides: its one-off cost at the calibration sample is the store's, not ingest's
    config = pb.CollectionConfig(calibration="none", filterable=["lang"])
    stub.CreateCollection(pb.CreateCollectionRequest(name=name, config=config))


def cli_ingest(address: str, path: Path, collection: str, *extra: str) -> dict[str, Any]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "zembed.service.cli", "ingest", str(path), collection,
         "--address", address, "--json", "--no-progress", *extra],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"zembed ingest failed ({out.returncode}): {out.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(out.stdout)
    summary["wall_s"] = wall
    return summary


def documents(vecs: np.ndarray[Any, np.dtype[np.float32]]) -> list[pb.Document]:
    return [
        pb.Document(
            id=f"doc-{i}",
            vectors=pb.Vectors(code_f32le=v.tobytes()),
            metadata={
                "lang": pb.MetadataValue(string_value=LANGS[i % 4]),
                "n": pb.MetadataValue(int_value=i),
            },
        )
        for i, v in enumerate(vecs)
    ]


def stream_rate(stub: Any, name: str, docs: list[pb.Document]) -> float:
    def reqs() -> Iterator[pb.UpsertStreamRequest]:
        for d in docs:
            yield pb.UpsertStreamRequest(collection=name, document=d)

    t = time.perf_counter()
    ok = sum(1 for r in stub.UpsertStream(reqs()) if r.status.code == 0)
    dt = time.perf_counter() - t
    assert ok == len(docs), f"{len(docs) - ok} stream items failed"
    return len(docs) / dt


def unary_rate(stub: Any, name: str, docs: list[pb.Document], batch: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(docs), batch):
        stub.Upsert(pb.UpsertRequest(collection=name, documents=docs[i : i + batch]), timeout=600)
    return len(docs) / (time.perf_counter() - t)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512": any(f.startswith("avx512") for f in flags),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384, help="code bits = rescore dims (MiniLM's 384)")
    ap.add_argument("--serve-fake", nargs=2, metavar=("DIM", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fake:
        serve_fake(int(args.serve_fake[0]), Path(args.serve_fake[1]))
        return
    n, dim = args.docs, args.dim
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as td:
        tmp = Path(td)
        vecs = vectors(n, dim)
        path = tmp / "docs.jsonl"
        write_jsonl(path, vecs)
        size_mb = path.stat().st_size / 1e6
        print(f"{n:,} JSONL lines, {dim}-dim vectors, {size_mb:.0f} MB; machine {machine()}", flush=True)
        bulk = store_bulk(tmp, vecs, dim)
        print(f"store bulk upsert: {bulk:,.0f} docs/s", flush=True)
        proc, address = start_server(dim, tmp / "srv")
        try:
            with grpc.insecure_channel(address) as ch:
                stub = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
                create(stub, "ingest")
                ing = cli_ingest(address, path, "ingest")
                print(
                    f"zembed ingest: {ing['stored_per_s']:,.0f} stored/s ({ing['wall_s']:.1f} s wall)",
                    flush=True,
                )
                assert ing["stored"] == n, ing
                create(stub, "ingest2")
                ing2 = cli_ingest(address, path, "ingest2", "--overwrite")
                print(f"zembed ingest --overwrite: {ing2['stored_per_s']:,.0f} stored/s", flush=True)
                create(stub, "ingest3")
                ing3 = cli_ingest(address, path, "ingest3", "--method", "unary")
                print(f"zembed ingest --method unary: {ing3['stored_per_s']:,.0f} stored/s", flush=True)
                rerun = cli_ingest(address, path, "ingest")
                print(f"re-run (all skipped): {rerun['wall_s']:.1f} s", flush=True)
                assert rerun["skipped"] == n, rerun
                docs = documents(vecs)
                rates: dict[str, float] = {}
                for rnd in range(2):  # interleaved, best of 2
                    for kind in ("stream", "unary-1000", "unary-64"):
                        name = f"{kind.replace('-', '')}{rnd}"
                        create(stub, name)
                        if kind == "stream":
                            r = stream_rate(stub, name, docs)
                        else:
                            r = unary_rate(stub, name, docs, int(kind.split("-")[1]))
                        rates[kind] = max(rates.get(kind, 0.0), r)
                        print(f"{kind} round {rnd}: {r:,.0f} docs/s", flush=True)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(60)
    ing_r, ing2_r, ing3_r = ing["stored_per_s"], ing2["stored_per_s"], ing3["stored_per_s"]
    s_r, u1k, u64 = rates["stream"], rates["unary-1000"], rates["unary-64"]
    rows = [
        ["store bulk upsert (in process, batches of 10,000)", bulk, "baseline", 1.0, ""],
        ["`zembed ingest` JSONL (resume check on)", ing_r, "store bulk", ing_r / bulk, ">= 0.8"],
        ["`zembed ingest --overwrite` JSONL", ing2_r, "store bulk", ing2_r / bulk, "(info)"],
        [
            "`zembed ingest --method unary` JSONL (resume check on)",
            ing3_r,
            "store bulk",
            ing3_r / bulk,
            ">= 0.8",
        ],
        ["UpsertStream, one stream, pre-built documents", s_r, "unary Upsert x 1000", s_r / u1k, ">= 1.0"],
        ["unary Upsert, 1,000 per call, sequential", u1k, "store bulk", u1k / bulk, "(info)"],
        ["unary Upsert, 64 per call, sequential", u64, "unary Upsert x 1000", u64 / u1k, "(info)"],
    ]
    print()
    print(table(["path", "docs/s", "against", "ratio", "bar"], rows))
    out = write_json(
        "ingest",
        {
            "docs": n,
            "dim": dim,
            "jsonl_mb": size_mb,
            "machine_info": machine(),
            "store_bulk_per_s": bulk,
            "ingest": ing,
            "ingest_overwrite": ing2,
            "ingest_unary": ing3,
            "rerun_all_skipped_s": rerun["wall_s"],
            "stream_per_s": rates["stream"],
            "unary_1000_per_s": rates["unary-1000"],
            "unary_64_per_s": rates["unary-64"],
        },
    )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
