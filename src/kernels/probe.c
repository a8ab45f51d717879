#include "camelid/probe.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/isa.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define CM_X86 1
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    const float *data;
    size_t n;
    float sums[64];
} read_job;

static float sum_scalar(const float *p, size_t n) {
    float a[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += p[i + k];
    for (; i < n; i++) a[0] += p[i];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

#ifdef CM_X86
__attribute__((target("avx2,fma"))) static float sum_avx2(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    return sum_scalar(t, 8) + sum_scalar(p + i, n - i);
}

__attribute__((target("avx512f"))) static float sum_avx512(const float *p, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))) +
           sum_scalar(p + i, n - i);
}
#endif

static void read_worker(void *arg, int thread, int n_threads) {
    read_job *j = arg;
    size_t per = j->n / (size_t)n_threads, begin = per * (size_t)thread;
    size_t count = thread == n_threads - 1 ? j->n - begin : per;
    const float *p = j->data + begin;
    float s;
#ifdef CM_X86
    cm_isa isa = cm_isa_active();
    if (isa == CM_ISA_AVX512) s = sum_avx512(p, count);
    else if (isa == CM_ISA_AVX2) s = sum_avx2(p, count);
    else s = sum_scalar(p, count);
#else
    s = sum_scalar(p, count);
#endif
    if (thread < 64) j->sums[thread] = s;
}

double cm_probe_read_bandwidth(cm_pool *pool, size_t bytes) {
    size_t n = bytes / sizeof(float);
    float *data = malloc(n * sizeof(float));
    if (!data) return 0.0;
    for (size_t i = 0; i < n; i++) data[i] = (float)(i & 1023);
    read_job job = {data, n, {0}};
    double best = 1e30;
    for (int pass = 0; pass < 4; pass++) {
        double t0 = now();
        cm_pool_run(pool, read_worker, &job);
        double dt = now() - t0;
        if (pass > 0 && dt < best) best = dt; /* the first pass warms the page tables */
    }
    volatile float sink = job.sums[0];
    (void)sink;
    free(data);
    return (double)(n * sizeof(float)) / best / 1e9;
}

typedef struct {
    long iters;
    double flops[64];
    float out[64];
} fma_job;

#define FMA_ACC 12

static void fma_scalar(fma_job *j, int thread) {
    float a[FMA_ACC], x = 1.0000001f, y = 0.9999999f;
    for (int k = 0; k < FMA_ACC; k++) a[k] = (float)k;
    for (long i = 0; i < j->iters; i++)
        for (int k = 0; k < FMA_ACC; k++) a[k] = a[k] * x + y;
    float s = 0;
    for (int k = 0; k < FMA_ACC; k++) s += a[k];
    j->out[thread] = s;
    j->flops[thread] = 2.0 * FMA_ACC * (double)j->iters;
}

#ifdef CM_X86
__attribute__((target("avx2,fma"))) static void fma_avx2(fma_job *j, int thread) {
    __m256 a[FMA_ACC], x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
    for (int k = 0; k < FMA_ACC; k++) a[k] = _mm256_set1_ps((float)k);
    for (long i = 0; i < j->iters; i++)
        for (int k = 0; k < FMA_ACC; k++) a[k] = _mm256_fmadd_ps(a[k], x, y);
    __m256 s = a[0];
    for (int k = 1; k < FMA_ACC; k++) s = _mm256_add_ps(s, a[k]);
    float t[8];
    _mm256_storeu_ps(t, s);
    j->out[thread] = t[0];
    j->flops[thread] = 2.0 * 8 * FMA_ACC * (double)j->iters;
}

__attribute__((target("avx512f"))) static void fma_avx512(fma_job *j, int thread) {
    __m512 a[FMA_ACC], x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
    for (int k = 0; k < FMA_ACC; k++) a[k] = _mm512_set1_ps((float)k);
    for (long i = 0; i < j->iters; i++)
        for (int k = 0; k < FMA_ACC; k++) a[k] = _mm512_fmadd_ps(a[k], x, y);
    __m512 s = a[0];
    for (int k = 1; k < FMA_ACC; k++) s = _mm512_add_ps(s, a[k]);
    j->out[thread] = _mm512_reduce_add_ps(s);
    j->flops[thread] = 2.0 * 16 * FMA_ACC * (double)j->iters;
}
#endif

static void fma_worker(void *arg, int thread, int n_threads) {
    (void)n_threads;
    fma_job *j = arg;
    if (thread >= 64) return;
#ifdef CM_X86
    cm_isa isa = cm_isa_active();
    if (isa == CM_ISA_AVX512) fma_avx512(j, thread);
    else if (isa == CM_ISA_AVX2) fma_avx2(j, thread);
    else fma_scalar(j, thread);
#else
    fma_scalar(j, thread);
#endif
}

double cm_probe_fma_peak(cm_pool *pool) {
    fma_job job;
    memset(&job, 0, sizeof job);
    job.iters = 20000000;
    double best = 0.0;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = now();
        cm_pool_run(pool, fma_worker, &job);
        double dt = now() - t0, flops = 0.0;
        for (int i = 0; i < cm_pool_size(pool) && i < 64; i++) flops += job.flops[i];
        if (flops / dt > best) best = flops / dt;
    }
    volatile float sink = job.out[0];
    (void)sink;
    return best / 1e9;
}
