"""Search quality at the defaults (issue 8), on real LMDB stores and a real gRPC server:

- the refine step against a brute-force reference, and never worse than no refine (anisotropic data);
- calibrated codes from the first write, recalibrated as the collection doubles, final at the sample
  size; records written by the earlier version open and mean what they meant;
- the search parameters: one type, validated once, explicit sizes, recall_target;
- the Calibrate RPC and the measured recall in GetCollection.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import lmdb
import numpy as np
import numpy.typing as npt
import pytest

from tests.fakes import FakeServer
from zembed.store import Calibration, CollectionConfig, InvalidArgument, Store, blocks, quantize
from zembed.store.collection import meta_key
from zembed.store.layout import cid_prefix, iter_prefix
from zembed.store.params import SearchParams, Tuning
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

F32 = npt.NDArray[np.float32]


def unit(x: F32) -> F32:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def anisotropic(rng: np.random.Generator, n: int, d: int = 64, shared: float = 2.0) -> F32:
    """Most of every vector is one shared direction; per-dimension scales differ (as in XLM-R-family
    encoders): sign bits are nearly constant, and the refine step's estimate needs the thresholds."""
    m = rng.normal(size=d).astype(np.float32)
    m *= shared / np.linalg.norm(m)
    scales = np.exp(rng.normal(size=d) * 0.5).astype(np.float32)
    return unit((rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d) + m) * scales)


def recall_vs_exact(hits: list[list[str]], x: F32, q: F32, k: int) -> float:
    truth = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(h) & {f"d{j}" for j in t}) / k for h, t in zip(hits, truth, strict=True)]))


def fill(store: Store, name: str, x: F32, batch: int, **cfg: object) -> None:
    store.create_collection(
        name,
        CollectionConfig(code_bits=x.shape[1], rescore_dims=x.shape[1], rescore_dtype="float32", **cfg),  # type: ignore[arg-type]
    )
    c = store.collection(name)
    for s in range(0, len(x), batch):
        c.upsert([f"d{i}" for i in range(s, min(s + batch, len(x)))], x[s : s + batch])


# ---------------------------------------------------------------------------------------- refine
def test_refine_matches_a_brute_force_reference(store: Store, rng: np.random.Generator) -> None:
    """The float_reads rows the refine step keeps are exactly those a direct numpy computation of
    scale * (q - centre * t) against the stored bits ranks first, among the Hamming shortlist."""
    x = anisotropic(rng, 600)
    fill(store, "c", x, 600)
    c = store.collection("c")
    rec = c._rec
    model = rec.code_model()
    assert model is not None and rec.final is False and rec.calibrated_at == 600
    codes = quantize.binarize(x, model.thresholds)
    signs = quantize.sign_vectors(codes, 64)
    q = unit(x[:20] + rng.normal(size=(20, 64)).astype(np.float32) * 0.05)
    qbits = q > model.thresholds
    for i in range(len(q)):
        ham = (np.unpackbits(codes, axis=1, count=64).astype(bool) != qbits[i]).sum(axis=1)
        shortlist = np.lexsort((np.arange(600), ham))[:100]
        est = signs[shortlist] @ ((q[i] - model.centre * model.thresholds) * model.scale)
        ranked = shortlist[np.argsort(-est, kind="stable")]
        kept = set(ranked[:10].tolist())
        # with float_reads == top_k the answer is the kept rows, in exact order
        hits = c.search(q[i], q[i], SearchParams(top_k=10, shortlist=100, float_reads=10))[0]
        assert {int(h.id[1:]) for h in hits} == kept


@pytest.mark.parametrize("shared", [0.0, 1.0, 2.5])
def test_refine_never_loses_to_no_refine(tmp_path: Path, shared: float) -> None:
    """Same float reads: a 10x Hamming shortlist refined by the asymmetric estimate recalls at least
    as much as the plain Hamming shortlist (the earlier scoring ignored the thresholds and lost)."""
    rng = np.random.default_rng(int(shared * 10) + 3)
    x = anisotropic(rng, 3000, shared=shared)
    q = unit(x[rng.choice(3000, 200, replace=False)] + rng.normal(size=(200, 64)).astype(np.float32) * 0.1)
    with Store(tmp_path / "s") as s:
        fill(s, "c", x, 500)
        c = s.collection("c")
        for reads in (10, 20, 40):
            plain = c.search(q, q, SearchParams(top_k=10, float_reads=reads, refine=False))
            refined = c.search(q, q, SearchParams(top_k=10, float_reads=reads, shortlist=10 * reads))
            r_plain = recall_vs_exact([[h.id for h in hs] for hs in plain], x, q, 10)
            r_ref = recall_vs_exact([[h.id for h in hs] for hs in refined], x, q, 10)
            assert r_ref >= r_plain - 0.01, (shared, reads, r_ref, r_plain)


def test_earlier_refine_scoring_lost_on_anisotropic_data(rng: np.random.Generator) -> None:
    """The reference case for the fix: with median thresholds, scoring the raw query against the bits
    (the earlier step) ranks worse than the centred, scaled query."""
    x = anisotropic(rng, 2000, shared=2.5)
    model = quantize.fit_code_model(x)
    signs = quantize.sign_vectors(quantize.binarize(x, model.thresholds), 64)
    q = unit(x[:200] + rng.normal(size=(200, 64)).astype(np.float32) * 0.1)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]

    def overlap(est: F32) -> float:
        top = np.argsort(-est, axis=1)[:, :40]
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, truth, strict=True)]))

    fixed = overlap(model.refine_weights(q) @ signs.T)
    earlier = overlap(q @ signs.T)
    assert fixed > earlier + 0.05, (fixed, earlier)


# ---------------------------------------------------------------------------------- calibration
def stored_codes(store: Store, name: str) -> dict[bytes, bytes]:
    """Row id (u64 BE) -> stored code (format 2: codes in blocks, see store/blocks.py)."""
    c = store.collection(name)
    with c.env.reader() as txn:
        runs, codes = blocks.read_all(txn, c.env.dbs, c.cid, quantize.code_bytes(c.bits), "cblocks")
    first = int(runs.starts[0]) if len(runs.starts) else 0
    return {(first + i).to_bytes(8, "big"): bytes(r) for i, r in enumerate(codes)}


def kept_vectors(store: Store, name: str) -> int:
    c = store.collection(name)
    with c.env.reader() as txn:
        return sum(1 for _ in iter_prefix(txn, c.env.dbs["calib"], cid_prefix(c.cid)))


def test_small_collection_is_calibrated_from_its_first_write(store: Store, rng: np.random.Generator) -> None:
    x = anisotropic(rng, 300)
    fill(store, "c", x, 300)  # the default config: calibration auto
    info = store.collection("c").info()
    assert info.config.calibration is Calibration.AUTO
    assert info.calibrated and info.calibrated_at == 300 and not info.calibration_final
    t = np.asarray(info.thresholds, dtype=np.float32)
    np.testing.assert_allclose(t, np.median(x, axis=0), rtol=1e-5, atol=1e-6)
    assert info.measured_recall is not None and 0.5 < info.measured_recall <= 1.0
    assert len(info.tuning.points) > 4
    # every stored code is the calibrated one
    codes = quantize.binarize(x, t)
    assert sorted(stored_codes(store, "c").values()) == sorted(bytes(r) for r in codes)


def test_calibration_follows_growth_and_becomes_final(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = anisotropic(rng, 1300)
    seen: list[int] = []
    with Store(tmp_path / "s") as s:
        s.create_collection("c", CollectionConfig(code_bits=64, rescore_dims=64, calibration_sample=1000))
        c = s.collection("c")
        for start in range(0, 1300, 50):
            c.upsert([f"d{i}" for i in range(start, start + 50)], x[start : start + 50])
            seen.append(c.info().calibrated_at)
        assert sorted(set(seen)) == [50, 100, 200, 400, 800, 1000]
        info = c.info()
        assert info.calibration_final and info.calibrated_at == 1000
        assert kept_vectors(s, "c") == 0  # the kept code vectors are dropped once final
        t = np.asarray(info.thresholds, dtype=np.float32)
        np.testing.assert_allclose(t, np.median(x[:1000], axis=0), rtol=1e-5, atol=1e-6)
        want = sorted(bytes(r) for r in quantize.binarize(x, t))
        assert sorted(stored_codes(s, "c").values()) == want  # rows written before and after, all recoded
        with pytest.raises(InvalidArgument, match="already calibrated"):
            c.calibrate()
    with Store(tmp_path / "s") as s:  # durable: the same calibration after reopening
        again = s.collection("c").info()
        assert again.thresholds == info.thresholds and again.tuning == info.tuning
        assert again.calibration_final


def test_calibrate_on_request_before_it_is_due(store: Store, rng: np.random.Generator) -> None:
    x = anisotropic(rng, 300)
    fill(store, "c", x, 200)  # calibrated at 200; the next one is due at 400
    c = store.collection("c")
    assert c.info().calibrated_at == 200
    t = c.calibrate()
    assert len(t) == 64 and c.info().calibrated_at == 300 and kept_vectors(store, "c") == 300
    store.create_collection(
        "n", CollectionConfig(code_bits=64, rescore_dims=64, calibration=Calibration.NONE)
    )
    with pytest.raises(InvalidArgument, match="'auto' or 'median'"):
        store.collection("n").calibrate()


def _rewrite_as_earlier_version(path: Path, name: str) -> None:
    """Drop the fields this version added to a collection's record (what the earlier one wrote)."""
    env = lmdb.open(str(path), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        raw = txn.get(meta_key(name), db=meta)
        assert raw is not None
        rec = json.loads(raw)
        for k in ("scale", "centre", "calibrated_at", "final", "tuning"):
            rec.pop(k, None)
        txn.put(meta_key(name), json.dumps(rec).encode(), db=meta)
    env.close()


def test_records_of_the_earlier_version_keep_their_meaning(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    x = anisotropic(rng, 400)
    path = tmp_path / "s"
    with Store(path) as s:
        fill(s, "none", x, 400, calibration="none")
        fill(s, "median", x, 100, calibration="median", calibration_sample=200)
        fill(s, "pending", x[:100], 100, calibration="median", calibration_sample=200)
    for name in ("none", "median", "pending"):
        _rewrite_as_earlier_version(path, name)
    with Store(path) as s:
        none = s.collection("none")
        assert not none.info().calibrated and none._rec.code_model() is None
        assert sorted(stored_codes(s, "none").values()) == sorted(
            bytes(r) for r in np.packbits(x > 0, axis=1)
        )
        med = s.collection("median")
        assert med.info().calibrated and med._rec.final  # a median calibration was final
        model = med._rec.code_model()
        assert model is not None and (model.scale == 1).all() and model.centre == 0.5
        pend = s.collection("pending")
        assert not pend.info().calibrated and kept_vectors(s, "pending") == 100
        pend.upsert([f"d{i}" for i in range(100, 200)], x[100:200])  # reaches its sample: calibrates once
        assert pend.info().calibrated and pend._rec.final and kept_vectors(s, "pending") == 0
        for c in (none, med, pend):
            q = x[7] + 0.01
            assert c.search(q, q, top_k=1)[0][0].id == "d7"
            assert c.search(q, q, top_k=1, oversampling=4, refine=5)[0][0].id == "d7"  # the earlier form


# ---------------------------------------------------------------------------------------- params
@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": 1001}, "top_k"),
        ({"shortlist": 10, "float_reads": 20}, "shortlist"),
        ({"float_reads": 5, "top_k": 10}, "float_reads"),
        ({"float_reads": 100_001}, "float_reads"),
        ({"recall_target": 1.5}, "recall_target"),
        ({"recall_target": float("nan")}, "recall_target"),
        ({"oversampling": 4, "float_reads": 40}, "oversampling"),
        ({"oversampling": 0}, "oversampling"),
        ({"filter": {"lang": {"$bad": 1}}}, "filter.lang"),
    ],
)
def test_search_params_refused_with_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        SearchParams.create(**kw)  # type: ignore[arg-type]
    assert err.value.field == field


def test_plan_defaults_and_recall_target() -> None:
    p = SearchParams()
    plan = p.plan(None, 1_000_000)
    assert (plan.shortlist, plan.float_reads, plan.refine, plan.rescore) == (400, 40, True, True)
    assert p.plan(None, 100).shortlist == 100  # never more candidates than rows
    assert SearchParams(refine=False).plan(None, 10**6).shortlist == 40
    assert SearchParams(rescore=False).plan(None, 10**6).float_reads == 10
    assert SearchParams.create(top_k=5, oversampling=3).plan(None, 10**6).float_reads == 15
    tuning = Tuning(((1, 1, 0.5), (2, 4, 0.9), (4, 10, 0.97), (8, 10, 0.995)))
    assert SearchParams(recall_target=0.85).plan(tuning, 10**6).float_reads == 20
    assert SearchParams(recall_target=0.96).plan(tuning, 10**6).shortlist == 400
    assert SearchParams(recall_target=0.999).plan(tuning, 10**6).float_reads == 80  # best measured
    assert SearchParams(recall_target=0.9, float_reads=30).plan(tuning, 10**6).float_reads == 30


def test_recall_target_is_met_on_the_collection_itself(store: Store, rng: np.random.Generator) -> None:
    """The recall measured at calibration is what searches for stored-like queries get: each target
    picks the cheapest measured setting reaching it (the best one when none does), and a search at
    that setting recalls what was measured."""
    x = anisotropic(rng, 4000, shared=1.5)
    fill(store, "c", x, 4000)
    c = store.collection("c")
    tuning = c.info().tuning
    q = x[:200]
    exact = q @ x.T
    exact[np.arange(200), np.arange(200)] = -np.inf  # leave-one-out, as the calibration measures
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    best = max(r for _, _, r in tuning.points)
    for target in (0.3, 0.6, 0.999):
        chosen = tuning.choose(target)
        assert chosen is not None
        measured = tuning.recall_at(*chosen)
        assert measured is not None and measured >= min(target, best)
        hits = c.search(q, q, SearchParams(top_k=11, recall_target=target))  # 11: one is the query
        got = np.mean(
            [
                len({h.id for h in hs if h.id != f"d{i}"} & {f"d{j}" for j in truth[i]}) / 10
                for i, hs in enumerate(hits)
            ]
        )
        assert abs(got - measured) < 0.06, (target, chosen, got, measured)


# ------------------------------------------------------------------------------------------ gRPC
def test_calibrate_rpc_and_search_sizes_over_grpc(tmp_path: Path) -> None:
    with FakeServer(tmp_path) as server:
        ch = grpc.insecure_channel(server.target)
        search = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        made = search.CreateCollection(
            pb.CreateCollectionRequest(name="c", config=pb.CollectionConfig(code_bits=64, rescore_dims=64))
        ).collection
        assert (
            made.config.calibration == "auto" and not made.calibrated and not made.HasField("measured_recall")
        )
        docs = [pb.Document(id=f"t{i}", text=f"text number {i} about {i % 7}") for i in range(120)]
        search.Upsert(pb.UpsertRequest(collection="c", documents=docs), timeout=30)
        got = search.GetCollection(pb.GetCollectionRequest(name="c")).collection
        assert got.calibrated and got.calibrated_at == 120 and got.HasField("measured_recall")
        assert len(got.recall_points) > 4 and all(0 <= p.recall <= 1 for p in got.recall_points)
        more = [pb.Document(id=f"u{i}", text=f"another text {i}") for i in range(30)]
        search.Upsert(pb.UpsertRequest(collection="c", documents=more), timeout=30)
        cal = search.Calibrate(pb.CalibrateRequest(name="c"), timeout=30).collection
        assert cal.calibrated_at == 150 and not cal.calibration_final
        stored = search.GetDocuments(pb.GetDocumentsRequest(collection="c", ids=["t3"], include_vectors=True))
        vec = pb.Vectors(code=list(stored.documents[0].rescore))
        for req in (
            pb.SearchRequest(collection="c", vectors=vec, shortlist=50, float_reads=20, refine=True),
            pb.SearchRequest(collection="c", vectors=vec, recall_target=0.99),
            pb.SearchRequest(collection="c", vectors=vec, float_reads=10, refine=False),
        ):
            hits = search.Search(req, timeout=10).hits
            assert hits[0].id == "t3" and hits[0].score == pytest.approx(1.0, abs=1e-3)
        for req, field in (
            (pb.SearchRequest(collection="c", text="x", shortlist=10, float_reads=20), "shortlist"),
            (pb.SearchRequest(collection="c", text="x", recall_target=2.0), "recall_target"),
            (pb.SearchRequest(collection="c", text="x", top_k=1001), "top_k"),
            (pb.SearchRequest(collection="c", text="x", oversampling=4, float_reads=40), "oversampling"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                search.Search(req, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in str(err.value.details())
        search.CreateCollection(
            pb.CreateCollectionRequest(name="n", config=pb.CollectionConfig(code_bits=64, calibration="none"))
        )
        with pytest.raises(grpc.RpcError) as err:
            search.Calibrate(pb.CalibrateRequest(name="n"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            search.Calibrate(pb.CalibrateRequest(name="missing"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        ch.close()
