/* A tiny test harness: CHECK records a failure and goes on; main returns the failure count via
 * CHECK_DONE(). Tests that need ../shared/data call cm_test_shared(), which fails loudly if it is missing. */
#ifndef CAMELID_CHECK_H
#define CAMELID_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/status.h"

static int check_failures = 0;

static inline int check_message_has(const char *needle) {
    return !needle || strstr(cm_last_error(), needle);
}

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                         \
            check_failures++;                                                                                \
        }                                                                                                    \
    } while (0)

#define CHECK_OK(expr)                                                                                       \
    do {                                                                                                     \
        cm_status check_st_ = (expr);                                                                        \
        if (check_st_ != CM_OK) {                                                                            \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, cm_last_error());           \
            check_failures++;                                                                                \
        }                                                                                                    \
    } while (0)

/* Expect failure with a message that mentions `needle`. */
#define CHECK_FAIL(expr, needle)                                                                             \
    do {                                                                                                     \
        cm_status check_st_ = (expr);                                                                        \
        if (check_st_ == CM_OK) {                                                                            \
            fprintf(stderr, "%s:%d: %s should have failed\n", __FILE__, __LINE__, #expr);                    \
            check_failures++;                                                                                \
        } else if (!check_message_has(needle)) {                                                             \
            fprintf(stderr, "%s:%d: %s: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, #expr,           \
                    cm_last_error(), (const char *)(needle));                                                \
            check_failures++;                                                                                \
        }                                                                                                    \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                                \
    do {                                                                                                     \
        double check_a_ = (a), check_b_ = (b);                                                               \
        if (!(fabs(check_a_ - check_b_) <= (tol))) {                                                         \
            fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g, differ by more than %g\n", __FILE__, __LINE__, #a, \
                    check_a_, #b, check_b_, (double)(tol));                                                  \
            check_failures++;                                                                                \
        }                                                                                                    \
    } while (0)

#define CHECK_DONE()                                                                                         \
    do {                                                                                                     \
        if (check_failures) fprintf(stderr, "%d check(s) failed\n", check_failures);                         \
        return check_failures ? 1 : 0;                                                                       \
    } while (0)

/* `root`/`middle``rel` in the next of a caller's 8 rotating buffers, root from the environment variable
 * `var` or else `fallback`. */
static inline char *cm_test_path_(char (*bufs)[4096], int *k, const char *var, const char *fallback,
                                  const char *middle, const char *rel) {
    const char *root = getenv(var);
    if (!root) root = fallback;
    char *b = bufs[(*k)++ & 7];
    snprintf(b, 4096, "%s/%s%s", root, middle, rel);
    return b;
}

/* Path under the shared data folder (static buffer rotation: up to 8 live results). Exits the test with a
 * clear message if the folder is missing. */
static inline const char *cm_test_shared(const char *rel) {
    static char bufs[8][4096];
    static int k = 0;
    const char *b = cm_test_path_(bufs, &k, "CAMELID_SHARED", "../shared", "data/", rel);
    FILE *f = fopen(b, "rb");
    if (!f) {
        fprintf(stderr, "missing shared test data: %s (set CAMELID_SHARED to the shared folder)\n", b);
        exit(1);
    }
    fclose(f);
    return b;
}

/* Path under tests/data (committed goldens; the same rotation as cm_test_shared, its own 8 buffers). */
static inline const char *cm_test_data(const char *rel) {
    static char bufs[8][4096];
    static int k = 0;
    return cm_test_path_(bufs, &k, "CAMELID_TESTDATA", "tests/data", "", rel);
}

/* A whole file of little-endian float32 values (a golden), malloc'd; exits the test if unreadable. */
static inline float *cm_test_read_f32(const char *path, size_t *n) {
    char *data;
    size_t size;
    if (cm_read_file(path, (size_t)1 << 26, &data, &size) != CM_OK) {
        fprintf(stderr, "%s\n", cm_last_error());
        exit(1);
    }
    *n = size / 4;
    return (float *)data;
}

/* Max |a - b| over n values; NaN counts as a failure (it propagates). */
static inline double cm_test_max_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;
    }
    return d;
}

static inline int cm_test_rmtree(const char *dir);

/* The folders cm_test_tmpdir made, removed when the test exits (unless CAMELID_KEEP_TMP is set, to look at
 * them after a failure). */
static char *cm_test_tmpdirs_[64];
static int cm_test_n_tmpdirs_ = 0;
static inline void cm_test_remove_tmpdirs_(void) {
    for (int i = 0; i < cm_test_n_tmpdirs_; i++) {
        if (!getenv("CAMELID_KEEP_TMP")) cm_test_rmtree(cm_test_tmpdirs_[i]);
        free(cm_test_tmpdirs_[i]);
    }
    cm_test_n_tmpdirs_ = 0;
}

/* A fresh temporary folder for this test (under $TMPDIR), heap string; it is removed at exit. */
static inline char *cm_test_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    if (!base) base = "/tmp";
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/camelid-test-XXXXXX", base);
    extern char *mkdtemp(char *);
    if (!mkdtemp(p)) {
        perror("mkdtemp");
        exit(1);
    }
    if (cm_test_n_tmpdirs_ == 0) atexit(cm_test_remove_tmpdirs_);
    if (cm_test_n_tmpdirs_ < (int)(sizeof cm_test_tmpdirs_ / sizeof *cm_test_tmpdirs_))
        cm_test_tmpdirs_[cm_test_n_tmpdirs_++] = strdup(p);
    return p;
}

/* Write `text` as dir/name (a test's fixture file); exits the test if it cannot. */
static inline void cm_test_write_file(const char *dir, const char *name, const char *text) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

/* Remove a test's temporary folder and everything in it; true when that worked. */
static inline int cm_test_rmtree(const char *dir) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0;
}

#endif
