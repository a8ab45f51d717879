/* In-memory quantization of a model's weights (include/camelid/quantize.h). The per-tensor choice follows
 * llama.cpp's llama-quant.cpp (llama_tensor_get_type for the Q8_0 and Q4_0 file types, no importance
 * matrix); the block quantizers are ggml-exact (src/kernels/quant.c), so the bytes equal llama-quantize's. */
#include "camelid/quantize.h"

#include <stdlib.h>
#include <string.h>

#include "camelid/kernels.h"
#include "camelid/pool.h"
#include "camelid/quant.h"
#include "model/model_internal.h"

cm_dtype cm_quantize_choose(cm_dtype type, bool pure, bool is_output, int64_t cols, cm_dtype current) {
    cm_dtype t = type;
    if (!pure && is_output) {
        /* llama-quantize: the output tensor becomes Q6_K unless the file type is Q8_0, and falls back to
         * Q8_0 when its rows are not a multiple of Q6_K's 256 */
        if (cols % CM_QK_K != 0)
            t = CM_DTYPE_Q8_0;
        else if (type != CM_DTYPE_Q8_0)
            t = CM_DTYPE_Q6_K;
    }
    if (cols % (int64_t)cm_dtype_block_elems(t) != 0) return current;
    return t;
}

typedef struct {
    const cm_weight *src;
    cm_dtype to;
    void *dst;
    size_t in_row, out_row;
    int failed;
} quant_job;

static void quant_worker(void *arg, int thread, int n_threads) {
    quant_job *j = arg;
    int r0, r1;
    cm_split_range((int)j->src->rows, n_threads, thread, &r0, &r1);
    if (r0 >= r1) return;
    float *row = NULL;
    if (j->src->dtype != CM_DTYPE_F32) {
        row = malloc((size_t)j->src->cols * sizeof(float));
        if (!row) {
            j->failed = 1; /* only ever set to 1: a benign race */
            return;
        }
    }
    for (int r = r0; r < r1; r++) {
        const char *in = (const char *)j->src->data + (size_t)r * j->in_row;
        const float *x = (const float *)in;
        if (row) {
            cm_weight_row_to_f32(j->src, r, row); /* any dtype, NF4 included */
            x = row;
        }
        cm_quantize_row(j->to, x, (char *)j->dst + (size_t)r * j->out_row, (size_t)j->src->cols);
    }
    free(row);
}

static cm_status quantize_weight(cm_model *m, cm_weight *w, cm_dtype to, cm_pool *pool) {
    quant_job j = {w, to, NULL, cm_row_bytes(w->dtype, (size_t)w->cols), cm_row_bytes(to, (size_t)w->cols),
                   0};
    size_t n = j.out_row * (size_t)w->rows;
    j.dst = malloc(n ? n : 1);
    if (!j.dst)
        return cm_error(CM_ERR_NOMEM, "out of memory quantizing a [%lld, %lld] weight", (long long)w->rows,
                        (long long)w->cols);
    cm_pool_run(pool, quant_worker, &j);
    if (j.failed) {
        free(j.dst);
        return cm_error(CM_ERR_NOMEM, "out of memory quantizing a weight");
    }
    CM_TRY(cm_model_keep(m, j.dst));
    w->data = j.dst;
    w->dtype = to;
    return CM_OK;
}

static void count(cm_quantize_stats *s, cm_dtype t, bool kept) {
    if (kept)
        s->n_kept++;
    else if (t == CM_DTYPE_Q8_0)
        s->n_q8_0++;
    else if (t == CM_DTYPE_Q4_0)
        s->n_q4_0++;
    else if (t == CM_DTYPE_Q6_K)
        s->n_q6_K++;
}

static cm_status visit(cm_model *m, cm_weight *w, cm_dtype type, bool pure, bool is_output, cm_pool *pool,
                       cm_quantize_stats *s) {
    cm_dtype to = cm_quantize_choose(type, pure, is_output, w->cols, w->dtype);
    bool kept = to == w->dtype && !cm_dtype_is_quant(to);
    count(s, to, kept);
    if (to == w->dtype) return CM_OK;
    return quantize_weight(m, w, to, pool);
}

cm_status cm_model_quantize(cm_model *m, cm_dtype type, bool pure, int n_threads, cm_quantize_stats *stats) {
    if (type != CM_DTYPE_Q8_0 && type != CM_DTYPE_Q4_0)
        return cm_error(CM_ERR_ARG, "quantize: type %s is not supported (Q8_0 or Q4_0)", cm_dtype_name(type));
    cm_quantize_stats local;
    memset(&local, 0, sizeof local);
    cm_pool *pool = NULL;
    if (n_threads > 1) CM_TRY(cm_pool_open(n_threads, &pool));
    const cm_config *c = &m->cfg;
    cm_status st = CM_OK;
    /* tied: the embedding is the output head, and llama-quantize treats it as the output */
    st = visit(m, &m->tok_embd, type, pure, c->tie_embeddings, pool, &local);
    if (st == CM_OK) {
        if (c->tie_embeddings)
            m->output = m->tok_embd;
        else
            st = visit(m, &m->output, type, pure, true, pool, &local);
    }
    for (int l = 0; st == CM_OK && l < c->n_layers; l++) {
        cm_layer *L = &m->layers[l];
        cm_weight *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; st == CM_OK && i < sizeof all / sizeof *all; i++)
            st = visit(m, all[i], type, pure, false, pool, &local);
    }
    cm_pool_close(pool);
    if (stats) *stats = local;
    return st;
}
