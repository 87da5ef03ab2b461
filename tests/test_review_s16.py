"""Review of the s16 changes (format-1 read-only serving, the reader split, the recent-query reservoir):
each test failed on the code before its fix (real LMDB in a temp dir, a real server on a loopback
port)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests import format1_fixture as fixture
from tests.fakes import FakeServer
from tests.test_format1_readonly import FIXTURE, state
from tests.test_migrate import zembed
from zembed.service.reservoir import MIN_QUERIES
from zembed.store import CollectionConfig, Store
from zembed.store import calibrate as calibration
from zembed.store.errors import FormatMismatch, Locked, WouldBlock
from zembed.store.migrate import migrate
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]

# What every format-1 release's writer did at open (store/layout.py _lock_directory since #7): an
# exclusive flock on the data directory itself, then LMDB with its reader table.
OLD_WRITER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("locked out", flush=True)
    sys.exit(3)
open(os.path.join(sys.argv[1], "zembed.lock"), "w").write(f"{os.getpid()}\\n")
print("writing", flush=True)
time.sleep(float(sys.argv[2]))
"""


def old_writer(path: Path, hold_s: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OLD_WRITER, str(path), str(hold_s)], stdout=subprocess.PIPE, text=True
    )
    return proc


@pytest.fixture
def old(tmp_path: Path) -> Path:
    path = tmp_path / "old"
    shutil.copytree(FIXTURE, path)
    return path


# ---------------------------------------------------------------------- format 1 and old writers
def test_an_old_release_cannot_start_writing_a_format1_directory_while_it_is_served(old: Path) -> None:
    """Served with ``lock=False`` (no LMDB reader table), a format-1 directory must keep an old
    release's writer out: its commits would reuse pages our read transactions are on."""
    with Store(old) as s:
        proc = old_writer(old, 0.0)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 3 and "locked out" in out, out
        assert s.collection("alpha").count() == len(fixture.expected("alpha"))
    # once closed, the directory is free again (the lock is released)
    proc = old_writer(old, 0.0)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "writing" in out, out


def test_a_format1_directory_an_old_release_writes_is_refused_as_locked(old: Path) -> None:
    """Opened while an earlier release writes it (the format not peeked: the directory is locked),
    a read-only open was told the directory "is served read-only, convert it with zembed migrate"
    (which then refuses, Locked); it is Locked, naming the writer, like the writing open."""
    proc = old_writer(old, 30.0)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        for readonly in (True, False):
            with pytest.raises(Locked) as err:
                Store(old, readonly=readonly)
            assert str(proc.pid) in str(err.value), readonly
        # the read-only open is not told to "open read-only" (the writing open cannot tell the format)
        with pytest.raises(Locked) as err:
            Store(old, readonly=True)
        assert "open read-only" not in str(err.value) and "earlier release" in str(err.value)
    finally:
        proc.kill()
        proc.communicate()


def test_migrate_refuses_while_an_old_release_writes_the_directory(old: Path, tmp_path: Path) -> None:
    """``zembed migrate`` reads without a reader slot: while an old release writes the directory its
    copy could be torn, so it refuses (Locked, naming the writer) and leaves nothing behind."""
    proc = old_writer(old, 30.0)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        with pytest.raises(Locked) as err:
            migrate(old, tmp_path / "new")
        assert str(proc.pid) in str(err.value) and "open read-only" not in str(err.value)
        assert not (tmp_path / "new").exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new")] == []
    finally:
        proc.kill()
        proc.communicate()
    # no writer: it converts (and may run while this build serves the directory read-only)
    os.unlink(old / "zembed.lock")
    before = state(old)
    with Store(old) as s:
        res = zembed("migrate", str(old), str(tmp_path / "new"))  # another process, as in an upgrade
        assert res.returncode == 0, res.stderr
        assert s.collection("gamma").count() == len(fixture.expected("gamma"))
    with Store(tmp_path / "new") as m:
        assert {c.name: c.count for c in m.list_collections()} == {
            n: len(fixture.expected(n)) for n in fixture.COLLECTIONS
        }
    assert state(old) == before


def test_flock_is_what_old_writers_take() -> None:
    """The premise of the two tests above: this build's writer (as every release's since #7) takes
    an exclusive flock on the directory; a shared one excludes it."""
    import tempfile

    with tempfile.TemporaryDirectory() as d, Store(Path(d)):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------- the recent-query reservoir
def _unit(rng: np.random.Generator, n: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = rng.standard_normal(n).astype(np.float32)
    out: np.ndarray[Any, np.dtype[np.float32]] = v / np.linalg.norm(v)
    return out


def _grow_after(
    tmp_path: Path, queries: list[pb.Vectors], bad: list[pb.Vectors], sampled: int | None = None
) -> pb.Collection:
    """A 64-bit collection of 100 documents, searched with ``queries`` (each must answer) and then
    ``bad`` (each must be refused INVALID_ARGUMENT), grown to 200: its table measured again."""
    rng = np.random.default_rng(11)
    with FakeServer(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        s = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        cfg = pb.CollectionConfig(code_bits=64, rescore_dims=64, calibration_sample=100)
        s.CreateCollection(pb.CreateCollectionRequest(name="c", config=cfg))

        def docs(b: int) -> list[pb.Document]:
            return [
                pb.Document(id=f"b{b}-{i}", vectors=pb.Vectors(code=_unit(rng, 64).tolist()))
                for i in range(100)
            ]

        s.Upsert(pb.UpsertRequest(collection="c", documents=docs(0)), timeout=60)
        for v in queries:
            assert len(s.Search(pb.SearchRequest(collection="c", vectors=v, top_k=5)).hits) == 5
        for v in bad:
            with pytest.raises(grpc.RpcError) as err:
                s.Search(pb.SearchRequest(collection="c", vectors=v, top_k=5))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert server.running.engine.recent_queries.count("c") == (sampled or len(queries))
        s.Upsert(pb.UpsertRequest(collection="c", documents=docs(1)), timeout=60)  # 200: due
        deadline = time.monotonic() + 60
        while True:
            got: pb.Collection = s.GetCollection(pb.GetCollectionRequest(name="c")).collection
            if got.measured_at == 200 or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


def test_refused_queries_do_not_replace_or_poison_the_sample(tmp_path: Path) -> None:
    """A query the search refuses (a code vector of the wrong length, a NaN) was recorded before the
    search checked it: the wrong length replaced the whole sample (other lengths: "the collection
    was made again"), a NaN made the background measurement fail; either way the table was not
    measured on the real queries."""
    rng = np.random.default_rng(3)
    good = [pb.Vectors(code=_unit(rng, 64).tolist()) for _ in range(MIN_QUERIES + 4)]
    nan = _unit(rng, 64)
    nan[5] = np.nan
    bad = [
        pb.Vectors(code=nan.tolist()),  # refused at the edge
        pb.Vectors(code=[0.0] * 64),  # refused by the store (a zero vector)
        pb.Vectors(code=_unit(rng, 32).tolist(), rescore=_unit(rng, 64).tolist()),  # code too short
    ]
    got = _grow_after(tmp_path, good, bad)
    assert got.measured_at == 200 and got.measured_with_samples


def test_queries_far_from_unit_length_are_sampled(tmp_path: Path) -> None:
    """The search takes any finite non-zero vector (it normalizes); the sample keeps float16 copies,
    and a component past float16's range (65504) became inf, so the measurement refused the sample.
    Tiny vectors (float16 underflow to zero) likewise."""
    rng = np.random.default_rng(4)
    big = [pb.Vectors(code=(_unit(rng, 64) * 1e6).tolist()) for _ in range(MIN_QUERIES // 2 + 2)]
    small = [pb.Vectors(code=(_unit(rng, 64) * 1e-9).tolist()) for _ in range(MIN_QUERIES // 2 + 2)]
    got = _grow_after(tmp_path, big + small, [])
    assert got.measured_at == 200 and got.measured_with_samples


def test_a_damaged_format1_code_key_is_reported_as_damage(old: Path) -> None:
    """A key of the wrong length in format 1's ``codes`` (a damaged file) made the row-id decoding
    raise numpy's ValueError (INTERNAL, "see the server log") before the check that names the
    damage; it is FormatMismatch naming the collection."""
    import lmdb

    env = lmdb.open(str(old), max_dbs=16, subdir=True)
    try:
        codes = env.open_db(b"codes", create=False)
        with env.begin(write=True) as txn:
            key, value = next(iter(txn.cursor(db=codes)))
            txn.put(bytes(key) + b"\x00", bytes(value), db=codes)
    finally:
        env.close()
    with pytest.raises(FormatMismatch) as err:
        Store(old, readonly=True)
    assert "damaged" in str(err.value)


# ---------------------------------------------------------------------- measure's one snapshot
def test_a_measurement_gives_way_to_a_map_resize(tmp_path: Path) -> None:
    """``measure`` reads one snapshot for the exact truth and every setting of the grid (one read
    transaction for the whole grid, several times longer than the truth). A map resize waits for
    every read transaction to end and every later reader (searches, writes) waits behind it, so a
    write that grew the map during a background re-measurement stalled the whole service until the
    grid was done. The measurement now gives way at the next setting (WouldBlock: measured again
    later) and the resize, and the readers behind it, go on."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((600, 32)).astype(np.float32)
    with Store(tmp_path / "s") as s:
        s.create_collection("m", CollectionConfig(code_bits=32, rescore_dims=32, calibration_sample=300))
        c = s.collection("m")
        c.upsert([f"d{i}" for i in range(len(x))], x)
        settings = 0
        in_grid, resize_waits = threading.Event(), threading.Event()

        def stop() -> bool:  # asked before each setting, inside the measurement's read transaction
            nonlocal settings
            settings += 1
            if settings == 2:
                in_grid.set()
                assert resize_waits.wait(30)
            return False

        outcome: list[object] = []

        def measure() -> None:
            try:
                outcome.append(c.measure(stop=stop))
            except Exception as exc:
                outcome.append(exc)

        m = threading.Thread(target=measure)
        m.start()
        assert in_grid.wait(60)
        grown = threading.Event()

        def grow() -> None:
            s.env._grow()
            grown.set()

        g = threading.Thread(target=grow)
        g.start()
        deadline = time.monotonic() + 30
        while not s.env.gate._resizing and time.monotonic() < deadline:
            time.sleep(0.005)
        assert s.env.gate._resizing  # the resize waits for the measurement's transaction
        resize_waits.set()
        assert grown.wait(60)
        # the resize went ahead while the grid had settings left: the measurement gave way
        m.join(60)
        g.join(60)
        assert len(outcome) == 1 and isinstance(outcome[0], WouldBlock), outcome
        assert "measure" in str(outcome[0])
        assert settings < len(calibration.GRID)
        # and it can be repeated
        assert c.measure().measured_at == len(x)
        assert c.search(x[0], top_k=1)[0][0].id == "d0"


def test_a_background_measurement_that_gave_way_keeps_its_query_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background re-measurement that gives way to a map resize (WouldBlock) is retried at the
    next write; the recent queries it had taken were dropped with it, so the retry measured on
    stored rows (or, where code and rescore vectors differ, waited for 32 new queries)."""
    rng = np.random.default_rng(12)
    with FakeServer(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        s = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        env = server.running.engine.store.env
        cfg = pb.CollectionConfig(code_bits=64, rescore_dims=64, calibration_sample=100)
        s.CreateCollection(pb.CreateCollectionRequest(name="c", config=cfg))

        def docs(b: int, n: int) -> list[pb.Document]:
            return [
                pb.Document(id=f"b{b}-{i}", vectors=pb.Vectors(code=_unit(rng, 64).tolist()))
                for i in range(n)
            ]

        s.Upsert(pb.UpsertRequest(collection="c", documents=docs(0, 100)), timeout=60)
        for _ in range(MIN_QUERIES + 8):
            q = pb.Vectors(code=_unit(rng, 64).tolist())
            assert len(s.Search(pb.SearchRequest(collection="c", vectors=q, top_k=5)).hits) == 5
        real = calibration.measure_by_search
        calls: list[int] = []

        def resize_meanwhile(run: Any, truth: Any, stop: Any = None) -> Any:
            calls.append(1)
            if len(calls) == 1:  # the first measurement meets a map resize in its grid
                t = threading.Thread(target=env._grow)
                t.start()
                deadline = time.monotonic() + 30
                while not env.gate._resizing and time.monotonic() < deadline:
                    time.sleep(0.005)
                try:
                    return real(run, truth, stop)
                finally:
                    threading.Thread(target=t.join).start()
            return real(run, truth, stop)

        monkeypatch.setattr(calibration, "measure_by_search", resize_meanwhile)
        s.Upsert(pb.UpsertRequest(collection="c", documents=docs(1, 100)), timeout=60)  # 200: due
        deadline = time.monotonic() + 60
        while (not calls or "c" in server.running.engine._measuring) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert calls and s.GetCollection(pb.GetCollectionRequest(name="c")).collection.measured_at == 100
        assert server.running.engine.recent_queries.count("c") == MIN_QUERIES + 8  # given back
        s.Upsert(pb.UpsertRequest(collection="c", documents=docs(2, 1)), timeout=60)  # still due: retried
        while time.monotonic() < deadline:
            got = s.GetCollection(pb.GetCollectionRequest(name="c")).collection
            if got.measured_at == 201:
                break
            time.sleep(0.02)
        assert got.measured_at == 201 and got.measured_with_samples


def test_a_repeated_query_is_sampled_once(tmp_path: Path) -> None:
    """A query searched again and again (a health probe, client retries, the HTTP API's grouped
    search rounds) filled the sample with copies of itself: 200 probes and 10 real queries made a
    "sample" of 128 mostly identical queries, more than the 32 needed, and the recall table
    (what recall_target chooses sizes from) was measured on one query. Repeats of a query already
    in the sample are not counted: here 11 distinct queries, too few, so stored rows are used."""
    rng = np.random.default_rng(13)
    probe = pb.Vectors(code=_unit(rng, 64).tolist())
    real = [pb.Vectors(code=_unit(rng, 64).tolist()) for _ in range(10)]
    queries = [probe] * 100 + real[:5] + [probe] * 100 + real[5:]
    got = _grow_after(tmp_path, queries, [], sampled=11)
    assert got.measured_at == 200 and not got.measured_with_samples
