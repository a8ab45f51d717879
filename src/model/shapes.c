/* Named model shapes (FACTS 1.7) for `camelid init --shape` and benchmarks. */
#include <string.h>

#include "camelid/config.h"

static const struct {
    const char *name;
    int dim, hidden, layers, heads, kv_heads, vocab, ctx;
    bool tied;
} shapes[] = {
    {"stories260K", 64, 172, 5, 8, 4, 512, 512, true},
    {"stories15M", 288, 768, 6, 6, 6, 32000, 256, true},
    {"stories42M", 512, 1376, 8, 8, 8, 32000, 1024, true},
    {"stories110M", 768, 2048, 12, 12, 12, 32000, 1024, true},
    {"smollm-135m", 576, 1536, 30, 9, 3, 49152, 2048, true},
    {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 2048, false},
    {"llama2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, false},
};

const char *cm_config_shape_names(void) {
    return "stories260K, stories15M, stories42M, stories110M, smollm-135m, tinyllama-1.1b, llama2-7b";
}

cm_status cm_config_from_shape(const char *name, cm_config *out) {
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        if (strcmp(name, shapes[i].name) != 0) continue;
        memset(out, 0, sizeof *out);
        out->dim = shapes[i].dim;
        out->hidden_dim = shapes[i].hidden;
        out->n_layers = shapes[i].layers;
        out->n_heads = shapes[i].heads;
        out->n_kv_heads = shapes[i].kv_heads;
        out->head_dim = shapes[i].dim / shapes[i].heads;
        out->vocab_size = shapes[i].vocab;
        out->seq_len = shapes[i].ctx;
        out->norm_eps = 1e-5f;
        out->rope_theta = 10000.0f;
        out->rope_layout = CM_ROPE_INTERLEAVED;
        out->tie_embeddings = shapes[i].tied;
        /* SmolLM's BPE vocabulary has <|endoftext|> = 0 as BOS and EOS; the Llama vocabularies 1 and 2 */
        bool smollm = strncmp(name, "smollm", 6) == 0;
        out->bos_id = smollm ? 0 : 1;
        out->eos_ids[0] = smollm ? 0 : 2;
        out->n_eos = 1;
        return CM_OK;
    }
    return cm_error(CM_ERR_ARG, "unknown shape \"%s\" (known: %s)", name, cm_config_shape_names());
}
