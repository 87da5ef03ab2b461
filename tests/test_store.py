"""Store behaviour on a real LMDB environment: collections, CRUD, search, filters, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import small_config
from zembed.store import (
    AlreadyExists,
    Calibration,
    CollectionConfig,
    FormatMismatch,
    InvalidArgument,
    NotFound,
    RescoreDtype,
    Store,
    quantize,
)
from zembed.store.layout import FORMAT_VERSION


def docs(rng: np.random.Generator, n: int, dims: int = 96) -> tuple[list[str], np.ndarray]:
    x = rng.normal(size=(n, dims)).astype(np.float32)
    return [f"doc-{i}" for i in range(n)], x


def test_collection_lifecycle(store: Store) -> None:
    info = store.create_collection("docs", small_config())
    assert info.name == "docs" and info.count == 0 and info.config.code_bits == 64
    with pytest.raises(AlreadyExists):
        store.create_collection("docs", small_config())
    store.create_collection("other", CollectionConfig())
    assert [c.name for c in store.list_collections()] == ["docs", "other"]
    assert store.list_collections()[1].config.code_bits == 640  # documented defaults
    assert store.list_collections()[1].config.rescore_dims == 2560
    store.drop_collection("docs")
    with pytest.raises(NotFound):
        store.collection("docs")
    assert [c.name for c in store.list_collections()] == ["other"]


def test_drop_removes_all_rows_and_leaves_other_collections(store: Store, rng: np.random.Generator) -> None:
    ids, x = docs(rng, 50)
    for name in ("a", "b"):
        store.create_collection(name, small_config())
        store.collection(name).upsert(ids, x[:, :64], x)
    store.drop_collection("a")
    store.create_collection("a", small_config())
    assert store.collection("a").count() == 0
    assert store.collection("a").get(["doc-1"]) == [None]
    assert store.collection("b").count() == 50
    assert store.collection("b").search(x[1, :64], x[1], top_k=1)[0][0].id == "doc-1"


def test_upsert_get_replace_delete(store: Store, rng: np.random.Generator) -> None:
    store.create_collection("c", small_config(rescore_dtype="float32"))
    c = store.collection("c")
    ids, x = docs(rng, 20)
    meta = [{"lang": "de" if i % 2 else "en", "i": i} for i in range(20)]
    assert c.upsert(ids, x[:, :64], x, meta) == 20
    assert c.count() == 20
    rec = c.get(["doc-3", "missing"], with_vectors=True)
    assert rec[1] is None and rec[0] is not None
    assert rec[0].metadata == {"lang": "de", "i": 3}
    # calibrated from the first batch (the default): bits are the unit vector above the thresholds
    t = c.info().thresholds
    assert c.info().calibrated and t is not None
    assert rec[0].code == np.packbits(quantize.l2_normalize(x[3, :64]) > np.asarray(t)).tobytes()
    assert rec[0].rescore is not None
    np.testing.assert_allclose(rec[0].rescore, x[3] / np.linalg.norm(x[3]), rtol=1e-6)
    # replace: same id, new vectors and metadata; count unchanged
    y = rng.normal(size=(1, 96)).astype(np.float32)
    c.upsert(["doc-3"], y[:, :64], y, [{"lang": "fr"}])
    assert c.count() == 20
    got = c.get(["doc-3"])[0]
    assert got is not None and got.metadata == {"lang": "fr"}
    top = c.search(y[0, :64], y[0], top_k=1)[0][0]
    assert top.id == "doc-3" and top.score == pytest.approx(1.0, abs=1e-5)
    assert c.delete(["doc-3", "doc-4", "nope"]) == 2
    assert c.count() == 18
    assert all(h.id not in {"doc-3", "doc-4"} for h in c.search(x[4, :64], x[4], top_k=18)[0])


def test_search_rescore_on_off_scores(store: Store, rng: np.random.Generator) -> None:
    store.create_collection("c", small_config(rescore_dtype="float32"))
    c = store.collection("c")
    ids, x = docs(rng, 300)
    c.upsert(ids, x[:, :64], x)
    q = rng.normal(size=96).astype(np.float32)
    xn = quantize.l2_normalize(x)
    exact = xn @ (q / np.linalg.norm(q))
    hits = c.search(q[:64], q, top_k=5, oversampling=60)[0]  # shortlist covers everything
    assert [h.id for h in hits] == [ids[i] for i in np.argsort(-exact)[:5]]
    np.testing.assert_allclose([h.score for h in hits], np.sort(exact)[::-1][:5], rtol=1e-5)
    t = np.asarray(c.info().thresholds)  # calibrated from the first batch (the default)
    qc = np.packbits(quantize.l2_normalize(q[:64]) > t)
    for h in hits:
        row = int(h.id.split("-")[1])
        assert h.hamming == int(
            np.unpackbits(qc ^ np.packbits(xn[row, :64] / np.linalg.norm(xn[row, :64]) > t)).sum()
        )
    plain = c.search(q[:64], top_k=7, rescore=False)[0]
    assert [h.hamming for h in plain] == sorted(h.hamming for h in plain)
    for h in plain:
        assert h.score == pytest.approx(1 - 2 * h.hamming / 64)
    assert [h.id for h in c.exact_search(q, top_k=5)[0]] == [h.id for h in hits]


def test_batch_search_equals_single(store: Store, rng: np.random.Generator) -> None:
    store.create_collection("c", small_config())
    c = store.collection("c")
    ids, x = docs(rng, 500)
    c.upsert(ids, x[:, :64], x)
    q = rng.normal(size=(6, 96)).astype(np.float32)
    batch = c.search(q[:, :64], q, top_k=8)
    for i in range(6):
        assert batch[i] == c.search(q[i, :64], q[i], top_k=8)[0]


def test_same_vector_for_code_and_rescore(store: Store, rng: np.random.Generator) -> None:
    store.create_collection("m", CollectionConfig(code_bits=384, rescore_dims=384))
    c = store.collection("m")
    x = rng.normal(size=(30, 384)).astype(np.float32)
    c.upsert([str(i) for i in range(30)], x)  # rescore vectors default to the code vectors
    assert c.search(x[7], top_k=1)[0][0].id == "7"


@pytest.mark.parametrize("dtype", list(RescoreDtype))
def test_rescore_dtypes_rank_like_float(dtype: RescoreDtype, store: Store, rng: np.random.Generator) -> None:
    store.create_collection("c", small_config(rescore_dtype=dtype.value))
    c = store.collection("c")
    ids, x = docs(rng, 200)
    c.upsert(ids, x[:, :64], x)
    q = x[11] + 0.05 * rng.normal(size=96).astype(np.float32)
    hits = c.search(q[:64], q, top_k=3, oversampling=70)[0]
    assert hits[0].id == "doc-11"
    assert hits[0].score > 0.99


def test_filters_equality_membership_negation_lists(store: Store, rng: np.random.Generator) -> None:
    store.create_collection("c", small_config())
    c = store.collection("c")
    ids, x = docs(rng, 400)
    langs = ["de", "fr", "en", "es"]
    meta = [
        {"lang": langs[i % 4], "tags": ["a", "b"] if i % 10 == 0 else ["c"], "n": i % 3} for i in range(400)
    ]
    c.upsert(ids, x[:, :64], x, meta)
    q = rng.normal(size=96).astype(np.float32)

    def got(flt: dict[str, object], k: int = 400) -> set[str]:
        hits = c.search(q[:64], q, top_k=min(k, 1000), oversampling=1, filter=flt, rescore=False)[0]
        return {h.id for h in hits}

    def want(pred: object) -> set[str]:
        return {ids[i] for i in range(400) if pred(meta[i])}  # type: ignore[operator]

    assert got({"lang": "de"}) == want(lambda m: m["lang"] == "de")
    assert got({"lang": {"$in": ["de", "fr"]}}) == want(lambda m: m["lang"] in {"de", "fr"})
    assert got({"lang": {"$ne": "en"}}) == want(lambda m: m["lang"] != "en")
    assert got({"lang": {"$nin": ["en", "es"]}, "n": 1}) == want(
        lambda m: m["lang"] not in {"en", "es"} and m["n"] == 1
    )
    assert got({"tags": "a"}) == want(lambda m: "a" in m["tags"])
    # filtered rows are excluded during the scan: top_k is filled from matching rows only
    hits = c.search(q[:64], q, top_k=10, filter={"lang": "es"})[0]
    assert len(hits) == 10 and all(h.metadata and h.metadata["lang"] == "es" for h in hits)
    # filter + exact search agree on membership
    assert {h.id for h in c.exact_search(q, top_k=1000, filter={"lang": "fr"})[0]} == want(
        lambda m: m["lang"] == "fr"
    )
    # deleted rows vanish from filtered results; replaced rows move to their new value
    c.delete([ids[0]])
    c.upsert([ids[1]], x[1:2, :64], x[1:2], [{"lang": "de"}])
    assert ids[0] not in got({"lang": "de"})
    assert ids[1] in got({"lang": "de"}) and ids[1] not in got({"lang": "fr"})


def test_persistence_and_filter_index_rebuilt(tmp_path: Path, rng: np.random.Generator) -> None:
    ids, x = docs(rng, 300)
    with Store(tmp_path / "d") as s:
        s.create_collection("c", small_config())
        c = s.collection("c")
        c.upsert(ids, x[:, :64], x, [{"lang": "de" if i < 100 else "en"} for i in range(300)])
        c.delete(ids[:10])
        before = c.search(x[:5, :64], x[:5], top_k=10, filter={"lang": "de"})
    with Store(tmp_path / "d") as s:
        c = s.collection("c")
        assert c.count() == 290
        assert c.search(x[:5, :64], x[:5], top_k=10, filter={"lang": "de"}) == before
        c.upsert(["new"], x[:1, :64], x[:1])  # row ids keep growing after reopen
        assert c.count() == 291 and c.search(x[0, :64], x[0], top_k=1)[0][0].id == "new"


def test_format_record_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    import json

    import lmdb

    with Store(tmp_path / "d"):
        pass
    env = lmdb.open(str(tmp_path / "d"), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(
            b"format", json.dumps({"format": "zembed-store", "version": FORMAT_VERSION + 1}).encode(), db=meta
        )
    env.close()
    with pytest.raises(FormatMismatch, match="version"):
        Store(tmp_path / "d")


def test_ensure_collection_checks_config(store: Store) -> None:
    store.ensure_collection("c", small_config())
    store.ensure_collection("c", small_config())
    with pytest.raises(FormatMismatch, match="created with"):
        store.ensure_collection("c", small_config(code_bits=32))


def test_map_grows_without_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    with Store(tmp_path / "d", map_size=256 * 1024) as s:
        s.create_collection("c", small_config(rescore_dims=1024, code_bits=64, rescore_dtype="float32"))
        c = s.collection("c")
        for b in range(6):
            x = rng.normal(size=(200, 1024)).astype(np.float32)
            c.upsert([f"{b}-{i}" for i in range(200)], x[:, :64], x)
        assert c.count() == 1200
        assert s.env.resizes >= 2
        assert s.stats()["map_size"] > 256 * 1024  # type: ignore[operator]


def test_snapshot_while_searching_reopens_identically(tmp_path: Path, rng: np.random.Generator) -> None:
    import threading

    ids, x = docs(rng, 2000)
    with Store(tmp_path / "d") as s:
        s.create_collection("c", small_config())
        c = s.collection("c")
        c.upsert(ids, x[:, :64], x, [{"lang": "de"}] * 2000)
        c.delete(ids[:500])  # compaction drops freed pages
        stop = threading.Event()
        searched = [0]

        def searcher() -> None:
            while not stop.is_set():
                c.search(x[3, :64], x[3], top_k=5)
                searched[0] += 1

        threads = [threading.Thread(target=searcher) for _ in range(4)]
        for t in threads:
            t.start()
        s.snapshot(tmp_path / "snap")
        stop.set()
        for t in threads:
            t.join()
        assert searched[0] > 0
        expected = c.search(x[:20, :64], x[:20], top_k=10, filter={"lang": "de"})
        with pytest.raises(FileExistsError):
            s.snapshot(tmp_path / "snap")
    with Store(tmp_path / "snap") as restored:
        c2 = restored.collection("c")
        assert c2.count() == 1500
        assert c2.search(x[:20, :64], x[:20], top_k=10, filter={"lang": "de"}) == expected


def test_median_calibration_at_sample_size(store: Store, rng: np.random.Generator) -> None:
    # an anisotropic set: a shared direction dominates, so sign bits are nearly constant
    common = rng.normal(size=64).astype(np.float32) * 3
    x = (common + rng.normal(size=(300, 64))).astype(np.float32)
    store.create_collection(
        "c",
        CollectionConfig(
            code_bits=64, rescore_dims=64, calibration=Calibration.MEDIAN, calibration_sample=200
        ),
    )
    c = store.collection("c")
    c.upsert([str(i) for i in range(150)], x[:150])
    assert not c.info().calibrated
    c.upsert([str(i) for i in range(150, 300)], x[150:])  # crosses the sample size: calibrates
    info = c.info()
    assert info.calibrated and info.thresholds is not None
    t = np.asarray(info.thresholds, dtype=np.float32)
    np.testing.assert_allclose(t, np.median(quantize.l2_normalize(x), axis=0), rtol=1e-5, atol=1e-6)
    rec = c.get(["5"])[0]
    assert rec is not None and rec.code == np.packbits(quantize.l2_normalize(x[5:6])[0] > t).tobytes()
    bits = np.unpackbits(np.frombuffer(rec.code, dtype=np.uint8))
    assert 0.2 < bits.mean() < 0.8
    assert c.search(x[42], top_k=1, oversampling=2)[0][0].id == "42"


def test_calibrate_on_request(store: Store, rng: np.random.Generator) -> None:
    store.create_collection(
        "c", CollectionConfig(code_bits=32, rescore_dims=32, calibration=Calibration.MEDIAN)
    )
    c = store.collection("c")
    x = rng.normal(loc=1.0, size=(50, 32)).astype(np.float32)
    c.upsert([str(i) for i in range(50)], x)
    t = c.calibrate()
    assert len(t) == 32 and c.info().calibrated
    assert c.search(x[9], top_k=1)[0][0].id == "9"
    from zembed.store import InvalidArgument

    with pytest.raises(InvalidArgument, match="already calibrated"):
        c.calibrate()


def test_explicit_thresholds(store: Store, rng: np.random.Generator) -> None:
    t = tuple(float(v) for v in rng.normal(size=16) * 0.1)
    store.create_collection("c", CollectionConfig(code_bits=16, rescore_dims=16, thresholds=t))
    c = store.collection("c")
    x = rng.normal(size=(3, 16)).astype(np.float32)
    c.upsert(["a", "b", "c"], x)
    rec = c.get(["b"])[0]
    assert rec is not None
    assert (
        rec.code == np.packbits(quantize.l2_normalize(x[1:2])[0] > np.asarray(t, dtype=np.float32)).tobytes()
    )


def test_filterable_names_stored_by_an_earlier_version_still_open(tmp_path: Path) -> None:
    """Earlier versions accepted any filterable name; today's stricter rules apply to new names only."""
    import json

    import lmdb

    from zembed.store.collection import meta_key

    path = tmp_path / "old"
    with Store(path) as s:
        s.create_collection("c", small_config(filterable=("lang",)))
        x = np.random.default_rng(0).normal(size=(3, 96)).astype(np.float32)
        s.collection("c").upsert(["a", "b", "c"], x[:, :64], x, [{"Owner Id": "7"}, {}, {"Owner Id": "8"}])
    env = lmdb.open(str(path), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        raw = txn.get(meta_key("c"), db=meta)
        assert raw is not None
        rec = json.loads(raw)
        rec["config"]["filterable"] = ["lang", "Owner Id"]  # refused by today's rules
        txn.put(meta_key("c"), json.dumps(rec).encode(), db=meta)
    env.close()
    with Store(path) as s:
        c = s.collection("c")
        assert c.config.filterable == ("lang", "Owner Id")
        assert c.count() == 3


def test_filterable_fields_added_to_a_filled_collection_index_stored_documents(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ids, x = docs(rng, 300)
    meta = [{"lang": ["en", "de", "ja"][i % 3], "Owner.Id": i % 5} for i in range(300)]
    with Store(tmp_path / "d") as s:
        s.create_collection("c", small_config(filterable=()))
        c = s.collection("c")
        c.upsert(ids, x[:, :64], x, meta)
        with pytest.raises(InvalidArgument):
            c.search(x[0, :64], x[0], filter={"lang": "de"})
        info = s.add_filterable("c", ["lang", "Owner.Id"])
        assert info.config.filterable == ("lang", "Owner.Id")
        hits = c.search(x[1, :64], x[1], top_k=300, oversampling=1, filter={"lang": "de", "Owner.Id": 1})
        want = {ids[i] for i in range(300) if i % 3 == 1 and i % 5 == 1}
        assert {h.id for h in hits[0]} == want
        # new documents are indexed on the new fields as they arrive; repeating is a no-op
        c.upsert(["new"], x[:1, :64], x[:1], [{"lang": "de", "Owner.Id": 1}])
        assert s.add_filterable("c", ["lang"]).config.filterable == ("lang", "Owner.Id")
        hits = c.search(x[0, :64], x[0], top_k=1, filter={"lang": "de", "Owner.Id": 1})
        assert hits[0][0].id == "new"
        # a bad name changes nothing
        with pytest.raises(InvalidArgument):
            s.add_filterable("c", ["bad name"])
        # ensure_collection (--default-collection) adds the fields it asks for, keeps the rest
        s.ensure_collection("c", small_config(filterable=("tier",)))
        assert s.collection("c").config.filterable == ("lang", "Owner.Id", "tier")
    with Store(tmp_path / "d") as s:  # durable
        c = s.collection("c")
        assert c.config.filterable == ("lang", "Owner.Id", "tier")
        hits = c.search(x[1, :64], x[1], top_k=300, oversampling=1, filter={"lang": "de", "Owner.Id": 1})
        assert {h.id for h in hits[0]} == want | {"new"}


def test_a_small_store_allocates_little_disk(tmp_path: Path) -> None:
    """Preallocation grows with the store (an eighth ahead, at least 1 MiB): a one-document store
    used to take 257 MB of disk (the test suite alone left 16 GB under the temp folder), then 16 MiB."""
    with Store(tmp_path / "d") as s:
        s.create_collection("c", small_config())
        x = np.ones((1, 96), dtype=np.float32)
        s.collection("c").upsert(["a"], x[:, :64], x)
    allocated = (tmp_path / "d" / "data.mdb").stat().st_blocks * 512
    assert allocated < 3 << 20, allocated
