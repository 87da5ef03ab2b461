"""Latency modes (issue 12): FAST calls under a background load, with and without queue priority; and
what the SLOW / high search sizes buy in recall and cost.

Part 1, the embedding queue (MiniLM on CPU, one `zembed serve` subprocess, gRPC on loopback). A probe
sends one short query per call (``LATENCY_FAST``), one call at a time with a short pause between
calls, and records each call's latency. Three settings, interleaved within each round (the order
rotated every round), on the same server:

- **idle**: the probe alone;
- **no priority** (the baseline, today's single FIFO queue): a background load of CLIENTS callers,
  each sending PER_CALL passages per call back to back, in the *same* lane as the probe (FAST);
- **priority**: the same load sent as ``LATENCY_SLOW``: the probe's inputs are taken before the
  queued load and the load batches for throughput.

The table: probe p50/p99 (ms) per setting, the background's throughput (texts/s) and the ratio of
the probe's p50/p99 with priority to without (lower is better). A FAST background call the queue
refuses (RESOURCE_EXHAUSTED) is retried after 50 ms and counted.

Part 2, search sizes (in process, one store, no model): the synthetic anisotropic set of
bench/recall_multilingual.py at two sizes; recall@10 against exact search and ms per query for the
defaults (latency_mode low: 40 float reads, 400 candidates at top_k 10) and ``high_recall``
(latency_mode high: 160 / 1600), settings interleaved batch by batch.

Writes bench/results/latency_modes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import CACHE, start_server, table, write_json  # noqa: E402
from embed_cache import minilm_dir  # noqa: E402
from passages import passages  # noqa: E402
from recall_multilingual import synthetic  # noqa: E402

from zembed.store import Calibration, CollectionConfig, RescoreDtype, Store  # noqa: E402
from zembed.store.params import SearchParams  # noqa: E402
from zembed.v1 import zembed_pb2 as pb  # noqa: E402
from zembed.v1 import zembed_pb2_grpc as pb_grpc  # noqa: E402

IDLE, NO_PRIORITY, PRIORITY = (
    "idle (probe alone)",
    "load, no priority (load FAST)",
    "load, priority (load SLOW)",
)


def stub(port: int) -> Any:
    return pb_grpc.EmbeddingServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))  # type: ignore[no-untyped-call]


class Load:
    """CLIENTS threads sending PER_CALL passages per Embed call back to back in ``latency``."""

    def __init__(self, port: int, texts: list[str], clients: int, per_call: int, latency: pb.Latency) -> None:
        self.stop = threading.Event()
        self.done = 0
        self.refused = 0
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(port, texts, k, per_call, latency))
            for k in range(clients)
        ]

    def _run(self, port: int, texts: list[str], k: int, per_call: int, latency: pb.Latency) -> None:
        s = stub(port)
        i = k * per_call
        while not self.stop.is_set():
            chunk = [texts[(i + j) % len(texts)] for j in range(per_call)]
            i += per_call * len(self.threads)
            try:
                s.Embed(pb.EmbedRequest(inputs=chunk, input_type=pb.INPUT_TYPE_DOCUMENT, latency=latency))
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                with self.lock:
                    self.refused += 1
                time.sleep(0.05)
                continue
            with self.lock:
                self.done += per_call

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)


def probe(port: int, queries: list[str], n: int, pause_s: float) -> tuple[list[float], int]:
    """Latencies (s) of ``n`` sequential FAST calls of one query each; refusals are retried, counted."""
    s = stub(port)
    out: list[float] = []
    refused = 0
    for i in range(n):
        req = pb.EmbedRequest(
            inputs=[queries[i % len(queries)]], input_type=pb.INPUT_TYPE_QUERY, latency=pb.LATENCY_FAST
        )
        while True:
            t = time.perf_counter()
            try:
                s.Embed(req)
                out.append(time.perf_counter() - t)
                break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused += 1
                time.sleep(0.05)
        time.sleep(pause_s)
    return out, refused


def cached_passages(n: int, seed: int) -> list[str]:
    """``passages(n, seed)``, kept under bench/.cache: its walk over every installed source file took
    9 minutes on this loaded 2-core VM."""
    path = CACHE / f"latency_modes_passages_{n}_{seed}.json"
    if path.exists():
        found: list[str] = json.loads(path.read_text())
        return found
    found = passages(n, seed=seed)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found))
    return found


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def queue_part(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from zembed.export.onnx_export import ExportOptions, export

    tmp = Path(tempfile.mkdtemp(prefix="zembed-latency-"))
    model = args.model
    if not (model / "manifest.json").exists():  # not exported yet (`make serve` exports it there)
        model = tmp / "minilm"
        export(Path(minilm_dir()), model, ExportOptions(parity=False))
    found = cached_passages(600, 11)
    texts = [t[: args.chars] for t in found[:400]]
    queries = [" ".join(t.split()[:8]) for t in found[400:]]
    proc, port, _ = start_server(model, tmp / "data")
    lat: dict[str, list[float]] = {k: [] for k in (IDLE, NO_PRIORITY, PRIORITY)}
    rates: dict[str, list[float]] = {k: [] for k in (NO_PRIORITY, PRIORITY)}
    refused: dict[str, int] = dict.fromkeys(lat, 0)
    load_refused: dict[str, int] = dict.fromkeys(rates, 0)
    try:
        probe(port, queries, 10, 0.0)  # warm-up
        with Load(port, texts, 2, args.per_call, pb.LATENCY_FAST):
            time.sleep(2)
        order = [IDLE, NO_PRIORITY, PRIORITY]
        for r in range(args.rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                if name == IDLE:
                    xs, n_ref = probe(port, queries, args.probes, args.pause_s)
                else:
                    lane = pb.LATENCY_FAST if name == NO_PRIORITY else pb.LATENCY_SLOW
                    with Load(port, texts, args.clients, args.per_call, lane) as load:
                        time.sleep(args.warm_s)  # the queue fills
                        before, t = load.done, time.perf_counter()
                        xs, n_ref = probe(port, queries, args.probes, args.pause_s)
                        rates[name].append((load.done - before) / (time.perf_counter() - t))
                    load_refused[name] += load.refused
                lat[name] += xs
                refused[name] += n_ref
                print(f"round {r + 1} {name}: p50 {pct(xs, 50):.0f} ms, p99 {pct(xs, 99):.0f} ms", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout:
            proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)
    base50, base99 = pct(lat[NO_PRIORITY], 50), pct(lat[NO_PRIORITY], 99)
    rows = []
    out: dict[str, Any] = {}
    for name, xs in lat.items():
        p50, p99 = pct(xs, 50), pct(xs, 99)
        rate = statistics.median(rates[name]) if name in rates else None
        rows.append(
            [
                name,
                len(xs),
                f"{p50:,.0f}",
                f"{p99:,.0f}",
                refused[name],
                "-" if rate is None else f"{rate:,.0f}",
                load_refused.get(name, "-"),
                f"{p50 / base50:.2f}",
                f"{p99 / base99:.2f}",
            ]
        )
        out[name] = {
            "p50_ms": p50,
            "p99_ms": p99,
            "n": len(xs),
            "probe_refused": refused[name],
            "load_texts_per_s": rate,
            "load_refused": load_refused.get(name),
        }
    print(
        f"\nFAST probe (1 query of ~8 words per call, {args.pause_s * 1000:.0f} ms pause) under "
        f"{args.clients} background callers x {args.per_call} passages of <= {args.chars} chars; "
        f"{args.rounds} interleaved rounds x {args.probes} probes (MiniLM, CPU)\n"
    )
    print(
        table(
            [
                "setting",
                "probes",
                "p50 ms",
                "p99 ms",
                "probe refused",
                "load texts/s",
                "load refused",
                "p50 vs no priority",
                "p99 vs no priority",
            ],
            rows,
        )
    )
    return out


def search_part(sizes: list[int], nq: int) -> dict[str, Any]:
    settings = {
        "low (defaults: 40 reads, 400 cand.)": SearchParams(top_k=10),
        "high (high_recall: 160 reads, 1600 cand.)": SearchParams(top_k=10, high_recall=True),
    }
    docs, queries = synthetic(max(sizes), nq)
    root = Path(tempfile.mkdtemp(prefix="zembed-latency-search-"))
    out: dict[str, Any] = {}
    rows = []
    try:
        with Store(root / "s", map_size=4 << 30) as s:
            for n in sizes:
                cfg = CollectionConfig(
                    code_bits=docs.shape[1],
                    rescore_dims=docs.shape[1],
                    rescore_dtype=RescoreDtype.FLOAT16,
                    calibration=Calibration.AUTO,
                )
                s.create_collection(f"c{n}", cfg)
                c = s.collection(f"c{n}")
                for start in range(0, n, 100):
                    stop = min(start + 100, n)
                    c.upsert([f"d{i}" for i in range(start, stop)], docs[start:stop])
                truth = [{h.id for h in hs} for hs in c.exact_search(queries, top_k=10)]
                hits: dict[str, list[Any]] = {k: [] for k in settings}
                secs = dict.fromkeys(settings, 0.0)
                for b in range(0, nq, 25):  # interleaved batch by batch
                    for name, p in settings.items():
                        t = time.perf_counter()
                        for q in queries[b : b + 25]:
                            hits[name].append(c.search(q, q, p)[0])
                        secs[name] += time.perf_counter() - t
                base = secs[next(iter(settings))]
                for name, p in settings.items():
                    plan = c.plan(p)
                    recall = float(
                        np.mean([len({h.id for h in hs} & truth[i]) / 10 for i, hs in enumerate(hits[name])])
                    )
                    ms = secs[name] * 1000 / nq
                    rows.append(
                        [
                            f"{n:,}",
                            name,
                            plan.shortlist,
                            plan.float_reads,
                            f"{recall:.3f}",
                            f"{ms:.2f}",
                            f"{secs[name] / base:.2f}",
                        ]
                    )
                    out[f"{n}/{name}"] = {
                        "recall10": recall,
                        "ms": ms,
                        "shortlist": plan.shortlist,
                        "float_reads": plan.float_reads,
                    }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nSearch sizes: synthetic anisotropic set (384 dims), {nq} queries, top_k 10, one thread\n")
    print(
        table(
            [
                "documents",
                "latency_mode",
                "shortlist",
                "float reads",
                "recall@10 vs exact",
                "ms/query",
                "time vs low",
            ],
            rows,
        )
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        type=Path,
        default=ROOT / ".cache/models/all-minilm-l6-v2",
        help="an exported MiniLM (default: make serve's; exported to a temp dir when missing)",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--probes", type=int, default=20, help="FAST calls per setting and round")
    ap.add_argument("--pause-s", type=float, default=0.05)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--per-call", type=int, default=16)
    ap.add_argument("--chars", type=int, default=300, help="background passages cut to this many characters")
    ap.add_argument("--warm-s", type=float, default=2.0)
    ap.add_argument("--search-sizes", default="2400,19200")
    ap.add_argument("--search-queries", type=int, default=300)
    ap.add_argument("--skip-queue", action="store_true")
    ap.add_argument("--skip-search", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs")
    payload: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    }
    if not args.skip_search:
        payload["search"] = search_part([int(v) for v in args.search_sizes.split(",")], args.search_queries)
    if not args.skip_queue:
        payload["queue"] = queue_part(args)
    print(f"wrote {write_json('latency_modes', payload)}")


if __name__ == "__main__":
    main()
