#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/gguf.h"
#include "camelid/kernels.h"
#include "camelid/nf4.h"
#include "camelid/safetensors.h"
#include "model/model_internal.h"

struct cm_model_storage {
    void **buffers;
    size_t n_buffers, cap_buffers;
    cm_mmap **maps;
    size_t n_maps;
    cm_gguf **ggufs;
    size_t n_ggufs;
    cm_safetensors **sts;
    size_t n_sts;
};

const cm_tensor_names cm_names_hf = {
    .embd = "model.embed_tokens.weight",
    .norm = "model.norm.weight",
    .output = "lm_head.weight",
    .attn_norm = "model.layers.%d.input_layernorm.weight",
    .wq = "model.layers.%d.self_attn.q_proj.weight",
    .wk = "model.layers.%d.self_attn.k_proj.weight",
    .wv = "model.layers.%d.self_attn.v_proj.weight",
    .wo = "model.layers.%d.self_attn.o_proj.weight",
    .ffn_norm = "model.layers.%d.post_attention_layernorm.weight",
    .w_gate = "model.layers.%d.mlp.gate_proj.weight",
    .w_up = "model.layers.%d.mlp.up_proj.weight",
    .w_down = "model.layers.%d.mlp.down_proj.weight",
};

const cm_tensor_names cm_names_gguf = {
    .embd = "token_embd.weight",
    .norm = "output_norm.weight",
    .output = "output.weight",
    .attn_norm = "blk.%d.attn_norm.weight",
    .wq = "blk.%d.attn_q.weight",
    .wk = "blk.%d.attn_k.weight",
    .wv = "blk.%d.attn_v.weight",
    .wo = "blk.%d.attn_output.weight",
    .ffn_norm = "blk.%d.ffn_norm.weight",
    .w_gate = "blk.%d.ffn_gate.weight",
    .w_up = "blk.%d.ffn_up.weight",
    .w_down = "blk.%d.ffn_down.weight",
};

const char *cm_model_format_name(cm_model_format f) {
    switch (f) {
    case CM_FORMAT_LLAMA2C:
        return "llama2.c";
    case CM_FORMAT_GGUF:
        return "GGUF";
    case CM_FORMAT_HF:
        return "Hugging Face folder";
    case CM_FORMAT_SAFETENSORS:
        return "safetensors";
    }
    return "?";
}

cm_status cm_model_alloc(cm_model **out, const char *path, cm_model_format format) {
    cm_model *m = calloc(1, sizeof *m);
    if (m) m->storage = calloc(1, sizeof *m->storage);
    if (m && m->storage) m->path = strdup(path);
    if (!m || !m->storage || !m->path) {
        if (m) free(m->storage);
        free(m);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    }
    m->format = format;
    *out = m;
    return CM_OK;
}

void cm_model_close(cm_model *m) {
    if (!m) return;
    cm_model_storage *s = m->storage;
    if (s) {
        for (size_t i = 0; i < s->n_buffers; i++) free(s->buffers[i]);
        free(s->buffers);
        for (size_t i = 0; i < s->n_maps; i++) cm_mmap_close(s->maps[i]);
        free(s->maps);
        for (size_t i = 0; i < s->n_ggufs; i++) cm_gguf_close(s->ggufs[i]);
        free(s->ggufs);
        for (size_t i = 0; i < s->n_sts; i++) cm_safetensors_close(s->sts[i]);
        free(s->sts);
        free(s);
    }
    cm_tokenizer_close(m->tokenizer);
    free(m->layers);
    free(m->path);
    free(m);
}

cm_status cm_model_keep(cm_model *m, void *buffer) {
    cm_model_storage *s = m->storage;
    if (s->n_buffers == s->cap_buffers) {
        size_t cap = s->cap_buffers ? 2 * s->cap_buffers : 16;
        void **b = realloc(s->buffers, cap * sizeof *b);
        if (!b) {
            free(buffer);
            return cm_error(CM_ERR_NOMEM, "out of memory");
        }
        s->buffers = b;
        s->cap_buffers = cap;
    }
    s->buffers[s->n_buffers++] = buffer;
    return CM_OK;
}

#define KEEP_IN(array, count, item, closer)                                                                  \
    do {                                                                                                     \
        void *grown = realloc(array, (count + 1) * sizeof *(array));                                         \
        if (!grown) {                                                                                        \
            closer(item);                                                                                    \
            return cm_error(CM_ERR_NOMEM, "out of memory");                                                  \
        }                                                                                                    \
        array = grown;                                                                                       \
        array[count++] = item;                                                                               \
        return CM_OK;                                                                                        \
    } while (0)

cm_status cm_model_keep_mmap(cm_model *m, cm_mmap *map) {
    KEEP_IN(m->storage->maps, m->storage->n_maps, map, cm_mmap_close);
}

cm_status cm_model_keep_gguf(cm_model *m, cm_gguf *g) {
    KEEP_IN(m->storage->ggufs, m->storage->n_ggufs, g, cm_gguf_close);
}

cm_status cm_model_keep_safetensors(cm_model *m, cm_safetensors *st) {
    KEEP_IN(m->storage->sts, m->storage->n_sts, st, cm_safetensors_close);
}

cm_status cm_model_f32_copy(cm_model *m, const void *data, cm_dtype dtype, size_t n, const float **out) {
    float *buf = malloc((n ? n : 1) * sizeof(float));
    if (!buf) return cm_error(CM_ERR_NOMEM, "out of memory");
    size_t es = cm_dtype_block_bytes(dtype);
    if (es > 1 && (uintptr_t)data % es) {
        /* a file need not align its tensors (safetensors packs them back to back): read through a copy */
        void *aligned = malloc(n * es + 1);
        if (!aligned) {
            free(buf);
            return cm_error(CM_ERR_NOMEM, "out of memory");
        }
        memcpy(aligned, data, n * es);
        cm_convert_to_f32(dtype, aligned, buf, n);
        free(aligned);
        CM_TRY(cm_model_keep(m, buf));
        *out = buf;
        return CM_OK;
    }
    cm_convert_to_f32(dtype, data, buf, n);
    CM_TRY(cm_model_keep(m, buf));
    *out = buf;
    return CM_OK;
}

void cm_permute_qk_rows(const void *src, void *dst, int n_heads, int head_dim, size_t row_bytes,
                        bool to_half) {
    const char *s = src;
    char *d = dst;
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        size_t base = (size_t)h * head_dim;
        for (int p = 0; p < half; p++) {
            size_t inter0 = base + 2 * p, inter1 = base + 2 * p + 1; /* interleaved (Meta) rows */
            size_t half0 = base + p, half1 = base + half + p;        /* rotate-half (HF) rows */
            if (to_half) {
                memcpy(d + half0 * row_bytes, s + inter0 * row_bytes, row_bytes);
                memcpy(d + half1 * row_bytes, s + inter1 * row_bytes, row_bytes);
            } else {
                memcpy(d + inter0 * row_bytes, s + half0 * row_bytes, row_bytes);
                memcpy(d + inter1 * row_bytes, s + half1 * row_bytes, row_bytes);
            }
        }
    }
}

static const char *shape_str(const cm_tensor *t, char *buf, size_t cap) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < t->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* Look up one tensor and check it has shape [rows, cols] (cols = 0: a vector [rows]) and a type the kernels
 * read: F32/F16/BF16, and for matrices also the quantized types. */
static cm_status bind_tensor(cm_tensor_lookup lookup, void *ctx, const char *name, int64_t rows, int64_t cols,
                             const char *what, const cm_tensor **out) {
    const cm_tensor *t = lookup(ctx, name);
    *out = t;
    if (!t) return cm_error(CM_ERR_NOT_FOUND, "%s: required tensor \"%s\" is missing", what, name);
    bool quant_ok = cols > 0 && cm_dtype_is_quant(t->dtype) && cols % (int64_t)cm_dtype_block_elems(t->dtype) == 0;
    if (!cm_dtype_is_float(t->dtype) && !quant_ok)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: tensor \"%s\" has dtype %s; camelid reads F32, F16, BF16 (and Q8_0, Q4_0, Q6_K "
                        "matrices)",
                        what, name, cm_dtype_name(t->dtype));
    char buf[128];
    if (cols == 0) {
        if (!(t->ndim == 1 && t->shape[0] == rows))
            return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\" has shape %s, expected [%lld]", what, name,
                            shape_str(t, buf, sizeof buf), (long long)rows);
    } else if (!(t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)) {
        return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\" has shape %s, expected [%lld, %lld]", what, name,
                        shape_str(t, buf, sizeof buf), (long long)rows, (long long)cols);
    }
    return CM_OK;
}

/* `nf4_ok`: the slot may hold a bitsandbytes 4-bit weight (every linear; not the token embedding, which is
 * looked up row by row). */
static cm_status bind_weight(cm_model *m, cm_tensor_lookup lookup, void *ctx, const char *name, int64_t rows,
                             int64_t cols, bool nf4_ok, const char *what, cm_weight *w) {
    bool nf4;
    CM_TRY(cm_model_bind_nf4(m, lookup, ctx, name, rows, cols, nf4_ok, what, w, &nf4));
    if (nf4) return CM_OK;
    const cm_tensor *t;
    CM_TRY(bind_tensor(lookup, ctx, name, rows, cols, what, &t));
    w->dtype = t->dtype;
    w->rows = rows;
    w->cols = cols;
    w->data = t->data;
    return CM_OK;
}

/* Formats do not promise aligned tensor data (safetensors packs tensors back to back); kernels read whole
 * elements, so a misaligned weight gets an aligned private copy. */
static cm_status align_weight(cm_model *m, cm_weight *w) {
    if (w->dtype == CM_DTYPE_NF4) return CM_OK; /* bytes and a private f32 scale array: nothing to align */
    /* quantized blocks are read through their fp16 scale: 2-byte alignment */
    size_t align = cm_dtype_is_quant(w->dtype) ? 2 : cm_dtype_block_bytes(w->dtype);
    if ((uintptr_t)w->data % align == 0) return CM_OK;
    size_t n = cm_row_bytes(w->dtype, (size_t)w->cols) * (size_t)w->rows;
    void *copy = malloc(n ? n : 1);
    if (!copy) return cm_error(CM_ERR_NOMEM, "out of memory");
    memcpy(copy, w->data, n);
    CM_TRY(cm_model_keep(m, copy));
    w->data = copy;
    return CM_OK;
}

static cm_status bind_norm(cm_model *m, cm_tensor_lookup lookup, void *ctx, const char *name,
                           const char *what, const float **out) {
    const cm_tensor *t;
    CM_TRY(bind_tensor(lookup, ctx, name, m->cfg.dim, 0, what, &t));
    return cm_model_f32_copy(m, t->data, t->dtype, (size_t)m->cfg.dim, out);
}

cm_status cm_model_bind(cm_model *m, const cm_tensor_names *names, cm_tensor_lookup lookup, void *ctx,
                        const char *what) {
    const cm_config *c = &m->cfg;
    int64_t dim = c->dim, q_dim = (int64_t)c->n_heads * c->head_dim,
            kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return cm_error(CM_ERR_NOMEM, "%s: out of memory", what);
    CM_TRY(bind_weight(m, lookup, ctx, names->embd, c->vocab_size, dim, false, what, &m->tok_embd));
    CM_TRY(bind_norm(m, lookup, ctx, names->norm, what, &m->out_norm));
    if (c->tie_embeddings) {
        m->output = m->tok_embd;
    } else {
        CM_TRY(bind_weight(m, lookup, ctx, names->output, c->vocab_size, dim, true, what, &m->output));
    }
    char name[256];
#define LAYER_NAME(fmt) (snprintf(name, sizeof name, fmt, l), name)
    for (int l = 0; l < c->n_layers; l++) {
        cm_layer *L = &m->layers[l];
        CM_TRY(bind_norm(m, lookup, ctx, LAYER_NAME(names->attn_norm), what, &L->attn_norm));
        CM_TRY(bind_weight(m, lookup, ctx, LAYER_NAME(names->wq), q_dim, dim, true, what, &L->wq));
        CM_TRY(bind_weight(m, lookup, ctx, LAYER_NAME(names->wk), kv_dim, dim, true, what, &L->wk));
        CM_TRY(bind_weight(m, lookup, ctx, LAYER_NAME(names->wv), kv_dim, dim, true, what, &L->wv));
        CM_TRY(bind_weight(m, lookup, ctx, LAYER_NAME(names->wo), dim, q_dim, true, what, &L->wo));
        CM_TRY(bind_norm(m, lookup, ctx, LAYER_NAME(names->ffn_norm), what, &L->ffn_norm));
        CM_TRY(bind_weight(m, lookup, ctx, LAYER_NAME(names->w_gate), c->hidden_dim, dim, true, what, &L->w_gate));
        CM_TRY(bind_weight(m, lookup, ctx, LAYER_NAME(names->w_up), c->hidden_dim, dim, true, what, &L->w_up));
        CM_TRY(bind_weight(m, lookup, ctx, LAYER_NAME(names->w_down), dim, c->hidden_dim, true, what, &L->w_down));
        cm_weight *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) CM_TRY(align_weight(m, all[i]));
    }
#undef LAYER_NAME
    CM_TRY(align_weight(m, &m->tok_embd));
    if (c->tie_embeddings)
        m->output = m->tok_embd;
    else
        CM_TRY(align_weight(m, &m->output));
    return CM_OK;
}

int64_t cm_model_n_params(const cm_model *m) {
    const cm_config *c = &m->cfg;
    int64_t dim = c->dim, q_dim = (int64_t)c->n_heads * c->head_dim,
            kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t per_layer = 2 * dim + 2 * q_dim * dim + 2 * kv_dim * dim + 3 * dim * c->hidden_dim;
    int64_t n = (int64_t)c->vocab_size * dim * (c->tie_embeddings ? 1 : 2) + dim + per_layer * c->n_layers;
    return n;
}

static int file_starts_with(const char *path, const char *magic, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char buf[16] = {0};
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n && memcmp(buf, magic, n) == 0;
}

cm_status cm_model_open(const char *path, cm_model **out) {
    *out = NULL;
    if (!cm_path_exists(path)) return cm_error(CM_ERR_IO, "%s: no such file or folder", path);
    if (cm_path_is_dir(path) || cm_path_has_suffix(path, ".safetensors")) return cm_model_open_hf(path, out);
    if (cm_path_has_suffix(path, ".gguf") || file_starts_with(path, "GGUF", 4))
        return cm_model_open_gguf(path, out);
    return cm_model_open_llama2c(path, out);
}

static cm_status check_vocab(const cm_model *m, const cm_tokenizer *t, const char *what) {
    int n = cm_tokenizer_vocab_size(t);
    if (n > m->cfg.vocab_size)
        return cm_error(CM_ERR_FORMAT,
                        "%s: the tokenizer has %d tokens but the model's vocabulary has only %d", what, n,
                        m->cfg.vocab_size);
    return CM_OK;
}

cm_status cm_model_tokenizer(const cm_model *m, const char *path, const cm_tokenizer **tok,
                             cm_tokenizer **owned) {
    *tok = NULL;
    *owned = NULL;
    if (!path && m->tokenizer) {
        CM_TRY(check_vocab(m, m->tokenizer, m->path));
        *tok = m->tokenizer;
        return CM_OK;
    }
    char *found = NULL;
    if (!path) {
        char *dir = cm_path_is_dir(m->path) ? strdup(m->path) : cm_path_dirname(m->path);
        if (!dir) return cm_error(CM_ERR_NOMEM, "out of memory");
        static const char *const candidates[] = {"tokenizer.model", "tokenizer.bin"};
        for (size_t i = 0; i < sizeof candidates / sizeof *candidates && !found; i++) {
            char *p = cm_path_join(dir, candidates[i]);
            if (p && cm_path_exists(p))
                found = p;
            else
                free(p);
        }
        free(dir);
        if (!found)
            return cm_error(
                CM_ERR_NOT_FOUND,
                "%s: no tokenizer in the model or beside it (tokenizer.model, tokenizer.bin); pass "
                "--tokenizer FILE",
                m->path);
        path = found;
    }
    cm_tokenizer *t;
    cm_status st = cm_tokenizer_open(path, m->cfg.vocab_size, &t);
    if (st == CM_OK) {
        st = check_vocab(m, t, path);
        if (st != CM_OK) cm_tokenizer_close(t);
    }
    free(found);
    if (st != CM_OK) return st;
    *tok = *owned = t;
    return CM_OK;
}

static int visit_weight(cm_tensor_visitor visit, void *user, const char *name, const cm_weight *w) {
    int64_t shape[2] = {w->rows, w->cols};
    return visit(user, name, cm_dtype_name(w->dtype), 2, shape, cm_weight_nbytes(w));
}

void cm_weight_row_to_f32(const cm_weight *w, int64_t r, float *dst) {
    if (w->dtype == CM_DTYPE_NF4) {
        cm_nf4_row_to_f32(w->data, r, dst);
        return;
    }
    size_t row_bytes = cm_row_bytes(w->dtype, (size_t)w->cols);
    cm_row_to_f32(w->dtype, (const char *)w->data + (size_t)r * row_bytes, dst, (size_t)w->cols);
}

size_t cm_weight_nbytes(const cm_weight *w) {
    if (w->dtype == CM_DTYPE_NF4) return cm_nf4_weight_bytes(w->data);
    return cm_row_bytes(w->dtype, (size_t)w->cols) * (size_t)w->rows;
}

static int visit_norm(cm_tensor_visitor visit, void *user, const char *name, int dim) {
    int64_t shape[1] = {dim};
    return visit(user, name, "F32", 1, shape, (size_t)dim * 4);
}

void cm_model_visit_tensors(const cm_model *m, cm_tensor_visitor visit, void *user) {
    const cm_model_storage *s = m->storage;
    for (size_t i = 0; i < s->n_ggufs; i++) {
        for (size_t j = 0; j < cm_gguf_tensor_count(s->ggufs[i]); j++) {
            const cm_tensor *t = cm_gguf_tensor(s->ggufs[i], j);
            if (visit(user, t->name, cm_ggml_type_name(cm_gguf_tensor_ggml_type(s->ggufs[i], j)), t->ndim,
                      t->shape, t->nbytes))
                return;
        }
    }
    for (size_t i = 0; i < s->n_sts; i++) {
        for (size_t j = 0; j < cm_safetensors_count(s->sts[i]); j++) {
            const cm_tensor *t = cm_safetensors_get(s->sts[i], j);
            if (visit(user, t->name, cm_dtype_name(t->dtype), t->ndim, t->shape, t->nbytes)) return;
        }
    }
    if (m->format != CM_FORMAT_LLAMA2C) return;
    /* llama2.c files have no names: use Meta's, which llama2.c's export uses */
    char name[128];
    if (visit_weight(visit, user, "tok_embeddings.weight", &m->tok_embd)) return;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const cm_layer *L = &m->layers[l];
        const struct {
            const char *suffix;
            const cm_weight *w;
        } ws[] = {{"attention.wq", &L->wq},        {"attention.wk", &L->wk},
                  {"attention.wv", &L->wv},        {"attention.wo", &L->wo},
                  {"feed_forward.w1", &L->w_gate}, {"feed_forward.w2", &L->w_down},
                  {"feed_forward.w3", &L->w_up}};
        snprintf(name, sizeof name, "layers.%d.attention_norm.weight", l);
        if (visit_norm(visit, user, name, m->cfg.dim)) return;
        for (size_t k = 0; k < sizeof ws / sizeof *ws; k++) {
            snprintf(name, sizeof name, "layers.%d.%s.weight", l, ws[k].suffix);
            if (visit_weight(visit, user, name, ws[k].w)) return;
        }
        snprintf(name, sizeof name, "layers.%d.ffn_norm.weight", l);
        if (visit_norm(visit, user, name, m->cfg.dim)) return;
    }
    if (visit_norm(visit, user, "norm.weight", m->cfg.dim)) return;
    if (!m->cfg.tie_embeddings) visit_weight(visit, user, "output.weight", &m->output);
}

/* The bytes of a weight as it should be written: converted to `dtype`, q/k rows permuted when `permute_heads`
 * > 0. Returns the source pointer when nothing changes (then *owned is NULL). */
cm_status cm_model_export_weight(const cm_weight *w, cm_dtype dtype, int permute_heads, int head_dim,
                                 bool to_half, const void **data, void **owned, size_t *nbytes) {
    *owned = NULL;
    if (dtype == CM_DTYPE_NF4)
        return cm_error(CM_ERR_UNSUPPORTED, "NF4 weights are written only as bitsandbytes folders: use camelid "
                                            "quantize --type nf4");
    if (dtype != w->dtype && !cm_dtype_is_float(dtype))
        return cm_error(CM_ERR_UNSUPPORTED, "converting %s weights to %s is quantization: use camelid quantize",
                        cm_dtype_name(w->dtype), cm_dtype_name(dtype));
    size_t out_row = cm_row_bytes(dtype, (size_t)w->cols);
    *nbytes = out_row * (size_t)w->rows;
    if (dtype == w->dtype && permute_heads == 0) {
        *data = w->data;
        return CM_OK;
    }
    void *conv = malloc(*nbytes ? *nbytes : 1);
    if (!conv) return cm_error(CM_ERR_NOMEM, "out of memory converting a weight");
    if (dtype == w->dtype) {
        memcpy(conv, w->data, *nbytes);
    } else {
        float *row = malloc((size_t)w->cols * sizeof(float));
        if (!row) {
            free(conv);
            return cm_error(CM_ERR_NOMEM, "out of memory");
        }
        for (int64_t r = 0; r < w->rows; r++) {
            cm_weight_row_to_f32(w, r, row);
            cm_convert_from_f32(dtype, row, (char *)conv + (size_t)r * out_row, (size_t)w->cols);
        }
        free(row);
    }
    if (permute_heads > 0) {
        void *perm = malloc(*nbytes ? *nbytes : 1);
        if (!perm) {
            free(conv);
            return cm_error(CM_ERR_NOMEM, "out of memory");
        }
        cm_permute_qk_rows(conv, perm, permute_heads, head_dim, out_row, to_half);
        free(conv);
        conv = perm;
    }
    *data = *owned = conv;
    return CM_OK;
}

const char *cm_torch_dtype_name(cm_dtype t) {
    return t == CM_DTYPE_F16 ? "float16" : t == CM_DTYPE_BF16 ? "bfloat16" : "float32";
}
