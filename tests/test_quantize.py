"""Codes are np.packbits(x > t) MSB first (= sentence-transformers' ubinary); rescore encodings."""

from __future__ import annotations

import numpy as np
import pytest

from zembed.store import RescoreDtype, quantize


def test_binarize_is_packbits_msb_first() -> None:
    x = np.array([[1.0, -1.0, 0.0, 2.0, -3.0, 0.5, 0.5, -0.1, 9.0]], dtype=np.float32)
    code = quantize.binarize(x)
    # bits 1,0,0,1,0,1,1,0 | 1 then zero padding
    assert code.tolist() == [[0b10010110, 0b10000000]]
    np.testing.assert_array_equal(code, np.packbits(x > 0, axis=-1))


def test_binarize_matches_sentence_transformers_ubinary(rng: np.random.Generator) -> None:
    st_q = pytest.importorskip(
        "sentence_transformers.quantization", reason="sentence-transformers is in the export extra"
    )
    x = rng.normal(size=(20, 640)).astype(np.float32)
    theirs = st_q.quantize_embeddings(x, precision="ubinary")
    np.testing.assert_array_equal(quantize.binarize(x), theirs)


def test_thresholds_shift_the_split(rng: np.random.Generator) -> None:
    x = rng.normal(loc=3.0, size=(1001, 16)).astype(np.float32)
    assert quantize.binarize(x).all() or np.unpackbits(quantize.binarize(x)).mean() > 0.99
    t = quantize.median_thresholds(x)
    bits = np.unpackbits(quantize.binarize(x, t), axis=-1)
    assert abs(bits.mean() - 0.5) < 0.01


@pytest.mark.parametrize("bits", [1, 7, 8, 9, 640, 1016])
def test_strides_and_padding(bits: int) -> None:
    assert quantize.code_bytes(bits) == (bits + 7) // 8
    stride = quantize.row_stride(bits)
    assert stride % 8 == 0 and stride >= quantize.code_bytes(bits) and stride - quantize.code_bytes(bits) < 8
    codes = np.full((3, quantize.code_bytes(bits)), 255, dtype=np.uint8)
    padded = quantize.pad_rows(codes, stride)
    assert padded[:, quantize.code_bytes(bits) :].sum() == 0
    assert quantize.row_stride(1016) == 128


@pytest.mark.parametrize(
    "dtype,tol", [(RescoreDtype.FLOAT32, 0.0), (RescoreDtype.FLOAT16, 1e-3), (RescoreDtype.INT8, 1e-2)]
)
def test_rescore_roundtrip(dtype: RescoreDtype, tol: float, rng: np.random.Generator) -> None:
    x = quantize.l2_normalize(rng.normal(size=(50, 384)))
    back = quantize.decode_rescore(quantize.encode_rescore(x, dtype), 384, dtype)
    assert back.shape == x.shape
    cos = (back * x).sum(1) / np.linalg.norm(back, axis=1)
    assert cos.min() >= 1 - tol - 1e-6
    if dtype is RescoreDtype.FLOAT32:
        np.testing.assert_array_equal(back, x)
    assert len(quantize.encode_rescore(x, dtype)[0]) == 384 * dtype.bytes_per_dim + (
        4 if dtype is RescoreDtype.INT8 else 0
    )


def test_sign_vectors_invert_packing(rng: np.random.Generator) -> None:
    x = rng.normal(size=(4, 33)).astype(np.float32)
    s = quantize.sign_vectors(quantize.pad_rows(quantize.binarize(x), 8), 33)
    np.testing.assert_array_equal(s, np.where(x > 0, 1.0, -1.0))


def test_float16_encoding_is_numpy_rounding(rng: np.random.Generator) -> None:
    """The F16C fast path rounds exactly like numpy's astype(float16), tails and tiny values included."""
    x = rng.normal(size=(37, 1283)).astype(np.float32)
    x[0, :10] = [1e-8, -1e-8, 6e-5, 65504.0, -0.0, 1e-3, 3.14159, 2.0**-24, 2.0**-25, 1.0]
    inv = (1.0 / np.linalg.norm(x, axis=1)).astype(np.float32)
    got = np.frombuffer(b"".join(quantize.encode_rescore(x, RescoreDtype.FLOAT16, inv)), dtype="<f2")
    want = (x * inv[:, None]).astype("<f2").ravel()
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("dims", [2560, 384, 37])
def test_rescore_dots_equal_decoded_dots_for_every_dtype(dims: int, rng: np.random.Generator) -> None:
    # float16 takes the C path (F16C, prefetching ahead) where the CPU has it; the others decode
    x = quantize.l2_normalize(rng.normal(size=(23, dims)))
    q = quantize.l2_normalize(rng.normal(size=dims)).astype(np.float32)
    for dtype in RescoreDtype:
        blobs = [memoryview(b) for b in quantize.encode_rescore(x, dtype)]
        want = quantize.decode_rescore(blobs, dims, dtype) @ q
        np.testing.assert_allclose(quantize.rescore_dots(blobs, dims, dtype, q), want, rtol=1e-5, atol=1e-5)


def test_dot_f16_rejects_a_wrong_sized_buffer(rng: np.random.Generator) -> None:
    from zembed.store import _hamming

    q = np.ones(8, dtype=np.float32)
    good = np.ones(8, dtype=np.float16).tobytes()
    out = np.empty(3, dtype=np.float32)
    try:
        ok = _hamming.dot_f16([good, good, good[:-2]], q, out)
    except ValueError as exc:
        assert "buffers[2] holds 14 bytes; expected 16" in str(exc)
    else:
        assert not ok  # a CPU without F16C: the numpy path is used instead


def test_code_model_thresholds_scales_and_refine_weights() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(501, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32) + 3.0
    x[:, 5] = 0.25  # a constant dimension carries nothing: weight 0, never negative or NaN
    m = quantize.fit_code_model(x, centre=0.5)
    np.testing.assert_allclose(m.thresholds, np.median(x, axis=0), rtol=1e-6)
    above = x > m.thresholds
    for j in (0, 3, 7):
        want = (x[above[:, j], j].mean() - x[~above[:, j], j].mean()) / 2
        assert m.scale[j] == pytest.approx(want, rel=1e-5)
    assert m.scale[5] == 0 and (m.scale >= 0).all() and np.isfinite(m.scale).all()
    q = rng.normal(size=(3, 8)).astype(np.float32)
    np.testing.assert_allclose(m.refine_weights(q), (q - 0.5 * m.thresholds) * m.scale, rtol=1e-6)
    codes = quantize.binarize(x[:4], m.thresholds)
    signs = np.where(above[:4], 1.0, -1.0)
    np.testing.assert_allclose(
        quantize.refine_scores(codes, 8, m.refine_weights(q[0])), signs @ m.refine_weights(q[0]), rtol=1e-5
    )
