"""The store's error hierarchy.

Every error the store raises on purpose is a :class:`StoreError`. Callers (the gRPC layer) map the
subclasses to status codes in one table; messages read "`field` must ...; given ...".

- :class:`InvalidArgument`: the caller sent something the store refuses (carries ``field``, ``value``
  and, where one applies, ``limit``). Nothing was written.
- :class:`NotFound`: an unknown collection.
- :class:`AlreadyExists`: creating a collection whose name is taken with a different configuration.
- :class:`FormatMismatch`: the data directory was written by another format version or configuration.
- :class:`WouldBlock`: a read asked not to wait found the map being resized (retry where waiting is
  fine, e.g. on a worker thread).
"""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class InvalidArgument(StoreError, ValueError):
    """A request field is invalid; nothing was written."""

    def __init__(self, field: str, message: str, *, value: Any = None, limit: Any = None) -> None:
        self.field = field
        self.value = value
        self.limit = limit
        super().__init__(f"{field} {message}")


class NotFound(StoreError, KeyError):
    """The named collection does not exist."""

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"{what} {name!r} does not exist")

    def __str__(self) -> str:
        return str(self.args[0])


class AlreadyExists(StoreError):
    """A collection of that name exists with another configuration."""


class FormatMismatch(StoreError):
    """The data directory's format record or a collection's stored config does not match."""


class WouldBlock(StoreError):
    """A non-waiting read found the map being resized (readers wait for that)."""
