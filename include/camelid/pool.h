/* A fixed pool of worker threads for data-parallel kernels: cm_pool_run calls fn(arg, i, n) once for each
 * part i of n (n = the pool's threads) and returns when all are done. Any thread may run any part (the caller
 * runs parts too, so a worker the OS is slow to schedule never stalls a job), never two threads the same part
 * at once: per-part scratch indexed by i is safe, and results must not depend on which thread ran a part.
 * Workers spin briefly between jobs (a decode step runs hundreds), then sleep, so an idle or oversubscribed
 * machine is not burned. */
#ifndef CAMELID_POOL_H
#define CAMELID_POOL_H

#include "camelid/status.h"

typedef struct cm_pool cm_pool;
typedef void (*cm_pool_fn)(void *arg, int thread, int n_threads);

cm_status cm_pool_open(int n_threads, cm_pool **out);
void cm_pool_close(cm_pool *p);
int cm_pool_size(const cm_pool *p); /* 1 for a NULL pool */
/* Run fn on every thread of the pool (just the caller when p is NULL or has one thread). */
void cm_pool_run(cm_pool *p, cm_pool_fn fn, void *arg);

/* Split [0, n) into `parts` near-equal ranges; range `i` is [*begin, *end). */
static inline void cm_split_range(int n, int parts, int i, int *begin, int *end) {
    int base = n / parts, extra = n % parts;
    *begin = i * base + (i < extra ? i : extra);
    *end = *begin + base + (i < extra ? 1 : 0);
}

#endif
