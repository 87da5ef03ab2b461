"""Ingest benchmark: `zembed ingest` of N JSONL lines with precomputed vectors, against the store's own
bulk upsert of the same documents; UpsertStream against unary Upsert for the same documents; and text
ingest with MiniLM against the embedding benchmark's rate (the runtime embedding the same texts in
process, as bench/embed_throughput.py measures it).

The vector server runs in a subprocess: the real server (edge, servicers, engine, LMDB) around the
tests' fake embedder (tests/fakes.py), which documents with vectors never reach. The text server is
`zembed serve` with the exported all-MiniLM-L6-v2 (`make .cache/models/all-minilm-l6-v2/manifest.json`).
`zembed ingest` runs as a subprocess, exactly as a person would run it.

Rows (each measured once per round, rounds interleaved; the table gives the median round's rate and
the median of the per-round ratios, so load from other processes hits both sides of a ratio alike):
- store bulk: ``Collection.upsert`` and ``Collection.upsert_arrays`` (ids as a numpy array) in
  batches of 10,000 (sync on), in process; the baseline of each round is the faster of the two.
- `zembed ingest` (JSONL, vectors): stored/s from its summary (parse + resume check + stream +
  server + store), the same with `--overwrite` (no GetDocuments check), and with `--method unary`.
- UpsertStream vs unary Upsert: the same pre-built documents (packed float32 vectors, metadata),
  from one Python client, into fresh collections: one stream of messages of 1,000 documents (the
  bulk form) vs sequential Upsert calls of 1,000; the one-document-per-message form (info); and the
  same documents as DocumentColumns messages of 1,000 (info).
- text: `zembed ingest` of N passages (text, no vectors) into the MiniLM server vs the runtime's
  own embedding rate (EmbeddingModel.embed, batches of 32 sorted by length) on the same texts.

    .venv/bin/python bench/ingest_bench.py [--docs 100000] [--dim 384] [--rounds 3] [--texts 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
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
STORE_CPU: list[float] = []  # CPU seconds of each store bulk run


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


def store_bulk(
    tmp: Path, vecs: np.ndarray[Any, np.dtype[np.float32]], dim: int, arrays: bool = False
) -> float:
    store = Store(tmp / "baseline")
    try:
        store.create_collection(
            "bulk",
            CollectionConfig(
                code_bits=dim, rescore_dims=dim, calibration=Calibration.NONE, filterable=("lang",)
            ),
        )
        coll = store.collection("bulk")
        c0 = time.process_time()
        t = time.perf_counter()
        for i in range(0, len(vecs), 10_000):
            chunk = range(i, min(i + 10_000, len(vecs)))
            ids = [f"doc-{j}" for j in chunk]
            meta = [{"lang": LANGS[j % 4], "n": j} for j in chunk]
            if arrays:
                coll.upsert_arrays(np.array(ids), vecs[chunk.start : chunk.stop], metadata=meta)
            else:
                coll.upsert(ids, vecs[chunk.start : chunk.stop], None, meta)
        rate = len(vecs) / (time.perf_counter() - t)
        STORE_CPU.append(time.process_time() - c0)
        return rate
    finally:
        store.close()
        shutil.rmtree(tmp / "baseline", ignore_errors=True)


def create(stub: Any, name: str) -> None:
    # calibration off on both sides: its one-off cost at the calibration sample is the store's, not ingest's
    config = pb.CollectionConfig(calibration="none", filterable=["lang"])
    stub.CreateCollection(pb.CreateCollectionRequest(name=name, config=config))


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) a running process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cli_ingest(address: str, path: Path, collection: str, *extra: str) -> dict[str, Any]:
    c0 = children_cpu()  # the ingest subprocess's CPU once it has exited (the server has not)
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
    summary["client_cpu_s"] = children_cpu() - c0
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


def column_messages(
    vecs: np.ndarray[Any, np.dtype[np.float32]], per_message: int
) -> list[pb.DocumentColumns]:
    out = []
    for a in range(0, len(vecs), per_message):
        b = min(a + per_message, len(vecs))
        meta = [
            json.dumps({"lang": LANGS[i % 4], "n": i}, separators=(",", ":")).encode() for i in range(a, b)
        ]
        out.append(
            pb.DocumentColumns(
                ids=[f"doc-{i}" for i in range(a, b)], code_f32le=vecs[a:b].tobytes(), metadata_json=meta
            )
        )
    return out


def columns_rate(stub: Any, name: str, msgs: list[pb.DocumentColumns]) -> float:
    n = sum(len(c.ids) for c in msgs)
    t = time.perf_counter()
    ok = sum(
        r.stored for r in stub.UpsertStream(pb.UpsertStreamRequest(collection=name, columns=c) for c in msgs)
    )
    dt = time.perf_counter() - t
    assert ok == n, f"{n - ok} stream items failed"
    return n / dt


def stream_rate(stub: Any, name: str, docs: list[pb.Document], per_message: int) -> float:
    def reqs() -> Iterator[pb.UpsertStreamRequest]:
        if per_message == 1:  # the single-document form
            for d in docs:
                yield pb.UpsertStreamRequest(collection=name, document=d)
            return
        for i in range(0, len(docs), per_message):
            yield pb.UpsertStreamRequest(collection=name, documents=docs[i : i + per_message])

    t = time.perf_counter()
    ok = 0
    for r in stub.UpsertStream(reqs()):
        ok += r.stored
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


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def drop(stub: Any, name: str) -> None:
    stub.DeleteCollection(pb.DeleteCollectionRequest(name=name))


def vector_rounds(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n, dim = args.docs, args.dim
    vecs = vectors(n, dim)
    path = tmp / "docs.jsonl"
    write_jsonl(path, vecs)
    size_mb = path.stat().st_size / 1e6
    print(f"{n:,} JSONL lines, {dim}-dim vectors, {size_mb:.0f} MB; machine {machine()}", flush=True)
    docs = documents(vecs)
    col_msgs = column_messages(vecs, 1000)
    single = docs[: args.single_docs]
    rates: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    # (client, server) CPU us per document
    cpu: dict[str, list[tuple[float, float]]] = {"store": [], "store-arrays": []}
    proc, address = start_server(dim, tmp / "srv")
    try:
        with grpc.insecure_channel(address) as ch:
            stub = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]

            def stream_1000(name: str) -> float:
                return stream_rate(stub, name, docs, 1000)

            def unary_1000(name: str) -> float:
                return unary_rate(stub, name, docs, 1000)

            def stream_1(name: str) -> float:
                return stream_rate(stub, name, single, 1)

            def stream_columns(name: str) -> float:
                return columns_rate(stub, name, col_msgs)

            for rnd in range(args.rounds):
                got: dict[str, float] = {"store": store_bulk(tmp, vecs, dim)}
                cpu["store"].append((STORE_CPU[-1] * 1e6 / n, 0.0))
                got["store-arrays"] = store_bulk(tmp, vecs, dim, arrays=True)
                cpu["store-arrays"].append((STORE_CPU[-1] * 1e6 / n, 0.0))
                got["store-best"] = max(got["store"], got["store-arrays"])
                for kind, extra in (
                    ("ingest", ()),
                    ("ingest-overwrite", ("--overwrite",)),
                    ("ingest-unary", ("--method", "unary")),
                ):
                    create(stub, "ing")
                    s0 = proc_cpu(proc.pid)
                    summary = cli_ingest(address, path, "ing", *extra)
                    server_s = proc_cpu(proc.pid) - s0
                    assert summary["stored"] == n, summary
                    got[kind] = summary["stored_per_s"]
                    cpu.setdefault(kind, []).append((summary["client_cpu_s"] * 1e6 / n, server_s * 1e6 / n))
                    if kind == "ingest" and rnd == 0:
                        rerun = cli_ingest(address, path, "ing")
                        assert rerun["skipped"] == n, rerun
                        got["rerun_s"] = rerun["wall_s"]
                    drop(stub, "ing")
                for kind, fn in (
                    ("stream-1000", stream_1000),
                    ("unary-1000", unary_1000),
                    ("stream-1", stream_1),
                    ("stream-columns", stream_columns),
                ):
                    create(stub, "pre")
                    s0, c0 = proc_cpu(proc.pid), time.process_time()
                    got[kind] = fn("pre")
                    m = args.single_docs if kind == "stream-1" else n
                    cpu.setdefault(kind, []).append(
                        ((time.process_time() - c0) * 1e6 / m, (proc_cpu(proc.pid) - s0) * 1e6 / m)
                    )
                    drop(stub, "pre")
                for k, v in got.items():
                    rates.setdefault(k, []).append(v)
                for key, num, den in (
                    ("ingest/store", "ingest", "store-best"),
                    ("ingest/store-upsert", "ingest", "store"),
                    ("ingest-overwrite/store", "ingest-overwrite", "store-best"),
                    ("ingest-unary/store", "ingest-unary", "store-best"),
                    ("stream/unary", "stream-1000", "unary-1000"),
                    ("unary/store", "unary-1000", "store-best"),
                    ("stream-1/unary", "stream-1", "unary-1000"),
                    ("stream-columns/unary", "stream-columns", "unary-1000"),
                    ("stream-columns/store", "stream-columns", "store-best"),
                    ("store-arrays/store", "store-arrays", "store"),
                ):
                    ratios.setdefault(key, []).append(got[num] / got[den])
                print(f"round {rnd}: " + ", ".join(f"{k} {v:,.1f}" for k, v in got.items()), flush=True)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(60)
    return {"docs": n, "dim": dim, "jsonl_mb": size_mb, "rates": rates, "ratios": ratios, "cpu_us": cpu}


def stdlib_passages(n: int) -> list[str]:
    """``n`` distinct docstring paragraphs of the standard library (bench/passages.py's kind of text,
    without scanning every installed package), in a seeded order."""
    import ast
    import random
    import sysconfig

    found: dict[str, None] = {}
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if len(found) >= 3 * n:
            break
        if "test" in path.parts or "tests" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError, RecursionError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                for para in (ast.get_docstring(node) or "").split("\n\n"):
                    text = " ".join(para.split())
                    if 80 <= len(text) <= 1200 and "    " not in para:
                        found[text] = None
    out = list(found)
    random.Random(3).shuffle(out)
    return out[:n]


def text_rounds(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """`zembed ingest` of texts into the MiniLM server vs the runtime's own rate, interleaved."""
    from common import start_server as serve

    from zembed.service.runtime.model import EmbeddingModel

    model_dir = ROOT / ".cache" / "models" / "all-minilm-l6-v2"
    if not (model_dir / "manifest.json").exists():
        raise SystemExit(
            f"no MiniLM export at {model_dir}: make .cache/models/all-minilm-l6-v2/manifest.json"
        )
    texts = stdlib_passages(args.texts)
    path = tmp / "texts.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    model = EmbeddingModel(model_dir)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))

    def runtime_rate() -> float:
        t = time.perf_counter()
        for s in range(0, len(order), 32):  # as bench/embed_throughput.py: batches of 32 by length
            model.embed([texts[i] for i in order[s : s + 32]])
        return len(texts) / (time.perf_counter() - t)

    proc, port, _ = serve(model_dir, tmp / "text-srv")
    address = f"127.0.0.1:{port}"
    rates: dict[str, list[float]] = {"runtime": [], "ingest-text": []}
    try:
        with grpc.insecure_channel(address) as ch:
            stub = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
            runtime_rate()  # warm-up
            for rnd in range(args.rounds):
                rates["runtime"].append(runtime_rate())
                config = pb.CollectionConfig(calibration="none")
                stub.CreateCollection(pb.CreateCollectionRequest(name="texts", config=config))
                summary = cli_ingest(address, path, "texts", "--batch", "256")
                assert summary["stored"] == len(texts), summary
                rates["ingest-text"].append(summary["stored_per_s"])
                drop(stub, "texts")
                print(
                    f"text round {rnd}: runtime {rates['runtime'][-1]:,.1f}/s, "
                    f"ingest {rates['ingest-text'][-1]:,.1f}/s",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(60)
    ratios = [i / r for i, r in zip(rates["ingest-text"], rates["runtime"], strict=True)]
    return {"texts": len(texts), "rates": rates, "ratios": {"ingest-text/runtime": ratios}}


def cpu_table(cpu: dict[str, list[tuple[float, float]]]) -> str:
    """CPU per document (medians over rounds), a measure the other processes' load does not move:
    `all` = client + server against the store's own; `2 cores` = the busier side against the store's
    (the rate ratio a machine with two free cores would give when client and server overlap)."""
    # the cheaper store path is the baseline
    store = min(median([c for c, _ in cpu[k]]) for k in ("store", "store-arrays") if k in cpu)
    rows = []
    for kind, vals in cpu.items():
        client, server = median([c for c, _ in vals]), median([s for _, s in vals])
        total = client + server
        rows.append([kind, client, server, total, store / total, store / max(client, server)])
    head = ["path", "client CPU us/doc", "server CPU us/doc", "all", "store/all", "store/busier side"]
    return (
        "\nCPU per document (median over rounds; the cheaper store row is the baseline, in process)\n"
        + table(head, rows)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000, help="JSONL lines with vectors (0: skip)")
    ap.add_argument("--dim", type=int, default=384, help="code bits = rescore dims (MiniLM's 384)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--single-docs", type=int, default=20_000, help="documents for the one-per-message row")
    ap.add_argument("--texts", type=int, default=2000, help="passages for the MiniLM text rows (0: skip)")
    ap.add_argument("--serve-fake", nargs=2, metavar=("DIM", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fake:
        serve_fake(int(args.serve_fake[0]), Path(args.serve_fake[1]))
        return
    (ROOT / "bench" / ".cache").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-", dir=ROOT / "bench" / ".cache") as td:
        tmp = Path(td)
        vec = vector_rounds(args, tmp) if args.docs else None
        txt = text_rounds(args, tmp) if args.texts else None
    rows: list[list[Any]] = []
    if vec is not None:
        r, q = vec["rates"], vec["ratios"]
        rows += [
            ["store bulk upsert (in process, batches of 10,000)", median(r["store"]), "", "", ""],
            ["store bulk upsert_arrays (in process, batches of 10,000)", median(r["store-arrays"]),
             "store upsert", median(q["store-arrays/store"]), "(info)"],
            ["store bulk: the faster of the two, per round", median(r["store-best"]), "baseline", 1.0, ""],
            ["`zembed ingest` JSONL (stream, resume check on)", median(r["ingest"]), "store bulk (faster)",
             median(q["ingest/store"]), ">= 0.8"],
            ["`zembed ingest` JSONL, against store upsert only", median(r["ingest"]), "store upsert",
             median(q["ingest/store-upsert"]), "(info)"],
            ["`zembed ingest --overwrite` JSONL", median(r["ingest-overwrite"]), "store bulk",
             median(q["ingest-overwrite/store"]), "(info)"],
            ["`zembed ingest --method unary` JSONL", median(r["ingest-unary"]), "store bulk",
             median(q["ingest-unary/store"]), "(info)"],
            ["UpsertStream, 1,000 documents per message", median(r["stream-1000"]), "unary Upsert x 1000",
             median(q["stream/unary"]), ">= 1.0"],
            ["unary Upsert, 1,000 per call, sequential", median(r["unary-1000"]), "store bulk",
             median(q["unary/store"]), "(info)"],
            [f"UpsertStream, 1 document per message ({args.single_docs:,} docs)", median(r["stream-1"]),
             "unary Upsert x 1000", median(q["stream-1/unary"]), "(info)"],
            ["UpsertStream, DocumentColumns of 1,000 (pre-built)", median(r["stream-columns"]),
             "unary Upsert x 1000", median(q["stream-columns/unary"]), "(info)"],
            ["UpsertStream, DocumentColumns of 1,000 (pre-built)", median(r["stream-columns"]),
             "store bulk (faster)", median(q["stream-columns/store"]), "(info)"],
            ["re-run, every line already stored (seconds)", median(r["rerun_s"]), "", "", ""],
        ]  # fmt: skip
    if txt is not None:
        r, q = txt["rates"], txt["ratios"]
        rows += [
            ["MiniLM runtime embed (in process, batches of 32)", median(r["runtime"]), "baseline", 1.0, ""],
            ["`zembed ingest` JSONL text (MiniLM server)", median(r["ingest-text"]), "runtime embed",
             median(q["ingest-text/runtime"]), "(reported)"],
        ]  # fmt: skip
    print()
    print(f"median of {args.rounds} interleaved rounds; machine {machine()}; load {os.getloadavg()}")
    print(table(["path", "docs/s", "against", "ratio", "bar"], rows))
    if vec is not None:
        for key in ("ingest/store", "ingest/store-upsert", "ingest-overwrite/store", "stream/unary"):
            per = ", ".join(f"{x:.3f}" for x in vec["ratios"][key])
            print(f"per-round {key}: {per} (median {median(vec['ratios'][key]):.3f})")
    if vec is not None:
        print(cpu_table(vec["cpu_us"]))
    out = write_json(
        "ingest", {"machine_info": machine(), "rounds": args.rounds, "vectors": vec, "text": txt}
    )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
