/* Which scan kernels this build has, which this CPU runs (cpuid on x86; every ARMv8-A CPU has
 * NEON), and the default: the first supported in preference order. */
#include "scan.h"

static const zs_kernel KERNELS[] = {
#ifdef ZS_X86
    {"avx512", zs_scan_avx512},
    {"avx2", zs_scan_avx2},
    {"popcnt", zs_scan_popcnt},
#endif
#ifdef ZS_NEON
    {"neon", zs_scan_neon},
#endif
    {"generic", zs_scan_generic},
};

int zs_kernel_count(void) { return (int)(sizeof(KERNELS) / sizeof(KERNELS[0])); }

const zs_kernel *zs_kernel_at(int i) { return i >= 0 && i < zs_kernel_count() ? &KERNELS[i] : NULL; }

int zs_kernel_supported(const zs_kernel *k) {
#ifdef ZS_X86
    __builtin_cpu_init();
    if (k->fn == zs_scan_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vpopcntdq") &&
               __builtin_cpu_supports("popcnt");
    if (k->fn == zs_scan_avx2) return __builtin_cpu_supports("avx2");
    if (k->fn == zs_scan_popcnt) return __builtin_cpu_supports("popcnt");
#endif
    return k != NULL;
}

const zs_kernel *zs_kernel_find(const char *name) {
    for (int i = 0; i < zs_kernel_count(); i++)
        if (strcmp(KERNELS[i].name, name) == 0) return &KERNELS[i];
    return NULL;
}

const zs_kernel *zs_kernel_best(void) {
    for (int i = 0; i < zs_kernel_count(); i++)
        if (zs_kernel_supported(&KERNELS[i])) return &KERNELS[i];
    return &KERNELS[zs_kernel_count() - 1];
}
