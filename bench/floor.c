/* The memory-bandwidth floor of a scan, for benchmarks only: read a buffer once as 64-bit words
 * (four independent sums, so the loads are the only limit). Built by bench/floor.py. */
#include <stddef.h>
#include <stdint.h>

uint64_t read_sum(const uint64_t *p, size_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}
