/* Which SIMD paths this CPU runs. Kernels are compiled for every path with per-function target attributes
 * (the build never assumes the build machine's CPU) and pick one at run time. CAMELID_ISA=scalar|avx2|avx512
 * forces a path (never beyond what the CPU supports). */
#ifndef CAMELID_ISA_H
#define CAMELID_ISA_H

#include <stdbool.h>

typedef enum {
    CM_ISA_SCALAR = 0,
    CM_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    CM_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ */
} cm_isa;

typedef struct cm_cpu_features {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512dq;
    bool avx512vnni, avx512bf16, avxvnni;
} cm_cpu_features;

const cm_cpu_features *cm_cpu_features_get(void);
/* The best path the CPU supports. */
cm_isa cm_isa_best(void);
/* The path kernels use: cm_isa_force's, else CAMELID_ISA's, else the best; clamped to what the CPU has. */
cm_isa cm_isa_active(void);
/* Force a path (tests compare paths); pass -1 to go back to the default. */
void cm_isa_force(int isa);
const char *cm_isa_name(cm_isa isa);

#endif
