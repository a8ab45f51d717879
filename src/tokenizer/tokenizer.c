/* Opening a tokenizer from a path (dispatch by content and extension) and the GGUF tokenizer.ggml.* glue. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/gguf.h"
#include "camelid/tokenizer.h"
#include "tokenizer/bpe_internal.h"
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

/* tokenizer.chat_template, if present. */
static cm_status gguf_chat_template(const cm_gguf *g, cm_tokenizer *t) {
    if (cm_gguf_find(g, "tokenizer.chat_template") < 0) return CM_OK;
    const char *s;
    size_t len;
    CM_TRY(cm_gguf_get_str(g, "tokenizer.chat_template", &s, &len));
    char *copy = malloc(len + 1);
    if (!copy) return cm_error(CM_ERR_NOMEM, "%s: out of memory for the chat template", cm_gguf_path(g));
    memcpy(copy, s, len);
    copy[len] = 0;
    free(t->chat_template);
    t->chat_template = copy;
    return CM_OK;
}

/* The ids llama.cpp falls back to when a GGUF does not say; they differ between its SPM and BPE vocabularies. */
typedef struct {
    int bos, eos, unk;
    bool add_bos;
    bool read_space_prefix; /* tokenizer.ggml.add_space_prefix applies (SPM) */
} gguf_vocab_defaults;

/* The vocabulary of a GGUF: tokenizer.ggml.tokens (1..CM_SPM_MAX_VOCAB strings) with their scores and types,
 * the special ids and flags, cm_spm_finish'ed. */
static cm_status gguf_vocab(const cm_gguf *g, const char *name, const gguf_vocab_defaults *d,
                            cm_tokenizer **out) {
    cm_gguf_type et;
    uint64_t n;
    if (cm_gguf_find(g, "tokenizer.ggml.tokens") < 0)
        return cm_error(CM_ERR_FORMAT, "%s: tokenizer.ggml.tokens is absent", name);
    CM_TRY(cm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n));
    if (et != CM_GGUF_STRING || n == 0 || n > CM_SPM_MAX_VOCAB)
        return cm_error(CM_ERR_FORMAT, "%s: tokenizer.ggml.tokens should be 1..%d strings (%llu of type %d)",
                        name, CM_SPM_MAX_VOCAB, (unsigned long long)n, (int)et);
    cm_tokenizer *t;
    CM_TRY(cm_spm_alloc((size_t)n, name, &t));
    cm_status st = load_gguf_pieces(g, t, n);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.bos_token_id", d->bos, &t->bos);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.eos_token_id", d->eos, &t->eos);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.unknown_token_id", d->unk, &t->unk);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.padding_token_id", -1, &t->pad);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.eot_token_id", -1, &t->eot);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.eom_token_id", -1, &t->eom);
    if (!st) st = gguf_opt_bool(g, "tokenizer.ggml.add_bos_token", d->add_bos, &t->add_bos);
    if (!st) st = gguf_opt_bool(g, "tokenizer.ggml.add_eos_token", false, &t->add_eos);
    if (!st && d->read_space_prefix)
        st = gguf_opt_bool(g, "tokenizer.ggml.add_space_prefix", true, &t->add_dummy_prefix);
    if (st) {
        cm_tokenizer_close(t);
        return st;
    }
    /* ids past a small vocabulary (llama.cpp's defaults) mean "none" */
    if (t->bos >= t->n_vocab) t->bos = -1;
    if (t->eos >= t->n_vocab) t->eos = -1;
    if (t->unk >= t->n_vocab) t->unk = -1;
    CM_TRY(cm_spm_finish(t, name)); /* frees t on failure */
    *out = t;
    return CM_OK;
}

/* Byte-level BPE (tokenizer.ggml.model "gpt2"): tokens, token_type, merges, special ids, pre. `pre` >= 0
 * overrides tokenizer.ggml.pre. */
static cm_status bpe_from_gguf(const cm_gguf *g, int pre, cm_tokenizer **out) {
    const char *name = cm_gguf_path(g);
    if (!name) name = "gguf";
    if (pre < 0) {
        pre = CM_BPE_PRE_GPT2;
        if (cm_gguf_find(g, "tokenizer.ggml.pre") >= 0) {
            const char *p;
            size_t plen;
            CM_TRY(cm_gguf_get_str(g, "tokenizer.ggml.pre", &p, &plen));
            pre = cm_bpe_pre_from_name(p, plen);
            if (pre < 0 && plen == 7 && memcmp(p, "default", 7) == 0) pre = CM_BPE_PRE_GPT2;
            if (pre < 0)
                return cm_error(
                    CM_ERR_UNSUPPORTED,
                    "%s: tokenizer.ggml.pre \"%.*s\" is not supported (only gpt-2, llama-bpe, llama3)", name,
                    (int)(plen > 64 ? 64 : plen), p);
        }
    }
    cm_gguf_type et;
    uint64_t n_merges;
    if (cm_gguf_find(g, "tokenizer.ggml.merges") < 0)
        return cm_error(CM_ERR_FORMAT, "%s: tokenizer.ggml.merges is absent", name);
    CM_TRY(cm_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n_merges));
    if (et != CM_GGUF_STRING || n_merges == 0 || n_merges > CM_BPE_MAX_MERGES)
        return cm_error(CM_ERR_FORMAT, "%s: tokenizer.ggml.merges should be 1..%d strings (%llu of type %d)",
                        name, CM_BPE_MAX_MERGES, (unsigned long long)n_merges, (int)et);
    cm_tokenizer *t;
    CM_TRY(gguf_vocab(g, name, &(gguf_vocab_defaults){-1, -1, -1, pre == CM_BPE_PRE_LLAMA3, false}, &t));
    cm_status st = cm_bpe_setup(t, (cm_bpe_pre)pre, (size_t)n_merges, name);
    char where[1200];
    for (uint64_t i = 0; i < n_merges && !st; i++) {
        const char *s;
        size_t len;
        st = cm_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s, &len);
        if (st) break;
        snprintf(where, sizeof where, "%.1000s: tokenizer.ggml.merges[%llu]", name, (unsigned long long)i);
        const char *sp = memchr(s, ' ', len);
        if (!sp || sp == s || sp + 1 == s + len || memchr(sp + 1, ' ', (size_t)(s + len - sp - 1))) {
            st = cm_error(CM_ERR_FORMAT, "%s: expected a merge \"A B\", found \"%.*s\"", where,
                          (int)(len > 64 ? 64 : len), s);
            break;
        }
        st = cm_bpe_add_merge(t, s, (size_t)(sp - s), sp + 1, (size_t)(s + len - sp - 1), where);
    }
    if (!st) st = gguf_chat_template(g, t);
    if (st) {
        cm_tokenizer_close(t);
        return st;
    }
    *out = t;
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
    if (mlen == 4 && memcmp(model, "gpt2", 4) == 0) return bpe_from_gguf(g, -1, out);
    if (!(mlen == 5 && memcmp(model, "llama", 5) == 0))
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.model \"%.*s\" is not supported (only \"llama\" and \"gpt2\")",
                        name, (int)(mlen > 64 ? 64 : mlen), model);
    cm_tokenizer *t;
    CM_TRY(gguf_vocab(g, name, &(gguf_vocab_defaults){1, 2, 0, true, true}, &t));
    cm_status st = gguf_chat_template(g, t);
    if (st) {
        cm_tokenizer_close(t);
        return st;
    }
    *out = t;
    return CM_OK;
}

/* Byte-level BPE: tokenizer.ggml.model "gpt2", pre, tokens, token_type, merges "A B". */
static cm_status write_gguf_bpe(const cm_tokenizer *t, struct cm_gguf_writer *w, const char **pieces,
                                const size_t *lens, const int32_t *types) {
    size_t n = (size_t)t->n_vocab, nm = cm_bpe_n_merges(t);
    char **merges = calloc(nm ? nm : 1, sizeof *merges);
    size_t *mlens = calloc(nm ? nm : 1, sizeof *mlens);
    cm_status st = CM_OK;
    if (!merges || !mlens)
        st = cm_error(CM_ERR_NOMEM, "write GGUF tokenizer: out of memory for %zu merges", nm);
    for (size_t i = 0; i < nm && !st; i++) {
        int32_t a, b;
        cm_bpe_merge(t, i, &a, &b);
        if (memchr(pieces[a], ' ', lens[a]) || memchr(pieces[b], ' ', lens[b])) {
            st = cm_error(
                CM_ERR_UNSUPPORTED,
                "write GGUF tokenizer: merge %zu has a token with a space, which \"A B\" cannot hold", i);
            break;
        }
        mlens[i] = lens[a] + 1 + lens[b];
        if (!(merges[i] = malloc(mlens[i]))) {
            st = cm_error(CM_ERR_NOMEM, "write GGUF tokenizer: out of memory for merges");
            break;
        }
        memcpy(merges[i], pieces[a], lens[a]);
        merges[i][lens[a]] = ' ';
        memcpy(merges[i] + lens[a] + 1, pieces[b], lens[b]);
    }
    if (!st) st = cm_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (!st)
        st = cm_gguf_writer_set_str(w, "tokenizer.ggml.pre",
                                    cm_bpe_pre_of(t) == CM_BPE_PRE_LLAMA3 ? "llama-bpe" : "gpt-2");
    if (!st) st = cm_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", pieces, lens, n);
    if (!st) st = cm_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CM_GGUF_INT32, types, n);
    if (!st)
        st = cm_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, mlens, nm);
    if (!st && t->eot >= 0) st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)t->eot);
    if (!st && t->eom >= 0) st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.eom_token_id", (uint32_t)t->eom);
    for (size_t i = 0; merges && i < nm; i++) free(merges[i]);
    free(merges);
    free(mlens);
    return st;
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
    if (t->kind == CM_TOKENIZER_BPE) {
        st = write_gguf_bpe(t, w, pieces, lens, types);
    } else {
        st = cm_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
        if (!st) st = cm_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", pieces, lens, n);
        if (!st) st = cm_gguf_writer_set_arr(w, "tokenizer.ggml.scores", CM_GGUF_FLOAT32, t->score, n);
        if (!st) st = cm_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CM_GGUF_INT32, types, n);
    }
    if (!st && t->bos >= 0) st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos);
    if (!st && t->eos >= 0) st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos);
    if (!st && t->unk >= 0)
        st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk);
    if (!st && t->pad >= 0)
        st = cm_gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)t->pad);
    if (!st) st = cm_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos);
    if (!st) st = cm_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos);
    if (!st && t->kind == CM_TOKENIZER_SPM && !t->add_dummy_prefix)
        st = cm_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
    if (!st && t->chat_template) st = cm_gguf_writer_set_str(w, "tokenizer.chat_template", t->chat_template);
done:
    free(pieces);
    free(lens);
    free(types);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------
 * Open */

#define MAX_BPE_FILE ((size_t)1 << 30)

/* The other file of a byte-level BPE pair beside `path` (malloc'd), or NULL. */
static char *bpe_partner(const char *path, bool *path_is_vocab) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *other;
    if (strcmp(base, "encoder.json") == 0) {
        other = "vocab.bpe";
        *path_is_vocab = true;
    } else if (strcmp(base, "vocab.bpe") == 0 || cm_path_has_suffix(base, ".bpe")) {
        other = "encoder.json";
        *path_is_vocab = false;
    } else if (cm_path_has_suffix(base, ".json")) {
        other = "merges.txt";
        *path_is_vocab = true;
    } else {
        other = "vocab.json";
        *path_is_vocab = false;
    }
    size_t dlen = (size_t)(base - path);
    char *dir = malloc(dlen + 2);
    if (!dir) return NULL;
    if (dlen == 0)
        strcpy(dir, ".");
    else {
        memcpy(dir, path, dlen);
        dir[dlen] = 0;
    }
    char *r = cm_path_join(dir, other);
    free(dir);
    return r;
}

static bool is_bpe_path(const char *path) {
    return cm_path_has_suffix(path, ".json") || cm_path_has_suffix(path, ".bpe") ||
           cm_path_has_suffix(path, ".txt");
}

cm_status cm_tokenizer_open_bpe(const char *path, const char *pre, cm_tokenizer **out) {
    *out = NULL;
    if (!path) return cm_error(CM_ERR_ARG, "open tokenizer: path is NULL");
    int pre_id = -1;
    if (pre) {
        pre_id = cm_bpe_pre_from_name(pre, strlen(pre));
        if (pre_id < 0)
            return cm_error(CM_ERR_ARG, "unknown pre-tokenizer \"%.64s\" (expected gpt2 or llama3)", pre);
    }
    if (cm_path_is_dir(path)) {
        static const char *pairs[][2] = {{"vocab.json", "merges.txt"}, {"encoder.json", "vocab.bpe"}};
        for (int i = 0; i < 2; i++) {
            char *v = cm_path_join(path, pairs[i][0]);
            if (!v) return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
            cm_status st = CM_ERR_NOT_FOUND;
            if (cm_path_exists(v)) st = cm_tokenizer_open_bpe(v, pre, out);
            free(v);
            if (st != CM_ERR_NOT_FOUND) return st;
        }
        return cm_error(
            CM_ERR_NOT_FOUND,
            "%s: the folder has no tokenizer.model or tokenizer.json (nor vocab.json + merges.txt or "
            "encoder.json + vocab.bpe)",
            path);
    }
    if (!is_bpe_path(path)) {
        cm_gguf *g;
        CM_TRY(cm_gguf_open(path, &g));
        cm_status st;
        const char *model = NULL;
        size_t mlen = 0;
        if (cm_gguf_find(g, "tokenizer.ggml.model") >= 0 &&
            cm_gguf_get_str(g, "tokenizer.ggml.model", &model, &mlen) == CM_OK && mlen == 4 &&
            memcmp(model, "gpt2", 4) == 0)
            st = bpe_from_gguf(g, pre_id, out);
        else
            st = cm_error(CM_ERR_UNSUPPORTED,
                          "%s: not a byte-level BPE vocabulary (tokenizer.ggml.model is not gpt2)", path);
        cm_gguf_close(g);
        return st;
    }
    bool is_vocab;
    char *other = bpe_partner(path, &is_vocab);
    if (!other) return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    const char *vpath = is_vocab ? path : other, *mpath = is_vocab ? other : path;
    char *vdata = NULL, *mdata = NULL;
    size_t vlen = 0, mlen = 0;
    cm_status st;
    if (!cm_path_exists(other))
        st = cm_error(CM_ERR_NOT_FOUND, "%s: byte-level BPE needs %s beside it", path, other);
    else if (!(st = cm_read_file(vpath, MAX_BPE_FILE, &vdata, &vlen)) &&
             !(st = cm_read_file(mpath, MAX_BPE_FILE, &mdata, &mlen)))
        st = cm_tokenizer_parse_bpe(vdata, vlen, vpath, mdata, mlen, mpath, pre, out);
    free(vdata);
    free(mdata);
    free(other);
    return st;
}

static cm_status open_file(const char *path, int vocab_size_hint, cm_tokenizer **out);

cm_status cm_tokenizer_open(const char *path, int vocab_size_hint, cm_tokenizer **out) {
    *out = NULL;
    if (!path) return cm_error(CM_ERR_ARG, "open tokenizer: path is NULL");
    if (cm_path_is_dir(path)) {
        char *json = cm_path_join(path, "tokenizer.json"), *model = cm_path_join(path, "tokenizer.model");
        cm_status st;
        if (!json || !model)
            st = cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
        else if (cm_path_exists(json))
            st = cm_tokenizer_open_hf_json_file(json, out);
        else if (cm_path_exists(model))
            st = open_file(model, vocab_size_hint, out);
        else
            st = cm_tokenizer_open_bpe(path, NULL, out);
        free(json);
        free(model);
        if (!st && (st = cm_tokenizer_apply_hf_config_file(*out, path))) {
            cm_tokenizer_close(*out);
            *out = NULL;
        }
        return st;
    }
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    bool hf_name = strcmp(base, "tokenizer.json") == 0 || strcmp(base, "tokenizer.model") == 0;
    if (cm_path_has_suffix(path, "tokenizer.json") || hf_name) {
        cm_status st;
        if (cm_path_has_suffix(path, "tokenizer.json"))
            st = cm_tokenizer_open_hf_json_file(path, out);
        else
            st = open_file(path, vocab_size_hint, out);
        if (!st && hf_name) {
            char *dir = cm_path_dirname(path);
            st = dir ? cm_tokenizer_apply_hf_config_file(*out, dir) : cm_error(CM_ERR_NOMEM, "out of memory");
            free(dir);
            if (st) {
                cm_tokenizer_close(*out);
                *out = NULL;
            }
        }
        return st;
    }
    return open_file(path, vocab_size_hint, out);
}

/* A single file that is not tokenizer.json. */
static cm_status open_file(const char *path, int vocab_size_hint, cm_tokenizer **out) {
    if (is_bpe_path(path)) return cm_tokenizer_open_bpe(path, NULL, out);
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
