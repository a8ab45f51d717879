#include "camelid/isa.h"

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
        __builtin_cpu_init();
        f.avx2 = __builtin_cpu_supports("avx2");
        f.fma = __builtin_cpu_supports("fma");
        f.f16c = __builtin_cpu_supports("f16c");
        f.avx512f = __builtin_cpu_supports("avx512f");
        f.avx512bw = __builtin_cpu_supports("avx512bw");
        f.avx512vl = __builtin_cpu_supports("avx512vl");
        f.avx512dq = __builtin_cpu_supports("avx512dq");
        f.avx512vnni = __builtin_cpu_supports("avx512vnni");
#if defined(__clang__) || __GNUC__ >= 11
        f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
        f.avxvnni = __builtin_cpu_supports("avxvnni");
#endif
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
