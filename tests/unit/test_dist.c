/* The one-rank half of src/train/dist.c, compiled here without MPI whatever the library was built with (this
 * file includes the source with CAMELID_HAVE_MPI undefined, and the test links no other copy of it): a process
 * started by a launcher as one of several ranks is refused with a message saying why; one rank, or no launcher,
 * is a group of one whose collectives are identities. Also the share arithmetic that ZeRO-1 and evaluation
 * split work with. (The MPI half is tested under mpirun by tests/cli/train_mpi.sh and eval_mpi.sh.) */
#undef CAMELID_HAVE_MPI
#include "train/dist.c"

#include "check.h"

static void clear_launcher(void) {
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("PMI_SIZE");
    unsetenv("PMIX_RANK");
}

static void test_refuses_several_ranks(void) {
    cm_dist *d = NULL;
    clear_launcher();
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    CHECK_FAIL(cm_dist_open(&d), "built without MPI");
    CHECK(d == NULL);
    CHECK(strstr(cm_last_error(), "mpirun") != NULL);
    clear_launcher();
    setenv("PMI_SIZE", "4", 1);
    CHECK_FAIL(cm_dist_open(&d), "built without MPI");
    clear_launcher();
    setenv("PMIX_RANK", "0", 1); /* a PMIx launcher: the size is unknown, so refuse too */
    CHECK_FAIL(cm_dist_open(&d), "built without MPI");
    clear_launcher();
    setenv("OMPI_COMM_WORLD_SIZE", "1", 1); /* mpirun -np 1 is one process */
    CHECK_OK(cm_dist_open(&d));
    CHECK(cm_dist_size(d) == 1 && cm_dist_rank(d) == 0);
    CHECK(cm_dist_close(d, 0) == 0);
    clear_launcher();
}

static void test_one_rank_group(void) {
    cm_dist *d = NULL;
    CHECK_OK(cm_dist_open(&d));
    CHECK(!cm_dist_mpi_built());
    CHECK(cm_dist_size(d) == 1 && cm_dist_rank(d) == 0);
    CHECK(cm_dist_size(NULL) == 1 && cm_dist_rank(NULL) == 0);
    float a[5] = {1, 2, 3, 4, 5}, b[5] = {0};
    size_t counts[1] = {5};
    CHECK_OK(cm_dist_allreduce_f32(d, a, 5));
    CHECK(a[0] == 1 && a[4] == 5);
    CHECK_OK(cm_dist_reduce_scatter_f32(d, a, b, counts));
    CHECK(memcmp(a, b, sizeof a) == 0);
    memset(b, 0, sizeof b);
    CHECK_OK(cm_dist_gather_f32(d, a, b, counts, 0));
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK_OK(cm_dist_allgather_f32(d, a, counts));
    char *all = NULL;
    size_t lens[1] = {0};
    CHECK_OK(cm_dist_gather_bytes(d, "abc", 3, 0, &all, lens));
    CHECK(all && lens[0] == 3 && memcmp(all, "abc", 3) == 0);
    free(all);
    /* agreement of one: the rank's own status and message */
    CHECK(cm_dist_agree(d, CM_OK) == CM_OK);
    cm_error(CM_ERR_IO, "disk gone");
    CHECK(cm_dist_agree(d, CM_ERR_IO) == CM_ERR_IO);
    CHECK(strcmp(cm_last_error(), "disk gone") == 0);
    CHECK(cm_dist_comm_seconds(d) == 0);
    CHECK(cm_dist_close(d, 3) == 3);
}

static void test_share(void) {
    /* shares tile [0, n) in rank order, sizes differ by at most one, the larger first */
    size_t ns[] = {0, 1, 7, 8, 100003};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
        for (int size = 1; size <= 5; size++) {
            size_t next = 0, lo = (size_t)-1, hi = 0;
            for (int r = 0; r < size; r++) {
                size_t b, e;
                cm_dist_share(ns[k], size, r, &b, &e);
                CHECK(b == next && e >= b);
                if (e - b < lo) lo = e - b;
                if (e - b > hi) hi = e - b;
                if (r > 0) {
                    size_t pb, pe;
                    cm_dist_share(ns[k], size, r - 1, &pb, &pe);
                    CHECK(pe - pb >= e - b);
                }
                next = e;
            }
            CHECK(next == ns[k] && hi - lo <= 1);
        }
}

int main(void) {
    test_refuses_several_ranks();
    test_one_rank_group();
    test_share();
    CHECK_DONE();
}
