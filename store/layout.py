"""LMDB layout: one environment per data directory, named sub-databases, keys, the format record.

Format 2. Sub-databases (keys are big-endian so that a collection's rows sort by row id and appends
stay sequential; ``cid`` is a collection's u32 number, ``rowid`` a u64 that only grows):

=========  ===============================  ======================================================
name       key                              value
=========  ===============================  ======================================================
meta       ``format``                       JSON format record (checked on open, before any write)
meta       ``next_cid``                     the next collection number (decimal text)
meta       ``coll:<name>``                  JSON collection record: config, cid, next row id,
                                            count, tombstones, generation, calibration
meta       ``gen:`` + cid                   the collection's generation (u64 BE), bumped per write
ids        cid + external id (UTF-8)        rowid (u64 BE)
rows       cid + rowid                      external id (UTF-8)
docs       cid + rowid                      metadata as compact JSON (absent when empty)
fkeys      cid + rowid                      JSON of the filterable fields only (fast index rebuild)
calib      cid + rowid                      float32 code-dims vector, kept until calibration is final
dead       cid + rowid                      empty: a tombstone (the row's slot in its run is garbage
                                            until the collection is compacted)
cblocks    cid + first rowid of a run       packed codes of the run's rows (``np.packbits``,
                                            unpadded, ``code_bytes`` each; see ``store.blocks``)
vblocks    cid + first rowid of a run       rescore records of the same rows (see
                                            ``quantize.rescore_records``), fixed size each
=========  ===============================  ======================================================

Format 1 (releases before issue #10) had no ``dead``, ``cblocks``, ``vblocks``; instead one code and
one rescore record per key, with gaps in the row ids where rows were deleted:

=========  ===============================  ======================================================
codes      cid + rowid                      the row's packed code (``code_bytes``)
vecs       cid + rowid                      the row's rescore record (``record_bytes``)
=========  ===============================  ======================================================

A format-1 directory is opened **read-only** (``Env.format == 1``, ``Env.needs_migration`` holds the
message): no byte of it is written (no format record, no sub-database created, no preallocation,
neither ``zembed.lock`` nor LMDB's ``lock.mdb`` created), every read is served (``store.format1``
reads its rows), and every write is refused with :class:`NeedsMigration` naming ``zembed migrate
OLD NEW_DIR``, which converts it into a new directory (``store.migrate``) without writing to the old
one.

The map grows on demand: a write that hits ``MapFullError`` is aborted, the map is doubled while no
read transaction is open (readers and the resize share a readers-writer gate), and the write retried.

One writing process per directory: a writable open takes an exclusive ``flock`` on ``zembed.lock``
(held for the life of the environment, the holder's pid written inside) and a second writable open,
in this process or another, is refused with :class:`Locked`. Read-only opens (backups, snapshots)
take no lock. Before LMDB maps ``data.mdb``, its two meta pages are read with plain file reads and
the file's size checked against the newest one, so a truncated or foreign file is refused with
:class:`Damaged` instead of a SIGBUS on the first page touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import numpy as np
import numpy.typing as npt

from zembed.store.errors import (
    Damaged,
    DiskFull,
    FormatMismatch,
    Locked,
    NeedsMigration,
    StoreError,
    WouldBlock,
)

FORMAT_NAME = "zembed-store"
FORMAT_VERSION = 2
# preallocation ahead of use: an eighth of the used size, between these bounds (issue #10: a
# one-document store takes ~1 MiB, a large one at most 1/8 more than it uses)
PREALLOCATE_MIN = 1 << 20
PREALLOCATE_MAX = 1 << 30
SUBDBS = ("meta", "ids", "rows", "docs", "fkeys", "calib", "dead", "cblocks", "vblocks")
V1_SUBDBS = ("meta", "ids", "rows", "codes", "vecs", "docs", "fkeys", "calib")  # format 1 (read-only)
ROW_SUBDBS = ("rows", "docs", "fkeys", "calib")
BLOCK_SUBDBS = ("cblocks", "vblocks")

T = TypeVar("T")

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_CID_ROW = struct.Struct(">IQ")
LOCK_FILE = "zembed.lock"
DATA_FILE = "data.mdb"
# LMDB's meta page (64-bit build): page header 16 bytes, then mm_magic u32, mm_version u32,
# mm_address, mm_mapsize, two MDB_db records of 48 bytes (the first's md_pad holds the page size),
# mm_last_pg, mm_txnid.
_LMDB_MAGIC = 0xBEEFC0DE
_META = struct.Struct("<QHHHHIIQQI44xI44xQQ")
# a commit that fails with one of these on a volume with less than this free is "disk full"
_DISK_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG}
DISK_FULL_MARGIN = 64 << 20
_COPY_LOCK = threading.Lock()
_DAMAGE_ERRORS = (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError, lmdb.PanicError)


def row_key(cid: int, rowid: int) -> bytes:
    return _CID_ROW.pack(cid, rowid)


def row_keys(cid: int, rowids: npt.NDArray[np.int64]) -> list[bytes]:
    """``row_key`` for many row ids at once."""
    arr = np.empty(len(rowids), dtype=[("cid", ">u4"), ("row", ">u8")])
    arr["cid"] = cid
    arr["row"] = rowids
    keys: list[bytes] = arr.view("V12").tolist()  # raw void items come out as bytes, in C
    return keys


def pack_rowids(rowids: npt.NDArray[np.int64]) -> list[bytes]:
    """``pack_rowid`` for many row ids at once."""
    values: list[bytes] = np.asarray(rowids).astype(">u8").view("V8").tolist()
    return values


def rowid_of(key: bytes) -> int:
    return int(_CID_ROW.unpack(key)[1])


def id_key(cid: int, ext_id: str) -> bytes:
    return _U32.pack(cid) + ext_id.encode("utf-8")


def cid_prefix(cid: int) -> bytes:
    return _U32.pack(cid)


def pack_rowid(rowid: int) -> bytes:
    return _U64.pack(rowid)


def unpack_rowid(value: bytes) -> int:
    return int(_U64.unpack(value)[0])


class _Gate:
    """Readers-writer gate: many read transactions, or one map resize."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextlib.contextmanager
    def read(self, wait: bool = True) -> Iterator[None]:
        """Shared access; with ``wait`` off, :class:`WouldBlock` instead of waiting out a resize."""
        with self._cond:
            if self._resizing and not wait:
                raise WouldBlock("the map is being resized")
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class Env:
    """The LMDB environment of one data directory, with its sub-databases and growth policy."""

    def __init__(self, path: Path, *, map_size: int, max_readers: int, readonly: bool = False) -> None:
        self.path = path
        # format 1 (an earlier release) is served read-only and never written (see the module doc)
        self.format = FORMAT_VERSION
        self.needs_migration: str | None = None
        if stored_version(path) == 1:
            self.format, readonly = 1, True
            self.needs_migration = migration_message(path)
        self.readonly = readonly
        self._lock_fd: int | None = None
        if readonly:
            if not (path / DATA_FILE).exists():
                raise Damaged(str(path / DATA_FILE), "no such file (not a zembed data directory)")
            if self.format == 1:  # read without LMDB's reader table: keep an old release's writer out
                self._lock_fd = share_directory(path)
        else:
            path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock_directory(path)
        existed = (path / DATA_FILE).exists()
        try:
            check_data_file(path / DATA_FILE)
            try:
                self.env = lmdb.open(
                    str(path),
                    map_size=map_size,
                    max_dbs=len(SUBDBS) + 2,
                    max_readers=max_readers,
                    sync=True,
                    metasync=True,
                    readahead=False,
                    subdir=True,
                    lock=self.format != 1,  # nothing writes format 1: no reader table needed
                    readonly=readonly,
                )
                self.map_size = int(self.env.info()["map_size"])
                # the format is checked before any other sub-database is created: a directory of
                # another format is never written to
                meta = self.env.open_db(b"meta", create=not readonly and not existed)
                self._check_format_record(meta)
                names = V1_SUBDBS if self.format == 1 else SUBDBS
                self.dbs = {name: self.env.open_db(name.encode(), create=not readonly) for name in names}
            except (
                lmdb.InvalidError,
                lmdb.CorruptedError,
                lmdb.VersionMismatchError,
                lmdb.PanicError,
            ) as exc:
                raise Damaged(str(path / DATA_FILE), f"LMDB refuses it ({exc})") from None
            except lmdb.NotFoundError as exc:
                raise Damaged(str(path / DATA_FILE), f"a sub-database is missing ({exc})") from None
        except BaseException:
            if hasattr(self, "env"):
                self.env.close()
            self._unlock()
            raise
        self.page_size = int(self.env.stat()["psize"])
        self.stale_readers_cleared = 0
        if not readonly:
            self.clear_stale_readers()
        self._preallocate = not readonly
        self._allocated = (path / DATA_FILE).stat().st_size if (path / DATA_FILE).exists() else 0
        self.gate = _Gate()
        self.write_lock = threading.RLock()
        self.resizes = 0

    def check_format(self) -> None:
        """Write the format record into a new environment (the existing one was checked at open)."""
        with self.env.begin(write=False) as txn:
            raw = get(txn, b"format", self.dbs["meta"])
        if raw is None:
            if self.readonly:
                raise Damaged(str(self.path / DATA_FILE), "it holds no format record (not a zembed store)")
            self.write(lambda txn: txn.put(b"format", self._format_record(), db=self.dbs["meta"]))

    def _check_format_record(self, meta: Any) -> None:
        with self.env.begin(write=False) as txn:
            raw = get(txn, b"format", meta)
        if raw is None:
            return
        rec = json.loads(raw)
        if rec.get("format") == FORMAT_NAME and rec.get("version") == 1:
            if self.format == 1:
                return
            # not peeked: an earlier release's writer holds the directory (Locked, naming it), or
            # it became format 1 since the peek
            os.close(share_directory(self.path))
            raise NeedsMigration(migration_message(self.path))
        if rec.get("format") != FORMAT_NAME or rec.get("version") != FORMAT_VERSION:
            raise FormatMismatch(
                f"data directory {self.path} holds format {rec.get('format')!r} version "
                f"{rec.get('version')!r}; this build reads {FORMAT_NAME!r} version {FORMAT_VERSION}. "
                "Open it with a matching zembed-serve release, or restore into a new directory."
            )

    def check_writable(self) -> None:
        """:class:`NeedsMigration` (FAILED_PRECONDITION over gRPC) for a format-1 directory: it is
        served read-only until ``zembed migrate`` converts it."""
        if self.needs_migration is not None:
            raise NeedsMigration(f"writes are refused: {self.needs_migration}")

    @staticmethod
    def _format_record() -> bytes:
        return json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION}).encode()

    @contextlib.contextmanager
    def reader(self, *, buffers: bool = False, wait: bool = True) -> Iterator[lmdb.Transaction[Any]]:
        """A read transaction (a consistent snapshot of the whole environment).

        With ``buffers`` on, ``txn.get`` returns zero-copy views into the map, valid until it ends.
        With ``wait`` off, :class:`WouldBlock` rather than waiting for a map resize to finish.
        """
        with self.gate.read(wait), self.env.begin(write=False, buffers=buffers) as txn:  # type: ignore[call-overload]
            yield txn

    def write(self, fn: Callable[[lmdb.Transaction], T], *, reserve: int = 0) -> T:
        """Run ``fn`` in one write transaction and commit with sync; grow the map and retry if full.

        ``fn`` must have no side effects outside the transaction (it may run more than once).
        ``reserve``: about how many bytes the transaction adds (a bulk batch's blocks and trees):
        the map is grown for them before it starts, so a large batch does not run twice (map full,
        grow, retry). The file's blocks are not reserved for it: ``posix_fallocate`` of a batch's
        bytes before its transaction measured slower here than the reserve kept after each commit
        (below; unwritten extents are converted at the commit's sync).
        """
        if self.readonly:
            raise StoreError(f"data directory {self.path} is open read-only; writes are refused")
        with self.write_lock:
            if reserve > 0:
                while self._used() + reserve > self.map_size:
                    self._grow()
            while True:
                try:
                    with self.gate.read():
                        txn = self.env.begin(write=True)
                        try:
                            result = fn(txn)
                        except BaseException:
                            txn.abort()
                            raise
                        txn.commit()
                    self._allocate_ahead()
                    return result
                except lmdb.MapFullError:
                    self._grow()
                except lmdb.Error as exc:
                    raise self._disk_error(exc) from exc

    def free_bytes(self) -> int:
        """Bytes free on the data volume (for unprivileged users)."""
        return int(shutil.disk_usage(self.path).free)

    def _disk_error(self, exc: lmdb.Error) -> BaseException:
        """:class:`DiskFull` for a commit that failed for lack of space (LMDB often reports EIO)."""
        # py-lmdb carries no errno: the C error text is the last argument
        text = str(exc)
        disk = isinstance(exc, lmdb.DiskError) or any(os.strerror(e) in text for e in _DISK_ERRNOS)
        free = self.free_bytes()
        if disk and free < DISK_FULL_MARGIN:
            return DiskFull(str(self.path), free)
        return exc

    def _used(self) -> int:
        return int(self.env.info()["last_pgno"] + 1) * self.page_size

    def _allocate_ahead(self) -> None:
        """Reserve file blocks ahead of LMDB's writes.

        Growing data.mdb block by block at each synced commit costs the filesystem an allocation per
        page (measured here: bulk upserts 2-3x slower); ``posix_fallocate`` reserves them in one call,
        ahead of use: an eighth of the used size more (at least 1 MiB, at most 1 GiB), never past the
        map size. So the file is at most ~1.13x its used size (issue #10: it was 2x + 16 MiB, and a
        one-document store took 257 MB when it was 2x + 256 MiB).
        """
        if not self._preallocate:
            return
        used = self._used()
        if used + PREALLOCATE_MIN // 2 <= self._allocated:
            return
        self.clear_stale_readers()
        ahead = min(max(used // 8, PREALLOCATE_MIN), PREALLOCATE_MAX)
        target = min(used + ahead, self.map_size)
        try:
            fd = os.open(self.path / DATA_FILE, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, target)
            finally:
                os.close(fd)
            self._allocated = target
        except OSError as exc:
            if exc.errno not in _DISK_ERRNOS:
                self._preallocate = False  # not supported here: LMDB grows the file itself
            # out of space: LMDB's own writes get what is left; try again after a later commit

    def clear_stale_readers(self) -> int:
        """Free reader slots of processes that died holding a read transaction (a killed backup or
        `zembed snapshot`): their snapshot would otherwise pin old pages and the file would grow
        without bound. Called at open, before growing the map and when the file is extended."""
        cleared = int(self.env.reader_check())
        self.stale_readers_cleared += cleared
        return cleared

    def _grow(self) -> None:
        self.clear_stale_readers()
        with self.gate.exclusive():
            self.map_size *= 2
            self.env.set_mapsize(self.map_size)
            self.resizes += 1

    def copy(self, dest: Path) -> None:
        """Compacting hot copy into ``dest`` (absent or empty); readers and the writer keep going.

        The copy is written to a temporary sibling directory, fsynced, and renamed into place only
        when complete: ``dest`` never holds a partial copy, whatever kills this process. Leftovers of
        killed copies (their process gone) are removed first; copies are serialized per process.
        """
        with _COPY_LOCK:
            if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
                raise FileExistsError(f"snapshot directory {dest} is not empty")
            dest.parent.mkdir(parents=True, exist_ok=True)
            _remove_dead_partials(dest.parent)
            tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}-{threading.get_ident()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                for attempt in (0, 1):
                    try:
                        with self.gate.read():
                            self.env.copy(str(tmp), compact=True)
                        break
                    except lmdb.MapResizedError:
                        if attempt:
                            raise
                        self.env.set_mapsize(0)  # the writer grew the map: adopt its size, retry
                        for f in tmp.iterdir():
                            f.unlink()
                for f in tmp.iterdir():
                    _fsync_path(f)
                _fsync_path(tmp)
                if dest.exists():
                    dest.rmdir()
                os.rename(tmp, dest)
                _fsync_path(dest.parent)
            except lmdb.Error as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                free = int(shutil.disk_usage(dest.parent).free)
                text = str(exc)
                if isinstance(exc, lmdb.DiskError) or any(os.strerror(e) in text for e in _DISK_ERRNOS):
                    raise DiskFull(str(dest.parent), free) from None
                raise StoreError(f"snapshot into {dest} failed: {exc}") from None
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if exc.errno in _DISK_ERRNOS:
                    raise DiskFull(str(dest.parent), int(shutil.disk_usage(dest.parent).free)) from None
                raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    def close(self) -> None:
        """Close once every transaction in flight has ended (a search or measurement still reading
        the map in a worker thread would otherwise fault on unmapped pages); later ones then fail
        with lmdb's "closed" error instead."""
        with self.gate.exclusive():
            self.env.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def stat(self) -> dict[str, Any]:
        return dict(self.env.info())

    def usage(self) -> dict[str, int]:
        """``bytes_in_use``: pages the B-trees reference (the meta pages, every sub-database's branch,
        leaf and overflow pages; free pages not counted); ``bytes_allocated``: disk blocks the data
        file takes (``st_blocks``, preallocation included); ``tree_bytes`` / ``overflow_bytes``:
        in-use pages that hold keys and small values, and those of large values; ``block_bytes``: the
        pages of the code and vector blocks (``cblocks``, ``vblocks``)."""
        psize = self.page_size
        tree = overflow = blocks = 0
        with self.reader() as txn:
            for name, db in (("", None), *self.dbs.items()):
                st = txn.stat(db) if db is not None else self.env.stat()
                pages = (st["branch_pages"] + st["leaf_pages"]) * psize
                tree += pages
                overflow += st["overflow_pages"] * psize
                if name in BLOCK_SUBDBS:
                    blocks += pages + st["overflow_pages"] * psize
        try:
            allocated = (self.path / DATA_FILE).stat().st_blocks * 512
        except FileNotFoundError:
            allocated = 0
        meta = 2 * psize
        return {
            "bytes_in_use": tree + overflow + meta,
            "bytes_allocated": int(allocated),
            "tree_bytes": tree,
            "overflow_bytes": overflow,
            "block_bytes": blocks,
        }


def _lock_directory(path: Path) -> int:
    """Take the directory's exclusive writer lock (held until the fd closes) and write our pid in
    ``zembed.lock``. The lock is on the directory itself, so deleting the pid file (a "stale lock"
    clean-up) cannot let a second writer in."""
    fd = _flock(path, fcntl.LOCK_EX, "stop it, or open read-only")
    try:
        (path / LOCK_FILE).write_text(f"{os.getpid()}\n")
    except BaseException:
        os.close(fd)
        raise
    return fd


def share_directory(path: Path) -> int:
    """A shared lock on the directory (held until the returned fd closes): every release's writer
    takes it exclusively (:func:`_lock_directory`), so while a format-1 directory is read without
    LMDB's reader table (served read-only, or converted by ``zembed migrate``) no writer of an earlier
    release can start and reuse the pages being read; :class:`Locked` naming it while one writes."""
    return _flock(
        path,
        fcntl.LOCK_SH,
        "an earlier release's writer, as format 1 is only read while nothing writes it: stop it first",
    )


def _flock(path: Path, mode: int, hint: str) -> int:
    """The directory's fd with ``mode`` (LOCK_EX / LOCK_SH) taken without waiting, or
    :class:`Locked` naming the writer's pid from ``zembed.lock`` and ``hint``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        try:
            raw = (path / LOCK_FILE).read_text("ascii", "replace").strip()
        except OSError:
            raw = ""
        raise Locked(str(path), int(raw) if raw.isdigit() else None, hint) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def migration_message(path: Path) -> str:
    """What a format-1 directory's reader is told (names the command that converts it)."""
    return (
        f"data directory {path} holds zembed-store format 1 (an earlier release); this build writes "
        f"format {FORMAT_VERSION}, so it is served read-only and left as it is. Convert it with "
        f"`zembed migrate {path} NEW_DIR` (nothing is lost), then serve NEW_DIR."
    )


def stored_version(path: Path) -> int | None:
    """The version named by the zembed format record of ``path``, read without writing a byte (a
    read-only LMDB open without its lock file); None when there is none to read, or while a writer
    holds the directory (this build's writers only write its own format: the normal open checks)."""
    data = path / DATA_FILE
    try:
        check_data_file(data)  # never map a truncated file
        if not data.exists():
            return None
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (Damaged, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # probe only: released at once
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=len(SUBDBS) + 2, subdir=True)
    except lmdb.Error:
        return None
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            raw = txn.get(b"format", db=meta)
        rec = json.loads(raw) if raw is not None else None
        if isinstance(rec, dict) and rec.get("format") == FORMAT_NAME and isinstance(rec.get("version"), int):
            return int(rec["version"])
        return None
    except (lmdb.Error, ValueError):
        return None
    finally:
        env.close()


def check_data_file(data: Path) -> None:
    """Refuse a truncated or foreign ``data.mdb`` before LMDB maps it (touching a page past the end
    of a mapped file is a SIGBUS, not an error). A missing file is fine: LMDB creates it."""
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        # LMDB writes its meta pages when it creates the file: an empty one was cut (treating it as
        # a new store would hide every collection it held)
        raise Damaged(str(data), "the file is empty (truncated)")
    with open(data, "rb") as f:
        head = f.read(_META.size)
        metas = []
        if len(head) == _META.size:
            metas.append(_META.unpack(head))
            psize = metas[0][9] if metas[0][5] == _LMDB_MAGIC else 4096
            f.seek(psize)
            second = f.read(_META.size)
            if len(second) == _META.size:
                metas.append(_META.unpack(second))
    valid = [m for m in metas if m[5] == _LMDB_MAGIC]
    if not valid:
        raise Damaged(str(data), f"not an LMDB data file ({size} bytes, no valid meta page)")
    newest = max(valid, key=lambda m: m[12])
    psize, last_pg = newest[9], newest[11]
    need = (last_pg + 1) * psize
    if psize < 512 or psize & (psize - 1):
        raise Damaged(str(data), f"its meta page names an invalid page size {psize}")
    if size < need:
        raise Damaged(
            str(data),
            f"the file is {size} bytes but its last transaction uses {need} bytes "
            "(truncated, or a partial copy)",
        )


def _remove_dead_partials(parent: Path) -> None:
    """Remove ``.NAME.partial-PID-*`` copies whose process is gone (a killed snapshot's leftovers)."""
    for p in parent.glob(".*.partial-*"):
        try:
            pid = int(p.name.rsplit(".partial-", 1)[1].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def must(value: bytes | None) -> bytes:
    """A value that the layout guarantees is there (its absence means a corrupted environment)."""
    if value is None:
        raise FormatMismatch("a record that must exist is missing: the environment is damaged")
    return value


def get(txn: lmdb.Transaction, key: bytes, db: Any) -> bytes | None:
    """``txn.get`` as plain bytes (a copy when the transaction hands out buffers)."""
    value = txn.get(key, db=db)
    return None if value is None else bytes(value)


def iter_prefix(txn: lmdb.Transaction, db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) whose key starts with ``prefix``, in key order."""
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return
    for k, v in cur.iternext():
        key = bytes(k)
        if not key.startswith(prefix):
            return
        yield key, bytes(v)
