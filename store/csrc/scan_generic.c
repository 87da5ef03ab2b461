/* Portable kernels: scalar 64-bit popcounts over the blocked layout. `generic` is the reference
 * every other kernel is tested against; `popcnt` is the same loop compiled for x86's POPCNT. */
#include "scan.h"

#define GENERIC_BODY(W)                                                                           \
    for (zs_size b0 = 0; b0 < nblocks; b0 += ZS_TILE_BLOCKS) {                                    \
        zs_size b1 = b0 + ZS_TILE_BLOCKS < nblocks ? b0 + ZS_TILE_BLOCKS : nblocks;               \
        for (zs_size q = 0; q < nq; q++) {                                                        \
            const uint64_t *qv = queries + q * (W);                                               \
            int32_t thr = zs_threshold(h, q);                                                     \
            for (zs_size b = b0; b < b1; b++) {                                                   \
                const uint64_t *blk = codes + b * (W) * 8;                                        \
                if (q == 0) ZS_PREFETCH_BLOCK(blk, W);                                            \
                for (int l = 0; l < 8; l++) {                                                     \
                    zs_size i = b * 8 + l;                                                        \
                    if (i >= n) break;                                                            \
                    int32_t d = 0;                                                                \
                    for (int w = 0; w < (W); w++) d += __builtin_popcountll(blk[w * 8 + l] ^ qv[w]); \
                    if (d < thr && (mask == NULL || mask[i])) {                                   \
                        zs_heap_push(h->dist + q * h->k, h->idx + q * h->k, h->count + q, h->k, d, \
                                     base + i);                                                   \
                        thr = zs_threshold(h, q);                                                 \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

void zs_scan_generic(ZS_SCAN_ARGS) {
    zs_size nblocks = (n + 7) / 8;
    ZS_WORD_SWITCH(GENERIC_BODY)
}

#ifdef ZS_X86
__attribute__((target("popcnt"))) void zs_scan_popcnt(ZS_SCAN_ARGS) {
    zs_size nblocks = (n + 7) / 8;
    ZS_WORD_SWITCH(GENERIC_BODY)
}
#endif
