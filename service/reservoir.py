"""Recent real queries, kept in memory per collection, for measuring recall again in the background.

A collection's recall table (what ``recall_target`` chooses from, and GetCollection's
``measured_recall``) is measured against sample queries. Stored documents searched leave-one-out
stand in for queries when nothing better is at hand, but real queries (often in other languages than
the documents, or shorter) sit farther from the documents, so a table measured on them is the one to
trust (issue #8). The engine therefore keeps, per collection, a uniform sample (reservoir sampling,
Algorithm R) of the query vectors searched since the table was last measured (a query already in
the sample, such as a health probe's, is not counted again), and the background
re-measurement (``--remeasure-growth``) uses them once at least :data:`MIN_QUERIES` were seen.

Memory only, never written to disk: at most :data:`SIZE` queries per collection, stored as float16,
for the :data:`MAX_COLLECTIONS` collections searched most recently (0.8 MB per collection for
zembed-1's 640-bit codes and 2,560-dim rescore vectors; ~26 MB at most). A reservoir whose vector
lengths no longer match (the collection was dropped and made again) starts over.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

SIZE = 128  # the store measures at most 128 sample queries (store.calibrate.SAMPLE_QUERIES)
MIN_QUERIES = 32  # fewer than this: the background measurement uses stored rows instead
MAX_COLLECTIONS = 32
# a query kept as it is when its largest component lies in this range (float16: largest 65504, full
# precision down to 6.1e-5; a unit vector's largest component is at least 1/sqrt(dims), 0.0198 at 2,560)
_F16_PEAKS = (1e-2, 1e4)

F32 = npt.NDArray[np.float32]


@dataclass
class _Sample:
    dims: tuple[int, int]  # (code length, rescore length; 0 when the code vector rescores too)
    seen: int = 0
    code: list[npt.NDArray[np.float16]] = field(default_factory=list)
    rescore: list[npt.NDArray[np.float16]] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)  # per slot: a digest of the query's float16 bytes
    members: set[bytes] = field(default_factory=set)  # the keys in the sample


class QueryReservoir:
    """Per collection name: a uniform sample of the queries seen since the last :meth:`take`."""

    def __init__(self, size: int = SIZE, max_collections: int = MAX_COLLECTIONS, seed: int = 0) -> None:
        self.size = size
        self.max_collections = max_collections
        self._samples: OrderedDict[str, _Sample] = OrderedDict()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def add(self, name: str, code: F32, rescore: F32 | None, rescore_dims: int) -> None:
        """Record one query's vectors (a float16 copy; O(1)). ``rescore_dims``: the collection's; where
        it differs from the code length the query's rescore vector is kept too (a query without one
        cannot be measured there and is skipped)."""
        separate = rescore_dims != len(code)
        if separate and (rescore is None or len(rescore) != rescore_dims):
            return
        code16 = _f16(code)
        rescore16 = _f16(rescore) if separate and rescore is not None else None
        dims = (len(code), rescore_dims if separate else 0)
        # a query already in the sample is not counted again (a health probe or client retries
        # would otherwise fill it with copies of one query and the table be measured on that one)
        digest = hashlib.blake2b(code16.tobytes(), digest_size=16)
        if rescore16 is not None:
            digest.update(rescore16.tobytes())
        key = digest.digest()
        with self._lock:
            s = self._samples.get(name)
            if s is None or s.dims != dims:
                s = _Sample(dims)
                self._samples[name] = s
            self._samples.move_to_end(name)
            while len(self._samples) > self.max_collections:
                self._samples.popitem(last=False)
            if key in s.members:
                return
            s.seen += 1
            if len(s.code) < self.size:
                slot = len(s.code)
                s.code.append(np.empty(0, np.float16))
                s.rescore.append(np.empty(0, np.float16))
                s.keys.append(b"")
            else:
                slot = self._rng.randrange(s.seen)
                if slot >= self.size:
                    return
                s.members.discard(s.keys[slot])
            s.keys[slot] = key
            s.members.add(key)
            s.code[slot] = code16
            if rescore16 is not None:
                s.rescore[slot] = rescore16

    def count(self, name: str) -> int:
        with self._lock:
            s = self._samples.get(name)
            return 0 if s is None else len(s.code)

    def take(self, name: str, code_dims: int, rescore_dims: int) -> tuple[F32, F32 | None] | None:
        """The sample as query matrices (code; rescore, or None where the code vectors rescore) when
        at least :data:`MIN_QUERIES` queries of these lengths were seen, and start a new sample; else
        None (a smaller sample is kept and grows; one of other lengths is dropped)."""
        want = (code_dims, rescore_dims if rescore_dims != code_dims else 0)
        with self._lock:
            s = self._samples.get(name)
            if s is None or (s.dims == want and s.seen < MIN_QUERIES):
                return None
            del self._samples[name]
        if s.dims != want:
            return None  # queries of other lengths (the collection was made again)
        code = np.stack(s.code).astype(np.float32)
        rescore = np.stack(s.rescore).astype(np.float32) if want[1] else None
        return code, rescore

    def give_back(self, name: str, code: F32, rescore: F32 | None) -> None:
        """Put back a sample :meth:`take` answered whose measurement did not happen (it gave way to
        a map resize, or a recalibration): its queries count as seen again, beside any seen since."""
        for i in range(len(code)):
            r = rescore[i] if rescore is not None else None
            self.add(name, code[i], r, len(r) if r is not None else len(code[i]))

    def forget(self, name: str) -> None:
        with self._lock:
            self._samples.pop(name, None)


def _f16(v: F32) -> npt.NDArray[np.float16]:
    """A float16 copy of ``v``; scaled to unit length when its components lie outside float16's
    range (a long vector would overflow to inf, a tiny one underflow to zero, and the measurement
    refuse the whole sample; it normalizes every query, so the scale changes nothing)."""
    peak = float(np.max(np.abs(v))) if len(v) else 0.0
    if peak > _F16_PEAKS[1] or 0.0 < peak < _F16_PEAKS[0]:
        v64 = np.asarray(v, dtype=np.float64)
        v = np.asarray(v64 / np.sqrt(np.dot(v64, v64)), dtype=np.float32)
    return np.asarray(v, dtype=np.float16)
