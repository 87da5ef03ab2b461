"""`make gpu-check`'s script, dry run: the same stages on CPU with a tiny model, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the export extra (torch, transformers) builds and exports the model")

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_a_full_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["dry_run"] is True and r["device"] == "cpu" and r["dtype"] == "float32"
    for stage in ("environment", "export", "torch_model", "parity", "throughput", "service"):
        assert "error" not in r[stage], (stage, r[stage].get("traceback"))
    env = r["environment"]
    assert env["ort_gpu"]["usable"] is False and env["ort_gpu"]["why_not"]  # says why, on CPU
    assert "CPUExecutionProvider" in env["onnxruntime"]["providers"]
    assert r["parity"]["ort_cpu_vs_torch"] >= 0.99999 and r["parity"]["passed"] is True
    rows = [row for row in r["throughput"]["rows"] if "batch" in row]
    assert [(row["batch"], row["seq"]) for row in rows] == [(1, 8), (4, 8), (1, 32), (4, 32)]
    for row in rows:
        assert row["torch_tokens_per_s"] > 0 and row["ort_embeddings_per_s"] > 0 and row["ort_vs_torch"] > 0
    assert r["service"]["provider"] == "CPUExecutionProvider"
    assert r["service"]["embeddings_per_s"] > 0 and r["service"]["grpc_vs_in_process_min_cosine"] > 0.99999
    assert "ort_gpu" in proc.stdout or "GPU usable: False" in proc.stdout
