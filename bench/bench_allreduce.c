/* All-reduce bandwidth of the path training takes (cm_dist_allreduce_f32, an in-place float sum), for buffer
 * sizes up to a model's gradient. Run it under mpirun, e.g. mpirun -np 2 build/bench/bench_allreduce 1 16 64,
 * and with --mca btl tcp,self --mca btl_tcp_if_include lo for TCP as between hosts. Prints per size the median
 * time, the algorithm bandwidth (bytes / time) and the bus bandwidth (x 2(R-1)/R, what each rank's link
 * carries in a ring all-reduce: comparable across rank counts, as nccl-tests reports it), and the latency of a
 * 1-float all-reduce. Usage: bench_allreduce [MB ...] (default 1 4 16 64). Prints figures; not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/dist.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds of `reps` all-reduces of n floats (after one warm-up), the same on every rank (rank 0's). */
static double median_allreduce(cm_dist *d, float *buf, size_t n, int reps) {
    double *t = malloc((size_t)reps * sizeof *t);
    cm_dist_allreduce_f32(d, buf, n);
    for (int i = 0; i < reps; i++) {
        double one = 1;
        cm_dist_allreduce_f64(d, &one, 1); /* line the ranks up */
        double t0 = now();
        cm_dist_allreduce_f32(d, buf, n);
        t[i] = now() - t0;
    }
    cm_dist_bcast(d, t, (size_t)reps * sizeof *t, 0);
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double m = t[reps / 2];
    free(t);
    return m;
}

int main(int argc, char **argv) {
    cm_dist *d;
    if (cm_dist_open(&d) != CM_OK) {
        fprintf(stderr, "bench_allreduce: %s\n", cm_last_error());
        return 1;
    }
    int R = cm_dist_size(d), rank = cm_dist_rank(d);
    if (R < 2) {
        if (rank == 0) fprintf(stderr, "bench_allreduce: run it under mpirun with 2 or more ranks\n");
        return cm_dist_close(d, 1);
    }
    double sizes_mb[16] = {1, 4, 16, 64};
    int n_sizes = 4;
    if (argc > 1) {
        n_sizes = 0;
        for (int i = 1; i < argc && n_sizes < 16; i++) sizes_mb[n_sizes++] = atof(argv[i]);
    }
    float one = 0;
    double lat = 0;
    {
        double t[64];
        for (int i = 0; i < 64; i++) {
            double t0 = now();
            cm_dist_allreduce_f32(d, &one, 1);
            t[i] = now() - t0;
        }
        qsort(t, 64, sizeof *t, cmp_double);
        lat = t[32];
    }
    if (rank == 0)
        printf("%d ranks on %s; 1-float all-reduce latency %.1f us\n%10s %12s %12s %12s\n", R, cm_dist_host(d),
               lat * 1e6, "MB", "median ms", "algbw GB/s", "busbw GB/s");
    for (int k = 0; k < n_sizes; k++) {
        size_t n = (size_t)(sizes_mb[k] * 1e6 / sizeof(float));
        float *buf = malloc((n ? n : 1) * sizeof *buf);
        for (size_t i = 0; i < n; i++) buf[i] = 1e-3f * (float)(i % 1000);
        int reps = sizes_mb[k] <= 16 ? 11 : 5;
        double t = median_allreduce(d, buf, n, reps);
        double bytes = (double)n * sizeof(float), alg = bytes / t / 1e9;
        if (rank == 0)
            printf("%10.1f %12.2f %12.3f %12.3f\n", bytes / 1e6, t * 1e3, alg, alg * 2.0 * (R - 1) / R);
        free(buf);
    }
    return cm_dist_close(d, 0);
}
