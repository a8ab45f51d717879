/* PEFT LoRA adapters merged into a model at load (FACTS 6). The config is read with jansson, the tensors with
 * the hardened safetensors reader; every tensor is matched to one module of one layer and checked against the
 * base weight's shape before anything is computed. The merged weights are built aside and swapped in only
 * when all of them are ready, so a failure leaves the model as it was. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <math.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "camelid/file.h"
#include "camelid/lora.h"
#include "camelid/safetensors.h"
#include "model/model_internal.h"

#define MAX_CONFIG_BYTES ((size_t)1 << 20)
#define MAX_RANK 65536
#define REGEX_MATCH_LIMIT 1000000

enum { MOD_Q, MOD_K, MOD_V, MOD_O, MOD_GATE, MOD_UP, MOD_DOWN, N_MODS };
static const char *const mod_names[N_MODS] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                              "gate_proj", "up_proj", "down_proj"};
static const char *const mod_parents[N_MODS] = {"self_attn", "self_attn", "self_attn", "self_attn",
                                                "mlp",       "mlp",       "mlp"};
static const char key_prefix[] = "base_model.model.model.layers.";

static cm_weight *module_weight(cm_model *m, int layer, int mod) {
    cm_layer *L = &m->layers[layer];
    cm_weight *ws[N_MODS] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return ws[mod];
}

/* transformers' module name, e.g. "model.layers.3.self_attn.q_proj" (what PEFT matches patterns against) */
static void module_name(int layer, int mod, char *buf, size_t cap) {
    snprintf(buf, cap, "model.layers.%d.%s.%s", layer, mod_parents[mod], mod_names[mod]);
}

/* ---- adapter_config.json ---- */

typedef struct {
    const char *path;
    json_t *root;
    int r;
    double alpha;
    bool rslora;
    bool all_linear;
    const char *target_regex; /* target_modules as a string: fullmatch */
    json_t *target_list;      /* target_modules as a list: name or ".name" suffix */
    const char *exclude_regex;
    json_t *exclude_list;
    json_t *layers; /* layers_to_transform: NULL, or an array of integers */
    json_t *rank_pattern, *alpha_pattern;
} lora_config;

/* Python re semantics that matter here: `anchored` = re.match, `full` = re.fullmatch. */
static cm_status regex_match(const lora_config *c, const char *what, const char *pattern, const char *subject,
                             bool full, bool *matched) {
    int err;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_ANCHORED | PCRE2_UTF | (full ? PCRE2_ENDANCHORED : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return cm_error(CM_ERR_FORMAT, "%s: %s \"%s\" is not a valid regular expression (offset %zu): %s",
                        c->path, what, pattern, (size_t)off, (const char *)msg);
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    cm_status st = CM_OK;
    if (!md || !mc) {
        st = cm_error(CM_ERR_NOMEM, "out of memory");
    } else {
        pcre2_set_match_limit(mc, REGEX_MATCH_LIMIT);
        int rc = pcre2_match(re, (PCRE2_SPTR)subject, strlen(subject), 0, 0, md, mc);
        if (rc >= 0)
            *matched = true;
        else if (rc == PCRE2_ERROR_NOMATCH)
            *matched = false;
        else
            st = cm_error(CM_ERR_FORMAT, "%s: %s \"%s\" could not be matched against \"%s\" (error %d)",
                          c->path, what, pattern, subject, rc);
    }
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return st;
}

/* PEFT's check for a list entry: the whole module name, or its last dotted components. */
static bool name_matches_entry(const char *full, const char *entry) {
    size_t nf = strlen(full), ne = strlen(entry);
    if (nf == ne) return strcmp(full, entry) == 0;
    return ne > 0 && nf > ne && full[nf - ne - 1] == '.' && strcmp(full + nf - ne, entry) == 0;
}

/* Does a target_modules / exclude_modules value (list or regex) select the module `full`? */
static cm_status selects(const lora_config *c, const char *what, json_t *list, const char *regex,
                         const char *full, bool *out) {
    *out = false;
    if (regex) return regex_match(c, what, regex, full, true, out);
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        if (name_matches_entry(full, json_string_value(v))) {
            *out = true;
            break;
        }
    }
    return CM_OK;
}

/* A list of strings, or a string, or null: into *list or *regex. */
static cm_status read_modules(lora_config *c, const char *key, json_t **list, const char **regex) {
    json_t *v = json_object_get(c->root, key);
    *list = NULL;
    *regex = NULL;
    if (!v || json_is_null(v)) return CM_OK;
    if (json_is_string(v)) {
        *regex = json_string_value(v);
        return CM_OK;
    }
    if (!json_is_array(v))
        return cm_error(CM_ERR_FORMAT, "%s: \"%s\" must be a list of module names or a regular expression",
                        c->path, key);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_string(e))
            return cm_error(CM_ERR_FORMAT, "%s: \"%s\"[%zu] is not a string", c->path, key, i);
    }
    *list = v;
    return CM_OK;
}

static cm_status read_pattern(lora_config *c, const char *key, bool integer, json_t **out) {
    json_t *v = json_object_get(c->root, key);
    *out = NULL;
    if (!v || json_is_null(v)) return CM_OK;
    if (!json_is_object(v)) return cm_error(CM_ERR_FORMAT, "%s: \"%s\" must be an object", c->path, key);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        bool ok = integer
                      ? json_is_integer(x) && json_integer_value(x) >= 1 && json_integer_value(x) <= MAX_RANK
                      : json_is_number(x);
        if (!ok)
            return cm_error(CM_ERR_FORMAT, "%s: %s[\"%s\"] must be %s", c->path, key, k,
                            integer ? "an integer from 1 to 65536" : "a number");
    }
    *out = json_object_size(v) ? v : NULL;
    return CM_OK;
}

static bool is_false_or_absent(json_t *v) {
    return !v || json_is_null(v) || json_is_false(v);
}

static cm_status parse_config(lora_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    c->path = path;
    c->r = 8;
    c->alpha = 8;
    char *text;
    size_t len;
    CM_TRY(cm_read_file(path, MAX_CONFIG_BYTES, &text, &len));
    json_error_t jerr;
    c->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!c->root) return cm_error(CM_ERR_FORMAT, "%s: line %d: bad JSON: %s", path, jerr.line, jerr.text);
    json_t *root = c->root, *v;
    if (!json_is_object(root)) return cm_error(CM_ERR_FORMAT, "%s: not a JSON object", path);
    if ((v = json_object_get(root, "peft_type")) && !json_is_null(v) &&
        !(json_is_string(v) && strcmp(json_string_value(v), "LORA") == 0))
        return cm_error(CM_ERR_UNSUPPORTED, "%s: peft_type is %s; only \"LORA\" adapters are supported", path,
                        json_is_string(v) ? json_string_value(v) : "not a string");
    if ((v = json_object_get(root, "r")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > MAX_RANK)
            return cm_error(CM_ERR_FORMAT, "%s: \"r\" must be an integer from 1 to %d", path, MAX_RANK);
        c->r = (int)json_integer_value(v);
    }
    if ((v = json_object_get(root, "lora_alpha")) && !json_is_null(v)) {
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return cm_error(CM_ERR_FORMAT, "%s: \"lora_alpha\" must be a number", path);
        c->alpha = json_number_value(v);
    }
    if ((v = json_object_get(root, "use_rslora")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return cm_error(CM_ERR_FORMAT, "%s: \"use_rslora\" must be true or false", path);
        c->rslora = json_is_true(v);
    }
    if ((v = json_object_get(root, "bias")) && !json_is_null(v) &&
        !(json_is_string(v) && strcmp(json_string_value(v), "none") == 0))
        return cm_error(CM_ERR_UNSUPPORTED, "%s: bias is \"%s\"; only \"none\" is supported (no bias terms)",
                        path, json_is_string(v) ? json_string_value(v) : "?");
    if (!is_false_or_absent(json_object_get(root, "fan_in_fan_out")))
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: fan_in_fan_out is set (GPT-2 Conv1D layout); Llama adapters have it false",
                        path);
    if (!is_false_or_absent(json_object_get(root, "use_dora")))
        return cm_error(CM_ERR_UNSUPPORTED, "%s: use_dora is set; DoRA adapters are not supported", path);
    v = json_object_get(root, "modules_to_save");
    if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: modules_to_save is not empty; adapters that replace whole modules are not "
                        "supported",
                        path);
    CM_TRY(read_modules(c, "target_modules", &c->target_list, &c->target_regex));
    if (c->target_regex && strcasecmp(c->target_regex, "all-linear") == 0) {
        c->all_linear = true;
        c->target_regex = NULL;
    }
    if (!c->target_list && !c->target_regex && !c->all_linear) {
        /* PEFT's default for llama */
        c->target_list = json_pack("[ss]", "q_proj", "v_proj");
        if (!c->target_list || json_object_set_new(root, "target_modules", c->target_list) != 0)
            return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    CM_TRY(read_modules(c, "exclude_modules", &c->exclude_list, &c->exclude_regex));
    v = json_object_get(root, "layers_to_transform");
    if (v && json_is_integer(v)) {
        c->layers = json_pack("[O]", v);
        if (!c->layers || json_object_set_new(root, "layers_to_transform", c->layers) != 0)
            return cm_error(CM_ERR_NOMEM, "out of memory");
    } else if (v && json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_integer(e))
                return cm_error(CM_ERR_FORMAT, "%s: layers_to_transform[%zu] is not an integer", path, i);
        }
        c->layers = v;
    } else if (v && !json_is_null(v)) {
        return cm_error(CM_ERR_FORMAT, "%s: layers_to_transform must be an integer or a list of integers",
                        path);
    }
    CM_TRY(read_pattern(c, "rank_pattern", true, &c->rank_pattern));
    CM_TRY(read_pattern(c, "alpha_pattern", false, &c->alpha_pattern));
    return CM_OK;
}

static bool layer_selected(const lora_config *c, int layer) {
    if (!c->layers) return true;
    size_t i;
    json_t *e;
    json_array_foreach(c->layers, i, e) {
        if (json_integer_value(e) == layer) return true;
    }
    return false;
}

/* Is module `mod` of `layer` adapted? (target_modules, exclude_modules, layers_to_transform) */
static cm_status is_target(const lora_config *c, int layer, int mod, bool *out) {
    char full[128];
    module_name(layer, mod, full, sizeof full);
    *out = false;
    bool hit = c->all_linear;
    if (!hit) CM_TRY(selects(c, "target_modules", c->target_list, c->target_regex, full, &hit));
    if (!hit || !layer_selected(c, layer)) return CM_OK;
    if (c->exclude_list || c->exclude_regex) {
        bool excluded;
        CM_TRY(selects(c, "exclude_modules", c->exclude_list, c->exclude_regex, full, &excluded));
        if (excluded) return CM_OK;
    }
    *out = true;
    return CM_OK;
}

/* Every target_modules entry (or the regex) must select at least one of the model's adaptable linears. */
static cm_status check_targets_exist(const lora_config *c, int n_layers) {
    if (c->all_linear) return CM_OK;
    char full[128];
    if (c->target_regex) {
        for (int l = 0; l < n_layers; l++) {
            for (int k = 0; k < N_MODS; k++) {
                bool hit;
                module_name(l, k, full, sizeof full);
                CM_TRY(regex_match(c, "target_modules", c->target_regex, full, true, &hit));
                if (hit) return CM_OK;
            }
        }
        return cm_error(CM_ERR_FORMAT,
                        "%s: target_modules \"%s\" matches none of the model's linear layers "
                        "(model.layers.N.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj})",
                        c->path, c->target_regex);
    }
    size_t i;
    json_t *e;
    json_array_foreach(c->target_list, i, e) {
        const char *entry = json_string_value(e);
        bool hit = false;
        for (int l = 0; l < n_layers && !hit; l++) {
            for (int k = 0; k < N_MODS && !hit; k++) {
                module_name(l, k, full, sizeof full);
                hit = name_matches_entry(full, entry);
            }
        }
        if (!hit)
            return cm_error(
                CM_ERR_UNSUPPORTED,
                "%s: target module \"%s\" is none of the linear layers camelid can adapt (q_proj, "
                "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
                c->path, entry);
    }
    return CM_OK;
}

/* rank_pattern / alpha_pattern: the first key k (in file order) with re.match(r"(^|.*\.)k$", name). */
static cm_status pattern_value(const lora_config *c, const char *what, json_t *pattern, const char *full,
                               json_t **out) {
    *out = NULL;
    if (!pattern) return CM_OK;
    const char *k;
    json_t *v;
    json_object_foreach(pattern, k, v) {
        size_t n = strlen(k) + 16;
        char *rx = malloc(n);
        if (!rx) return cm_error(CM_ERR_NOMEM, "out of memory");
        snprintf(rx, n, "(^|.*\\.)%s$", k);
        bool hit = false;
        cm_status st = regex_match(c, what, rx, full, false, &hit);
        free(rx);
        CM_TRY(st);
        if (hit) {
            *out = v;
            return CM_OK;
        }
    }
    return CM_OK;
}

/* ---- adapter_model.safetensors ---- */

typedef struct {
    bool target;
    int rank;
    double scale;
    const cm_tensor *ab[2]; /* lora_A, lora_B */
} lora_slot;

/* base_model.model.model.layers.{N}.{self_attn|mlp}.{module}.lora_{A|B}[.default].weight */
static bool parse_key(const char *key, long *layer, int *mod, int *which) {
    size_t n = strlen(key_prefix);
    if (strncmp(key, key_prefix, n) != 0) return false;
    const char *p = key + n;
    long v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 9) v = v * 10 + (*p++ - '0'), digits++;
    if (digits == 0 || *p++ != '.') return false;
    *layer = v;
    for (int k = 0; k < N_MODS; k++) {
        size_t lp = strlen(mod_parents[k]), lm = strlen(mod_names[k]);
        if (strncmp(p, mod_parents[k], lp) != 0 || p[lp] != '.' || strncmp(p + lp + 1, mod_names[k], lm) != 0)
            continue;
        const char *q = p + lp + 1 + lm;
        if (strncmp(q, ".lora_A.", 8) == 0)
            *which = 0;
        else if (strncmp(q, ".lora_B.", 8) == 0)
            *which = 1;
        else
            return false;
        q += 8;
        if (strncmp(q, "default.", 8) == 0) q += 8;
        if (strcmp(q, "weight") != 0) return false;
        *mod = k;
        return true;
    }
    return false;
}

static const char *shape_text(const cm_tensor *t, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static bool plain_float(cm_dtype t) {
    return t == CM_DTYPE_F32 || t == CM_DTYPE_F16 || t == CM_DTYPE_BF16;
}

/* Check a slot's A and B against the base weight. */
static cm_status check_slot(const char *file, const lora_slot *s, const cm_weight *w, int layer, int mod) {
    char full[128], buf[96];
    module_name(layer, mod, full, sizeof full);
    for (int i = 0; i < 2; i++) {
        const cm_tensor *t = s->ab[i], *other = s->ab[1 - i];
        if (!t)
            return cm_error(CM_ERR_FORMAT, "%s: \"%s\" has no lora_%c partner for %s", file, other->name,
                            i ? 'B' : 'A', full);
        if (!plain_float(t->dtype))
            return cm_error(CM_ERR_UNSUPPORTED,
                            "%s: \"%s\" has dtype %s; only F32, F16 and BF16 are supported", file, t->name,
                            cm_dtype_name(t->dtype));
        if (t->ndim != 2)
            return cm_error(CM_ERR_FORMAT, "%s: \"%s\" has shape %s, expected a matrix", file, t->name,
                            shape_text(t, buf, sizeof buf));
    }
    const cm_tensor *a = s->ab[0], *b = s->ab[1];
    if (a->shape[0] != s->rank || a->shape[1] != w->cols)
        return cm_error(CM_ERR_FORMAT,
                        "%s: \"%s\" has shape %s, expected [%d, %lld] (r %d, %s takes %lld inputs)", file,
                        a->name, shape_text(a, buf, sizeof buf), s->rank, (long long)w->cols, s->rank, full,
                        (long long)w->cols);
    if (b->shape[0] != w->rows || b->shape[1] != s->rank)
        return cm_error(CM_ERR_FORMAT,
                        "%s: \"%s\" has shape %s, expected [%lld, %d] (%s has %lld outputs, r %d)", file,
                        b->name, shape_text(b, buf, sizeof buf), (long long)w->rows, s->rank, full,
                        (long long)w->rows, s->rank);
    if (!plain_float(w->dtype))
        return cm_error(
            CM_ERR_UNSUPPORTED,
            "%s: \"%s\": the base weight %s is %s; adapters merge only into F32, F16 or BF16 weights", file,
            a->name, full, cm_dtype_name(w->dtype));
    return CM_OK;
}

/* W + scale * (B @ A) in W's dtype, as a new buffer; B's rows permuted to the interleaved RoPE layout over
 * `permute_heads` heads when that is > 0. */
static cm_status merged_weight(const cm_weight *w, const lora_slot *s, int permute_heads, int head_dim,
                               void **out) {
    *out = NULL;
    size_t rows = (size_t)w->rows, cols = (size_t)w->cols, r = (size_t)s->rank,
           esize = cm_dtype_block_bytes(w->dtype);
    size_t n_w, n_a, n_b, bytes;
    if (cm_mul_size(rows, cols, &n_w) || cm_mul_size(n_w, esize, &bytes) || cm_mul_size(r, cols, &n_a) ||
        cm_mul_size(rows, r, &n_b) || n_a > SIZE_MAX / 4 || n_b > SIZE_MAX / 8)
        return cm_error(CM_ERR_NOMEM, "adapter merge: size overflow");
    float *a = malloc((n_a ? n_a : 1) * sizeof *a), *b = malloc((n_b ? n_b : 1) * sizeof *b * 2),
          *acc = malloc((cols ? cols : 1) * sizeof *acc);
    void *dst = malloc(bytes ? bytes : 1);
    if (!a || !b || !acc || !dst) {
        free(a);
        free(b);
        free(acc);
        free(dst);
        return cm_error(CM_ERR_NOMEM, "out of memory merging an adapter");
    }
    cm_convert_to_f32(s->ab[0]->dtype, s->ab[0]->data, a, n_a);
    cm_convert_to_f32(s->ab[1]->dtype, s->ab[1]->data, b, n_b);
    if (permute_heads > 0) {
        float *perm = b + n_b;
        cm_permute_qk_rows(b, perm, permute_heads, head_dim, r * sizeof(float), false);
        memcpy(b, perm, n_b * sizeof *b);
    }
    float scale = (float)s->scale;
    for (size_t o = 0; o < rows; o++) {
        memset(acc, 0, cols * sizeof *acc);
        for (size_t k = 0; k < r; k++) {
            float bk = b[o * r + k];
            const float *ak = a + k * cols;
            for (size_t i = 0; i < cols; i++) acc[i] += bk * ak[i];
        }
        const char *src_row = (const char *)w->data + o * cols * esize;
        char *dst_row = (char *)dst + o * cols * esize;
        float *row = (float *)dst_row;
        if (w->dtype != CM_DTYPE_F32) {
            row = acc; /* reuse: acc becomes base + delta, then converts */
            float base[256];
            for (size_t i0 = 0; i0 < cols; i0 += 256) {
                size_t m = cols - i0 < 256 ? cols - i0 : 256;
                cm_convert_to_f32(w->dtype, src_row + i0 * esize, base, m);
                for (size_t i = 0; i < m; i++) row[i0 + i] = base[i] + scale * row[i0 + i];
            }
            cm_convert_from_f32(w->dtype, row, dst_row, cols);
        } else {
            const float *base = (const float *)src_row;
            for (size_t i = 0; i < cols; i++) row[i] = base[i] + scale * acc[i];
        }
    }
    free(a);
    free(b);
    free(acc);
    *out = dst;
    return CM_OK;
}

static cm_status merge(cm_model *m, const lora_config *c, const cm_safetensors *st, const char *file) {
    const cm_config *cfg = &m->cfg;
    int n_layers = cfg->n_layers;
    size_t n_slots = (size_t)n_layers * N_MODS;
    lora_slot *slots = calloc(n_slots ? n_slots : 1, sizeof *slots);
    void **bufs = calloc(n_slots ? n_slots : 1, sizeof *bufs);
    cm_status status = CM_OK;
    if (!slots || !bufs) {
        status = cm_error(CM_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((status = check_targets_exist(c, n_layers)) != CM_OK) goto done;
    char full[128];
    for (int l = 0; l < n_layers; l++) {
        for (int k = 0; k < N_MODS; k++) {
            lora_slot *s = &slots[(size_t)l * N_MODS + k];
            if ((status = is_target(c, l, k, &s->target)) != CM_OK) goto done;
            module_name(l, k, full, sizeof full);
            json_t *rv, *av;
            if ((status = pattern_value(c, "rank_pattern", c->rank_pattern, full, &rv)) != CM_OK ||
                (status = pattern_value(c, "alpha_pattern", c->alpha_pattern, full, &av)) != CM_OK)
                goto done;
            s->rank = rv ? (int)json_integer_value(rv) : c->r;
            double alpha = av ? json_number_value(av) : c->alpha;
            s->scale = c->rslora ? alpha / sqrt((double)s->rank) : alpha / s->rank;
        }
    }
    size_t n_tensors = cm_safetensors_count(st);
    if (n_tensors == 0) {
        status = cm_error(CM_ERR_FORMAT, "%s: holds no tensors", file);
        goto done;
    }
    for (size_t i = 0; i < n_tensors; i++) {
        const cm_tensor *t = cm_safetensors_get(st, i);
        long layer;
        int mod, which;
        if (!parse_key(t->name, &layer, &mod, &which)) {
            status = cm_error(CM_ERR_FORMAT,
                              "%s: unknown key \"%s\" (expected base_model.model.model.layers.N."
                              "{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj}.lora_{A,B}.weight)",
                              file, t->name);
            goto done;
        }
        if (layer >= n_layers) {
            status = cm_error(CM_ERR_FORMAT, "%s: key \"%s\" is for layer %ld, but the model has %d layers",
                              file, t->name, layer, n_layers);
            goto done;
        }
        lora_slot *s = &slots[(size_t)layer * N_MODS + mod];
        module_name((int)layer, mod, full, sizeof full);
        if (!s->target) {
            status = cm_error(CM_ERR_FORMAT, "%s: key \"%s\": adapter_config.json does not target %s", file,
                              t->name, full);
            goto done;
        }
        if (s->ab[which]) {
            status = cm_error(CM_ERR_FORMAT, "%s: keys \"%s\" and \"%s\" are the same tensor", file,
                              s->ab[which]->name, t->name);
            goto done;
        }
        s->ab[which] = t;
    }
    for (int l = 0; l < n_layers; l++) {
        for (int k = 0; k < N_MODS; k++) {
            lora_slot *s = &slots[(size_t)l * N_MODS + k];
            if (!s->target) continue;
            if (!s->ab[0] && !s->ab[1]) {
                module_name(l, k, full, sizeof full);
                status = cm_error(CM_ERR_FORMAT, "%s: no lora_A/lora_B for %s, which %s targets", file, full,
                                  c->path);
                goto done;
            }
            if ((status = check_slot(file, s, module_weight(m, l, k), l, k)) != CM_OK) goto done;
        }
    }
    /* everything fits: build the merged weights aside, then swap them in */
    bool interleaved = cfg->rope_layout == CM_ROPE_INTERLEAVED;
    for (size_t i = 0; i < n_slots; i++) {
        if (!slots[i].target) continue;
        int mod = (int)(i % N_MODS);
        int heads = !interleaved ? 0 : mod == MOD_Q ? cfg->n_heads : mod == MOD_K ? cfg->n_kv_heads : 0;
        status = merged_weight(module_weight(m, (int)(i / N_MODS), mod), &slots[i], heads, cfg->head_dim,
                               &bufs[i]);
        if (status != CM_OK) goto done;
    }
    for (size_t i = 0; i < n_slots; i++) {
        if (!bufs[i]) continue;
        module_weight(m, (int)(i / N_MODS), (int)(i % N_MODS))->data = bufs[i];
        void *buf = bufs[i];
        bufs[i] = NULL;
        if ((status = cm_model_keep(m, buf)) != CM_OK)
            goto done; /* keep frees it; cannot happen in practice */
    }
done:
    if (bufs)
        for (size_t i = 0; i < n_slots; i++) free(bufs[i]);
    free(bufs);
    free(slots);
    return status;
}

cm_status cm_model_merge_adapter(cm_model *m, const char *adapter_dir) {
    if (!cm_path_is_dir(adapter_dir))
        return cm_error(CM_ERR_IO,
                        "%s: not a folder (an adapter is a PEFT folder with adapter_config.json and "
                        "adapter_model.safetensors)",
                        adapter_dir);
    char *config_path = cm_path_join(adapter_dir, "adapter_config.json"),
         *st_path = cm_path_join(adapter_dir, "adapter_model.safetensors"),
         *bin_path = cm_path_join(adapter_dir, "adapter_model.bin");
    lora_config c = {0};
    cm_safetensors *st = NULL;
    cm_status status;
    if (!config_path || !st_path || !bin_path) {
        status = cm_error(CM_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!cm_path_exists(config_path)) {
        status = cm_error(CM_ERR_NOT_FOUND, "%s: no adapter_config.json in the adapter folder", adapter_dir);
        goto done;
    }
    if (!cm_path_exists(st_path)) {
        status = cm_path_exists(bin_path)
                     ? cm_error(CM_ERR_UNSUPPORTED,
                                "%s: the adapter is a PyTorch pickle (adapter_model.bin); convert it to "
                                "adapter_model.safetensors",
                                adapter_dir)
                     : cm_error(CM_ERR_NOT_FOUND, "%s: no adapter_model.safetensors in the adapter folder",
                                adapter_dir);
        goto done;
    }
    if ((status = parse_config(&c, config_path)) != CM_OK) goto done;
    if ((status = cm_safetensors_open(st_path, &st)) != CM_OK) goto done;
    status = merge(m, &c, st, st_path);
done:
    cm_safetensors_close(st);
    json_decref(c.root);
    free(config_path);
    free(st_path);
    free(bin_path);
    return status;
}
