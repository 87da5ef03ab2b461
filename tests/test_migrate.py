"""Format 1 -> format 2: a store written by format-1 code (tests/fixtures/format1, made by commit
1885117 from tests/format1_fixture.py) opens read-only and untouched with a message naming ``zembed
migrate`` (its reads: tests/test_format1_readonly.py), and ``zembed migrate`` converts it losing
nothing: every id, code byte, rescore record byte, metadata
document, filterable field, kept calibration vector and the whole calibration state."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest

from tests import format1_fixture as fixture
from zembed.store import Store, quantize
from zembed.store.errors import FormatMismatch, NeedsMigration
from zembed.store.records import CollectionRecord, meta_key

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "format1"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def zembed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zembed.service.cli", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def old(tmp_path: Path) -> Path:
    path = tmp_path / "old"
    shutil.copytree(FIXTURE, path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


def v1_contents(path: Path) -> dict[str, dict[str, tuple[bytes, bytes, bytes | None, bytes | None]]]:
    """Per collection, id -> (code, rescore record, metadata JSON, kept code vector), read from the
    format-1 layout directly (per-row keys cid + rowid)."""
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16)
    dbs = {
        n: env.open_db(n.encode(), create=False) for n in ("meta", "ids", "codes", "vecs", "docs", "calib")
    }
    out: dict[str, dict[str, tuple[bytes, bytes, bytes | None, bytes | None]]] = {}
    with env.begin() as txn:
        for name in fixture.COLLECTIONS:
            raw = txn.get(meta_key(name), db=dbs["meta"])
            assert raw is not None
            cid = json.loads(raw)["cid"]
            prefix = cid.to_bytes(4, "big")
            coll = {}
            for k, v in txn.cursor(db=dbs["ids"]):
                if not k.startswith(prefix):
                    continue
                rk = prefix + v
                code, vec = txn.get(rk, db=dbs["codes"]), txn.get(rk, db=dbs["vecs"])
                assert code is not None and vec is not None
                coll[k[4:].decode()] = (code, vec, txn.get(rk, db=dbs["docs"]), txn.get(rk, db=dbs["calib"]))
            out[name] = coll
    env.close()
    return out


def v1_record(path: Path, name: str) -> CollectionRecord:
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16)
    with env.begin() as txn:
        raw = txn.get(meta_key(name), db=env.open_db(b"meta", txn=txn, create=False))
    env.close()
    assert raw is not None
    return CollectionRecord.from_bytes(raw)


def test_a_format1_store_opens_read_only_untouched_with_the_command_that_converts_it(old: Path) -> None:
    before = digest(old)
    for readonly in (False, True):
        with Store(old, readonly=readonly) as s:
            msg = s.needs_migration
            assert msg is not None and "format 1" in msg and f"zembed migrate {old} NEW_DIR" in msg
            with pytest.raises(NeedsMigration) as err:
                s.create_collection("x")
            assert isinstance(err.value, FormatMismatch)  # FAILED_PRECONDITION over gRPC
            assert f"zembed migrate {old} NEW_DIR" in str(err.value)
    assert digest(old) == before
    assert sorted(p.name for p in old.iterdir()) == ["data.mdb"]  # no lock file either
    Store(old.parent / "fresh").close()


def test_migrate_converts_everything_and_loses_nothing(old: Path, tmp_path: Path) -> None:
    want = v1_contents(old)
    before = digest(old)
    new = tmp_path / "new"
    res = zembed("migrate", str(old), str(new))
    assert res.returncode == 0, res.stderr
    assert "4 collections, 504 documents" in res.stdout
    assert digest(old) == before  # the source is only read
    assert not list(tmp_path.glob(".new.partial-*"))
    with Store(new) as s:
        assert sorted(c.name for c in s.list_collections()) == sorted(fixture.COLLECTIONS)
        for name in fixture.COLLECTIONS:
            c = s.collection(name)
            rec = v1_record(old, name)
            info = c.info()
            assert c.config == rec.config
            assert info.count == rec.count == len(want[name]) == len(fixture.expected(name))
            # the calibration state as it was: thresholds, refine model, measured recall, final
            assert c._rec.thresholds == rec.thresholds and c._rec.scale == rec.scale
            assert c._rec.centre == rec.centre and c._rec.tuning == rec.tuning
            assert (c._rec.final, c._rec.calibrated_at) == (rec.final, rec.calibrated_at)
            if not want[name]:
                continue
            ids = sorted(want[name])
            got = c.get(ids, with_vectors=True)
            exp = fixture.expected(name)
            for ext, r in zip(ids, got, strict=True):
                assert r is not None, ext
                code, vec, doc, _kept = want[name][ext]
                assert r.code == code  # byte for byte
                old_vec = quantize.decode_rescore([vec], c.config.rescore_dims, c.config.rescore_dtype)[0]
                assert r.rescore is not None and np.array_equal(r.rescore, old_vec)
                assert r.metadata == (json.loads(doc) if doc else {}) == exp[ext][1]
            with s.env.reader() as txn:  # the kept code vectors (beta still collects for median)
                kept = [bytes(k) for k, _ in txn.cursor(db=s.env.dbs["calib"])]
            n_kept = sum(1 for k in kept if k[:4] == c.cid.to_bytes(4, "big"))
            assert n_kept == sum(1 for v in want[name].values() if v[3] is not None)
        # it searches and filters like the original; writes and a calibration continue
        alpha = s.collection("alpha")
        exp = fixture.expected("alpha")
        target = "alpha-2-30"
        x = exp[target][0]
        assert alpha.search(x[:64], x, top_k=1)[0][0].id == target
        hits = alpha.search(x[:64], x, top_k=200, filter={"lang": "de"}, oversampling=20)[0]
        assert {h.id for h in hits} == {i for i, (_, m) in exp.items() if m.get("lang") == "de"}
        beta = s.collection("beta")
        assert not beta.info().calibrated
        beta.calibrate()  # from the kept vectors that came across
        xb = fixture.expected("beta")["beta-1-7"][0]
        assert beta.search(xb, top_k=1)[0][0].id == "beta-1-7"
        alpha.upsert(["new"], x[None, :64], x[None, :])
        assert alpha.count() == len(exp) + 1


def test_migrate_refuses_clearly_and_writes_nothing(old: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("x")
    res = zembed("migrate", str(old), str(busy))
    assert res.returncode == 2 and "not empty" in res.stderr and "Traceback" not in res.stderr
    assert [p.name for p in busy.iterdir()] == ["keep"]
    res = zembed("migrate", str(tmp_path / "nothing"), str(tmp_path / "out"))
    assert res.returncode == 2 and "no such file" in res.stderr and not (tmp_path / "out").exists()
    fmt2 = tmp_path / "fmt2"
    Store(fmt2).close()
    res = zembed("migrate", str(fmt2), str(tmp_path / "out"))
    assert res.returncode == 2 and "already this format" in res.stderr and not (tmp_path / "out").exists()
