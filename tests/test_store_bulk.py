"""The bulk ingest path's helpers (issue #10's ingest bar): the C checks, norms and sign codes of
``store/csrc/bulk.c`` against their numpy references, the integer id keys, and the transaction
steps they feed (one insert pass for new ids with the lookup only when some existed, row keys as
appends, the file space and map reserved before a batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import small_config
from zembed.store import InvalidArgument, Store, _hamming, blocks, validate
from zembed.store.layout import DATA_FILE

DIMS = (1, 7, 8, 9, 17, 64, 640, 1023)


def numpy_bad_row(x: np.ndarray) -> tuple[int, int] | None:
    """The numpy reference of ``check_rows``: the first row holding a NaN or infinity (1) or only
    zeros (2), from the bits."""
    half = x.dtype == np.float16
    bits = x.view(np.uint16 if half else np.uint32).astype(np.int64)
    magnitude, inf = (0x7FFF, 0x7C00) if half else (0x7FFFFFFF, 0x7F800000)
    top = (bits & magnitude).max(axis=1)
    bad = np.flatnonzero((top >= inf) | (top == 0))
    if not len(bad):
        return None
    return int(bad[0]), 1 if top[bad[0]] else 2


def rows_with_specials(rng: np.random.Generator, n: int, d: int, dtype: Any) -> np.ndarray:
    """Random rows, some scaled into float16's subnormal range, some holding +-0 elements."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[::5] *= 1e-6  # float16 subnormals (below 6.1e-5)
    x[1::7, : d // 2] = 0.0  # never a whole row
    if d > 1:
        x[2::11, 0] = -0.0
    out = x.astype(dtype)
    flushed = ~out.any(axis=1)  # rows a float16 cast flushed to zero: the smallest subnormal instead
    out[flushed, 0] = np.float16(2.0**-24)
    return out


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("d", DIMS)
def test_check_rows_matches_the_numpy_reference(dtype: Any, d: int) -> None:
    rng = np.random.default_rng(d)
    x = rows_with_specials(rng, 200, d, dtype)
    assert _hamming.check_rows(x, 200, d, x.itemsize) is None is numpy_bad_row(x)
    specials = [np.nan, np.inf, -np.inf, 0.0]
    for trial in range(40):
        y = x.copy()
        for _ in range(int(rng.integers(1, 4))):
            r, c = int(rng.integers(0, 200)), int(rng.integers(0, d))
            v = specials[int(rng.integers(0, len(specials)))]
            if v == 0.0:
                y[r] = 0.0 if trial % 2 else -0.0
            else:
                y[r, c] = v
        assert _hamming.check_rows(y, 200, d, y.itemsize) == numpy_bad_row(y), (trial, d)


@pytest.mark.parametrize("d", DIMS)
def test_float16_norms_and_sign_codes_match_numpy(d: int) -> None:
    rng = np.random.default_rng(100 + d)
    x = rows_with_specials(rng, 300, d, np.float16)
    x[x.view(np.uint16) & 0x7FFF == 0] = np.float16(2.0**-24)  # no zero rows here
    inv = np.empty(300, np.float32)
    codes = np.empty((300, (d + 7) // 8), np.uint8)
    assert _hamming.f16_norms_codes(x, 300, d, inv, codes) is None
    wide = x.astype(np.float64)
    ref = 1.0 / np.sqrt(np.einsum("ij,ij->i", wide, wide))
    np.testing.assert_allclose(inv, ref, rtol=2e-7)
    assert np.array_equal(codes, np.packbits(x > 0, axis=1))  # -0.0 and subnormals included
    assert np.array_equal(codes, validate.sign_codes(x))
    # without the codes buffer: the same norms
    inv2 = np.empty(300, np.float32)
    assert _hamming.f16_norms_codes(x, 300, d, inv2, None) is None
    assert np.array_equal(inv, inv2)
    # bad rows: the first one, with its kind, as check_rows reports it
    for r, v in ((17, np.nan), (3, np.inf), (250, -np.inf)):
        y = x.copy()
        y[r, d - 1] = v
        y[r + 1] = 0.0
        assert _hamming.f16_norms_codes(y, 300, d, inv, codes) == (r, 1) == numpy_bad_row(y)
        y[r] = -0.0
        assert _hamming.f16_norms_codes(y, 300, d, inv, codes) == (r, 2) == numpy_bad_row(y)


def test_float16_extremes_square_without_overflow() -> None:
    x = np.full((2, 16384), 65504.0, np.float16)  # the largest half, 16,384 dims
    x[1] = np.float16(2.0**-24)  # the smallest subnormal
    inv = np.empty(2, np.float32)
    assert _hamming.f16_norms_codes(x, 2, 16384, inv, None) is None
    np.testing.assert_allclose(inv, [1 / (65504.0 * 128), 1 / (2.0**-24 * 128)], rtol=1e-6)


def test_buffer_sizes_are_checked() -> None:
    x = np.ones((4, 8), np.float16)
    with pytest.raises(ValueError, match="inconsistent"):
        _hamming.check_rows(x, 5, 8, 2)
    with pytest.raises(ValueError, match="inconsistent"):
        _hamming.f16_norms_codes(x, 4, 8, np.empty(3, np.float32), None)
    with pytest.raises(ValueError, match="inconsistent"):
        _hamming.f16_norms_codes(x, 4, 8, np.empty(4, np.float32), np.empty((4, 2), np.uint8))
    with pytest.raises(ValueError, match="8-byte"):
        _hamming.int_id_keys(np.ones(3, np.int32), b"", False)


def test_int_id_keys_are_numpys_decimal_text() -> None:
    rng = np.random.default_rng(7)
    ids = np.concatenate(
        [
            rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64),
            np.array([0, -1, 1, 9, 10, -(2**63), 2**63 - 1], np.int64),
        ]
    )
    ext, keys = _hamming.int_id_keys(ids, b"\x00\x00\x00\x07", False)
    assert ext == ids.astype("S20").tolist()
    assert keys == [b"\x00\x00\x00\x07" + e for e in ext]
    u = np.array([0, 2**64 - 1, 2**63, 12345], np.uint64)
    ext, keys = _hamming.int_id_keys(u, b"", True)
    assert ext == keys == u.astype("S20").tolist()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64, np.uint16])
def test_integer_ids_in_every_width_and_their_duplicates(store: Store, dtype: Any) -> None:
    ids, keys = validate.id_array(np.array([5, 0, 17, 65535], dtype), 3, "ids", 10)
    assert ids == [b"5", b"0", b"17", b"65535"] and keys == [b"\x00\x00\x00\x03" + i for i in ids]
    with pytest.raises(InvalidArgument) as err:
        validate.id_array(np.array([5, 0, 17, 0, 5], dtype), 3, "ids", 10)
    assert err.value.field == "ids[3]" and "duplicates" in str(err.value)


def test_float16_rows_through_upsert_arrays_equal_the_numpy_path(store: Store) -> None:
    """Vectors only (codes computed from float16 rows that are not unit length): the stored codes
    are ``np.packbits(x > 0)`` and the records the float16 of x / |x| (norms from float32 squares)."""
    rng = np.random.default_rng(3)
    n, d = 333, 96
    x = (rng.standard_normal((n, d)) * rng.uniform(0.01, 50, (n, 1))).astype(np.float16)
    x[7] *= np.float16(1e-3)  # a row of subnormals
    store.create_collection("c", small_config(code_bits=96, rescore_dims=96, calibration="none"))
    c = store.collection("c")
    c.upsert_arrays(np.arange(n), x)
    w = x.astype(np.float32)
    unit = (w / np.linalg.norm(w.astype(np.float64), axis=1, keepdims=True)).astype(np.float16)
    for i, r in enumerate(c.get([str(i) for i in range(n)], with_vectors=True)):
        assert r is not None and r.rescore is not None
        assert r.code == np.packbits(x[i] > 0).tobytes()
        # one float16 unit of rounding at most (the norm's last float32 bit)
        np.testing.assert_allclose(r.rescore, unit[i].astype(np.float32), atol=1e-3, rtol=0)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("bad", ["nan", "inf", "zero"])
def test_bad_rows_name_the_field_and_row_and_write_nothing(
    store: Store, normalized: bool, dtype: Any, bad: str
) -> None:
    store.create_collection("c", small_config(code_bits=96, rescore_dims=96, calibration="none"))
    c = store.collection("c")
    x = np.random.default_rng(1).standard_normal((10, 96)).astype(dtype)
    x /= np.linalg.norm(x.astype(np.float32), axis=1, keepdims=True).astype(dtype)
    if bad == "zero":  # and a later bad row of the same kind: the first one is named
        x[4] = x[8] = 0
    else:
        x[8, 3] = np.nan
        x[4, 63] = np.nan if bad == "nan" else -np.inf
    for codes, code_vectors, field in (
        (None, None, "rescore_vectors[4]"),
        (np.zeros((10, 12), np.uint8), None, "rescore_vectors[4]"),
    ):
        with pytest.raises(InvalidArgument, match="zero vector" if bad == "zero" else "finite") as err:
            c.upsert_arrays(np.arange(10), x, code_vectors, codes=codes, normalized=normalized)
        assert err.value.field == field
    # separate code vectors: their rows are checked under their own name
    good = np.ones((10, 96), dtype) / np.sqrt(96)
    store.create_collection("two", small_config(code_bits=64, rescore_dims=96, calibration="none"))
    with pytest.raises(InvalidArgument) as err:
        store.collection("two").upsert_arrays(
            np.arange(10), good.astype(dtype), x[:, :64], normalized=normalized
        )
    assert err.value.field == "code_vectors[4]"
    assert c.count() == 0 and store.collection("two").count() == 0


def test_replacing_ids_in_bulk_tombstones_only_those_that_existed(store: Store) -> None:
    store.create_collection("c", small_config(calibration="none"))
    c = store.collection("c")
    x = np.random.default_rng(2).standard_normal((3000, 96)).astype(np.float32)
    c.upsert_arrays(np.arange(1000), x[:1000], x[:1000, :64])
    assert c._rec.dead == 0
    # 500 new ids and 500 existing ones, interleaved: one transaction, exact counts
    ids = np.arange(500, 1500)
    c.upsert_arrays(ids, x[1000:2000], x[1000:2000, :64])
    assert c.count() == 1500 and c._rec.dead == 500 and c._rec.next_row == 2000
    for i in (0, 499, 500, 999, 1000, 1499):
        r = c.get([str(i)], with_vectors=True)[0]
        assert r is not None and r.rescore is not None
        src = x[i] if i < 500 else x[1000 + i - 500]
        np.testing.assert_allclose(r.rescore, src / np.linalg.norm(src), atol=1e-3)
    # every id maps to one live row, and the tombstoned rows are gone from the index
    hits = c.search(x[1000:1001, :64], x[1000:1001], top_k=5)[0]
    assert hits[0].id == "500"
    # all existing: every one replaced
    c.upsert_arrays(np.arange(500, 1500), x[2000:3000], x[2000:3000, :64])
    assert c.count() == 1500 and c._rec.dead == 1500
    # the list path takes the same steps
    c.upsert(["0", "new"], x[:2, :64], x[:2])
    assert c.count() == 1501 and c._rec.dead == 1501


def test_rows_of_an_earlier_collection_are_written_after_a_later_one_exists(tmp_path: Path) -> None:
    """Row keys go in as appends only when they sort last; a collection created earlier (smaller
    cid) keeps writing normally once a later one holds rows, and both read back intact."""
    x = np.random.default_rng(4).standard_normal((600, 96)).astype(np.float32)
    with Store(tmp_path / "d") as s:
        for name in ("a", "b"):
            s.create_collection(name, small_config(calibration="none"))
        a, b = s.collection("a"), s.collection("b")
        a.upsert_arrays(np.arange(100), x[:100], x[:100, :64], metadata=[{"lang": "de"}] * 100)
        b.upsert_arrays(np.arange(200), x[100:300], x[100:300, :64], metadata=[{"lang": "en"}] * 200)
        a.upsert_arrays(np.arange(100, 400), x[300:600], x[300:600, :64], metadata=[{"lang": "fr"}] * 300)
        b.upsert(["single"], x[:1, :64], x[:1], [{"lang": "it"}])
    with Store(tmp_path / "d") as s:
        a, b = s.collection("a"), s.collection("b")
        assert a.count() == 400 and b.count() == 201
        ra = a.get(["0", "150", "399"])
        assert [r.metadata["lang"] for r in ra if r is not None] == ["de", "fr", "fr"]
        rb = b.get(["0", "199", "single"])
        assert [r.metadata["lang"] for r in rb if r is not None] == ["en", "en", "it"]
        hits = a.search(x[:1, :64], x[:1], top_k=1, filter={"lang": "fr"})[0]
        assert hits and hits[0].id != "0"


def test_the_map_grows_before_a_large_batch_so_it_runs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch larger than the map: the map grows before the transaction, so its body runs once
    (no map-full abort and rerun), and the file stays within the preallocation policy."""
    calls = []
    real = blocks.append

    def counting(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(blocks, "append", counting)
    with Store(tmp_path / "d", map_size=1 << 20) as s:
        s.create_collection("c", small_config(code_bits=64, rescore_dims=512, calibration="none"))
        c = s.collection("c")
        n = 8192
        x = np.random.default_rng(5).standard_normal((n, 512)).astype(np.float16)
        c.upsert_arrays(np.arange(n), x, x[:, :64])
        assert len(calls) == 1
        assert s.env.resizes >= 1 and s.env.map_size >= n * 1024
        usage = s.env.usage()
        assert (tmp_path / "d" / DATA_FILE).stat().st_size >= usage["bytes_in_use"]
        assert usage["bytes_allocated"] <= 1.25 * usage["bytes_in_use"] + (2 << 20)
        assert c.count() == n


def test_metadata_json_is_stored_as_given_and_indexed_from_the_parsed_values(tmp_path: Path) -> None:
    """upsert_arrays(metadata_json=...): a caller that parsed the metadata from JSON text (the
    server's columnar upsert) hands the text over; it is stored as given (not encoded again), the
    filters index the parsed values, a None text is encoded, and the limits still hold."""
    import json as _json

    from zembed.store import Calibration, CollectionConfig

    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    values: list[dict[str, Any] | None] = [
        {"lang": "de", "n": 1},
        {"lang": "fr"},
        None,
        {},
        {"lang": ["de", "en"], "deep": {"a": [1, None]}},
        {"lang": "ja"},
    ]
    texts: list[bytes | None] = [
        b'{"lang": "de",  "n": 1}',  # spaces kept: stored as given
        b'{"lang":"fr"}',
        None,
        b"{}",
        _json.dumps(values[4]).encode(),
        None,  # encoded from the value
    ]
    with Store(tmp_path / "s") as s:
        s.create_collection(
            "c",
            CollectionConfig(
                code_bits=16, rescore_dims=16, calibration=Calibration.NONE, filterable=("lang",)
            ),
        )
        c = s.collection("c")
        ids = np.array([f"d{i}" for i in range(6)])
        with pytest.raises(InvalidArgument, match="metadata_json"):
            c.upsert_arrays(ids, x, metadata_json=texts)  # the parsed values are required
        with pytest.raises(InvalidArgument, match="6 items each"):
            c.upsert_arrays(ids, x, metadata=values, metadata_json=texts[:5])
        big = [b'{"k":"' + b"x" * (70 * 1024) + b'"}', *texts[1:]]
        with pytest.raises(InvalidArgument, match=r"metadata_json\[0\]"):
            c.upsert_arrays(ids, x, metadata=[{"k": "x" * (70 * 1024)}, *values[1:]], metadata_json=big)
        assert c.count() == 0  # refused batches wrote nothing
        assert c.upsert_arrays(ids, x, metadata=values, metadata_json=texts) == 6
        got = c.get([f"d{i}" for i in range(6)])
        assert [r.metadata if r is not None else "missing" for r in got] == [
            {"lang": "de", "n": 1},
            {"lang": "fr"},
            {},
            {},
            values[4],
            {"lang": "ja"},
        ]
        with s.env.env.begin(db=s.env.dbs["docs"]) as txn:  # the stored bytes: the texts as given
            stored = [bytes(v) for _, v in txn.cursor()]
        assert b'{"lang": "de",  "n": 1}' in stored and b'{"lang":"ja"}' in stored
        hits = c.search(x[0], top_k=6, filter={"lang": "de"})[0]
        assert sorted(h.id for h in hits) == ["d0", "d4"]
        hits = c.search(x[0], top_k=6, filter={"lang": {"$in": ["fr", "ja"]}})[0]
        assert sorted(h.id for h in hits) == ["d1", "d5"]
