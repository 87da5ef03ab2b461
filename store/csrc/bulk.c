/* Bulk ingest helpers (Collection.upsert_arrays): one pass over a batch instead of numpy temporaries.
 *
 * check_rows(x, rows, dims, itemsize) -> None | (row, kind)
 *     float16 (itemsize 2) or float32 (4) rows checked on their bits: kind 1 = the row holds a NaN
 *     or an infinity (all exponent bits set), kind 2 = every element is +-0. The first bad row.
 * f16_norms_codes(x, rows, dims, inv_out, codes_out_or_None) -> None | (row, kind)
 *     float16 rows: inv_out[i] = 1 / sqrt(float32(sum of squares)) (squares exact in float32, summed
 *     in float64), NaN / infinity / zero rows reported as check_rows does, and with codes_out the sign
 *     codes np.packbits(x > 0) (MSB first, padding bits zero). No float32 copy of the batch.
 * int_id_keys(ids, prefix, unsigned) -> (ext, keys)
 *     int64 (or uint64 with unsigned) ids as decimal text (what numpy's astype("S20") gives), and the
 *     same with `prefix` in front: two lists of bytes.
 *
 * The GIL is released around the row loops. */
#include <math.h>

#include "pymod.h"

static int half_bad(const uint16_t *x, Py_ssize_t d) {
    uint16_t top = 0;
    for (Py_ssize_t j = 0; j < d; j++) {
        uint16_t m = x[j] & 0x7FFF;
        top = m > top ? m : top;
    }
    return top >= 0x7C00 ? 1 : top == 0 ? 2 : 0;
}

static int single_bad(const uint32_t *x, Py_ssize_t d) {
    uint32_t top = 0;
    for (Py_ssize_t j = 0; j < d; j++) {
        uint32_t m = x[j] & 0x7FFFFFFFu;
        top = m > top ? m : top;
    }
    return top >= 0x7F800000u ? 1 : top == 0 ? 2 : 0;
}

static PyObject *bad_row(Py_ssize_t row, int kind) {
    if (row < 0) Py_RETURN_NONE;
    return Py_BuildValue("(ni)", row, kind);
}

PyObject *zs_py_check_rows(PyObject *self, PyObject *args) {
    PyObject *ox;
    Py_ssize_t rows, dims;
    int itemsize;
    if (!PyArg_ParseTuple(args, "Onni", &ox, &rows, &dims, &itemsize)) return NULL;
    Py_buffer bx;
    if (get_buf(ox, &bx, 0, "x") < 0) return NULL;
    if ((itemsize != 2 && itemsize != 4) || rows < 0 || dims < 1 || bx.len != rows * dims * itemsize) {
        PyBuffer_Release(&bx);
        PyErr_SetString(PyExc_ValueError, "check_rows: inconsistent buffer sizes");
        return NULL;
    }
    Py_ssize_t found = -1;
    int kind = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < rows; i++) {
        kind = itemsize == 2 ? half_bad((const uint16_t *)bx.buf + i * dims, dims)
                             : single_bad((const uint32_t *)bx.buf + i * dims, dims);
        if (kind) { found = i; break; }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bx);
    return bad_row(found, kind);
}

/* float16 -> float32 without F16C (exact: every half is a float) */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: man * 2^-24 */
        float f = (float)man * 5.9604644775390625e-8f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static const uint8_t *reverse_table(void) {
    static uint8_t t[256];
    static int ready = 0;
    if (!ready) {
        for (int v = 0; v < 256; v++) {
            uint8_t r = 0;
            for (int b = 0; b < 8; b++)
                if (v & (1 << b)) r |= (uint8_t)(0x80 >> b);
            t[v] = r;
        }
        ready = 1;
    }
    return t;
}

/* One row, portable: sum of squares (float64) and packed sign bits. */
static double row_scalar(const uint16_t *x, Py_ssize_t d, uint8_t *codes) {
    double s = 0.0;
    for (Py_ssize_t j = 0; j < d; j++) {
        float f = half_to_float(x[j]);
        s += (double)(f * f);
    }
    if (codes != NULL) {
        Py_ssize_t nb = (d + 7) / 8;
        for (Py_ssize_t b = 0; b < nb; b++) {
            uint8_t byte = 0;
            for (int k = 0; k < 8; k++) {
                Py_ssize_t j = b * 8 + k;
                /* x > 0: sign clear and some other bit set */
                if (j < d && (uint16_t)(x[j] - 1) < 0x7FFF) byte |= (uint8_t)(0x80 >> k);
            }
            codes[b] = byte;
        }
    }
    return s;
}

#ifdef ZS_X86
__attribute__((target("avx2,f16c")))
static double row_f16c(const uint16_t *x, Py_ssize_t d, uint8_t *codes, const uint8_t *rev) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    const __m256 zero = _mm256_setzero_ps();
    Py_ssize_t j = 0;
    for (; j + 8 <= d; j += 8) {
        __m256 f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + j)));
        __m256 sq = _mm256_mul_ps(f, f); /* exact: a half's square fits a float */
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
        if (codes != NULL) codes[j / 8] = rev[_mm256_movemask_ps(_mm256_cmp_ps(f, zero, _CMP_GT_OQ))];
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(a0, a1));
    double s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    if (j < d) {
        uint8_t tail = 0;
        s += row_scalar(x + j, d - j, codes != NULL ? &tail : NULL);
        if (codes != NULL) codes[j / 8] = tail;
    }
    return s;
}
#endif

PyObject *zs_py_f16_norms_codes(PyObject *self, PyObject *args) {
    PyObject *ox, *oinv, *ocodes;
    Py_ssize_t rows, dims;
    if (!PyArg_ParseTuple(args, "OnnOO", &ox, &rows, &dims, &oinv, &ocodes)) return NULL;
    int have_codes = ocodes != Py_None;
    Py_buffer bx, bi, bc;
    if (get_buf(ox, &bx, 0, "x") < 0) return NULL;
    if (get_buf(oinv, &bi, 1, "inv_out") < 0) { PyBuffer_Release(&bx); return NULL; }
    if (have_codes && get_buf(ocodes, &bc, 1, "codes_out") < 0) {
        PyBuffer_Release(&bi); PyBuffer_Release(&bx); return NULL;
    }
    Py_ssize_t nb = (dims + 7) / 8;
    int ok = rows >= 0 && dims >= 1 && bx.len == rows * dims * 2 && bi.len == rows * 4 &&
             (!have_codes || bc.len == rows * nb);
    Py_ssize_t found = -1;
    int kind = 0;
    if (ok) {
        const uint8_t *rev = reverse_table();
#ifdef ZS_X86
        int fast = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#endif
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < rows; i++) {
            const uint16_t *x = (const uint16_t *)bx.buf + i * dims;
            uint8_t *codes = have_codes ? (uint8_t *)bc.buf + i * nb : NULL;
            double s;
#ifdef ZS_X86
            s = fast ? row_f16c(x, dims, codes, rev) : row_scalar(x, dims, codes);
#else
            (void)rev;
            s = row_scalar(x, dims, codes);
#endif
            /* squares of a NaN or an infinity make the sum NaN or infinite; finite halves never
             * overflow it; a row is zero exactly when its sum is (a subnormal's square is not) */
            if (!isfinite(s) || s == 0.0) {
                found = i;
                kind = isfinite(s) ? 2 : 1;
                break;
            }
            float sq = (float)s;
            ((float *)bi.buf)[i] = 1.0f / sqrtf(sq);
        }
        Py_END_ALLOW_THREADS
    }
    if (have_codes) PyBuffer_Release(&bc);
    PyBuffer_Release(&bi); PyBuffer_Release(&bx);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "f16_norms_codes: inconsistent buffer sizes");
        return NULL;
    }
    return bad_row(found, kind);
}

/* Decimal text of v into buf (at least 21 bytes); returns the length. */
static int decimal(char *buf, uint64_t v, int negative) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    int len = 0;
    if (negative) buf[len++] = '-';
    while (n) buf[len++] = tmp[--n];
    return len;
}

PyObject *zs_py_int_id_keys(PyObject *self, PyObject *args) {
    PyObject *oids;
    const char *prefix;
    Py_ssize_t plen;
    int is_unsigned;
    if (!PyArg_ParseTuple(args, "Oy#p", &oids, &prefix, &plen, &is_unsigned)) return NULL;
    if (plen > 16) {
        PyErr_SetString(PyExc_ValueError, "int_id_keys: prefix longer than 16 bytes");
        return NULL;
    }
    Py_buffer b;
    if (get_buf(oids, &b, 0, "ids") < 0) return NULL;
    if (b.len % 8) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "int_id_keys: ids must be 8-byte integers");
        return NULL;
    }
    Py_ssize_t n = b.len / 8;
    PyObject *ext = PyList_New(n), *keys = PyList_New(n);
    if (ext == NULL || keys == NULL) goto fail;
    char buf[48];
    memcpy(buf, prefix, (size_t)plen);
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t u = ((const uint64_t *)b.buf)[i];
        int neg = 0;
        if (!is_unsigned && (int64_t)u < 0) {
            neg = 1;
            u = (uint64_t)0 - u; /* magnitude, INT64_MIN included */
        }
        int len = decimal(buf + plen, u, neg);
        PyObject *e = PyBytes_FromStringAndSize(buf + plen, len);
        if (e == NULL) goto fail;
        PyList_SET_ITEM(ext, i, e);
        PyObject *k = PyBytes_FromStringAndSize(buf, plen + len);
        if (k == NULL) goto fail;
        PyList_SET_ITEM(keys, i, k);
    }
    PyBuffer_Release(&b);
    return Py_BuildValue("(NN)", ext, keys);
fail:
    PyBuffer_Release(&b);
    Py_XDECREF(ext);
    Py_XDECREF(keys);
    return NULL;
}
