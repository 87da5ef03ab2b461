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
