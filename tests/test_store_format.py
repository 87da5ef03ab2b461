"""Store format 2 (issue #10): blocks of rows per LMDB value, tombstones and compaction, the bulk
array paths (in and out), the shortlist call, and the disk figures."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import small_config
from zembed.store import Calibration, CollectionConfig, InvalidArgument, Store, blocks, quantize
from zembed.store.collection import Collection
from zembed.store.rewrites import COMPACT_MIN_DEAD


def data(n: int, seed: int = 0, dims: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)


def runs_of(c: Collection) -> list[tuple[int, int]]:
    with c.env.reader() as txn:
        runs, _ = blocks.read_runs(txn, c.env.dbs, c.cid, c.code_bytes)
        return list(zip(runs.starts.tolist(), runs.lengths.tolist(), strict=True))


def everything(c: Collection, ids: list[str], x: np.ndarray) -> object:
    """What a reader can observe: documents with vectors, and searches with and without filters."""
    recs = [
        (r.id, r.metadata, r.code, r.rescore.tobytes()) if r and r.rescore is not None else None
        for r in c.get(ids, with_vectors=True)
    ]
    hits = c.search(x[:8, :64], x[:8], top_k=10)
    filtered = c.search(x[:4, :64], x[:4], top_k=10, filter={"lang": "de"})
    return recs, hits, filtered


def test_small_writes_keep_few_runs_per_block_and_whole_blocks_are_one_value(tmp_path: Path) -> None:
    x = data(5000)
    ids = [f"d{i}" for i in range(5000)]
    with Store(tmp_path / "d") as s:
        s.create_collection("c", small_config(calibration="none"))
        c = s.collection("c")
        sizes = [1, 1, 3, 7, 2, 50, 1, 300, 900, 1, 1]
        pos = 0
        for k in sizes:
            c.upsert(ids[pos : pos + k], x[pos : pos + k, :64], x[pos : pos + k])
            pos += k
            runs = runs_of(c)
            # contiguous from row 0, shrinking at least by half within a block (binary counter)
            assert runs[0][0] == 0 and all(a + n == b for (a, n), (b, _) in itertools.pairwise(runs))
            assert len(runs) <= int(np.log2(blocks.BLOCK_ROWS)) + 1
            for (_, n1), (_, n2) in itertools.pairwise(runs):
                assert n1 > n2
        c.upsert(ids[pos:], x[pos:, :64], x[pos:])  # completes block 0: one value of 4096 rows
        runs = runs_of(c)
        assert runs[0] == (0, blocks.BLOCK_ROWS) and sum(n for _, n in runs) == 5000
        before = c.search(x[:8, :64], x[:8], top_k=10)
    with Store(tmp_path / "d") as s:
        c = s.collection("c")
        assert c.count() == 5000
        assert c.search(x[:8, :64], x[:8], top_k=10) == before
        got = c.get(ids[4090:4100], with_vectors=True)
        for i, r in zip(range(4090, 4100), got, strict=True):
            assert r is not None and r.rescore is not None
            np.testing.assert_allclose(r.rescore, x[i] / np.linalg.norm(x[i]), atol=2e-3)


def test_deletes_are_tombstones_until_compaction_which_changes_nothing_visible(tmp_path: Path) -> None:
    n = 3000
    x = data(n, 1)
    ids = [f"d{i}" for i in range(n)]
    meta = [{"lang": ["de", "en"][i % 2], "i": i} for i in range(n)]
    with Store(tmp_path / "d") as s:
        s.create_collection("c", small_config())
        c = s.collection("c")
        c.upsert(ids, x[:, :64], x, meta)
        c.delete(ids[:1000:3])
        c.upsert(ids[1:60:3], x[:20, :64], x[:20], [{"lang": "de", "moved": True}] * 20)  # replaced
        assert c._rec.dead == 334 + 20 and c.count() == n - 334
        live = [i for i in ids if c.get([i])[0] is not None]
        before = everything(c, live, x)
    with Store(tmp_path / "d") as s:  # tombstones survive a reopen
        c = s.collection("c")
        assert c.count() == n - 334 and everything(c, live, x) == before
        info_before = c.info()
        assert c.compact() == 354
        assert c._rec.dead == 0 and runs_of(c)[0][0] == n + 20  # renumbered past the old rows
        assert everything(c, live, x) == before
        assert c.info().bytes_in_use < info_before.bytes_in_use
        assert c.compact() == 0
    with Store(tmp_path / "d") as s:
        c = s.collection("c")
        assert everything(c, live, x) == before
        c.upsert(["after"], x[:1, :64], x[:1], [{"lang": "de"}])
        hits = c.search(x[0, :64], x[0], top_k=3, filter={"lang": "de"})[0]
        assert {"after", "d1"} <= {h.id for h in hits}  # d1 was replaced by x[0] above


def test_compaction_runs_by_itself_when_tombstones_outnumber_live_rows(tmp_path: Path) -> None:
    n = 2 * COMPACT_MIN_DEAD
    x = data(n, 2, 64)
    ids = [f"d{i}" for i in range(n)]
    with Store(tmp_path / "d") as s:
        s.create_collection("c", small_config(rescore_dims=64, filterable=()))
        c = s.collection("c")
        c.upsert_arrays(np.asarray(ids), x)
        c.delete(ids[: COMPACT_MIN_DEAD - 1])
        assert c._rec.dead == COMPACT_MIN_DEAD - 1
        c.delete(ids[COMPACT_MIN_DEAD - 1 : COMPACT_MIN_DEAD])  # the one that makes it due
        assert c._rec.dead == 0 and c.count() == COMPACT_MIN_DEAD
        assert sum(n for _, n in runs_of(c)) == COMPACT_MIN_DEAD
        q = x[n - 5]
        assert c.search(q, top_k=1)[0][0].id == ids[n - 5]
    with Store(tmp_path / "d") as s:
        assert s.collection("c").search(q, top_k=1)[0][0].id == ids[n - 5]


def test_bulk_arrays_store_what_the_list_path_stores(store: Store) -> None:
    n = 700
    x = data(n, 3)
    ids = [f"doc-{i}" for i in range(n)]
    meta = [{"lang": "de" if i % 3 else "en"} for i in range(n)]
    for name in ("lists", "arrays", "f16", "ints"):
        store.create_collection(name, small_config())
    store.collection("lists").upsert(ids, x[:, :64], x, meta)
    store.collection("arrays").upsert_arrays(np.asarray(ids), x, x[:, :64], metadata=meta)
    x16 = x.astype(np.float16)
    store.collection("f16").upsert_arrays(np.asarray(ids, dtype="S"), x16, x16[:, :64], metadata=meta)
    store.collection("ints").upsert_arrays(np.arange(n, dtype=np.int64) * 7, x, x[:, :64])
    a, b = store.collection("lists"), store.collection("arrays")
    for ra, rb in zip(a.get(ids, with_vectors=True), b.get(ids, with_vectors=True), strict=True):
        assert ra is not None and rb is not None and ra.rescore is not None and rb.rescore is not None
        assert (ra.id, ra.code, ra.metadata) == (rb.id, rb.code, rb.metadata)
        assert np.array_equal(ra.rescore, rb.rescore)
    q = x[:5]
    assert a.search(q[:, :64], q, top_k=10) == b.search(q[:, :64], q, top_k=10)
    # float16 in: the same as float32 of those float16 values, never a widened copy of the whole
    f = store.collection("f16")
    r = f.get(["doc-9"], with_vectors=True)[0]
    assert r is not None and r.rescore is not None
    w = x16[9].astype(np.float32)
    np.testing.assert_allclose(r.rescore, w / np.linalg.norm(w), atol=1e-3)
    assert f.search(q[:, :64], q, top_k=1)[0][0].id == "doc-0"
    # unit float16 rows (what an embedding model in float16 gives) are stored as given, no rescaling
    u16 = quantize.l2_normalize(x).astype(np.float16)
    store.create_collection("unit16", small_config(calibration="none"))
    store.collection("unit16").upsert_arrays(np.asarray(ids), u16, u16[:, :64])
    r = store.collection("unit16").get(["doc-4"], with_vectors=True)[0]
    assert r is not None and r.rescore is not None and np.array_equal(r.rescore, u16[4].astype(np.float32))
    assert r.code == np.packbits(u16[4, :64] > 0).tobytes()
    # normalized=True (the caller vouches unit rows): no norm pass, the same stored bytes
    store.create_collection("vouched", small_config(calibration="none"))
    vouched = store.collection("vouched")
    vouched.upsert_arrays(np.asarray(ids), u16, u16[:, :64], normalized=True)
    pairs = zip(
        vouched.get(ids, with_vectors=True),
        store.collection("unit16").get(ids, with_vectors=True),
        strict=True,
    )
    for ra, rb in pairs:
        assert ra is not None and rb is not None and ra.rescore is not None and rb.rescore is not None
        assert ra.code == rb.code and np.array_equal(ra.rescore, rb.rescore)
    for bad, what in ((np.inf, "finite"), (np.nan, "finite"), (0.0, "zero")):
        y = u16[:3].copy()
        y[1] = bad
        with pytest.raises(InvalidArgument, match=what) as err:
            vouched.upsert_arrays(np.asarray(["x", "y", "z"]), y, y[:, :64], normalized=True)
        assert err.value.field == "rescore_vectors[1]"
    assert vouched.count() == n
    # integer ids are stored as their decimal text
    ints = store.collection("ints")
    assert ints.count() == n and ints.get(["14"])[0] is not None and ints.get(["15"])[0] is None
    # replacing through the bulk path
    ints.upsert_arrays(np.asarray([14, 100000]), x[:2], x[:2, :64])
    assert ints.count() == n + 1 and ints._rec.dead == 1


def test_pre_packed_sign_codes_like_sentence_transformers_ubinary(store: Store) -> None:
    n = 400
    x = data(n, 4)
    ids = np.asarray([f"u{i}" for i in range(n)])
    store.create_collection("vec", small_config(calibration="none"))
    store.create_collection("packed", small_config(calibration="none"))
    store.collection("vec").upsert(list(ids), x[:, :64], x)
    ubinary = np.packbits(x[:, :64] > 0, axis=-1)  # what quantize_embeddings(..., "ubinary") returns
    store.collection("packed").upsert_arrays(ids, x, codes=ubinary)
    q = x[:6]
    a, b = store.collection("vec"), store.collection("packed")
    assert a.search(q[:, :64], q, top_k=10) == b.search(q[:, :64], q, top_k=10)
    rec = b.get(["u3"])[0]
    assert rec is not None and rec.code == ubinary[3].tobytes()
    # calibrated collections refuse packed codes (their bits are not sign bits); bad shapes named
    store.create_collection("auto", small_config())
    with pytest.raises(InvalidArgument) as err:
        store.collection("auto").upsert_arrays(ids, x, codes=ubinary)
    assert err.value.field == "codes" and "sign codes" in str(err.value)
    with pytest.raises(InvalidArgument) as err:
        b.upsert_arrays(ids, x, codes=ubinary[:, :7])
    assert err.value.field == "codes"
    store.create_collection("odd", small_config(code_bits=60, calibration="none"))
    odd = np.packbits(x[:, :60] > 0, axis=-1)
    odd[5, -1] |= 1  # a padding bit set
    with pytest.raises(InvalidArgument) as err:
        store.collection("odd").upsert_arrays(ids, x, codes=odd)
    assert err.value.field == "codes[5]"
    assert store.collection("auto").count() == 0 and store.collection("odd").count() == 0


@pytest.mark.parametrize(
    "make,field",
    [
        (lambda x: (np.asarray(["a", "b", "a"]), x), "ids[2]"),
        (lambda x: (np.asarray(["a", "", "c"]), x), "ids[1]"),
        (lambda x: (np.asarray(["a", "b" * 257, "c"]), x), "ids[1]"),
        (lambda x: (np.asarray([[1, 2, 3]]), x), "ids"),
        (lambda x: (np.asarray([1.5, 2, 3]), x), "ids"),
        (lambda x: (np.asarray(["a", "b", "c"]), x[:, :95]), "rescore_vectors"),
        (
            lambda x: (np.asarray(["a", "b", "c"]), np.where(np.arange(3)[:, None] == 2, np.nan, x)),
            "rescore_vectors[2]",
        ),
        (
            lambda x: (
                np.asarray(["a", "b", "c"]),
                np.where(np.arange(3)[:, None] == 1, 0, x).astype(np.float16),
            ),
            "rescore_vectors[1]",
        ),
    ],
)
def test_bulk_bad_input_names_the_field_and_writes_nothing(store: Store, make: object, field: str) -> None:
    store.create_collection("c", small_config())
    c = store.collection("c")
    c.upsert(["keep"], np.ones((1, 64)), np.ones((1, 96)))
    ids, x = make(data(3, 5))  # type: ignore[operator]
    with pytest.raises(InvalidArgument) as err:
        c.upsert_arrays(ids, x, None if x.shape[1] != 96 else x[:, :64])
    assert err.value.field == field
    assert c.count() == 1 and c._rec.next_row == 1


def test_arrays_out_and_the_shortlist_call(store: Store) -> None:
    n = 1500
    x = data(n, 6)
    ids = [f"s{i}" for i in range(n)]
    store.create_collection("c", small_config())
    c = store.collection("c")
    c.upsert_arrays(np.asarray(ids), x, x[:, :64], metadata=[{"lang": ["de", "en"][i % 2]} for i in range(n)])
    c.delete(ids[:10])
    q = x[20:24]
    hits = c.search(q[:, :64], q, top_k=7)
    arr = c.search_arrays(q[:, :64], q, top_k=7)
    assert arr.ids.shape == arr.scores.shape == arr.rowids.shape == (4, 7)
    assert [[h.id for h in hs] for hs in hits] == arr.ids.tolist()
    np.testing.assert_allclose([[h.score for h in hs] for hs in hits], arr.scores)
    assert (c.ids_of(arr.rowids) == arr.ids).all()
    # the shortlist: positions and Hamming distances, the nearest visible rows by code
    sl = c.shortlist(q[:, :64], 50, filter={"lang": "de"})
    assert sl.positions.shape == sl.distances.shape == (4, 50)
    codes = {r.id: np.frombuffer(r.code, np.uint8) for r in c.get(ids[10:]) if r is not None}
    thr = np.asarray(c.info().thresholds, dtype=np.float32)
    for i in range(4):
        qc = np.packbits(quantize.l2_normalize(q[i, :64]) > thr)
        got = c.ids_of(sl.rowids[i]).tolist()
        assert all(int(g[1:]) % 2 == 0 and int(g[1:]) >= 10 for g in got)  # visible and filtered
        dist = {k: int(np.unpackbits(qc ^ v).sum()) for k, v in codes.items() if int(k[1:]) % 2 == 0}
        assert [dist[g] for g in got] == sl.distances[i].tolist()
        assert sorted(dist.values())[:50] == sl.distances[i].tolist()
    with pytest.raises(InvalidArgument) as err:
        c.shortlist(q[:, :64], 0)
    assert err.value.field == "k"


def test_disk_figures_and_a_small_store_takes_little(tmp_path: Path) -> None:
    with Store(tmp_path / "d") as s:
        s.create_collection(
            "c", CollectionConfig(code_bits=640, rescore_dims=640, calibration=Calibration.NONE)
        )
        c = s.collection("c")
        c.upsert(["one"], data(1, 7, 640))
        stats = s.stats()
        allocated = (tmp_path / "d" / "data.mdb").stat().st_blocks * 512
        assert stats["bytes_allocated"] == allocated and allocated < 3 << 20, stats
        assert 0 < stats["bytes_in_use"] <= allocated  # type: ignore[operator]
        info = c.info()
        assert 0 < info.bytes_in_use <= stats["bytes_in_use"]  # type: ignore[operator]
        assert info.bytes_per_document == info.bytes_in_use
        x = data(8192, 8, 640).astype(np.float16)
        c.upsert_arrays(np.arange(8192), x)
        stats = s.stats()
        raw = 8193 * (80 + 1280 + 4)  # codes + float16 vectors + ids
        used, alloc = stats["bytes_in_use"], stats["bytes_allocated"]
        assert used < 1.2 * raw, (used, raw)  # type: ignore[operator]
        assert alloc <= 1.25 * used + (1 << 20), (alloc, used)  # type: ignore[operator]
        info = c.info()
        assert abs(info.bytes_per_document - used / 8193) < 0.1 * used / 8193  # type: ignore[operator]


def test_get_collection_reports_the_disk_figures_over_grpc(tmp_path: Path) -> None:
    import grpc

    from tests.fakes import FakeServer
    from zembed.v1 import zembed_pb2 as pb
    from zembed.v1 import zembed_pb2_grpc as pb_grpc

    with FakeServer(tmp_path) as server:
        ch = grpc.insecure_channel(server.target)
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        cfg = pb.CollectionConfig(code_bits=64, rescore_dims=64, rescore_dtype="float32")
        search.CreateCollection(pb.CreateCollectionRequest(name="c", config=cfg), timeout=10)
        x = data(300, 9, 64)
        docs = [pb.Document(id=f"d{i}", vectors=pb.Vectors(code=x[i].tolist())) for i in range(300)]
        search.Upsert(pb.UpsertRequest(collection="c", documents=docs), timeout=10)
        info = search.GetCollection(pb.GetCollectionRequest(name="c"), timeout=10).collection
        store_info = server.running.engine.store.collection("c").info()
        ch.close()
    assert info.count == 300
    assert info.bytes_in_use == store_info.bytes_in_use > 300 * (8 + 256)
    assert info.bytes_allocated >= info.bytes_in_use
    assert info.bytes_per_document == info.bytes_in_use // 300
