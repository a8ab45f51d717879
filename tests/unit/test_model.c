/* Model paths against reference numbers: stories260K logits from llama2.c's run.c, and tiny HF-layout models
 * (GQA, llama3 / linear RoPE scaling, BF16 / F16, shards, v5 rope_parameters) against torch
 * (tests/data/hf-tiny, made by scripts/golden/hf_tiny_golden.py). Conversions must preserve the logits. */
#include <jansson.h>

#include "camelid/file.h"
#include "camelid/isa.h"
#include "camelid/llama.h"
#include "camelid/model.h"
#include "camelid/safetensors.h"
#include "check.h"

/* Logits of every position of `tokens`, computed as one batch (batch > 1) or token by token. */
static float *all_logits(const cm_model *m, const int32_t *tokens, int n, int batch, int threads) {
    cm_state *s;
    CHECK_OK(cm_state_open(m, 0, batch, threads, &s));
    float *logits = malloc((size_t)n * m->cfg.vocab_size * sizeof(float));
    if (batch > 1) {
        CHECK_OK(cm_forward(m, s, tokens, n, 0, logits, true));
    } else {
        for (int i = 0; i < n; i++)
            CHECK_OK(cm_forward(m, s, tokens + i, 1, i, logits + (size_t)i * m->cfg.vocab_size, false));
    }
    cm_state_close(s);
    return logits;
}

static const int32_t story_tokens[13] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421};

static void check_story_logits(const char *path, const char *what) {
    cm_model *m;
    CHECK_OK(cm_model_open(path, &m));
    if (!m) return;
    size_t n;
    float *ref = cm_test_read_f32(cm_test_shared("models/stories260K/reference/logits_prompt.f32"), &n);
    CHECK(n == 13 * 512);
    /* every kernel path the CPU has (scalar, AVX2, AVX-512) */
    for (int isa = CM_ISA_SCALAR; isa <= (int)cm_isa_best(); isa++) {
        cm_isa_force(isa);
        for (int batch = 1; batch <= 16; batch += 15) {
            for (int threads = 1; threads <= 2; threads++) {
                float *got = all_logits(m, story_tokens, 13, batch, threads);
                double d = cm_test_max_diff(got, ref, n);
                printf("%s: %s, batch %d, %d thread(s): max |logit - run.c| = %.3g\n", what,
                       cm_isa_name((cm_isa)isa), batch, threads, d);
                CHECK(d <= 1e-4);
                free(got);
            }
        }
    }
    cm_isa_force(-1);
    free(ref);
    cm_model_close(m);
}

static int32_t *read_tokens(const char *dir, int *n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokens.json", dir);
    json_error_t e;
    json_t *root = json_load_file(path, 0, &e);
    json_t *arr = json_object_get(root, "tokens");
    *n = (int)json_array_size(arr);
    int32_t *t = malloc((size_t)*n * sizeof *t);
    for (int i = 0; i < *n; i++) t[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    json_decref(root);
    return t;
}

static void check_hf_tiny(const char *variant) {
    char dir[2048], path[4096];
    snprintf(dir, sizeof dir, "%s", cm_test_data("hf-tiny/"));
    strncat(dir, variant, sizeof dir - strlen(dir) - 1);
    cm_model *m;
    CHECK_OK(cm_model_open(dir, &m));
    if (!m) return;
    int n;
    int32_t *tokens = read_tokens(dir, &n);
    snprintf(path, sizeof path, "%s/logits.f32", dir);
    size_t nref;
    float *ref = cm_test_read_f32(path, &nref);
    CHECK(nref == (size_t)n * m->cfg.vocab_size);
    float *got = all_logits(m, tokens, n, 8, 2);
    double d = cm_test_max_diff(got, ref, nref);
    if (d > 1e-4) fprintf(stderr, "hf-tiny/%s: max diff %g\n", variant, d);
    CHECK(d <= 1e-4);
    free(got);

    /* through GGUF (q/k permuted to the interleaved layout) and back to HF: same logits */
    char *tmp = cm_test_tmpdir();
    char *gguf = cm_path_join(tmp, "m.gguf"), *hf = cm_path_join(tmp, "hf");
    CHECK_OK(cm_model_save_gguf(m, NULL, gguf, CM_DTYPE_COUNT));
    cm_model *g;
    CHECK_OK(cm_model_open(gguf, &g));
    if (g) {
        CHECK(g->cfg.rope_layout == CM_ROPE_INTERLEAVED);
        got = all_logits(g, tokens, n, 8, 2);
        d = cm_test_max_diff(got, ref, nref);
        if (d > 1e-4) fprintf(stderr, "hf-tiny/%s via GGUF: max diff %g\n", variant, d);
        CHECK(d <= 1e-4);
        free(got);
        CHECK_OK(cm_model_save_hf(g, NULL, hf, CM_DTYPE_COUNT));
        cm_model *h;
        CHECK_OK(cm_model_open(hf, &h));
        if (h) {
            got = all_logits(h, tokens, n, 1, 1);
            d = cm_test_max_diff(got, ref, nref);
            if (d > 1e-4) fprintf(stderr, "hf-tiny/%s via GGUF and HF: max diff %g\n", variant, d);
            CHECK(d <= 1e-4);
            free(got);
            /* the round trip restores the original bytes of every weight */
            for (int l = 0; l < m->cfg.n_layers; l++) {
                size_t q = (size_t)(m->layers[l].wq.rows * m->layers[l].wq.cols) *
                           cm_dtype_block_bytes(m->layers[l].wq.dtype);
                size_t k = (size_t)(m->layers[l].wk.rows * m->layers[l].wk.cols) *
                           cm_dtype_block_bytes(m->layers[l].wk.dtype);
                CHECK(h->layers[l].wq.dtype == m->layers[l].wq.dtype);
                CHECK(memcmp(h->layers[l].wq.data, m->layers[l].wq.data, q) == 0);
                CHECK(memcmp(h->layers[l].wk.data, m->layers[l].wk.data, k) == 0);
            }
            cm_model_close(h);
        }
        cm_model_close(g);
    }
    free(gguf);
    free(hf);
    free(tmp);
    free(tokens);
    free(ref);
    cm_model_close(m);
}

static void test_story_conversions(void) {
    const char *bin = cm_test_shared("models/stories260K/stories260K.bin");
    check_story_logits(bin, "llama2.c");
    check_story_logits(cm_test_shared("models/stories260K-gguf/stories260K.gguf"), "GGUF");
    cm_model *m;
    CHECK_OK(cm_model_open(bin, &m));
    if (!m) return;
    CHECK(m->cfg.n_kv_heads == 4 && m->cfg.tie_embeddings && m->cfg.vocab_size == 512);
    CHECK(cm_model_n_params(m) == 260000 + 0 * 1 || cm_model_n_params(m) > 250000);
    char *tmp = cm_test_tmpdir();
    char *hf = cm_path_join(tmp, "hf"), *gguf = cm_path_join(tmp, "m.gguf"),
         *bf16 = cm_path_join(tmp, "bf16");
    CHECK_OK(cm_model_save_hf(m, NULL, hf, CM_DTYPE_COUNT));
    CHECK_OK(cm_model_save_gguf(m, NULL, gguf, CM_DTYPE_COUNT));
    check_story_logits(hf, "llama2.c -> HF");
    check_story_logits(gguf, "llama2.c -> GGUF");

    /* the HF folder has exactly transformers' names and shapes */
    char *st_path = cm_path_join(hf, "model.safetensors");
    cm_safetensors *st;
    CHECK_OK(cm_safetensors_open(st_path, &st));
    if (st) {
        CHECK(cm_safetensors_count(st) == 2 + 9 * 5);
        CHECK(strcmp(cm_safetensors_metadata(st, "format"), "pt") == 0);
        const cm_tensor *t = cm_safetensors_find(st, "model.layers.4.self_attn.k_proj.weight");
        CHECK(t && t->ndim == 2 && t->shape[0] == 32 && t->shape[1] == 64 && t->dtype == CM_DTYPE_F32);
        CHECK(cm_safetensors_find(st, "model.embed_tokens.weight") != NULL);
        CHECK(cm_safetensors_find(st, "model.norm.weight") != NULL);
        CHECK(cm_safetensors_find(st, "lm_head.weight") == NULL); /* tied */
        CHECK(cm_safetensors_find(st, "model.layers.0.post_attention_layernorm.weight") != NULL);
        CHECK(cm_safetensors_find(st, "model.layers.0.mlp.down_proj.weight") != NULL);
        cm_safetensors_close(st);
    }
    char *cfg_path = cm_path_join(hf, "config.json");
    json_error_t e;
    json_t *cfg = json_load_file(cfg_path, 0, &e);
    CHECK(cfg != NULL);
    CHECK(strcmp(json_string_value(json_array_get(json_object_get(cfg, "architectures"), 0)),
                 "LlamaForCausalLM") == 0);
    CHECK(strcmp(json_string_value(json_object_get(cfg, "model_type")), "llama") == 0);
    CHECK(json_integer_value(json_object_get(cfg, "num_key_value_heads")) == 4);
    CHECK(json_integer_value(json_object_get(cfg, "intermediate_size")) == 172);
    CHECK(json_is_true(json_object_get(cfg, "tie_word_embeddings")));
    CHECK(strcmp(json_string_value(json_object_get(cfg, "torch_dtype")), "float32") == 0);
    CHECK(json_object_get(cfg, "rope_theta") != NULL && json_object_get(cfg, "rms_norm_eps") != NULL);
    json_decref(cfg);

    /* bf16 export: logits within bf16 rounding of the reference, and the greedy continuation unchanged */
    CHECK_OK(cm_model_save_hf(m, NULL, bf16, CM_DTYPE_BF16));
    cm_model *b;
    CHECK_OK(cm_model_open(bf16, &b));
    if (b) {
        CHECK(b->layers[0].wq.dtype == CM_DTYPE_BF16);
        size_t n;
        float *ref = cm_test_read_f32(cm_test_shared("models/stories260K/reference/logits_prompt.f32"), &n);
        float *got = all_logits(b, story_tokens, 13, 13, 2);
        double d = cm_test_max_diff(got, ref, n);
        CHECK(d < 0.5 && d > 1e-6); /* rounded, yet close */
        free(ref);
        free(got);
        cm_model_close(b);
    }
    free(cfg_path);
    free(st_path);
    free(hf);
    free(gguf);
    free(bf16);
    free(tmp);
    cm_model_close(m);
}

/* A llama2.c v0 file with a separate classifier (negative vocab_size, wcls appended): here a copy of the
 * embedding, so the logits must equal the tied reference. */
static void test_llama2c_untied(void) {
    char *data;
    size_t size;
    CHECK_OK(cm_read_file(cm_test_shared("models/stories260K/stories260K.bin"), 1 << 24, &data, &size));
    if (!data) return;
    char *tmp = cm_test_tmpdir(), *path = cm_path_join(tmp, "untied.bin");
    int32_t vocab;
    memcpy(&vocab, data + 20, 4);
    vocab = -vocab;
    memcpy(data + 20, &vocab, 4);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, size, f);
    fwrite(data + 28, 1, 512 * 64 * 4, f); /* wcls = tok_embeddings */
    fclose(f);
    free(data);
    cm_model *m;
    CHECK_OK(cm_model_open(path, &m));
    if (m) {
        CHECK(!m->cfg.tie_embeddings && m->output.data != m->tok_embd.data);
        cm_model_close(m);
    }
    check_story_logits(path, "llama2.c untied");
    remove(path);
    remove(tmp);
    free(path);
    free(tmp);
}

/* Continuous batching: two sequences mixed in one batch give each the logits it gets alone. */
static void test_forward_batch(void) {
    cm_model *m;
    CHECK_OK(cm_model_open(cm_test_shared("models/stories260K/stories260K.bin"), &m));
    if (!m) return;
    const int V = m->cfg.vocab_size, na = 13, nb = 6;
    const int32_t *a = story_tokens;
    const int32_t b[6] = {1, 403, 407, 261, 300, 301};
    float *alone_a = all_logits(m, a, na, 16, 2), *alone_b = all_logits(m, b, nb, 16, 2);
    cm_state *s;
    cm_kv *ka, *kb;
    CHECK_OK(cm_state_open(m, 64, 8, 2, &s)); /* a small max batch: the mixed batch runs in chunks */
    CHECK_OK(cm_kv_open(m, 64, &ka));
    CHECK_OK(cm_kv_open(m, 32, &kb));
    if (s && ka && kb) {
        cm_batch_token items[19];
        int n = 0;
        /* interleaved: a0 b0 a1 b1 ... then the rest of a */
        for (int i = 0; i < na || i < nb; i++) {
            if (i < na) items[n++] = (cm_batch_token){a[i], i, ka, true};
            if (i < nb) items[n++] = (cm_batch_token){b[i], i, kb, true};
        }
        float *logits = malloc((size_t)n * V * sizeof(float));
        CHECK_OK(cm_forward_batch(m, s, items, n, logits));
        double worst = 0;
        for (int t = 0; t < n; t++) {
            const float *want =
                items[t].kv == ka ? alone_a + (size_t)items[t].pos * V : alone_b + (size_t)items[t].pos * V;
            double d = cm_test_max_diff(logits + (size_t)t * V, want, (size_t)V);
            if (d > worst) worst = d;
        }
        CHECK(worst <= 1e-4);
        /* one more decode step for both sequences together, only b's logits wanted */
        cm_batch_token step[2] = {{300, na, ka, false}, {301, nb, kb, true}};
        CHECK_OK(cm_forward_batch(m, s, step, 2, logits));
        int32_t b7[7];
        memcpy(b7, b, sizeof b);
        b7[6] = 301;
        float *alone_b7 = all_logits(m, b7, 7, 16, 1);
        CHECK(cm_test_max_diff(logits, alone_b7 + 6 * (size_t)V, (size_t)V) <= 1e-4);
        cm_batch_token bad = {1, 40, kb, true}; /* kb holds 32 positions */
        CHECK_FAIL(cm_forward_batch(m, s, &bad, 1, logits), "context");
        free(alone_b7);
        free(logits);
    }
    cm_kv_close(ka);
    cm_kv_close(kb);
    cm_state_close(s);
    free(alone_a);
    free(alone_b);
    cm_model_close(m);
}

static void test_forward_errors(void) {
    cm_model *m;
    CHECK_OK(cm_model_open(cm_test_shared("models/stories260K/stories260K.bin"), &m));
    if (!m) return;
    cm_state *s;
    CHECK_OK(cm_state_open(m, 8, 4, 1, &s));
    float logits[512];
    int32_t bad = 512, ok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK_FAIL(cm_forward(m, s, &bad, 1, 0, logits, false), "outside the vocabulary");
    CHECK_FAIL(cm_forward(m, s, ok, 9, 0, logits, false), "exceed the context");
    CHECK_OK(cm_forward(m, s, ok, 8, 0, logits, false));
    cm_state_close(s);
    cm_model_close(m);
}

int main(void) {
    test_story_conversions();
    check_hf_tiny("gqa-f32");
    check_hf_tiny("llama3-bf16");
    check_hf_tiny("linear-f16");
    check_hf_tiny("v5-rope-params");
    test_llama2c_untied();
    test_forward_batch();
    test_forward_errors();
    CHECK_DONE();
}
