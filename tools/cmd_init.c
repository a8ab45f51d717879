#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/model.h"
#include "commands.h"

static const char *help =
    "usage: camelid init (--shape NAME | --config config.json) --random [--seed S] [--tokenizer FILE] OUT\n"
    "\n"
    "Write a Hugging Face folder (config.json, model.safetensors in F32) with random weights: N(0, 0.02)\n"
    "matrices and norms of 1.0, for benchmarks and for training from scratch.\n"
    "\n"
    "options:\n"
    "  --shape NAME       stories260K, stories15M, stories42M, stories110M, smollm-135m, tinyllama-1.1b,\n"
    "                     llama2-7b (FACTS 1.7)\n"
    "  --config FILE      an HF config.json giving the shape instead\n"
    "  --random           random weights (required: the only kind of initialisation so far)\n"
    "  --seed S           seed of the weights (default 0)\n"
    "  --tokenizer FILE   copy this tokenizer into OUT (so that convert --to gguf embeds it)\n"
    "  -t, --threads N    threads (accepted for uniformity)\n"
    "  -h, --help         this help\n";

int cmd_init(int argc, char **argv) {
    const char *shape = NULL, *config = NULL, *tok_path = NULL;
    bool random = false;
    uint64_t seed = 0;
    int threads = 1;
    arg_spec specs[] = {
        {"shape", 0, ARG_STRING, &shape, NULL},        {"config", 0, ARG_STRING, &config, NULL},
        {"random", 0, ARG_FLAG, &random, NULL},        {"seed", 's', ARG_U64, &seed, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
    };
    const char *pos[2];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 2);
    const char *out = pos[0], *extra = pos[1];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!out) return cli_fail("init needs an OUT folder (see camelid init --help)");
    if (extra) return cli_fail("init takes one OUT folder, got an extra argument \"%s\"", extra);
    if (!random) return cli_fail("init needs --random (random weights are the only initialisation so far)");
    if (!shape == !config) return cli_fail("init needs exactly one of --shape NAME and --config FILE");
    cm_config c;
    if (shape ? cm_config_from_shape(shape, &c) != CM_OK : cm_config_load_hf(config, &c) != CM_OK)
        return cli_fail_status();
    if (config)
        c.rope_layout = CM_ROPE_INTERLEAVED; /* weights are drawn, so either layout is a valid model */
    cm_tokenizer *tok = NULL;
    if (tok_path) {
        if (cm_tokenizer_open(tok_path, c.vocab_size, &tok) != CM_OK) return cli_fail_status();
        if (cm_tokenizer_vocab_size(tok) > c.vocab_size) {
            int n = cm_tokenizer_vocab_size(tok);
            cm_tokenizer_close(tok);
            return cli_fail("%s: the tokenizer has %d tokens, more than the shape's vocabulary of %d",
                            tok_path, n, c.vocab_size);
        }
    }
    cm_model *m;
    if (cm_model_init_random(&c, seed, &m) != CM_OK) {
        cm_tokenizer_close(tok);
        return cli_fail_status();
    }
    cm_status st = cm_model_save_hf(m, tok, out, CM_DTYPE_F32);
    double params = (double)cm_model_n_params(m);
    cm_model_close(m);
    cm_tokenizer_close(tok);
    if (st != CM_OK) return cli_fail_status();
    fprintf(stderr, "camelid: wrote %s (%.1fM parameters, random, seed %llu)\n", out, params / 1e6,
            (unsigned long long)seed);
    return 0;
}
