/* Opening a tokenizer from a path (dispatch by content and extension) and the GGUF tokenizer.ggml.* glue. */
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/gguf.h"
#include "camelid/tokenizer.h"
#include "tokenizer/spm_internal.h"

/* ---------------------------------------------------------------------------------------------------------
 * GGUF */

/* An optional integer id: -1 (none) if absent or negative. */
static cm_status gguf_opt_id(const cm_gguf *g, const char *key, int def, int *out) {
    *out = def;
    if (cm_gguf_find(g, key) < 0) return CM_OK;
    int64_t v;
    CM_TRY(cm_gguf_get_i64(g, key, &v));
    /* llama.cpp writes "no such token" as (uint32)-1 */
    if (v == (int64_t)UINT32_MAX) v = -1;
    if (v > INT32_MAX)
        return cm_error(CM_ERR_FORMAT, "%s: %s = %lld is out of range", cm_gguf_path(g), key, (long long)v);
    *out = v < 0 ? -1 : (int)v;
    return CM_OK;
}

static cm_status gguf_opt_bool(const cm_gguf *g, const char *key, bool def, bool *out) {
    *out = def;
    if (cm_gguf_find(g, key) < 0) return CM_OK;
    return cm_gguf_get_bool(g, key, out);
}

static cm_status load_gguf_pieces(const cm_gguf *g, cm_tokenizer *t, uint64_t n) {
    const char *name = cm_gguf_path(g);
    const void *scores = NULL, *types = NULL;
    cm_gguf_type et;
    uint64_t cnt;
    if (cm_gguf_find(g, "tokenizer.ggml.scores") >= 0) {
        CM_TRY(cm_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &cnt));
        if (et != CM_GGUF_FLOAT32 || cnt != n)
            return cm_error(CM_ERR_FORMAT,
                            "%s: tokenizer.ggml.scores should be %llu float32, found %llu of type %d", name,
                            (unsigned long long)n, (unsigned long long)cnt, (int)et);
        CM_TRY(cm_gguf_get_arr_data(g, "tokenizer.ggml.scores", &scores));
    }
    if (cm_gguf_find(g, "tokenizer.ggml.token_type") >= 0) {
        CM_TRY(cm_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &cnt));
        if ((et != CM_GGUF_INT32 && et != CM_GGUF_UINT32) || cnt != n)
            return cm_error(CM_ERR_FORMAT,
                            "%s: tokenizer.ggml.token_type should be %llu int32, found %llu of type %d", name,
                            (unsigned long long)n, (unsigned long long)cnt, (int)et);
        CM_TRY(cm_gguf_get_arr_data(g, "tokenizer.ggml.token_type", &types));
    }
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        CM_TRY(cm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &len));
        float score = 0.0f;
        int32_t type = CM_TOKEN_NORMAL;
        if (scores) memcpy(&score, (const char *)scores + 4 * i, 4);
        if (types) memcpy(&type, (const char *)types + 4 * i, 4);
        if (type == 0) type = CM_TOKEN_NORMAL; /* LLAMA_TOKEN_TYPE_UNDEFINED */
        cm_status st = cm_spm_set_piece(t, (int)i, s, len, score, type, name);
        if (st) return cm_error_prefix(st, "tokenizer.ggml.tokens");
    }
    return CM_OK;
}

cm_status cm_tokenizer_from_gguf(const cm_gguf *g, cm_tokenizer **out) {
    *out = NULL;
    const char *name = cm_gguf_path(g);
    if (!name) name = "gguf";
    if (cm_gguf_find(g, "tokenizer.ggml.model") < 0)
        return cm_error(CM_ERR_NOT_FOUND, "%s: no vocabulary (tokenizer.ggml.model is absent)", name);
    const char *model;
    size_t mlen;
    CM_TRY(cm_gguf_get_str(g, "tokenizer.ggml.model", &model, &mlen));
    if (mlen == 8 && memcmp(model, "no_vocab", 8) == 0)
        return cm_error(CM_ERR_NOT_FOUND, "%s: no vocabulary (tokenizer.ggml.model is \"no_vocab\")", name);
    if (mlen == 4 && memcmp(model, "gpt2", 4) == 0)
        return cm_error(
            CM_ERR_UNSUPPORTED,
            "%s: tokenizer.ggml.model \"gpt2\" (byte-level BPE) is not supported yet: byte-level BPE "
            "comes later",
            name);
    if (!(mlen == 5 && memcmp(model, "llama", 5) == 0))
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.model \"%.*s\" is not supported (only \"llama\")", name,
                        (int)(mlen > 64 ? 64 : mlen), model);
    cm_gguf_type et;
    uint64_t n;
    if (cm_gguf_find(g, "tokenizer.ggml.tokens") < 0)
        return cm_error(CM_ERR_FORMAT, "%s: tokenizer.ggml.tokens is absent", name);
    CM_TRY(cm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n));
    if (et != CM_GGUF_STRING)
        return cm_error(CM_ERR_FORMAT, "%s: tokenizer.ggml.tokens should be an array of strings (type %d)",
                        name, (int)et);
    if (n == 0 || n > CM_SPM_MAX_VOCAB)
        return cm_error(CM_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", name,
                        (unsigned long long)n);
    cm_tokenizer *t;
    CM_TRY(cm_spm_alloc((size_t)n, name, &t));
    cm_status st = load_gguf_pieces(g, t, n);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.bos_token_id", 1, &t->bos);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.eos_token_id", 2, &t->eos);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.unknown_token_id", 0, &t->unk);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.padding_token_id", -1, &t->pad);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.eot_token_id", -1, &t->eot);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.eom_token_id", -1, &t->eom);
    if (!st) st = gguf_opt_bool(g, "tokenizer.ggml.add_bos_token", true, &t->add_bos);
    if (!st) st = gguf_opt_bool(g, "tokenizer.ggml.add_eos_token", false, &t->add_eos);
    if (!st) st = gguf_opt_bool(g, "tokenizer.ggml.add_space_prefix", true, &t->add_dummy_prefix);
    if (st) {
        cm_tokenizer_close(t);
        return st;
    }
    /* ids past a small vocabulary (llama.cpp's defaults) mean "none" */
    if (t->bos >= t->n_vocab) t->bos = -1;
    if (t->eos >= t->n_vocab) t->eos = -1;
    if (t->unk >= t->n_vocab) t->unk = -1;
    CM_TRY(cm_spm_finish(t, name));
    *out = t;
    return CM_OK;
}

cm_status cm_tokenizer_write_gguf(const cm_tokenizer *t, struct cm_gguf_writer *w) {
    size_t n = (size_t)t->n_vocab;
    const char **pieces = malloc(n * sizeof *pieces);
    size_t *lens = malloc(n * sizeof *lens);
    int32_t *types = malloc(n * sizeof *types);
    cm_status st = CM_OK;
    if (!pieces || !lens || !types) {
        st = cm_error(CM_ERR_NOMEM, "write GGUF tokenizer: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        pieces[i] = t->blob + t->offset[i];
        lens[i] = t->offset[i + 1] - t->offset[i];
        types[i] = t->type[i];
    }
    st = cm_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    if (!st) st = cm_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", pieces, lens, n);
    if (!st) st = cm_gguf_writer_set_arr(w, "tokenizer.ggml.scores", CM_GGUF_FLOAT32, t->score, n);
    if (!st) st = cm_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CM_GGUF_INT32, types, n);
    if (!st && t->bos >= 0) st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos);
    if (!st && t->eos >= 0) st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos);
    if (!st && t->unk >= 0)
        st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk);
    if (!st && t->pad >= 0)
        st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)t->pad);
    if (!st) st = cm_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos);
    if (!st) st = cm_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos);
    if (!st && !t->add_dummy_prefix)
        st = cm_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
done:
    free(pieces);
    free(lens);
    free(types);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------
 * Open */

cm_status cm_tokenizer_open(const char *path, int vocab_size_hint, cm_tokenizer **out) {
    *out = NULL;
    if (!path) return cm_error(CM_ERR_ARG, "open tokenizer: path is NULL");
    if (cm_path_is_dir(path)) {
        char *file = cm_path_join(path, "tokenizer.model");
        if (!file) return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
        cm_status st;
        if (!cm_path_exists(file))
            st = cm_error(CM_ERR_NOT_FOUND, "%s: the folder has no tokenizer.model", path);
        else
            st = cm_tokenizer_open(file, vocab_size_hint, out);
        free(file);
        return st;
    }
    cm_mmap *m;
    CM_TRY(cm_mmap_open(path, &m));
    cm_status st;
    if ((m->size >= 4 && memcmp(m->data, "GGUF", 4) == 0) || cm_path_has_suffix(path, ".gguf")) {
        cm_mmap_close(m);
        cm_gguf *g;
        CM_TRY(cm_gguf_open(path, &g));
        st = cm_tokenizer_from_gguf(g, out);
        cm_gguf_close(g);
        return st;
    }
    bool spm;
    if (cm_path_has_suffix(path, ".model"))
        spm = true;
    else if (cm_path_has_suffix(path, ".bin"))
        spm = false;
    else
        spm = m->size > 0 && m->data[0] == 0x0A; /* ModelProto field 1 (pieces), length-delimited */
    if (spm)
        st = cm_tokenizer_parse_spm_model(m->data, m->size, path, out);
    else
        st = cm_tokenizer_parse_llama2c(m->data, m->size, vocab_size_hint, path, out);
    cm_mmap_close(m);
    return st;
}
