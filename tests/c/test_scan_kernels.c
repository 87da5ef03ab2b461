/*
 * Standalone check of the scan kernels against the scalar `generic` one, without Python: random
 * codes of every width from 1 to 128 bytes (8 to 1024 bits, odd byte counts zero padded to whole
 * words), row counts off the 8-row block, masks, 1 to 9 queries, k of 1, 5 and every row, scans
 * split in two calls (the heap carries over). Every kernel this build has and this CPU runs is
 * checked; a kernel name given on the command line must be among them (so a cross build that
 * silently lacks NEON fails). Built and run by tests/test_scan_c.py: natively, and for aarch64
 * with gcc-aarch64-linux-gnu under qemu-aarch64.
 *
 *   cc -O2 -I store/csrc tests/c/test_scan_kernels.c store/csrc/dispatch.c store/csrc/scan_*.c
 *   ./a.out [required-kernel ...]
 */
#include <stdio.h>
#include <stdlib.h>

#include "scan.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t next(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

typedef struct {
    int32_t d;
    int64_t i;
} pair_t;

static int cmp_pair(const void *a, const void *b) {
    const pair_t *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Run kernel fn over rows [0, n) in two calls split at `cut` (a multiple of 8); sorted results. */
static void run(zs_scan_fn fn, const uint64_t *q, zs_size nq, const uint64_t *blocked, zs_size n, zs_size cut,
                int words, const uint8_t *mask, int k, pair_t *out, int32_t *count) {
    int32_t *hd = calloc((size_t)(nq * k), sizeof(int32_t));
    int64_t *hi = calloc((size_t)(nq * k), sizeof(int64_t));
    zs_heaps h = {hd, hi, count, k};
    for (zs_size i = 0; i < nq; i++) count[i] = 0;
    fn(q, nq, blocked, cut, words, mask, 0, &h);
    fn(q, nq, blocked + cut * words, n - cut, words, mask ? mask + cut : NULL, cut, &h);
    for (zs_size i = 0; i < nq; i++) {
        for (int j = 0; j < count[i]; j++) out[i * k + j] = (pair_t){hd[i * k + j], hi[i * k + j]};
        qsort(out + i * k, (size_t)count[i], sizeof(pair_t), cmp_pair);
    }
    free(hd);
    free(hi);
}

int main(int argc, char **argv) {
    int failures = 0, cases = 0, checked = 0;
    for (int a = 1; a < argc; a++) {
        const zs_kernel *k = zs_kernel_find(argv[a]);
        if (k == NULL || !zs_kernel_supported(k)) {
            fprintf(stderr, "required kernel %s is %s\n", argv[a], k == NULL ? "not built" : "not supported");
            return 2;
        }
    }
    for (int nbytes = 1; nbytes <= 128; nbytes++) {
        int words = (nbytes + 7) / 8;
        zs_size n = 37 + 8 * (nbytes % 5) + nbytes, nblocks = (n + 7) / 8;
        zs_size cut = (n / 2) / 8 * 8;
        zs_size nq = 1 + nbytes % 9;
        uint8_t *rows = calloc((size_t)(nblocks * 8 * words * 8), 1); /* row-major, zero padded */
        for (zs_size r = 0; r < n; r++)
            for (int b = 0; b < nbytes; b++) rows[r * words * 8 + b] = (uint8_t)next();
        for (zs_size r = 0; r < n; r += 13) /* duplicates: equal distances, ties broken by index */
            memcpy(rows + r * words * 8, rows, (size_t)words * 8);
        uint64_t *blocked = calloc((size_t)(nblocks * words * 8), sizeof(uint64_t));
        for (zs_size r = 0; r < n; r++)
            for (int w = 0; w < words; w++)
                memcpy(&blocked[(r / 8) * words * 8 + w * 8 + r % 8], rows + r * words * 8 + w * 8, 8);
        uint64_t *q = calloc((size_t)(nq * words), sizeof(uint64_t));
        for (zs_size i = 0; i < nq; i++) { /* near a row: a few bytes flipped */
            memcpy(q + i * words, rows + (zs_size)(next() % (uint64_t)n) * words * 8, (size_t)words * 8);
            uint8_t *qb = (uint8_t *)(q + i * words);
            for (int f = 0; f < 1 + nbytes / 3; f++) qb[next() % (uint64_t)nbytes] ^= (uint8_t)next();
        }
        uint8_t *mask = NULL;
        if (nbytes % 2) {
            mask = malloc((size_t)n);
            for (zs_size r = 0; r < n; r++) mask[r] = next() % 5 != 0;
        }
        int ks[3] = {1, 5, (int)n};
        for (int ki = 0; ki < 3; ki++) {
            int k = ks[ki];
            pair_t *want = calloc((size_t)(nq * k), sizeof(pair_t)), *got = calloc((size_t)(nq * k), sizeof(pair_t));
            int32_t *cw = calloc((size_t)nq, sizeof(int32_t)), *cg = calloc((size_t)nq, sizeof(int32_t));
            run(zs_scan_generic, q, nq, blocked, n, cut, words, mask, k, want, cw);
            /* the reference itself against a direct count */
            for (zs_size i = 0; i < nq; i++)
                for (int j = 0; j < cw[i]; j++) {
                    int64_t r = want[i * k + j].i;
                    int32_t d = 0;
                    for (int b = 0; b < words * 8; b++)
                        d += __builtin_popcount(rows[r * words * 8 + b] ^ ((uint8_t *)(q + i * words))[b]);
                    if (d != want[i * k + j].d || r >= n || (mask && !mask[r])) {
                        fprintf(stderr, "generic: bad row %lld at %d bytes\n", (long long)r, nbytes);
                        failures++;
                    }
                }
            for (int ix = 0; ix < zs_kernel_count(); ix++) {
                const zs_kernel *kern = zs_kernel_at(ix);
                if (!zs_kernel_supported(kern) || kern->fn == zs_scan_generic) continue;
                run(kern->fn, q, nq, blocked, n, cut, words, mask, k, got, cg);
                checked++;
                for (zs_size i = 0; i < nq; i++) {
                    int same = cw[i] == cg[i] && memcmp(want + i * k, got + i * k, sizeof(pair_t) * (size_t)cw[i]) == 0;
                    if (!same) {
                        fprintf(stderr, "%s differs from generic: %d bytes, n=%lld, k=%d, query %lld\n", kern->name,
                                nbytes, (long long)n, k, (long long)i);
                        failures++;
                    }
                }
            }
            cases++;
            free(want); free(got); free(cw); free(cg);
        }
        free(rows); free(blocked); free(q); free(mask);
    }
    printf("kernels:");
    for (int ix = 0; ix < zs_kernel_count(); ix++)
        if (zs_kernel_supported(zs_kernel_at(ix))) printf(" %s", zs_kernel_at(ix)->name);
    printf("\n%d cases, %d kernel runs compared, %d failures\n", cases, checked, failures);
    return failures ? 1 : 0;
}
