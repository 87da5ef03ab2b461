/*
 * Hamming top-k scan kernels: shared declarations (plain C, no Python: the C test harness in
 * tests/c/ links the kernels directly).
 *
 * Layout. A code row is `W = stride / 8` 64-bit words (zero padded past the code width, so padding
 * XORs to zero and counts nothing). Kernels read codes in a *blocked* layout: blocks of 8 rows,
 * word-major inside a block (`codes[block][w][lane]`), so word w of 8 consecutive rows is 64
 * contiguous bytes (one AVX-512 register, two AVX2 registers, four NEON registers). The last block
 * may be partial: rows at or past `n` are never reported.
 *
 * Top-k. Each query keeps a max-heap of the best (distance, index) pairs in caller-owned buffers, so
 * a scan over several chunks carries its state from call to call. Rows are visited in index order:
 * on equal distance the lower index wins and a newcomer must be strictly closer than the heap's
 * worst. The heap therefore holds the k smallest (distance, index) pairs, whatever the kernel, and
 * heaps of disjoint row ranges merge into the heap of their union (how threads split a scan).
 * A 0 in the optional per-row mask hides a row inside the scan.
 */
#ifndef ZEMBED_SCAN_H
#define ZEMBED_SCAN_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef ptrdiff_t zs_size;

#define ZS_TILE_BLOCKS 32 /* 256 rows: W * 2 KiB at most, stays in L1/L2 while every query passes */
#define ZS_MAX_WORDS 16   /* 1024-bit codes */

typedef struct {
    int32_t *dist;  /* [Q, k] */
    int64_t *idx;   /* [Q, k] */
    int32_t *count; /* [Q] */
    int k;
} zs_heaps;

static inline int zs_worse(int32_t da, int64_t ia, int32_t db, int64_t ib) {
    return da > db || (da == db && ia > ib);
}

static inline void zs_heap_push(int32_t *hd, int64_t *hi, int32_t *cnt, int k, int32_t d, int64_t ix) {
    int n = *cnt;
    if (n < k) {
        int i = n;
        while (i > 0) {
            int p = (i - 1) >> 1;
            if (!zs_worse(d, ix, hd[p], hi[p])) break;
            hd[i] = hd[p];
            hi[i] = hi[p];
            i = p;
        }
        hd[i] = d;
        hi[i] = ix;
        *cnt = n + 1;
        return;
    }
    int i = 0; /* replace the root (the worst) and sift down */
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        int32_t md = d;
        int64_t mi = ix;
        if (l < k && zs_worse(hd[l], hi[l], md, mi)) { m = l; md = hd[l]; mi = hi[l]; }
        if (r < k && zs_worse(hd[r], hi[r], md, mi)) { m = r; md = hd[r]; mi = hi[r]; }
        if (m == i) break;
        hd[i] = hd[m];
        hi[i] = hi[m];
        i = m;
    }
    hd[i] = d;
    hi[i] = ix;
}

static inline int32_t zs_threshold(const zs_heaps *h, zs_size q) {
    return h->count[q] < h->k ? INT32_MAX : h->dist[q * h->k];
}

/* Offer row `row` (block-local position b * 8 + l) at distance d to query q's heap. */
static inline void zs_offer(zs_heaps *h, zs_size q, int32_t d, int64_t ix) {
    if (d < zs_threshold(h, q)) zs_heap_push(h->dist + q * h->k, h->idx + q * h->k, h->count + q, h->k, d, ix);
}

/* Bit l set: row b * 8 + l exists (< n) and is visible in the mask (NULL: all visible). */
static inline unsigned zs_lanes(const uint8_t *mask, zs_size b, zs_size n) {
    zs_size first = b * 8, left = n - first;
    unsigned m = left >= 8 ? 0xFFu : (1u << left) - 1u;
    if (mask != NULL) {
        unsigned v = 0;
        for (int l = 0; l < 8 && l < left; l++) v |= (unsigned)(mask[first + l] != 0) << l;
        m &= v;
    }
    return m;
}

/* Software prefetch this many bytes ahead of the block being scored, by the first query of a tile
 * (the others find the tile in L1). Without it the kernels fall behind the hardware prefetcher on a
 * single-query scan: measured on one core of a shared 2-core Xeon, 1M 640-bit rows, AVX2 went from
 * 1.66x to 1.1-1.2x the read-only pass and scalar popcnt from 2.2x to 1.2-1.3x (2.5 to 20 KB ahead
 * all alike); AVX-512 from 1.09x to 0.91-0.94x (CPU-time medians). */
#ifndef ZS_PREFETCH_BYTES
#define ZS_PREFETCH_BYTES 6144
#endif
#define ZS_PREFETCH_BLOCK(blk, W)                                                                 \
    for (int pw_ = 0; pw_ < (W); pw_++) __builtin_prefetch((const char *)(blk) + ZS_PREFETCH_BYTES + pw_ * 64, 0, 3)

#define ZS_SCAN_ARGS                                                                              \
    const uint64_t *queries, zs_size nq, const uint64_t *codes, zs_size n, int words,             \
        const uint8_t *mask, int64_t base, zs_heaps *h

typedef void (*zs_scan_fn)(ZS_SCAN_ARGS);

/* Expands BODY(W) with W a compile-time constant (the compiler unrolls the word loops). */
#define ZS_WORD_SWITCH(BODY)                                                                      \
    switch (words) {                                                                              \
        case 1: BODY(1) break;   case 2: BODY(2) break;   case 3: BODY(3) break;                  \
        case 4: BODY(4) break;   case 5: BODY(5) break;   case 6: BODY(6) break;                  \
        case 7: BODY(7) break;   case 8: BODY(8) break;   case 9: BODY(9) break;                  \
        case 10: BODY(10) break; case 11: BODY(11) break; case 12: BODY(12) break;                \
        case 13: BODY(13) break; case 14: BODY(14) break; case 15: BODY(15) break;                \
        default: BODY(16) break;                                                                  \
    }

/* The kernels (scan_generic.c, scan_avx2.c, scan_avx512.c, scan_neon.c). Each scans rows
 * [0, n) of `codes` (blocked) for nq queries (row-major, `words` uint64 each), pushing base + row. */
void zs_scan_generic(ZS_SCAN_ARGS);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ZS_X86 1
void zs_scan_popcnt(ZS_SCAN_ARGS);
void zs_scan_avx2(ZS_SCAN_ARGS);
void zs_scan_avx512(ZS_SCAN_ARGS);
#endif
#if defined(__aarch64__)
#define ZS_NEON 1
void zs_scan_neon(ZS_SCAN_ARGS);
#endif

/* dispatch.c: the kernels this build has, whether this CPU runs them, and the default choice. */
typedef struct {
    const char *name;
    zs_scan_fn fn;
} zs_kernel;

int zs_kernel_count(void);
const zs_kernel *zs_kernel_at(int i);         /* in preference order, best first */
int zs_kernel_supported(const zs_kernel *k); /* 1 if this CPU can run it */
const zs_kernel *zs_kernel_find(const char *name);
const zs_kernel *zs_kernel_best(void);

#endif
