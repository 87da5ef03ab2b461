/* AVX2 kernel (Haswell and later, Zen 1-3: x86 servers without AVX-512 VPOPCNTDQ).
 *
 * Rows in lanes: word w of a block's rows 0-3 is one 256-bit vector, rows 4-7 the next. AVX2 has no
 * vector popcount, so bytes are counted with the nibble table (`vpshufb` of a 16-entry table by the
 * low and the high nibble, Mula's method), and words are first combined Harley-Seal style: carry-save
 * adders (CSA) fold four XORed words into `ones`, `twos` and a `fours` vector, so only one in four
 * words is popcounted (plus `ones`/`twos` once per row group). Per-byte counts stay below 256 (at most
 * 8 * 16 words = 128 per byte), and one `vpsadbw` per 4 rows sums a row's bytes into its 64-bit lane.
 * Queries are tiled like every kernel: a tile of rows stays in L1 while each query passes over it. */
#include "scan.h"

#ifdef ZS_X86
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2")))
#define INLINE static inline __attribute__((always_inline))

/* Bytes of x replaced by their popcounts. */
AVX2 INLINE __m256i pc8(__m256i x, __m256i lut, __m256i low) {
    __m256i lo = _mm256_and_si256(x, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* Carry-save adder: a + b + c = 2 * carry + sum, bitwise. */
#define CSA(carry, sum, a, b, c)                                                                  \
    do {                                                                                          \
        __m256i u_ = _mm256_xor_si256(a, b);                                                      \
        carry = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(u_, c));                 \
        sum = _mm256_xor_si256(u_, c);                                                            \
    } while (0)

/* Per-row Hamming distances (one per 64-bit lane) of 4 rows (`p` points at word 0 of the first,
 * the next word is 8 uint64 further) against the query words qb (each broadcast to 4 lanes). */
AVX2 INLINE __m256i dist4(const uint64_t *p, const __m256i *qb, const int W, __m256i lut, __m256i low) {
    const __m256i zero = _mm256_setzero_si256();
#define X(w) _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + (w) * 8)), qb[w])
    __m256i bytes;
    int w = 0;
    if (W >= 4) {
        __m256i ones = zero, twos = zero, fours_n = zero, ta, tb, fours;
        for (; w + 4 <= W; w += 4) {
            CSA(ta, ones, ones, X(w), X(w + 1));
            CSA(tb, ones, ones, X(w + 2), X(w + 3));
            CSA(fours, twos, twos, ta, tb);
            fours_n = _mm256_add_epi8(fours_n, pc8(fours, lut, low));
        }
        __m256i f2 = _mm256_add_epi8(fours_n, fours_n);
        __m256i t = _mm256_add_epi8(f2, pc8(twos, lut, low));
        bytes = _mm256_add_epi8(_mm256_add_epi8(t, t), pc8(ones, lut, low));
    } else {
        bytes = zero;
    }
    for (; w < W; w++) bytes = _mm256_add_epi8(bytes, pc8(X(w), lut, low));
#undef X
    return _mm256_sad_epu8(bytes, zero);
}

#define AVX2_BODY(W)                                                                              \
    for (zs_size b0 = 0; b0 < nblocks; b0 += ZS_TILE_BLOCKS) {                                    \
        zs_size b1 = b0 + ZS_TILE_BLOCKS < nblocks ? b0 + ZS_TILE_BLOCKS : nblocks;               \
        for (zs_size q = 0; q < nq; q++) {                                                        \
            const uint64_t *qv = queries + q * (W);                                               \
            __m256i qb[ZS_MAX_WORDS];                                                             \
            for (int w = 0; w < (W); w++) qb[w] = _mm256_set1_epi64x((long long)qv[w]);           \
            __m256i thr = _mm256_set1_epi64x(zs_threshold(h, q));                                 \
            for (zs_size b = b0; b < b1; b++) {                                                   \
                const uint64_t *blk = codes + b * (W) * 8;                                        \
                if (q == 0) ZS_PREFETCH_BLOCK(blk, W);                                            \
                __m256i d0 = dist4(blk, qb, (W), lut, low);                                       \
                __m256i d1 = dist4(blk + 4, qb, (W), lut, low);                                   \
                unsigned hit = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(thr, d0))) | \
                               (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(thr, d1))) << 4; \
                if (hit) {                                                                        \
                    hit &= zs_lanes(mask, b, n);                                                  \
                    if (!hit) continue;                                                           \
                    int64_t dl[8];                                                                \
                    _mm256_storeu_si256((__m256i *)dl, d0);                                       \
                    _mm256_storeu_si256((__m256i *)(dl + 4), d1);                                 \
                    while (hit) { /* lanes in row order: lower index first */                     \
                        int l = __builtin_ctz(hit);                                               \
                        hit &= hit - 1;                                                           \
                        zs_offer(h, q, (int32_t)dl[l], base + b * 8 + l);                         \
                    }                                                                             \
                    thr = _mm256_set1_epi64x(zs_threshold(h, q));                                 \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

AVX2 void zs_scan_avx2(ZS_SCAN_ARGS) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2,
                                         2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0F);
    zs_size nblocks = (n + 7) / 8;
    ZS_WORD_SWITCH(AVX2_BODY)
}
#endif
