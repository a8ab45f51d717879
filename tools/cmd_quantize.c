#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "camelid/model.h"
#include "camelid/quantize.h"
#include "commands.h"

static const char *help =
    "usage: camelid quantize IN OUT --type q8_0|q4_0 [options]\n"
    "\n"
    "Quantize a model (HF folder, .safetensors, .gguf, llama2.c .bin) to a GGUF file that llama.cpp loads,\n"
    "the tokenizer carried over. The blocks are ggml's, quantized as ggml does, so the tensor bytes equal\n"
    "llama-quantize's for the same input. Types per tensor (llama-quantize's default mix):\n"
    "  q8_0   every 2-D weight Q8_0;\n"
    "  q4_0   every 2-D weight Q4_0, except the output head (the token embedding when tied): Q6_K\n"
    "         (Q8_0 if its rows are not a multiple of 256).\n"
    "Norms stay F32. A weight whose rows are not a multiple of 32 stays as it is (llama-quantize refuses "
    "it).\n"
    "\n"
    "options:\n"
    "  --type q8_0|q4_0    the quantization (required)\n"
    "  --pure              every 2-D weight gets the type, the output head included (llama-quantize --pure)\n"
    "  --tokenizer FILE    tokenizer to embed (default: the model's own, or one beside it)\n"
    "  -t, --threads N     threads (default: all cores)\n"
    "  -h, --help          this help\n";

int cmd_quantize(int argc, char **argv) {
    const char *type_name = NULL, *tok_path = NULL;
    bool pure = false;
    int threads = cli_default_threads();
    arg_spec specs[] = {
        {"type", 0, ARG_STRING, &type_name, NULL},
        {"pure", 0, ARG_FLAG, &pure, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
    };
    const char *pos[3];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 3);
    const char *in = pos[0], *out = pos[1], *extra = pos[2];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!in || !out) return cli_fail("quantize needs IN and OUT (see camelid quantize --help)");
    if (extra) return cli_fail("quantize takes IN and OUT, got an extra argument \"%s\"", extra);
    if (!type_name) return cli_fail("quantize needs --type q8_0 or --type q4_0");
    cm_dtype type;
    if (!strcasecmp(type_name, "q8_0"))
        type = CM_DTYPE_Q8_0;
    else if (!strcasecmp(type_name, "q4_0"))
        type = CM_DTYPE_Q4_0;
    else
        return cli_fail("--type must be q8_0 or q4_0, got \"%s\"", type_name);
    cm_model *m;
    const cm_tokenizer *tok;
    cm_tokenizer *owned;
    if (cli_open_model(in, tok_path, true, &m, &tok, &owned) != 0) return 1;
    cm_quantize_stats stats;
    cm_status st = cm_model_quantize(m, type, pure, threads, &stats);
    if (st == CM_OK) st = cm_model_save_gguf(m, tok, out, CM_DTYPE_COUNT);
    cm_tokenizer_close(owned);
    cm_model_close(m);
    if (st != CM_OK) return cli_fail_status();
    struct stat sb;
    double mib = stat(out, &sb) == 0 ? (double)sb.st_size / (1024.0 * 1024.0) : 0.0;
    fprintf(stderr, "camelid: wrote %s (%.2f MiB): %d Q8_0, %d Q4_0, %d Q6_K weights, %d left as they were\n",
            out, mib, stats.n_q8_0, stats.n_q4_0, stats.n_q6_K, stats.n_kept);
    return 0;
}
