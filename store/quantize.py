"""Pure functions: normalization, binarization, code padding and rescore-vector encoding.

Codes are the sign bits of ``x > threshold`` packed most-significant-bit first and zero padded to
whole bytes: exactly ``numpy.packbits(x > t, axis=-1)``, the same as sentence-transformers' ``ubinary``
precision. In memory each code row is further zero padded to a multiple of 8 bytes (the scan kernel
works on 64-bit words; zero padding XORs to zero and adds nothing to a distance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from zembed.store import _hamming

F32 = npt.NDArray[np.float32]
Buffer = bytes | memoryview  # what LMDB hands out and takes
U8 = npt.NDArray[np.uint8]


class RescoreDtype(StrEnum):
    """How rescore vectors are stored on disk."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"  # symmetric per-vector scale, stored as a float32 in front of the int8 values

    @property
    def bytes_per_dim(self) -> int:
        return {"float32": 4, "float16": 2, "int8": 1}[self.value]


def code_bytes(bits: int) -> int:
    """Bytes of one packed code of ``bits`` dimensions (what ``np.packbits`` writes)."""
    return (bits + 7) // 8


def row_stride(bits: int) -> int:
    """Bytes of one in-memory code row: the packed code padded to a multiple of 8."""
    return (code_bytes(bits) + 7) // 8 * 8


def l2_normalize(x: npt.NDArray[np.floating]) -> F32:
    """Rows scaled to unit length in float32 (callers reject zero rows first)."""
    x32 = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x32, axis=-1, keepdims=True)
    return np.asarray(x32 / norms, dtype=np.float32)


def binarize(x: npt.NDArray[np.floating], thresholds: F32 | None = None) -> U8:
    """Packed codes of ``x > thresholds`` (0 when None), MSB first: ``np.packbits(x > t, axis=-1)``."""
    t = 0.0 if thresholds is None else thresholds
    return np.packbits(np.asarray(x) > t, axis=-1)


def pad_rows(codes: U8, stride: int) -> U8:
    """Codes ``[n, code_bytes]`` zero padded to ``[n, stride]``, C-contiguous."""
    n, width = codes.shape
    if width == stride:
        return np.ascontiguousarray(codes)
    out = np.zeros((n, stride), dtype=np.uint8)
    out[:, :width] = codes
    return out


def sign_vectors(codes: U8, bits: int) -> F32:
    """The +-1 vectors that packed codes stand for (first ``bits`` dimensions), float32."""
    unpacked = np.unpackbits(codes, axis=-1, count=bits)
    return unpacked.astype(np.float32) * 2.0 - 1.0


def median_thresholds(x: npt.NDArray[np.floating]) -> F32:
    """Per-dimension medians: the calibrated thresholds that make each bit split the data in half."""
    return np.asarray(np.median(np.asarray(x, dtype=np.float32), axis=0), dtype=np.float32)


def record_bytes(dims: int, dtype: RescoreDtype) -> int:
    """Bytes of one rescore record (:func:`rescore_records`)."""
    return dims * dtype.bytes_per_dim + (4 if dtype is RescoreDtype.INT8 else 0)


def encode_rescore(x: F32, dtype: RescoreDtype, inv_norm: F32 | None = None) -> list[memoryview]:
    """:func:`rescore_records` as one view per row (no per-row copies)."""
    return _views(rescore_records(x, dtype, inv_norm))


def rescore_records(x: npt.NDArray[np.floating], dtype: RescoreDtype, inv_norm: F32 | None = None) -> U8:
    """Serialize rescore vectors scaled to unit length, one little-endian record per row: ``[n,
    record_bytes]`` uint8.

    ``inv_norm`` (one factor per row) is applied first; None means ``x`` is already unit length.
    ``x`` may be float16 or float32 (float16 input is scaled in float32 one row block at a time, never
    widened as a whole).
    """
    n, d = x.shape
    inv = np.ones(n, dtype=np.float32) if inv_norm is None else np.ascontiguousarray(inv_norm, np.float32)
    if dtype is RescoreDtype.FLOAT16:
        out16 = np.empty((n, d), dtype="<f2")
        for i in range(0, n, 8192):
            src = np.ascontiguousarray(x[i : i + 8192], dtype=np.float32)
            part, scale = out16[i : i + 8192], inv[i : i + 8192]
            if not _hamming.scale_to_f16(src, scale, part.view(np.uint16), len(src), d):
                part[:] = src * scale[:, None]
        return out16.view(np.uint8).reshape(n, 2 * d)
    unit = np.asarray(x * inv[:, None], dtype=np.float32)
    if dtype is RescoreDtype.FLOAT32:
        return np.ascontiguousarray(unit, dtype="<f4").view(np.uint8).reshape(n, 4 * d)
    scale = np.max(np.abs(unit), axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype("<f4")
    q = np.clip(np.rint(unit / scale[:, None]), -127, 127).astype(np.int8)
    rec = np.empty((n, 4 + d), dtype=np.uint8)
    rec[:, :4] = scale.view(np.uint8).reshape(n, 4)
    rec[:, 4:] = q.view(np.uint8)
    return rec


def _views(arr: npt.NDArray[np.generic]) -> list[memoryview]:
    flat = memoryview(np.ascontiguousarray(arr)).cast("B")  # type: ignore[arg-type]
    size = len(flat) // arr.shape[0] if arr.shape[0] else 0
    return [flat[i * size : (i + 1) * size] for i in range(arr.shape[0])]


def split_rows(x: npt.NDArray[np.generic]) -> list[memoryview]:
    """Each row of a matrix as a view into one contiguous buffer."""
    return _views(x)


def rescore_dots(blobs: Sequence[Buffer], dims: int, dtype: RescoreDtype, query: F32) -> F32:
    """``decode_rescore(blobs) @ query`` without materializing float32 copies where avoidable."""
    out = np.empty(len(blobs), dtype=np.float32)
    if not blobs:
        return out
    q = np.ascontiguousarray(query, dtype=np.float32)
    if dtype is RescoreDtype.FLOAT16 and _hamming.dot_f16(blobs, q, out):
        return out
    res: F32 = decode_rescore(blobs, dims, dtype) @ q
    return res


def decode_rescore(blobs: Sequence[Buffer], dims: int, dtype: RescoreDtype) -> F32:
    """Inverse of :func:`encode_rescore`: ``[n, dims]`` float32."""
    if not blobs:
        return np.zeros((0, dims), dtype=np.float32)
    joined = b"".join(blobs)
    if dtype is RescoreDtype.FLOAT32:
        return np.frombuffer(joined, dtype="<f4").reshape(len(blobs), dims).astype(np.float32)
    if dtype is RescoreDtype.FLOAT16:
        return np.frombuffer(joined, dtype="<f2").reshape(len(blobs), dims).astype(np.float32)
    rec = np.frombuffer(joined, dtype=np.uint8).reshape(len(blobs), 4 + dims)
    scale = np.ascontiguousarray(rec[:, :4]).view("<f4").astype(np.float32)
    vals = np.ascontiguousarray(rec[:, 4:]).view(np.int8).astype(np.float32)
    return np.asarray(vals * scale, dtype=np.float32)


# ---------------------------------------------------------------------------- calibrated codes
#: the query-centring fractions a calibration measures (see :class:`CodeModel`)
CENTRES = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class CodeModel:
    """What a calibration learns from a collection's code vectors (unit length).

    - ``thresholds``: per-dimension medians; bit ``i`` is ``x_i > t_i``, so every bit splits the data
      in half (anisotropic models otherwise spend most bits on the sign they all share).
    - ``scale``: per dimension, half the gap between the mean of the values above and below the
      threshold: a bit stands for ``t_i + b_i * scale_i`` (``b = +-1``).
    - ``centre``: the asymmetric refine step scores a row's +-1 bits against
      ``scale * (q - centre * t)``. ``centre = 0`` estimates ``q . x`` itself, ``1`` estimates
      ``(q - t) . (x - t)``; the shared component's 1-bit estimate is noisy, so the best value lies
      in between and is measured per collection (:data:`CENTRES`).
    """

    thresholds: F32
    scale: F32
    centre: float

    def refine_weights(self, queries: F32) -> F32:
        """``[n, bits]`` query-side weights of the refine step for unit ``queries``."""
        return np.asarray((queries - self.centre * self.thresholds) * self.scale, dtype=np.float32)


def fit_code_model(x: npt.NDArray[np.floating], centre: float = 0.5) -> CodeModel:
    """Thresholds and scales from unit code vectors ``x`` (``centre`` is measured by the caller)."""
    x32 = np.asarray(x, dtype=np.float32)
    t = median_thresholds(x32)
    above = x32 > t
    n_above = np.maximum(above.sum(axis=0), 1)
    n_below = np.maximum((~above).sum(axis=0), 1)
    mean_above = np.where(above, x32, 0.0).sum(axis=0) / n_above
    mean_below = np.where(above, 0.0, x32).sum(axis=0) / n_below
    scale = (mean_above - mean_below) / 2.0
    # a constant dimension (every value equal) carries no information: weight 0, never negative
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 0.0)
    return CodeModel(t, np.asarray(scale, dtype=np.float32), float(centre))


def refine_scores(codes: U8, bits: int, weights: F32) -> F32:
    """The asymmetric estimate for packed ``codes`` rows: their +-1 vectors dotted with ``weights``
    (one query's :meth:`CodeModel.refine_weights`, or the query itself for sign codes)."""
    res: F32 = sign_vectors(codes, bits) @ weights
    return res
