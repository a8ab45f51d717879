#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "camelid/model.h"
#include "camelid/nf4_hf.h"
#include "camelid/quantize.h"
#include "commands.h"

static const char *help =
    "usage: camelid quantize IN OUT --type q8_0|q4_0|nf4 [options]\n"
    "\n"
    "Quantize a model (HF folder, .safetensors, .gguf, llama2.c .bin).\n"
    "\n"
    "q8_0, q4_0: OUT is a GGUF file that llama.cpp loads, the tokenizer carried over. The blocks are ggml's,\n"
    "quantized as ggml does, so the tensor bytes equal llama-quantize's for the same input. Types per tensor\n"
    "(llama-quantize's default mix):\n"
    "  q8_0   every 2-D weight Q8_0;\n"
    "  q4_0   every 2-D weight Q4_0, except the output head (the token embedding when tied): Q6_K\n"
    "         (Q8_0 if its rows are not a multiple of 256).\n"
    "Norms stay F32. A weight whose rows are not a multiple of 32 stays as it is (llama-quantize refuses "
    "it).\n"
    "\n"
    "nf4: OUT is a Hugging Face folder in the bitsandbytes 4-bit layout that transformers loads: the seven\n"
    "linears of every decoder block in NF4 (blocks of 64 over the flattened weight, codes and scales exactly as\n"
    "bitsandbytes makes them; with double quantization of the scales unless --no-double-quant), the\n"
    "embedding, output head and norms in BF16, config.json with its quantization_config, and the input\n"
    "folder's tokenizer files and tokenizer_config.json (or files made from --tokenizer, or from a GGUF's or\n"
    "llama2.c model's tokenizer). Streams: one slice of one weight in memory at a time.\n"
    "\n"
    "options:\n"
    "  --type q8_0|q4_0|nf4  the quantization (required)\n"
    "  --pure              q8_0/q4_0: every 2-D weight gets the type, the output head included\n"
    "                      (llama-quantize --pure)\n"
    "  --no-double-quant   nf4: keep the block scales in f32 (bnb_4bit_use_double_quant false)\n"
    "  --tokenizer FILE    tokenizer to embed (default: the model's own, or one beside it)\n"
    "  -t, --threads N     threads (default: all cores)\n"
    "  -h, --help          this help\n";

static int quantize_nf4(const char *in, const char *out, const char *tok_path, bool double_quant, int threads) {
    cm_model *m;
    const cm_tokenizer *tok;
    cm_tokenizer *owned;
    if (cli_open_model(in, tok_path, true, &m, &tok, &owned) != 0) return 1;
    /* an HF input's own tokenizer files are copied as they are; anything else is written from the tokenizer */
    bool hf_in = m->format == CM_FORMAT_HF || m->format == CM_FORMAT_SAFETENSORS;
    cm_nf4_save_stats stats;
    cm_status st = cm_model_save_nf4(m, tok_path || !hf_in ? tok : NULL, out, double_quant, threads, &stats);
    cm_tokenizer_close(owned);
    cm_model_close(m);
    if (st != CM_OK) return cli_fail_status();
    fprintf(stderr, "camelid: wrote %s (model.safetensors %.2f MiB): %d NF4 linears%s, %d BF16 tensors\n", out,
            (double)stats.bytes / (1024.0 * 1024.0), stats.n_nf4, double_quant ? " (double quantization)" : "",
            stats.n_16bit);
    return 0;
}

int cmd_quantize(int argc, char **argv) {
    const char *type_name = NULL, *tok_path = NULL;
    bool pure = false, no_double_quant = false;
    int threads = cli_default_threads();
    arg_spec specs[] = {
        {"type", 0, ARG_STRING, &type_name, NULL},
        {"pure", 0, ARG_FLAG, &pure, NULL},
        {"no-double-quant", 0, ARG_FLAG, &no_double_quant, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
    };
    const char *pos[3];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 3);
    const char *in = pos[0], *out = pos[1], *extra = pos[2];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!in || !out) return cli_fail("quantize needs IN and OUT (see camelid quantize --help)");
    if (extra) return cli_fail("quantize takes IN and OUT, got an extra argument \"%s\"", extra);
    if (!type_name) return cli_fail("quantize needs --type q8_0, q4_0 or nf4");
    cm_dtype type;
    if (!strcasecmp(type_name, "q8_0"))
        type = CM_DTYPE_Q8_0;
    else if (!strcasecmp(type_name, "q4_0"))
        type = CM_DTYPE_Q4_0;
    else if (!strcasecmp(type_name, "nf4"))
        type = CM_DTYPE_NF4;
    else
        return cli_fail("--type must be q8_0, q4_0 or nf4, got \"%s\"", type_name);
    if (type == CM_DTYPE_NF4) {
        if (pure) return cli_fail("--pure is for q8_0/q4_0 (nf4 quantizes exactly the decoder-block linears)");
        return quantize_nf4(in, out, tok_path, !no_double_quant, threads);
    }
    if (no_double_quant) return cli_fail("--no-double-quant is for --type nf4");
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
