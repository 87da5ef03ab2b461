"""What a collection stores about itself and what its reads return: plain records, no I/O."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.store import quantize
from zembed.store.config import Calibration, CollectionConfig
from zembed.store.layout import cid_prefix
from zembed.store.params import Tuning

F32 = npt.NDArray[np.float32]
GEN = struct.Struct(">Q")


def meta_key(name: str) -> bytes:
    return b"coll:" + name.encode()


def gen_key(cid: int) -> bytes:
    return b"gen:" + cid_prefix(cid)


@dataclass(frozen=True)
class Hit:
    """One search result. ``hamming`` is the code distance; ``score`` the cosine (see module doc)."""

    id: str
    score: float
    hamming: int
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Record:
    """A stored document as ``get`` returns it."""

    id: str
    metadata: dict[str, Any]
    code: bytes
    rescore: F32 | None


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    config: CollectionConfig
    count: int
    thresholds: tuple[float, ...] | None
    calibrated: bool
    index_bytes: int
    #: documents held when the codes were last calibrated (0: never), and whether that was final
    calibrated_at: int = 0
    calibration_final: bool = False
    #: recall@10 against exact search measured at that calibration, per setting; and at the defaults
    tuning: Tuning = field(default_factory=Tuning)
    measured_recall: float | None = None
    #: disk: pages the collection uses (its blocks exactly, its share of the key trees by document
    #: count), its share of the file's allocated blocks, and the used bytes per document
    bytes_in_use: int = 0
    bytes_allocated: int = 0
    bytes_per_document: int = 0
    #: documents held when ``tuning`` was measured (the calibration's count, or a later
    #: :meth:`Collection.measure`), and whether workload sample queries (not stored rows) were used
    measured_at: int = 0
    measured_with_samples: bool = False


@dataclass(frozen=True)
class CollectionRecord:
    """The collection's row in ``meta``: updated in the same transaction as every batch."""

    cid: int
    config: CollectionConfig
    next_row: int = 0
    count: int = 0
    gen: int = 0
    thresholds: tuple[float, ...] | None = None
    # calibration (absent from records written before calibration was automatic): the refine
    # step's per-dimension scales and centring, the document count it was computed at, whether it
    # is final (the kept code vectors dropped), and the recall measured for each setting
    scale: tuple[float, ...] | None = None
    centre: float = 0.5
    calibrated_at: int = 0
    final: bool = False
    tuning: Tuning = field(default_factory=Tuning)
    #: documents held when ``tuning`` was last measured (0: at the calibration), sample queries used
    measured_at: int = 0
    measured_with_samples: bool = False
    #: rows deleted or replaced whose slots in the blocks await compaction (format 2)
    dead: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "cid": self.cid,
                "config": self.config.to_json(),
                "next_row": self.next_row,
                "count": self.count,
                "gen": self.gen,
                "thresholds": list(self.thresholds) if self.thresholds is not None else None,
                "scale": list(self.scale) if self.scale is not None else None,
                "centre": self.centre,
                "calibrated_at": self.calibrated_at,
                "final": self.final,
                "tuning": self.tuning.to_json(),
                "measured_at": self.measured_at,
                "measured_with_samples": self.measured_with_samples,
                "dead": self.dead,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CollectionRecord:
        d = json.loads(raw)
        t = d.get("thresholds")
        sc = d.get("scale")
        config = CollectionConfig.from_json(d["config"])
        return cls(
            cid=d["cid"],
            config=config,
            next_row=d["next_row"],
            count=d["count"],
            gen=d["gen"],
            thresholds=tuple(t) if t is not None else None,
            scale=tuple(sc) if sc is not None else None,
            centre=float(d.get("centre", 0.5)),
            calibrated_at=int(d.get("calibrated_at", 0)),
            # a median calibration written by the earlier version was final once it existed
            final=bool(d.get("final", config.calibration is Calibration.MEDIAN and t is not None)),
            tuning=Tuning.from_json(d.get("tuning")),
            measured_at=int(d.get("measured_at", 0)),
            measured_with_samples=bool(d.get("measured_with_samples", False)),
            dead=int(d.get("dead", 0)),
        )

    @property
    def collecting(self) -> bool:
        """Code vectors are kept (in ``calib``) for a calibration still to come."""
        cal = self.config.calibration
        return (cal is Calibration.MEDIAN and self.thresholds is None) or (
            cal is Calibration.AUTO and not self.final
        )

    def due(self) -> bool:
        """Whether the collection's size calls for a calibration now (see :class:`Calibration`)."""
        cap = self.config.calibration_sample
        if not self.collecting or self.count < 2:
            return False
        if self.config.calibration is Calibration.MEDIAN:
            return self.count >= cap
        return self.count >= cap or self.count >= 2 * max(self.calibrated_at, 1)

    def code_model(self) -> quantize.CodeModel | None:
        """The refine step's model; None for sign codes (the query itself is the weight)."""
        t = self.thresholds if self.thresholds is not None else self.config.thresholds
        if t is None:
            return None
        tt = np.asarray(t, dtype=np.float32)
        scale = np.asarray(self.scale, dtype=np.float32) if self.scale is not None else np.ones_like(tt)
        return quantize.CodeModel(tt, scale, self.centre)
