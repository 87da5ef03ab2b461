"""Shared helpers for the benchmark scripts: timing, tables, JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CACHE = Path(__file__).parent / ".cache"


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": platform.processor() or platform.machine(), **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def start_server(
    model: Path, data: Path, *extra: str, http: bool = False
) -> tuple[subprocess.Popen[str], int, int | None]:
    """`zembed serve` in a subprocess on free ports; returns it, its gRPC port and (``http``) its
    HTTP port, once it says it is serving."""
    cmd = [sys.executable, "-m", "zembed.service.cli", "serve", "--model", str(model), "--data", str(data)]
    cmd += ["--port", "0", "--log-level", "WARNING", "--drain-delay-s", "0", *extra]
    if http:
        cmd += ["--http-port", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    grpc_port = 0
    for line in proc.stdout:
        if line.startswith("zembed: serving on port"):
            grpc_port = int(line.split()[-1])
            if not http:
                return proc, grpc_port, None
        if line.startswith("zembed: HTTP API on port"):
            return proc, grpc_port, int(line.split()[-1])
    raise SystemExit("server did not start")
