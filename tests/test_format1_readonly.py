"""A format-1 data directory (tests/fixtures/format1, written by format-1 code) opens READ-ONLY: every
read is served from its one-value-per-row layout and answers what the migrated store answers, every
write is refused with NeedsMigration (FAILED_PRECONDITION over gRPC) naming ``zembed migrate``, and
not a byte of the directory changes (data.mdb's bytes and mtime, no file created: no format record,
no sub-database, no preallocation, no lock file)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests import format1_fixture as fixture
from tests.fakes import FakeServer
from tests.test_migrate import v1_contents, zembed
from zembed.service import convert
from zembed.store import Store, quantize
from zembed.store.errors import FormatMismatch, NeedsMigration
from zembed.store.migrate import migrate
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "format1"


def state(path: Path) -> tuple[str, int, list[str]]:
    """data.mdb's digest and mtime (ns), and the directory's listing."""
    data = path / "data.mdb"
    return hashlib.sha256(data.read_bytes()).hexdigest(), data.stat().st_mtime_ns, sorted(os.listdir(path))


@pytest.fixture
def old(tmp_path: Path) -> Path:
    path = tmp_path / "old"
    shutil.copytree(FIXTURE, path)
    return path


@pytest.fixture
def new(old: Path, tmp_path: Path) -> Iterator[Store]:
    """The same content migrated to format 2 (what the read-only store must answer like)."""
    migrate(old, tmp_path / "new")
    with Store(tmp_path / "new") as s:
        yield s


def queries(name: str) -> list[tuple[str, np.ndarray]]:
    exp = fixture.expected(name)
    ids = sorted(exp)
    return [(i, exp[i][0]) for i in ids[:: max(1, len(ids) // 12)]]


def answers(s: Store, name: str) -> list[Any]:
    """Everything a reader can ask of collection ``name``, in comparable form."""
    c = s.collection(name)
    bits = c.config.code_bits
    out: list[Any] = [c.count(), c.info().count, c.info().thresholds, c.info().tuning]
    exp = fixture.expected(name)
    if not exp:
        return out
    ids = [*sorted(exp), "missing"]
    for r in c.get(ids, with_vectors=True):
        out.append(
            None
            if r is None
            else (r.id, r.metadata, r.code, r.rescore.tobytes() if r.rescore is not None else b"")
        )
    for _, x in queries(name):
        for hs in (
            c.search(x[:bits], x, top_k=10),
            c.search(x[:bits], x, top_k=5, rescore=False),
            c.search(x[:bits], x, top_k=7, refine=False, include_metadata=False),
            c.exact_search(x, top_k=10, include_metadata=True),
        ):
            out.append([(h.id, round(h.score, 6), h.hamming, h.metadata) for h in hs[0]])
        arr = c.search_arrays(x[:bits], x, top_k=10)
        out.append((arr.ids.tolist(), arr.scores.round(6).tolist(), arr.hamming.tolist()))
        sl = c.shortlist(x[:bits], 20)
        out.append((sl.distances.tolist(), c.ids_of(sl.rowids).tolist()))
        if c.config.filterable:
            for f in ({"lang": "de"}, {"lang": {"$in": ["en", "fr"]}}, {"lang": {"$ne": "fr"}}):
                hits = c.search(x[:bits], x, top_k=50, filter=f, oversampling=20)[0]
                out.append(sorted(h.id for h in hits))
                ex = c.exact_search(x, top_k=200, filter=f)[0]
                out.append([h.id for h in ex])
    return out


def test_a_format1_store_serves_every_read_like_the_migrated_one_and_writes_nothing(
    old: Path, new: Store
) -> None:
    before = state(old)
    want = v1_contents(old)
    for readonly in (False, True):
        with Store(old, readonly=readonly) as s:
            msg = s.needs_migration
            assert msg is not None and "format 1" in msg and f"zembed migrate {old} NEW_DIR" in msg
            assert s.readonly
            assert {c.name: c.count for c in s.list_collections()} == {
                n: len(fixture.expected(n)) for n in fixture.COLLECTIONS
            }
            assert s.stats()["collections"] == {n: len(fixture.expected(n)) for n in fixture.COLLECTIONS}
            for name in fixture.COLLECTIONS:
                assert answers(s, name) == answers(new, name), name
                c = s.collection(name)
                if not want[name]:
                    continue
                for ext, r in zip(
                    sorted(want[name]), c.get(sorted(want[name]), with_vectors=True), strict=True
                ):
                    code, vec, _doc, _kept = want[name][ext]
                    assert r is not None and r.code == code  # byte for byte from the codes sub-database
                    old_vec = quantize.decode_rescore([vec], c.config.rescore_dims, c.config.rescore_dtype)
                    assert r.rescore is not None and np.array_equal(r.rescore, old_vec[0])
            # the deleted rows (gaps in format 1's row ids) stay gone
            assert s.collection("alpha").get(fixture.DELETED["alpha"]) == [None] * 5
            assert s.collection("alpha").prefetch() > 0
    assert state(old) == before  # not a byte, not an mtime, no lock file


def test_every_write_is_refused_with_the_migrate_command_and_changes_nothing(old: Path) -> None:
    before = state(old)
    with Store(old) as s:
        alpha, beta, gamma = (s.collection(n) for n in ("alpha", "beta", "gamma"))
        x = fixture.expected("alpha")["alpha-2-30"][0]
        xg = fixture.expected("gamma")["gamma-1-1"][0]
        writes: dict[str, Callable[[], object]] = {
            "upsert": lambda: alpha.upsert(["n"], x[None, :64], x[None, :]),
            "upsert_arrays": lambda: alpha.upsert_arrays(np.array([7]), x[None, :], x[None, :64]),
            "upsert_arrays codes": lambda: gamma.upsert_arrays(
                np.array(["g"]), xg[None, :], codes=np.zeros((1, 6), np.uint8)
            ),
            "delete": lambda: alpha.delete(["alpha-2-30"]),
            "compact": alpha.compact,
            "calibrate": beta.calibrate,
            "measure": lambda: alpha.measure(x[None, :64], x[None, :]),
            "add_filterable": lambda: alpha.add_filterable(["b"]),
            "store.add_filterable": lambda: s.add_filterable("beta", ["lang"]),
            "create_collection": lambda: s.create_collection("new"),
            "ensure_collection": lambda: s.ensure_collection("new", alpha.config),
            "drop_collection": lambda: s.drop_collection("gamma"),
        }
        for what, write in writes.items():
            with pytest.raises(NeedsMigration) as err:
                write()
            assert isinstance(err.value, FormatMismatch), what  # FAILED_PRECONDITION over gRPC
            assert f"zembed migrate {old} NEW_DIR" in str(err.value), what
        # nothing changed, in memory either
        assert alpha.count() == len(fixture.expected("alpha"))
        assert alpha.search(x[:64], x, top_k=1)[0][0].id == "alpha-2-30"
        assert {c.name for c in s.list_collections()} == set(fixture.COLLECTIONS)
        # an existing collection with its configuration: nothing to write, so it is answered
        assert s.ensure_collection("alpha", alpha.config).count == alpha.count()
    assert state(old) == before


def test_snapshot_and_migrate_while_the_format1_store_is_served(old: Path, tmp_path: Path) -> None:
    before = state(old)
    with Store(old) as s:
        snap = s.snapshot(tmp_path / "snap")  # only reads: allowed; the copy is format 1 too
        # the upgrade needs no downtime: the old directory is served while another process converts it
        res = zembed("migrate", str(old), str(tmp_path / "new"))
        assert res.returncode == 0, res.stderr
        assert s.collection("alpha").count() == len(fixture.expected("alpha"))
    counts = {n: len(fixture.expected(n)) for n in fixture.COLLECTIONS}
    with Store(snap) as t:
        assert t.needs_migration is not None
        assert {c.name: c.count for c in t.list_collections()} == counts
    with Store(tmp_path / "new") as m:
        assert m.needs_migration is None and {c.name: c.count for c in m.list_collections()} == counts
    assert state(old) == before


def test_the_server_serves_a_format1_directory_read_only(
    old: Path, new: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``zembed serve --data OLD``'s start path (the store opened from the settings), real gRPC."""
    data = tmp_path / "data"
    old.rename(data)
    before = state(data)
    caplog.set_level(logging.WARNING, logger="zembed.server")
    srv = FakeServer(tmp_path, default_collection="docs")  # read-only: not created, no failure
    try:
        warned = [r for r in caplog.records if r.name == "zembed.server" and "READ-ONLY" in r.getMessage()]
        assert len(warned) == 1 and "zembed migrate" in warned[0].getMessage()
        ch = grpc.insecure_channel(srv.target)
        stub: Any = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        names = [c.name for c in stub.ListCollections(pb.ListCollectionsRequest()).collections]
        assert names == sorted(fixture.COLLECTIONS)
        got = stub.GetCollection(pb.GetCollectionRequest(name="alpha")).collection
        assert got.count == len(fixture.expected("alpha")) == new.collection("alpha").count()
        exp = fixture.expected("alpha")
        for target, x in queries("alpha"):
            req = pb.SearchRequest(
                collection="alpha", vectors=pb.Vectors(code=x[:64].tolist(), rescore=x.tolist()), top_k=5
            )
            hits = stub.Search(req).hits
            assert hits[0].id == target
            want = new.collection("alpha").search(x[:64], x, convert.search_params(req, 1000))[0]
            assert [(h.id, h.hamming) for h in hits] == [(h.id, h.hamming) for h in want]
            assert np.allclose([h.score for h in hits], [h.score for h in want], atol=1e-6)
        req = pb.SearchRequest(
            collection="alpha",
            vectors=pb.Vectors(code=x[:64].tolist(), rescore=x.tolist()),
            top_k=100,
            oversampling=20,
            filter=[pb.Condition(field="lang", any_of=[pb.MetadataValue(string_value="de")])],
        )
        de = {i for i, (_, m) in exp.items() if m.get("lang") == "de"}
        assert {h.id for h in stub.Search(req).hits} == de
        docs = stub.GetDocuments(
            pb.GetDocumentsRequest(collection="alpha", ids=["alpha-2-30", "alpha-1-0"], include_vectors=True)
        ).documents
        assert docs[0].found and not docs[1].found  # alpha-1-0 was deleted
        stored = new.collection("alpha").get(["alpha-2-30"], with_vectors=True)[0]
        assert stored is not None and stored.rescore is not None
        assert np.allclose(docs[0].rescore, stored.rescore)
        # writes: FAILED_PRECONDITION naming the command
        xs = exp["alpha-2-30"][0]
        doc = pb.Document(id="n", vectors=pb.Vectors(code=xs[:64].tolist(), rescore=xs.tolist()))
        for call, request in (
            (stub.Upsert, pb.UpsertRequest(collection="alpha", documents=[doc])),
            (stub.DeleteDocuments, pb.DeleteDocumentsRequest(collection="alpha", ids=["alpha-2-30"])),
            (stub.CreateCollection, pb.CreateCollectionRequest(name="more")),
            (stub.DeleteCollection, pb.DeleteCollectionRequest(name="gamma")),
            (stub.Calibrate, pb.CalibrateRequest(name="beta")),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call(request)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, call
            assert f"zembed migrate {data} NEW_DIR" in (err.value.details() or "")
        assert stub.GetCollection(pb.GetCollectionRequest(name="alpha")).collection.count == len(exp)
        ch.close()
    finally:
        srv.stop()
    assert state(data) == before


def test_http_writes_to_a_format1_directory_answer_409_naming_the_command(old: Path, tmp_path: Path) -> None:
    """The HTTP API (the hosted API's shape) on a read-only format-1 directory: reads answer, writes
    are a conflict with the store's state (409, not a server error) whose message says what to run."""
    import httpx

    data = tmp_path / "data"
    old.rename(data)
    before = state(data)
    srv = FakeServer(tmp_path, http_port=0)
    try:
        assert srv.running.http is not None
        base = f"http://127.0.0.1:{srv.running.http.port}/v1"
        with httpx.Client(base_url=base, timeout=30) as http:
            listed = http.post("/collections/get-collection-list", json={})
            assert listed.status_code == 200, listed.text
            assert listed.json()["collection_names"] == []  # the fixture's were made over gRPC
            r = http.post("/collections/add-collection", json={"collection_name": "more"})
            assert r.status_code == 409, (r.status_code, r.text)
            assert f"zembed migrate {data} NEW_DIR" in r.text
    finally:
        srv.stop()
    assert state(data) == before
