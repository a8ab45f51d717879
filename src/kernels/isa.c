#include "camelid/isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* CPU features never change while the process runs, so they are detected once; this and the forced path
 * are the only process-wide state in the kernels. */
static cm_cpu_features features;
static atomic_int detected = 0;
static atomic_int forced = -1;

const cm_cpu_features *cm_cpu_features_get(void) {
    if (!atomic_load(&detected)) {
        cm_cpu_features f;
        memset(&f, 0, sizeof f);
#if defined(__x86_64__) || defined(__i386__)
        unsigned a, b, c, d;
        if (__get_cpuid(1, &a, &b, &c, &d)) {
            bool osxsave = c & (1u << 27), avx = c & (1u << 28);
            unsigned long long xcr0 = 0;
            if (osxsave) {
                unsigned lo, hi;
                __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
                xcr0 = ((unsigned long long)hi << 32) | lo;
            }
            bool ymm = avx && (xcr0 & 0x6) == 0x6;    /* the OS saves SSE and AVX state */
            bool zmm = ymm && (xcr0 & 0xe0) == 0xe0; /* ... and the AVX-512 state */
            f.fma = ymm && (c & (1u << 12));
            f.f16c = ymm && (c & (1u << 29));
            if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
                f.avx2 = ymm && (b & (1u << 5));
                f.avx512f = zmm && (b & (1u << 16));
                f.avx512dq = zmm && (b & (1u << 17));
                f.avx512bw = zmm && (b & (1u << 30));
                f.avx512vl = zmm && (b & (1u << 31));
                f.avx512vnni = zmm && (c & (1u << 11));
            }
            if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
                f.avxvnni = ymm && (a & (1u << 4));
                f.avx512bf16 = zmm && (a & (1u << 5));
            }
        }
#endif
        features = f;
        atomic_store(&detected, 1);
    }
    return &features;
}

cm_isa cm_isa_best(void) {
    const cm_cpu_features *f = cm_cpu_features_get();
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->fma && f->f16c) return CM_ISA_AVX512;
    if (f->avx2 && f->fma && f->f16c) return CM_ISA_AVX2;
    return CM_ISA_SCALAR;
}

static int parse_isa(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "scalar")) return CM_ISA_SCALAR;
    if (!strcmp(s, "avx2")) return CM_ISA_AVX2;
    if (!strcmp(s, "avx512")) return CM_ISA_AVX512;
    return -1;
}

cm_isa cm_isa_active(void) {
    int want = atomic_load(&forced);
    if (want < 0) want = parse_isa(getenv("CAMELID_ISA"));
    cm_isa best = cm_isa_best();
    if (want < 0 || want > (int)best) return best;
    return (cm_isa)want;
}

void cm_isa_force(int isa) { atomic_store(&forced, isa < 0 ? -1 : isa); }

const char *cm_isa_name(cm_isa isa) {
    switch (isa) {
    case CM_ISA_SCALAR: return "scalar";
    case CM_ISA_AVX2: return "avx2";
    case CM_ISA_AVX512: return "avx512";
    }
    return "?";
}
