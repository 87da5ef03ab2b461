/* AVX-512 VPOPCNTDQ kernels (Ice Lake and later, Zen 4 and later).
 *
 * One query (or a few): rows in lanes. Word w of 8 rows is one 64-byte vector: one XOR + VPOPCNTQ +
 * ADD per word per 8 rows keeps a single-query scan at the memory-bandwidth floor.
 * Batches: queries in lanes. Word w of 8 queries sits in one register; each row word is broadcast
 * and XORed against the 8 queries at once. A tile of rows is read from memory once and scored
 * against every group of 8 queries while hot in L1. Lanes past the last query get threshold -1. */
#include "scan.h"

#ifdef ZS_X86
#include <immintrin.h>
#include <stdlib.h>

#define AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512vpopcntdq,popcnt")))

#define ROWLANE_BODY(W)                                                                           \
    for (zs_size b0 = 0; b0 < nblocks; b0 += ZS_TILE_BLOCKS) {                                    \
        zs_size b1 = b0 + ZS_TILE_BLOCKS < nblocks ? b0 + ZS_TILE_BLOCKS : nblocks;               \
        for (zs_size q = 0; q < nq; q++) {                                                        \
            const uint64_t *qv = queries + q * (W);                                               \
            __m512i qw[ZS_MAX_WORDS];                                                             \
            for (int w = 0; w < (W); w++) qw[w] = _mm512_set1_epi64((long long)qv[w]);            \
            __m512i thr = _mm512_set1_epi64(zs_threshold(h, q));                                  \
            for (zs_size b = b0; b < b1; b++) {                                                   \
                const uint64_t *blk = codes + b * (W) * 8;                                        \
                if (q == 0) ZS_PREFETCH_BLOCK(blk, W);                                            \
                __m512i acc = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(blk), qw[0])); \
                for (int w = 1; w < (W); w++)                                                     \
                    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(             \
                                                    _mm512_loadu_si512(blk + w * 8), qw[w])));    \
                __mmask8 hit = _mm512_cmplt_epi64_mask(acc, thr);                                 \
                if (hit) {                                                                        \
                    hit &= (__mmask8)zs_lanes(mask, b, n);                                        \
                    if (!hit) continue;                                                           \
                    int64_t dl[8];                                                                \
                    _mm512_storeu_si512(dl, acc);                                                 \
                    while (hit) { /* lanes in row order: lower index first */                     \
                        int l = __builtin_ctz(hit);                                               \
                        hit &= hit - 1;                                                           \
                        zs_offer(h, q, (int32_t)dl[l], base + b * 8 + l);                         \
                    }                                                                             \
                    thr = _mm512_set1_epi64(zs_threshold(h, q));                                  \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

AVX512 static void scan_rowlanes(ZS_SCAN_ARGS) {
    zs_size nblocks = (n + 7) / 8;
    ZS_WORD_SWITCH(ROWLANE_BODY)
}

#define QLANE_BODY(W)                                                                             \
    for (zs_size b0 = 0; b0 < nblocks; b0 += ZS_TILE_BLOCKS) {                                    \
        zs_size b1 = b0 + ZS_TILE_BLOCKS < nblocks ? b0 + ZS_TILE_BLOCKS : nblocks;               \
        for (zs_size g = 0; g < groups; g++) {                                                    \
            __m512i qv[ZS_MAX_WORDS];                                                             \
            for (int w = 0; w < (W); w++) qv[w] = _mm512_loadu_si512(qt + (g * ZS_MAX_WORDS + w) * 8); \
            int64_t thr[8];                                                                       \
            for (int l = 0; l < 8; l++) thr[l] = g * 8 + l >= nq ? -1 : zs_threshold(h, g * 8 + l); \
            __m512i tv = _mm512_loadu_si512(thr);                                                 \
            for (zs_size b = b0; b < b1; b++) {                                                   \
                const uint64_t *blk = codes + b * (W) * 8;                                        \
                if (g == 0) ZS_PREFETCH_BLOCK(blk, W);                                            \
                unsigned rows_ok = zs_lanes(mask, b, n);                                          \
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
                        zs_size q = g * 8 + l;                                                    \
                        zs_heap_push(h->dist + q * h->k, h->idx + q * h->k, h->count + q, h->k,   \
                                     (int32_t)dl[l], base + b * 8 + r);                           \
                        thr[l] = zs_threshold(h, q);                                              \
                    }                                                                             \
                    tv = _mm512_loadu_si512(thr);                                                 \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

AVX512 static void scan_qlanes(ZS_SCAN_ARGS) {
    zs_size nblocks = (n + 7) / 8, groups = (nq + 7) / 8;
    size_t bytes = (size_t)groups * ZS_MAX_WORDS * 8 * sizeof(uint64_t);
    uint64_t *qt = (uint64_t *)aligned_alloc(64, bytes);
    if (qt == NULL) {
        scan_rowlanes(queries, nq, codes, n, words, mask, base, h);
        return;
    }
    memset(qt, 0, bytes);
    for (zs_size q = 0; q < nq; q++)
        for (int w = 0; w < words; w++) qt[((q / 8) * ZS_MAX_WORDS + w) * 8 + q % 8] = queries[q * words + w];
    ZS_WORD_SWITCH(QLANE_BODY)
    free(qt);
}

/* One query (or a few) scans rows in lanes; larger batches put queries in lanes. */
#define QLANE_MIN 4
void zs_scan_avx512(ZS_SCAN_ARGS) {
    if (nq >= QLANE_MIN) scan_qlanes(queries, nq, codes, n, words, mask, base, h);
    else scan_rowlanes(queries, nq, codes, n, words, mask, base, h);
}
#endif
