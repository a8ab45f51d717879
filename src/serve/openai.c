/* OpenAI request parsing/validation and response bodies (serve_api.h). */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/serve_api.h"
#include "format/json_util.h"

#define MAX_MESSAGES 4096
#define MAX_STOP_BYTES 256
#define MAX_TOKEN_IDS (1 << 20)

void cm_api_error_set(cm_api_error *e, int status, const char *type, const char *code, const char *param,
                      const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *cm_utf8_sanitize(const char *s, size_t len, size_t *out_len) {
    size_t cap;
    if (cm_mul_size(len, 3, &cap) || cm_add_size(cap, 1, &cap)) return NULL;
    char *o = malloc(cap), *w = o;
    if (!o) return NULL;
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        size_t n = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;
        bool ok = n > 0 && (size_t)(end - p) >= n;
        if (ok && n > 1) {
            for (size_t k = 1; k < n; k++) ok &= (p[k] & 0xC0) == 0x80;
            if (ok) {
                unsigned cp = n == 2   ? ((c & 0x1Fu) << 6) | (p[1] & 0x3Fu)
                              : n == 3 ? ((c & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu)
                                       : ((c & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) |
                                             ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
                /* overlong forms, surrogates and code points past U+10FFFF are invalid */
                ok = !(n == 2 && cp < 0x80) && !(n == 3 && cp < 0x800) && !(n == 4 && cp < 0x10000) &&
                     !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF;
            }
        }
        if (ok) {
            memcpy(w, p, n);
            w += n;
            p += n;
        } else {
            memcpy(w, "\xEF\xBF\xBD", 3);
            w += 3;
            p++;
        }
    }
    *w = 0;
    if (out_len) *out_len = (size_t)(w - o);
    return o;
}

static json_t *json_text(const char *s, size_t len) {
    size_t n;
    char *clean = cm_utf8_sanitize(s ? s : "", s ? len : 0, &n);
    if (!clean) return NULL;
    json_t *v = json_stringn(clean, n);
    free(clean);
    return v;
}

static char *dump(json_t *root) {
    if (!root) return NULL;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

char *cm_api_error_json(const cm_api_error *e) {
    json_t *err = json_object();
    json_object_set_new(err, "message", json_text(e->message, strlen(e->message)));
    json_object_set_new(err, "type", json_string(e->type ? e->type : "invalid_request_error"));
    json_object_set_new(err, "param", e->param[0] ? json_text(e->param, strlen(e->param)) : json_null());
    json_object_set_new(err, "code", e->code ? json_string(e->code) : json_null());
    json_t *root = json_object();
    json_object_set_new(root, "error", err);
    return dump(root);
}

/* ------------------------------------------------------------------------------------------ parsing */

static bool bad(cm_api_error *err, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool bad(cm_api_error *err, const char *param, const char *fmt, ...) {
    err->status = 400;
    err->type = "invalid_request_error";
    err->code = NULL;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return false;
}

static bool wrong_type(cm_api_error *err, const char *param, const char *want, const json_t *v) {
    return bad(err, param, "'%s' must be %s, got %s", param, want, cm_json_kind(v));
}

static char *dup_string(const json_t *v) {
    size_t n = json_string_length(v);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, json_string_value(v), n);
        s[n] = 0;
    }
    return s;
}

/* A string field without NUL bytes (the templates and tokenizers take C strings). */
static bool get_cstring(json_t *v, const char *param, char **out, cm_api_error *err) {
    if (!json_is_string(v)) return wrong_type(err, param, "a string", v);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return bad(err, param, "'%s' contains a NUL character", param);
    *out = dup_string(v);
    if (!*out) return bad(err, param, "out of memory");
    return true;
}

/* A number field: absent or null leaves *has false. */
static bool get_number(json_t *root, const char *name, double lo, double hi, bool *has, double *out,
                       cm_api_error *err) {
    json_t *v = json_object_get(root, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return wrong_type(err, name, "a number", v);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return bad(err, name, "'%s' must be between %g and %g", name, lo, hi);
    *has = true;
    *out = d;
    return true;
}

static bool get_bool(json_t *root, const char *name, bool *out, cm_api_error *err) {
    json_t *v = json_object_get(root, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return wrong_type(err, name, "a boolean", v);
    *out = json_is_true(v);
    return true;
}

static bool parse_token_array(json_t *arr, const char *param, cm_api_request *r, cm_api_error *err) {
    size_t n = json_array_size(arr);
    if (n > MAX_TOKEN_IDS)
        return bad(err, param, "'%s' has %zu token ids, more than %d", param, n, MAX_TOKEN_IDS);
    r->tokens = malloc((n ? n : 1) * sizeof *r->tokens);
    if (!r->tokens) return bad(err, param, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(arr, i);
        if (!json_is_integer(t))
            return bad(err, param, "'%s'[%zu] must be a token id, got %s", param, i, cm_json_kind(t));
        json_int_t id = json_integer_value(t);
        if (id < 0 || id > INT32_MAX)
            return bad(err, param, "'%s'[%zu] = %lld is not a token id", param, i, (long long)id);
        r->tokens[i] = (int32_t)id;
    }
    r->n_tokens = n;
    r->has_tokens = true;
    return true;
}

/* A message's content: a string, or an array of {"type":"text","text":...} parts (joined), or null. */
static bool parse_content(json_t *c, size_t i, char **out, cm_api_error *err) {
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (!c || json_is_null(c)) {
        *out = calloc(1, 1);
        return *out ? true : bad(err, param, "out of memory");
    }
    if (json_is_string(c)) return get_cstring(c, param, out, err);
    if (!json_is_array(c)) return wrong_type(err, param, "a string or an array of text parts", c);
    size_t total = 0, n = json_array_size(c);
    for (size_t k = 0; k < n; k++) {
        json_t *part = json_array_get(c, k), *type = json_object_get(part, "type"),
               *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
            !json_is_string(text))
            return bad(err, param, "'%s'[%zu] must be a {\"type\": \"text\", \"text\": ...} part", param, k);
        if (strlen(json_string_value(text)) != json_string_length(text))
            return bad(err, param, "'%s'[%zu] contains a NUL character", param, k);
        total += json_string_length(text);
    }
    char *s = malloc(total + 1), *w = s;
    if (!s) return bad(err, param, "out of memory");
    for (size_t k = 0; k < n; k++) {
        json_t *text = json_object_get(json_array_get(c, k), "text");
        memcpy(w, json_string_value(text), json_string_length(text));
        w += json_string_length(text);
    }
    *w = 0;
    *out = s;
    return true;
}

static bool parse_messages(json_t *root, cm_api_request *r, cm_api_error *err) {
    json_t *msgs = json_object_get(root, "messages");
    if (!msgs) return bad(err, "messages", "'messages' is required");
    if (!json_is_array(msgs)) return wrong_type(err, "messages", "an array", msgs);
    size_t n = json_array_size(msgs);
    if (n == 0) return bad(err, "messages", "'messages' must not be empty");
    if (n > MAX_MESSAGES)
        return bad(err, "messages", "'messages' has %zu entries, more than %d", n, MAX_MESSAGES);
    r->messages = calloc(n, sizeof *r->messages);
    if (!r->messages) return bad(err, "messages", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i), *role = json_object_get(m, "role");
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(m)) return wrong_type(err, param, "an object", m);
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!role) return bad(err, param, "'%s' is required", param);
        if (!json_is_string(role)) return wrong_type(err, param, "a string", role);
        const char *rs = json_string_value(role), *norm = NULL;
        if (!strcmp(rs, "system") || !strcmp(rs, "developer"))
            norm = "system";
        else if (!strcmp(rs, "user"))
            norm = "user";
        else if (!strcmp(rs, "assistant"))
            norm = "assistant";
        else {
            char show[96];
            return bad(err, param, "'%s' must be system, developer, user or assistant, got \"%s\"", param,
                       cm_json_show(rs, show, sizeof show));
        }
        char *content = NULL;
        if (!parse_content(json_object_get(m, "content"), i, &content, err)) return false;
        r->messages[r->n_messages].role = norm;
        r->messages[r->n_messages].content = content;
        r->n_messages++;
    }
    return true;
}

static bool parse_prompt(json_t *root, cm_api_request *r, cm_api_error *err) {
    json_t *p = json_object_get(root, "prompt");
    if (!p) return bad(err, "prompt", "'prompt' is required");
    if (json_is_string(p)) return get_cstring(p, "prompt", &r->prompt, err);
    if (!json_is_array(p)) return wrong_type(err, "prompt", "a string or an array", p);
    json_t *first = json_array_get(p, 0);
    if (json_array_size(p) == 1 && json_is_string(first))
        return get_cstring(first, "prompt", &r->prompt, err);
    if (json_array_size(p) > 1 && json_is_string(first))
        return bad(err, "prompt", "'prompt' holds %zu strings; send one prompt per request",
                   json_array_size(p));
    if (json_array_size(p) == 1 && json_is_array(first)) return parse_token_array(first, "prompt", r, err);
    return parse_token_array(p, "prompt", r, err);
}

static bool parse_stop(json_t *root, cm_api_request *r, cm_api_error *err) {
    json_t *s = json_object_get(root, "stop");
    if (!s || json_is_null(s)) return true;
    json_t *one[1] = {s};
    size_t n = 1;
    if (json_is_array(s)) {
        n = json_array_size(s);
        if (n > CM_API_MAX_STOP)
            return bad(err, "stop", "'stop' has %zu strings, more than %d", n, CM_API_MAX_STOP);
    } else if (!json_is_string(s)) {
        return wrong_type(err, "stop", "a string or an array of strings", s);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_is_array(s) ? json_array_get(s, i) : one[0];
        if (!json_is_string(v))
            return bad(err, "stop", "'stop'[%zu] must be a string, got %s", i, cm_json_kind(v));
        if (json_string_length(v) > MAX_STOP_BYTES)
            return bad(err, "stop", "'stop' strings are at most %d bytes", MAX_STOP_BYTES);
        if (json_string_length(v) == 0) continue;
        if (!get_cstring(v, "stop", &r->stop[r->n_stop], err)) return false;
        r->n_stop++;
    }
    return true;
}

static bool parse_sampling(json_t *root, cm_api_request *r, cm_api_error *err) {
    const char *names[2] = {"max_completion_tokens", "max_tokens"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(root, names[k]);
        if (!v || json_is_null(v) || r->max_tokens >= 0) continue;
        if (!json_is_integer(v)) return wrong_type(err, names[k], "an integer", v);
        json_int_t n = json_integer_value(v);
        if (n < 1 || n > INT32_MAX) return bad(err, names[k], "'%s' must be at least 1", names[k]);
        r->max_tokens = (int)n;
    }
    json_t *n = json_object_get(root, "n");
    if (n && !json_is_null(n)) {
        if (!json_is_integer(n)) return wrong_type(err, "n", "an integer", n);
        if (json_integer_value(n) != 1) return bad(err, "n", "only 'n' = 1 is supported");
    }
    if (!get_number(root, "temperature", 0, 2, &r->has_temperature, &r->temperature, err) ||
        !get_number(root, "top_p", 0, 1, &r->has_top_p, &r->top_p, err) ||
        !get_number(root, "min_p", 0, 1, &r->has_min_p, &r->min_p, err))
        return false;
    json_t *k = json_object_get(root, "top_k");
    if (k && !json_is_null(k)) {
        if (!json_is_integer(k)) return wrong_type(err, "top_k", "an integer", k);
        json_int_t kv = json_integer_value(k);
        r->top_k = kv < 0 ? 0 : kv > INT32_MAX ? INT32_MAX : (int)kv;
        r->has_top_k = true;
    }
    json_t *seed = json_object_get(root, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) return wrong_type(err, "seed", "an integer", seed);
        r->seed = (uint64_t)json_integer_value(seed);
        r->has_seed = true;
    }
    if (!get_bool(root, "stream", &r->stream, err)) return false;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return wrong_type(err, "stream_options", "an object", so);
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_null(iu)) {
            if (!json_is_boolean(iu)) return wrong_type(err, "stream_options.include_usage", "a boolean", iu);
            r->include_usage = json_is_true(iu);
        }
    }
    return parse_stop(root, r, err);
}

/* An arena battle's prompt (a non-empty string; the body limit bounds it) and optional system prompt,
 * as the messages both models' templates render. */
static bool parse_arena_prompt(json_t *root, cm_api_request *r, cm_api_error *err) {
    json_t *p = json_object_get(root, "prompt"), *sys = json_object_get(root, "system");
    if (!p) return bad(err, "prompt", "'prompt' is required");
    char *prompt = NULL, *system = NULL;
    if (!get_cstring(p, "prompt", &prompt, err)) return false;
    if (!prompt[0]) {
        free(prompt);
        return bad(err, "prompt", "'prompt' must not be empty");
    }
    if (sys && !json_is_null(sys) && !get_cstring(sys, "system", &system, err)) {
        free(prompt);
        return false;
    }
    r->messages = calloc(2, sizeof *r->messages);
    if (!r->messages) {
        free(prompt);
        free(system);
        return bad(err, NULL, "out of memory");
    }
    if (system && system[0]) {
        r->messages[r->n_messages].role = "system";
        r->messages[r->n_messages++].content = system;
    } else {
        free(system);
    }
    r->messages[r->n_messages].role = "user";
    r->messages[r->n_messages++].content = prompt;
    return true;
}

static bool parse_vote(json_t *root, cm_api_request *r, cm_api_error *err) {
    static const char *names[] = {"a", "b", "tie", "bothbad"};
    json_t *w = json_object_get(root, "winner");
    if (!w) return bad(err, "winner", "'winner' is required (\"a\", \"b\", \"tie\" or \"bothbad\")");
    if (!json_is_string(w)) return wrong_type(err, "winner", "a string", w);
    for (int i = 0; i < 4; i++) {
        if (!strcmp(json_string_value(w), names[i]) && json_string_length(w) == strlen(names[i])) {
            r->winner = i; /* CM_VOTE_A, CM_VOTE_B, CM_VOTE_TIE, CM_VOTE_BOTHBAD */
            return true;
        }
    }
    char show[96];
    return bad(err, "winner", "'winner' must be \"a\", \"b\", \"tie\" or \"bothbad\", got \"%s\"",
               cm_json_show(json_string_value(w), show, sizeof show));
}

bool cm_api_parse_request(cm_api_kind kind, const char *body, size_t len, cm_api_request *out,
                          cm_api_error *err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->max_tokens = -1;
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root)
        return bad(err, NULL, "invalid JSON in the request body at line %d, column %d: %s", je.line,
                   je.column, je.text);
    bool ok = true;
    if (!json_is_object(root)) {
        ok = bad(err, NULL, "the request body must be a JSON object, got %s", cm_json_kind(root));
        goto done;
    }
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && !(ok = get_cstring(model, "model", &out->model, err))) goto done;
    switch (kind) {
    case CM_API_CHAT:
        ok = parse_messages(root, out, err) && parse_sampling(root, out, err);
        break;
    case CM_API_COMPLETION:
        ok = parse_prompt(root, out, err) && parse_sampling(root, out, err);
        break;
    case CM_API_TOKENIZE: {
        json_t *c = json_object_get(root, "content");
        ok = c ? get_cstring(c, "content", &out->prompt, err) : bad(err, "content", "'content' is required");
        ok = ok && get_bool(root, "add_special", &out->add_special, err);
        break;
    }
    case CM_API_ARENA_BATTLE:
        ok = parse_arena_prompt(root, out, err) && parse_sampling(root, out, err);
        break;
    case CM_API_ARENA_VOTE:
        ok = parse_vote(root, out, err);
        break;
    case CM_API_DETOKENIZE: {
        json_t *t = json_object_get(root, "tokens");
        if (!t)
            ok = bad(err, "tokens", "'tokens' is required");
        else if (!json_is_array(t))
            ok = wrong_type(err, "tokens", "an array of token ids", t);
        else
            ok = parse_token_array(t, "tokens", out, err);
        break;
    }
    }
done:
    json_decref(root);
    if (!ok) cm_api_request_free(out);
    return ok;
}

void cm_api_request_free(cm_api_request *r) {
    if (!r) return;
    free(r->model);
    for (size_t i = 0; i < r->n_messages; i++) free((char *)r->messages[i].content);
    free(r->messages);
    free(r->prompt);
    free(r->tokens);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    cm_api_kind kind = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->max_tokens = -1;
}

/* ---------------------------------------------------------------------------------------- responses */

static json_t *usage_json(const cm_api_usage *u) {
    json_t *o = json_object();
    json_object_set_new(o, "prompt_tokens", json_integer(u->prompt_tokens));
    json_object_set_new(o, "completion_tokens", json_integer(u->completion_tokens));
    json_object_set_new(o, "total_tokens", json_integer((json_int_t)u->prompt_tokens + u->completion_tokens));
    json_t *pd = json_object(), *cd = json_object();
    json_object_set_new(pd, "cached_tokens", json_integer(0));
    json_object_set_new(cd, "reasoning_tokens", json_integer(0));
    json_object_set_new(o, "prompt_tokens_details", pd);
    json_object_set_new(o, "completion_tokens_details", cd);
    return o;
}

static json_t *envelope(const char *id, const char *object, long long created, const char *model) {
    json_t *root = json_object();
    json_object_set_new(root, "id", json_text(id, strlen(id)));
    json_object_set_new(root, "object", json_string(object));
    json_object_set_new(root, "created", json_integer(created));
    json_object_set_new(root, "model", json_text(model, strlen(model)));
    json_object_set_new(root, "system_fingerprint", json_null());
    return root;
}

char *cm_api_response_json(cm_api_kind kind, const char *id, long long created, const char *model,
                           const char *text, size_t len, const char *finish_reason,
                           const cm_api_usage *usage) {
    bool chat = kind == CM_API_CHAT;
    json_t *root = envelope(id, chat ? "chat.completion" : "text_completion", created, model);
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(0));
    if (chat) {
        json_t *msg = json_object();
        json_object_set_new(msg, "role", json_string("assistant"));
        json_object_set_new(msg, "content", json_text(text, len));
        json_object_set_new(msg, "refusal", json_null());
        json_object_set_new(choice, "message", msg);
    } else {
        json_object_set_new(choice, "text", json_text(text, len));
    }
    json_object_set_new(choice, "logprobs", json_null());
    json_object_set_new(choice, "finish_reason", json_string(finish_reason));
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(root, "choices", choices);
    json_object_set_new(root, "usage", usage_json(usage));
    return dump(root);
}

char *cm_api_chunk_json(cm_api_kind kind, const char *id, long long created, const char *model,
                        const char *text, size_t len, bool role_start, const char *finish_reason,
                        const cm_api_usage *usage, bool usage_null) {
    bool chat = kind == CM_API_CHAT;
    json_t *root = envelope(id, chat ? "chat.completion.chunk" : "text_completion", created, model);
    json_t *choices = json_array();
    if (!usage) {
        json_t *choice = json_object();
        json_object_set_new(choice, "index", json_integer(0));
        if (chat) {
            json_t *delta = json_object();
            if (role_start) json_object_set_new(delta, "role", json_string("assistant"));
            if (role_start || (!finish_reason && text))
                json_object_set_new(delta, "content", json_text(text, len));
            json_object_set_new(choice, "delta", delta);
        } else {
            json_object_set_new(choice, "text", json_text(text, text ? len : 0));
        }
        json_object_set_new(choice, "logprobs", json_null());
        json_object_set_new(choice, "finish_reason",
                            finish_reason ? json_string(finish_reason) : json_null());
        json_array_append_new(choices, choice);
    }
    json_object_set_new(root, "choices", choices);
    if (usage)
        json_object_set_new(root, "usage", usage_json(usage));
    else if (usage_null)
        json_object_set_new(root, "usage", json_null());
    return dump(root);
}

char *cm_api_models_json(const char *const *ids, size_t n, long long created) {
    json_t *root = json_object(), *data = json_array();
    json_object_set_new(root, "object", json_string("list"));
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_object();
        json_object_set_new(m, "id", json_text(ids[i], strlen(ids[i])));
        json_object_set_new(m, "object", json_string("model"));
        json_object_set_new(m, "created", json_integer(created));
        json_object_set_new(m, "owned_by", json_string("camelid"));
        json_array_append_new(data, m);
    }
    json_object_set_new(root, "data", data);
    return dump(root);
}
