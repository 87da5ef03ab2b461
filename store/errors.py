"""The store's error hierarchy.

Every error the store raises on purpose is a :class:`StoreError`. Callers (the gRPC layer) map the
subclasses to status codes in one table; messages read "`field` must ...; given ...".

- :class:`InvalidArgument`: the caller sent something the store refuses (carries ``field``, ``value``
  and, where one applies, ``limit``). Nothing was written.
- :class:`NotFound`: an unknown collection.
- :class:`AlreadyExists`: creating a collection whose name is taken with a different configuration.
- :class:`FormatMismatch`: the data directory was written by another format version or configuration.
- :class:`NeedsMigration` (a :class:`FormatMismatch`): a write to a directory of an earlier format
  (format 1), which is served read-only until ``zembed migrate`` converts it.
- :class:`WouldBlock`: a read asked not to wait found the map being resized (retry where waiting is
  fine, e.g. on a worker thread).
- :class:`DiskFull`: a write could not commit because the data volume has no space left (names the
  path and the free bytes). Nothing was written; writes succeed again once space is freed.
- :class:`Locked`: another process holds the data directory open for writing (names the directory and
  the holder's pid).
- :class:`Damaged`: the data files are truncated or corrupt (names the file, what is wrong, and how to
  restore). Raised at open, before any page of the map is touched.
"""

from __future__ import annotations

from typing import Any

ECHO_CHARS = 80  # a client's value is echoed in a message at most this many characters
MAX_MESSAGE_CHARS = 400  # a net under every InvalidArgument message (values should be clipped first)


def clip(value: Any, limit: int = ECHO_CHARS, *, quote: bool = True) -> str:
    """``repr(value)`` (or ``str`` with ``quote=False``) cut to ``limit`` characters with an ellipsis
    and the full length, so an error message can never grow with the input."""
    text = repr(value) if quote else str(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str | bytes | list | tuple) else ""
    return text[: max(limit - 1 - len(size), 8)] + "\u2026" + size


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class InvalidArgument(StoreError, ValueError):
    """A request field is invalid; nothing was written."""

    def __init__(self, field: str, message: str, *, value: Any = None, limit: Any = None) -> None:
        self.field = field
        self.value = value
        self.limit = limit
        super().__init__(clip(f"{field} {message}", MAX_MESSAGE_CHARS, quote=False))


class NotFound(StoreError, KeyError):
    """The named collection does not exist."""

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"{what} {clip(name)} does not exist")

    def __str__(self) -> str:
        return str(self.args[0])


class AlreadyExists(StoreError):
    """A collection of that name exists with another configuration."""


class SnapshotExists(AlreadyExists, FileExistsError):
    """A snapshot's destination exists and is not empty (also a FileExistsError)."""


class FormatMismatch(StoreError):
    """The data directory's format record or a collection's stored config does not match."""


class NeedsMigration(FormatMismatch):
    """The data directory holds an earlier store format, served read-only: writes are refused until
    ``zembed migrate OLD NEW`` converts it."""


class WouldBlock(StoreError):
    """A non-waiting read found the map being resized (readers wait for that)."""


class DiskFull(StoreError):
    """A commit failed for lack of space on the data volume; nothing of the batch was written."""

    def __init__(self, path: str, free_bytes: int) -> None:
        self.path = path
        self.free_bytes = free_bytes
        super().__init__(
            f"no space left on the data volume ({path}: {free_bytes} bytes free); nothing was written"
        )


class Locked(StoreError):
    """Another process has the data directory open for writing."""

    def __init__(self, path: str, pid: int | None, hint: str = "stop it, or open read-only") -> None:
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"data directory {path} is open for writing by {holder}; one writing process per directory "
            f"({hint})"
        )


class Damaged(StoreError):
    """The data files are truncated or corrupt; refused before any page is touched."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path}: {problem}; the store is damaged: restore the directory from a snapshot "
            "(zembed snapshot) or move it aside"
        )
