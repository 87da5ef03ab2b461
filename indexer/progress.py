"""Progress records: which units each shard holds, so that a re-run skips them.

One append-only JSON-lines file per shard (``<progress dir>/shard-NNNNN.progress.jsonl``), one line per
finished unit: ``{"unit": key, "docs": n, "rows": r}`` (documents and stored rows of that unit on that
shard). A line is appended, and fsynced, only after every row of the unit is durably stored on every
shard (the writers' commits, or the servers' acknowledgements, came first), and a unit is skipped
only when every shard names it. A run killed anywhere re-does at most the units without a line; every
write is an upsert by id, so a unit written twice leaves each of its documents stored once.

A torn last line (the kill came mid-write) is ignored: that unit is simply re-done.

``index.json`` beside them records what the shards were built with (shard count, collection, its
configuration, the model); a re-run with a different shard count or collection is refused, as mixing
two splits would put documents on the wrong shard.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOB_FILE = "index.json"


class JobMismatch(ValueError):
    """The output holds another job's shards; the message says what differs."""


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def progress_path(folder: Path, shard: int) -> Path:
    return folder / f"{shard_name(shard)}.progress.jsonl"


@dataclass
class ShardProgress:
    """The finished units of one shard (read at start, appended to as units finish)."""

    path: Path

    def load(self) -> dict[str, dict[str, Any]]:
        done: dict[str, dict[str, Any]] = {}
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return done
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:  # a torn last line: that unit is re-done
                continue
            if isinstance(rec, dict) and isinstance(rec.get("unit"), str):
                done[rec["unit"]] = rec
        return done

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # a torn earlier line (killed mid-write) must not swallow this one
            if os.fstat(fd).st_size and not _ends_with_newline(self.path):
                data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def check_job(folder: Path, job: dict[str, Any]) -> None:
    """Write ``index.json`` on the first run; on a re-run refuse a different split or collection."""
    path = folder / JOB_FILE
    if path.is_file():
        try:
            have = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            have = None
        if isinstance(have, dict):
            for key in ("shards", "collection", "target"):
                if have.get(key) != job.get(key):
                    raise JobMismatch(
                        f"{folder} holds an indexing job with {key}={have.get(key)!r}; this run has "
                        f"{key}={job.get(key)!r}. Use another output folder (re-splitting into another "
                        "shard count is a new job)."
                    )
            return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job, indent=2), encoding="utf-8")
    os.replace(tmp, path)
