"""A collection's fixed configuration (chosen at creation, stored in LMDB, checked on every open)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from zembed.store import validate
from zembed.store.errors import InvalidArgument
from zembed.store.quantize import RescoreDtype


class Calibration(StrEnum):
    """When the binarization thresholds are set.

    - ``auto`` (the default): calibrated from the first write. The first batch's code vectors give
      per-dimension medians (and the refine step's scales, see :class:`store.quantize.CodeModel`);
      each time the collection doubles in size the calibration is redone from every document held
      and every code rebuilt, in the write transaction that crossed the size, until the collection
      first holds ``calibration_sample`` documents: that calibration is final and the kept
      code-dims vectors are dropped. Each calibration also measures the search settings' recall on
      the collection itself (see :class:`store.params.Tuning`).
    - ``none``: thresholds are 0 (sign bits) unless explicit ``thresholds`` are given.
    - ``median``: per-dimension medians of the first ``calibration_sample`` documents. Until the
      collection first holds that many documents their code-dims vectors are kept on disk; the upsert
      that reaches the sample size computes the medians and rebuilds every code in the same
      transaction. ``Store.calibrate`` does it early, on request, from the documents held so far.
    """

    AUTO = "auto"
    NONE = "none"
    MEDIAN = "median"


@dataclass(frozen=True)
class CollectionConfig:
    """What a collection fixes for its lifetime.

    ``code_bits``: dimensions of the vector that is binarized (1 bit each, <= 1016 so a code is at most
    127 bytes). ``rescore_dims`` / ``rescore_dtype``: the vector kept on disk to rescore the shortlist.
    For zembed-1 these are the 640-dim projection and the 2560-dim embedding; for a small model the
    same vector can serve both. ``filterable``: metadata fields indexed for filters.
    """

    code_bits: int = 640
    rescore_dims: int = 2560
    rescore_dtype: RescoreDtype = RescoreDtype.FLOAT16
    calibration: Calibration = Calibration.AUTO
    calibration_sample: int = 10_000
    thresholds: tuple[float, ...] | None = None
    filterable: tuple[str, ...] = ()
    model: str = ""  # free-form: the model id / manifest hash the vectors come from
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate.int_range(self.code_bits, "code_bits", 1, validate.MAX_CODE_BITS)
        validate.int_range(self.rescore_dims, "rescore_dims", 1, validate.MAX_RESCORE_DIMS)
        validate.int_range(self.calibration_sample, "calibration_sample", 2, 10_000_000)
        try:
            object.__setattr__(self, "rescore_dtype", RescoreDtype(self.rescore_dtype))
        except ValueError:
            raise InvalidArgument(
                "rescore_dtype",
                f"must be one of {[d.value for d in RescoreDtype]}; given {self.rescore_dtype!r}",
                value=self.rescore_dtype,
            ) from None
        try:
            object.__setattr__(self, "calibration", Calibration(self.calibration))
        except ValueError:
            raise InvalidArgument(
                "calibration",
                f"must be one of {[c.value for c in Calibration]}; given {self.calibration!r}",
                value=self.calibration,
            ) from None
        object.__setattr__(self, "thresholds", validate.thresholds(self.thresholds, self.code_bits))
        if self.thresholds is not None and self.calibration is Calibration.AUTO:
            object.__setattr__(self, "calibration", Calibration.NONE)  # explicit thresholds are fixed
        if self.thresholds is not None and self.calibration is not Calibration.NONE:
            raise InvalidArgument(
                "thresholds",
                f"cannot be given together with calibration={self.calibration.value!r}; use 'none'",
            )
        # bounded names, unique, at most MAX_FILTERABLE (the config is rewritten per write)
        object.__setattr__(self, "filterable", validate.field_names(self.filterable))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["rescore_dtype"] = self.rescore_dtype.value
        d["calibration"] = self.calibration.value
        d["thresholds"] = list(self.thresholds) if self.thresholds is not None else None
        d["filterable"] = list(self.filterable)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CollectionConfig:
        d = dict(d)
        if d.get("thresholds") is not None:
            d["thresholds"] = tuple(d["thresholds"])
        stored = tuple(d.pop("filterable", ()))
        config = cls(**d)
        # names stored by an earlier version open as they are (today's rules apply to new names)
        object.__setattr__(config, "filterable", stored)
        return config
