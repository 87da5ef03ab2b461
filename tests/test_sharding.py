"""The shard rule is stable: fixed values (BLAKE2b is specified), spread evenly, and one rule for many ids."""

from __future__ import annotations

import hashlib

import pytest

from zembed.store.sharding import id_hash, shard_of, shards_of


def test_hash_is_blake2b_of_the_utf8_id() -> None:
    for doc_id in ("a", "doc-1", "日本語", "ü" * 300):
        want = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")
        assert id_hash(doc_id) == want


def test_spread_is_even_and_bulk_matches_single() -> None:
    ids = [f"doc-{i}" for i in range(30_000)]
    bulk = shards_of(ids, 3)
    assert [shard_of(i, 3) for i in ids[:500]] == bulk[:500].tolist()
    counts = [int((bulk == s).sum()) for s in range(3)]
    assert all(abs(c - 10_000) < 500 for c in counts), counts


def test_bad_shard_count_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        shard_of("a", 0)
