"""The terminal commands (`zembed ingest|search|embed|collections|health`) against a real gRPC server on
loopback (tests/fakes.py: real edge, servicers, batcher and LMDB around a deterministic fake embedder).
Most run the command in-process (service.cli.main); the kill-and-resume test runs it as a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeServer
from zembed.service import cli
from zembed.service.metadata import metadata_from_proto
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
DIM = 64  # FakeEmbedder's native dimension: collections default to 64 code bits, 64 rescore dims
TOKEN = "cli-test-token-0123456789"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    with FakeServer(tmp_path) as srv:
        yield srv


def zembed(server: FakeServer | None, *argv: str) -> list[str]:
    base = ["--address", server.target] if server is not None else []
    return [*argv, *base]


def run(capsys: pytest.CaptureFixture[str], server: FakeServer | None, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(zembed(server, *argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def stub(server: FakeServer) -> tuple[grpc.Channel, pb_grpc.SearchServiceStub]:
    ch = grpc.insecure_channel(server.target)
    return ch, pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]


def stored(server: FakeServer, collection: str, ids: list[str]) -> dict[str, Any]:
    ch, s = stub(server)
    with ch:
        out: dict[str, Any] = {}
        for i in range(0, len(ids), 1000):
            resp = s.GetDocuments(
                pb.GetDocumentsRequest(collection=collection, ids=ids[i : i + 1000], include_vectors=True)
            )
            for d in resp.documents:
                if d.found:
                    out[d.id] = d
        return out


def count(server: FakeServer, collection: str) -> int:
    ch, s = stub(server)
    with ch:
        return int(s.GetCollection(pb.GetCollectionRequest(name=collection)).collection.count)


def unit(rng: np.random.Generator, n: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    out: np.ndarray[Any, np.dtype[np.float32]] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def create(capsys: pytest.CaptureFixture[str], server: FakeServer, name: str, *extra: str) -> None:
    rc, _, err = run(capsys, server, "collections", "create", name, *extra)
    assert rc == 0, err


# ---------------------------------------------------------------- ingest
@pytest.mark.parametrize("method", [["--method", "stream"], ["--method", "unary", "--batch", "50"]], ids=str)
def test_ingest_jsonl_vectors_reports_bad_lines_by_number_and_stores_the_rest(
    server: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path, method: list[str]
) -> None:
    create(capsys, server, "vec", "--filterable", "lang")
    vecs = unit(np.random.default_rng(1), 200)
    lines = [
        json.dumps(
            {"id": f"d{i}", "vector": vecs[i].tolist(), "metadata": {"lang": ["de", "en"][i % 2], "n": i}}
        )
        for i in range(200)
    ]
    lines[56] = '{"id": "d56", "vector": [0.1, '  # line 57: not JSON
    lines[79] = json.dumps({"vector": vecs[79].tolist()})  # line 80: no id
    lines[89] = json.dumps({"id": "d89", "vector": ["a", "b"]})  # line 90: not numbers
    lines[99] = json.dumps({"id": "d99", "vector": [0.5] * 7})  # line 100: the server refuses 7 dims
    lines[109] = json.dumps({"id": "d109", "vector": vecs[109].tolist(), "metadata": [1, 2]})  # not an object
    typed = {"lang": "de", "n": 4, "x": {"nested": [1, None, 2.5, True]}, "none": None, "tags": ["a", 1]}
    lines[4] = json.dumps({"id": "d4", "vector": vecs[4].tolist(), "metadata": typed})  # JSON types kept
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")

    rc, out, err = run(capsys, server, "ingest", str(path), "vec", "--json", "--no-progress", *method)
    summary = json.loads(out)
    assert rc == 1, "some lines were not stored: exit 1"
    assert summary["records"] == 200
    assert summary["stored"] == 195
    assert summary["bad"] == 4 and summary["refused"] == 1 and summary["skipped"] == 0
    for line in (57, 80, 90, 100, 110):
        assert f"{path}:{line}: " in err, err
    assert "no id (field 'id')" in err
    assert "field 'vector': not a list of numbers" in err
    assert "id 'd99' refused: INVALID_ARGUMENT" in err and "64" in err
    assert "field 'metadata': must be an object; given list" in err
    assert metadata_from_proto(stored(server, "vec", ["d4"])["d4"].metadata) == typed
    docs = stored(server, "vec", [f"d{i}" for i in range(200)])
    assert len(docs) == 195 and "d56" not in docs and "d99" not in docs
    np.testing.assert_allclose(np.asarray(docs["d3"].rescore), vecs[3], atol=1e-3)  # stored as float16
    assert docs["d3"].metadata["lang"].string_value == "en"
    assert docs["d3"].metadata["n"].int_value == 3

    # a re-run skips every stored id and sends nothing again
    rc, out, err = run(capsys, server, "ingest", str(path), "vec", "--json", "--no-progress", *method)
    again = json.loads(out)
    assert (again["stored"], again["skipped"], again["bad"], again["refused"]) == (0, 195, 4, 1)

    # search by vector, with a filter, as a table and as JSON
    q = json.dumps(vecs[4].tolist())
    rc, out, err = run(capsys, server, "search", "vec", "--vector", q, "-k", "3", "--filter", "lang=de")
    assert rc == 0, err
    rows = out.splitlines()
    assert rows[0].split() == ["#", "score", "id", "metadata"]
    assert rows[2].split()[:3] == ["1", "1.0000", "d4"]
    assert '"lang": "de"' in rows[2]
    assert "3 hits from 'vec'" in out
    rc, out, _ = run(
        capsys,
        server,
        "search",
        "vec",
        "--vector",
        q,
        "-k",
        "5",
        "--where",
        '{"lang": {"$ne": "de"}}',
        "--json",
    )
    hits = json.loads(out)["hits"]
    assert len(hits) == 5 and all(h["metadata"]["lang"] == "en" for h in hits)
    rc, out, err = run(
        capsys, server, "search", "vec", "--vector", q, "--where", '{"n": {"$in": [4, 6]}}', "--json"
    )
    assert rc == 1 and "INVALID_ARGUMENT" in err and "filterable" in err  # n is not filterable


def test_ingest_csv_with_text_embeds_on_the_server(
    server: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    create(capsys, server, "txt", "--filterable", "lang")
    path = tmp_path / "docs.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["doc_id", "body", "lang", "extra"])
        for i in range(50):
            body = f"document number {i}\nwith a second line" if i == 7 else f"document number {i}"
            w.writerow([f"t{i}", body, "de" if i < 25 else "en", "" if i % 2 else f"x{i}"])
        w.writerow(["t50", "", "de", ""])  # no text, no vector
    rc, out, err = run(
        capsys,
        server,
        "ingest",
        str(path),
        "txt",
        "--id-field",
        "doc_id",
        "--text-field",
        "body",
        "--no-progress",
    )
    assert rc == 1
    assert "50 records" not in out and "51 records, 50 stored, 0 skipped" in out, out
    assert (
        f"{path}:53: no text (field 'body') and no vector (field 'vector')" in err
    )  # the quoted newline counts
    assert len(server.model.seen) >= 50  # embedded by the server
    docs = stored(server, "txt", [f"t{i}" for i in range(50)])
    assert len(docs) == 50
    assert docs["t2"].metadata["lang"].string_value == "de"
    assert docs["t2"].metadata["extra"].string_value == "x2"
    assert "extra" not in docs["t3"].metadata  # an empty cell stores no key

    # embed (document prompt) -> search by that vector finds the document first
    rc, out, err = run(capsys, server, "embed", "document number 12", "--input-type", "document", "--json")
    assert rc == 0, err
    emb = json.loads(out)
    assert emb["dimensions"] == DIM and len(emb["embeddings"][0]["embedding"]) == DIM
    assert emb["embeddings"][0]["tokens"] > 0
    vec = json.dumps(emb["embeddings"][0]["embedding"])
    rc, out, _ = run(capsys, server, "search", "txt", "--vector", vec, "--json", "-k", "1")
    assert json.loads(out)["hits"][0]["id"] == "t12"
    # a text search runs (query prompt) and prints a table
    rc, out, err = run(capsys, server, "search", "txt", "document number 12", "--filter", "lang!=de")
    assert rc == 0, err
    assert all('"lang": "en"' in r for r in out.splitlines()[2:-1])


def test_ingest_parquet_with_list_and_fixed_size_vectors(
    server: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow", reason="Parquet ingest needs the `cli` extra (pyarrow)")
    pq = pytest.importorskip("pyarrow.parquet", reason="Parquet ingest needs the `cli` extra (pyarrow)")
    create(capsys, server, "pq", "--filterable", "lang")
    vecs = unit(np.random.default_rng(2), 300)
    ids = [f"p{i}" for i in range(300)]
    langs = ["de", "fr", "en"] * 100
    flat = pa.array(vecs.reshape(-1), type=pa.float32())
    variable = pa.table(
        {
            "id": ids,
            "emb": pa.ListArray.from_arrays(pa.array(np.arange(0, 301 * DIM, DIM, dtype=np.int32)), flat),
            "lang": langs,
        }
    )
    pq.write_table(variable.slice(0, 150), tmp_path / "a.parquet", row_group_size=64)
    fixed = pa.table({"id": ids, "emb": pa.FixedSizeListArray.from_arrays(flat, DIM), "lang": langs})
    pq.write_table(fixed.slice(150), tmp_path / "b.parquet", row_group_size=64)
    for name in ("a.parquet", "b.parquet"):
        rc, out, err = run(
            capsys,
            server,
            "ingest",
            str(tmp_path / name),
            "pq",
            "--vector-field",
            "emb",
            "--json",
            "--no-progress",
        )
        assert rc == 0, err
        assert json.loads(out)["stored"] == 150
    docs = stored(server, "pq", ids)
    assert len(docs) == 300
    for i in (0, 149, 150, 299):
        np.testing.assert_allclose(np.asarray(docs[ids[i]].rescore), vecs[i], atol=1e-3)  # stored as float16
        assert docs[ids[i]].metadata["lang"].string_value == langs[i]


@pytest.mark.parametrize("shape", ["columns", "documents"])
def test_ingest_killed_half_way_then_rerun_stores_every_line_once(
    server: FakeServer, tmp_path: Path, shape: str
) -> None:
    """``columns``: lines of id + vector + a metadata object travel as DocumentColumns; ``documents``:
    a top-level field becomes a metadata key, so the lines travel as documents."""
    ch, s = stub(server)
    with ch:
        s.CreateCollection(pb.CreateCollectionRequest(name="big"))
    n = 20_000
    vecs = unit(np.random.default_rng(3), n)
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(n):
            rec: dict[str, Any] = {"id": f"b{i}", "vector": vecs[i].round(5).tolist()}
            rec |= {"metadata": {"k": i}} if shape == "columns" else {"k": i}
            f.write(json.dumps(rec) + "\n")
    cmd = [
        sys.executable,
        "-m",
        "zembed.service.cli",
        "ingest",
        str(path),
        "big",
        "--address",
        server.target,
        "--json",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while count(server, "big") < 1000 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    half = count(server, "big")
    assert 0 < half < n, f"the kill should land half-way: {half} of {n} stored"

    done = subprocess.run([*cmd, "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["records"] == n
    assert summary["skipped"] >= half - 1  # at most the in-flight ones were stored after the count
    assert summary["stored"] + summary["skipped"] == n
    assert count(server, "big") == n  # every line stored, none twice (ids are unique per line)
    docs = stored(server, "big", [f"b{i}" for i in range(0, n, 997)])
    assert all(docs[f"b{i}"].metadata["k"].int_value == i for i in range(0, n, 997))


# ---------------------------------------------------------------- other commands
def test_collections_commands(server: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = run(
        capsys, server, "collections", "create", "c1", "--filterable", "lang,tags", "--rescore-dtype", "int8"
    )
    assert rc == 0, err
    assert "created collection 'c1'" in out and "filterable:             lang, tags" in out
    rc, out, err = run(capsys, server, "collections", "create", "c1")
    assert rc == 1 and "ALREADY_EXISTS" in err
    create(capsys, server, "c2")
    rc, out, _ = run(capsys, server, "collections", "list")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "documents", "code"]
    assert lines[2].startswith("c1 ") and "64 int8" in lines[2] and lines[3].startswith("c2 ")
    rc, out, _ = run(capsys, server, "collections", "list", "--json")
    assert [c["name"] for c in json.loads(out)] == ["c1", "c2"]
    rc, out, err = run(capsys, server, "collections", "update", "c2", "--add-filterable", "lang", "--json")
    assert rc == 0, err
    assert json.loads(out)["filterable"] == ["lang"]
    rc, out, _ = run(capsys, server, "collections", "info", "c2", "--json")
    info = json.loads(out)
    assert info["code_bits"] == DIM and info["count"] == 0 and info["model_id"] == "fake/embedder"
    rc, out, err = run(capsys, server, "collections", "info", "nope")
    assert rc == 1 and err.startswith("zembed collections: NOT_FOUND")
    rc, out, err = run(capsys, server, "collections", "delete", "c2")  # stdin is not a terminal
    assert rc == 2 and "without --yes" in err
    rc, out, err = run(capsys, server, "collections", "delete", "c2", "--yes")
    assert rc == 0 and "deleted collection 'c2'" in out
    rc, out, _ = run(capsys, server, "collections", "list", "--json")
    assert [c["name"] for c in json.loads(out)] == ["c1"]
    (tmp_path / "empty.jsonl").write_text("")
    rc, out, err = run(capsys, server, "ingest", str(tmp_path / "empty.jsonl"), "missing")
    assert rc == 2 and "collection 'missing' does not exist" in err


def test_embed_table_and_health(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, server, "embed", "hello", "wörld", "--dimensions", "32")
    assert rc == 0, err
    rows = out.splitlines()
    assert rows[0].split()[:4] == ["#", "tokens", "cut", "vector"] and "(32 dims)" in rows[0]
    assert rows[2].startswith("0 ") and rows[2].endswith("hello") and rows[3].endswith("wörld")
    assert rows[-1].startswith("2 embedded")
    rc, out, err = run(capsys, server, "embed", "x", "--dimensions", "5")
    assert rc == 1 and "INVALID_ARGUMENT" in err and "dimensions" in err

    rc, out, err = run(capsys, server, "health")
    assert rc == 0, err
    assert out.splitlines()[0] == f"{server.target}: SERVING"
    assert "zembed.v1.SearchService: SERVING" in out and "model: fake/embedder" in out
    rc, out, _ = run(capsys, server, "health", "--json")
    assert json.loads(out)["serving"] is True


def test_unreachable_server_and_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out, err = run(capsys, None, "health", "--address", "127.0.0.1:1", "--timeout", "2")
    assert rc == 3 and "cannot reach the server at 127.0.0.1:1" in err and "ZEMBED_ADDRESS" in err
    with FakeServer(tmp_path, token=TOKEN) as srv:
        monkeypatch.setenv("ZEMBED_ADDRESS", srv.target)
        rc, out, err = run(capsys, None, "collections", "list")
        assert rc == 1 and "UNAUTHENTICATED" in err and "ZEMBED_TOKEN" in err
        rc, out, err = run(capsys, None, "health")  # health needs no token; the model line does
        assert rc == 0 and "SERVING" in out and "model:" not in out
        monkeypatch.setenv("ZEMBED_TOKEN", TOKEN)
        rc, out, err = run(capsys, None, "collections", "create", "tok")
        assert rc == 0, err
        rc, out, err = run(capsys, None, "health")
        assert "model: fake/embedder" in out
        rc, out, err = run(capsys, None, "collections", "list", "--token", "wrong-token-wrong-token")
        assert rc == 1 and "UNAUTHENTICATED" in err  # a flag beats the environment


def test_version_and_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    expected = f"zembed-serve {version('zembed-serve')}"
    for argv in (
        [],
        ["serve"],
        ["snapshot"],
        ["ingest"],
        ["search"],
        ["embed"],
        ["health"],
        ["collections"],
        ["collections", "list"],
        ["collections", "create"],
        ["collections", "delete"],
        ["collections", "update"],
    ):
        with pytest.raises(SystemExit) as ok:
            cli.main([*argv, "--version"])
        assert ok.value.code == 0
        assert capsys.readouterr().out.strip() == expected, argv
    for argv in (
        ["ingest"],
        ["search"],
        ["embed"],
        ["health"],
        ["collections", "create"],
        ["collections", "update"],
    ):
        with pytest.raises(SystemExit):
            cli.main([*argv, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert "default: localhost:50051" in text
        for junk in ("default: ()", "default: None", "default: False", "%(default)"):
            assert junk not in text, (argv, junk)
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "ZEMBED_PROVIDERS; default: none]" in text and "ZEMBED_PREFETCH; default: off]" in text
    for junk in ("default: ()", "default: None", "default: False", "default: True", "default: ]"):
        assert junk not in text, junk


def test_client_commands_import_neither_onnxruntime_nor_torch(server: FakeServer) -> None:
    code = (
        "import sys; from zembed.service import cli; "
        f"rc = cli.main(['health', '--address', '{server.target}']); "
        "heavy = ('onnxruntime', 'torch', 'transformers', 'pyarrow', 'zembed.store'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(rc, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr
    serve_help = (
        "import sys, contextlib; from zembed.service import cli\n"
        "with contextlib.suppress(SystemExit): cli.main(['serve', '--help'])\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", serve_help], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stdout + out.stderr


def test_ingest_from_stdin_creates_the_collection(
    server: FakeServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [json.dumps({"id": f"s{i}", "text": f"text {i}", "lang": "de"}) for i in range(5)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    rc, out, err = run(
        capsys, server, "ingest", "-", "fresh", "--create", "--filterable", "lang", "--json", "--progress"
    )
    assert rc == 0, err
    assert json.loads(out)["stored"] == 5
    assert "5/? " in err or "5doc" in err.replace(" ", ""), err  # the bar drew (no total on stdin)
    rc, out, _ = run(capsys, server, "collections", "info", "fresh", "--json")
    assert json.loads(out)["filterable"] == ["lang"] and json.loads(out)["count"] == 5


@pytest.mark.parametrize("parser", ["json", "orjson", "simdjson"])
def test_jsonl_reader_numbers_lines_with_either_parser(parser: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from zembed.service import ingest

    mod = pytest.importorskip(parser, reason="orjson and pysimdjson are the `cli` extra's fast paths")
    if parser == "simdjson":
        monkeypatch.setattr(ingest, "_simdjson", lambda: mod)
    else:
        monkeypatch.setattr(ingest, "_simdjson", lambda: None)
        monkeypatch.setattr(ingest, "_json_loads", lambda: mod.loads)
    text = (
        '{"id": "a", "vector": [1, 2.5], "m": {"k": [null, 1]}}\n\n{"id": "b", \n[1, 2]\n'
        '{"id": "c", "text": "ü", "vector": ["x"]}\n'
    )
    rows = list(ingest.read_jsonl(io.StringIO(text), frozenset({"vector"})))
    assert [n for n, _ in rows] == [1, 3, 4, 5]  # the blank line 2 is skipped, numbers kept
    first = rows[0][1]
    assert isinstance(first, dict) and np.asarray(first.pop("vector")).tolist() == [1.0, 2.5]
    assert first == {"id": "a", "m": {"k": [None, 1]}}
    assert rows[3][1] == {"id": "c", "text": "ü", "vector": ["x"]}
    assert isinstance(rows[1][1], ingest.BadRecord) and str(rows[1][1]).startswith("not JSON")
    assert str(rows[2][1]) == "expected a JSON object per line; given list"


def test_jsonl_reader_gives_vector_records_for_the_columnar_form() -> None:
    """With a field mapping, a line of only an id, a vector of numbers and a metadata object comes as
    a VectorRecord (float64 bytes, the object's compact text); anything else as a record."""
    pytest.importorskip("simdjson", reason="pysimdjson (the `cli` extra) reads vectors into buffers")
    from zembed.service import ingest

    fm = ingest.FieldMap()
    text = (
        '{"id": "a", "vector": [1, 2.5], "metadata": {"k": [null, 1], "s": "\\u00fc", "f": 1.50}}\n'
        '{"id": 7, "vector": [0.5], "metadata": {}}\n'
        '{"vector": [3], "id": "c", "text": "ignored when a vector is given"}\n'
        '{"id": "d", "vector": [1], "lang": "de"}\n'
        '{"id": "e", "vector": [1, "x"]}\n'
        '{"id": "f", "vector": [1], "metadata": [1]}\n'
        '{"id": "", "vector": [1]}\n'
        '{"id": true, "vector": [1]}\n'
    )
    rows = list(ingest.read_jsonl(io.BytesIO(text.encode()), frozenset({"vector"}), fm))
    a, b, c = (r for _, r in rows[:3])
    assert isinstance(a, ingest.VectorRecord) and a.id == "a"
    assert np.frombuffer(a.f64, np.float64).tolist() == [1.0, 2.5]
    assert json.loads(a.metadata) == {"k": [None, 1], "s": "ü", "f": 1.5}
    assert b == ingest.VectorRecord("7", np.float64(0.5).tobytes(), b"")
    assert c == ingest.VectorRecord("c", np.float64(3).tobytes(), b"")
    assert all(isinstance(r, dict) for _, r in rows[3:]), rows[3:]  # converted (and refused) as documents
    cols = ingest.read_jsonl(io.BytesIO(text.encode()), frozenset({"vector"}), ingest.FieldMap(columns=()))
    assert isinstance(list(cols)[3][1], ingest.VectorRecord)  # `lang` is not a metadata column here


def test_ingest_repeated_ids_across_forms_later_lines_win(
    server: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Columns and documents are built side by side; an id's later line is stored last either way."""
    create(capsys, server, "rep")
    vecs = unit(np.random.default_rng(4), 8)
    lines = [
        {"id": "x", "vector": vecs[0].tolist(), "metadata": {"v": 1}},  # columns
        {"id": "x", "vector": vecs[1].tolist(), "v": 2},  # documents (a top-level field)
        {"id": "y", "vector": vecs[2].tolist(), "v": 1},  # documents
        {"id": "y", "vector": vecs[3].tolist(), "metadata": {"v": 2}},  # columns
        {"id": "z", "vector": vecs[4].tolist(), "metadata": {"v": 1}},
        {"id": "z", "vector": vecs[5].tolist(), "metadata": {"v": 2}},  # a repeat within the columns
        {"id": "w", "vector": [0.5] * 3, "metadata": {"v": 1}},  # another width: refused by the server
        {"id": "w", "vector": vecs[6].tolist(), "metadata": {"v": 2}},
    ]
    path = tmp_path / "rep.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rc, out, err = run(capsys, server, "ingest", str(path), "rep", "--json", "--no-progress")
    summary = json.loads(out)
    assert rc == 1 and (summary["records"], summary["stored"], summary["refused"]) == (8, 7, 1), err
    assert f"{path}:7: id 'w' refused: INVALID_ARGUMENT" in err
    docs = stored(server, "rep", ["x", "y", "z", "w"])
    assert {k: d.metadata["v"].int_value for k, d in docs.items()} == {"x": 2, "y": 2, "z": 2, "w": 2}
    np.testing.assert_allclose(np.asarray(docs["x"].rescore), vecs[1], atol=1e-3)


@pytest.mark.parametrize("method", ["stream", "unary"])
def test_ingest_chunk_stores_long_texts_as_passages(
    server: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path, method: str
) -> None:
    long = " ".join(f"word{i} is here." for i in range(300))
    path = tmp_path / "texts.jsonl"
    path.write_text(
        json.dumps({"id": "long", "text": long, "metadata": {"lang": "en"}})
        + "\n"
        + json.dumps({"id": "short", "text": "a short one", "metadata": {"lang": "de"}})
        + "\n"
    )
    argv = [
        str(path),
        "txt",
        "--create",
        "--filterable",
        "lang",
        "--json",
        "--no-progress",
        "--method",
        method,
    ]
    rc, out, err = run(capsys, server, "ingest", *argv, "--chunk", "--chunk-tokens", "64")
    assert rc == 0, err
    assert json.loads(out)["stored"] == 2
    ch, s = stub(server)
    with ch:
        hits = s.Search(pb.SearchRequest(collection="txt", text="word150 is here.", top_k=3)).hits
    passages = [h.passage for h in hits if h.id == "long"]
    assert passages and all(long[p.start : p.end] == p.text for p in passages)
    assert stored(server, "txt", ["long\x1f3"])  # passage 3 is a row of its own
    rc, out, err = run(capsys, server, "ingest", *argv, "--chunk")  # a re-run skips both
    assert rc == 0 and json.loads(out)["skipped"] == 2, err
    rc, _, err = run(capsys, server, "ingest", *argv, "--chunk-tokens", "64")
    assert rc == 2 and "--chunk-tokens and --chunk-overlap need --chunk" in err
