#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "camelid/model.h"
#include "commands.h"

static const char *help =
    "usage: camelid convert IN OUT --to hf|gguf [options]\n"
    "\n"
    "Convert a model (HF folder, .safetensors, .gguf, llama2.c .bin). With --to hf, OUT is a folder that\n"
    "transformers loads (config.json, model.safetensors, tokenizer.model + tokenizer_config.json when a\n"
    "tokenizer is known); with --to gguf, OUT is a .gguf file that llama.cpp loads (the tokenizer embedded, "
    "or\n"
    "tokenizer.ggml.model = \"no_vocab\" without one). q/k rows are permuted between RoPE layouts as "
    "needed.\n"
    "\n"
    "options:\n"
    "  --to hf|gguf        output format (required)\n"
    "  --tokenizer FILE    tokenizer to embed or copy (default: the model's own, or one beside it)\n"
    "  --dtype f32|f16|bf16  weight type to write (default: keep each tensor's)\n"
    "  -t, --threads N     threads (accepted for uniformity)\n"
    "  -h, --help          this help\n";

int cmd_convert(int argc, char **argv) {
    const char *to = NULL, *tok_path = NULL, *dtype_name = NULL;
    int threads = 1;
    arg_spec specs[] = {
        {"to", 0, ARG_STRING, &to, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"dtype", 0, ARG_STRING, &dtype_name, NULL},
    };
    const char *pos[3];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 3);
    const char *in = pos[0], *out = pos[1], *extra = pos[2];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!in || !out) return cli_fail("convert needs IN and OUT (see camelid convert --help)");
    if (extra) return cli_fail("convert takes IN and OUT, got an extra argument \"%s\"", extra);
    if (!to) return cli_fail("convert needs --to hf or --to gguf");
    bool to_hf = !strcasecmp(to, "hf"), to_gguf = !strcasecmp(to, "gguf");
    if (!to_hf && !to_gguf) return cli_fail("--to must be hf or gguf, got \"%s\"", to);
    cm_dtype dtype = CM_DTYPE_COUNT;
    if (dtype_name) {
        if (!strcasecmp(dtype_name, "f32"))
            dtype = CM_DTYPE_F32;
        else if (!strcasecmp(dtype_name, "f16"))
            dtype = CM_DTYPE_F16;
        else if (!strcasecmp(dtype_name, "bf16"))
            dtype = CM_DTYPE_BF16;
        else
            return cli_fail("--dtype must be f32, f16 or bf16, got \"%s\"", dtype_name);
    }
    cm_model *m;
    const cm_tokenizer *tok;
    cm_tokenizer *owned;
    if (cli_open_model(in, tok_path, true, &m, &tok, &owned) != 0) return 1;
    cm_status st = to_hf ? cm_model_save_hf(m, tok, out, dtype) : cm_model_save_gguf(m, tok, out, dtype);
    cm_tokenizer_close(owned);
    cm_model_close(m);
    if (st != CM_OK) return cli_fail_status();
    fprintf(stderr, "camelid: wrote %s\n", out);
    return 0;
}
