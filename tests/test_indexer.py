"""`zembed index` (zembed.indexer) on a local Ray instance (2 CPUs, one for the whole module) with the real
MiniLM export: shard stores search like one store built by `zembed ingest` through a real server; the
same job through UpsertStream into that server; a run killed with SIGKILL half-way resumes and ends
with every document stored once. Input planning and reading are tested without Ray."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zembed.indexer.job import IndexError_, IndexOptions, index
from zembed.indexer.progress import JobMismatch, ShardProgress, progress_path, shard_name
from zembed.indexer.sources import Unit, plan_units, read_unit
from zembed.service.convert import PASSAGE_KEY
from zembed.service.ingest import FieldMap
from zembed.store import Hit, Store
from zembed.store.sharding import shard_of

ROOT = Path(__file__).resolve().parents[1]
# Ray's own deprecations (it reads deprecated settings of its DataContext itself), not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
WORDS = [
    *[
        "river",
        "mountain",
        "cloud",
        "engine",
        "search",
        "vector",
        "index",
        "shard",
        "store",
        "model",
        "token",
        "paper",
        "music",
        "garden",
    ],
    *[
        "ocean",
        "forest",
        "city",
        "night",
        "light",
        "code",
        "data",
        "graph",
        "bread",
        "bakery",
        "violin",
        "train",
        "station",
        "winter",
    ],
    *[
        "summer",
        "harbor",
        "ship",
        "planet",
        "orbit",
        "rocket",
        "chess",
        "knight",
        "castle",
        "library",
        "poem",
        "novel",
        "coffee",
        "tea",
    ],
    *["market", "price", "stock", "bank", "loan"],
]
QUERIES = [
    "a ship in the winter harbor",
    "rocket orbit around the planet",
    "coffee and bread at the bakery",
    "stock market price of a loan",
    "the knight and the castle in chess",
    "vector search over a shard index",
]


def _text(rng: random.Random) -> str:
    topic = rng.sample(WORDS, 4)
    return " ".join(
        rng.choice(topic) if rng.random() < 0.6 else rng.choice(WORDS) for _ in range(rng.randint(6, 40))
    )


def write_corpus(path: Path, n: int, *, bad: bool = True, seed: int = 7) -> list[str]:
    """JSONL of n documents (ids doc-0..), metadata columns; two bad lines when ``bad``. Returns the ids."""
    rng = random.Random(seed)
    ids = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            ids.append(f"doc-{i}")
            rec = {"id": f"doc-{i}", "text": _text(rng), "lang": rng.choice(["en", "de"]), "n": i}
            f.write(json.dumps(rec) + "\n")
            if bad and i == n // 2:
                f.write("{not json\n")
                f.write(json.dumps({"id": "no-text", "lang": "en"}) + "\n")
    return ids


@pytest.fixture(scope="module")
def minilm(request: pytest.FixtureRequest) -> Path:
    """The MiniLM export: `make .cache/models/all-minilm-l6-v2`'s when present, else exported once per
    session (conftest's minilm_fp32)."""
    made = ROOT / ".cache" / "models" / "all-minilm-l6-v2"
    if (made / "manifest.json").is_file():
        return made
    return Path(request.getfixturevalue("minilm_fp32"))


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    ray = pytest.importorskip("ray", reason="zembed index runs on Ray: pip install 'zembed-serve[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def _query_vectors(model_dir: Path, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
    from zembed.service.runtime.model import EmbeddingModel

    return EmbeddingModel(model_dir, intra_op_threads=1).embed(texts, "query")


def _search_all(store: Store, q: np.ndarray[Any, np.dtype[np.float32]], k: int) -> list[list[Hit]]:
    """Exact over everything the collection holds: every row shortlisted and rescored."""
    c = store.collection("docs")
    n = max(c.count(), k)
    return c.search(q, top_k=k, shortlist=n, float_reads=n)


def _merge(per_shard: list[list[list[Hit]]], k: int) -> list[list[Hit]]:
    """As a router merges: by score, then id."""
    out = []
    for qi in range(len(per_shard[0])):
        hits = [h for shard in per_shard for h in shard[qi]]
        out.append(sorted(hits, key=lambda h: (-h.score, h.id))[:k])
    return out


def _same_ranking(a: list[Hit], b: list[Hit]) -> None:
    """Same ids in the same order; two hits whose scores agree to float16 rounding may swap."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert abs(x.score - y.score) < 2e-3, (x, y)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.id != y.id:
            tie = [h.id for h in a if abs(h.score - x.score) < 2e-3]
            assert y.id in tie, (i, [(h.id, h.score) for h in a], [(h.id, h.score) for h in b])


# ---------------------------------------------------------------- without Ray
def test_jsonl_byte_ranges_cover_every_line_once(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ids = write_corpus(path, 40, bad=False)
    fm = FieldMap()
    for unit_bytes in (1, 7, 64, 333, 10_000):
        units, _ = plan_units([str(path)], unit_bytes=unit_bytes)
        got = [r["id"] for u in units for r in read_unit(u, fm)]
        assert got == ids, unit_bytes
    # a URI reads through pyarrow's filesystems like the path
    units, _ = plan_units([path.as_uri()], unit_bytes=100)
    assert [r["id"] for u in units for r in read_unit(u, fm)] == ids


def test_parquet_row_groups_and_text_files_are_units(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    table = pa.table({"id": [f"p{i}" for i in range(10)], "text": [f"text {i}" for i in range(10)]})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=4)
    units, _ = plan_units([str(tmp_path / "c.parquet")])
    assert [u.kind for u in units] == ["parquet"] * 3
    rows = [r for u in units for r in read_unit(u, FieldMap())]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(10)]
    assert rows[5]["where"].endswith("c.parquet:row 6")

    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("first file")
    (docs / "sub" / "b.md").write_text("second file")
    (docs / "empty.txt").write_text("  ")
    (docs / "bin.txt").write_bytes(b"\xff\xfe\x00")
    units, skipped = plan_units([str(docs)], "text", files_per_unit=3)
    assert [len(u.files) for u in units] == [3, 1] and skipped == []
    assert Unit.from_dict(json.loads(json.dumps(units[0].to_dict()))) == units[0]
    rows = [r for u in units for r in read_unit(u, FieldMap())]
    good = {r["id"]: r["text"] for r in rows if not r["error"]}
    assert good == {"a.txt": "first file", "sub/b.md": "second file"}
    errors = sorted(r["error"] for r in rows if r["error"])
    assert errors == ["empty file", "not UTF-8 text (byte 0)"]
    # without --format text, files of unknown type are skipped and said so
    units, skipped = plan_units([str(docs)])
    assert units == [] and len(skipped) == 4 and "--format text" in skipped[0]


def test_bad_records_name_their_place_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "a", "text": "fine", "tags": ["x", "y"]}\n'
        "[1, 2]\n"
        '{"id": 1.5, "text": "float id"}\n'
        '{"id": "b", "text": "nested", "deep": ' + "[" * 40 + "1" + "]" * 40 + "}\n"
        '{"id": "c", "text": 7}\n'
    )
    units, _ = plan_units([str(path)])
    rows = read_unit(units[0], FieldMap())
    assert rows[0]["error"] == "" and json.loads(rows[0]["meta"]) == {"tags": ["x", "y"]}
    assert "expected a JSON object" in rows[1]["error"] and rows[1]["where"].endswith("c.jsonl@48")
    assert "must be a string or an integer" in rows[2]["error"]
    assert "metadata.deep" in rows[3]["error"]
    assert "must be a string; given int" in rows[4]["error"]


def test_options_are_checked_before_anything_runs(tmp_path: Path, minilm: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    write_corpus(corpus, 3)
    base: dict[str, Any] = {"inputs": [str(corpus)], "model": str(minilm), "collection": "docs"}
    with pytest.raises(IndexError_, match="either out"):
        index(IndexOptions(**base))
    with pytest.raises(IndexError_, match="progress_dir"):
        index(IndexOptions(**base, servers=["127.0.0.1:1"]))
    with pytest.raises(IndexError_, match="chunk with servers"):
        index(IndexOptions(**base, servers=["127.0.0.1:1"], progress_dir=str(tmp_path / "p"), chunk=True))
    with pytest.raises(IndexError_, match="shards must be in"):
        index(IndexOptions(**base, out=str(tmp_path / "o"), shards=0))
    with pytest.raises(IndexError_, match="code_bits 100 is not one of"):
        index(IndexOptions(**base, out=str(tmp_path / "o"), code_bits=100))
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "index.json").write_text(
        json.dumps({"shards": 2, "collection": "docs", "target": "stores"})
    )
    with pytest.raises(JobMismatch, match="shards=2"):
        index(IndexOptions(**base, out=str(tmp_path / "o2"), shards=3))
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["index.json"]  # nothing written


# ---------------------------------------------------------------- on Ray
def test_shard_stores_search_like_one_ingested_store(
    ray_address: str, minilm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fakes import ServerThread
    from zembed.service.cli import main as cli
    from zembed.service.config import Settings

    corpus = tmp_path / "corpus.jsonl"
    ids = write_corpus(corpus, 150)
    k = 10

    # the reference: `zembed ingest` into a real server (which embeds), one store
    settings = Settings(model=minilm, data=tmp_path / "ref", port=0, intra_op_threads=1).validate()
    server = ServerThread(settings)
    try:
        rc = cli(["ingest", str(corpus), "docs", "--create", "--address", server.target, "--json"])
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert rc == 1 and summary["stored"] == 150 and summary["bad"] == 2, summary

        # the same job into that server over UpsertStream (target b), another collection
        report_b = index(
            IndexOptions(
                inputs=[str(corpus)],
                model=str(minilm),
                collection="viaray",
                servers=[server.target],
                progress_dir=str(tmp_path / "progress-b"),
                unit_bytes=4096,
            )
        )
        assert (report_b.stored, report_b.failed, report_b.shard_counts) == (150, 2, {0: 150})
    finally:
        server.stop()

    # the job under test: 3 shard stores (target a)
    out = tmp_path / "shards"
    report = index(
        IndexOptions(
            inputs=[str(corpus)],
            model=str(minilm),
            collection="docs",
            out=str(out),
            shards=3,
            unit_bytes=4096,
        )
    )
    assert report.units > 1 and report.units_done == report.units and report.units_skipped == 0
    assert (report.documents, report.stored, report.rows, report.failed) == (152, 150, 150, 2)
    assert any("not JSON" in f for f in report.failures) and any("no text" in f for f in report.failures)
    assert report.tokens > 150 and report.actors == 2
    want = {s: sum(1 for i in ids if shard_of(i, 3) == s) for s in range(3)}
    assert report.shard_counts == want

    q = _query_vectors(minilm, QUERIES)
    with Store(tmp_path / "ref") as ref:
        expected = _search_all(ref, q, k)
        via_stream = ref.collection("viaray")
        assert via_stream.count() == 150
        n = via_stream.count()
        for exp, got in zip(expected, via_stream.search(q, top_k=k, shortlist=n, float_reads=n), strict=True):
            _same_ranking(exp, got)
        ref_meta = {r.id: r.metadata for r in ref.collection("docs").get(ids) if r is not None}
        assert ref_meta["doc-3"]["n"] == 3 and set(ref_meta["doc-3"]) == {"lang", "n"}
    per_shard = []
    for s in range(3):
        with Store(out / shard_name(s)) as st:
            per_shard.append(_search_all(st, q, k))
            stored = st.collection("docs").get(ids)
            mine = [i for i in ids if shard_of(i, 3) == s]
            assert all(r is not None for r, i in zip(stored, ids, strict=True) if i in mine)
            assert all(r is None for r, i in zip(stored, ids, strict=True) if i not in mine)
            assert all(r.metadata == ref_meta[r.id] for r in stored if r is not None)
    for exp, got in zip(expected, _merge(per_shard, k), strict=True):
        _same_ranking(exp, got)

    # a re-run finds every unit done: nothing embedded, nothing written
    again = index(
        IndexOptions(
            inputs=[str(corpus)],
            model=str(minilm),
            collection="docs",
            out=str(out),
            shards=3,
            unit_bytes=4096,
        )
    )
    assert (again.units_skipped, again.units_done, again.documents) == (report.units, 0, 0)
    assert again.shard_counts == want


def test_killed_run_resumes_without_duplicates(ray_address: str, minilm: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    ids = write_corpus(corpus, 160, bad=False, seed=11)
    out = tmp_path / "shards"
    cmd = [
        sys.executable, "-m", "zembed.service.cli", "index", str(corpus), "--model", str(minilm),
        "--collection", "docs", "--out", str(out), "--shards", "3", "--ray-address", ray_address,
        "--unit-mb", "0.002", "--batch-rows", "8", "--actors", "1", "--json",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = progress_path(out, 0)
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if first.is_file() and len(ShardProgress(first).load()) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        assert first.is_file(), "no unit finished in time"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    units, _ = plan_units([str(corpus)], unit_bytes=int(0.002 * (1 << 20)))
    done_before = len(set.intersection(*(set(ShardProgress(progress_path(out, s)).load()) for s in range(3))))
    assert 0 < done_before < len(units)

    report = index(
        IndexOptions(
            inputs=[str(corpus)],
            model=str(minilm),
            collection="docs",
            out=str(out),
            shards=3,
            unit_bytes=int(0.002 * (1 << 20)),
            batch_rows=8,
        )
    )
    assert report.units_skipped == done_before and report.units_done == len(units) - done_before
    assert report.failed == 0 and report.documents < len(ids)  # the finished units were not read again
    want = {s: sum(1 for i in ids if shard_of(i, 3) == s) for s in range(3)}
    assert report.shard_counts == want  # every document once: no duplicate rows, none missing
    for s in range(3):
        with Store(out / shard_name(s)) as st:
            mine = [i for i in ids if shard_of(i, 3) == s]
            assert all(
                r is not None and r.id == i
                for r, i in zip(st.collection("docs").get(mine), mine, strict=True)
            )
        assert set(ShardProgress(progress_path(out, s)).load()) == {u.key for u in units}


def test_long_documents_split_into_passages_on_their_documents_shard(
    ray_address: str, minilm: Path, tmp_path: Path
) -> None:
    from zembed.service.runtime.model import EmbeddingModel

    rng = random.Random(3)
    docs = {f"long-{i}": " ".join(_text(rng) for _ in range(30)) for i in range(4)}
    docs["short"] = "a short note about the harbor"
    corpus = tmp_path / "long.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v, "src": "t"}) + "\n" for k, v in docs.items()))
    out = tmp_path / "shards"
    report = index(
        IndexOptions(
            inputs=[str(corpus)],
            model=str(minilm),
            collection="docs",
            out=str(out),
            shards=2,
            chunk=True,
            chunk_tokens=64,
        )
    )
    assert report.stored == 5 and report.failed == 0 and report.rows > 5 + 4
    count = EmbeddingModel(minilm).text.count
    rows = 0
    for doc_id, text in docs.items():
        with Store(out / shard_name(shard_of(doc_id, 2))) as st:
            coll = st.collection("docs")
            first = coll.get([doc_id])[0]
            assert first is not None
            total = first.metadata[PASSAGE_KEY]["n"]
            assert total == 1 if doc_id == "short" else total >= 2
            recs = coll.get([doc_id if n == 0 else f"{doc_id}\x1f{n}" for n in range(total + 1)])
            assert recs[-1] is None  # no passage past the count
            for n, rec in enumerate(recs[:-1]):
                assert rec is not None and rec.metadata["src"] == "t"
                p = rec.metadata[PASSAGE_KEY]  # as the server's own chunking stores it
                assert (p["doc"], p["i"]) == (doc_id, n) and text[p["s"] : p["e"]] == p["t"]
                assert p["t"].strip() and count([p["t"]], "document")[0] <= 64
            rows += total
    assert rows == report.rows == sum(report.shard_counts.values())

    # a shard store is ready to serve: `zembed serve --data <shard>` answers text searches with passages
    import grpc

    from tests.fakes import ServerThread
    from zembed.service.config import Settings
    from zembed.v1 import zembed_pb2 as pb
    from zembed.v1 import zembed_pb2_grpc as pb_grpc

    shard = shard_of("long-0", 2)
    settings = Settings(model=minilm, data=out / shard_name(shard), port=0, intra_op_threads=1).validate()
    server = ServerThread(settings)
    try:
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
            query = docs["long-0"][:200]
            resp = stub.Search(pb.SearchRequest(collection="docs", text=query, top_k=3), timeout=60)
    finally:
        server.stop()
    top = resp.hits[0]
    assert top.id == "long-0" and top.HasField("passage")
    assert docs["long-0"][top.passage.start : top.passage.end] == top.passage.text
    assert PASSAGE_KEY not in top.metadata and top.metadata["src"].string_value == "t"


def test_command_line_refusals_change_nothing(
    ray_address: str, minilm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zembed.service.cli import main as cli
    from zembed.store import CollectionConfig

    out = tmp_path / "out"
    base = ["index", "--model", str(minilm), "--collection", "docs", "--out", str(out)]
    assert cli([*base[:1], str(tmp_path / "missing.jsonl"), *base[1:]]) == 2
    assert "missing.jsonl: no such file or directory" in capsys.readouterr().err
    assert not out.exists()

    # a shard store holding the collection with another configuration: the writer refuses at open,
    # the run stops with one line (exit 1), the store is untouched
    corpus = tmp_path / "c.jsonl"
    write_corpus(corpus, 5, bad=False)
    with Store(out / shard_name(0)) as st:
        st.create_collection("docs", CollectionConfig(code_bits=64, rescore_dims=64))
    assert cli([*base[:1], str(corpus), *base[1:]]) == 1
    err = capsys.readouterr().err
    assert "zembed index: stopped:" in err and "was created with" in err and "re-run" in err
    with Store(out / shard_name(0)) as st:
        info = st.collection("docs").info()
        assert (info.count, info.config.code_bits) == (0, 64)
    assert not progress_path(out, 0).exists()
