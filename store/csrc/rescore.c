/* Rescoring helpers: float32 -> float16 scaling at ingest and float16 x float32 dot products over
 * vectors read in place from LMDB's map (F16C + FMA on x86; the callers fall back to numpy when a
 * function returns False). */
#include "pymod.h"

/* scale_to_f16(src_f32[n, d], inv_f32[n], dst_u16[n, d]): dst = half(src * inv[row]), rounding to
 * nearest even like numpy's astype(float16). One pass with F16C; returns False where the CPU lacks it
 * (the caller then uses numpy). */
#ifdef ZS_X86
__attribute__((target("avx2,f16c,fma")))
static void scale_f16_f16c(const float *src, const float *inv, uint16_t *dst, Py_ssize_t n, Py_ssize_t d) {
    for (Py_ssize_t i = 0; i < n; i++) {
        const float *s = src + i * d;
        uint16_t *o = dst + i * d;
        __m256 sc = _mm256_set1_ps(inv[i]);
        Py_ssize_t j = 0;
        for (; j + 8 <= d; j += 8) {
            __m128i h = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(s + j), sc), _MM_FROUND_TO_NEAREST_INT);
            _mm_storeu_si128((__m128i *)(o + j), h);
        }
        if (j < d) {
            float tmp[8] = {0};
            uint16_t th[8];
            for (Py_ssize_t r = 0; j + r < d; r++) tmp[r] = s[j + r];
            __m128i h = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(tmp), sc), _MM_FROUND_TO_NEAREST_INT);
            _mm_storeu_si128((__m128i *)th, h);
            for (Py_ssize_t r = 0; j + r < d; r++) o[j + r] = th[r];
        }
    }
}
#endif

PyObject *zs_py_scale_to_f16(PyObject *self, PyObject *args) {
    PyObject *os, *oi, *od;
    Py_ssize_t n, d;
    if (!PyArg_ParseTuple(args, "OOOnn", &os, &oi, &od, &n, &d)) return NULL;
#ifdef ZS_X86
    if (!__builtin_cpu_supports("f16c") || !__builtin_cpu_supports("avx2")) Py_RETURN_FALSE;
    Py_buffer bs, bi, bd;
    if (get_buf(os, &bs, 0, "src") < 0) return NULL;
    if (get_buf(oi, &bi, 0, "inv") < 0) { PyBuffer_Release(&bs); return NULL; }
    if (get_buf(od, &bd, 1, "dst") < 0) { PyBuffer_Release(&bi); PyBuffer_Release(&bs); return NULL; }
    int ok = bs.len == n * d * 4 && bi.len == n * 4 && bd.len == n * d * 2;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        scale_f16_f16c((const float *)bs.buf, (const float *)bi.buf, (uint16_t *)bd.buf, n, d);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&bd); PyBuffer_Release(&bi); PyBuffer_Release(&bs);
    if (!ok) { PyErr_SetString(PyExc_ValueError, "scale_to_f16: inconsistent buffer sizes"); return NULL; }
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}


/* dot_f16(buffers, query_f32, out_f32): out[i] = dot(float16 vector in buffers[i], query), read in
 * place (zero copy from LMDB's map) with F16C + FMA. Returns False where the CPU lacks F16C. */
#ifdef ZS_X86
__attribute__((target("avx2,f16c,fma")))
static float dot_f16_f16c(const uint16_t *v, const float *q, Py_ssize_t d) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    Py_ssize_t j = 0;
    for (; j + 16 <= d; j += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + j))), _mm256_loadu_ps(q + j), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + j + 8))), _mm256_loadu_ps(q + j + 8), acc1);
    }
    acc0 = _mm256_add_ps(acc0, acc1);
    float lanes[8];
    _mm256_storeu_ps(lanes, acc0);
    float sum = 0.f;
    for (int l = 0; l < 8; l++) sum += lanes[l];
    for (; j < d; j++) {
        __m128 one = _mm_cvtph_ps(_mm_cvtsi32_si128(v[j]));
        sum += _mm_cvtss_f32(one) * q[j];
    }
    return sum;
}
#endif

PyObject *zs_py_dot_f16(PyObject *self, PyObject *args) {
    PyObject *seq, *oq, *oo;
    if (!PyArg_ParseTuple(args, "OOO", &seq, &oq, &oo)) return NULL;
#ifdef ZS_X86
    if (!__builtin_cpu_supports("f16c") || !__builtin_cpu_supports("fma")) Py_RETURN_FALSE;
    PyObject *fast = PySequence_Fast(seq, "buffers must be a sequence");
    if (fast == NULL) return NULL;
    Py_buffer bq, bo;
    if (get_buf(oq, &bq, 0, "query") < 0) { Py_DECREF(fast); return NULL; }
    if (get_buf(oo, &bo, 1, "out") < 0) { PyBuffer_Release(&bq); Py_DECREF(fast); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), d = bq.len / 4, got = 0;
    Py_buffer *bv = NULL;
    if (bo.len != n * 4) {
        PyErr_SetString(PyExc_ValueError, "dot_f16: out must hold one float32 per buffer");
        goto fail;
    }
    /* The vectors are scattered over a large map and usually cold (a scan has just streamed the
     * codes through the caches): take every buffer first and touch the start of each (the page
     * walks and first misses then overlap), then prefetch a few vectors ahead while computing. */
    bv = (Py_buffer *)PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (bv == NULL) { PyErr_NoMemory(); goto fail; }
    for (; got < n; got++) {
        if (get_buf(PySequence_Fast_GET_ITEM(fast, got), &bv[got], 0, "buffers[i]") < 0) goto fail;
        if (bv[got].len != d * 2) {
            PyErr_Format(PyExc_ValueError, "dot_f16: buffers[%zd] holds %zd bytes; expected %zd", got,
                         bv[got].len, d * 2);
            got++;
            goto fail;
        }
        __builtin_prefetch(bv[got].buf, 0, 0);
    }
    Py_BEGIN_ALLOW_THREADS
    const Py_ssize_t ahead = 4, bytes = d * 2;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + ahead < n)
            for (Py_ssize_t off = 0; off < bytes; off += 64)
                __builtin_prefetch((const char *)bv[i + ahead].buf + off, 0, 0);
        ((float *)bo.buf)[i] = dot_f16_f16c((const uint16_t *)bv[i].buf, (const float *)bq.buf, d);
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < got; j++) PyBuffer_Release(&bv[j]);
    PyMem_Free(bv);
    PyBuffer_Release(&bo); PyBuffer_Release(&bq); Py_DECREF(fast);
    Py_RETURN_TRUE;
fail:
    if (bv != NULL) {
        for (Py_ssize_t j = 0; j < got; j++)
            if (bv[j].obj != NULL) PyBuffer_Release(&bv[j]);
        PyMem_Free(bv);
    }
    PyBuffer_Release(&bo); PyBuffer_Release(&bq); Py_DECREF(fast);
    return NULL;
#else
    Py_RETURN_FALSE;
#endif
}
