/* NEON kernel (ARMv8-A: Graviton, Ampere, Apple). Rows in lanes: word w of a block's 8 rows is four
 * 128-bit vectors of 2 rows each. `vcntq_u8` counts bits per byte; byte counts of all words add up
 * in uint8 lanes (at most 8 * 16 words = 128 per byte), then pairwise widening adds
 * (`vpaddlq_u8/u16/u32`) sum each row's 8 bytes into its 64-bit lane. Queries are tiled like every
 * kernel: a tile of rows stays in L1 while each query passes over it. */
#include "scan.h"

#ifdef ZS_NEON
#include <arm_neon.h>

#define INLINE static inline __attribute__((always_inline))

/* Distances of rows 2j, 2j+1 of the block at p (word w of the pair at p + w * 8 + 2j). */
INLINE uint64x2_t dist2(const uint64_t *p, const uint8x16_t *qb, const int W) {
    uint8x16_t acc = vcntq_u8(veorq_u8(vld1q_u8((const uint8_t *)p), qb[0]));
    for (int w = 1; w < W; w++)
        acc = vaddq_u8(acc, vcntq_u8(veorq_u8(vld1q_u8((const uint8_t *)(p + w * 8)), qb[w])));
    return vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(acc)));
}

#define NEON_BODY(W)                                                                              \
    for (zs_size b0 = 0; b0 < nblocks; b0 += ZS_TILE_BLOCKS) {                                    \
        zs_size b1 = b0 + ZS_TILE_BLOCKS < nblocks ? b0 + ZS_TILE_BLOCKS : nblocks;               \
        for (zs_size q = 0; q < nq; q++) {                                                        \
            const uint64_t *qv = queries + q * (W);                                               \
            uint8x16_t qb[ZS_MAX_WORDS];                                                          \
            for (int w = 0; w < (W); w++) qb[w] = vreinterpretq_u8_u64(vdupq_n_u64(qv[w]));       \
            uint64x2_t thr = vdupq_n_u64((uint64_t)zs_threshold(h, q));                           \
            for (zs_size b = b0; b < b1; b++) {                                                   \
                const uint64_t *blk = codes + b * (W) * 8;                                        \
                if (q == 0) ZS_PREFETCH_BLOCK(blk, W);                                            \
                uint64x2_t d0 = dist2(blk, qb, (W)), d1 = dist2(blk + 2, qb, (W));                \
                uint64x2_t d2 = dist2(blk + 4, qb, (W)), d3 = dist2(blk + 6, qb, (W));            \
                uint32x4_t lt01 = vcombine_u32(vmovn_u64(vcltq_u64(d0, thr)), vmovn_u64(vcltq_u64(d1, thr))); \
                uint32x4_t lt23 = vcombine_u32(vmovn_u64(vcltq_u64(d2, thr)), vmovn_u64(vcltq_u64(d3, thr))); \
                if (vmaxvq_u32(vorrq_u32(lt01, lt23)) == 0) continue;                             \
                unsigned hit = zs_lanes(mask, b, n);                                              \
                if (!hit) continue;                                                               \
                uint64_t dl[8];                                                                   \
                vst1q_u64(dl, d0); vst1q_u64(dl + 2, d1); vst1q_u64(dl + 4, d2); vst1q_u64(dl + 6, d3); \
                while (hit) { /* lanes in row order: lower index first */                         \
                    int l = __builtin_ctz(hit);                                                   \
                    hit &= hit - 1;                                                               \
                    zs_offer(h, q, (int32_t)dl[l], base + b * 8 + l);                             \
                }                                                                                 \
                thr = vdupq_n_u64((uint64_t)zs_threshold(h, q));                                  \
            }                                                                                     \
        }                                                                                         \
    }

void zs_scan_neon(ZS_SCAN_ARGS) {
    zs_size nblocks = (n + 7) / 8;
    ZS_WORD_SWITCH(NEON_BODY)
}
#endif
