#include "camelid/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* ~tens of microseconds of polling before a thread sleeps */
#define SPIN_ITERATIONS 20000

/* A job is split into n parts (one per thread); any thread may run any part, each part exactly once. The
 * caller takes parts too, so a worker the OS has not scheduled yet (another process on the core) never holds
 * the job up: the caller runs its part instead, and waits only for parts already begun elsewhere. Results do
 * not depend on which thread ran a part. */

typedef struct worker {
    struct cm_pool *pool;
    pthread_t thread;
} worker;

struct cm_pool {
    int n;
    worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    /* job generation (high 32 bits) and the next part to hand out (low 32 bits), claimed by compare-and-swap
     */
    _Atomic uint64_t ticket;
    atomic_int done; /* parts finished in the current job */
    atomic_bool stop;
    cm_pool_fn fn;
    void *arg;
    int n_parts;
};

static uint32_t ticket_gen(uint64_t t) {
    return (uint32_t)(t >> 32);
}

/* Claim the next part of job `gen`, if that job is still the current one and has parts left. */
static bool claim(cm_pool *p, uint32_t gen, int *part) {
    uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
    for (;;) {
        if (ticket_gen(t) != gen || (int)(uint32_t)t >= p->n_parts) return false;
        if (atomic_compare_exchange_weak_explicit(&p->ticket, &t, t + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            *part = (int)(uint32_t)t;
            return true;
        }
    }
}

static void run_parts(cm_pool *p, uint32_t gen) {
    int part;
    while (claim(p, gen, &part)) {
        p->fn(p->arg, part, p->n_parts);
        if (atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1 == p->n_parts) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    cm_pool *p = w->pool;
    uint32_t seen = ticket_gen(atomic_load(&p->ticket));
    for (;;) {
        uint32_t gen = ticket_gen(atomic_load_explicit(&p->ticket, memory_order_acquire));
        for (int i = 0; i < SPIN_ITERATIONS && gen == seen && !atomic_load(&p->stop); i++) {
            cpu_relax();
            gen = ticket_gen(atomic_load_explicit(&p->ticket, memory_order_acquire));
        }
        if (gen == seen) {
            pthread_mutex_lock(&p->mu);
            while ((gen = ticket_gen(atomic_load(&p->ticket))) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->start_cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = gen;
        run_parts(p, gen);
    }
}

cm_status cm_pool_open(int n_threads, cm_pool **out) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    cm_pool *p = calloc(1, sizeof *p);
    if (!p) return cm_error(CM_ERR_NOMEM, "out of memory for the thread pool");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads, sizeof *p->workers);
        if (!p->workers) {
            cm_pool_close(p);
            return cm_error(CM_ERR_NOMEM, "out of memory for the thread pool");
        }
        for (int i = 1; i < n_threads; i++) {
            p->workers[i].pool = p;
            if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
                p->n = i; /* the ones started so far are joined by close */
                cm_pool_close(p);
                return cm_error(CM_ERR_IO, "cannot start thread %d of %d", i, n_threads);
            }
        }
    }
    *out = p;
    return CM_OK;
}

void cm_pool_close(cm_pool *p) {
    if (!p) return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, true);
        pthread_cond_broadcast(&p->start_cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n; i++) pthread_join(p->workers[i].thread, NULL);
        free(p->workers);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int cm_pool_size(const cm_pool *p) {
    return p ? p->n : 1;
}

void cm_pool_run(cm_pool *p, cm_pool_fn fn, void *arg) {
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    /* the previous job is complete (we waited for it), so nobody reads fn/arg/n_parts while they change */
    p->fn = fn;
    p->arg = arg;
    p->n_parts = p->n;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint32_t gen = ticket_gen(atomic_load(&p->ticket)) + 1;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->ticket, (uint64_t)gen << 32, memory_order_release);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    run_parts(p, gen);
    for (int i = 0; i < SPIN_ITERATIONS && atomic_load_explicit(&p->done, memory_order_acquire) < p->n_parts;
         i++)
        cpu_relax();
    if (atomic_load(&p->done) < p->n_parts) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->done) < p->n_parts) pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
