#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/chat.h"

static const char *const template_names[CM_TEMPLATE_COUNT] = {"llama2",  "vicuna", "alpaca",
                                                              "guanaco", "chatml", "llama3"};

#define VICUNA_SYSTEM                                                                                        \
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "  \
    "detailed, and polite answers to the user's questions."
#define GUANACO_SYSTEM                                                                                       \
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, " \
    "detailed, and polite answers to the user's questions."
#define ALPACA_SYSTEM                                                                                        \
    "Below is an instruction that describes a task. Write a response that appropriately completes the "      \
    "request."

const char *cm_template_name(cm_template_id id) {
    return (unsigned)id < CM_TEMPLATE_COUNT ? template_names[id] : "?";
}

cm_status cm_template_from_name(const char *name, cm_template_id *out) {
    for (int i = 0; i < CM_TEMPLATE_COUNT; i++) {
        if (strcmp(name, template_names[i]) == 0) {
            *out = (cm_template_id)i;
            return CM_OK;
        }
    }
    return cm_error(CM_ERR_ARG,
                    "unknown chat template \"%s\" (known: llama2, vicuna, alpaca, guanaco, chatml, llama3)",
                    name);
}

bool cm_template_detect(const char *jinja, cm_template_id *out) {
    if (!jinja) return false;
    /* most specific markers first: a llama3 template also mentions roles, a llama2 one [INST] */
    static const struct {
        const char *marker;
        cm_template_id id;
    } rules[] = {
        {"<|start_header_id|>", CM_TEMPLATE_LLAMA3},
        {"<|im_start|>", CM_TEMPLATE_CHATML},
        {"[INST]", CM_TEMPLATE_LLAMA2},
        {"### Instruction:", CM_TEMPLATE_ALPACA},
        {"### Human:", CM_TEMPLATE_GUANACO},
        {"ASSISTANT:", CM_TEMPLATE_VICUNA},
    };
    for (size_t i = 0; i < sizeof rules / sizeof *rules; i++) {
        if (strstr(jinja, rules[i].marker)) {
            *out = rules[i].id;
            return true;
        }
    }
    return false;
}

const char *cm_template_default_system(cm_template_id id) {
    switch (id) {
    case CM_TEMPLATE_VICUNA:
        return VICUNA_SYSTEM;
    case CM_TEMPLATE_GUANACO:
        return GUANACO_SYSTEM;
    case CM_TEMPLATE_ALPACA:
        return ALPACA_SYSTEM;
    default:
        return NULL;
    }
}

/* ---- rendering ---- */

typedef struct {
    cm_chat_rendered *r;
    size_t cap;
    cm_status st;
} builder;

static void push(builder *b, const char *text, size_t len, bool marker) {
    if (b->st != CM_OK || (len == 0 && !marker)) return;
    cm_chat_rendered *r = b->r;
    /* consecutive text joins one segment */
    if (!marker && r->n > 0 && !r->segments[r->n - 1].marker) {
        cm_chat_segment *s = &r->segments[r->n - 1];
        size_t old = strlen(s->text);
        char *t = realloc(s->text, old + len + 1);
        if (!t) {
            b->st = cm_error(CM_ERR_NOMEM, "out of memory");
            return;
        }
        memcpy(t + old, text, len);
        t[old + len] = 0;
        s->text = t;
        return;
    }
    if (r->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 16;
        cm_chat_segment *seg = realloc(r->segments, cap * sizeof *seg);
        if (!seg) {
            b->st = cm_error(CM_ERR_NOMEM, "out of memory");
            return;
        }
        r->segments = seg;
        b->cap = cap;
    }
    char *t = malloc(len + 1);
    if (!t) {
        b->st = cm_error(CM_ERR_NOMEM, "out of memory");
        return;
    }
    memcpy(t, text, len);
    t[len] = 0;
    r->segments[r->n++] = (cm_chat_segment){t, marker};
}

static void text(builder *b, const char *s) {
    push(b, s, strlen(s), false);
}
static void marker(builder *b, const char *s) {
    push(b, s, strlen(s), true);
}

/* content with leading and trailing whitespace removed (Meta's Llama 2 and 3 templates strip it) */
static void text_trimmed(builder *b, const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
    push(b, s, n, false);
}

void cm_chat_rendered_free(cm_chat_rendered *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) free(r->segments[i].text);
    free(r->segments);
    memset(r, 0, sizeof *r);
}

/* Check roles: an optional system message first, then user/assistant alternating from user. */
static cm_status check_roles(const cm_chat_message *msgs, size_t n, size_t *first_turn) {
    size_t i = 0;
    if (n > 0 && msgs[0].role && strcmp(msgs[0].role, "system") == 0) i = 1;
    *first_turn = i;
    for (size_t k = i; k < n; k++) {
        const char *want = (k - i) % 2 == 0 ? "user" : "assistant";
        if (!msgs[k].role || !msgs[k].content)
            return cm_error(CM_ERR_ARG, "message %zu: needs a role and a content", k + 1);
        if (strcmp(msgs[k].role, want) != 0)
            return cm_error(CM_ERR_ARG,
                            "message %zu: expected role \"%s\", got \"%s\" (a system message may only come "
                            "first, then user and assistant alternate)",
                            k + 1, want, msgs[k].role);
    }
    return CM_OK;
}

cm_status cm_chat_render(cm_template_id id, const cm_chat_message *msgs, size_t n, bool add_generation_prompt,
                         cm_chat_rendered *out) {
    memset(out, 0, sizeof *out);
    if ((unsigned)id >= CM_TEMPLATE_COUNT) return cm_error(CM_ERR_ARG, "unknown chat template %d", (int)id);
    size_t first;
    CM_TRY(check_roles(msgs, n, &first));
    const char *system = first ? msgs[0].content : cm_template_default_system(id);
    builder b = {out, 0, CM_OK};
    size_t turns = n - first;
    bool ends_with_user = turns % 2 == 1;
    switch (id) {
    case CM_TEMPLATE_LLAMA2:
        /* Meta's chat_completion: each exchange is BOS "[INST] u [/INST] a " EOS; the system prompt goes
         * inside the first [INST] */
        out->starts_with_bos = true;
        for (size_t k = first; k < n; k += 2) {
            marker(&b, "<s>");
            text(&b, "[INST] ");
            if (k == first && system) {
                text(&b, "<<SYS>>\n");
                text_trimmed(&b, system);
                text(&b, "\n<</SYS>>\n\n");
            }
            text_trimmed(&b, msgs[k].content);
            text(&b, " [/INST]");
            if (k + 1 < n) {
                text(&b, " ");
                text_trimmed(&b, msgs[k + 1].content);
                text(&b, " ");
                marker(&b, "</s>");
            }
        }
        break;
    case CM_TEMPLATE_VICUNA:
        /* FastChat vicuna_v1.1: system + " ", then "ROLE: text" + (" " after user, "</s>" after assistant) */
        if (system) {
            text(&b, system);
            text(&b, " ");
        }
        for (size_t k = first; k < n; k++) {
            bool user = (k - first) % 2 == 0;
            text(&b, user ? "USER: " : "ASSISTANT: ");
            text(&b, msgs[k].content);
            if (user)
                text(&b, " ");
            else
                marker(&b, "</s>");
        }
        if (add_generation_prompt && ends_with_user) text(&b, "ASSISTANT:");
        break;
    case CM_TEMPLATE_ALPACA:
        /* Stanford Alpaca (no input): the response follows "### Response:" directly and ends with EOS */
        if (system) {
            text(&b, system);
            text(&b, "\n\n");
        }
        for (size_t k = first; k < n; k++) {
            if ((k - first) % 2 == 0) {
                if (k > first) text(&b, "\n\n");
                text(&b, "### Instruction:\n");
                text(&b, msgs[k].content);
                text(&b, "\n\n### Response:");
            } else {
                text(&b, msgs[k].content);
                marker(&b, "</s>");
            }
        }
        break;
    case CM_TEMPLATE_GUANACO:
        /* QLoRA's Guanaco: "{system} ### Human: {q}### Assistant: {a}" and so on, no separator before ### */
        if (system) {
            text(&b, system);
            text(&b, " ");
        }
        for (size_t k = first; k < n; k++) {
            if ((k - first) % 2 == 0) {
                text(&b, "### Human: ");
                text(&b, msgs[k].content);
            } else {
                text(&b, "### Assistant: ");
                text(&b, msgs[k].content);
            }
        }
        if (add_generation_prompt && ends_with_user) text(&b, "### Assistant: ");
        break;
    case CM_TEMPLATE_CHATML:
        for (size_t k = 0; k < n; k++) {
            marker(&b, "<|im_start|>");
            text(&b, msgs[k].role);
            text(&b, "\n");
            text(&b, msgs[k].content);
            marker(&b, "<|im_end|>");
            text(&b, "\n");
        }
        if (add_generation_prompt && ends_with_user) {
            marker(&b, "<|im_start|>");
            text(&b, "assistant\n");
        }
        break;
    case CM_TEMPLATE_LLAMA3:
        out->starts_with_bos = true;
        marker(&b, "<|begin_of_text|>");
        for (size_t k = 0; k < n; k++) {
            marker(&b, "<|start_header_id|>");
            text(&b, msgs[k].role);
            marker(&b, "<|end_header_id|>");
            text(&b, "\n\n");
            text_trimmed(&b, msgs[k].content);
            marker(&b, "<|eot_id|>");
        }
        if (add_generation_prompt && ends_with_user) {
            marker(&b, "<|start_header_id|>");
            text(&b, "assistant");
            marker(&b, "<|end_header_id|>");
            text(&b, "\n\n");
        }
        break;
    default:
        break;
    }
    if (b.st != CM_OK) cm_chat_rendered_free(out);
    return b.st;
}

char *cm_chat_rendered_text(const cm_chat_rendered *r) {
    size_t len = 0;
    for (size_t i = 0; i < r->n; i++) len += strlen(r->segments[i].text);
    char *s = malloc(len + 1);
    if (!s) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        size_t m = strlen(r->segments[i].text);
        memcpy(s + k, r->segments[i].text, m);
        k += m;
    }
    s[k] = 0;
    return s;
}

int cm_tokenizer_lookup(const cm_tokenizer *tok, const char *text) {
    size_t want = strlen(text);
    int n = cm_tokenizer_vocab_size(tok);
    for (int id = 0; id < n; id++) {
        size_t len;
        const char *p = cm_tokenizer_piece(tok, id, &len);
        if (len == want && memcmp(p, text, len) == 0) return id;
    }
    return -1;
}

typedef struct {
    int32_t *ids;
    size_t n, cap;
} id_list;

static cm_status append_ids(id_list *l, const int32_t *ids, size_t n) {
    if (l->n + n > l->cap) {
        size_t cap = (l->n + n) * 2 + 16;
        int32_t *p = realloc(l->ids, cap * sizeof *p);
        if (!p) return cm_error(CM_ERR_NOMEM, "out of memory");
        l->ids = p;
        l->cap = cap;
    }
    memcpy(l->ids + l->n, ids, n * sizeof *ids);
    l->n += n;
    return CM_OK;
}

static cm_status encode_run(const cm_tokenizer *tok, const char *text, size_t len, id_list *l) {
    if (len == 0) return CM_OK;
    int32_t *ids;
    size_t n;
    CM_TRY(cm_tokenizer_encode(tok, text, len, false, false, &ids, &n));
    cm_status st = append_ids(l, ids, n);
    free(ids);
    return st;
}

cm_status cm_chat_tokenize(const cm_chat_rendered *r, const cm_tokenizer *tok, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    id_list l = {0};
    cm_status st = CM_OK;
    int bos = cm_tokenizer_bos(tok);
    if (!r->starts_with_bos && cm_tokenizer_add_bos(tok) && bos >= 0) st = append_ids(&l, &(int32_t){bos}, 1);
    /* text and markers the vocabulary lacks gather into runs encoded in one piece, so that a missing marker
     * reads as the text it is (SentencePiece adds its dummy prefix once per run, after each special token) */
    char *run = NULL;
    size_t run_len = 0, run_cap = 0;
    for (size_t i = 0; st == CM_OK && i <= r->n; i++) {
        int id = -1;
        if (i < r->n && r->segments[i].marker) id = cm_tokenizer_lookup(tok, r->segments[i].text);
        if (i == r->n || id >= 0) {
            st = encode_run(tok, run, run_len, &l);
            run_len = 0;
            if (st == CM_OK && id >= 0) st = append_ids(&l, &(int32_t){id}, 1);
            continue;
        }
        size_t m = strlen(r->segments[i].text);
        if (run_len + m + 1 > run_cap) {
            run_cap = (run_len + m + 1) * 2;
            char *p = realloc(run, run_cap);
            if (!p) {
                st = cm_error(CM_ERR_NOMEM, "out of memory");
                break;
            }
            run = p;
        }
        memcpy(run + run_len, r->segments[i].text, m);
        run_len += m;
    }
    free(run);
    if (st != CM_OK) {
        free(l.ids);
        return st;
    }
    *ids = l.ids;
    *n_ids = l.n;
    return CM_OK;
}

size_t cm_template_stop_strings(cm_template_id id, const char *const **out) {
    static const char *const vicuna[] = {"USER:"};
    static const char *const alpaca[] = {"### Instruction:"};
    static const char *const guanaco[] = {"### Human:"};
    static const char *const chatml[] = {"<|im_end|>", "<|im_start|>"};
    static const char *const llama3[] = {"<|eot_id|>", "<|start_header_id|>"};
    static const char *const llama2[] = {"[INST]"};
    switch (id) {
    case CM_TEMPLATE_LLAMA2:
        *out = llama2;
        return 1;
    case CM_TEMPLATE_VICUNA:
        *out = vicuna;
        return 1;
    case CM_TEMPLATE_ALPACA:
        *out = alpaca;
        return 1;
    case CM_TEMPLATE_GUANACO:
        *out = guanaco;
        return 1;
    case CM_TEMPLATE_CHATML:
        *out = chatml;
        return 2;
    case CM_TEMPLATE_LLAMA3:
        *out = llama3;
        return 2;
    default:
        *out = NULL;
        return 0;
    }
}

size_t cm_template_stop_tokens(cm_template_id id, const cm_tokenizer *tok, int32_t *ids, size_t cap) {
    const char *markers[2] = {NULL, NULL};
    switch (id) {
    case CM_TEMPLATE_CHATML:
        markers[0] = "<|im_end|>";
        break;
    case CM_TEMPLATE_LLAMA3:
        markers[0] = "<|eot_id|>";
        break;
    default:
        markers[0] = "</s>";
        break;
    }
    size_t n = 0;
    for (size_t i = 0; i < 2 && markers[i] && n < cap; i++) {
        int t = cm_tokenizer_lookup(tok, markers[i]);
        if (t >= 0) ids[n++] = t;
    }
    return n;
}
