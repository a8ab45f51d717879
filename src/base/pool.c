#include "camelid/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* ~tens of microseconds of polling before a thread sleeps */
#define SPIN_ITERATIONS 20000

typedef struct worker {
    cm_pool *pool;
    int index;
    pthread_t thread;
} worker;

struct cm_pool {
    int n;
    worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    atomic_uint generation; /* bumped for every job */
    atomic_int pending;     /* workers still running the current job */
    atomic_bool stop;
    cm_pool_fn fn;
    void *arg;
};

static void *worker_main(void *p) {
    worker *w = p;
    cm_pool *pool = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        for (int i = 0; i < SPIN_ITERATIONS && gen == seen && !atomic_load(&pool->stop); i++) {
            cpu_relax();
            gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        }
        if (gen == seen) {
            pthread_mutex_lock(&pool->mu);
            while ((gen = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->start_cv, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->stop)) return NULL;
        seen = gen;
        pool->fn(pool->arg, w->index, pool->n);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->done_cv);
            pthread_mutex_unlock(&pool->mu);
        }
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
            p->workers[i] = (worker){p, i, 0};
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
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    for (int i = 0; i < SPIN_ITERATIONS && atomic_load_explicit(&p->pending, memory_order_acquire) > 0; i++)
        cpu_relax();
    if (atomic_load(&p->pending) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
