/*
 * Popcount Hamming scan over packed binary codes, with a running top-k per query.
 *
 * Layout. A code row is `W = stride / 8` 64-bit words (zero padded past the code width, so padding
 * XORs to zero and counts nothing). The scan reads codes in a *blocked* layout: blocks of 8 rows,
 * word-major inside a block (`codes[block][w][lane]`), so word w of 8 consecutive rows is one 64-byte
 * vector. One query then costs W vector XOR+POPCNT+ADD per 8 rows, which keeps a single-query scan at
 * the memory-bandwidth floor, and a batch scores each tile of rows (read once, hot in L1/L2) against
 * every query. Row-major codes (np.packbits output) are converted by store.scan.blocked().
 *
 * Top-k. Each query keeps a max-heap of the best (distance, index) pairs in caller-owned buffers, so a
 * scan over several chunks carries its state from call to call. Rows are visited in index order: on
 * equal distance the lower index wins and a newcomer must be strictly closer than the heap's worst.
 * Results are deterministic. A 0 in the optional per-row mask hides a row inside the scan.
 *
 * The GIL is released during scans.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TILE_BLOCKS 32 /* 256 rows: W * 2 KiB at most, stays in L1/L2 while every query passes */
#define MAX_WORDS 16

typedef struct {
    int32_t *dist;   /* [Q, k] */
    int64_t *idx;    /* [Q, k] */
    int32_t *count;  /* [Q] */
    int k;
} heaps_t;

static inline int heap_worse(int32_t da, int64_t ia, int32_t db, int64_t ib) {
    return da > db || (da == db && ia > ib);
}

static inline void heap_push(int32_t *hd, int64_t *hi, int32_t *cnt, int k, int32_t d, int64_t ix) {
    int n = *cnt;
    if (n < k) {
        int i = n;
        while (i > 0) {
            int p = (i - 1) >> 1;
            if (!heap_worse(d, ix, hd[p], hi[p])) break;
            hd[i] = hd[p]; hi[i] = hi[p]; i = p;
        }
        hd[i] = d; hi[i] = ix; *cnt = n + 1;
        return;
    }
    int i = 0; /* replace the root (the worst) and sift down */
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        int32_t md = d; int64_t mi = ix;
        if (l < k && heap_worse(hd[l], hi[l], md, mi)) { m = l; md = hd[l]; mi = hi[l]; }
        if (r < k && heap_worse(hd[r], hi[r], md, mi)) { m = r; md = hd[r]; mi = hi[r]; }
        if (m == i) break;
        hd[i] = hd[m]; hi[i] = hi[m]; i = m;
    }
    hd[i] = d; hi[i] = ix;
}

static inline int32_t heap_threshold(const heaps_t *h, Py_ssize_t q) {
    return h->count[q] < h->k ? INT32_MAX : h->dist[q * h->k];
}

/* Portable kernel: scalar popcounts over the blocked layout. */
#define GENERIC_BODY(W)                                                                           \
    for (Py_ssize_t b0 = 0; b0 < nblocks; b0 += TILE_BLOCKS) {                                    \
        Py_ssize_t b1 = b0 + TILE_BLOCKS < nblocks ? b0 + TILE_BLOCKS : nblocks;                  \
        for (Py_ssize_t q = 0; q < nq; q++) {                                                     \
            const uint64_t *qv = queries + q * (W);                                               \
            int32_t thr = heap_threshold(h, q);                                                   \
            for (Py_ssize_t b = b0; b < b1; b++) {                                                \
                const uint64_t *blk = codes + b * (W) * 8;                                        \
                for (int l = 0; l < 8; l++) {                                                     \
                    Py_ssize_t i = b * 8 + l;                                                     \
                    if (i >= n) break;                                                            \
                    int32_t d = 0;                                                                \
                    for (int w = 0; w < (W); w++) d += __builtin_popcountll(blk[w * 8 + l] ^ qv[w]); \
                    if (d < thr && (mask == NULL || mask[i])) {                                   \
                        heap_push(h->dist + q * h->k, h->idx + q * h->k, h->count + q, h->k, d,   \
                                  base + i);                                                      \
                        thr = heap_threshold(h, q);                                               \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

#define WORD_SWITCH(BODY)                                                                         \
    switch (words) {                                                                              \
        case 1: BODY(1) break;   case 2: BODY(2) break;   case 3: BODY(3) break;                  \
        case 4: BODY(4) break;   case 5: BODY(5) break;   case 6: BODY(6) break;                  \
        case 7: BODY(7) break;   case 8: BODY(8) break;   case 9: BODY(9) break;                  \
        case 10: BODY(10) break; case 11: BODY(11) break; case 12: BODY(12) break;                \
        case 13: BODY(13) break; case 14: BODY(14) break; case 15: BODY(15) break;                \
        default: BODY(16) break;                                                                  \
    }

#define SCAN_ARGS                                                                                 \
    const uint64_t *queries, Py_ssize_t nq, const uint64_t *codes, Py_ssize_t n, int words,       \
        const uint8_t *mask, int64_t base, heaps_t *h

static void scan_generic(SCAN_ARGS) {
    Py_ssize_t nblocks = (n + 7) / 8;
    WORD_SWITCH(GENERIC_BODY)
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_DISPATCH 1
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512vpopcntdq,popcnt,bmi2")))

__attribute__((target("popcnt"))) static void scan_popcnt(SCAN_ARGS) {
    Py_ssize_t nblocks = (n + 7) / 8;
    WORD_SWITCH(GENERIC_BODY)
}

/* Lanes of the block that are real rows (the last block may be partial) and visible in the mask. */
AVX512 static inline __mmask8 lane_mask(const uint8_t *mask, Py_ssize_t b, Py_ssize_t n) {
    Py_ssize_t first = b * 8;
    __mmask8 m = n - first >= 8 ? 0xFF : (__mmask8)((1u << (n - first)) - 1);
    if (mask != NULL) {
        uint64_t bytes = 0;
        memcpy(&bytes, mask + first, (size_t)(n - first >= 8 ? 8 : n - first));
        m &= (__mmask8)_pext_u64(bytes, 0x0101010101010101ULL);
    }
    return m;
}

#define AVX_BODY(W)                                                                               \
    for (Py_ssize_t b0 = 0; b0 < nblocks; b0 += TILE_BLOCKS) {                                    \
        Py_ssize_t b1 = b0 + TILE_BLOCKS < nblocks ? b0 + TILE_BLOCKS : nblocks;                  \
        for (Py_ssize_t q = 0; q < nq; q++) {                                                     \
            const uint64_t *qv = queries + q * (W);                                               \
            __m512i qw[MAX_WORDS];                                                                \
            for (int w = 0; w < (W); w++) qw[w] = _mm512_set1_epi64((long long)qv[w]);            \
            __m512i thr = _mm512_set1_epi64(heap_threshold(h, q));                                \
            for (Py_ssize_t b = b0; b < b1; b++) {                                                \
                const uint64_t *blk = codes + b * (W) * 8;                                        \
                __m512i acc = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(blk), qw[0])); \
                for (int w = 1; w < (W); w++)                                                     \
                    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(             \
                                                    _mm512_loadu_si512(blk + w * 8), qw[w])));    \
                __mmask8 hit = _mm512_cmplt_epi64_mask(acc, thr);                                 \
                if (hit) {                                                                        \
                    hit &= lane_mask(mask, b, n);                                                 \
                    if (!hit) continue;                                                           \
                    int64_t dl[8];                                                                \
                    _mm512_storeu_si512(dl, acc);                                                 \
                    while (hit) { /* lanes in row order: lower index first */                     \
                        int l = __builtin_ctz(hit);                                               \
                        hit &= hit - 1;                                                           \
                        if (dl[l] >= heap_threshold(h, q)) continue;                              \
                        heap_push(h->dist + q * h->k, h->idx + q * h->k, h->count + q, h->k,      \
                                  (int32_t)dl[l], base + b * 8 + l);                              \
                    }                                                                             \
                    thr = _mm512_set1_epi64(heap_threshold(h, q));                                \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

AVX512 static void scan_avx512(SCAN_ARGS) {
    Py_ssize_t nblocks = (n + 7) / 8;
    WORD_SWITCH(AVX_BODY)
}

/*
 * Batches: query lanes. Word w of 8 queries sits in one register; each row word is broadcast and
 * XORed against the 8 queries at once. A tile of rows is read from memory once and scored against
 * every group of 8 queries while hot in L1. Lanes past the last query get threshold -1 (never hit).
 */
#define QLANE_BODY(W)                                                                             \
    for (Py_ssize_t b0 = 0; b0 < nblocks; b0 += TILE_BLOCKS) {                                    \
        Py_ssize_t b1 = b0 + TILE_BLOCKS < nblocks ? b0 + TILE_BLOCKS : nblocks;                  \
        for (Py_ssize_t g = 0; g < groups; g++) {                                                 \
            __m512i qv[MAX_WORDS];                                                                \
            for (int w = 0; w < (W); w++) qv[w] = _mm512_loadu_si512(qt + (g * MAX_WORDS + w) * 8); \
            int64_t thr[8];                                                                       \
            for (int l = 0; l < 8; l++)                                                           \
                thr[l] = g * 8 + l >= nq ? -1 : heap_threshold(h, g * 8 + l);                     \
            __m512i tv = _mm512_loadu_si512(thr);                                                 \
            for (Py_ssize_t b = b0; b < b1; b++) {                                                \
                const uint64_t *blk = codes + b * (W) * 8;                                        \
                __mmask8 rows_ok = lane_mask(mask, b, n);                                         \
                while (rows_ok) {                                                                 \
                    int r = __builtin_ctz(rows_ok);                                               \
                    rows_ok &= rows_ok - 1;                                                       \
                    __m512i acc = _mm512_popcnt_epi64(                                            \
                        _mm512_xor_si512(_mm512_set1_epi64((long long)blk[r]), qv[0]));           \
                    for (int w = 1; w < (W); w++)                                                 \
                        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(         \
                                                        _mm512_set1_epi64((long long)blk[w * 8 + r]), qv[w]))); \
                    __mmask8 hit = _mm512_cmplt_epi64_mask(acc, tv);                              \
                    if (!hit) continue;                                                           \
                    int64_t dl[8];                                                                \
                    _mm512_storeu_si512(dl, acc);                                                 \
                    while (hit) {                                                                 \
                        int l = __builtin_ctz(hit);                                               \
                        hit &= hit - 1;                                                           \
                        Py_ssize_t q = g * 8 + l;                                                 \
                        heap_push(h->dist + q * h->k, h->idx + q * h->k, h->count + q, h->k,      \
                                  (int32_t)dl[l], base + b * 8 + r);                              \
                        thr[l] = heap_threshold(h, q);                                            \
                    }                                                                             \
                    tv = _mm512_loadu_si512(thr);                                                 \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

AVX512 static void scan_avx512_qlanes(SCAN_ARGS) {
    Py_ssize_t nblocks = (n + 7) / 8, groups = (nq + 7) / 8;
    size_t bytes = (size_t)groups * MAX_WORDS * 8 * sizeof(uint64_t);
    uint64_t *qt = (uint64_t *)aligned_alloc(64, bytes);
    if (qt == NULL) { scan_avx512(queries, nq, codes, n, words, mask, base, h); return; }
    memset(qt, 0, bytes);
    for (Py_ssize_t q = 0; q < nq; q++)
        for (int w = 0; w < words; w++) qt[((q / 8) * MAX_WORDS + w) * 8 + q % 8] = queries[q * words + w];
    WORD_SWITCH(QLANE_BODY)
    free(qt);
}

/* One query (or a few) scans rows in lanes; larger batches put queries in lanes. */
static int QLANE_MIN = 4;
AVX512 static void scan_avx512_auto(SCAN_ARGS) {
    if (nq >= QLANE_MIN) scan_avx512_qlanes(queries, nq, codes, n, words, mask, base, h);
    else scan_avx512(queries, nq, codes, n, words, mask, base, h);
}
#endif

typedef void (*scan_fn)(SCAN_ARGS);
static scan_fn SCAN = scan_generic;
static const char *SCAN_NAME = "generic";

/* Distances for every (query, row) pair: out[q, i]. Used by tests and by small re-rankings. */
#define DIST_BODY(W)                                                                              \
    for (Py_ssize_t q = 0; q < nq; q++)                                                           \
        for (Py_ssize_t i = 0; i < n; i++) {                                                      \
            int32_t d = 0;                                                                        \
            for (int w = 0; w < (W); w++)                                                         \
                d += __builtin_popcountll(codes[i * (W) + w] ^ queries[q * (W) + w]);             \
            out[q * n + i] = d;                                                                   \
        }

static void distances_generic(const uint64_t *queries, Py_ssize_t nq, const uint64_t *codes,
                              Py_ssize_t n, int words, int32_t *out) {
    switch (words) {
        case 10: DIST_BODY(10) break;
        default: DIST_BODY(words) break;
    }
}

static int get_buf(PyObject *obj, Py_buffer *view, int writable, const char *name) {
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s buffer", name,
                     writable ? " writable" : "");
        return -1;
    }
    return 0;
}

/* scan_topk(queries, blocked_codes, n_rows, words, mask_or_None, base, heap_dist, heap_idx, heap_count) */
static PyObject *py_scan_topk(PyObject *self, PyObject *args) {
    PyObject *oq, *oc, *om, *ohd, *ohi, *ohc;
    int words;
    long long base;
    Py_ssize_t n_rows;
    if (!PyArg_ParseTuple(args, "OOniOLOOO", &oq, &oc, &n_rows, &words, &om, &base, &ohd, &ohi, &ohc))
        return NULL;
    if (words < 1 || words > MAX_WORDS) {
        PyErr_Format(PyExc_ValueError, "words must be in [1, %d]; given %d", MAX_WORDS, words);
        return NULL;
    }
    Py_buffer bq, bc, bm, bhd, bhi, bhc;
    int have_mask = om != Py_None;
    if (get_buf(oq, &bq, 0, "queries") < 0) return NULL;
    if (get_buf(oc, &bc, 0, "codes") < 0) { PyBuffer_Release(&bq); return NULL; }
    if (have_mask && get_buf(om, &bm, 0, "mask") < 0) {
        PyBuffer_Release(&bq); PyBuffer_Release(&bc); return NULL;
    }
    if (get_buf(ohd, &bhd, 1, "heap_dist") < 0) goto fail3;
    if (get_buf(ohi, &bhi, 1, "heap_idx") < 0) goto fail4;
    if (get_buf(ohc, &bhc, 1, "heap_count") < 0) goto fail5;
    {
        Py_ssize_t row_bytes = (Py_ssize_t)words * 8;
        Py_ssize_t nq = bq.len / row_bytes, n = n_rows;
        Py_ssize_t k = nq ? bhd.len / (Py_ssize_t)sizeof(int32_t) / nq : 0;
        int ok = bq.len % row_bytes == 0 && n >= 0 && bc.len >= (n + 7) / 8 * 8 * row_bytes &&
                 nq > 0 && k > 0 &&
                 bhd.len == nq * k * (Py_ssize_t)sizeof(int32_t) &&
                 bhi.len == nq * k * (Py_ssize_t)sizeof(int64_t) &&
                 bhc.len == nq * (Py_ssize_t)sizeof(int32_t) && (!have_mask || bm.len >= n) &&
                 k <= INT32_MAX;
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "scan_topk: inconsistent buffer sizes");
            goto fail6;
        }
        heaps_t h = {(int32_t *)bhd.buf, (int64_t *)bhi.buf, (int32_t *)bhc.buf, (int)k};
        const uint8_t *mask = have_mask ? (const uint8_t *)bm.buf : NULL;
        Py_BEGIN_ALLOW_THREADS
        SCAN((const uint64_t *)bq.buf, nq, (const uint64_t *)bc.buf, n, words, mask, base, &h);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&bhc); PyBuffer_Release(&bhi); PyBuffer_Release(&bhd);
    if (have_mask) PyBuffer_Release(&bm);
    PyBuffer_Release(&bc); PyBuffer_Release(&bq);
    Py_RETURN_NONE;
fail6: PyBuffer_Release(&bhc);
fail5: PyBuffer_Release(&bhi);
fail4: PyBuffer_Release(&bhd);
fail3:
    if (have_mask) PyBuffer_Release(&bm);
    PyBuffer_Release(&bc); PyBuffer_Release(&bq);
    return NULL;
}

/* distances(queries, codes, words, out_int32) */
static PyObject *py_distances(PyObject *self, PyObject *args) {
    PyObject *oq, *oc, *oo;
    int words;
    if (!PyArg_ParseTuple(args, "OOiO", &oq, &oc, &words, &oo)) return NULL;
    if (words < 1 || words > MAX_WORDS) {
        PyErr_Format(PyExc_ValueError, "words must be in [1, %d]; given %d", MAX_WORDS, words);
        return NULL;
    }
    Py_buffer bq, bc, bo;
    if (get_buf(oq, &bq, 0, "queries") < 0) return NULL;
    if (get_buf(oc, &bc, 0, "codes") < 0) { PyBuffer_Release(&bq); return NULL; }
    if (get_buf(oo, &bo, 1, "out") < 0) { PyBuffer_Release(&bc); PyBuffer_Release(&bq); return NULL; }
    Py_ssize_t row_bytes = (Py_ssize_t)words * 8;
    Py_ssize_t nq = bq.len / row_bytes, n = bc.len / row_bytes;
    if (bq.len % row_bytes || bc.len % row_bytes || bo.len != nq * n * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "distances: inconsistent buffer sizes");
        PyBuffer_Release(&bo); PyBuffer_Release(&bc); PyBuffer_Release(&bq);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    distances_generic((const uint64_t *)bq.buf, nq, (const uint64_t *)bc.buf, n, words,
                      (int32_t *)bo.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bo); PyBuffer_Release(&bc); PyBuffer_Release(&bq);
    Py_RETURN_NONE;
}

/* read_sum(buffer) -> int: sums the buffer as 64-bit words; the memory-bandwidth floor in benches. */
static PyObject *py_read_sum(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (get_buf(arg, &b, 0, "buffer") < 0) return NULL;
    const uint64_t *p = (const uint64_t *)b.buf;
    Py_ssize_t n = b.len / 8;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) { s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3]; }
    for (; i < n; i++) s0 += p[i];
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(s0 + s1 + s2 + s3);
}


/* scale_to_f16(src_f32[n, d], inv_f32[n], dst_u16[n, d]): dst = half(src * inv[row]), rounding to
 * nearest even like numpy's astype(float16). One pass with F16C; returns False where the CPU lacks it
 * (the caller then uses numpy). */
#ifdef HAVE_X86_DISPATCH
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

static PyObject *py_scale_to_f16(PyObject *self, PyObject *args) {
    PyObject *os, *oi, *od;
    Py_ssize_t n, d;
    if (!PyArg_ParseTuple(args, "OOOnn", &os, &oi, &od, &n, &d)) return NULL;
#ifdef HAVE_X86_DISPATCH
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
#ifdef HAVE_X86_DISPATCH
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

static PyObject *py_dot_f16(PyObject *self, PyObject *args) {
    PyObject *seq, *oq, *oo;
    if (!PyArg_ParseTuple(args, "OOO", &seq, &oq, &oo)) return NULL;
#ifdef HAVE_X86_DISPATCH
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


/* Shared by gather_rows and gather_i64: out[i] = the row at positions[i] of chunked arrays
 * (chunk = position >> shift). Blocked chunks hold 8 rows per block, word-interleaved (the scan's
 * layout); flat chunks hold rows one after another. Rows are `words` uint64 wide. */
static PyObject *gather(PyObject *ochunks, PyObject *opos, int shift, int words, PyObject *oout, int blocked,
                        const char *name) {
    PyObject *fast = PySequence_Fast(ochunks, "chunks must be a sequence");
    if (fast == NULL) return NULL;
    Py_ssize_t nchunks = PySequence_Fast_GET_SIZE(fast);
    Py_buffer bp, bo;
    if (get_buf(opos, &bp, 0, "positions") < 0) { Py_DECREF(fast); return NULL; }
    if (get_buf(oout, &bo, 1, "out") < 0) { PyBuffer_Release(&bp); Py_DECREF(fast); return NULL; }
    Py_ssize_t n = bp.len / 8;
    Py_buffer *bufs = (Py_buffer *)PyMem_Calloc((size_t)(nchunks ? nchunks : 1), sizeof(Py_buffer));
    Py_ssize_t got = 0;
    int ok = bufs != NULL && bo.len == n * words * 8;
    for (; ok && got < nchunks; got++)
        if (get_buf(PySequence_Fast_GET_ITEM(fast, got), &bufs[got], 0, "chunks[i]") < 0) ok = 0;
    if (ok) {
        const int64_t *pos = (const int64_t *)bp.buf;
        uint64_t *out = (uint64_t *)bo.buf;
        int64_t mask = ((int64_t)1 << shift) - 1;
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t c = pos[i] >> shift, lane = pos[i] & mask;
            Py_ssize_t end = blocked ? (lane / 8 + 1) * words * 64 : (lane + 1) * words * 8;
            if (pos[i] < 0 || c >= nchunks || end > bufs[c].len) {
                PyErr_Format(PyExc_IndexError, "%s: position %lld out of range", name, (long long)pos[i]);
                ok = 0;
                break;
            }
            const uint64_t *chunk = (const uint64_t *)bufs[c].buf;
            if (blocked) {
                const uint64_t *blk = chunk + (lane >> 3) * words * 8;
                for (int w = 0; w < words; w++) out[i * words + w] = blk[w * 8 + (lane & 7)];
            } else {
                for (int w = 0; w < words; w++) out[i * words + w] = chunk[lane * words + w];
            }
        }
    } else if (!PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s: inconsistent buffer sizes", name);
    }
    for (Py_ssize_t j = 0; j < got; j++)
        if (bufs[j].obj != NULL) PyBuffer_Release(&bufs[j]);
    PyMem_Free(bufs);
    PyBuffer_Release(&bo); PyBuffer_Release(&bp); Py_DECREF(fast);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* gather_rows(chunks, positions_i64, shift, words, out_u64): row-major codes of the given positions
 * from blocked chunks (chunk = position >> shift); out is [len(positions), words]. */
static PyObject *py_gather_rows(PyObject *self, PyObject *args) {
    PyObject *ochunks, *opos, *oout;
    int shift, words;
    if (!PyArg_ParseTuple(args, "OOiiO", &ochunks, &opos, &shift, &words, &oout)) return NULL;
    if (words < 1 || words > MAX_WORDS || shift < 3 || shift > 40) {
        PyErr_SetString(PyExc_ValueError, "gather_rows: bad words or shift");
        return NULL;
    }
    return gather(ochunks, opos, shift, words, oout, 1, "gather_rows");
}

/* gather_i64(chunks, positions_i64, shift, out_i64): out[i] = chunks[p >> shift][p & mask] for
 * int64 chunk arrays (row ids of a shortlist: independent loads, so the misses overlap). */
static PyObject *py_gather_i64(PyObject *self, PyObject *args) {
    PyObject *ochunks, *opos, *oout;
    int shift;
    if (!PyArg_ParseTuple(args, "OOiO", &ochunks, &opos, &shift, &oout)) return NULL;
    if (shift < 0 || shift > 40) {
        PyErr_SetString(PyExc_ValueError, "gather_i64: bad shift");
        return NULL;
    }
    return gather(ochunks, opos, shift, 1, oout, 0, "gather_i64");
}

static PyObject *py_kernel(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(SCAN_NAME); }

static PyMethodDef methods[] = {
    {"scan_topk", py_scan_topk, METH_VARARGS, "Running top-k Hamming scan (see module docs)."},
    {"distances", py_distances, METH_VARARGS, "All query x row Hamming distances into out."},
    {"read_sum", py_read_sum, METH_O, "Sum a buffer as uint64 words (memory-bandwidth floor)."},
    {"scale_to_f16", py_scale_to_f16, METH_VARARGS, "dst = float16(src * inv[row]) with F16C."},
    {"dot_f16", py_dot_f16, METH_VARARGS, "out[i] = dot(float16 buffers[i], float32 query)."},
    {"gather_rows", py_gather_rows, METH_VARARGS, "Row-major codes of positions in blocked chunks."},
    {"gather_i64", py_gather_i64, METH_VARARGS, "int64 values of positions in chunked arrays."},
    {"kernel", py_kernel, METH_NOARGS, "Name of the scan kernel chosen for this CPU."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hamming",
                                    "Popcount Hamming scan kernels.", -1, methods};

PyMODINIT_FUNC PyInit__hamming(void) {
#ifdef HAVE_X86_DISPATCH
    __builtin_cpu_init();
    const char *force = getenv("ZEMBED_SCAN_KERNEL");
    if (force && strcmp(force, "generic") == 0) {
        /* keep generic */
    } else if (__builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("bmi2") &&
               !(force && strcmp(force, "popcnt") == 0)) {
        SCAN = scan_avx512_auto; SCAN_NAME = "avx512vpopcntdq";
        const char *qmin = getenv("ZEMBED_SCAN_QLANE_MIN");
        if (qmin) QLANE_MIN = atoi(qmin);
    } else if (__builtin_cpu_supports("popcnt")) {
        SCAN = scan_popcnt; SCAN_NAME = "popcnt";
    }
#endif
    return PyModule_Create(&module);
}
