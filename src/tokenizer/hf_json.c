/* HF tokenizers' tokenizer.json (read and written, for byte-level BPE and for SentencePiece-style BPE as
 * Llama 2's tokenizer.json has it), tokenizer_config.json and the chat template.
 *
 * Reading SentencePiece-style BPE: HF's BPE merges the adjacent pair of lowest merge rank; the SentencePiece
 * encoder merges the adjacent pair whose concatenation has the highest score. Giving each piece the score
 * -(rank of the first merge that makes it) turns one into the other, as long as the merges are the
 * "every split of every piece" list that converters derive from a SentencePiece vocabulary (the writer below
 * derives it the same way). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/tokenizer.h"
#include "tokenizer/bpe_internal.h"
#include "tokenizer/spm_internal.h"

#define SPACE_SYMBOL "\xE2\x96\x81" /* U+2581 "▁" */
#define SPACE_SYMBOL_LEN 3

/* GPT-2's regex (the one ByteLevel uses when use_regex is true) and Llama 3's, as llama.cpp spells it and
 * as Meta's tokenizer.json does. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char llama3_pattern_cpp[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char llama3_pattern_hf[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* remove_extra_whitespaces, written as two Replace normalizers */
static const char collapse_pattern[] = " {2,}";
static const char trim_pattern[] = "^ +| +$";

#define MAX_HF_FILE ((size_t)1 << 30)

/* ---------------------------------------------------------------------------------------------------------
 * Chat template */

const char *cm_tokenizer_chat_template(const cm_tokenizer *t) {
    return t->chat_template;
}

cm_status cm_tokenizer_set_chat_template(cm_tokenizer *t, const char *jinja) {
    char *copy = NULL;
    if (jinja && !(copy = strdup(jinja))) return cm_error(CM_ERR_NOMEM, "chat template: out of memory");
    free(t->chat_template);
    t->chat_template = copy;
    return CM_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * Small JSON helpers */

static cm_status invalid_json(const char *name, const json_error_t *err) {
    return cm_error(CM_ERR_FORMAT, "%s:%d: invalid JSON: %s", name, err->line > 0 ? err->line : 1, err->text);
}

/* The string member `key` of object `o`, or NULL if absent or not a string. */
static const char *str_of(const json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

static bool str_is(const json_t *o, const char *key, const char *want) {
    const char *s = str_of(o, key);
    return s && strcmp(s, want) == 0;
}

/* An optional boolean member: `def` if absent or null. */
static cm_status opt_bool(const json_t *o, const char *key, bool def, bool *out, const char *name,
                          const char *where) {
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v)) return CM_OK;
    if (!json_is_boolean(v))
        return cm_error(CM_ERR_FORMAT, "%s: %s%s should be true or false", name, where, key);
    *out = json_is_true(v);
    return CM_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * Reading tokenizer.json */

typedef struct {
    const char *name;
    json_t *root, *model, *vocab, *merges, *added;
    size_t n; /* vocabulary size: the largest id + 1 */
    const char **piece;
    size_t *plen;
    uint8_t *added_kind; /* 0: model vocabulary only, 1: special added token, 2: other added token */
    bool byte_level;     /* a ByteLevel pre-tokenizer was seen */
    int pre;             /* cm_bpe_pre for byte-level BPE */
    bool sp_style;       /* "▁" handling was seen (Prepend / Replace / Metaspace) or byte_fallback */
    bool dummy_prefix, escape, collapse, trim;
} hf_reader;

static cm_status read_normalizer(hf_reader *r, const json_t *nz, int depth) {
    if (!nz || json_is_null(nz)) return CM_OK;
    if (!json_is_object(nz) || depth > 4)
        return cm_error(CM_ERR_FORMAT, "%s: normalizer should be an object or null", r->name);
    const char *type = str_of(nz, "type");
    if (!type) return cm_error(CM_ERR_FORMAT, "%s: normalizer has no \"type\"", r->name);
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(nz, "normalizers");
        if (!json_is_array(list))
            return cm_error(CM_ERR_FORMAT, "%s: normalizer Sequence has no \"normalizers\" list", r->name);
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v) CM_TRY(read_normalizer(r, v, depth + 1));
        return CM_OK;
    }
    if (strcmp(type, "Prepend") == 0 && str_is(nz, "prepend", SPACE_SYMBOL)) {
        r->dummy_prefix = r->sp_style = true;
        return CM_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        json_t *pat = json_object_get(nz, "pattern");
        const char *content = str_of(nz, "content");
        if (content && str_is(pat, "String", " ") && strcmp(content, SPACE_SYMBOL) == 0) {
            r->escape = r->sp_style = true;
            return CM_OK;
        }
        if (content && str_is(pat, "Regex", collapse_pattern) && strcmp(content, " ") == 0) {
            r->collapse = true;
            return CM_OK;
        }
        if (content && str_is(pat, "Regex", trim_pattern) && content[0] == 0) {
            r->trim = true;
            return CM_OK;
        }
        return cm_error(CM_ERR_UNSUPPORTED, "%s: this Replace normalizer is not supported", r->name);
    }
    return cm_error(CM_ERR_UNSUPPORTED, "%s: normalizer \"%.64s\" is not supported", r->name, type);
}

static cm_status read_byte_level(hf_reader *r, const json_t *p, bool regex_seen) {
    bool prefix, use_regex;
    CM_TRY(opt_bool(p, "add_prefix_space", false, &prefix, r->name, "pre_tokenizer ByteLevel "));
    CM_TRY(opt_bool(p, "use_regex", true, &use_regex, r->name, "pre_tokenizer ByteLevel "));
    if (prefix)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: pre_tokenizer ByteLevel with add_prefix_space is not supported", r->name);
    if (use_regex && regex_seen)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: a Split regex followed by ByteLevel with use_regex is not supported", r->name);
    if (!use_regex && !regex_seen)
        return cm_error(CM_ERR_UNSUPPORTED, "%s: pre_tokenizer ByteLevel without a regex is not supported",
                        r->name);
    if (use_regex) r->pre = CM_BPE_PRE_GPT2;
    r->byte_level = true;
    return CM_OK;
}

static cm_status read_pre_tokenizer(hf_reader *r, const json_t *pt) {
    if (!pt || json_is_null(pt)) return CM_OK;
    if (!json_is_object(pt))
        return cm_error(CM_ERR_FORMAT, "%s: pre_tokenizer should be an object or null", r->name);
    const char *type = str_of(pt, "type");
    if (!type) return cm_error(CM_ERR_FORMAT, "%s: pre_tokenizer has no \"type\"", r->name);
    if (strcmp(type, "ByteLevel") == 0) return read_byte_level(r, pt, false);
    if (strcmp(type, "Metaspace") == 0) {
        if (!str_is(pt, "replacement", SPACE_SYMBOL))
            return cm_error(CM_ERR_UNSUPPORTED,
                            "%s: pre_tokenizer Metaspace with a replacement other than \"▁\"", r->name);
        bool prefix;
        CM_TRY(opt_bool(pt, "add_prefix_space", true, &prefix, r->name, "pre_tokenizer Metaspace "));
        const char *scheme = str_of(pt, "prepend_scheme");
        if (scheme) prefix = strcmp(scheme, "never") != 0;
        r->escape = r->sp_style = true;
        r->dummy_prefix = r->dummy_prefix || prefix;
        return CM_OK;
    }
    if (strcmp(type, "Sequence") != 0)
        return cm_error(CM_ERR_UNSUPPORTED, "%s: pre_tokenizer \"%.64s\" is not supported", r->name, type);
    json_t *list = json_object_get(pt, "pretokenizers");
    if (!json_is_array(list))
        return cm_error(CM_ERR_FORMAT, "%s: pre_tokenizer Sequence has no \"pretokenizers\" list", r->name);
    bool regex_seen = false;
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p) {
        const char *t = json_is_object(p) ? str_of(p, "type") : NULL;
        if (!t) return cm_error(CM_ERR_FORMAT, "%s: pre_tokenizer Sequence[%zu] has no \"type\"", r->name, i);
        if (strcmp(t, "Split") == 0 && !regex_seen) {
            const char *rx = str_of(json_object_get(p, "pattern"), "Regex");
            bool invert;
            CM_TRY(opt_bool(p, "invert", false, &invert, r->name, "pre_tokenizer Split "));
            if (!rx || invert || !str_is(p, "behavior", "Isolated"))
                return cm_error(CM_ERR_UNSUPPORTED,
                                "%s: pre_tokenizer Split must be an Isolated, non-inverted Regex", r->name);
            if (strcmp(rx, gpt2_pattern) == 0)
                r->pre = CM_BPE_PRE_GPT2;
            else if (strcmp(rx, llama3_pattern_hf) == 0 || strcmp(rx, llama3_pattern_cpp) == 0)
                r->pre = CM_BPE_PRE_LLAMA3;
            else
                return cm_error(CM_ERR_UNSUPPORTED,
                                "%s: the Split regex \"%.80s\" is not supported (only GPT-2's and Llama 3's)",
                                r->name, rx);
            regex_seen = true;
        } else if (strcmp(t, "ByteLevel") == 0 && !r->byte_level) {
            CM_TRY(read_byte_level(r, p, regex_seen));
        } else {
            return cm_error(CM_ERR_UNSUPPORTED, "%s: pre_tokenizer Sequence[%zu] \"%.64s\" is not supported",
                            r->name, i, t);
        }
    }
    if (regex_seen && !r->byte_level)
        return cm_error(CM_ERR_UNSUPPORTED, "%s: a Split pre-tokenizer without ByteLevel is not supported",
                        r->name);
    return CM_OK;
}

/* The id of `s` among the pieces, or -1 (before the tokenizer's own index exists). */
static int reader_lookup(const hf_reader *r, const char *s, size_t len) {
    json_t *v = json_object_getn(r->vocab, s, len);
    if (json_is_integer(v)) return (int)json_integer_value(v);
    for (size_t i = 0; i < json_array_size(r->added); i++) {
        json_t *a = json_array_get(r->added, i);
        json_t *c = json_object_get(a, "content");
        if (json_string_length(c) == len && memcmp(json_string_value(c), s, len) == 0)
            return (int)json_integer_value(json_object_get(a, "id"));
    }
    return -1;
}

/* Collect model.vocab and added_tokens into piece[0..n). */
static cm_status read_pieces(hf_reader *r) {
    size_t n = 0;
    const char *key;
    json_t *val;
    json_object_foreach(r->vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= CM_SPM_MAX_VOCAB)
            return cm_error(CM_ERR_FORMAT,
                            "%s: model.vocab: token \"%.64s\": the id should be an integer in 0..%d", r->name,
                            key, CM_SPM_MAX_VOCAB - 1);
        if ((size_t)id >= n) n = (size_t)id + 1;
    }
    if (r->added && !json_is_null(r->added) && !json_is_array(r->added))
        return cm_error(CM_ERR_FORMAT, "%s: added_tokens should be a list", r->name);
    size_t i;
    json_array_foreach(r->added, i, val) {
        json_t *idv = json_object_get(val, "id");
        json_t *c = json_object_get(val, "content");
        json_t *sp = json_object_get(val, "special");
        if (!json_is_integer(idv) || json_integer_value(idv) < 0 ||
            json_integer_value(idv) >= CM_SPM_MAX_VOCAB)
            return cm_error(CM_ERR_FORMAT, "%s: added_tokens[%zu]: the id should be an integer in 0..%d",
                            r->name, i, CM_SPM_MAX_VOCAB - 1);
        if (!json_is_string(c) || json_string_length(c) == 0)
            return cm_error(CM_ERR_FORMAT, "%s: added_tokens[%zu]: content should be a non-empty string",
                            r->name, i);
        if (sp && !json_is_boolean(sp))
            return cm_error(CM_ERR_FORMAT, "%s: added_tokens[%zu]: special should be true or false", r->name,
                            i);
        size_t id = (size_t)json_integer_value(idv);
        if (id >= n) n = id + 1;
    }
    if (n == 0) return cm_error(CM_ERR_FORMAT, "%s: the vocabulary is empty", r->name);
    if (n > json_object_size(r->vocab) + json_array_size(r->added))
        return cm_error(CM_ERR_FORMAT,
                        "%s: ids run to %zu but there are only %zu tokens (ids must run from 0)", r->name,
                        n - 1, json_object_size(r->vocab) + json_array_size(r->added));
    r->n = n;
    r->piece = calloc(n, sizeof *r->piece);
    r->plen = calloc(n, sizeof *r->plen);
    r->added_kind = calloc(n, 1);
    if (!r->piece || !r->plen || !r->added_kind)
        return cm_error(CM_ERR_NOMEM, "%s: out of memory for %zu tokens", r->name, n);
    json_object_foreach(r->vocab, key, val) {
        size_t id = (size_t)json_integer_value(val);
        if (r->piece[id])
            return cm_error(CM_ERR_FORMAT, "%s: model.vocab: id %zu is given to both \"%.64s\" and \"%.64s\"",
                            r->name, id, r->piece[id], key);
        r->piece[id] = key;
        r->plen[id] = strlen(key);
    }
    json_array_foreach(r->added, i, val) {
        size_t id = (size_t)json_integer_value(json_object_get(val, "id"));
        json_t *c = json_object_get(val, "content");
        const char *s = json_string_value(c);
        size_t len = json_string_length(c);
        if (r->piece[id] && (r->plen[id] != len || memcmp(r->piece[id], s, len) != 0))
            return cm_error(CM_ERR_FORMAT,
                            "%s: added_tokens[%zu]: id %zu is \"%.64s\" but the vocabulary has \"%.64s\"",
                            r->name, i, id, s, r->piece[id]);
        r->piece[id] = s;
        r->plen[id] = len;
        r->added_kind[id] = json_is_true(json_object_get(val, "special")) ? 1 : 2;
    }
    for (size_t id = 0; id < n; id++)
        if (!r->piece[id])
            return cm_error(CM_ERR_FORMAT, "%s: no token has id %zu (ids must run from 0 to %zu)", r->name,
                            id, n - 1);
    return CM_OK;
}

/* Merge number `i`: "a b" or ["a", "b"]. */
static cm_status merge_at(const hf_reader *r, size_t i, const char **a, size_t *alen, const char **b,
                          size_t *blen) {
    json_t *m = json_array_get(r->merges, i);
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t len = json_string_length(m);
        const char *sp = memchr(s, ' ', len);
        if (sp && sp != s && sp + 1 != s + len && !memchr(sp + 1, ' ', (size_t)(s + len - sp - 1))) {
            *a = s;
            *alen = (size_t)(sp - s);
            *b = sp + 1;
            *blen = (size_t)(s + len - sp - 1);
            return CM_OK;
        }
    } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
               json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *alen = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *blen = json_string_length(json_array_get(m, 1));
        if (*alen && *blen) return CM_OK;
    }
    return cm_error(CM_ERR_FORMAT, "%s: model.merges[%zu]: expected \"A B\" or [\"A\", \"B\"]", r->name, i);
}

/* SentencePiece scores from the merge order. */
static cm_status spm_scores(const hf_reader *r, float *score, bool *made) {
    size_t n_merges = json_array_size(r->merges);
    char buf[2 * CM_SPM_MAX_PIECE_LEN];
    for (size_t i = 0; i < n_merges; i++) {
        const char *a, *b;
        size_t alen, blen;
        CM_TRY(merge_at(r, i, &a, &alen, &b, &blen));
        int ia = alen <= CM_SPM_MAX_PIECE_LEN ? reader_lookup(r, a, alen) : -1;
        int ib = blen <= CM_SPM_MAX_PIECE_LEN ? reader_lookup(r, b, blen) : -1;
        if (ia < 0 || ib < 0) {
            const char *u = ia < 0 ? a : b;
            size_t ulen = ia < 0 ? alen : blen;
            return cm_error(CM_ERR_FORMAT,
                            "%s: model.merges[%zu]: merge \"%.*s %.*s\" names an unknown token \"%.*s\"",
                            r->name, i, (int)(alen > 64 ? 64 : alen), a, (int)(blen > 64 ? 64 : blen), b,
                            (int)(ulen > 64 ? 64 : ulen), u);
        }
        int res = -1;
        if (alen + blen <= CM_SPM_MAX_PIECE_LEN) {
            memcpy(buf, a, alen);
            memcpy(buf + alen, b, blen);
            res = reader_lookup(r, buf, alen + blen);
        }
        if (res < 0)
            return cm_error(
                CM_ERR_FORMAT,
                "%s: model.merges[%zu]: merge \"%.*s %.*s\": the merged token is not in the vocabulary",
                r->name, i, (int)(alen > 64 ? 64 : alen), a, (int)(blen > 64 ? 64 : blen), b);
        if (!made[res]) {
            made[res] = true;
            score[res] = -(float)(i + 1);
        }
    }
    return CM_OK;
}

/* Number of UTF-8 characters in s[0..n) (bytes that start none count as one). */
static size_t n_chars(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) k++;
    return k;
}

/* The special token a TemplateProcessing item names ({"SpecialToken": {"id": "<s>"}}), or NULL. */
static const char *template_special(const json_t *item) {
    return str_of(json_object_get(item, "SpecialToken"), "id");
}

/* BOS/EOS and add_bos/add_eos from a TemplateProcessing post-processor (directly or in a Sequence). */
static cm_status read_post_processor(const hf_reader *r, const json_t *pp, cm_tokenizer *t) {
    if (!json_is_object(pp)) return CM_OK;
    const char *type = str_of(pp, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(pp, "processors"), i, p) CM_TRY(read_post_processor(r, p, t));
        return CM_OK;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0) return CM_OK;
    json_t *single = json_object_get(pp, "single");
    if (!json_is_array(single))
        return cm_error(CM_ERR_FORMAT, "%s: post_processor TemplateProcessing has no \"single\" list",
                        r->name);
    size_t n = json_array_size(single);
    const char *first = n ? template_special(json_array_get(single, 0)) : NULL;
    const char *last = n > 1 ? template_special(json_array_get(single, n - 1)) : NULL;
    t->add_bos = t->add_eos = false;
    if (first) {
        int id = cm_spm_lookup(t, first, strlen(first));
        if (id < 0)
            return cm_error(CM_ERR_FORMAT,
                            "%s: post_processor names \"%.64s\", which is not in the vocabulary", r->name,
                            first);
        t->bos = id;
        t->add_bos = true;
    }
    if (last) {
        int id = cm_spm_lookup(t, last, strlen(last));
        if (id < 0)
            return cm_error(CM_ERR_FORMAT,
                            "%s: post_processor names \"%.64s\", which is not in the vocabulary", r->name,
                            last);
        t->eos = id;
        t->add_eos = true;
    }
    return CM_OK;
}

static int lookup_cstr(const cm_tokenizer *t, const char *s) {
    return cm_spm_lookup(t, s, strlen(s));
}

static cm_status build(hf_reader *r, cm_tokenizer **out) {
    json_t *model = r->model;
    bool byte_fallback, ignore_merges;
    CM_TRY(opt_bool(model, "byte_fallback", false, &byte_fallback, r->name, "model."));
    CM_TRY(opt_bool(model, "ignore_merges", false, &ignore_merges, r->name, "model."));
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return cm_error(CM_ERR_UNSUPPORTED, "%s: model.dropout is not supported", r->name);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(model, affixes[k]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return cm_error(CM_ERR_UNSUPPORTED, "%s: model.%s is not supported", r->name, affixes[k]);
    }
    CM_TRY(read_normalizer(r, json_object_get(r->root, "normalizer"), 0));
    CM_TRY(read_pre_tokenizer(r, json_object_get(r->root, "pre_tokenizer")));
    if (byte_fallback) r->sp_style = true;
    if (r->byte_level == r->sp_style)
        return cm_error(CM_ERR_UNSUPPORTED,
                        r->byte_level ? "%s: mixes byte-level and SentencePiece-style (\"▁\") handling"
                                      : "%s: neither a byte-level BPE (ByteLevel pre_tokenizer) nor a "
                                        "SentencePiece-style BPE (byte_fallback, \"▁\" normalizer)",
                        r->name);
    if (r->byte_level && (r->collapse || r->trim))
        return cm_error(CM_ERR_UNSUPPORTED, "%s: a byte-level BPE with a normalizer is not supported",
                        r->name);
    if (r->collapse != r->trim)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: only both whitespace Replace normalizers together are supported", r->name);
    CM_TRY(read_pieces(r));
    size_t n_merges = json_array_size(r->merges);
    if (n_merges > CM_BPE_MAX_MERGES)
        return cm_error(CM_ERR_FORMAT, "%s: %zu merges is more than the %d supported", r->name, n_merges,
                        CM_BPE_MAX_MERGES);
    const char *unk_token = str_of(model, "unk_token");
    float *score = NULL;
    bool *made = NULL;
    cm_tokenizer *t = NULL;
    cm_status st = CM_OK;
    if (r->sp_style) {
        score = calloc(r->n, sizeof *score);
        made = calloc(r->n, sizeof *made);
        if (!score || !made) {
            st = cm_error(CM_ERR_NOMEM, "%s: out of memory", r->name);
            goto done;
        }
        if ((st = spm_scores(r, score, made))) goto done;
    }
    if ((st = cm_spm_alloc(r->n, r->name, &t))) goto done;
    for (size_t id = 0; id < r->n && !st; id++) {
        const char *p = r->piece[id];
        size_t len = r->plen[id];
        int type = CM_TOKEN_NORMAL;
        float s = 0.0f;
        if (unk_token && strlen(unk_token) == len && memcmp(unk_token, p, len) == 0)
            type = CM_TOKEN_UNKNOWN;
        else if (r->added_kind[id] == 1)
            type = CM_TOKEN_CONTROL;
        else if (r->added_kind[id] == 2)
            type = CM_TOKEN_USER_DEFINED;
        else if (r->sp_style && byte_fallback && cm_spm_byte_piece_value(p, len) >= 0)
            type = CM_TOKEN_BYTE;
        if (r->sp_style && type == CM_TOKEN_NORMAL && !made[id] && n_chars(p, len) > 1)
            s = -(float)(n_merges + 1 + id); /* no merge makes it: after every piece that one does */
        else if (r->sp_style)
            s = score[id];
        st = cm_spm_set_piece(t, (int)id, p, len, s, type, r->name);
    }
    if (st) goto done;
    t->add_bos = t->add_eos = false;
    if (r->sp_style) {
        t->add_dummy_prefix = r->dummy_prefix;
        t->escape_whitespaces = r->escape;
        t->remove_extra_whitespaces = r->collapse && r->trim;
    }
    st = cm_spm_finish(t, r->name);
    if (st) {
        t = NULL; /* freed by cm_spm_finish */
        goto done;
    }
    if (r->sp_style) {
        t->unk = unk_token ? lookup_cstr(t, unk_token) : -1;
        t->bos = lookup_cstr(t, "<s>");
        t->eos = lookup_cstr(t, "</s>");
    } else {
        t->bos = lookup_cstr(t, "<|begin_of_text|>");
        t->eos = lookup_cstr(t, "<|end_of_text|>");
        if (t->bos < 0) t->bos = lookup_cstr(t, "<|endoftext|>");
        if (t->eos < 0) t->eos = lookup_cstr(t, "<|endoftext|>");
        t->eot = lookup_cstr(t, "<|eot_id|>");
        t->eom = lookup_cstr(t, "<|eom_id|>");
        if (unk_token) t->unk = lookup_cstr(t, unk_token);
    }
    if ((st = read_post_processor(r, json_object_get(r->root, "post_processor"), t))) goto done;
    if (r->sp_style) goto done; /* the scores carry the merges */
    if ((st = cm_bpe_setup(t, (cm_bpe_pre)r->pre, n_merges, r->name))) goto done;
    cm_bpe_set_ignore_merges(t, ignore_merges);
    char where[1100];
    for (size_t i = 0; i < n_merges && !st; i++) {
        const char *a, *b;
        size_t alen, blen;
        if ((st = merge_at(r, i, &a, &alen, &b, &blen))) break;
        snprintf(where, sizeof where, "%.1000s: model.merges[%zu]", r->name, i);
        st = cm_bpe_add_merge(t, a, alen, b, blen, where);
    }
done:
    free(score);
    free(made);
    if (st) {
        cm_tokenizer_close(t);
        return st;
    }
    *out = t;
    return CM_OK;
}

cm_status cm_tokenizer_parse_hf_json(const char *json, size_t len, const char *name, cm_tokenizer **out) {
    *out = NULL;
    if (!name) name = "tokenizer.json";
    if (!json && len) return cm_error(CM_ERR_ARG, "%s: the buffer is NULL", name);
    json_error_t err;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &err);
    if (!root) return invalid_json(name, &err);
    hf_reader r = {.name = name, .root = root, .pre = CM_BPE_PRE_GPT2};
    cm_status st = CM_OK;
    if (!json_is_object(root)) {
        st = cm_error(CM_ERR_FORMAT, "%s:1: expected a JSON object (a tokenizers tokenizer.json)", name);
        goto done;
    }
    r.model = json_object_get(root, "model");
    if (!json_is_object(r.model)) {
        st = cm_error(CM_ERR_FORMAT, "%s: \"model\" should be an object", name);
        goto done;
    }
    json_t *type = json_object_get(r.model, "type");
    if (type && !json_is_string(type)) {
        st = cm_error(CM_ERR_FORMAT, "%s: model.type should be a string", name);
        goto done;
    }
    if (type && strcmp(json_string_value(type), "BPE") != 0) {
        st = cm_error(CM_ERR_UNSUPPORTED, "%s: model.type \"%.64s\" is not supported (only BPE)", name,
                      json_string_value(type));
        goto done;
    }
    r.vocab = json_object_get(r.model, "vocab");
    r.merges = json_object_get(r.model, "merges");
    r.added = json_object_get(root, "added_tokens");
    if (!json_is_object(r.vocab)) {
        st = cm_error(CM_ERR_FORMAT, "%s: model.vocab should be an object mapping tokens to ids", name);
        goto done;
    }
    if (!r.merges || json_is_null(r.merges)) r.merges = NULL;
    if (r.merges && !json_is_array(r.merges)) {
        st = cm_error(CM_ERR_FORMAT, "%s: model.merges should be a list", name);
        goto done;
    }
    if (json_is_null(r.added)) r.added = NULL;
    st = build(&r, out);
done:
    free(r.piece);
    free(r.plen);
    free(r.added_kind);
    json_decref(root);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------
 * tokenizer_config.json */

/* A special token named by the config: "text" or {"content": "text", ...}; NULL if absent or null. */
static cm_status config_token(const json_t *root, const char *key, const char *name, const char **out) {
    json_t *v = json_object_get(root, key);
    *out = NULL;
    if (!v || json_is_null(v)) return CM_OK;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v))
        return cm_error(CM_ERR_FORMAT, "%s: %s should be a string or {\"content\": \"...\"}", name, key);
    *out = json_string_value(v);
    return CM_OK;
}

cm_status cm_tokenizer_apply_hf_config(cm_tokenizer *t, const char *json, size_t len, const char *name) {
    if (!name) name = "tokenizer_config.json";
    if (!json && len) return cm_error(CM_ERR_ARG, "%s: the buffer is NULL", name);
    json_error_t err;
    json_t *root = json_loadb(json ? json : "", len, 0, &err);
    if (!root) return invalid_json(name, &err);
    cm_status st = CM_OK;
    if (!json_is_object(root)) {
        st = cm_error(CM_ERR_FORMAT, "%s:1: expected a JSON object", name);
        goto done;
    }
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int *ids[] = {&t->bos, &t->eos, &t->unk, &t->pad};
    for (int k = 0; k < 4; k++) {
        const char *s;
        if ((st = config_token(root, keys[k], name, &s))) goto done;
        if (!s) continue;
        int id = lookup_cstr(t, s);
        if (id < 0 && k < 2) {
            st = cm_error(CM_ERR_FORMAT, "%s: %s \"%.64s\" is not in the vocabulary", name, keys[k], s);
            goto done;
        }
        if (id >= 0) *ids[k] = id; /* an unknown unk/pad token is left as it was */
    }
    if ((st = opt_bool(root, "add_bos_token", t->add_bos, &t->add_bos, name, ""))) goto done;
    if ((st = opt_bool(root, "add_eos_token", t->add_eos, &t->add_eos, name, ""))) goto done;
    if (t->add_bos && t->bos < 0) {
        st = cm_error(CM_ERR_FORMAT, "%s: add_bos_token is true but there is no BOS token", name);
        goto done;
    }
    if (t->add_eos && t->eos < 0) {
        st = cm_error(CM_ERR_FORMAT, "%s: add_eos_token is true but there is no EOS token", name);
        goto done;
    }
    json_t *ct = json_object_get(root, "chat_template");
    if (json_is_string(ct)) {
        st = cm_tokenizer_set_chat_template(t, json_string_value(ct));
    } else if (json_is_array(ct)) {
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e) {
            const char *tmpl = str_of(e, "template");
            if (!json_is_object(e) || !json_is_string(json_object_get(e, "name")) || !tmpl) {
                st = cm_error(CM_ERR_FORMAT,
                              "%s: chat_template[%zu] should be {\"name\": ..., \"template\": ...}", name, i);
                goto done;
            }
            if (str_is(e, "name", "default")) st = cm_tokenizer_set_chat_template(t, tmpl);
        }
    } else if (ct && !json_is_null(ct)) {
        st = cm_error(CM_ERR_FORMAT, "%s: chat_template should be a string or a list of {name, template}",
                      name);
    }
done:
    json_decref(root);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------
 * Writing tokenizer.json */

static bool mergeable(const cm_tokenizer *t, int id) {
    return id >= 0 && (t->type[id] == CM_TOKEN_NORMAL || t->type[id] == CM_TOKEN_USER_DEFINED);
}

typedef struct {
    int32_t p, a, b, cut; /* piece p = a + b, cut = the byte length of a */
} spm_merge;

static int cmp_spm_merge(const void *x, const void *y, void *ctx) {
    const cm_tokenizer *t = ctx;
    const spm_merge *m = x, *n = y;
    if (t->score[m->p] != t->score[n->p]) return t->score[m->p] > t->score[n->p] ? -1 : 1;
    if (m->p != n->p) return m->p < n->p ? -1 : 1;
    return (m->cut > n->cut) - (m->cut < n->cut);
}

/* For every mergeable piece of two or more characters and every split of it into two mergeable pieces: the
 * pair, ordered by the piece's score (highest first), then id. HF's lowest-rank-first BPE over this list
 * makes the same merges as the SentencePiece encoder. */
static cm_status spm_derive_merges(const cm_tokenizer *t, spm_merge **out, size_t *n_out) {
    size_t n = 0, cap = 1024;
    spm_merge *m = malloc(cap * sizeof *m);
    if (!m) return cm_error(CM_ERR_NOMEM, "tokenizer.json: out of memory for merges");
    for (int id = 0; id < t->n_vocab; id++) {
        if (!mergeable(t, id)) continue;
        const char *p = t->blob + t->offset[id];
        size_t len = t->offset[id + 1] - t->offset[id];
        for (size_t cut = 1; cut < len; cut++) {
            if (((unsigned char)p[cut] & 0xC0) == 0x80) continue; /* inside a character */
            int a = cm_spm_lookup(t, p, cut), b = cm_spm_lookup(t, p + cut, len - cut);
            if (!mergeable(t, a) || !mergeable(t, b)) continue;
            if (n == cap) {
                spm_merge *g = realloc(m, (cap *= 2) * sizeof *m);
                if (!g) {
                    free(m);
                    return cm_error(CM_ERR_NOMEM, "tokenizer.json: out of memory for merges");
                }
                m = g;
            }
            m[n++] = (spm_merge){.p = id, .a = a, .b = b, .cut = (int32_t)cut};
        }
    }
    qsort_r(m, n, sizeof *m, cmp_spm_merge, (void *)t);
    *out = m;
    *n_out = n;
    return CM_OK;
}

/* A JSON string of piece `id`, or NULL (invalid UTF-8). */
static json_t *piece_str(const cm_tokenizer *t, int id) {
    return json_stringn(t->blob + t->offset[id], t->offset[id + 1] - t->offset[id]);
}

static cm_status bad_piece(int id) {
    return cm_error(CM_ERR_UNSUPPORTED, "tokenizer.json: token %d is not valid UTF-8, which JSON cannot hold",
                    id);
}

static json_t *obj_set(json_t *o, const char *key, json_t *v) {
    json_object_set_new(o, key, v ? v : json_null());
    return o;
}

static json_t *type_obj(const char *type) {
    return obj_set(json_object(), "type", json_string(type));
}

/* {"SpecialToken": {"id": piece, "type_id": k}} / {"Sequence": {"id": "A", "type_id": k}} */
static json_t *tp_item(const char *kind, json_t *id, int type_id) {
    json_t *inner = obj_set(obj_set(json_object(), "id", id), "type_id", json_integer(type_id));
    return obj_set(json_object(), kind, inner);
}

static json_t *template_processing(const cm_tokenizer *t) {
    json_t *single = json_array(), *pair = json_array(), *special = json_object();
    for (int part = 0; part < 2; part++) {
        json_t *list = part ? pair : single;
        for (int seq = 0; seq <= part; seq++) {
            if (t->add_bos) json_array_append_new(list, tp_item("SpecialToken", piece_str(t, t->bos), seq));
            json_array_append_new(list, tp_item("Sequence", json_string(seq ? "B" : "A"), seq));
            if (t->add_eos) json_array_append_new(list, tp_item("SpecialToken", piece_str(t, t->eos), seq));
        }
    }
    int ids[2] = {t->add_bos ? t->bos : -1, t->add_eos ? t->eos : -1};
    for (int k = 0; k < 2; k++) {
        if (ids[k] < 0) continue;
        json_t *e = obj_set(json_object(), "id", piece_str(t, ids[k]));
        obj_set(e, "ids", json_pack("[i]", ids[k]));
        obj_set(e, "tokens", json_pack("[o]", piece_str(t, ids[k])));
        size_t len = t->offset[ids[k] + 1] - t->offset[ids[k]];
        json_object_setn_new(special, t->blob + t->offset[ids[k]], len, e);
    }
    json_t *tp = type_obj("TemplateProcessing");
    obj_set(tp, "single", single);
    obj_set(tp, "pair", pair);
    obj_set(tp, "special_tokens", special);
    return tp;
}

static json_t *byte_level(bool prefix, bool use_regex) {
    json_t *o = type_obj("ByteLevel");
    obj_set(o, "add_prefix_space", json_boolean(prefix));
    obj_set(o, "trim_offsets", json_true());
    obj_set(o, "use_regex", json_boolean(use_regex));
    return o;
}

static json_t *replace(const char *kind, const char *pattern, const char *content) {
    json_t *o = type_obj("Replace");
    obj_set(o, "pattern", obj_set(json_object(), kind, json_string(pattern)));
    obj_set(o, "content", json_string(content));
    return o;
}

static json_t *seq(const char *key, json_t *list) {
    return obj_set(type_obj("Sequence"), key, list);
}

/* model.vocab, added_tokens and model.merges. */
static cm_status write_vocab(const cm_tokenizer *t, json_t *model, json_t *added) {
    json_t *vocab = json_object();
    obj_set(model, "vocab", vocab);
    for (int id = 0; id < t->n_vocab; id++) {
        const char *p = t->blob + t->offset[id];
        size_t len = t->offset[id + 1] - t->offset[id];
        int type = t->type[id];
        bool dup = json_object_getn(vocab, p, len) != NULL;
        if (!dup && json_object_setn_new(vocab, p, len, json_integer(id))) return bad_piece(id);
        bool special = type == CM_TOKEN_CONTROL || type == CM_TOKEN_UNKNOWN;
        if (!special && type != CM_TOKEN_USER_DEFINED && !dup) continue;
        json_t *a = json_object();
        obj_set(a, "id", json_integer(id));
        json_t *content = piece_str(t, id);
        if (!content) {
            json_decref(a);
            return bad_piece(id);
        }
        obj_set(a, "content", content);
        obj_set(a, "single_word", json_false());
        obj_set(a, "lstrip", json_false());
        obj_set(a, "rstrip", json_false());
        obj_set(a, "normalized", json_boolean(!special));
        obj_set(a, "special", json_boolean(special));
        json_array_append_new(added, a);
    }
    return CM_OK;
}

static cm_status add_merges(const cm_tokenizer *t, json_t *model, const int32_t *pairs, size_t n) {
    bool as_pairs = false;
    for (size_t i = 0; i < 2 * n && !as_pairs; i++) {
        int id = pairs[i];
        if (memchr(t->blob + t->offset[id], ' ', t->offset[id + 1] - t->offset[id])) as_pairs = true;
    }
    json_t *merges = json_array();
    obj_set(model, "merges", merges);
    char *buf = malloc(2 * t->max_piece_len + 2);
    if (!buf) return cm_error(CM_ERR_NOMEM, "tokenizer.json: out of memory");
    cm_status st = CM_OK;
    for (size_t i = 0; i < n && !st; i++) {
        int a = pairs[2 * i], b = pairs[2 * i + 1];
        json_t *m;
        if (as_pairs) {
            m = json_pack("[oo]", piece_str(t, a), piece_str(t, b));
        } else {
            size_t la = t->offset[a + 1] - t->offset[a], lb = t->offset[b + 1] - t->offset[b];
            memcpy(buf, t->blob + t->offset[a], la);
            buf[la] = ' ';
            memcpy(buf + la + 1, t->blob + t->offset[b], lb);
            m = json_stringn(buf, la + 1 + lb);
        }
        if (!m || json_array_append_new(merges, m)) st = bad_piece(a);
    }
    free(buf);
    return st;
}

cm_status cm_tokenizer_serialize_hf_json(const cm_tokenizer *t, char **json, size_t *len) {
    *json = NULL;
    if (len) *len = 0;
    bool spm = t->kind == CM_TOKENIZER_SPM;
    if (spm && t->remove_extra_whitespaces && !t->escape_whitespaces)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "tokenizer.json: this SentencePiece normalization cannot be written");
    json_t *root = json_object(), *added = json_array(), *model = type_obj("BPE");
    obj_set(root, "version", json_string("1.0"));
    obj_set(root, "truncation", NULL);
    obj_set(root, "padding", NULL);
    obj_set(root, "added_tokens", added);
    cm_status st = CM_OK;
    int32_t *pairs = NULL;
    size_t n_pairs = 0;
    if (spm) {
        json_t *nz = json_array();
        if (t->remove_extra_whitespaces) {
            json_array_append_new(nz, replace("Regex", trim_pattern, ""));
            json_array_append_new(nz, replace("Regex", collapse_pattern, " "));
        }
        if (t->add_dummy_prefix)
            json_array_append_new(nz, obj_set(type_obj("Prepend"), "prepend", json_string(SPACE_SYMBOL)));
        if (t->escape_whitespaces) json_array_append_new(nz, replace("String", " ", SPACE_SYMBOL));
        obj_set(root, "normalizer", json_array_size(nz) ? seq("normalizers", nz) : NULL);
        if (!json_array_size(nz)) json_decref(nz);
        obj_set(root, "pre_tokenizer", NULL);
    } else {
        obj_set(root, "normalizer", NULL);
        if (cm_bpe_pre_of(t) == CM_BPE_PRE_LLAMA3) {
            json_t *split = type_obj("Split");
            obj_set(split, "pattern", obj_set(json_object(), "Regex", json_string(llama3_pattern_hf)));
            obj_set(split, "behavior", json_string("Isolated"));
            obj_set(split, "invert", json_false());
            obj_set(root, "pre_tokenizer",
                    seq("pretokenizers", json_pack("[oo]", split, byte_level(false, false))));
        } else {
            obj_set(root, "pre_tokenizer", byte_level(false, true));
        }
    }
    if (t->add_bos || t->add_eos)
        obj_set(root, "post_processor", template_processing(t));
    else
        obj_set(root, "post_processor", spm ? NULL : byte_level(true, false));
    if (spm) {
        json_t *strip = type_obj("Strip");
        obj_set(strip, "content", json_string(" "));
        obj_set(strip, "start", json_integer(1));
        obj_set(strip, "stop", json_integer(0));
        json_t *list = json_array();
        json_array_append_new(list, replace("String", SPACE_SYMBOL, " "));
        json_array_append_new(list, type_obj("ByteFallback"));
        json_array_append_new(list, type_obj("Fuse"));
        if (t->add_dummy_prefix)
            json_array_append_new(list, strip);
        else
            json_decref(strip);
        obj_set(root, "decoder", seq("decoders", list));
    } else {
        obj_set(root, "decoder", byte_level(true, true));
    }
    obj_set(root, "model", model);
    obj_set(model, "dropout", NULL);
    obj_set(model, "unk_token", t->unk >= 0 ? piece_str(t, t->unk) : NULL);
    obj_set(model, "continuing_subword_prefix", NULL);
    obj_set(model, "end_of_word_suffix", NULL);
    obj_set(model, "fuse_unk", json_boolean(spm));
    obj_set(model, "byte_fallback", json_boolean(spm));
    obj_set(model, "ignore_merges", json_boolean(!spm && cm_bpe_ignore_merges(t)));
    if ((st = write_vocab(t, model, added))) goto done;
    if (spm) {
        spm_merge *m = NULL;
        if ((st = spm_derive_merges(t, &m, &n_pairs))) goto done;
        pairs = malloc((n_pairs ? n_pairs : 1) * 2 * sizeof *pairs);
        if (pairs)
            for (size_t i = 0; i < n_pairs; i++) {
                pairs[2 * i] = m[i].a;
                pairs[2 * i + 1] = m[i].b;
            }
        free(m);
    } else {
        n_pairs = cm_bpe_n_merges(t);
        pairs = malloc((n_pairs ? n_pairs : 1) * 2 * sizeof *pairs);
        if (pairs)
            for (size_t i = 0; i < n_pairs; i++) cm_bpe_merge(t, i, &pairs[2 * i], &pairs[2 * i + 1]);
    }
    if (!pairs) {
        st = cm_error(CM_ERR_NOMEM, "tokenizer.json: out of memory for %zu merges", n_pairs);
        goto done;
    }
    if ((st = add_merges(t, model, pairs, n_pairs))) goto done;
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text) {
        st = cm_error(CM_ERR_NOMEM, "tokenizer.json: out of memory (or a token JSON cannot hold)");
        goto done;
    }
    *json = text;
    if (len) *len = strlen(text);
done:
    free(pairs);
    json_decref(root);
    return st;
}

cm_status cm_tokenizer_save_hf_json(const cm_tokenizer *t, const char *path) {
    char *text;
    size_t len;
    cm_status st = cm_tokenizer_serialize_hf_json(t, &text, &len);
    if (st) return cm_error_prefix(st, "%s", path);
    text[len] = '\n'; /* over the NUL: written with its length */
    st = cm_write_file_atomic(path, text, len + 1);
    free(text);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------
 * Files */

cm_status cm_tokenizer_open_hf_json_file(const char *path, cm_tokenizer **out) {
    char *data;
    size_t len;
    CM_TRY(cm_read_file(path, MAX_HF_FILE, &data, &len));
    cm_status st = cm_tokenizer_parse_hf_json(data, len, path, out);
    free(data);
    return st;
}

cm_status cm_tokenizer_apply_hf_config_file(cm_tokenizer *t, const char *dir) {
    char *path = cm_path_join(dir, "tokenizer_config.json");
    if (!path) return cm_error(CM_ERR_NOMEM, "%s: out of memory", dir);
    cm_status st = CM_OK;
    if (cm_path_exists(path)) {
        char *data;
        size_t len;
        st = cm_read_file(path, MAX_HF_FILE, &data, &len);
        if (!st) {
            st = cm_tokenizer_apply_hf_config(t, data, len, path);
            free(data);
        }
    }
    free(path);
    return st;
}
