/* Ranks of a distributed job (see include/camelid/dist.h). Every MPI call of camelid is here; a build without
 * MPI compiles the one-rank half of each function. */
#include "camelid/dist.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "train/train_internal.h"

#ifdef CAMELID_HAVE_MPI
#include <mpi.h>
#endif

struct cm_dist {
    int rank, size;
    bool mpi;              /* MPI_Init was called: collectives go to MPI */
    bool failed_together;  /* an error went through cm_dist_agree: every rank knows */
    double comm_s;
    char host[256];
};

/* The job size a launcher announces (0 when none does). OpenMPI's mpirun sets OMPI_COMM_WORLD_SIZE, MPICH's
 * hydra and Slurm's PMI set PMI_SIZE; a PMIx launcher sets PMIX_RANK (size unknown here: -1). */
static int launcher_size(void) {
    const char *names[2] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return atoi(v) > 0 ? atoi(v) : 1;
    }
    return getenv("PMIX_RANK") ? -1 : 0;
}

bool cm_dist_mpi_built(void) {
#ifdef CAMELID_HAVE_MPI
    return true;
#else
    return false;
#endif
}

cm_status cm_dist_open(cm_dist **out) {
    *out = NULL;
    cm_dist *d = calloc(1, sizeof *d);
    if (!d) return cm_error(CM_ERR_NOMEM, "out of memory");
    d->size = 1;
    if (gethostname(d->host, sizeof d->host - 1) != 0) snprintf(d->host, sizeof d->host, "?");
    int announced = launcher_size();
#ifdef CAMELID_HAVE_MPI
    if (announced != 0) {
        int provided = 0;
        /* only the main thread calls MPI; the thread pool never does */
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            free(d);
            return cm_error(CM_ERR_IO, "MPI_Init failed (started by mpirun with %d ranks)", announced);
        }
        d->mpi = true;
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    }
#else
    if (announced > 1 || announced < 0) {
        free(d);
        return cm_error(CM_ERR_UNSUPPORTED,
                        "this camelid was built without MPI, so it cannot run as one of %s ranks under mpirun: "
                        "install libopenmpi-dev and rebuild (make, or cmake -DCAMELID_MPI=ON), or run one process",
                        announced > 1 ? "several" : "the");
    }
#endif
    *out = d;
    return CM_OK;
}

int cm_dist_close(cm_dist *d, int status) {
    if (!d) return status;
#ifdef CAMELID_HAVE_MPI
    if (d->mpi) {
        fflush(stdout);
        fflush(stderr);
        /* This rank failed and the others cannot know (they may wait in a collective for it): end the job. */
        if (status != 0 && d->size > 1 && !d->failed_together) MPI_Abort(MPI_COMM_WORLD, status);
        MPI_Finalize();
    }
#endif
    free(d);
    return status;
}

int cm_dist_rank(const cm_dist *d) {
    return d ? d->rank : 0;
}

int cm_dist_size(const cm_dist *d) {
    return d ? d->size : 1;
}

const char *cm_dist_host(const cm_dist *d) {
    return d ? d->host : "localhost";
}

double cm_dist_comm_seconds(const cm_dist *d) {
    return d ? d->comm_s : 0;
}

void cm_dist_share(size_t n, int size, int rank, size_t *begin, size_t *end) {
    size_t q = n / (size_t)size, r = n % (size_t)size, k = (size_t)rank;
    *begin = k * q + (k < r ? k : r);
    *end = *begin + q + (k < r ? 1 : 0);
}

#ifdef CAMELID_HAVE_MPI
static bool active(const cm_dist *d) {
    return d && d->mpi && d->size > 1;
}

/* counts[] as MPI ints with displacements, or an error naming what does not fit. */
static cm_status int_counts(const cm_dist *d, const size_t *counts, const char *what, int **cnt, int **disp) {
    *cnt = malloc((size_t)d->size * sizeof(int));
    *disp = malloc((size_t)d->size * sizeof(int));
    if (!*cnt || !*disp) {
        free(*cnt), free(*disp);
        *cnt = *disp = NULL;
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    size_t off = 0;
    for (int r = 0; r < d->size; r++) {
        if (counts[r] > INT_MAX || off > INT_MAX) {
            free(*cnt), free(*disp);
            *cnt = *disp = NULL;
            return cm_error(CM_ERR_UNSUPPORTED, "%s: %zu floats per rank are more than MPI's int counts allow; use more ranks",
                            what, counts[r]);
        }
        (*cnt)[r] = (int)counts[r];
        (*disp)[r] = (int)off;
        off += counts[r];
    }
    return CM_OK;
}
#endif

cm_status cm_dist_agree(cm_dist *d, cm_status mine) {
#ifdef CAMELID_HAVE_MPI
    if (!active(d)) return mine;
    double t0 = cm_train_now_s();
    int first = mine != CM_OK ? d->rank : d->size;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == d->size) {
        d->comm_s += cm_train_now_s() - t0;
        return CM_OK;
    }
    char msg[2048];
    int hdr[2] = {(int)mine, 0};
    if (d->rank == first) {
        snprintf(msg, sizeof msg, "%s", cm_last_error());
        hdr[1] = (int)strlen(msg) + 1;
    }
    MPI_Bcast(hdr, 2, MPI_INT, first, MPI_COMM_WORLD);
    MPI_Bcast(msg, hdr[1], MPI_CHAR, first, MPI_COMM_WORLD);
    d->comm_s += cm_train_now_s() - t0;
    d->failed_together = true;
    cm_status code = hdr[0] > 0 ? (cm_status)hdr[0] : CM_ERR_IO;
    if (first == 0) return d->rank == 0 ? mine : cm_error(code, "%s", msg);
    return cm_error(code, "rank %d: %s", first, msg);
#else
    (void)d;
    return mine;
#endif
}

cm_status cm_dist_allreduce_f32(cm_dist *d, float *buf, size_t n) {
#ifdef CAMELID_HAVE_MPI
    if (!active(d)) return CM_OK;
    double t0 = cm_train_now_s();
    for (size_t off = 0; off < n; off += (size_t)INT_MAX / 2) {
        size_t k = n - off < (size_t)INT_MAX / 2 ? n - off : (size_t)INT_MAX / 2;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    d->comm_s += cm_train_now_s() - t0;
#else
    (void)d, (void)buf, (void)n;
#endif
    return CM_OK;
}

cm_status cm_dist_allreduce_f64(cm_dist *d, double *buf, size_t n) {
#ifdef CAMELID_HAVE_MPI
    if (!active(d)) return CM_OK;
    if (n > INT_MAX) return cm_error(CM_ERR_UNSUPPORTED, "all-reduce of %zu doubles", n);
    double t0 = cm_train_now_s();
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    d->comm_s += cm_train_now_s() - t0;
#else
    (void)d, (void)buf, (void)n;
#endif
    return CM_OK;
}

cm_status cm_dist_reduce_scatter_f32(cm_dist *d, const float *in, float *out, const size_t *counts) {
#ifdef CAMELID_HAVE_MPI
    if (active(d)) {
        int *cnt, *disp;
        CM_TRY(int_counts(d, counts, "reduce-scatter", &cnt, &disp));
        double t0 = cm_train_now_s();
        MPI_Reduce_scatter(in, out, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        d->comm_s += cm_train_now_s() - t0;
        free(cnt), free(disp);
        return CM_OK;
    }
#endif
    if (out != in) memmove(out, in, counts[0] * sizeof(float));
    return CM_OK;
}

cm_status cm_dist_allgather_f32(cm_dist *d, float *buf, const size_t *counts) {
#ifdef CAMELID_HAVE_MPI
    if (active(d)) {
        int *cnt, *disp;
        CM_TRY(int_counts(d, counts, "all-gather", &cnt, &disp));
        double t0 = cm_train_now_s();
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, cnt, disp, MPI_FLOAT, MPI_COMM_WORLD);
        d->comm_s += cm_train_now_s() - t0;
        free(cnt), free(disp);
    }
#else
    (void)d, (void)buf, (void)counts;
#endif
    return CM_OK;
}

cm_status cm_dist_gather_f32(cm_dist *d, const float *mine, float *all, const size_t *counts, int root) {
#ifdef CAMELID_HAVE_MPI
    if (active(d)) {
        int *cnt, *disp;
        CM_TRY(int_counts(d, counts, "gather", &cnt, &disp));
        double t0 = cm_train_now_s();
        MPI_Gatherv(mine, cnt[d->rank], MPI_FLOAT, all, cnt, disp, MPI_FLOAT, root, MPI_COMM_WORLD);
        d->comm_s += cm_train_now_s() - t0;
        free(cnt), free(disp);
        return CM_OK;
    }
#endif
    (void)root;
    if (all != mine) memmove(all, mine, counts[0] * sizeof(float));
    return CM_OK;
}

cm_status cm_dist_scatter_f32(cm_dist *d, const float *all, float *mine, const size_t *counts, int root) {
#ifdef CAMELID_HAVE_MPI
    if (active(d)) {
        int *cnt, *disp;
        CM_TRY(int_counts(d, counts, "scatter", &cnt, &disp));
        double t0 = cm_train_now_s();
        MPI_Scatterv(all, cnt, disp, MPI_FLOAT, mine, cnt[d->rank], MPI_FLOAT, root, MPI_COMM_WORLD);
        d->comm_s += cm_train_now_s() - t0;
        free(cnt), free(disp);
        return CM_OK;
    }
#endif
    (void)root;
    if (all != mine) memmove(mine, all, counts[0] * sizeof(float));
    return CM_OK;
}

cm_status cm_dist_bcast(cm_dist *d, void *buf, size_t bytes, int root) {
#ifdef CAMELID_HAVE_MPI
    if (!active(d)) return CM_OK;
    double t0 = cm_train_now_s();
    for (size_t off = 0; off < bytes; off += (size_t)INT_MAX) {
        size_t k = bytes - off < (size_t)INT_MAX ? bytes - off : (size_t)INT_MAX;
        MPI_Bcast((char *)buf + off, (int)k, MPI_BYTE, root, MPI_COMM_WORLD);
    }
    d->comm_s += cm_train_now_s() - t0;
#else
    (void)d, (void)buf, (void)bytes, (void)root;
#endif
    return CM_OK;
}

cm_status cm_dist_gather_bytes(cm_dist *d, const void *mine, size_t n, int root, char **all, size_t *lens) {
    *all = NULL;
#ifdef CAMELID_HAVE_MPI
    if (active(d)) {
        double t0 = cm_train_now_s();
        uint64_t mine_n = n, *ns = d->rank == root ? malloc((size_t)d->size * sizeof *ns) : NULL;
        int *cnt = d->rank == root ? malloc((size_t)d->size * sizeof(int)) : NULL;
        int *disp = d->rank == root ? malloc((size_t)d->size * sizeof(int)) : NULL;
        int ok = d->rank != root || (ns && cnt && disp);
        MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (!ok) {
            free(ns), free(cnt), free(disp);
            return cm_error(CM_ERR_NOMEM, "out of memory");
        }
        MPI_Gather(&mine_n, 1, MPI_UINT64_T, ns, 1, MPI_UINT64_T, root, MPI_COMM_WORLD);
        uint64_t total = 0;
        if (d->rank == root) {
            for (int r = 0; r < d->size; r++) {
                lens[r] = (size_t)ns[r];
                disp[r] = (int)(total < INT_MAX ? total : INT_MAX);
                cnt[r] = (int)(ns[r] < INT_MAX ? ns[r] : INT_MAX);
                total += ns[r];
            }
            ok = total <= INT_MAX && (*all = malloc(total ? total : 1)) != NULL;
        }
        /* every rank learns whether root can take it, so that none waits in a gather root refused */
        MPI_Bcast(&ok, 1, MPI_INT, root, MPI_COMM_WORLD);
        if (ok) MPI_Gatherv(mine, (int)n, MPI_BYTE, *all, cnt, disp, MPI_BYTE, root, MPI_COMM_WORLD);
        free(ns), free(cnt), free(disp);
        d->comm_s += cm_train_now_s() - t0;
        if (!ok) {
            free(*all);
            *all = NULL;
            return cm_error(CM_ERR_NOMEM, "gathering %llu bytes of results on rank %d failed (more than 2 GiB, or out "
                            "of memory)", (unsigned long long)total, root);
        }
        return CM_OK;
    }
#endif
    (void)d, (void)root;
    *all = malloc(n ? n : 1);
    if (!*all) return cm_error(CM_ERR_NOMEM, "out of memory");
    if (n) memcpy(*all, mine, n);
    lens[0] = n;
    return CM_OK;
}
