"""Indexing throughput: `zembed index` on a local Ray instance with 2 CPUs against `zembed ingest` of the
same text into a server with the same model (the baseline; the bar is >= 0.8x).

The corpus is N real text passages (docstring paragraphs of the standard library) as JSONL, embedded by the
MiniLM export (`make .cache/models/all-minilm-l6-v2`, or --model).

Rows:
- `zembed ingest` -> server: `zembed serve` (defaults: one ONNX Runtime session on every core, the
  dynamic batcher, the store) in a subprocess, `zembed ingest FILE docs --create` as a person runs it;
  documents/s over its own wall time (process start included) and as it reports (stream time).
- `zembed index` -> shard store(s): `index()` in this process on `ray.init(num_cpus=2)` (Ray's start is
  timed on its own row, once: a cluster is started once for many jobs); documents/s over the whole call
  (planning, actor start-up and model loads, the pipeline, closing the stores) and over the pipeline
  alone (first unit submitted to last unit recorded).

The ratio is the indexer's whole-call documents/s over ingest's wall documents/s.

    .venv/bin/python bench/index_bench.py [--docs 20000] [--shards 1] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.path.dirname(__file__))

from common import CACHE, start_server, table, write_json  # noqa: E402


def stdlib_paragraphs(n: int) -> list[str]:
    """The first ``n`` distinct docstring paragraphs of the standard library (80 to 1,200 characters,
    files in sorted order; bench/passages.py's rule without the site-packages scan), cached."""
    cache = CACHE / f"index_bench_paragraphs_{n}.json"
    for old in sorted(CACHE.glob("index_bench_paragraphs_*.json")):
        if int(old.stem.rsplit("_", 1)[1]) >= n:  # a larger earlier draw: its first n
            texts: list[str] = json.loads(old.read_text(encoding="utf-8"))
            return texts[:n]
    from passages import _docstrings

    seen: set[str] = set()
    out: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "tests" in path.parts:
            continue
        for doc in _docstrings(path):
            for para in doc.split("\n\n"):
                text = " ".join(para.split())
                if 80 <= len(text) <= 1200 and text not in seen and "    " not in para:
                    seen.add(text)
                    out.append(text)
        if len(out) >= n:
            break
    CACHE.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out[:n]), encoding="utf-8")
    return out[:n]


def write_corpus(path: Path, n: int) -> int:
    texts = stdlib_paragraphs(n)
    while len(texts) < n:  # fewer distinct paragraphs than asked: repeat them under new ids
        texts += texts[: n - len(texts)]
    with path.open("w", encoding="utf-8") as f:
        for i, t in enumerate(texts[:n]):
            f.write(json.dumps({"id": f"doc-{i}", "text": t, "n": i}) + "\n")
    return sum(len(t) for t in texts[:n])


def ingest(model: Path, corpus: Path, tmp: Path) -> dict[str, Any]:
    proc, port, _ = start_server(model, tmp / "ingest-data")
    try:
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "zembed.service.cli", "ingest", str(corpus), "docs", "--create",
             "--address", f"127.0.0.1:{port}", "--json", "--no-progress"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(30)
    if out.returncode != 0:
        raise SystemExit(f"zembed ingest failed ({out.returncode}): {out.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(out.stdout)
    summary["wall_s"] = wall
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--model", type=Path, default=ROOT / ".cache" / "models" / "all-minilm-l6-v2")
    ap.add_argument("--threads-per-actor", type=int, default=1, help="ONNX Runtime threads per actor")
    ap.add_argument("--skip-ingest", action="store_true", help="only the indexer (no ratio)")
    args = ap.parse_args()
    if not (args.model / "manifest.json").is_file():
        raise SystemExit(f"{args.model}: no export there; run `make .cache/models/all-minilm-l6-v2`")

    import ray

    from zembed.indexer import IndexOptions, index

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still removes its data

    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="index-bench-", dir=CACHE))
    try:
        corpus = tmp / "corpus.jsonl"
        chars = write_corpus(corpus, args.docs)
        print(f"corpus: {args.docs:,} passages, {chars / args.docs:.0f} characters on average", flush=True)

        base: dict[str, Any] | None = None
        if not args.skip_ingest:
            base = ingest(args.model, corpus, tmp)
            print(f"ingest: {base}", flush=True)

        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        ray_start = time.perf_counter() - t
        try:
            rep = index(
                IndexOptions(
                    inputs=[str(corpus)],
                    model=str(args.model),
                    collection="docs",
                    out=str(tmp / "shards"),
                    shards=args.shards,
                    threads_per_actor=args.threads_per_actor,
                )
            )
        finally:
            ray.shutdown()
        r = rep.to_json()
        print(f"index: {json.dumps({k: v for k, v in r.items() if k != 'failures'})}", flush=True)
        assert rep.stored == args.docs and rep.failed == 0, r

        rows: list[list[Any]] = []
        if base is not None:
            rows.append(["zembed ingest -> server (wall)", base["stored"], round(base["wall_s"], 2),
                         round(base["stored"] / base["wall_s"], 1)])  # fmt: skip
            rows.append(["zembed ingest -> server (its stream time)", base["stored"], base["seconds"],
                         base["stored_per_s"]])  # fmt: skip
        rows.append(["Ray start (ray.init, once per cluster)", "", round(ray_start, 2), ""])
        rows.append([f"zembed index -> {args.shards} shard store(s) (whole call)", rep.stored,
                     round(rep.seconds, 2), round(rep.stored / rep.seconds, 1)])  # fmt: skip
        pipe = round(rep.stored / rep.pipeline_seconds, 1)
        rows.append([f"zembed index, pipeline only ({rep.actors} actors)", rep.stored,
                     round(rep.pipeline_seconds, 2), pipe])  # fmt: skip
        print()
        print(table(["run", "documents", "seconds", "documents/s"], rows))
        payload: dict[str, Any] = {
            "docs": args.docs,
            "shards": args.shards,
            "tokens": rep.tokens,
            "index": r,
            "ray_start_s": ray_start,
            "ingest": base,
            "uname": platform.release(),
        }
        if base is not None:
            wall_rate = base["stored"] / base["wall_s"]
            ratio = (rep.stored / rep.seconds) / wall_rate
            ratio_pipe = (rep.stored / rep.pipeline_seconds) / wall_rate
            payload |= {"ratio_whole_call": ratio, "ratio_pipeline": ratio_pipe}
            print(
                f"\nratio zembed index / zembed ingest: {ratio:.2f}x whole call, {ratio_pipe:.2f}x pipeline "
                f"only (bar >= 0.8x); {rep.tokens / rep.seconds:,.0f} tokens/s"
            )
        print(f"results: {write_json('index_bench', payload)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
