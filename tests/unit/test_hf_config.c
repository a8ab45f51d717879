#include "camelid/config.h"
#include "camelid/file.h"

#include "check.h"

static cm_status parse(const char *json, cm_config *c) {
    return cm_config_parse_hf_json(json, strlen(json), "config.json", c);
}

static cm_status parse_only(const char *json) {
    cm_config c;
    return parse(json, &c);
}

static void test_defaults(void) {
    cm_config c;
    CHECK_OK(parse("{}", &c));
    CHECK(c.dim == 4096 && c.hidden_dim == 11008 && c.n_layers == 32);
    CHECK(c.n_heads == 32 && c.n_kv_heads == 32 && c.head_dim == 128);
    CHECK(c.vocab_size == 32000 && c.seq_len == 2048);
    CHECK(c.norm_eps == 1e-6f && c.rope_theta == 10000.0f);
    CHECK(c.rope_scaling == CM_ROPE_SCALING_NONE && c.rope_layout == CM_ROPE_HALF);
    CHECK(!c.tie_embeddings && c.bos_id == 1 && c.n_eos == 1 && c.eos_ids[0] == 2);
    cm_config d;
    cm_config_defaults_hf(&d);
    CHECK(memcmp(&c, &d, sizeof c) == 0);
    CHECK_OK(cm_config_validate(&d, "defaults"));
    /* null means "derive" for these */
    CHECK_OK(parse("{\"num_key_value_heads\": null, \"head_dim\": null, \"rope_scaling\": null,"
                   " \"rope_theta\": null, \"bos_token_id\": null, \"eos_token_id\": null}",
                   &c));
    CHECK(c.n_kv_heads == 32 && c.head_dim == 128 && c.rope_theta == 10000.0f && c.bos_id == -1 &&
          c.n_eos == 0);
    /* rope_theta 10000 for inv_freq: 1/10000^(2*3/96) = 0.562341325 */
    c.head_dim = 96;
    CHECK_NEAR(cm_config_rope_inv_freq(&c, 3), 0.562341325, 1e-8);
    CHECK(cm_config_rope_inv_freq(&c, 0) == 1.0f);
}

/* TinyLlama-1.1B's config.json (GQA 32/4, Llama-2 eps). */
static const char *tinyllama = "{\n"
                               "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                               "  \"attention_bias\": false,\n"
                               "  \"bos_token_id\": 1,\n"
                               "  \"eos_token_id\": 2,\n"
                               "  \"hidden_act\": \"silu\",\n"
                               "  \"hidden_size\": 2048,\n"
                               "  \"initializer_range\": 0.02,\n"
                               "  \"intermediate_size\": 5632,\n"
                               "  \"max_position_embeddings\": 2048,\n"
                               "  \"model_type\": \"llama\",\n"
                               "  \"num_attention_heads\": 32,\n"
                               "  \"num_hidden_layers\": 22,\n"
                               "  \"num_key_value_heads\": 4,\n"
                               "  \"pretraining_tp\": 1,\n"
                               "  \"rms_norm_eps\": 1e-05,\n"
                               "  \"rope_scaling\": null,\n"
                               "  \"rope_theta\": 10000.0,\n"
                               "  \"tie_word_embeddings\": false,\n"
                               "  \"torch_dtype\": \"bfloat16\",\n"
                               "  \"transformers_version\": \"4.35.0\",\n"
                               "  \"use_cache\": true,\n"
                               "  \"vocab_size\": 32000\n"
                               "}\n";

static void test_gqa(void) {
    cm_config c;
    CHECK_OK(parse(tinyllama, &c));
    CHECK(c.dim == 2048 && c.hidden_dim == 5632 && c.n_layers == 22);
    CHECK(c.n_heads == 32 && c.n_kv_heads == 4 && c.head_dim == 64);
    CHECK(c.norm_eps == 1e-5f && c.seq_len == 2048 && c.vocab_size == 32000);
    CHECK(!c.tie_embeddings && c.bos_id == 1 && c.n_eos == 1 && c.eos_ids[0] == 2);

    /* SmolLM-style: tied, explicit head_dim, mistral model_type with sliding_window (ignored) */
    CHECK_OK(parse("{\"model_type\": \"mistral\", \"architectures\": [\"MistralForCausalLM\"],"
                   " \"hidden_size\": 576, \"num_attention_heads\": 9, \"num_key_value_heads\": 3,"
                   " \"head_dim\": 64, \"intermediate_size\": 1536, \"num_hidden_layers\": 30,"
                   " \"vocab_size\": 49152, \"tie_word_embeddings\": true, \"sliding_window\": 4096,"
                   " \"bos_token_id\": 0, \"eos_token_id\": [0]}",
                   &c));
    CHECK(c.head_dim == 64 && c.n_kv_heads == 3 && c.tie_embeddings && c.bos_id == 0);
    CHECK(c.n_eos == 1 && c.eos_ids[0] == 0);
    CHECK_OK(parse("{\"model_type\": \"mistral\", \"sliding_window\": null}", &c));
}

static void test_rope_linear(void) {
    cm_config c;
    CHECK_OK(parse("{\"hidden_size\": 512, \"num_attention_heads\": 8, \"rope_scaling\": "
                   "{\"type\": \"linear\", \"factor\": 4.0}}",
                   &c));
    CHECK(c.rope_scaling == CM_ROPE_SCALING_LINEAR && c.rope_factor == 4.0f && c.head_dim == 64);
    /* python3: 1/10000**(2*i/64)/4 */
    CHECK(cm_config_rope_inv_freq(&c, 0) == 0.25f);
    CHECK_NEAR(cm_config_rope_inv_freq(&c, 5), 0.0592843426, 0.0592843426 * 1e-7);
    CHECK_NEAR(cm_config_rope_inv_freq(&c, 31), 3.33380358e-05, 3.33380358e-05 * 1e-7);
    CHECK_OK(parse("{\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2}}", &c));
    CHECK(c.rope_scaling == CM_ROPE_SCALING_LINEAR && c.rope_factor == 2.0f);
    CHECK_FAIL(parse_only("{\"rope_scaling\": {\"rope_type\": \"linear\"}}"),
               "\"rope_scaling\" needs \"factor\"");
    CHECK_FAIL(parse_only("{\"rope_scaling\": {\"factor\": 2}}"), "no \"rope_type\"");
    CHECK_FAIL(parse_only("{\"rope_scaling\": {\"type\": \"linear\", \"factor\": -2}}"),
               "rope_scaling.factor");
    CHECK_FAIL(parse_only("{\"rope_scaling\": {\"type\": \"linear\", \"factor\": \"2\"}}"),
               "\"rope_scaling.factor\" must be a number");
}

/* Llama-3.1-8B's RoPE: theta 500000, llama3 scaling 8 / 1 / 4 / 8192, head_dim 128. Expected values from
 * python3 following transformers' _compute_llama3_parameters in double precision. */
static const char *llama31 =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\","
    " \"hidden_size\": 4096, \"intermediate_size\": 14336, \"num_attention_heads\": 32,"
    " \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"vocab_size\": 128256,"
    " \"max_position_embeddings\": 131072, \"rms_norm_eps\": 1e-05,"
    " \"rope_theta\": 500000.0, \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0,"
    " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192,"
    " \"rope_type\": \"llama3\"}, \"bos_token_id\": 128000,"
    " \"eos_token_id\": [128001, 128008, 128009], \"torch_dtype\": \"bfloat16\"}";

static void check_llama3_freqs(const cm_config *c) {
    static const struct {
        int i;
        double v;
    } want[] = {
        {0, 1.0},             /* high frequency: unchanged */
        {10, 0.128687373},    /* high */
        {28, 0.00321144599},  /* high, last before the band */
        {29, 0.00216657076},  /* smoothed */
        {32, 0.000524846161}, /* smoothed */
        {34, 0.000178507813}, /* smoothed */
        {35, 9.55621235e-05}, /* low frequency: divided by 8 */
        {44, 1.50962172e-05}, /* low */
        {63, 3.06892599e-07}, /* low */
    };
    for (size_t k = 0; k < sizeof want / sizeof *want; k++)
        CHECK_NEAR(cm_config_rope_inv_freq(c, want[k].i), want[k].v, want[k].v * 2e-7);
}

static void test_rope_llama3(void) {
    cm_config c;
    CHECK_OK(parse(llama31, &c));
    CHECK(c.rope_theta == 500000.0f && c.rope_scaling == CM_ROPE_SCALING_LLAMA3);
    CHECK(c.rope_factor == 8.0f && c.rope_low_freq_factor == 1.0f && c.rope_high_freq_factor == 4.0f);
    CHECK(c.rope_original_max_pos == 8192 && c.seq_len == 131072 && c.head_dim == 128);
    CHECK(c.n_kv_heads == 8 && c.bos_id == 128000);
    CHECK(c.n_eos == 3 && c.eos_ids[0] == 128001 && c.eos_ids[1] == 128008 && c.eos_ids[2] == 128009);
    check_llama3_freqs(&c);
    CHECK_FAIL(parse_only("{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}"),
               "needs \"low_freq_factor\"");
    CHECK_FAIL(
        parse_only("{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4,"
                   " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}"),
        "must exceed low_freq_factor");
}

static void test_rope_v5(void) {
    cm_config c;
    CHECK_OK(parse("{\"rope_parameters\": {\"rope_theta\": 500000.0, \"rope_type\": \"default\"},"
                   " \"head_dim\": 64}",
                   &c));
    CHECK(c.rope_theta == 500000.0f && c.rope_scaling == CM_ROPE_SCALING_NONE && c.head_dim == 64);
    /* v5 wins over a stale v4 rope_scaling */
    CHECK_OK(parse("{\"rope_theta\": 10000, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2},"
                   " \"rope_parameters\": {\"rope_theta\": 1000000, \"rope_type\": \"default\"}}",
                   &c));
    CHECK(c.rope_theta == 1000000.0f && c.rope_scaling == CM_ROPE_SCALING_NONE);
    CHECK_OK(
        parse("{\"rope_parameters\": {\"rope_theta\": 500000.0, \"rope_type\": \"llama3\", \"factor\": 8.0,"
              " \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
              " \"original_max_position_embeddings\": 8192}}",
              &c));
    CHECK(c.rope_scaling == CM_ROPE_SCALING_LLAMA3 && c.rope_theta == 500000.0f);
    check_llama3_freqs(&c);
    CHECK_OK(parse("{\"rope_parameters\": {\"rope_theta\": 50000}}", &c)); /* no rope_type: default */
    CHECK(c.rope_theta == 50000.0f && c.rope_scaling == CM_ROPE_SCALING_NONE);
    CHECK_FAIL(parse_only("{\"rope_parameters\": {\"rope_theta\": \"big\"}}"), "rope_parameters.rope_theta");
    CHECK_FAIL(parse_only("{\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4}}"), "\"yarn\"");
    CHECK_FAIL(parse_only("{\"rope_parameters\": 5}"), "\"rope_parameters\" must be an object");
}

static void test_unsupported(void) {
    static const char *kinds[] = {"dynamic", "yarn", "longrope"};
    for (int i = 0; i < 3; i++) {
        char buf[200], needle[64];
        snprintf(buf, sizeof buf, "{\"rope_scaling\": {\"rope_type\": \"%s\", \"factor\": 2.0}}", kinds[i]);
        snprintf(needle, sizeof needle, "\"%s\": this RoPE scaling is not supported", kinds[i]);
        CHECK(parse_only(buf) == CM_ERR_UNSUPPORTED);
        const char *want = needle; /* a pointer: check.h tests it for NULL */
        CHECK_FAIL(parse_only(buf), want);
    }
    CHECK(parse_only("{\"rope_scaling\": {\"type\": \"wobbly\", \"factor\": 2.0}}") == CM_ERR_UNSUPPORTED);
    CHECK_FAIL(parse_only("{\"rope_scaling\": {\"type\": \"wobbly\", \"factor\": 2.0}}"),
               "\"rope_scaling.type\" is \"wobbly\": unknown RoPE type");
    CHECK(parse_only("{\"attention_bias\": true}") == CM_ERR_UNSUPPORTED);
    CHECK_FAIL(parse_only("{\"attention_bias\": true}"), "config.json: \"attention_bias\" is true");
    CHECK_FAIL(parse_only("{\"mlp_bias\": true}"), "\"mlp_bias\" is true");
    CHECK_FAIL(parse_only("{\"hidden_act\": \"gelu\"}"), "\"hidden_act\" is \"gelu\"");
    CHECK_OK(parse_only("{\"hidden_act\": \"silu\", \"attention_bias\": false, \"mlp_bias\": false}"));
    CHECK_FAIL(parse_only("{\"model_type\": \"gpt2\"}"),
               "\"model_type\" is \"gpt2\", not a LLaMA-family model");
    CHECK_FAIL(parse_only("{\"architectures\": [\"GPT2LMHeadModel\"]}"),
               "\"architectures\" is [\"GPT2LMHeadModel\"]");
    CHECK_OK(parse_only("{\"architectures\": [\"LlamaForSequenceClassification\"]}"));
    CHECK_FAIL(parse_only("{\"eos_token_id\": [1,2,3,4,5,6,7,8,9]}"), "9 ids");
}

static void test_bad_types(void) {
    CHECK_FAIL(parse_only("{\"hidden_size\": \"4096\"}"),
               "config.json: \"hidden_size\" must be an integer, got a string");
    CHECK_FAIL(parse_only("{\"num_hidden_layers\": 32.0}"), "\"num_hidden_layers\" must be an integer");
    CHECK_FAIL(parse_only("{\"num_key_value_heads\": [8]}"), "\"num_key_value_heads\" must be an integer");
    CHECK_FAIL(parse_only("{\"vocab_size\": 99999999999}"), "\"vocab_size\" = 99999999999 is out of range");
    CHECK_FAIL(parse_only("{\"rms_norm_eps\": \"1e-5\"}"), "\"rms_norm_eps\" must be a number");
    CHECK_FAIL(parse_only("{\"rope_theta\": true}"), "\"rope_theta\" must be a number");
    CHECK_FAIL(parse_only("{\"tie_word_embeddings\": \"yes\"}"),
               "\"tie_word_embeddings\" must be true or false");
    CHECK_FAIL(parse_only("{\"eos_token_id\": \"</s>\"}"), "\"eos_token_id\" must be an integer or a list");
    CHECK_FAIL(parse_only("{\"eos_token_id\": [2, \"x\"]}"), "\"eos_token_id\"[1] must be an integer");
    CHECK_FAIL(parse_only("{\"bos_token_id\": 1.5}"), "\"bos_token_id\" must be an integer");
    CHECK_FAIL(parse_only("{\"model_type\": 7}"), "\"model_type\" must be a string");
    CHECK_FAIL(parse_only("{\"architectures\": \"LlamaForCausalLM\"}"), "\"architectures\" must be a list");
    CHECK_FAIL(parse_only("{\"rope_scaling\": \"linear\"}"), "\"rope_scaling\" must be an object or null");
    CHECK_FAIL(parse_only("[1, 2]"), "config must be a JSON object");
    CHECK_FAIL(parse_only("{\"hidden_size\": 4096,"), "config.json: invalid JSON at line 1");
    CHECK_FAIL(parse_only(""), "invalid JSON");
    CHECK_FAIL(parse_only("{\"hidden_size\": 1, \"hidden_size\": 2}"), "duplicate");
}

static void test_validate(void) {
    CHECK_FAIL(parse_only("{\"hidden_size\": 100, \"num_attention_heads\": 3}"), "not divisible");
    CHECK_FAIL(parse_only("{\"num_attention_heads\": 32, \"num_key_value_heads\": 5}"), "not a multiple");
    CHECK_FAIL(parse_only("{\"num_attention_heads\": 0}"), "\"num_attention_heads\" = 0 must be positive");
    CHECK_FAIL(parse_only("{\"head_dim\": 63}"), "head_dim = 63 must be even");
    CHECK_FAIL(parse_only("{\"vocab_size\": 0}"), "vocab_size = 0 is out of range");
    CHECK_FAIL(parse_only("{\"rms_norm_eps\": 0}"), "norm_eps");
    CHECK_FAIL(parse_only("{\"rms_norm_eps\": 1e-300}"), "norm_eps");
    CHECK_FAIL(parse_only("{\"rope_theta\": -1}"), "rope_theta");
    CHECK_FAIL(parse_only("{\"rope_theta\": 1e300}"), "\"rope_theta\" = 1e+300 is out of range");
    CHECK_FAIL(parse_only("{\"bos_token_id\": 32000}"), "bos_id (bos_token_id) = 32000 is out of range");
    CHECK_FAIL(parse_only("{\"eos_token_id\": [2, -1]}"), "out of range");
    CHECK_FAIL(parse_only("{\"num_hidden_layers\": 5000}"), "n_layers (num_hidden_layers) = 5000");
    cm_config c;
    cm_config_defaults_hf(&c);
    c.dim = 0;
    CHECK_FAIL(cm_config_validate(&c, "model.bin"), "model.bin: dim (hidden_size) = 0");
    cm_config_defaults_hf(&c);
    c.n_kv_heads = 64;
    CHECK_FAIL(cm_config_validate(&c, "x"), "n_kv_heads");
}

static void test_write(void) {
    cm_config c;
    CHECK_OK(parse(tinyllama, &c));
    char *s;
    CHECK_OK(cm_config_to_hf_json(&c, "bfloat16", &s));
    CHECK(strstr(s, "\"architectures\": [\n    \"LlamaForCausalLM\"\n  ]") != NULL);
    CHECK(strstr(s, "\"model_type\": \"llama\"") != NULL);
    /* 1e-5f prints as 1e-5 (jansson's exponent form), not 9.99999975e-06 */
    CHECK(strstr(s, "\"rms_norm_eps\": 1e-5,") != NULL);
    CHECK(strstr(s, "\"rope_theta\": 10000.0,") != NULL);
    CHECK(strstr(s, "\"rope_scaling\": null,") != NULL);
    CHECK(strstr(s, "\"num_key_value_heads\": 4,") != NULL);
    CHECK(strstr(s, "\"head_dim\": 64,") != NULL);
    CHECK(strstr(s, "\"eos_token_id\": 2,") != NULL);
    CHECK(strstr(s, "\"bos_token_id\": 1,") != NULL);
    CHECK(strstr(s, "\"tie_word_embeddings\": false") != NULL);
    CHECK(strstr(s, "\"hidden_act\": \"silu\"") != NULL);
    CHECK(strstr(s, "\"initializer_range\": 0.02,") != NULL);
    CHECK(strstr(s, "\"torch_dtype\": \"bfloat16\"") != NULL);
    CHECK(strstr(s, "\"transformers_version\": \"4.46.0\"") != NULL);
    CHECK(s[strlen(s) - 1] == '\n');
    cm_config back;
    CHECK_OK(parse(s, &back));
    CHECK(memcmp(&c, &back, sizeof c) == 0);
    free(s);

    CHECK_OK(parse(llama31, &c));
    CHECK_OK(cm_config_to_hf_json(&c, NULL, &s));
    CHECK(strstr(s, "\"rope_theta\": 500000.0,") != NULL);
    CHECK(strstr(s, "\"rope_type\": \"llama3\"") != NULL);
    CHECK(strstr(s, "\"original_max_position_embeddings\": 8192") != NULL);
    CHECK(strstr(s, "\"torch_dtype\": \"float32\"") != NULL);
    CHECK(strstr(s, "\"eos_token_id\": [\n    128001,\n    128008,\n    128009\n  ]") != NULL);
    CHECK_OK(parse(s, &back));
    CHECK(memcmp(&c, &back, sizeof c) == 0);
    free(s);

    /* awkward floats come out as their shortest round-tripping form */
    cm_config_defaults_hf(&c);
    c.norm_eps = 1e-6f;
    c.rope_theta = 1234.5678f;
    c.bos_id = -1;
    c.n_eos = 0;
    c.rope_scaling = CM_ROPE_SCALING_LINEAR;
    c.rope_factor = 0.1f;
    c.tie_embeddings = true;
    CHECK_OK(cm_config_to_hf_json(&c, "float16", &s));
    CHECK(strstr(s, "\"rms_norm_eps\": 1e-6,") != NULL);
    CHECK(strstr(s, "\"rope_theta\": 1234.5677999999999") == NULL);
    CHECK(strstr(s, "\"rope_theta\": 1234.56775,") != NULL ||
          strstr(s, "\"rope_theta\": 1234.5677,") != NULL || strstr(s, "\"rope_theta\": 1234.5678,") != NULL);
    CHECK(strstr(s, "\"factor\": 0.1,") != NULL);
    CHECK(strstr(s, "\"bos_token_id\": null") != NULL && strstr(s, "\"eos_token_id\": null") != NULL);
    CHECK(strstr(s, "\"tie_word_embeddings\": true") != NULL);
    CHECK_OK(parse(s, &back));
    CHECK(memcmp(&c, &back, sizeof c) == 0);
    free(s);

    CHECK_FAIL(cm_config_to_hf_json(&c, "int8", &s), "torch_dtype \"int8\"");
    c.n_heads = 0;
    CHECK_FAIL(cm_config_to_hf_json(&c, "float32", &s), "n_heads");
}

static void test_load(void) {
    char *dir = cm_test_tmpdir();
    char *path = cm_path_join(dir, "config.json");
    CHECK_OK(cm_write_file_atomic(path, tinyllama, strlen(tinyllama)));
    cm_config c;
    CHECK_OK(cm_config_load_hf(path, &c));
    CHECK(c.n_kv_heads == 4 && c.n_layers == 22);
    const char *bad = "{\"hidden_size\": \"big\"}";
    CHECK_OK(cm_write_file_atomic(path, bad, strlen(bad)));
    CHECK_FAIL(cm_config_load_hf(path, &c), path);
    CHECK_FAIL(cm_config_load_hf(path, &c), "hidden_size");
    remove(path);
    CHECK_FAIL(cm_config_load_hf(path, &c), "cannot open");
    remove(dir);
    free(path);
    free(dir);
}

int main(void) {
    test_defaults();
    test_gqa();
    test_rope_linear();
    test_rope_llama3();
    test_rope_v5();
    test_unsupported();
    test_bad_types();
    test_validate();
    test_write();
    test_load();
    CHECK_DONE();
}
