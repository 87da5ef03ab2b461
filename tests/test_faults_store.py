"""Fault injection on the store, as a careless operator or a crash would do it: two processes on one
directory, a killed snapshot, truncated and corrupt data files, a full volume, a collection dropped
while it is searched. Each test fails on the code before the hardening of issue #7."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import small_config
from zembed.store import AlreadyExists, NotFound, Store
from zembed.store.errors import Damaged, DiskFull, Locked
from zembed.store.layout import _META

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SNAPSHOT_KILLS = int(os.environ.get("ZEMBED_SNAPSHOT_KILLS", "12"))


def vecs(seed: int, n: int, dims: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)


def fill(path: Path, n: int = 200, seed: int = 0) -> np.ndarray:
    x = vecs(seed, n)
    with Store(path) as s:
        s.create_collection("c", small_config(rescore_dtype="float32"))
        s.collection("c").upsert([f"d{i}" for i in range(n)], x[:, :64], x)
    return x


def run_py(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def zembed(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zembed.service.cli", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---------------------------------------------------------------- 1. two processes, one directory
def test_second_writer_in_this_process_is_refused_with_the_holder(tmp_path: Path) -> None:
    with Store(tmp_path / "d"), pytest.raises(Locked) as err:
        Store(tmp_path / "d")
    assert str(tmp_path / "d") in str(err.value) and f"process {os.getpid()}" in str(err.value)
    Store(tmp_path / "d").close()  # the lock went with the first store


def test_second_writer_process_is_refused_and_readers_are_not(tmp_path: Path) -> None:
    path = tmp_path / "d"
    x = fill(path)
    with Store(path) as s:
        proc = run_py(
            """
            import sys
            from zembed.store import Store
            from zembed.store.errors import Locked
            try:
                Store(sys.argv[1])
            except Locked as exc:
                print(exc)
                sys.exit(3)
            """,
            str(path),
        )
        assert proc.returncode == 3, proc.stderr
        assert str(path) in proc.stdout and f"process {os.getpid()}" in proc.stdout
        # a read-only opener (a backup tool) is let in and sees the data
        proc = run_py(
            """
            import sys
            from zembed.store import Store
            with Store(sys.argv[1], readonly=True) as s:
                print(s.collection("c").count())
            """,
            str(path),
        )
        assert proc.returncode == 0 and proc.stdout.strip() == "200", proc.stderr
        s.collection("c").upsert(["new"], x[:1, :64], x[:1])  # the holder still writes
        # `zembed snapshot` works while the directory is held
        snap = zembed("snapshot", str(path), str(tmp_path / "snap"))
        assert snap.returncode == 0, snap.stderr
    with Store(tmp_path / "snap", readonly=True) as copy:
        assert copy.collection("c").count() == 201


def test_a_lock_bypass_still_never_reuses_a_row(tmp_path: Path) -> None:
    """Two writers that both got in (the lock patched away in the second): every acknowledged
    document keeps its own vector, because row ids are allocated inside the write transaction."""
    path = tmp_path / "d"
    a = Store(path)
    a.create_collection("c", small_config(rescore_dtype="float32"))
    xa, xb, xc = vecs(1, 100), vecs(2, 100), vecs(3, 100)
    a.collection("c").upsert([f"a{i}" for i in range(100)], xa[:, :64], xa)
    proc = run_py(
        """
        import os, sys
        import numpy as np
        import zembed.store.layout as layout
        layout._lock_directory = lambda path: os.open(os.devnull, os.O_RDONLY)  # bypass
        from zembed.store import Store
        x = np.random.default_rng(2).normal(size=(100, 96)).astype(np.float32)
        with Store(sys.argv[1]) as s:
            s.collection("c").upsert([f"b{i}" for i in range(100)], x[:, :64], x)
        """,
        str(path),
    )
    assert proc.returncode == 0, proc.stderr
    a.collection("c").upsert([f"c{i}" for i in range(100)], xc[:, :64], xc)
    a.close()
    with Store(path) as s:
        c = s.collection("c")
        assert c.count() == 300
        for prefix, x in (("a", xa), ("b", xb), ("c", xc)):
            recs = c.get([f"{prefix}{i}" for i in range(100)], with_vectors=True)
            got = np.stack([r.rescore for r in recs if r is not None and r.rescore is not None])
            assert got.shape == (100, 96)
            want = x / np.linalg.norm(x, axis=1, keepdims=True)
            np.testing.assert_allclose(got / np.linalg.norm(got, axis=1, keepdims=True), want, atol=1e-6)


# ---------------------------------------------------------------- 2. killed snapshots, damaged files
def open_in_child(path: Path) -> subprocess.CompletedProcess[str]:
    """Open a store in a child process: a signal there shows as a negative return code."""
    return run_py(
        """
        import sys
        from zembed.store import Store
        from zembed.store.errors import StoreError
        try:
            with Store(sys.argv[1], readonly=True) as s:
                print(sum(c.count for c in s.list_collections()))
        except StoreError as exc:
            print(exc, file=sys.stderr)
            sys.exit(2)
        """,
        str(path),
    )


def test_sigkill_during_snapshot_never_leaves_a_store_that_crashes_its_opener(tmp_path: Path) -> None:
    path = tmp_path / "d"
    n = 4000
    x = vecs(0, n, 1024)
    with Store(path) as s:
        s.create_collection("c", small_config(code_bits=64, rescore_dims=1024, rescore_dtype="float32"))
        s.collection("c").upsert([f"d{i}" for i in range(n)], x[:, :64], x)
    rnd = random.Random(11)
    complete = partial = 0
    for k in range(SNAPSHOT_KILLS):
        out = tmp_path / "snaps" / f"s{k}"
        child = subprocess.Popen(
            [sys.executable, "-m", "zembed.service.cli", "snapshot", str(path), str(out)],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # kill inside the copy whatever the start-up takes (0.5 s idle, several seconds on a loaded
        # machine): wait until the copy has begun (its partial directory exists), then a random moment
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None and not out.exists():
            if any((tmp_path / "snaps").glob(f".s{k}.partial-*")):
                break
            time.sleep(0.005)
        time.sleep(rnd.uniform(0, 0.08))  # the copy of 16 MB and its fsyncs: tens of ms
        child.send_signal(signal.SIGKILL)
        child.wait()
        if out.exists():
            complete += 1
            res = open_in_child(out)
            assert res.returncode == 0 and res.stdout.strip() == str(n), res.stderr
        # whatever the kill left beside it: opening it is refused or works, never a signal
        for left in (tmp_path / "snaps").glob(f".s{k}.partial-*"):
            partial += 1
            if (left / "data.mdb").exists():
                res = open_in_child(left)
                assert res.returncode in (0, 2), (res.returncode, res.stderr)
                if res.returncode == 2:
                    assert "data.mdb" in res.stderr and "restore" in res.stderr
            shutil.rmtree(left)
    assert complete + partial >= 1
    print(f"snapshot kills: {SNAPSHOT_KILLS}, complete {complete}, partial left beside {partial}")


@pytest.mark.parametrize("size", [0, 4096, 8192, 12 * 1024, -4096])
def test_truncated_data_file_is_refused_with_one_clear_line(tmp_path: Path, size: int) -> None:
    path = tmp_path / "d"
    fill(path, 2000)
    data = path / "data.mdb"
    with open(data, "r+b") as f:
        meta = _META.unpack(f.read(_META.size))
        used = (meta[11] + 1) * meta[9]  # the file is preallocated past this: cut inside it
        f.truncate(size if size >= 0 else used + size)
    res = open_in_child(path)
    assert res.returncode == 2, (res.returncode, res.stderr)
    line = res.stderr.strip()
    assert "\n" not in line and str(data) in line and "truncated" in line and "restore" in line
    with pytest.raises(Damaged):
        Store(path)
    snap = zembed("snapshot", str(path), str(tmp_path / "out"))
    assert snap.returncode == 2 and "truncated" in snap.stderr and "Traceback" not in snap.stderr


def test_foreign_or_overwritten_data_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d"
    fill(path, 50)
    data = path / "data.mdb"
    with open(data, "r+b") as f:
        f.write(os.urandom(8192))  # both meta pages
    res = open_in_child(path)
    assert res.returncode == 2 and "not an LMDB data file" in res.stderr, (res.returncode, res.stderr)
    with pytest.raises(Damaged):
        Store(path)


# ---------------------------------------------------------------- 3. a full volume
@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "vol"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (this test fills a filesystem to its last byte)")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True, check=False
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()}): needs CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_volume_refuses_with_disk_full_loses_nothing_and_recovers(small_volume: Path) -> None:
    path = small_volume / "d"
    ballast = small_volume / "ballast"
    ballast.write_bytes(b"\0" * (2 << 20))  # what the operator frees later
    s = Store(path)
    s.create_collection("c", small_config(code_bits=64, rescore_dims=1024, rescore_dtype="float32"))
    c = s.collection("c")
    acked: list[int] = []
    error: DiskFull | None = None
    for b in range(1000):
        x = vecs(b, 50, 1024)
        try:
            c.upsert([f"b{b}-{i}" for i in range(50)], x[:, :64], x)
        except DiskFull as exc:
            error = exc
            break
        acked.append(b)
    assert error is not None, "the volume never filled"
    assert str(path) in str(error) and "no space left" in str(error) and error.free_bytes < 1 << 20
    failed = len(acked)
    assert c.get([f"b{failed}-0"]) == [None]  # the failed batch left nothing
    assert c.count() == 50 * len(acked)
    # space comes back (an operator deletes something): writes resume in the same process
    ballast.unlink()
    x = vecs(5000, 5, 1024)
    c.upsert([f"resumed-{i}" for i in range(5)], x[:, :64], x)
    s.close()
    with Store(path) as s2:
        c2 = s2.collection("c")
        assert c2.count() == 50 * len(acked) + 5
        assert all(r is not None for r in c2.get([f"b{b}-49" for b in acked]))
        c2.delete([f"b{b}-{i}" for b in acked[: len(acked) // 2] for i in range(50)])
        x = vecs(9999, 5, 1024)
        c2.upsert([f"after-{i}" for i in range(5)], x[:, :64], x)
        assert c2.get(["after-4"])[0] is not None


# ---------------------------------------------------------------- 4. drop while searching
def test_drop_during_searches_ends_every_search_at_once(tmp_path: Path) -> None:
    """Searches, upserts and drop/create racing on one collection: every call ends promptly with a
    result or NotFound (before: a search spun ~10 s through 100,000 read transactions)."""
    s = Store(tmp_path / "d")
    x = vecs(0, 2000)
    stop = threading.Event()
    worst: list[float] = []  # searches
    writes: list[float] = []
    errors: list[BaseException] = []

    def searcher() -> None:
        rng = np.random.default_rng(threading.get_ident() % 1000)
        while not stop.is_set():
            t = time.perf_counter()
            try:
                q = rng.normal(size=96).astype(np.float32)
                s.collection("c").search(q[:64], q, top_k=5)
            except NotFound:
                pass
            except BaseException as exc:
                errors.append(exc)
            worst.append(time.perf_counter() - t)

    def writer() -> None:
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            try:
                s.collection("c").upsert(
                    [f"w{i}"], x[i % 2000 : i % 2000 + 1, :64], x[i % 2000 : i % 2000 + 1]
                )
            except NotFound:
                pass
            except BaseException as exc:
                errors.append(exc)
            writes.append(time.perf_counter() - t)
            i += 1

    threads = [threading.Thread(target=searcher) for _ in range(3)] + [threading.Thread(target=writer)]
    s.create_collection("c", small_config(rescore_dtype="float32"))
    s.collection("c").upsert([f"d{i}" for i in range(2000)], x[:, :64], x)
    for t in threads:
        t.start()
    try:
        for _ in range(15):
            time.sleep(0.05)
            s.drop_collection("c")
            time.sleep(0.02)
            s.create_collection("c", small_config(rescore_dtype="float32"))
            s.collection("c").upsert([f"d{i}" for i in range(500)], x[:500, :64], x[:500])
    finally:
        stop.set()
        for t in threads:
            t.join()
    s.close()
    assert not errors, errors[:3]
    # searches never wait on a drop; writes queue behind the drop/create/calibrate transactions
    assert worst and max(worst) < 1.0, f"slowest search {max(worst):.3f} s"
    assert writes and max(writes) < 10.0, f"slowest write {max(writes):.3f} s"
    p99 = np.quantile(worst, 0.99) * 1000
    print(
        f"searches: {len(worst)}, slowest {max(worst) * 1000:.1f} ms, p99 {p99:.1f} ms; "
        f"writes: {len(writes)}, slowest {max(writes) * 1000:.1f} ms"
    )


def test_search_of_a_dropped_collection_object_is_not_found_at_once(tmp_path: Path) -> None:
    with Store(tmp_path / "d") as s:
        fill_x = vecs(0, 10)
        s.create_collection("c", small_config(rescore_dtype="float32"))
        coll = s.collection("c")
        coll.upsert([f"d{i}" for i in range(10)], fill_x[:, :64], fill_x)
        s.drop_collection("c")
        t = time.perf_counter()
        with pytest.raises(NotFound):
            coll.search(fill_x[0, :64], fill_x[0])
        with pytest.raises(NotFound):
            coll.search(fill_x[0, :64], fill_x[0], wait=False)
        assert time.perf_counter() - t < 0.5


# ---------------------------------------------------------------- from the adversarial review
def test_upsert_racing_add_filterable_indexes_the_new_field(tmp_path: Path) -> None:
    with Store(tmp_path / "d") as s:
        s.create_collection("c", small_config(filterable=()))
        c = s.collection("c")
        x = vecs(0, 2)
        c.upsert(["old"], x[:1, :64], x[:1], [{"lang": "de"}])
        done = threading.Event()
        with s.env.write_lock:  # the upsert below waits here, as behind a concurrent writer

            def upsert() -> None:
                c.upsert(["new"], x[1:, :64], x[1:], [{"lang": "de"}])
                done.set()

            t = threading.Thread(target=upsert)
            t.start()
            time.sleep(0.3)
            s.add_filterable("c", ["lang"])
        t.join(10)
        assert done.is_set()
        q = x[0]
        assert {h.id for h in c.search(q[:64], q, top_k=5, filter={"lang": "de"})[0]} == {"old", "new"}
    with Store(tmp_path / "d") as s:
        hits = s.collection("c").search(q[:64], q, top_k=5, filter={"lang": "de"})[0]
        assert {h.id for h in hits} == {"old", "new"}


def test_deleting_the_pid_file_does_not_let_a_second_writer_in(tmp_path: Path) -> None:
    with Store(tmp_path / "d"):
        (tmp_path / "d" / "zembed.lock").unlink()
        with pytest.raises(Locked):
            Store(tmp_path / "d")


def test_a_killed_readers_slot_is_cleared_while_the_server_runs(tmp_path: Path) -> None:
    """A backup tool killed mid-read leaves its LMDB reader slot; its snapshot would pin old pages
    and the file would grow without bound. The writer clears it when the file is extended."""
    path = tmp_path / "d"
    with Store(path) as s:
        s.create_collection("c", small_config(code_bits=64, rescore_dims=1024, rescore_dtype="float32"))
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time, lmdb; e = lmdb.open(sys.argv[1], readonly=True, max_dbs=16); "
                "t = e.begin(); print('reading', flush=True); time.sleep(60)",
                str(path),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "reading"
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        before = s.env.stale_readers_cleared
        x = vecs(0, 6000, 1024)  # ~25 MB: past the preallocated room, so the file is extended
        s.collection("c").upsert([f"d{i}" for i in range(6000)], x[:, :64], x)
        assert s.env.stale_readers_cleared - before >= 1


def test_snapshot_leftovers_of_dead_processes_are_removed_and_names_are_unique(tmp_path: Path) -> None:
    with Store(tmp_path / "d") as s:
        s.create_collection("c", small_config())
        dead = tmp_path / "snaps" / ".old.partial-999999999-1"
        dead.mkdir(parents=True)
        (dead / "data.mdb").write_bytes(b"\0" * 4096)
        s.snapshot(tmp_path / "snaps" / "a")
        assert not dead.exists() and (tmp_path / "snaps" / "a" / "data.mdb").exists()
        with pytest.raises(FileExistsError):
            s.snapshot(tmp_path / "snaps" / "a")
        with pytest.raises(AlreadyExists):
            s.snapshot(tmp_path / "snaps" / "a")
