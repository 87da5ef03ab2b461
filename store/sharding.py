"""Which shard holds a document: one stable rule shared by the router, `zembed index` and re-splits.

shard_of(id, n) = the first 8 bytes of BLAKE2b(id as UTF-8), little-endian, modulo n. It depends on the
id and the shard count only (never on Python's per-process hash seed, the machine or the library
version), so a router, an indexing job and a re-split written years apart agree on every document.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt


def id_hash(doc_id: str) -> int:
    """The stable 64-bit hash of a document id."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def shard_of(doc_id: str, shards: int) -> int:
    """The shard (0 .. shards-1) that holds `doc_id`."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return id_hash(doc_id) % shards


def shards_of(doc_ids: list[str], shards: int) -> npt.NDArray[np.int64]:
    """shard_of for many ids at once."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return np.fromiter((id_hash(i) % shards for i in doc_ids), dtype=np.int64, count=len(doc_ids))
