/* SFT datasets: records -> conversations -> chat template -> token ids with a loss mask -> packed rows.
 * The rules (formats, mask, truncation, splits, packing) are documented in include/camelid/sft_data.h. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/pool.h"
#include "camelid/sft_data.h"
#include "format/json_util.h"

#define LABEL_BIT 0x80000000u

/* FACTS 7: the Alpaca prompt for an instruction with an input */
#define ALPACA_INPUT_SYSTEM                                                                                  \
    "Below is an instruction that describes a task, paired with an input that provides further context. "    \
    "Write a response that appropriately completes the request."

static const char *const format_names[CM_SFT_FORMAT_COUNT] = {"auto", "alpaca", "sharegpt", "messages",
                                                              "prompt-completion"};

const char *cm_sft_format_name(cm_sft_format f) {
    return (unsigned)f < CM_SFT_FORMAT_COUNT ? format_names[f] : "?";
}

cm_status cm_sft_format_from_name(const char *name, cm_sft_format *out) {
    for (int i = 0; i < CM_SFT_FORMAT_COUNT; i++) {
        if (strcmp(name, format_names[i]) == 0) {
            *out = (cm_sft_format)i;
            return CM_OK;
        }
    }
    return cm_error(
        CM_ERR_ARG,
        "unknown dataset format \"%s\" (known: auto, alpaca, sharegpt, messages, prompt-completion)", name);
}

void cm_sft_options_defaults(cm_sft_options *o) {
    memset(o, 0, sizeof *o);
    o->template_id = CM_TEMPLATE_ALPACA;
    o->seq = 512;
    o->format = CM_SFT_FORMAT_AUTO;
    o->val_frac = 0.02;
    o->seed = 1337;
}

/* ---- small helpers ---- */

static cm_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return CM_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2) return cm_error(CM_ERR_NOMEM, "dataset: a size overflowed");
        c *= 2;
    }
    size_t bytes;
    if (cm_mul_size(c, elem, &bytes)) return cm_error(CM_ERR_NOMEM, "dataset: a size overflowed");
    void *q = realloc(*p, bytes);
    if (!q) return cm_error(CM_ERR_NOMEM, "dataset: out of memory (%zu bytes)", bytes);
    *p = q;
    *cap = c;
    return CM_OK;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Fisher-Yates; the modulo's bias is below 2^-32 for any n this code sees, and it is deterministic. */
static void shuffle_u32(uint32_t *a, size_t n, uint64_t *s) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(splitmix64(s) % i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* ---- record index: where each record starts and ends, and its line ---- */

typedef struct {
    size_t off, len, line;
} rec_span;

typedef struct {
    rec_span *a;
    size_t n, cap;
} rec_list;

static cm_status rec_push(rec_list *l, size_t off, size_t len, size_t line) {
    CM_TRY(grow((void **)&l->a, &l->cap, l->n + 1, sizeof *l->a));
    l->a[l->n++] = (rec_span){off, len, line};
    return CM_OK;
}

static inline bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_ws(const char *d, size_t n, size_t *pos, size_t *line) {
    while (*pos < n && is_ws(d[*pos])) {
        if (d[*pos] == '\n') (*line)++;
        (*pos)++;
    }
}

/* Past one JSON value's extent (not validated: jansson parses it next). False if the file ends inside it. */
static bool skip_value(const char *d, size_t n, size_t *pos, size_t *line) {
    size_t p = *pos, depth = 0;
    if (d[p] != '{' && d[p] != '[' && d[p] != '"') {
        /* a scalar: up to the next delimiter */
        while (p < n && !is_ws(d[p]) && d[p] != ',' && d[p] != ']' && d[p] != '}') p++;
        *pos = p;
        return true;
    }
    while (p < n) {
        char c = d[p];
        if (c == '"') {
            for (p++; p < n && d[p] != '"'; p++) {
                if (d[p] == '\n') (*line)++;
                if (d[p] == '\\') {
                    if (p + 1 < n && d[p + 1] == '\n') (*line)++;
                    p++;
                }
            }
            if (p >= n) return false;
            p++; /* the closing quote */
            if (depth == 0) break;
            continue;
        }
        if (c == '\n') (*line)++;
        if (c == '{' || c == '[') depth++;
        if (c == '}' || c == ']') {
            if (depth == 0) return false; /* cannot happen: a value starts with an opener here */
            depth--;
        }
        p++;
        if (depth == 0) break;
    }
    if (depth > 0) return false;
    *pos = p;
    return true;
}

static cm_status index_array(const char *d, size_t n, size_t pos, size_t line, const char *name,
                             rec_list *out) {
    pos++; /* '[' */
    for (;;) {
        skip_ws(d, n, &pos, &line);
        if (pos >= n) return cm_error(CM_ERR_FORMAT, "%s:%zu: the JSON array is not closed", name, line);
        if (d[pos] == ']' && out->n == 0) {
            pos++;
            break;
        }
        if (d[pos] == ',' || d[pos] == ']')
            return cm_error(CM_ERR_FORMAT, "%s:%zu: expected a record, got '%c'", name, line, d[pos]);
        size_t start = pos, start_line = line;
        if (!skip_value(d, n, &pos, &line))
            return cm_error(CM_ERR_FORMAT, "%s:%zu: the record is not closed before the end of the file",
                            name, start_line);
        CM_TRY(rec_push(out, start, pos - start, start_line));
        skip_ws(d, n, &pos, &line);
        if (pos >= n) return cm_error(CM_ERR_FORMAT, "%s:%zu: the JSON array is not closed", name, line);
        if (d[pos] == ',') {
            pos++;
            continue;
        }
        if (d[pos] == ']') {
            pos++;
            break;
        }
        return cm_error(CM_ERR_FORMAT, "%s:%zu: expected ',' or ']' after a record", name, line);
    }
    skip_ws(d, n, &pos, &line);
    if (pos < n) return cm_error(CM_ERR_FORMAT, "%s:%zu: unexpected text after the JSON array", name, line);
    return CM_OK;
}

static cm_status index_records(const char *d, size_t n, const char *name, rec_list *out) {
    size_t pos = 0, line = 1;
    if (n >= 3 && memcmp(d, "\xEF\xBB\xBF", 3) == 0) pos = 3;
    size_t first = pos, first_line = line;
    skip_ws(d, n, &first, &first_line);
    if (first < n && d[first] == '[') return index_array(d, n, first, first_line, name, out);
    /* JSONL: every line with something on it is a record */
    while (pos < n) {
        const char *nl = memchr(d + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - d) : n;
        size_t s = pos;
        while (s < end && is_ws(d[s])) s++;
        if (s < end) CM_TRY(rec_push(out, pos, end - pos, line));
        pos = end + 1;
        line++;
    }
    return CM_OK;
}

/* ---- record -> conversation ---- */

typedef enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT } role_kind;

typedef struct {
    role_kind role;
    const char *content;
    bool trained;
} turn;

typedef struct {
    turn *t;
    size_t n, cap;
    char *owned; /* a composed user turn (Alpaca instruction + input) */
    cm_chat_message *msgs;
    uint8_t *trained; /* per message: an assistant turn with weight 1 */
    size_t n_msgs, cap_msgs, cap_trained;
    size_t dropped;
} conv;

typedef struct {
    const char *name;
    size_t line;
} where;

static cm_status rec_error(const where *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cm_status rec_error(const where *w, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cm_error(CM_ERR_FORMAT, "%s:%zu: %s", w->name, w->line, msg);
}

/* A string field: required ones must be strings; optional ones may be absent or null (*out = NULL). */
static cm_status get_string(const where *w, json_t *obj, const char *key, bool required, const char *what,
                            const char **out) {
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || (!required && json_is_null(v))) {
        if (required) return rec_error(w, "%smissing \"%s\"", what, key);
        return CM_OK;
    }
    if (!json_is_string(v))
        return rec_error(w, "%s\"%s\" must be a string, got %s", what, key, cm_json_kind(v));
    *out = json_string_value(v);
    return CM_OK;
}

static cm_status add_turn(conv *c, role_kind role, const char *content, bool trained) {
    CM_TRY(grow((void **)&c->t, &c->cap, c->n + 1, sizeof *c->t));
    c->t[c->n++] = (turn){role, content, trained};
    return CM_OK;
}

static const char *role_word(role_kind r) {
    return r == ROLE_SYSTEM ? "system" : r == ROLE_USER ? "user" : "assistant";
}

/* ShareGPT's "from" values: FastChat's training code maps exactly "human" and "gpt"; "user"/"assistant"
 * (used by many ShareGPT exports and FastChat's yuan2 script) and a leading "system" are accepted too. */
static bool sharegpt_role(const char *from, role_kind *r) {
    if (!strcmp(from, "human") || !strcmp(from, "user"))
        *r = ROLE_USER;
    else if (!strcmp(from, "gpt") || !strcmp(from, "assistant"))
        *r = ROLE_ASSISTANT;
    else if (!strcmp(from, "system"))
        *r = ROLE_SYSTEM;
    else
        return false;
    return true;
}

static cm_status read_sharegpt(const where *w, json_t *rec, conv *c, const char **system) {
    json_t *a = json_object_get(rec, "conversations");
    if (!a) return rec_error(w, "missing \"conversations\"");
    if (!json_is_array(a)) return rec_error(w, "\"conversations\" must be an array, got %s", cm_json_kind(a));
    CM_TRY(get_string(w, rec, "system", false, "", system));
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *m = json_array_get(a, i);
        char what[64];
        snprintf(what, sizeof what, "conversations[%zu]: ", i);
        if (!json_is_object(m)) return rec_error(w, "%smust be an object, got %s", what, cm_json_kind(m));
        const char *from, *value;
        CM_TRY(get_string(w, m, "from", true, what, &from));
        CM_TRY(get_string(w, m, "value", true, what, &value));
        role_kind r;
        if (!sharegpt_role(from, &r)) {
            char buf[80];
            return rec_error(
                w, "%sunknown \"from\" value \"%s\" (expected human, gpt, user, assistant or system)", what,
                cm_json_show(from, buf, sizeof buf));
        }
        CM_TRY(add_turn(c, r, value, true));
    }
    return CM_OK;
}

static cm_status read_messages(const where *w, json_t *rec, conv *c) {
    json_t *a = json_object_get(rec, "messages");
    if (!a) return rec_error(w, "missing \"messages\"");
    if (!json_is_array(a)) return rec_error(w, "\"messages\" must be an array, got %s", cm_json_kind(a));
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *m = json_array_get(a, i);
        char what[64];
        snprintf(what, sizeof what, "messages[%zu]: ", i);
        if (!json_is_object(m)) return rec_error(w, "%smust be an object, got %s", what, cm_json_kind(m));
        const char *role, *content;
        CM_TRY(get_string(w, m, "role", true, what, &role));
        CM_TRY(get_string(w, m, "content", true, what, &content));
        role_kind r;
        if (!strcmp(role, "system") || !strcmp(role, "developer"))
            r = ROLE_SYSTEM;
        else if (!strcmp(role, "user"))
            r = ROLE_USER;
        else if (!strcmp(role, "assistant"))
            r = ROLE_ASSISTANT;
        else {
            char buf[80];
            return rec_error(w, "%sunknown role \"%s\" (expected system, developer, user or assistant)", what,
                             cm_json_show(role, buf, sizeof buf));
        }
        bool trained = true;
        json_t *wt = json_object_get(m, "weight");
        if (wt) {
            if (r != ROLE_ASSISTANT)
                return rec_error(w, "%s\"weight\" is only allowed on assistant messages", what);
            if (!json_is_integer(wt) || (json_integer_value(wt) != 0 && json_integer_value(wt) != 1))
                return rec_error(w, "%s\"weight\" must be 0 or 1", what);
            trained = json_integer_value(wt) == 1;
        }
        CM_TRY(add_turn(c, r, content, trained));
    }
    return CM_OK;
}

static cm_status read_alpaca(const where *w, json_t *rec, const cm_sft_options *o, conv *c,
                             const char **system) {
    const char *instruction, *input, *output;
    CM_TRY(get_string(w, rec, "instruction", true, "", &instruction));
    CM_TRY(get_string(w, rec, "input", false, "", &input));
    CM_TRY(get_string(w, rec, "output", true, "", &output));
    CM_TRY(get_string(w, rec, "system", false, "", system));
    const char *user = instruction;
    if (input && *input) {
        bool alpaca = o->template_id == CM_TEMPLATE_ALPACA;
        const char *sep = alpaca ? "\n\n### Input:\n" : "\n";
        size_t a = strlen(instruction), s = strlen(sep), b = strlen(input);
        c->owned = malloc(a + s + b + 1);
        if (!c->owned) return cm_error(CM_ERR_NOMEM, "dataset: out of memory");
        memcpy(c->owned, instruction, a);
        memcpy(c->owned + a, sep, s);
        memcpy(c->owned + a + s, input, b + 1);
        user = c->owned;
        if (alpaca && !*system && !o->system) *system = ALPACA_INPUT_SYSTEM;
    }
    CM_TRY(add_turn(c, ROLE_USER, user, true));
    return add_turn(c, ROLE_ASSISTANT, output, true);
}

static cm_status read_prompt_completion(const where *w, json_t *rec, conv *c) {
    const char *prompt, *completion;
    CM_TRY(get_string(w, rec, "prompt", true, "", &prompt));
    CM_TRY(get_string(w, rec, "completion", true, "", &completion));
    CM_TRY(add_turn(c, ROLE_USER, prompt, true));
    return add_turn(c, ROLE_ASSISTANT, completion, true);
}

static cm_sft_format detect_format(json_t *rec) {
    if (json_object_get(rec, "conversations")) return CM_SFT_FORMAT_SHAREGPT;
    if (json_object_get(rec, "messages")) return CM_SFT_FORMAT_MESSAGES;
    if (json_object_get(rec, "instruction") || json_object_get(rec, "output")) return CM_SFT_FORMAT_ALPACA;
    if (json_object_get(rec, "prompt") || json_object_get(rec, "completion"))
        return CM_SFT_FORMAT_PROMPT_COMPLETION;
    return CM_SFT_FORMAT_AUTO;
}

static void conv_reset(conv *c) {
    c->n = 0;
    c->n_msgs = 0;
    c->dropped = 0;
    free(c->owned);
    c->owned = NULL;
}

static void conv_free(conv *c) {
    conv_reset(c);
    free(c->t);
    free(c->msgs);
    free(c->trained);
}

/* The record's turns -> c->msgs (an optional system message, then user/assistant alternating, ending with
 * the assistant), after FastChat's trimming. */
static cm_status build_conv(const where *w, json_t *rec, const cm_sft_options *o, conv *c) {
    conv_reset(c);
    cm_sft_format f = o->format == CM_SFT_FORMAT_AUTO ? detect_format(rec) : o->format;
    const char *record_system = NULL;
    switch (f) {
    case CM_SFT_FORMAT_SHAREGPT:
        CM_TRY(read_sharegpt(w, rec, c, &record_system));
        break;
    case CM_SFT_FORMAT_MESSAGES:
        CM_TRY(read_messages(w, rec, c));
        break;
    case CM_SFT_FORMAT_ALPACA:
        CM_TRY(read_alpaca(w, rec, o, c, &record_system));
        break;
    case CM_SFT_FORMAT_PROMPT_COMPLETION:
        CM_TRY(read_prompt_completion(w, rec, c));
        break;
    default:
        return rec_error(w, "unknown record: expected \"conversations\" (ShareGPT), \"messages\" (OpenAI), "
                            "\"instruction\"/\"output\" (Alpaca) or \"prompt\"/\"completion\"");
    }
    size_t i = 0, end = c->n;
    const char *system = record_system;
    if (end > 0 && c->t[0].role == ROLE_SYSTEM) {
        if (record_system) return rec_error(w, "both a system turn and a \"system\" field");
        system = c->t[0].content;
        i = 1;
    }
    for (size_t k = i; k < end; k++)
        if (c->t[k].role == ROLE_SYSTEM)
            return rec_error(w, "turn %zu: a system turn may only come first", k + 1);
    if (i == end) return rec_error(w, "empty conversation");
    if (c->t[i].role == ROLE_ASSISTANT) {
        c->dropped++;
        i++;
    }
    if (end > i && c->t[end - 1].role == ROLE_USER && (end - i) % 2 == 1) {
        c->dropped++;
        end--;
    }
    if (i == end) return rec_error(w, "no assistant turn to train on");
    bool any_trained = false;
    for (size_t k = i; k < end; k++) {
        role_kind want = (k - i) % 2 == 0 ? ROLE_USER : ROLE_ASSISTANT;
        if (c->t[k].role != want)
            return rec_error(w,
                             "turn %zu: a second %s turn in a row (user and assistant turns must alternate)",
                             k + 1, role_word(c->t[k].role));
        if (want == ROLE_ASSISTANT && c->t[k].trained) any_trained = true;
    }
    if (!any_trained && !o->train_on_prompt)
        return rec_error(w, "every assistant turn has weight 0: nothing to train on");
    if (!system) system = o->system;
    size_t need = end - i + 1;
    CM_TRY(grow((void **)&c->msgs, &c->cap_msgs, need, sizeof *c->msgs));
    CM_TRY(grow((void **)&c->trained, &c->cap_trained, need, 1));
    if (system) {
        c->trained[c->n_msgs] = 0;
        c->msgs[c->n_msgs++] = (cm_chat_message){"system", system};
    }
    for (size_t k = i; k < end; k++) {
        c->trained[c->n_msgs] = c->t[k].role == ROLE_ASSISTANT && c->t[k].trained;
        c->msgs[c->n_msgs++] = (cm_chat_message){role_word(c->t[k].role), c->t[k].content};
    }
    return CM_OK;
}

/* ---- rendering: the conversation as flat text with its marker ranges ---- */

typedef struct {
    char *text;
    size_t len, cap;
    size_t *mk; /* start, end pairs */
    size_t n_mk, cap_mk;
    bool starts_with_bos;
} flat;

static cm_status render_flat(cm_template_id id, const cm_chat_message *msgs, size_t n, bool gen, flat *f) {
    cm_chat_rendered r;
    CM_TRY(cm_chat_render(id, msgs, n, gen, &r));
    cm_status st = CM_OK;
    f->len = 0;
    f->n_mk = 0;
    f->starts_with_bos = r.starts_with_bos;
    for (size_t i = 0; i < r.n && st == CM_OK; i++) {
        size_t m = strlen(r.segments[i].text);
        st = grow((void **)&f->text, &f->cap, f->len + m + 1, 1);
        if (st != CM_OK) break;
        if (r.segments[i].marker) {
            st = grow((void **)&f->mk, &f->cap_mk, 2 * (f->n_mk + 1), sizeof *f->mk);
            if (st != CM_OK) break;
            f->mk[2 * f->n_mk] = f->len;
            f->mk[2 * f->n_mk + 1] = f->len + m;
            f->n_mk++;
        }
        memcpy(f->text + f->len, r.segments[i].text, m);
        f->len += m;
    }
    cm_chat_rendered_free(&r);
    return st;
}

/* Is p the beginning of full, markers included (and not cut inside one of full's markers)? */
static bool flat_is_prefix(const flat *p, const flat *full) {
    if (p->len > full->len || memcmp(p->text, full->text, p->len) != 0 || p->n_mk > full->n_mk) return false;
    if (p->n_mk && memcmp(p->mk, full->mk, 2 * p->n_mk * sizeof *p->mk) != 0) return false;
    return p->n_mk == full->n_mk || full->mk[2 * p->n_mk] >= p->len;
}

static void flat_free(flat *f) {
    free(f->text);
    free(f->mk);
}

/* ---- the builder: everything reused from record to record ---- */

typedef struct {
    char *text;
    int id;
} marker_id;

typedef struct {
    const cm_tokenizer *tok;
    const cm_sft_options *o;
    flat part, full;
    uint8_t *lab; /* per byte of full: inside a response span */
    size_t cap_lab;
    int32_t *ids;
    uint8_t *tl; /* per token: response (then trained) */
    size_t n_ids, cap_ids, cap_tl;
    marker_id *markers;
    size_t n_markers, cap_markers;
    conv c;
} builder;

static cm_status marker_lookup(builder *b, const char *s, size_t len, int *id) {
    for (size_t i = 0; i < b->n_markers; i++) {
        if (strlen(b->markers[i].text) == len && memcmp(b->markers[i].text, s, len) == 0) {
            *id = b->markers[i].id;
            return CM_OK;
        }
    }
    CM_TRY(grow((void **)&b->markers, &b->cap_markers, b->n_markers + 1, sizeof *b->markers));
    char *t = malloc(len + 1);
    if (!t) return cm_error(CM_ERR_NOMEM, "dataset: out of memory");
    memcpy(t, s, len);
    t[len] = 0;
    /* cm_tokenizer_lookup scans the vocabulary: once per marker string, not once per example */
    *id = cm_tokenizer_lookup(b->tok, t);
    b->markers[b->n_markers++] = (marker_id){t, *id};
    return CM_OK;
}

static cm_status push_token(builder *b, int32_t id, uint8_t label) {
    CM_TRY(grow((void **)&b->ids, &b->cap_ids, b->n_ids + 1, sizeof *b->ids));
    CM_TRY(grow((void **)&b->tl, &b->cap_tl, b->n_ids + 1, 1));
    b->ids[b->n_ids] = id;
    b->tl[b->n_ids] = label;
    b->n_ids++;
    return CM_OK;
}

static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

/* Encode full.text[s, e) as one run and label its tokens: at each place the byte labels change, the tokens
 * the whole run shares with the run cut there lie before it, the rest after it. */
static cm_status flush_run(builder *b, size_t s, size_t e) {
    if (e <= s) return CM_OK;
    const char *t = b->full.text;
    int32_t *whole;
    size_t nw;
    CM_TRY(cm_tokenizer_encode(b->tok, t + s, e - s, false, false, &whole, &nw));
    cm_status st = CM_OK;
    size_t done = 0;
    uint8_t label = b->lab[s];
    for (size_t p = s + 1; p < e && st == CM_OK; p++) {
        if (b->lab[p] == b->lab[p - 1]) continue;
        int32_t *pre;
        size_t np;
        st = cm_tokenizer_encode(b->tok, t + s, p - s, false, false, &pre, &np);
        if (st != CM_OK) break;
        size_t cut = common_prefix(whole, nw, pre, np);
        free(pre);
        if (cut < done) cut = done;
        for (; done < cut && st == CM_OK; done++) st = push_token(b, whole[done], label);
        label = b->lab[p];
    }
    for (; done < nw && st == CM_OK; done++) st = push_token(b, whole[done], label);
    free(whole);
    return st;
}

/* As cm_chat_tokenize: BOS unless the template opens with it, markers the vocabulary has as their ids, the
 * text between them (and markers it lacks) encoded run by run. */
static cm_status tokenize_full(builder *b) {
    b->n_ids = 0;
    int bos = cm_tokenizer_bos(b->tok);
    if (!b->full.starts_with_bos && cm_tokenizer_add_bos(b->tok) && bos >= 0) CM_TRY(push_token(b, bos, 0));
    size_t run = 0;
    for (size_t m = 0; m < b->full.n_mk; m++) {
        size_t ms = b->full.mk[2 * m], me = b->full.mk[2 * m + 1];
        int id = -1;
        CM_TRY(marker_lookup(b, b->full.text + ms, me - ms, &id));
        if (id < 0) continue; /* stays in the run as text */
        CM_TRY(flush_run(b, run, ms));
        CM_TRY(push_token(b, id, b->lab[ms]));
        run = me;
    }
    return flush_run(b, run, b->full.len);
}

/* Render the conversation, mark its response spans and tokenize it. Sets *first (index of the first
 * response token, n_ids if none). */
static cm_status build_example(builder *b, size_t *first) {
    const conv *c = &b->c;
    cm_template_id id = b->o->template_id;
    CM_TRY(render_flat(id, c->msgs, c->n_msgs, false, &b->full));
    CM_TRY(grow((void **)&b->lab, &b->cap_lab, b->full.len + 1, 1));
    memset(b->lab, 0, b->full.len + 1);
    bool any_trained = false;
    for (size_t k = 0; k < c->n_msgs; k++) any_trained |= c->trained[k];
    bool first_span = true, ends_in_response = false;
    for (size_t k = 0; k < c->n_msgs; k++) {
        if (strcmp(c->msgs[k].role, "assistant") != 0) continue;
        /* the span: after the generation prompt, up to the end marker (or the end of the turn) */
        CM_TRY(render_flat(id, c->msgs, k, true, &b->part));
        if (!flat_is_prefix(&b->part, &b->full)) goto not_incremental;
        size_t a = b->part.len;
        CM_TRY(render_flat(id, c->msgs, k + 1, false, &b->part));
        if (!flat_is_prefix(&b->part, &b->full) || b->part.len < a) goto not_incremental;
        size_t e = b->part.len;
        for (size_t m = 0; m < b->part.n_mk; m++) {
            if (b->part.mk[2 * m] >= a) {
                e = b->part.mk[2 * m + 1];
                break;
            }
        }
        /* without any trained turn (train_on_prompt with every weight 0), the first reply stands for the
         * response so that truncation still keeps the prompt */
        bool mark = any_trained ? c->trained[k] : first_span;
        first_span = false;
        if (mark) memset(b->lab + a, 1, e - a);
        ends_in_response = mark && e == b->full.len;
    }
    CM_TRY(tokenize_full(b));
    int eos = cm_tokenizer_eos(b->tok);
    if (eos >= 0 && (b->n_ids == 0 || b->ids[b->n_ids - 1] != eos))
        CM_TRY(push_token(b, eos, ends_in_response));
    size_t f = 0;
    while (f < b->n_ids && !b->tl[f]) f++;
    *first = f;
    if (b->o->train_on_prompt) memset(b->tl, 1, b->n_ids);
    if (b->n_ids) b->tl[0] = 0; /* nothing predicts the first token */
    return CM_OK;
not_incremental:
    return cm_error(
        CM_ERR_UNSUPPORTED,
        "template %s: the rendering of the first messages is not a prefix of the whole conversation",
        cm_template_name(id));
}

static void builder_free(builder *b) {
    flat_free(&b->part);
    flat_free(&b->full);
    free(b->lab);
    free(b->ids);
    free(b->tl);
    for (size_t i = 0; i < b->n_markers; i++) free(b->markers[i].text);
    free(b->markers);
    conv_free(&b->c);
}

/* ---- the dataset ---- */

struct cm_sft_dataset {
    int seq, pad_id;
    bool packing;
    uint32_t *tok; /* id | LABEL_BIT when trained */
    size_t n_tok;
    size_t *ex_off, *ex_line;
    uint32_t *ex_len;
    size_t n_ex;
    uint32_t *split_ids[2]; /* examples of each split, file order */
    size_t split_n[2];
    size_t rows[2];
    cm_sft_stats stats[3];
};

void cm_sft_close(cm_sft_dataset *ds) {
    if (!ds) return;
    free(ds->tok);
    free(ds->ex_off);
    free(ds->ex_line);
    free(ds->ex_len);
    free(ds->split_ids[0]);
    free(ds->split_ids[1]);
    free(ds);
}

static cm_status parse_record(const char *data, const rec_span *r, const char *name, json_t **out) {
    json_error_t je;
    json_t *v = json_loadb(data + r->off, r->len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!v) {
        if (je.line > 0)
            return cm_error(CM_ERR_FORMAT, "%s:%zu: invalid JSON (line %zu, column %d: %s)", name, r->line,
                            r->line + (size_t)je.line - 1, je.column, je.text);
        return cm_error(CM_ERR_FORMAT, "%s:%zu: invalid JSON (%s)", name, r->line, je.text);
    }
    if (!json_is_object(v)) {
        cm_status st = cm_error(CM_ERR_FORMAT, "%s:%zu: a record must be a JSON object, got %s", name,
                                r->line, cm_json_kind(v));
        json_decref(v);
        return st;
    }
    *out = v;
    return CM_OK;
}

static bool status_kept(json_t *rec, const char *keep) {
    if (!keep) return true;
    json_t *s = json_object_get(rec, "status");
    if (!s) return true;
    return json_is_string(s) && strcmp(json_string_value(s), keep) == 0;
}

static cm_status count_rows(const cm_sft_dataset *ds, cm_sft_split split, size_t *rows);

/* ---- phase 3: records -> examples, in parts ---- */

/* What became of one record. */
typedef struct {
    uint32_t len;     /* tokens stored (0: none) */
    uint32_t full;    /* tokens before truncation */
    uint32_t trained; /* trained tokens stored */
    uint16_t dropped; /* turns dropped */
    uint8_t kind;     /* 0 not processed (filtered), 1 kept, 2 kept truncated, 3 skipped */
} rec_result;

typedef struct {
    builder b;
    uint32_t *tok; /* the part's kept tokens, record after record */
    size_t n_tok, cap_tok;
    cm_status st;
    char err[600];
} part_out;

typedef struct {
    const char *data, *name;
    const rec_list *recs;
    const uint8_t *split_of;
    const cm_sft_options *o;
    rec_result *res;
    part_out *parts;
} tok_job;

static cm_status one_record(tok_job *j, part_out *po, size_t i) {
    const cm_sft_options *o = j->o;
    const rec_span *r = &j->recs->a[i];
    json_t *rec;
    CM_TRY(parse_record(j->data, r, j->name, &rec));
    where w = {j->name, r->line};
    size_t first = 0;
    cm_status st = build_conv(&w, rec, o, &po->b.c);
    if (st == CM_OK) st = build_example(&po->b, &first);
    json_decref(rec);
    if (st == CM_ERR_FORMAT) return st; /* build_conv's messages name the place already */
    if (st != CM_OK) return cm_error_prefix(st, "%s:%zu", j->name, r->line);
    size_t n = po->b.n_ids;
    if (first >= n) return rec_error(&w, "nothing to train on: the assistant turns make no tokens");
    if (n > UINT32_MAX) return rec_error(&w, "example too long (%zu tokens)", n);
    rec_result *x = &j->res[i];
    x->full = (uint32_t)n;
    x->dropped = (uint16_t)(po->b.c.dropped < UINT16_MAX ? po->b.c.dropped : UINT16_MAX);
    x->kind = 1;
    if (n > (size_t)o->seq) {
        if (first >= (size_t)o->seq) {
            x->kind = 3;
            return CM_OK;
        }
        n = (size_t)o->seq;
        x->kind = 2;
    }
    CM_TRY(grow((void **)&po->tok, &po->cap_tok, po->n_tok + n, sizeof *po->tok));
    uint32_t trained = 0;
    for (size_t k = 0; k < n; k++) {
        po->tok[po->n_tok + k] = (uint32_t)po->b.ids[k] | (po->b.tl[k] ? LABEL_BIT : 0);
        if (k > 0) trained += po->b.tl[k];
    }
    po->n_tok += n;
    x->len = (uint32_t)n;
    x->trained = trained;
    return CM_OK;
}

static void tokenize_part(void *arg, int part, int n_parts) {
    tok_job *j = arg;
    part_out *po = &j->parts[part];
    int begin, end;
    cm_split_range((int)j->recs->n, n_parts, part, &begin, &end);
    for (size_t i = (size_t)begin; i < (size_t)end; i++) {
        if (j->split_of[i] == 2) continue;
        cm_status st = one_record(j, po, i);
        if (st != CM_OK) {
            /* the message lives in this thread's buffer: keep a copy for the caller */
            po->st = st;
            snprintf(po->err, sizeof po->err, "%s", cm_last_error());
            return;
        }
    }
}

static cm_status tokenize_records(cm_sft_dataset *ds, const char *data, const char *name,
                                  const rec_list *recs, const uint8_t *split_of, const cm_tokenizer *tok,
                                  const cm_sft_options *o) {
    int n_parts = cm_pool_size(o->pool);
    if ((size_t)n_parts > recs->n) n_parts = (int)recs->n;
    if (n_parts < 1) n_parts = 1;
    tok_job j = {data,
                 name,
                 recs,
                 split_of,
                 o,
                 calloc(recs->n, sizeof(rec_result)),
                 calloc((size_t)n_parts, sizeof(part_out))};
    cm_status st = CM_OK;
    if (!j.res || !j.parts) {
        st = cm_error(CM_ERR_NOMEM, "dataset: out of memory");
        goto done;
    }
    for (int p = 0; p < n_parts; p++) j.parts[p].b = (builder){.tok = tok, .o = o};
    if (n_parts == cm_pool_size(o->pool) && n_parts > 1)
        cm_pool_run(o->pool, tokenize_part, &j);
    else
        for (int p = 0; p < n_parts; p++) tokenize_part(&j, p, n_parts);
    /* parts cover increasing record ranges: the first failing part holds the earliest bad record */
    for (int p = 0; p < n_parts; p++) {
        if (j.parts[p].st != CM_OK) {
            st = cm_error(j.parts[p].st, "%s", j.parts[p].err);
            goto done;
        }
    }
    size_t total = 0, kept = 0;
    for (int p = 0; p < n_parts; p++) total += j.parts[p].n_tok;
    for (size_t i = 0; i < recs->n; i++) kept += j.res[i].len > 0;
    ds->tok = malloc((total ? total : 1) * sizeof *ds->tok);
    ds->ex_off = malloc((kept ? kept : 1) * sizeof *ds->ex_off);
    ds->ex_line = malloc((kept ? kept : 1) * sizeof *ds->ex_line);
    ds->ex_len = malloc((kept ? kept : 1) * sizeof *ds->ex_len);
    for (int sp = 0; sp < 2; sp++) ds->split_ids[sp] = malloc((kept ? kept : 1) * sizeof(uint32_t));
    if (!ds->tok || !ds->ex_off || !ds->ex_line || !ds->ex_len || !ds->split_ids[0] || !ds->split_ids[1]) {
        st = cm_error(CM_ERR_NOMEM, "dataset: out of memory for %zu tokens", total);
        goto done;
    }
    for (int p = 0; p < n_parts; p++) {
        if (j.parts[p].n_tok) memcpy(ds->tok + ds->n_tok, j.parts[p].tok, j.parts[p].n_tok * sizeof *ds->tok);
        ds->n_tok += j.parts[p].n_tok;
        free(j.parts[p].tok);
        j.parts[p].tok = NULL;
    }
    /* parts hold records in order, so the examples' offsets follow record order */
    size_t off = 0;
    for (size_t i = 0; i < recs->n; i++) {
        const rec_result *x = &j.res[i];
        if (split_of[i] == 2) continue;
        cm_sft_stats *sp = &ds->stats[split_of[i]];
        sp->records++;
        sp->dropped_turns += x->dropped;
        if (x->full > sp->longest) sp->longest = x->full;
        if (x->kind == 3) sp->skipped++;
        if (x->kind == 2) sp->truncated++;
        if (!x->len) continue;
        sp->examples++;
        sp->tokens += x->len;
        sp->trained_tokens += x->trained;
        ds->ex_off[ds->n_ex] = off;
        ds->ex_len[ds->n_ex] = x->len;
        ds->ex_line[ds->n_ex] = recs->a[i].line;
        ds->split_ids[split_of[i]][ds->split_n[split_of[i]]++] = (uint32_t)ds->n_ex;
        ds->n_ex++;
        off += x->len;
    }
done:
    if (j.parts)
        for (int p = 0; p < n_parts; p++) {
            builder_free(&j.parts[p].b);
            free(j.parts[p].tok);
        }
    free(j.parts);
    free(j.res);
    return st;
}

static cm_status check_options(const cm_sft_options *o, const cm_tokenizer *tok) {
    if (!tok) return cm_error(CM_ERR_ARG, "dataset: no tokenizer");
    if (o->seq < 2) return cm_error(CM_ERR_ARG, "dataset: seq must be at least 2, got %d", o->seq);
    if (!(o->val_frac >= 0.0 && o->val_frac < 1.0))
        return cm_error(CM_ERR_ARG, "dataset: val_frac must be in [0, 1), got %g", o->val_frac);
    if ((unsigned)o->template_id >= CM_TEMPLATE_COUNT)
        return cm_error(CM_ERR_ARG, "dataset: unknown chat template %d", (int)o->template_id);
    if ((unsigned)o->format >= CM_SFT_FORMAT_COUNT)
        return cm_error(CM_ERR_ARG, "dataset: unknown format %d", (int)o->format);
    if (cm_tokenizer_vocab_size(tok) <= 0 || (unsigned)cm_tokenizer_vocab_size(tok) >= LABEL_BIT)
        return cm_error(CM_ERR_ARG, "dataset: unusable vocabulary size %d", cm_tokenizer_vocab_size(tok));
    return CM_OK;
}

cm_status cm_sft_open_buffer(const char *data, size_t len, const char *name, const cm_tokenizer *tok,
                             const cm_sft_options *o, cm_sft_dataset **out) {
    *out = NULL;
    CM_TRY(check_options(o, tok));
    if (!data && len) return cm_error(CM_ERR_ARG, "dataset: no data");
    rec_list recs = {0};
    uint8_t *split_of = NULL; /* per record: 0 train, 1 val, 2 filtered */
    uint32_t *perm = NULL;
    builder b = {.tok = tok, .o = o};
    cm_sft_dataset *ds = calloc(1, sizeof *ds);
    cm_status st = ds ? CM_OK : cm_error(CM_ERR_NOMEM, "dataset: out of memory");
    if (st == CM_OK) st = index_records(data, len, name, &recs);
    if (st == CM_OK && recs.n == 0) st = cm_error(CM_ERR_FORMAT, "%s: no records", name);
    if (st == CM_OK && recs.n > INT32_MAX) st = cm_error(CM_ERR_FORMAT, "%s: too many records", name);
    if (st != CM_OK) goto fail;
    ds->seq = o->seq;
    ds->packing = !o->no_packing;
    ds->pad_id = cm_tokenizer_eos(tok) >= 0 ? cm_tokenizer_eos(tok) : 0;
    ds->stats[CM_SFT_ALL].records = recs.n;

    /* 1: every record parses and makes a conversation (all errors surface before any tokenizing) */
    split_of = calloc(recs.n, 1);
    perm = malloc(recs.n * sizeof *perm);
    if (!split_of || !perm) {
        st = cm_error(CM_ERR_NOMEM, "dataset: out of memory");
        goto fail;
    }
    size_t kept = 0;
    for (size_t i = 0; i < recs.n && st == CM_OK; i++) {
        json_t *rec;
        st = parse_record(data, &recs.a[i], name, &rec);
        if (st != CM_OK) break;
        where w = {name, recs.a[i].line};
        st = build_conv(&w, rec, o, &b.c);
        if (st == CM_OK && !status_kept(rec, o->keep_status)) {
            split_of[i] = 2;
            ds->stats[CM_SFT_ALL].filtered++;
        } else if (st == CM_OK) {
            perm[kept++] = (uint32_t)i;
        }
        json_decref(rec);
    }
    if (st != CM_OK) goto fail;
    if (kept == 0) {
        st = cm_error(CM_ERR_FORMAT, "%s: every record was filtered out (status other than \"%s\")", name,
                      o->keep_status ? o->keep_status : "");
        goto fail;
    }

    /* 2: the validation split, a seeded choice of kept records */
    size_t n_val = (size_t)floor(o->val_frac * (double)kept + 0.5);
    if (o->val_frac > 0 && n_val == 0 && kept >= 2) n_val = 1;
    if (n_val > kept - 1) n_val = kept - 1;
    uint64_t s = o->seed ^ 0x5EEDF00D5EEDF00Dull;
    shuffle_u32(perm, kept, &s);
    for (size_t k = 0; k < n_val; k++) split_of[perm[k]] = 1;

    /* 3: render, tokenize, truncate or skip (in parts, on the pool's threads), then store in record order */
    st = tokenize_records(ds, data, name, &recs, split_of, tok, o);
    if (st != CM_OK) goto fail;

    cm_sft_stats *all = &ds->stats[CM_SFT_ALL];
    for (int sp = 0; sp < 2; sp++) {
        const cm_sft_stats *x = &ds->stats[sp];
        all->examples += x->examples;
        all->truncated += x->truncated;
        all->skipped += x->skipped;
        all->dropped_turns += x->dropped_turns;
        all->tokens += x->tokens;
        all->trained_tokens += x->trained_tokens;
        if (x->longest > all->longest) all->longest = x->longest;
    }
    if (ds->split_n[CM_SFT_TRAIN] == 0) {
        st = cm_error(CM_ERR_FORMAT,
                      "%s: no training example left: %zu of %zu skipped as their prompt does not fit in %d "
                      "tokens",
                      name, all->skipped, all->records - all->filtered, o->seq);
        goto fail;
    }
    for (int sp = 0; sp < 2 && st == CM_OK; sp++) st = count_rows(ds, (cm_sft_split)sp, &ds->rows[sp]);
    if (st != CM_OK) goto fail;
    builder_free(&b);
    free(recs.a);
    free(split_of);
    free(perm);
    *out = ds;
    return CM_OK;
fail:
    builder_free(&b);
    free(recs.a);
    free(split_of);
    free(perm);
    cm_sft_close(ds);
    return st;
}

cm_status cm_sft_open(const char *path, const cm_tokenizer *tok, const cm_sft_options *o,
                      cm_sft_dataset **out) {
    *out = NULL;
    cm_mmap *m;
    CM_TRY(cm_mmap_open(path, &m));
    cm_status st = cm_sft_open_buffer((const char *)m->data, m->size, path, tok, o, out);
    cm_mmap_close(m);
    return st;
}

const cm_sft_stats *cm_sft_stats_of(const cm_sft_dataset *ds, cm_sft_split split) {
    return &ds->stats[(unsigned)split <= CM_SFT_ALL ? split : CM_SFT_ALL];
}

size_t cm_sft_examples(const cm_sft_dataset *ds, cm_sft_split split) {
    if (split == CM_SFT_ALL) return ds->split_n[0] + ds->split_n[1];
    return (unsigned)split < 2 ? ds->split_n[split] : 0;
}

size_t cm_sft_rows(const cm_sft_dataset *ds, cm_sft_split split) {
    if (split == CM_SFT_ALL) return ds->rows[0] + ds->rows[1];
    return (unsigned)split < 2 ? ds->rows[split] : 0;
}

int cm_sft_seq(const cm_sft_dataset *ds) {
    return ds->seq;
}

int cm_sft_pad_id(const cm_sft_dataset *ds) {
    return ds->pad_id;
}

size_t cm_sft_example(const cm_sft_dataset *ds, cm_sft_split split, size_t i, int32_t *tokens,
                      uint8_t *trained, size_t *line) {
    size_t id;
    if (split == CM_SFT_ALL) {
        if (i >= ds->n_ex) return 0;
        id = i;
    } else {
        if ((unsigned)split >= 2 || i >= ds->split_n[split]) return 0;
        id = ds->split_ids[split][i];
    }
    const uint32_t *t = ds->tok + ds->ex_off[id];
    size_t n = ds->ex_len[id];
    for (size_t j = 0; j < n; j++) {
        if (tokens) tokens[j] = (int32_t)(t[j] & ~LABEL_BIT);
        if (trained) trained[j] = (t[j] & LABEL_BIT) != 0;
    }
    if (line) *line = ds->ex_line[id];
    return n;
}

/* ---- rows ---- */

struct cm_sft_epoch {
    const cm_sft_dataset *ds;
    size_t rows;
    size_t *row_start; /* rows + 1 offsets into items */
    uint32_t *items;   /* example ids, row by row */
};

void cm_sft_epoch_close(cm_sft_epoch *e) {
    if (!e) return;
    free(e->row_start);
    free(e->items);
    free(e);
}

static uint64_t epoch_state(uint64_t seed, uint64_t epoch) {
    uint64_t s = seed;
    uint64_t a = splitmix64(&s);
    return a ^ (epoch * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull);
}

/* Best-fit decreasing: examples longest first (ties in the given order), each into the open row with the
 * least room that still fits it. Buckets of rows by remaining room and a bitmap of non-empty buckets make
 * each placement a short bit scan. */
static cm_status pack_rows(const cm_sft_dataset *ds, const uint32_t *order, size_t n, size_t *rows_out,
                           size_t **row_start, uint32_t **items) {
    const size_t seq = (size_t)ds->seq, words = (seq + 64) / 64;
    size_t *count = calloc(seq + 2, sizeof *count);
    uint32_t *sorted = malloc((n ? n : 1) * sizeof *sorted);
    uint32_t *next = malloc((n ? n : 1) * sizeof *next);   /* per sorted position: next in its row */
    uint32_t *head = malloc((n ? n : 1) * sizeof *head);   /* per row: first sorted position */
    uint32_t *tail = malloc((n ? n : 1) * sizeof *tail);   /* per row: last sorted position */
    uint32_t *bnext = malloc((n ? n : 1) * sizeof *bnext); /* per row: next row in its bucket */
    uint32_t *bucket = malloc((seq + 1) * sizeof *bucket); /* per room: a row, or UINT32_MAX */
    uint64_t *bits = calloc(words, sizeof *bits);
    size_t *rs = NULL;
    uint32_t *it = NULL;
    cm_status st = CM_OK;
    if (!count || !sorted || !next || !head || !tail || !bnext || !bucket || !bits) {
        st = cm_error(CM_ERR_NOMEM, "dataset: out of memory while packing %zu examples", n);
        goto done;
    }
    /* counting sort, longest first, stable */
    for (size_t i = 0; i < n; i++) count[seq - ds->ex_len[order[i]]]++;
    for (size_t l = 0, acc = 0; l <= seq; l++) {
        size_t c = count[l];
        count[l] = acc;
        acc += c;
    }
    for (size_t i = 0; i < n; i++) sorted[count[seq - ds->ex_len[order[i]]]++] = order[i];
    for (size_t c = 0; c <= seq; c++) bucket[c] = UINT32_MAX;
    size_t rows = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = ds->ex_len[sorted[i]];
        size_t room = SIZE_MAX;
        for (size_t w = len / 64; w < words; w++) {
            uint64_t x = bits[w];
            if (w == len / 64) x &= ~0ull << (len % 64);
            if (x) {
                room = w * 64 + (size_t)__builtin_ctzll(x);
                break;
            }
        }
        uint32_t r;
        if (room == SIZE_MAX) {
            r = (uint32_t)rows++;
            head[r] = (uint32_t)i;
            room = seq;
        } else {
            r = bucket[room];
            bucket[room] = bnext[r];
            if (bucket[room] == UINT32_MAX) bits[room / 64] &= ~(1ull << (room % 64));
            next[tail[r]] = (uint32_t)i;
        }
        tail[r] = (uint32_t)i;
        next[i] = UINT32_MAX;
        room -= len;
        if (room > 0) {
            bnext[r] = bucket[room];
            bucket[room] = r;
            bits[room / 64] |= 1ull << (room % 64);
        }
    }
    rs = malloc((rows + 1) * sizeof *rs);
    it = malloc((n ? n : 1) * sizeof *it);
    if (!rs || !it) {
        st = cm_error(CM_ERR_NOMEM, "dataset: out of memory while packing %zu examples", n);
        goto done;
    }
    size_t k = 0;
    for (size_t r = 0; r < rows; r++) {
        rs[r] = k;
        for (uint32_t p = head[r]; p != UINT32_MAX; p = next[p]) it[k++] = sorted[p];
    }
    rs[rows] = k;
    *rows_out = rows;
    *row_start = rs;
    *items = it;
    rs = NULL;
    it = NULL;
done:
    free(count);
    free(sorted);
    free(next);
    free(head);
    free(tail);
    free(bnext);
    free(bucket);
    free(bits);
    free(rs);
    free(it);
    return st;
}

static cm_status build_epoch(const cm_sft_dataset *ds, cm_sft_split split, uint64_t seed, uint64_t epoch,
                             bool shuffle, cm_sft_epoch **out) {
    *out = NULL;
    if ((unsigned)split >= 2) return cm_error(CM_ERR_ARG, "dataset: rows come from the train or val split");
    size_t n = ds->split_n[split];
    cm_sft_epoch *e = calloc(1, sizeof *e);
    uint32_t *order = malloc((n ? n : 1) * sizeof *order);
    cm_status st = CM_OK;
    if (!e || !order) {
        st = cm_error(CM_ERR_NOMEM, "dataset: out of memory");
        goto fail;
    }
    e->ds = ds;
    memcpy(order, ds->split_ids[split], n * sizeof *order);
    uint64_t s = epoch_state(seed, epoch);
    if (shuffle) shuffle_u32(order, n, &s);
    if (ds->packing) {
        st = pack_rows(ds, order, n, &e->rows, &e->row_start, &e->items);
        if (st != CM_OK) goto fail;
        free(order);
        order = NULL;
        if (shuffle && e->rows > 1) {
            /* shuffle the rows: a permutation of row indices, then the items regrouped */
            uint32_t *perm = malloc(e->rows * sizeof *perm);
            size_t *rs = malloc((e->rows + 1) * sizeof *rs);
            uint32_t *it = malloc((n ? n : 1) * sizeof *it);
            if (!perm || !rs || !it) {
                free(perm);
                free(rs);
                free(it);
                st = cm_error(CM_ERR_NOMEM, "dataset: out of memory");
                goto fail;
            }
            for (size_t r = 0; r < e->rows; r++) perm[r] = (uint32_t)r;
            shuffle_u32(perm, e->rows, &s);
            size_t k = 0;
            for (size_t r = 0; r < e->rows; r++) {
                rs[r] = k;
                for (size_t j = e->row_start[perm[r]]; j < e->row_start[perm[r] + 1]; j++)
                    it[k++] = e->items[j];
            }
            rs[e->rows] = k;
            free(perm);
            free(e->row_start);
            free(e->items);
            e->row_start = rs;
            e->items = it;
        }
    } else {
        e->rows = n;
        e->items = order;
        order = NULL;
        e->row_start = malloc((n + 1) * sizeof *e->row_start);
        if (!e->row_start) {
            st = cm_error(CM_ERR_NOMEM, "dataset: out of memory");
            goto fail;
        }
        for (size_t r = 0; r <= n; r++) e->row_start[r] = r;
    }
    *out = e;
    return CM_OK;
fail:
    free(order);
    cm_sft_epoch_close(e);
    return st;
}

static cm_status count_rows(const cm_sft_dataset *ds, cm_sft_split split, size_t *rows) {
    cm_sft_epoch *e;
    CM_TRY(build_epoch(ds, split, 0, 0, false, &e));
    *rows = e->rows;
    cm_sft_epoch_close(e);
    return CM_OK;
}

cm_status cm_sft_epoch_open(const cm_sft_dataset *ds, cm_sft_split split, uint64_t seed, uint64_t epoch,
                            cm_sft_epoch **out) {
    /* the validation rows stay put so that every evaluation sees the same batches */
    return build_epoch(ds, split, seed, epoch, split == CM_SFT_TRAIN, out);
}

size_t cm_sft_epoch_rows(const cm_sft_epoch *e) {
    return e->rows;
}

cm_status cm_sft_epoch_fill(const cm_sft_epoch *e, size_t first, int n, int32_t *tokens, int32_t *targets,
                            int32_t *positions, int32_t *doc_ids, size_t *trained) {
    if (n < 0 || first > e->rows || (size_t)n > e->rows - first)
        return cm_error(CM_ERR_ARG, "dataset: rows %zu..%zu asked of an epoch of %zu rows", first,
                        first + (size_t)(n > 0 ? n : 0), e->rows);
    const cm_sft_dataset *ds = e->ds;
    const size_t T = (size_t)ds->seq;
    size_t count = 0;
    for (size_t r = 0; r < (size_t)n; r++) {
        int32_t *tk = tokens + r * T, *tg = targets + r * T;
        int32_t *ps = positions ? positions + r * T : NULL, *dc = doc_ids ? doc_ids + r * T : NULL;
        size_t t = 0;
        int32_t doc = 0;
        for (size_t j = e->row_start[first + r]; j < e->row_start[first + r + 1]; j++, doc++) {
            uint32_t x = e->items[j];
            const uint32_t *src = ds->tok + ds->ex_off[x];
            size_t len = ds->ex_len[x];
            for (size_t i = 0; i < len; i++) {
                tk[t + i] = (int32_t)(src[i] & ~LABEL_BIT);
                bool lab = i + 1 < len && (src[i + 1] & LABEL_BIT);
                tg[t + i] = lab ? (int32_t)(src[i + 1] & ~LABEL_BIT) : CM_SFT_IGNORE;
                count += lab;
                if (ps) ps[t + i] = (int32_t)i;
                if (dc) dc[t + i] = doc;
            }
            t += len;
        }
        for (size_t i = t; i < T; i++) {
            tk[i] = ds->pad_id;
            tg[i] = CM_SFT_IGNORE;
            if (ps) ps[i] = (int32_t)(i - t);
            if (dc) dc[i] = doc;
        }
    }
    if (trained) *trained = count;
    return CM_OK;
}
