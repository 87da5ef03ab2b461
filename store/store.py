"""The store: one LMDB environment per data directory holding any number of collections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import lmdb

from zembed.store import validate
from zembed.store.collection import Collection
from zembed.store.config import CollectionConfig
from zembed.store.errors import (
    AlreadyExists,
    Damaged,
    DiskFull,
    FormatMismatch,
    NotFound,
    SnapshotExists,
    StoreError,
)
from zembed.store.layout import DATA_FILE, SUBDBS, Env, cid_prefix, get, iter_prefix
from zembed.store.records import CollectionInfo, CollectionRecord, gen_key, meta_key

DEFAULT_MAP_SIZE = 1 << 30  # grows by doubling on demand
DEFAULT_MAX_READERS = 2048  # read transactions open at once (concurrent searches)
SNAPSHOTS_DIR = "snapshots"  # Store.snapshot_named writes under <data directory>/snapshots/


class Store:
    """Open (or create) the store in ``path``. Thread-safe.

    One writing process per directory: a second writable open (here or in another process) raises
    :class:`~store.errors.Locked` naming the holder's pid. ``readonly=True`` opens without the lock
    (backups, inspection) and refuses writes. A truncated or corrupt data file raises
    :class:`~store.errors.Damaged` before any page is touched.

    A directory written by format 1 (an earlier release) opens read-only whatever ``readonly`` says:
    :attr:`needs_migration` holds the message (naming ``zembed migrate OLD NEW_DIR``), every read is
    served, every write raises :class:`~store.errors.NeedsMigration` (FAILED_PRECONDITION over gRPC)
    and not a byte of the directory is written.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_readers: int = DEFAULT_MAX_READERS,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.env = Env(self.path, map_size=map_size, max_readers=max_readers, readonly=readonly)
        self._lock = threading.RLock()
        self._collections: dict[str, Collection] = {}
        try:
            self.env.check_format()
            with self.env.reader() as txn:
                names = [k[5:].decode() for k, _ in iter_prefix(txn, self.env.dbs["meta"], b"coll:")]
            for name in names:
                self._collections[name] = Collection(self.env, name, _load_record(self.env, name))
        except lmdb.Error as exc:
            self.env.close()
            raise Damaged(str(self.path / DATA_FILE), f"reading it failed ({exc})") from None
        except BaseException:
            self.env.close()
            raise

    # ------------------------------------------------------------------ collections
    def create_collection(self, name: str, config: CollectionConfig | None = None) -> CollectionInfo:
        """Create a collection; ``AlreadyExists`` if the name is taken."""
        validate.name(name)
        config = config or CollectionConfig()
        self.env.check_writable()
        with self.env.write_lock:  # serializes create / drop / writes; never taken under _lock
            if name in self._collections:
                raise AlreadyExists(f"collection {name!r} already exists")

            def txn_fn(txn: lmdb.Transaction) -> CollectionRecord:
                meta = self.env.dbs["meta"]
                raw = get(txn, b"next_cid", meta)
                cid = int(raw) if raw is not None else 1
                txn.put(b"next_cid", str(cid + 1).encode(), db=meta)
                rec = CollectionRecord(cid=cid, config=config)
                txn.put(meta_key(name), rec.to_bytes(), db=meta)
                txn.put(gen_key(cid), (0).to_bytes(8, "big"), db=meta)
                return rec

            self.env.write(txn_fn)
            coll = Collection(self.env, name, _load_record(self.env, name))
            with self._lock:
                self._collections[name] = coll
            return coll.info()

    def ensure_collection(self, name: str, config: CollectionConfig) -> CollectionInfo:
        """Create the collection, or check that the existing one has this configuration; filterable
        fields it lacks are added (stored documents indexed), never removed."""
        with self.env.write_lock:
            if name in self._collections:
                coll = self._collections[name]
                have = coll.config
                if replace(have, filterable=()) != replace(config, filterable=()):
                    raise FormatMismatch(
                        f"collection {name!r} in {self.path} was created with {have.to_json()}; "
                        f"expected {config.to_json()}. Use another collection name or data directory."
                    )
                missing = [f for f in config.filterable if f not in have.filterable]
                if missing:
                    coll.add_filterable(missing)
                return coll.info()
            return self.create_collection(name, config)

    def add_filterable(self, name: str, fields: list[str]) -> CollectionInfo:
        """Make more metadata fields of a collection filterable (see ``Collection.add_filterable``)."""
        return self.collection(name).add_filterable(fields)

    def collection(self, name: str) -> Collection:
        validate.name(name)
        try:
            return self._collections[name]
        except KeyError:
            raise NotFound("collection", name) from None

    def list_collections(self) -> list[CollectionInfo]:
        # _lock guards only the dict: never held across a transaction (a drop of a large
        # collection must not stall callers on an event loop)
        with self._lock:
            colls = [self._collections[n] for n in sorted(self._collections)]
        return [c.info() for c in colls]

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its documents (one transaction)."""
        with self.env.write_lock:
            coll = self.collection(name)
            self.env.check_writable()
            prefix = cid_prefix(coll.cid)

            def txn_fn(txn: lmdb.Transaction) -> None:
                for db_name in SUBDBS[1:]:
                    cur = txn.cursor(db=self.env.dbs[db_name])
                    while cur.set_range(prefix) and bytes(cur.key()).startswith(prefix):
                        cur.delete()
                meta = self.env.dbs["meta"]
                txn.delete(meta_key(name), db=meta)
                txn.delete(gen_key(coll.cid), db=meta)

            self.env.write(txn_fn)
            with self._lock:
                del self._collections[name]
            coll.mark_dropped()

    @property
    def needs_migration(self) -> str | None:
        """For a format-1 directory (served read-only), the message naming the command that
        converts it; None otherwise."""
        return self.env.needs_migration

    @property
    def readonly(self) -> bool:
        """Writes are refused (``readonly=True``, or a format-1 directory)."""
        return self.env.readonly

    # ------------------------------------------------------------------ environment
    def snapshot(self, dest: str | Path) -> Path:
        """Compacting hot copy into ``dest`` (absent or empty), complete or not at all (written
        beside it and renamed into place); open it with ``Store(dest)`` to restore.

        The copy runs in a child process (a read-only open of this directory): copied in this
        process, LMDB made any write transaction that aborts meanwhile (bad input, map growth) wait
        for the whole copy while holding the write lock."""
        dest = Path(dest)
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(
            [sys.executable, "-c", _SNAPSHOT_CHILD, str(self.path), str(dest)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise _snapshot_error(proc.stderr)
        return dest

    def snapshot_named(self, name: str = "") -> Path:
        """Snapshot into ``<path>/snapshots/<name>`` (a collection-style name; empty: a UTC
        timestamp). ``AlreadyExists`` when that snapshot exists."""
        name = name or time.strftime("snapshot-%Y%m%d-%H%M%S", time.gmtime())
        validate.name(name, "name")
        dest = self.path / SNAPSHOTS_DIR / name
        if dest.exists():
            raise SnapshotExists(f"snapshot {name!r} already exists at {dest}")
        return self.snapshot(dest)

    def free_bytes(self) -> int:
        """Bytes free on the data volume."""
        return self.env.free_bytes()

    def stats(self) -> dict[str, object]:
        """The environment's figures: ``bytes_in_use`` (pages the B-trees reference),
        ``bytes_allocated`` (disk blocks of the data file), ``bytes_per_document`` (in use over all
        documents), the map, and per collection its documents and disk figures."""
        info = self.env.stat()
        usage = self.env.usage()
        colls = self.list_collections()
        docs = sum(c.count for c in colls)
        return {
            "path": str(self.path),
            "free_bytes": self.free_bytes(),
            "map_size": info["map_size"],
            "map_resizes": self.env.resizes,
            "collections": {c.name: c.count for c in colls},
            "index_bytes": sum(c.index_bytes for c in colls),
            **usage,
            "bytes_per_document": usage["bytes_in_use"] // docs if docs else 0,
            "collection_bytes": {
                c.name: {
                    "bytes_in_use": c.bytes_in_use,
                    "bytes_allocated": c.bytes_allocated,
                    "bytes_per_document": c.bytes_per_document,
                }
                for c in colls
            },
        }

    def close(self) -> None:
        with self._lock:
            self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_record(env: Env, name: str) -> CollectionRecord:
    with env.reader() as txn:
        raw = get(txn, meta_key(name), env.dbs["meta"])
    if raw is None:
        raise NotFound("collection", name)
    return CollectionRecord.from_bytes(raw)


def snapshot_directory(data_dir: str | Path, dest: str | Path) -> Path:
    """Snapshot a data directory from outside the process that serves it (read-only, no lock)."""
    env = Env(Path(data_dir), map_size=0, max_readers=DEFAULT_MAX_READERS, readonly=True)
    try:
        env.check_format()
        dest = Path(dest)
        env.copy(dest)
        return dest
    finally:
        env.close()


_SNAPSHOT_CHILD = """
import json, sys
from zembed.store.errors import DiskFull, StoreError
from zembed.store.store import snapshot_directory
try:
    snapshot_directory(sys.argv[1], sys.argv[2])
except DiskFull as exc:
    sys.stderr.write(json.dumps({"kind": "disk_full", "path": exc.path, "free": exc.free_bytes}))
    sys.exit(2)
except FileExistsError as exc:
    sys.stderr.write(json.dumps({"kind": "exists", "message": str(exc)}))
    sys.exit(2)
except (StoreError, OSError) as exc:
    sys.stderr.write(json.dumps({"kind": "error", "message": str(exc)}))
    sys.exit(2)
"""


def _snapshot_error(stderr: str) -> Exception:
    try:
        err = json.loads(stderr.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return StoreError(f"snapshot failed: {stderr.strip()[-400:]}")
    if err["kind"] == "disk_full":
        return DiskFull(err["path"], int(err["free"]))
    if err["kind"] == "exists":
        return SnapshotExists(err["message"])
    return StoreError(err["message"])


__all__ = ["Store", "snapshot_directory"]
