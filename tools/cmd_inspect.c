#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/gguf.h"
#include "camelid/model.h"
#include "commands.h"

static const char *help =
    "usage: camelid inspect PATH [options]\n"
    "\n"
    "Show what PATH holds: a model (HF folder, .safetensors, .gguf, llama2.c .bin) — its config with "
    "defaults\n"
    "filled in, its tensor table (name, dtype, shape, bytes) and its tokenizer — or a tokenizer file\n"
    "(tokenizer.model, tokenizer.bin, a vocabulary-only .gguf). It validates as a load would and fails the "
    "same\n"
    "way on bad input.\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE   check this tokenizer against the model\n"
    "  --no-tensors       leave out the tensor table\n"
    "  -t, --threads N    threads (accepted for uniformity)\n"
    "  -h, --help         this help\n";

static const char *rope_scaling_name(cm_rope_scaling s) {
    switch (s) {
    case CM_ROPE_SCALING_NONE:
        return "none";
    case CM_ROPE_SCALING_LINEAR:
        return "linear";
    case CM_ROPE_SCALING_LLAMA3:
        return "llama3";
    }
    return "?";
}

static void print_tokenizer(const cm_tokenizer *t) {
    printf("tokenizer:\n");
    printf("  type                  SentencePiece BPE (byte fallback)\n");
    printf("  vocab_size            %d\n", cm_tokenizer_vocab_size(t));
    printf("  bos / eos / unk       %d / %d / %d\n", cm_tokenizer_bos(t), cm_tokenizer_eos(t),
           cm_tokenizer_unk(t));
    printf("  add_bos               %s\n", cm_tokenizer_add_bos(t) ? "true" : "false");
    int n_byte = 0, n_control = 0;
    for (int i = 0; i < cm_tokenizer_vocab_size(t); i++) {
        cm_token_type ty = cm_tokenizer_type(t, i);
        n_byte += ty == CM_TOKEN_BYTE;
        n_control += ty == CM_TOKEN_CONTROL;
    }
    printf("  byte / control tokens %d / %d\n", n_byte, n_control);
}

static void print_shape(int ndim, const int64_t *shape) {
    char buf[160];
    size_t k = 0;
    k += (size_t)snprintf(buf + k, sizeof buf - k, "[");
    for (int i = 0; i < ndim && k < sizeof buf; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < sizeof buf) snprintf(buf + k, sizeof buf - k, "]");
    printf("%-16s", buf);
}

static int print_tensor(void *user, const char *name, const char *dtype, int ndim, const int64_t *shape,
                        size_t nbytes) {
    (void)user;
    printf("  %-48s %-6s ", name, dtype);
    print_shape(ndim, shape);
    printf(" %12zu\n", nbytes);
    return 0;
}

static void print_config(const cm_model *m) {
    const cm_config *c = &m->cfg;
    printf("config:\n");
    printf("  dim (hidden_size)     %d\n", c->dim);
    printf("  hidden_dim (ffn)      %d\n", c->hidden_dim);
    printf("  n_layers              %d\n", c->n_layers);
    printf("  n_heads               %d\n", c->n_heads);
    printf("  n_kv_heads            %d%s\n", c->n_kv_heads, c->n_kv_heads != c->n_heads ? " (GQA)" : "");
    printf("  head_dim              %d\n", c->head_dim);
    printf("  vocab_size            %d\n", c->vocab_size);
    printf("  seq_len               %d\n", c->seq_len);
    printf("  norm_eps              %g\n", c->norm_eps);
    printf("  rope_theta            %g\n", c->rope_theta);
    printf("  rope_scaling          %s", rope_scaling_name(c->rope_scaling));
    if (c->rope_scaling == CM_ROPE_SCALING_LINEAR) printf(" (factor %g)", c->rope_factor);
    if (c->rope_scaling == CM_ROPE_SCALING_LLAMA3)
        printf(" (factor %g, low %g, high %g, original context %d)", c->rope_factor, c->rope_low_freq_factor,
               c->rope_high_freq_factor, c->rope_original_max_pos);
    printf("\n");
    printf("  rope_layout           %s\n",
           c->rope_layout == CM_ROPE_HALF ? "rotate-half (HF)" : "interleaved");
    printf("  tie_embeddings        %s\n", c->tie_embeddings ? "true" : "false");
    printf("  bos_id                %d\n", c->bos_id);
    printf("  eos_ids              ");
    for (int i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("\n");
    double n = (double)cm_model_n_params(m);
    printf("  parameters            %.0f (%.2fM)\n", n, n / 1e6);
}

/* Tokenizer-only files: tokenizer.model, a llama2.c tokenizer.bin, a vocabulary-only GGUF, a folder without
 * config.json. */
static int looks_like_tokenizer(const char *path) {
    if (cm_path_has_suffix(path, ".model")) return 1;
    if (cm_path_is_dir(path)) {
        char *cfg = cm_path_join(path, "config.json");
        int has = cfg && cm_path_exists(cfg);
        free(cfg);
        return !has;
    }
    if (cm_path_has_suffix(path, ".gguf")) {
        cm_gguf *g;
        if (cm_gguf_open(path, &g) != CM_OK) return 0;
        int vocab_only = cm_gguf_tensor_count(g) == 0;
        cm_gguf_close(g);
        return vocab_only;
    }
    return 0;
}

static int inspect_tokenizer(const char *path) {
    cm_tokenizer *t;
    if (cm_tokenizer_open(path, 0, &t) != CM_OK) return cli_fail_status();
    printf("path: %s\n", path);
    print_tokenizer(t);
    cm_tokenizer_close(t);
    return 0;
}

int cmd_inspect(int argc, char **argv) {
    const char *tok_path = NULL;
    bool no_tensors = false;
    int threads = 1;
    arg_spec specs[] = {
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"no-tensors", 0, ARG_FLAG, &no_tensors, NULL},
    };
    const char *pos[2];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 2);
    const char *path = pos[0], *extra = pos[1];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!path) return cli_fail("inspect needs a PATH (see camelid inspect --help)");
    if (extra) return cli_fail("inspect takes one PATH, got an extra argument \"%s\"", extra);
    if (!cm_path_exists(path)) return cli_fail("%s: no such file or folder", path);
    if (looks_like_tokenizer(path)) return inspect_tokenizer(path);

    cm_model *m;
    cm_status st = cm_model_open(path, &m);
    if (st != CM_OK) {
        /* a llama2.c tokenizer.bin is not a model: show it as a tokenizer if it parses as one */
        if (cm_path_has_suffix(path, ".bin")) {
            char saved[1024];
            snprintf(saved, sizeof saved, "%s", cm_last_error());
            cm_tokenizer *t;
            if (cm_tokenizer_open(path, 0, &t) == CM_OK) {
                cm_tokenizer_close(t);
                return inspect_tokenizer(path);
            }
            return cli_fail("%s", saved);
        }
        return cli_fail_status();
    }
    const cm_tokenizer *tok = NULL;
    cm_tokenizer *owned = NULL;
    st = cm_model_tokenizer(m, tok_path, &tok, &owned);
    if (st != CM_OK && (tok_path || st != CM_ERR_NOT_FOUND)) {
        cm_model_close(m);
        return cli_fail_status();
    }
    printf("path: %s\n", path);
    printf("format: %s\n", cm_model_format_name(m->format));
    print_config(m);
    if (!no_tensors) {
        printf("tensors:\n");
        cm_model_visit_tensors(m, print_tensor, NULL);
    }
    if (tok)
        print_tokenizer(tok);
    else
        printf("tokenizer: none found (pass --tokenizer FILE)\n");
    cm_tokenizer_close(owned);
    cm_model_close(m);
    return 0;
}
