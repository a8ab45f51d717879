/* Ranks of a distributed job (MPI): who this process is, the collectives the training loop and the evaluation
 * harness need, and how a failure on one rank becomes the same error on every rank instead of a hang.
 *
 * Every MPI call of camelid is in src/train/dist.c. A build without MPI (CMake -DCAMELID_MPI=OFF, or no
 * libopenmpi-dev) compiles the same API as a one-rank group, and refuses to start when mpirun or another PMI
 * launcher says the job has more than one rank. A process not started by a launcher never initializes MPI, so
 * the single-process paths are exactly what they were without it.
 *
 * Collectives must be called by every rank, in the same order, with the same sizes. Buffers of floats are
 * counted in floats (size_t); MPI counts are ints, so larger transfers are split (all-reduce) or refused with
 * a message (the per-rank blocks of reduce-scatter, all-gather, gather and scatter must each fit an int). */
#ifndef CAMELID_DIST_H
#define CAMELID_DIST_H

#include <stdbool.h>
#include <stddef.h>

#include "camelid/status.h"

typedef struct cm_dist cm_dist;

/* Join the job. Under a launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK in the environment) this
 * initializes MPI; otherwise *out is a one-rank group that never calls MPI. Fails in a build without MPI
 * started as one of several ranks. */
cm_status cm_dist_open(cm_dist **out);
/* Leave the job with the command's exit status: MPI_Finalize when every rank knows how it ends (success, or
 * an error that went through cm_dist_agree); when this rank fails alone (its error was never agreed, so the
 * others may be waiting in a collective) the job is aborted so that no rank hangs. Returns `status`. */
int cm_dist_close(cm_dist *d, int status);

/* This process's rank and the number of ranks (a NULL group is rank 0 of 1). */
int cm_dist_rank(const cm_dist *d);
int cm_dist_size(const cm_dist *d);
/* Whether this build has MPI. */
bool cm_dist_mpi_built(void);
/* The host name of this rank (for messages). */
const char *cm_dist_host(const cm_dist *d);

/* The collective error check: every rank passes its own status; if any failed, every rank returns the error
 * of the lowest failing rank (its message, prefixed "rank N: " when N > 0), else CM_OK. */
cm_status cm_dist_agree(cm_dist *d, cm_status mine);

/* In-place sums over the ranks. */
cm_status cm_dist_allreduce_f32(cm_dist *d, float *buf, size_t n);
cm_status cm_dist_allreduce_f64(cm_dist *d, double *buf, size_t n);
/* Sum `in` (sum of counts floats, the same on every rank) over the ranks and leave block `rank` of the sum,
 * counts[rank] floats, in `out`. */
cm_status cm_dist_reduce_scatter_f32(cm_dist *d, const float *in, float *out, const size_t *counts);
/* In place: block r of buf (counts[r] floats, blocks back to back) comes from rank r, on every rank. */
cm_status cm_dist_allgather_f32(cm_dist *d, float *buf, const size_t *counts);
/* Block r (counts[r] floats) from rank r's `mine` into `all` on `root` (all is ignored elsewhere). */
cm_status cm_dist_gather_f32(cm_dist *d, const float *mine, float *all, const size_t *counts, int root);
/* The reverse: block r of `all` on root into rank r's `mine`. */
cm_status cm_dist_scatter_f32(cm_dist *d, const float *all, float *mine, const size_t *counts, int root);
/* `bytes` bytes of buf from root to every rank. */
cm_status cm_dist_bcast(cm_dist *d, void *buf, size_t bytes, int root);
/* Every rank's bytes to root: *all (malloc'd, on root only; NULL elsewhere) holds rank 0's, then rank 1's...;
 * lens[r] their sizes (lens has size entries, filled on root). */
cm_status cm_dist_gather_bytes(cm_dist *d, const void *mine, size_t n, int root, char **all, size_t *lens);

/* Seconds spent inside collectives since the group was opened (waiting for slower ranks included). */
double cm_dist_comm_seconds(const cm_dist *d);

/* Contiguous shares of n items over size ranks, the first n % size one larger: [*begin, *end) for rank. */
void cm_dist_share(size_t n, int size, int rank, size_t *begin, size_t *end);

#endif
