/* Evaluation building blocks: the RFC 4180 CSV reader (and every MMLU CSV in ../shared), the MMLU prompt
 * against hand-written golden bytes (FACTS 9.1), calibration metrics, SHA-256 and the SQLite store. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/eval.h"
#include "camelid/eval_csv.h"
#include "camelid/eval_metrics.h"
#include "camelid/eval_store.h"
#include "check.h"

static void test_csv(void) {
    cm_csv *c;
    const char *t = "a,\"b,c\",\"d\"\"e\"\r\n\n\"multi\nline\",,x\rlast,\"\"";
    CHECK_OK(cm_csv_parse(t, strlen(t), "t.csv", &c));
    CHECK(c && c->n_rows == 3);
    if (c && c->n_rows == 3) {
        CHECK(c->rows[0].n_fields == 3 && !strcmp(c->rows[0].fields[1], "b,c") &&
              !strcmp(c->rows[0].fields[2], "d\"e"));
        CHECK(c->rows[1].line == 3 && c->rows[1].n_fields == 3 &&
              !strcmp(c->rows[1].fields[0], "multi\nline") && c->rows[1].lens[1] == 0 &&
              !strcmp(c->rows[1].fields[2], "x"));
        CHECK(c->rows[2].line == 5 && c->rows[2].n_fields == 2 && c->rows[2].lens[1] == 0);
    }
    cm_csv_free(c);
    /* a quote inside an unquoted field is a character */
    CHECK_OK(cm_csv_parse("ab\"c,d", 6, "t.csv", &c));
    CHECK(c && !strcmp(c->rows[0].fields[0], "ab\"c"));
    cm_csv_free(c);
    CHECK_FAIL(cm_csv_parse("a,b\nc,\"open\nstill", 17, "bad.csv", &c),
               "bad.csv:2: unterminated quoted field");
    CHECK_FAIL(cm_csv_parse("a,\"b\"x\n", 7, "bad.csv", &c),
               "bad.csv:1: unexpected character after a closing quote");
    CHECK_FAIL(cm_csv_parse("a\nb\0c", 5, "bad.csv", &c), "bad.csv:2: NUL byte");
    CHECK_OK(cm_csv_parse("", 0, "empty.csv", &c));
    CHECK(c && c->n_rows == 0);
    cm_csv_free(c);
}

static void test_shared_mmlu(void) {
    struct {
        const char *file;
        size_t rows;
    } files[] = {{"mmlu/test/abstract_algebra_test.csv", 100},
                 {"mmlu/test/college_physics_test.csv", 102},
                 {"mmlu/test/high_school_geography_test.csv", 198},
                 {"mmlu/dev/high_school_us_history_dev.csv", 5},
                 {"mmlu/hendrycks_git_785eba5/test/high_school_geography_test.csv", 202}};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        cm_csv *c = NULL;
        CHECK_OK(cm_csv_read(cm_test_shared(files[i].file), &c));
        if (!c) continue;
        CHECK(c->n_rows == files[i].rows);
        for (size_t r = 0; r < c->n_rows; r++) CHECK(c->rows[r].n_fields == 6 && c->rows[r].lens[5] == 1);
        cm_csv_free(c);
    }
}

static void check_golden(const char *got, const char *golden) {
    char *want;
    size_t n;
    CHECK_OK(cm_read_file(cm_test_data(golden), 1 << 20, &want, &n));
    if (!want) return;
    CHECK(strlen(got) == n && memcmp(got, want, n) == 0);
    if (strlen(got) != n || memcmp(got, want, n) != 0)
        fprintf(stderr, "got:\n[%s]\nwant:\n[%s]\n", got, want);
    free(want);
}

static void test_mmlu_prompt(void) {
    cm_csv *dev = NULL, *test = NULL;
    CHECK_OK(cm_csv_read(cm_test_data("eval/mmlu/dev/tiny_subject_dev.csv"), &dev));
    CHECK_OK(cm_csv_read(cm_test_data("eval/mmlu/test/tiny_subject_test.csv"), &test));
    if (!dev || !test) return;
    CHECK(test->n_rows == 2 && test->rows[1].line == 4);
    char *p;
    CHECK_OK(cm_eval_mmlu_prompt("tiny_subject", dev, 2, &test->rows[0], &p));
    check_golden(p, "eval/mmlu_prompt_2shot.txt");
    free(p);
    CHECK_OK(cm_eval_mmlu_prompt("tiny_subject", dev, 0, &test->rows[1], &p));
    check_golden(p, "eval/mmlu_prompt_0shot.txt");
    free(p);
    cm_csv_free(dev);
    cm_csv_free(test);
}

static void test_metrics(void) {
    double x[] = {1, 0, 1, 1};
    CHECK_NEAR(cm_metric_mean(x, 4), 0.75, 1e-12);
    CHECK_NEAR(cm_metric_stderr(x, 4), sqrt(0.25) / 2, 1e-12); /* sample sd 0.5, / sqrt(4) */
    CHECK(isnan(cm_metric_stderr(x, 1)));
    double ll[] = {log(0.7), log(0.2), log(0.1)}, p[3];
    cm_metric_softmax(ll, 3, p);
    CHECK_NEAR(p[0], 0.7, 1e-12);
    cm_calibration c = {0};
    cm_calibration_add(&c, p, 3, 0, 0); /* conf .7, right: bin 7 */
    double q[] = {0.95, 0.05};
    cm_calibration_add(&c, q, 2, 0, 1); /* conf .95, wrong: bin 9 */
    /* ECE = (|1 - .7| + |0 - .95|) / 2 */
    CHECK_NEAR(cm_calibration_ece(&c), (0.3 + 0.95) / 2, 1e-12);
    /* Brier = ((.3^2 + .2^2 + .1^2) + (.95^2 + .95^2)) / 2 */
    CHECK_NEAR(cm_calibration_brier(&c), (0.09 + 0.04 + 0.01 + 2 * 0.9025) / 2, 1e-12);
    cm_calibration e = {0};
    CHECK(isnan(cm_calibration_ece(&e)));
}

static void test_sha256(void) {
    char h[65];
    cm_sha256_buffer("abc", 3, h);
    CHECK(!strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    cm_sha256_buffer("", 0, h);
    CHECK(!strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    cm_sha256_buffer(m, strlen(m), h);
    CHECK(!strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
}

static void test_store(void) {
    char *dir = cm_test_tmpdir(), db[4200];
    snprintf(db, sizeof db, "%s/s.db", dir);
    const char *doc =
        "{\"results\": {\"mmlu\": {\"alias\": \"mmlu\", \"acc\": 0.5, \"acc_stderr\": 0.1, \"ece\": null,"
        " \"truncated\": 3}}, \"n-samples\": {\"mmlu\": {\"original\": 10, \"effective\": 4}},"
        " \"model_name\": \"m<1>.bin\", \"model_sha256\": \"abcdef0123456789\", \"seed\": 7,"
        " \"date\": 0, \"camelid\": {\"status\": \"complete\"}}";
    int64_t id1 = 0, id2 = 0;
    CHECK_OK(cm_eval_store_save(db, doc, &id1));
    CHECK_OK(cm_eval_store_save(db, doc, &id2));
    CHECK(id1 == 1 && id2 == 2);
    char *text = NULL, *html = NULL;
    CHECK_OK(cm_eval_report_text(db, &text));
    CHECK(text && strstr(text, "mmlu") && strstr(text, "0.5000") && strstr(text, "#2"));
    CHECK(text && !strstr(text, "truncated"));
    CHECK_OK(cm_eval_report_html(db, &html));
    CHECK(html && strstr(html, "<svg") && strstr(html, "m&lt;1&gt;.bin") && strstr(html, "<rect"));
    free(text);
    free(html);
    CHECK_FAIL(cm_eval_report_text("/nonexistent/x.db", &text), "no such store");
    CHECK_FAIL(cm_eval_store_save(db, "{not json", &id1), "results JSON:1");
    remove(db);
    remove(dir);
    free(dir);
}

int main(void) {
    test_csv();
    test_shared_mmlu();
    test_mmlu_prompt();
    test_metrics();
    test_sha256();
    test_store();
    CHECK_DONE();
}
