"""Bad input raises a typed error naming the field, and leaves the store exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import small_config
from zembed.store import Collection, InvalidArgument, NotFound, Store, validate


def state(c: Collection) -> tuple[int, list[object], bytes]:
    """Everything observable: count, all records, and a digest of the LMDB sub-databases."""
    import hashlib

    h = hashlib.sha256()
    with c.env.reader() as txn:
        for name, db in sorted(c.env.dbs.items()):
            for k, v in txn.cursor(db=db):
                h.update(name.encode() + bytes(k) + bytes(v))
    ids = [f"d{i}" for i in range(10)]
    return c.count(), [r.metadata if r else None for r in c.get(ids)], h.digest()


@pytest.fixture
def coll(store: Store) -> Collection:
    store.create_collection("c", small_config())
    c = store.collection("c")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 96)).astype(np.float32)
    c.upsert([f"d{i}" for i in range(10)], x[:, :64], x, [{"lang": "de"}] * 10)
    return c


def good(n: int = 2) -> tuple[list[str], np.ndarray, np.ndarray]:
    x = np.ones((n, 96), dtype=np.float32)
    return [f"new{i}" for i in range(n)], x[:, :64], x


BAD_UPSERTS: list[tuple[str, str, Callable[[], tuple[object, ...]]]] = [
    ("wrong code length", "code_vectors", lambda: (good()[0], np.ones((2, 63)), good()[2])),
    ("wrong rescore length", "rescore_vectors", lambda: (good()[0], good()[1], np.ones((2, 95)))),
    ("row count mismatch", "rescore_vectors", lambda: (good()[0], good()[1], np.ones((3, 96)))),
    ("NaN", "code_vectors[1]", lambda: (good()[0], np.array([[1.0] * 64, [np.nan] * 64]), good()[2])),
    ("infinity", "rescore_vectors[0]", lambda: (good()[0], good()[1], np.array([[np.inf] * 96, [1.0] * 96]))),
    ("zero vector", "code_vectors[0]", lambda: (good()[0], np.zeros((2, 64)), good()[2])),
    ("empty id", "ids[1]", lambda: (["a", ""], *good()[1:])),
    ("oversize id", "ids[0]", lambda: (["x" * 257, "b"], *good()[1:])),
    ("non-string id", "ids[0]", lambda: ([7, "b"], *good()[1:])),
    ("duplicate ids", "ids[1]", lambda: (["d1", "d1"], *good()[1:])),
    ("empty batch", "ids", lambda: ([], np.ones((0, 64)), np.ones((0, 96)))),
]


@pytest.mark.parametrize("what,field,args", BAD_UPSERTS, ids=[b[0] for b in BAD_UPSERTS])
def test_bad_upsert_names_field_and_writes_nothing(
    coll: Collection, what: str, field: str, args: Callable[[], tuple[object, ...]]
) -> None:
    before = state(coll)
    with pytest.raises(InvalidArgument) as err:
        coll.upsert(*args())  # type: ignore[arg-type]
    assert err.value.field == field, what
    assert str(err.value).startswith(field)
    assert state(coll) == before


def test_oversize_and_bad_metadata(coll: Collection) -> None:
    before = state(coll)
    ids, cv, rv = good()
    with pytest.raises(InvalidArgument) as err:
        coll.upsert(ids, cv, rv, [{"a": "x" * (validate.MAX_METADATA_BYTES + 1)}, {}])
    assert err.value.field == "metadata[0]" and err.value.limit == validate.MAX_METADATA_BYTES
    with pytest.raises(InvalidArgument, match=r"metadata\[1\] must be JSON-compatible"):
        coll.upsert(ids, cv, rv, [{}, {"x": object()}])
    with pytest.raises(InvalidArgument, match="metadata must hold 2"):
        coll.upsert(ids, cv, rv, [{}])
    assert state(coll) == before


def test_failure_inside_transaction_rolls_back(coll: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that fails half-way through its LMDB transaction leaves no trace."""
    import zembed.store.layout as layout
    from zembed.store import collection as mod

    before = state(coll)
    calls = [0]
    real = layout.row_key

    def flaky(cid: int, rowid: int) -> bytes:
        calls[0] += 1
        if calls[0] == 3:
            raise OSError("disk went away")
        return real(cid, rowid)

    monkeypatch.setattr(mod, "row_key", flaky)
    ids, cv, rv = good(4)
    with pytest.raises(OSError):
        coll.upsert([*ids, "d0"], np.vstack([cv, cv[:1]]), np.vstack([rv, rv[:1]]))
    monkeypatch.setattr(mod, "row_key", real)
    assert state(coll) == before
    assert coll.search(np.ones(64), np.ones(96), top_k=20)[0][0].id.startswith("d")


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": validate.MAX_TOP_K + 1}, "top_k"),
        ({"top_k": -3}, "top_k"),
        ({"oversampling": 0}, "oversampling"),
        ({"refine": 0}, "refine"),
        ({"filter": {"title": "x"}}, "filter"),
        ({"filter": {"lang": {"$regex": "x"}}}, "filter.lang"),
        ({"filter": {"lang": {"$in": []}}}, "filter.lang.$in"),
        ({"filter": {"lang": None}}, "filter.lang"),
        ({"filter": {"lang": {"$in": [["x"]]}}}, "filter.lang"),
    ],
)
def test_bad_search_params(coll: Collection, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        coll.search(np.ones(64), np.ones(96), **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_bad_query_vectors(coll: Collection) -> None:
    with pytest.raises(InvalidArgument) as err:
        coll.search(np.ones(65), np.ones(96))
    assert err.value.field == "code_queries" and "length 64; given 65" in str(err.value)
    with pytest.raises(InvalidArgument) as err:
        coll.search(np.ones(64), np.full(96, np.nan))
    assert err.value.field == "rescore_queries[0]"
    with pytest.raises(InvalidArgument) as err:
        coll.search(np.ones(64))  # rescore needs the 96-dim vector
    assert err.value.field == "rescore_queries"
    assert coll.search(np.ones(64), rescore=False, top_k=3)[0]


@pytest.mark.parametrize("name", ["", "A", "-x", "a/b", "../etc", "a" * 65, "a b", "ü"])
def test_bad_collection_names(store: Store, name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as err:
        store.create_collection(name, small_config())
    assert err.value.field == "name"
    with pytest.raises(InvalidArgument):
        store.collection(name)
    assert store.list_collections() == []
    assert not any(
        p.name not in {"data.mdb", "lock.mdb", "zembed.lock"} for p in (tmp_path / "data").iterdir()
    )


def test_unknown_collection(store: Store) -> None:
    with pytest.raises(NotFound, match="'nope' does not exist"):
        store.collection("nope")
    with pytest.raises(NotFound):
        store.drop_collection("nope")


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"code_bits": 0}, "code_bits"),
        ({"code_bits": 1017}, "code_bits"),
        ({"rescore_dims": 0}, "rescore_dims"),
        ({"rescore_dtype": "bf16"}, "rescore_dtype"),
        ({"calibration": "mean"}, "calibration"),
        ({"thresholds": (0.0, 1.0)}, "thresholds"),
    ],
)
def test_bad_collection_config(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        small_config(**kwargs)
    assert err.value.field == field


def test_finite_large_and_tiny_vectors_normalize_in_float64(coll: Collection) -> None:
    """Issue 7, defect 10: 1e30 (square overflows float32) was refused as "NaN or infinity" and 1e-25
    (square underflows) as "the zero vector". Both are finite, non-zero vectors: stored and found."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((1, 64)).astype(np.float32)
    base /= np.abs(base).max()
    resc = rng.standard_normal((1, 96)).astype(np.float32)
    for scale in (1e30, 3e38, 1e-25, 1e-38):
        v = validate.vectors(base * np.float32(scale), "code", 1, 64)
        np.testing.assert_allclose(v.unit(), base / np.linalg.norm(base), rtol=1e-5, atol=1e-6)
        assert np.isfinite(v.inv_norm).all() and (v.inv_norm > 0).all()
    coll.upsert(
        ["big", "tiny"], np.vstack([base * 1e30, base * 1e-25]), np.vstack([resc * 1e30, resc * 1e-25])
    )
    hits = coll.search(base * np.float32(1e-25), resc * np.float32(1e30), top_k=2)[0]
    assert {h.id for h in hits} == {"big", "tiny"} and all(abs(h.score - 1) < 1e-3 for h in hits)
    with pytest.raises(InvalidArgument, match="zero vector"):
        validate.vectors(np.zeros((1, 64)), "code", 1, 64)


def test_filterable_names_are_names_unique_and_few() -> None:
    """Issue 7, defect 8: 32 filterable names of 1 MiB each, and duplicates, were accepted."""
    assert small_config(filterable=("lang", "tags")).filterable == ("lang", "tags")
    for bad, match in (
        (("a" * (1 << 20),), r"filterable\[0\] must match .*\(1048576 characters\)"),
        (("lang", "lang"), r"filterable\[1\] repeats 'lang'"),
        (tuple(f"f{i}" for i in range(33)), "at most 32 names; given 33"),
        (("lang name",), r"filterable\[0\] must match"),
    ):
        with pytest.raises(InvalidArgument, match=match) as info:
            small_config(filterable=bad)
        assert len(str(info.value)) < 200


def test_errors_echo_values_at_most_80_characters(store: Store) -> None:
    """Issue 7, defect 9: a 100,000-character name was echoed whole (the message outgrew a client's
    16 KiB metadata limit). Values are clipped to 80 characters with an ellipsis and the length."""
    name = "Z" * 100_000
    for call in (lambda: store.create_collection(name, small_config()), lambda: store.collection(name)):
        with pytest.raises((InvalidArgument, NotFound)) as info:
            call()
        msg = str(info.value)
        assert len(msg) < 200 and "\u2026 (100000 characters)" in msg
