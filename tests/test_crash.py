"""Crash safety: SIGKILL a writer at random moments; every acknowledged batch survives intact and
no partial batch is ever visible."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.crash_child import BATCH, batch_data
from zembed.store import Store, quantize

ROUNDS = int(os.environ.get("ZEMBED_CRASH_ROUNDS", "24"))  # `make crash-100`: 100


def expected_state(acked: list[int]) -> dict[str, tuple[int, int]]:
    """id -> (batch, row in batch) after applying the acknowledged batches in order."""
    out: dict[str, tuple[int, int]] = {}
    for b in acked:
        ids, _, _ = batch_data(b)
        for i, ext in enumerate(ids):
            out[ext] = (b, i)
    return out


def test_sigkill_at_random_moments_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rnd = random.Random(7)
    acked: list[int] = []
    next_batch = 0
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for _round in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_child", str(path), str(next_batch)],
            stdout=subprocess.PIPE,
            cwd=root,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        want = rnd.randint(0, 3)
        got_this_round = 0
        while got_this_round < want:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(int(line))
            got_this_round += 1
        time.sleep(rnd.uniform(0, 0.03))  # land inside a transaction or a commit now and then
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        acked.extend(int(x) for x in rest.split())  # acknowledged before the kill landed
        assert proc.returncode == -signal.SIGKILL
        # the batch being written when killed may or may not have committed; it must be all or nothing
        with Store(path) as s:
            c = s.collection("c") if s.list_collections() else None
            in_flight = (acked[-1] + 1) if acked else next_batch
            if c is None:
                assert not acked
                next_batch = in_flight
                continue
            ids, _, _ = batch_data(in_flight)
            present = [r is not None for r in c.get(ids)]
            committed = present[-1]
            assert all(p == committed for p in present[50:]), "partial batch visible"
            if committed:
                acked.append(in_flight)
            exp = expected_state(acked)
            assert c.count() == len(exp)
            sample = rnd.sample(sorted(exp), min(200, len(exp)))
            recs = c.get(sample, with_vectors=True)
            for ext, rec in zip(sample, recs, strict=True):
                assert rec is not None, ext
                b, i = exp[ext]
                _, x, meta = batch_data(b)
                assert rec.metadata == meta[i] and rec.rescore is not None
                np.testing.assert_allclose(rec.rescore, quantize.l2_normalize(x[i : i + 1])[0], rtol=1e-6)
            # the in-memory index rebuilt at open agrees with LMDB: filter by batch sees whole batches
            for b in acked[-3:]:
                hits = c.search(np.ones(64), top_k=BATCH, rescore=False, filter={"batch": b})[0]
                assert len(hits) == sum(1 for v in exp.values() if v[0] == b)
            next_batch = in_flight + 1
    assert len(acked) >= ROUNDS // 2  # the test exercised real writes, not just empty starts


BULK_ROUNDS = int(os.environ.get("ZEMBED_BULK_CRASH_ROUNDS", "8"))  # `make crash-100`: 100


def bulk_expected(acked_ops: int) -> dict[str, tuple[int, int]]:
    """id -> (batch, row) after the first ``acked_ops`` ops of ``crash_bulk_child.ops``."""
    from tests import crash_bulk_child as child

    out: dict[str, tuple[int, int]] = {}
    for k, (kind, b) in enumerate(child.ops()):
        if k >= acked_ops:
            break
        if kind == "u":
            for i, ext in enumerate(child.batch_ids(b).tolist()):
                out[str(ext)] = (b, i)
        else:
            for ext in child.deleted_ids(b).tolist():
                out.pop(str(ext), None)
    return out


def test_sigkill_during_bulk_ingest_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """The bulk path (float16 arrays, int64 ids) with replacements, deletes and the compactions
    they trigger, killed at random moments: every acknowledged op is there, the op in flight is all
    or nothing, and the index rebuilt at open agrees with LMDB."""
    from tests import crash_bulk_child as child

    path = tmp_path / "store"
    rnd = random.Random(10)
    acked = 0  # ops acknowledged (ops are applied in order)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    compactions = 0
    for _round in range(BULK_ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_bulk_child", str(path), str(acked)],
            stdout=subprocess.PIPE,
            cwd=root,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        want = rnd.randint(0, 3)
        for _ in range(want):
            line = proc.stdout.readline()
            if not line:
                break
            assert int(line) == acked
            acked += 1
        time.sleep(rnd.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        for line in rest.split():
            assert int(line) == acked
            acked += 1
        assert proc.returncode == -signal.SIGKILL
        with Store(path) as s:
            if not s.list_collections():
                assert acked == 0
                continue
            c = s.collection("c")
            kind, b = child.op_at(acked)  # the op in flight: committed entirely or not at all
            # an upsert's new ids (its replacements existed before) or a delete's ids
            probe = child.batch_ids(b)[child.REPLACED :] if kind == "u" else child.deleted_ids(b)
            present = [r is not None for r in c.get([str(i) for i in probe])]
            assert all(p == present[0] for p in present), "partial op visible"
            if present[0] == (kind == "u"):
                acked += 1
            exp = bulk_expected(acked)
            assert c.count() == len(exp)
            upserted = sum(1 for k, (kd, _) in zip(range(acked), child.ops(), strict=False) if kd == "u")
            compacted = c._rec.next_row > upserted * child.BATCH  # renumbered past the rows written
            compactions += compacted
            sample = rnd.sample(sorted(exp), min(200, len(exp)))
            for ext, rec in zip(sample, c.get(sample, with_vectors=True), strict=True):
                assert rec is not None, ext
                bb, i = exp[ext]
                assert rec.rescore is not None
                assert np.array_equal(rec.rescore, child.batch_vectors(bb)[i].astype(np.float32))
            for ext in sample[:5]:
                bb, i = exp[ext]
                q = child.batch_vectors(bb)[i].astype(np.float32)
                assert c.search(q, top_k=1)[0][0].id == ext
    assert acked >= BULK_ROUNDS // 2
    assert compactions or acked < 7, "the op sequence makes a compaction due at its sixth op"
    print(f"bulk kills: {BULK_ROUNDS}, ops acknowledged {acked}, rounds after a compaction {compactions}")
