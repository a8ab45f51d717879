/* llama2.c checkpoints (FACTS 1.6): v0 (7 x int32 header, negative vocab = separate classifier) and v1
 * ("ak42" magic, 256-byte header, norms first). All f32, stacked over layers, [out, in] rows. */
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "model/model_internal.h"

#define LLAMA2C_MAGIC 0x616b3432u
#define LLAMA2C_V1_HEADER 256

typedef struct {
    const uint8_t *data;
    size_t size, pos; /* pos in bytes */
    const char *name;
} cursor;

/* Take `n` floats from the cursor (size checked by the caller beforehand). */
static const float *take(cursor *c, size_t n) {
    const float *p = (const float *)(c->data + c->pos);
    c->pos += n * sizeof(float);
    return p;
}

static int32_t read_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static cm_weight weight_at(const float *p, int64_t rows, int64_t cols) {
    cm_weight w = {CM_DTYPE_F32, rows, cols, p};
    return w;
}

/* Element counts of the checkpoint's sections; returns 0 on overflow. */
static int section_floats(const cm_config *c, bool shared, int version, size_t *total) {
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim, L = (size_t)c->n_layers,
           V = (size_t)c->vocab_size;
    size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_dim, hs = (size_t)c->head_dim,
           T = (size_t)c->seq_len;
    size_t parts[16], np = 0, t;
    if (cm_mul_size(V, dim, &parts[np++])) return 0; /* tok_emb */
    if (cm_mul_size(L, dim, &parts[np++])) return 0; /* rms_att */
    if (cm_mul_size(L, dim, &parts[np++])) return 0; /* rms_ffn */
    parts[np++] = dim;                               /* rms_final */
    if (cm_mul_size(dim, dim, &t) || cm_mul_size(L, t, &t)) return 0;
    parts[np++] = t; /* wq */
    parts[np++] = t; /* wo */
    if (cm_mul_size(kv_dim, dim, &t) || cm_mul_size(L, t, &t)) return 0;
    parts[np++] = t; /* wk */
    parts[np++] = t; /* wv */
    if (cm_mul_size(hid, dim, &t) || cm_mul_size(L, t, &t)) return 0;
    parts[np++] = t; /* w1 */
    parts[np++] = t; /* w2 */
    parts[np++] = t; /* w3 */
    if (version == 0) {
        if (cm_mul_size(T, hs, &t)) return 0; /* freq_cis real + imag: 2 x T x hs/2 */
        parts[np++] = t;
    }
    if (!shared && cm_mul_size(V, dim, &parts[np++])) return 0;
    size_t sum = 0;
    for (size_t i = 0; i < np; i++)
        if (cm_add_size(sum, parts[i], &sum)) return 0;
    *total = sum;
    return 1;
}

cm_status cm_model_parse_llama2c(const void *data, size_t size, const char *name, cm_model **out) {
    *out = NULL;
    const uint8_t *bytes = data;
    int version = 0;
    size_t header = 28;
    const uint8_t *h = bytes;
    if (size >= 4 && read_i32(bytes) == (int32_t)LLAMA2C_MAGIC) {
        if (size < LLAMA2C_V1_HEADER)
            return cm_error(CM_ERR_FORMAT, "%s: llama2.c v1 header needs %d bytes, file has %zu", name,
                            LLAMA2C_V1_HEADER, size);
        version = read_i32(bytes + 4);
        if (version != 1)
            return cm_error(CM_ERR_UNSUPPORTED,
                            "%s: llama2.c checkpoint version %d is not supported (only v0 and v1 fp32)", name,
                            version);
        h = bytes + 8;
        header = LLAMA2C_V1_HEADER;
    } else if (size < 28) {
        return cm_error(CM_ERR_FORMAT, "%s: %zu bytes is too small for a llama2.c header (28 bytes)", name,
                        size);
    }
    int32_t dim = read_i32(h), hidden = read_i32(h + 4), layers = read_i32(h + 8), heads = read_i32(h + 12),
            kv_heads = read_i32(h + 16), vocab = read_i32(h + 20), seq_len = read_i32(h + 24);
    bool shared = version == 1 ? bytes[36] != 0 : vocab > 0;
    if (vocab == INT32_MIN) vocab = 0;
    if (vocab < 0) vocab = -vocab;

    cm_config c;
    memset(&c, 0, sizeof c);
    c.dim = dim;
    c.hidden_dim = hidden;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.vocab_size = vocab;
    c.seq_len = seq_len;
    c.head_dim = heads > 0 ? dim / heads : 0;
    c.norm_eps = 1e-5f; /* run.c hard-codes these */
    c.rope_theta = 10000.0f;
    c.rope_layout = CM_ROPE_INTERLEAVED;
    c.tie_embeddings = shared;
    c.bos_id = 1;
    c.eos_ids[0] = 2;
    c.n_eos = 1;
    if (heads > 0 && dim % heads != 0)
        return cm_error(CM_ERR_FORMAT, "%s: header: dim %d is not divisible by n_heads %d", name, dim, heads);
    CM_TRY(cm_config_validate(&c, name));

    size_t n_floats, need;
    if (!section_floats(&c, shared, version, &n_floats) || cm_mul_size(n_floats, 4, &need) ||
        cm_add_size(need, header, &need))
        return cm_error(CM_ERR_FORMAT, "%s: header sizes overflow", name);
    if (size != need)
        return cm_error(
            CM_ERR_FORMAT,
            "%s: file is %zu bytes but the header (dim %d, hidden %d, layers %d, heads %d, kv heads %d, "
            "vocab %d, seq_len %d, %s classifier) needs exactly %zu",
            name, size, dim, hidden, layers, heads, kv_heads, vocab, seq_len, shared ? "shared" : "separate",
            need);

    cm_model *m;
    CM_TRY(cm_model_alloc(&m, name, CM_FORMAT_LLAMA2C));
    m->cfg = c;
    m->layers = calloc((size_t)layers, sizeof *m->layers);
    if (!m->layers) {
        cm_model_close(m);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", name);
    }
    size_t D = (size_t)dim, H = (size_t)hidden, KV = (size_t)kv_heads * (size_t)c.head_dim, V = (size_t)vocab;
    cursor cur = {bytes, size, header, name};
    /* every path below sets all four (version is 0 or 1 here); NULL keeps -O3 -fsanitize builds from warning */
    const float *rms_att = NULL, *rms_ffn = NULL, *rms_final = NULL, *emb = NULL;
    if (version == 1) {
        rms_att = take(&cur, (size_t)layers * D);
        rms_ffn = take(&cur, (size_t)layers * D);
        rms_final = take(&cur, D);
        emb = take(&cur, V * D);
    } else {
        emb = take(&cur, V * D);
        rms_att = take(&cur, (size_t)layers * D);
    }
    const float *wq = take(&cur, (size_t)layers * D * D);
    const float *wk = take(&cur, (size_t)layers * KV * D);
    const float *wv = take(&cur, (size_t)layers * KV * D);
    const float *wo = take(&cur, (size_t)layers * D * D);
    if (version == 0) rms_ffn = take(&cur, (size_t)layers * D);
    const float *w1 = take(&cur, (size_t)layers * H * D);
    const float *w2 = take(&cur, (size_t)layers * D * H);
    const float *w3 = take(&cur, (size_t)layers * H * D);
    if (version == 0) {
        rms_final = take(&cur, D);
        take(&cur, (size_t)seq_len * (size_t)c.head_dim); /* unused freq_cis tables */
    }
    m->tok_embd = weight_at(emb, vocab, dim);
    m->out_norm = rms_final;
    m->output = shared ? m->tok_embd : weight_at(take(&cur, V * D), vocab, dim);
    for (int l = 0; l < layers; l++) {
        cm_layer *L = &m->layers[l];
        L->attn_norm = rms_att + (size_t)l * D;
        L->ffn_norm = rms_ffn + (size_t)l * D;
        L->wq = weight_at(wq + (size_t)l * D * D, dim, dim);
        L->wk = weight_at(wk + (size_t)l * KV * D, (int64_t)KV, dim);
        L->wv = weight_at(wv + (size_t)l * KV * D, (int64_t)KV, dim);
        L->wo = weight_at(wo + (size_t)l * D * D, dim, dim);
        L->w_gate = weight_at(w1 + (size_t)l * H * D, hidden, dim);
        L->w_down = weight_at(w2 + (size_t)l * D * H, dim, hidden);
        L->w_up = weight_at(w3 + (size_t)l * H * D, hidden, dim);
    }
    *out = m;
    return CM_OK;
}

cm_status cm_model_open_llama2c(const char *path, cm_model **out) {
    *out = NULL;
    cm_mmap *map;
    CM_TRY(cm_mmap_open(path, &map));
    cm_model *m;
    cm_status st = cm_model_parse_llama2c(map->data, map->size, path, &m);
    if (st != CM_OK) {
        cm_mmap_close(map);
        return st;
    }
    st = cm_model_keep_mmap(m, map);
    if (st != CM_OK) {
        cm_model_close(m);
        return st;
    }
    *out = m;
    return CM_OK;
}
