/* Chat templates (FACTS 7): how a conversation becomes the text and tokens a model was trained on. A template
 * renders into segments, plain text and markers (<s>, </s>, <|im_start|>, <|eot_id|>, ...); tokenizing maps a
 * marker to the tokenizer's special id where the vocabulary has it, else encodes it as plain text. */
#ifndef CAMELID_CHAT_H
#define CAMELID_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/status.h"
#include "camelid/tokenizer.h"

typedef enum {
    CM_TEMPLATE_LLAMA2 = 0,
    CM_TEMPLATE_VICUNA,
    CM_TEMPLATE_ALPACA,
    CM_TEMPLATE_GUANACO,
    CM_TEMPLATE_CHATML,
    CM_TEMPLATE_LLAMA3,
    CM_TEMPLATE_COUNT
} cm_template_id;

typedef struct cm_chat_message {
    const char *role; /* "system", "user" or "assistant" */
    const char *content;
} cm_chat_message;

/* "llama2", "vicuna", "alpaca", "guanaco", "chatml", "llama3" */
const char *cm_template_name(cm_template_id id);
cm_status cm_template_from_name(const char *name, cm_template_id *out);
/* Recognise a model's Jinja chat_template by its marker strings (README lists them); false if unknown. */
bool cm_template_detect(const char *jinja, cm_template_id *out);
/* The system prompt a template uses when the conversation has none (NULL: no system block). */
const char *cm_template_default_system(cm_template_id id);

/* One rendered piece: text, or a marker to be looked up as a special token. */
typedef struct cm_chat_segment {
    char *text;
    bool marker;
} cm_chat_segment;

typedef struct cm_chat_rendered {
    cm_chat_segment *segments;
    size_t n;
    bool starts_with_bos; /* the template itself opens with BOS (llama2, llama3) */
} cm_chat_rendered;

/* Render messages (an optional leading system message, then alternating user/assistant turns). With
 * add_generation_prompt, the result ends with the assistant's opening. */
cm_status cm_chat_render(cm_template_id id, const cm_chat_message *msgs, size_t n, bool add_generation_prompt,
                         cm_chat_rendered *out);
void cm_chat_rendered_free(cm_chat_rendered *r);
/* The rendered conversation as one string, markers spelled out (malloc'd). */
char *cm_chat_rendered_text(const cm_chat_rendered *r);
/* Token ids: BOS first when the tokenizer adds one and the template does not open with it; markers as
 * special ids where the vocabulary has them. */
cm_status cm_chat_tokenize(const cm_chat_rendered *r, const cm_tokenizer *tok, int32_t **ids, size_t *n_ids);

/* Strings that end an assistant reply under this template, besides EOS (e.g. "USER:" for vicuna); and the
 * marker tokens that end it (e.g. <|eot_id|>) as ids of `tok` (those it has). Returns counts. */
size_t cm_template_stop_strings(cm_template_id id, const char *const **out);
size_t cm_template_stop_tokens(cm_template_id id, const cm_tokenizer *tok, int32_t *ids, size_t cap);

/* The id of a piece spelled exactly `text`, or -1. */
int cm_tokenizer_lookup(const cm_tokenizer *tok, const char *text);

#endif
