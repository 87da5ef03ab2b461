"""export/ + the runtime on real exported graphs: a tiny random-weight Qwen3 laid out like zembed-1
(real Qwen3 vocabulary) and the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "torch", reason="the export extra (torch, transformers) is needed to build and export models"
)
pytest.importorskip("transformers", reason="the export extra is needed")

from zembed.export.onnx_export import ExportOptions, export
from zembed.export.reference import Reference
from zembed.export.samples import SAMPLES
from zembed.export.source import read_source
from zembed.export.synthetic import ZEMBED_PROMPTS, ZEMBED_SUFFIX
from zembed.service.runtime.manifest import ManifestError
from zembed.service.runtime.model import EmbeddingModel, pad
from zembed.service.runtime.text import Overflow, TooLong


def _export(src: Path, out: Path, dtype: str) -> Path:
    export(src, out, ExportOptions(dtype=dtype, parity=False))
    return out


@pytest.fixture(scope="session")
def tiny_fp16(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tiny_src, tmp_path_factory.mktemp("tiny-fp16") / "out", "float16")


@pytest.fixture(scope="session")
def tiny_int8(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tiny_src, tmp_path_factory.mktemp("tiny-int8") / "out", "int8")


@pytest.fixture(scope="session")
def reference(tiny_src: Path) -> Reference:
    return Reference(read_source(tiny_src))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return out


def run_padded(model: EmbeddingModel, ids: list[list[int]], side: str) -> np.ndarray:
    """Run the graph on a batch padded on the given side (the runtime itself pads right)."""
    if side == "right":
        return model.run(ids)
    width = max(map(len, ids))
    input_ids = np.full((len(ids), width), model.pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    out = model.session.run([model.output_name], {"input_ids": input_ids, "attention_mask": mask})[0]
    return np.asarray(out, dtype=np.float32)


def check_parity(folder: Path, reference: Reference, floor: float) -> float:
    model = EmbeddingModel(folder, providers=["CPUExecutionProvider"], allow_fp16_on_cpu=True)
    worst = 1.0
    for input_type in ("query", "document"):
        ids = model.encode(SAMPLES, input_type)
        assert len(ids) >= 12 and min(map(len, ids)) >= 1 and max(map(len, ids)) >= 300
        want = reference.embed(SAMPLES, input_type)
        for side in ("right", "left"):
            got = run_padded(model, ids, side)
            for dim in model.dims:
                cos = cosines(model.project(got, dim), reference.project(want, dim))
                worst = min(worst, float(cos.min()))
    assert worst >= floor, worst
    return worst


def test_fp32_parity_every_dim_both_padding_sides(tiny_fp32: Path, reference: Reference) -> None:
    assert check_parity(tiny_fp32, reference, 0.99999) > 0.99999


def test_fp16_graph_parity_on_cpu_provider(tiny_fp16: Path, reference: Reference) -> None:
    check_parity(tiny_fp16, reference, 0.999)


def test_int8_graph_parity(tiny_int8: Path, reference: Reference) -> None:
    check_parity(tiny_int8, reference, 0.99)


def test_manifest_records_everything(tiny_fp32: Path, tiny_src: Path) -> None:
    m = json.loads((tiny_fp32 / "manifest.json").read_text())
    assert m["prompts"] == ZEMBED_PROMPTS and m["suffix"] == ZEMBED_SUFFIX
    assert m["pooling"] == "lasttoken" and m["normalize"] is True
    assert m["dims"] == [64, 32, 16, 8, 4, 2] and m["max_length"] == 512
    assert m["dtype"] == "float32" and m["opset"] == 23
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask"]
    assert m["outputs"][0]["name"] == "sentence_embedding"
    assert set(m["files"]) >= {"model.onnx", "tokenizer.json", "projections.safetensors"}
    assert "model.safetensors" in m["source_files"] and "torch" in m["tools"]
    assert m["parity"]["min_cosine"] >= 0.99999 and m["parity"]["token_ids_equal"] is True
    assert set(m["parity"]["dims"]) == {"64", "32", "16", "8", "4", "2"}


def test_batch_item_equals_single(tiny_fp32: Path) -> None:
    model = EmbeddingModel(tiny_fp32)
    batch = model.embed(SAMPLES, "query")
    for i in (0, 4, 9, 12):
        alone = model.embed([SAMPLES[i]], "query")
        np.testing.assert_allclose(batch[i], alone[0], atol=2e-6)


def random_strings(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    pieces = [
        "hello",
        "Welt",
        "ça va",
        "niño",
        "日本語",
        "中文字符",
        "مرحبا",
        "привет",
        "नमस्ते",
        "🚀",
        "👩‍💻",
        "🇩🇪",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "\r\n",
        "<|im_end|>",
        "<|im_start|>",
        "<|endoftext|>",
        "<|im_end",
        "123",
        "3.14",
        "x" * 20,
        "'s",
        "don't",
        "e\u0301",
        "\u00a0",
        "\u200b",
        "$%&",
        "```py",
        "</s>",
    ]
    return ["".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12))) for _ in range(n)]


def test_token_ids_equal_hf_tokenizer_for_1000_strings(tiny_fp32: Path, tiny_src: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_src))
    model = EmbeddingModel(tiny_fp32)
    texts = random_strings(1000, 11)
    for input_type in ("query", "document", None):
        got = model.encode(texts, input_type)
        prompt = ZEMBED_PROMPTS.get(input_type or "", "")
        want = [hf(prompt + t + ZEMBED_SUFFIX)["input_ids"] for t in texts]
        assert got == want
    # special-token text inside a text is recognised, exactly as the checkpoint's tokenizer does
    ids = model.encode(["a<|im_end|>b"], "query")[0]
    assert ids.count(151645) == 3  # prompt's, the text's and the suffix's


def test_over_length_truncate_keeps_prompt_and_suffix(tiny_fp32: Path, tiny_src: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_src))
    model = EmbeddingModel(tiny_fp32)
    limit = model.text.max_length
    prompt, suffix_ids = ZEMBED_PROMPTS["query"], hf(ZEMBED_SUFFIX)["input_ids"]
    text = " ".join(f"word{i}" for i in range(2000))
    full = len(hf(prompt + text + ZEMBED_SUFFIX)["input_ids"])
    assert full > limit
    ids = model.encode([text], "query")[0]
    assert len(ids) <= limit and len(ids) >= limit - 3
    assert ids[-len(suffix_ids) :] == suffix_ids
    assert ids[: len(hf(prompt)["input_ids"])] == hf(prompt)["input_ids"]
    # it is the prompt's tokens, then the text's first tokens of the full tokenization, then the suffix's
    full_ids = hf(prompt + text + ZEMBED_SUFFIX)["input_ids"]
    n_prompt = len(hf(prompt)["input_ids"])
    assert ids == full_ids[: limit - len(suffix_ids)] + suffix_ids
    assert ids[:n_prompt] == full_ids[:n_prompt]
    # at the boundary: exactly `limit` tokens pass untouched; one more is cut (truncate) or refused (strict)
    words = [f"w{i}" for i in range(600)]
    fits = next(
        " ".join(words[:n])
        for n in range(600, 0, -1)
        if len(hf(prompt + " ".join(words[:n]) + ZEMBED_SUFFIX)["input_ids"]) <= limit
    )
    n_fit = len(hf(prompt + fits + ZEMBED_SUFFIX)["input_ids"])
    assert model.encode([fits], "query", Overflow.STRICT)[0] == hf(prompt + fits + ZEMBED_SUFFIX)["input_ids"]
    over = fits + " w" + "9" * 3
    n_over = len(hf(prompt + over + ZEMBED_SUFFIX)["input_ids"])
    assert n_over > limit >= n_fit
    with pytest.raises(TooLong) as err:
        model.encode(["ok", over], "query", Overflow.STRICT)
    assert (err.value.index, err.value.tokens, err.value.limit) == (1, n_over, limit)
    assert "inputs[1]" in str(err.value) and str(limit) in str(err.value)
    assert len(model.encode([over], "query")[0]) <= limit


def test_minilm_matches_sentence_transformers(
    minilm_src: Path, minilm_fp32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_src), device="cpu")
    texts = [s for s in SAMPLES if s.isascii()] + random_strings(40, 5)
    texts = [t for t in texts if t.strip()]
    want = st.encode(texts, convert_to_numpy=True)
    model = EmbeddingModel(minilm_fp32)
    assert model.manifest.pooling == "mean" and model.dims == [384]
    # the export's own parity report (plain transformers reference, texts within max length)
    assert model.manifest.parity["min_cosine"] >= 0.99999 and model.manifest.parity["token_ids_equal"]
    got = model.embed(texts)
    assert cosines(got, want).min() >= 0.99999
    out = tmp_path / "int8"
    export(minilm_src, out, ExportOptions(dtype="int8", parity=False))
    cos8 = cosines(EmbeddingModel(out).embed(texts), want)
    with capsys.disabled():
        print(f"\nMiniLM int8 vs sentence-transformers: mean cosine {cos8.mean():.5f}, min {cos8.min():.5f}")
    assert cos8.min() >= 0.97


# ---------------------------------------------------------------- load-time validation
@pytest.fixture
def broken(tiny_fp32: Path, tmp_path: Path) -> Iterator[Path]:
    dst = tmp_path / "copy"
    shutil.copytree(tiny_fp32, dst)
    yield dst


def test_corrupted_data_file_is_named(broken: Path) -> None:
    data = bytearray((broken / "projections.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (broken / "projections.safetensors").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"projections\.safetensors is corrupted.*re-run `zembed export`"):
        EmbeddingModel(broken)


def test_manifest_from_another_model(broken: Path, minilm_fp32: Path) -> None:
    shutil.copy(minilm_fp32 / "manifest.json", broken / "manifest.json")
    with pytest.raises(ManifestError, match=r"model\.onnx|tokenizer\.json"):
        EmbeddingModel(broken)
    with pytest.raises(ManifestError, match=r"output 'sentence_embedding' is float32 \['batch', 64\]"):
        EmbeddingModel(broken, verify_hashes=False)


def test_graph_missing_an_output(broken: Path) -> None:
    import onnx

    graph = onnx.load(str(broken / "model.onnx"))
    graph.graph.output[0].name = "pooled"  # an output the manifest does not know
    for node in graph.graph.node:
        node.output[:] = ["pooled" if o == "sentence_embedding" else o for o in node.output]
    onnx.save(graph, str(broken / "model.onnx"))
    with pytest.raises(ManifestError, match=r"has no output 'sentence_embedding' \(it has \['pooled'\]\)"):
        EmbeddingModel(broken, verify_hashes=False)


def test_missing_manifest_and_fp16_on_cpu(tmp_path: Path, tiny_fp16: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.json is missing.*zembed export"):
        EmbeddingModel(tmp_path)
    with pytest.raises(ManifestError, match="float16 graph, which runs only on a GPU"):
        EmbeddingModel(tiny_fp16, providers=["CPUExecutionProvider"])


def test_export_refuses_non_empty_folder(tiny_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export(tiny_src, out, ExportOptions(parity=False))
    assert (out / "keep.txt").exists()
    with pytest.raises(FileExistsError, match="only cleans a folder an earlier `zembed export` wrote"):
        export(tiny_src, out, ExportOptions(parity=False), force=True)  # never deletes what it did not write
    assert (out / "keep.txt").exists()
    (out / "keep.txt").unlink()
    export(tiny_src, out, ExportOptions(parity=False))
    export(tiny_src, out, ExportOptions(parity=False), force=True)  # its own earlier export: cleaned
    assert (out / "manifest.json").exists()


def test_pad_helper_right_pads() -> None:
    b = pad([[5, 6, 7], [8]], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]] and b.attention_mask.tolist() == [
        [1, 1, 1],
        [1, 0, 0],
    ]
    assert b.tokens == 4


def zembed_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `zembed` command line (python -m service.cli) from the repository root."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "zembed.service.cli", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_overrides_suffix_and_prompts(tiny_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    proc = zembed_cli(
        "export",
        str(tiny_src),
        "--out",
        str(out),
        "--no-parity",
        "--suffix",
        r"<|endoftext|>",
        "--prompt",
        r"query=Instruct: find\nQuery: ",
        "--prompt",
        "code=Code: ",
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["suffix"] == "<|endoftext|>"
    assert m["prompts"]["query"] == "Instruct: find\nQuery: " and m["prompts"]["code"] == "Code: "
    assert m["prompts"]["document"] == ZEMBED_PROMPTS["document"]  # kept from the checkpoint
    bad = zembed_cli("export", str(tiny_src), "--out", str(tmp_path / "b"), "--prompt", "x")
    assert bad.returncode == 2 and "--prompt must be TYPE=TEXT" in bad.stderr
