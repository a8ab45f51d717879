/* LoRA adapters merged at inference: tests/data/lora-tiny (made by scripts/golden/lora_golden.py) holds PEFT
 * adapters for hf-tiny/gqa-f32 and torch's logits of base + adapter (computed unmerged, as PEFT runs it). The
 * merge must match them on the HF base and on a GGUF copy (interleaved RoPE: q/k lora_B rows permuted), keep
 * F16/BF16 weights in their dtype, and refuse malformed adapters with one-line messages, leaving the model
 * unchanged. */
#include <jansson.h>

#include "camelid/file.h"
#include "camelid/llama.h"
#include "camelid/lora.h"
#include "camelid/model.h"
#include "camelid/safetensors.h"
#include "check.h"

static const int32_t tokens[11] = {1, 17, 42, 5, 88, 23, 64, 9, 71, 30, 55};
#define N_TOK 11
#define VOCAB 96

static const char *base_dir(void) {
    return cm_test_data("hf-tiny/gqa-f32");
}

static const char *adapter_dir(const char *name) {
    static char buf[4][4096];
    static int k = 0;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", cm_test_data("lora-tiny"), name);
    return b;
}

static float *logits_of(const cm_model *m) {
    cm_state *s;
    float *out = calloc((size_t)N_TOK * VOCAB, sizeof *out);
    CHECK_OK(cm_state_open(m, 0, 8, 2, &s));
    if (s) CHECK_OK(cm_forward(m, s, tokens, N_TOK, 0, out, true));
    cm_state_close(s);
    return out;
}

/* max |logits(m + adapter) - torch golden| */
static double adapter_diff(cm_model *m, const char *adapter) {
    CHECK_OK(cm_model_merge_adapter(m, adapter_dir(adapter)));
    char path[4200];
    snprintf(path, sizeof path, "%s/logits.f32", adapter_dir(adapter));
    size_t n;
    float *ref = cm_test_read_f32(path, &n);
    CHECK(n == (size_t)N_TOK * VOCAB);
    float *got = logits_of(m);
    double d = cm_test_max_diff(got, ref, n);
    free(got);
    free(ref);
    return d;
}

static const char *const adapters[] = {"all-linear", "rslora-qv", "patterns-f16"};

static void test_hf_base(void) {
    for (size_t i = 0; i < 3; i++) {
        cm_model *m;
        CHECK_OK(cm_model_open(base_dir(), &m));
        if (!m) return;
        const void *wq = m->layers[0].wq.data, *wk = m->layers[0].wk.data;
        float first_q = ((const float *)wq)[0];
        double d = adapter_diff(m, adapters[i]);
        printf("hf-tiny/gqa-f32 + %s: max |logit - torch| = %.3g\n", adapters[i], d);
        CHECK(d <= 1e-4);
        CHECK(m->layers[0].wq.dtype == CM_DTYPE_F32);
        /* merged weights are new buffers; the mapped file is untouched; unadapted weights stay views */
        if (i == 0) CHECK(m->layers[0].wq.data != wq && m->layers[1].w_down.data != NULL);
        if (i == 1) CHECK(m->layers[0].wq.data != wq && m->layers[0].wk.data == wk);
        if (i == 2) CHECK(m->layers[0].wq.data == wq && m->layers[0].wk.data != wk);
        CHECK(((const float *)wq)[0] == first_q);
        cm_model_close(m);
    }
}

/* The same adapters on a GGUF copy of the base: its q/k rows are interleaved, so lora_B's must be too. */
static void test_gguf_base(void) {
    cm_model *m;
    CHECK_OK(cm_model_open(base_dir(), &m));
    if (!m) return;
    char *tmp = cm_test_tmpdir(), *gguf = cm_path_join(tmp, "base.gguf");
    CHECK_OK(cm_model_save_gguf(m, NULL, gguf, CM_DTYPE_COUNT));
    cm_model_close(m);
    for (size_t i = 0; i < 3; i++) {
        cm_model *g;
        CHECK_OK(cm_model_open(gguf, &g));
        if (!g) break;
        CHECK(g->cfg.rope_layout == CM_ROPE_INTERLEAVED);
        double d = adapter_diff(g, adapters[i]);
        printf("GGUF copy + %s: max |logit - torch| = %.3g\n", adapters[i], d);
        CHECK(d <= 1e-4);
        cm_model_close(g);
    }
    remove(gguf);
    remove(tmp);
    free(gguf);
    free(tmp);
}

/* F16 / BF16 bases: merged weights keep the dtype; logits within the rounding of the base. */
static void test_half_bases(void) {
    cm_model *m;
    CHECK_OK(cm_model_open(base_dir(), &m));
    if (!m) return;
    char *tmp = cm_test_tmpdir();
    const cm_dtype types[2] = {CM_DTYPE_F16, CM_DTYPE_BF16};
    const double tol[2] = {2e-3, 2e-2};
    for (int t = 0; t < 2; t++) {
        char name[16];
        snprintf(name, sizeof name, "half%d", t);
        char *dir = cm_path_join(tmp, name);
        CHECK_OK(cm_model_save_hf(m, NULL, dir, types[t]));
        cm_model *h;
        CHECK_OK(cm_model_open(dir, &h));
        if (h) {
            double d = adapter_diff(h, "all-linear");
            printf("%s base + all-linear: max |logit - torch f32| = %.3g\n", cm_dtype_name(types[t]), d);
            CHECK(d <= tol[t]);
            CHECK(h->layers[1].w_up.dtype == types[t] && h->layers[0].wq.dtype == types[t]);
            cm_model_close(h);
        }
        char *p = cm_path_join(dir, "model.safetensors");
        remove(p);
        free(p);
        p = cm_path_join(dir, "config.json");
        remove(p);
        free(p);
        p = cm_path_join(dir, "generation_config.json");
        remove(p);
        free(p);
        remove(dir);
        free(dir);
    }
    remove(tmp);
    free(tmp);
    cm_model_close(m);
}

/* ---- building adapters in a temp folder ---- */

static char *g_tmp;

static json_t *golden_config(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_config.json", adapter_dir("all-linear"));
    json_error_t e;
    json_t *c = json_load_file(path, 0, &e);
    CHECK(c != NULL);
    return c;
}

static char *make_dir(const char *name) {
    char *d = cm_path_join(g_tmp, name);
    CHECK_OK(cm_mkdir_p(d));
    return d;
}

static void write_config(const char *dir, json_t *cfg) {
    char *p = cm_path_join(dir, "adapter_config.json");
    CHECK(json_dump_file(cfg, p, 0) == 0);
    free(p);
    json_decref(cfg);
}

static void copy_golden_tensors(const char *dir) {
    char src[4200], *data;
    size_t size;
    snprintf(src, sizeof src, "%s/adapter_model.safetensors", adapter_dir("all-linear"));
    CHECK_OK(cm_read_file(src, 1 << 24, &data, &size));
    char *p = cm_path_join(dir, "adapter_model.safetensors");
    CHECK_OK(cm_write_file_atomic(p, data, size));
    free(p);
    free(data);
}

typedef struct {
    const char *name;
    int64_t rows, cols;
} fake_tensor;

/* An adapter_model.safetensors with the given tensors (small constant values). */
static void write_tensors(const char *dir, const fake_tensor *ts, size_t n, cm_dtype dtype) {
    char *p = cm_path_join(dir, "adapter_model.safetensors");
    cm_safetensors_writer *w;
    CHECK_OK(cm_safetensors_writer_open(p, &w));
    free(p);
    for (size_t i = 0; i < n; i++) {
        size_t count = (size_t)(ts[i].rows * ts[i].cols), es = cm_dtype_block_bytes(dtype);
        char *buf = calloc(count ? count : 1, es);
        for (size_t k = 0; k < count && dtype == CM_DTYPE_F32; k++) ((float *)buf)[k] = 0.01f;
        int64_t shape[2] = {ts[i].rows, ts[i].cols};
        CHECK_OK(cm_safetensors_writer_add_owned(w, ts[i].name, dtype, 2, shape, buf, count * es));
    }
    CHECK_OK(cm_safetensors_writer_commit(w));
}

static json_t *config_with(const char *key, json_t *value) {
    json_t *c = golden_config();
    json_object_set_new(c, key, value);
    return c;
}

#define QA "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
#define QB "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
#define VA "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight"
#define VB "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"

/* q_proj of layer 0 only: target_modules = ["model.layers.0.self_attn.q_proj"] */
static json_t *q0_config(void) {
    return config_with("target_modules", json_pack("[s]", "layers.0.self_attn.q_proj"));
}

/* Expect merging `dir` to fail with `needle` in a one-line message, leaving the model unchanged. */
static void expect_fail(cm_model *m, const char *dir, const char *needle, int line) {
    const void *before[2] = {m->layers[0].wq.data, m->layers[1].w_down.data};
    cm_status st = cm_model_merge_adapter(m, dir);
    const char *msg = cm_last_error();
    if (st == CM_OK) {
        fprintf(stderr, "line %d: merging %s should have failed\n", line, dir);
        check_failures++;
        return;
    }
    printf("  %s\n", msg);
    if (!strstr(msg, needle) || strchr(msg, '\n')) {
        fprintf(stderr, "line %d: message \"%s\" lacks \"%s\" or is not one line\n", line, msg, needle);
        check_failures++;
    }
    CHECK(m->layers[0].wq.data == before[0] && m->layers[1].w_down.data == before[1]);
}
#define EXPECT_FAIL(m, dir, needle) expect_fail(m, dir, needle, __LINE__)

static void test_bad_adapters(void) {
    g_tmp = cm_test_tmpdir();
    cm_model *m;
    CHECK_OK(cm_model_open(base_dir(), &m));
    if (!m) return;
    char *d;

    EXPECT_FAIL(m, "/nonexistent/adapter", "not a folder");

    d = make_dir("no-config");
    copy_golden_tensors(d);
    EXPECT_FAIL(m, d, "no adapter_config.json");
    free(d);

    d = make_dir("no-tensors");
    write_config(d, golden_config());
    EXPECT_FAIL(m, d, "no adapter_model.safetensors");
    free(d);

    d = make_dir("bias-all");
    copy_golden_tensors(d);
    write_config(d, config_with("bias", json_string("all")));
    EXPECT_FAIL(m, d, "bias is \"all\"");
    free(d);

    d = make_dir("bad-json");
    copy_golden_tensors(d);
    char *p = cm_path_join(d, "adapter_config.json");
    CHECK_OK(cm_write_file_atomic(p, "{\"r\": 4,", 8));
    free(p);
    EXPECT_FAIL(m, d, "bad JSON");
    free(d);

    struct {
        const char *name, *key;
        json_t *value;
        const char *needle;
    } configs[] = {
        {"peft-type", "peft_type", json_string("PREFIX_TUNING"), "peft_type"},
        {"fan-in", "fan_in_fan_out", json_true(), "fan_in_fan_out"},
        {"dora", "use_dora", json_true(), "DoRA"},
        {"to-save", "modules_to_save", json_pack("[s]", "lm_head"), "modules_to_save"},
        {"unknown-target", "target_modules", json_pack("[ss]", "q_proj", "foo_proj"), "\"foo_proj\""},
        {"lm-head-target", "target_modules", json_pack("[s]", "lm_head"), "\"lm_head\""},
        {"regex-none", "target_modules", json_string(".*\\.attention\\.wq"), "matches none"},
        {"regex-bad", "target_modules", json_string("q_proj("), "not a valid regular expression"},
        {"rank", "r", json_integer(8), "expected [8, 64]"},
        {"rank-zero", "r", json_integer(0), "\"r\" must be"},
        {"rank-pattern", "rank_pattern", json_pack("{si}", "v_proj", 2), "expected [2, 64]"},
        {"layers", "layers_to_transform", json_pack("[i]", 0), "does not target model.layers.1"},
        {"only-q", "target_modules", json_pack("[s]", "q_proj"), "does not target"},
        {"rslora-type", "use_rslora", json_string("yes"), "use_rslora"},
    };
    for (size_t i = 0; i < sizeof configs / sizeof *configs; i++) {
        d = make_dir(configs[i].name);
        copy_golden_tensors(d);
        write_config(d, config_with(configs[i].key, configs[i].value));
        EXPECT_FAIL(m, d, configs[i].needle);
        free(d);
    }

    /* tensors that do not fit: shape, rank mismatch, unknown key, a lone lora_A, a layer out of range,
     * duplicates, a targeted module without tensors, a wrong dtype, a broken file */
    struct {
        const char *name;
        fake_tensor ts[3];
        size_t n;
        const char *needle;
    } files[] = {
        {"shape", {{QA, 4, 65}, {QB, 64, 4}}, 2, "has shape [4, 65], expected [4, 64]"},
        {"shape-b", {{QA, 4, 64}, {QB, 16, 4}}, 2, "has shape [16, 4], expected [64, 4]"},
        {"rank-ab", {{QA, 4, 64}, {QB, 64, 3}}, 2, "expected [64, 4]"},
        {"unknown-key",
         {{QA, 4, 64}, {QB, 64, 4}, {"base_model.model.lm_head.lora_A.weight", 4, 64}},
         3,
         "unknown key \"base_model.model.lm_head.lora_A.weight\""},
        {"bias-key",
         {{QA, 4, 64}, {QB, 64, 4}, {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", 1, 64}},
         3,
         "unknown key"},
        {"missing-b", {{QA, 4, 64}}, 1, "\"" QA "\" has no lora_B partner"},
        {"missing-a", {{QB, 64, 4}}, 1, "has no lora_A partner"},
        {"layer-range",
         {{QA, 4, 64},
          {QB, 64, 4},
          {"base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", 4, 64}},
         3,
         "layer 7, but the model has 2 layers"},
        {"duplicate",
         {{QA, 4, 64},
          {QB, 64, 4},
          {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", 4, 64}},
         3,
         "are the same tensor"},
        {"untargeted",
         {{QA, 4, 64}, {QB, 64, 4}, {VA, 4, 64}},
         3,
         "does not target model.layers.0.self_attn.v_proj"},
        {"empty", {{QA, 4, 64}}, 0, "holds no tensors"},
    };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        d = make_dir(files[i].name);
        write_tensors(d, files[i].ts, files[i].n, CM_DTYPE_F32);
        write_config(d, q0_config());
        EXPECT_FAIL(m, d, files[i].needle);
        free(d);
    }
    d = make_dir("targeted-missing");
    fake_tensor qv[4] = {{QA, 4, 64}, {QB, 64, 4}, {VA, 4, 64}, {VB, 16, 4}};
    write_tensors(d, qv, 2, CM_DTYPE_F32);
    write_config(d, config_with("target_modules", json_pack("[ss]", "layers.0.self_attn.q_proj", "v_proj")));
    EXPECT_FAIL(m, d, "no lora_A/lora_B for model.layers.0.self_attn.v_proj");
    free(d);
    d = make_dir("dtype");
    write_tensors(d, qv, 2, CM_DTYPE_I32);
    write_config(d, q0_config());
    EXPECT_FAIL(m, d, "dtype I32");
    free(d);
    d = make_dir("truncated");
    write_config(d, q0_config());
    p = cm_path_join(d, "adapter_model.safetensors");
    CHECK_OK(cm_write_file_atomic(p, "\x40\0\0\0\0\0\0\0{\"a\":", 13));
    EXPECT_FAIL(m, d, "adapter_model.safetensors");
    free(p);
    free(d);

    /* a base weight the merge cannot write (as a quantized one would be) */
    d = make_dir("q-only");
    write_tensors(d, qv, 2, CM_DTYPE_F32);
    write_config(d, q0_config());
    m->layers[0].wq.dtype = CM_DTYPE_U8;
    EXPECT_FAIL(m, d, "only into F32, F16 or BF16 weights");
    m->layers[0].wq.dtype = CM_DTYPE_F32;
    /* and then it merges */
    const void *wq = m->layers[0].wq.data;
    CHECK_OK(cm_model_merge_adapter(m, d));
    CHECK(m->layers[0].wq.data != wq && m->layers[0].wq.dtype == CM_DTYPE_F32);
    /* W + (8/4) * B A with A = B = 0.01 everywhere: each element grows by 2 * 4 * 1e-4 */
    CHECK_NEAR(((const float *)m->layers[0].wq.data)[5], ((const float *)wq)[5] + 8e-4, 1e-7);
    free(d);
    cm_model_close(m);
    /* the temp tree is left for inspection only on failure */
    if (!check_failures) CHECK(cm_test_rmtree(g_tmp));
    free(g_tmp);
}

/* Other spellings of the same targets give the same logits. */
static void test_target_spellings(void) {
    g_tmp = cm_test_tmpdir();
    json_t *values[] = {
        json_string("all-linear"),
        json_string("model\\.layers\\.[0-9]+\\.(self_attn|mlp)\\.[a-z]+_proj"),
        json_pack("[ssssssss]", "model.layers.0.self_attn.q_proj", "layers.1.self_attn.q_proj",
                  "self_attn.k_proj", "v_proj", "o_proj", "mlp.gate_proj", "up_proj", "down_proj"),
    };
    char path[4200];
    snprintf(path, sizeof path, "%s/logits.f32", adapter_dir("all-linear"));
    size_t n;
    float *ref = cm_test_read_f32(path, &n);
    for (size_t i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "spell%zu", i);
        char *d = make_dir(name);
        copy_golden_tensors(d);
        write_config(d, config_with("target_modules", values[i]));
        cm_model *m;
        CHECK_OK(cm_model_open(base_dir(), &m));
        if (m) {
            CHECK_OK(cm_model_merge_adapter(m, d));
            float *got = logits_of(m);
            double diff = cm_test_max_diff(got, ref, n);
            CHECK(diff <= 1e-4);
            free(got);
            cm_model_close(m);
        }
        free(d);
    }
    free(ref);
    CHECK(cm_test_rmtree(g_tmp));
    free(g_tmp);
}

int main(void) {
    test_hf_base();
    test_gguf_base();
    test_half_bases();
    test_target_spellings();
    test_bad_adapters();
    CHECK_DONE();
}
