/* Supervised fine-tuning data: an instruction or chat dataset (Alpaca, ShareGPT/Vicuna, OpenAI messages,
 * prompt/completion; JSON array or JSONL) -> conversations -> a chat template (chat.h, FACTS 7) -> token ids
 * with a per-token loss mask -> rows of exactly `seq` tokens for the trainer (cm_train_batch in train.h).
 *
 * Records. A file whose first non-blank byte is '[' is one JSON array of records; any other file is JSONL
 * (one record per non-blank line). A UTF-8 BOM is skipped. Each record is an object; its format is, unless
 * forced by the options, the first that matches (keys not named here are ignored, e.g. Alpaca-Libre's
 * "status" and "similarity"):
 *   1. "conversations" -> ShareGPT/Vicuna: [{"from", "value"}...], "from" human|user, gpt|assistant, or
 *      system (first only); an optional record-level "system" string (FastChat's train_with_template).
 *   2. "messages"      -> OpenAI chat: [{"role", "content"}...], role system|developer (first only),
 *      user, assistant; an assistant message may carry "weight": 0 or 1 (0 = not trained, as OpenAI's
 *      fine-tuning API).
 *   3. "instruction" or "output" -> Alpaca: "instruction", "output" strings, optional "input" (a string or
 *      null) and "system". Rendered as one user turn (instruction; with a non-empty input, the alpaca
 * template uses FACTS 7's "paired with an input" system and "\n\n### Input:\n{input}", other templates join
 *      instruction and input with "\n" as LLaMA-Factory does) and one assistant turn (output).
 *   4. "prompt" or "completion" -> one user turn (prompt) and one assistant turn (completion).
 * Conversations follow FastChat's training rules: a leading assistant turn is dropped (ShareGPT chats where
 * the bot spoke first), a trailing user turn is dropped (nothing to learn from it), both counted in
 * dropped_turns; otherwise user and assistant must alternate. Anything malformed -- invalid JSON, a record
 * that is not an object, a field of the wrong type, a missing field, an unknown role, an empty conversation,
 * two turns of the same role in a row, no assistant turn to train on -- fails cm_sft_open with
 * "FILE:LINE: problem", LINE being the line where the record starts.
 *
 * Rendering and the mask. A conversation is rendered with cm_chat_render and tokenized exactly as
 * cm_chat_tokenize does (BOS first when the tokenizer adds one and the template does not open with it;
 * markers as the vocabulary's special ids, the text between markers encoded in one piece), so the ids are
 * those of the whole rendered text and the prompt part is what `camelid chat` feeds the model. An
 * assistant turn's trained span is the text after its generation prompt (the template's rendering of the
 * conversation up to that turn with add_generation_prompt) up to and including the marker that ends it
 * (</s>, <|im_end|>, <|eot_id|>), or up to the next turn when the template has none (guanaco). Inside a run
 * of text a token is assigned to a side of a span boundary by comparing the tokens of the whole run with
 * those of the run cut at the boundary: tokens both agree on lie before it, the rest (including a token
 * that straddles it, e.g. "▁Hello" after vicuna's "ASSISTANT:") after it. An example that does not end with
 * EOS gets one (the separator between packed examples), trained when the token before it is (it ends the
 * response: guanaco, as QLoRA appends EOS to its targets), not when template text precedes it (chatml's
 * "\n" after <|im_end|>). With train_on_prompt every token is trained.
 *
 * Targets follow the trainer's convention: targets[t] is the id at t+1 when that token is trained, else
 * CM_SFT_IGNORE; the last token of an example (and padding) has no target, so no target crosses examples.
 *
 * Length. An example longer than `seq` tokens is cut from the end (the response side, never the prompt)
 * when its first trained token is among the first `seq` (so at least one response token is kept):
 * `truncated`; otherwise it is left out: `skipped`. The first trained token is the first token of the
 * first assistant turn that is trained (weight 1).
 *
 * Splits. The records kept (after keep_status) are split by a seeded permutation (splitmix64,
 * Fisher-Yates): round(val_frac * n) of them, at least 1 when val_frac > 0 and n >= 2, at most n - 1, go to
 * the validation split, the rest to training; each split keeps file order.
 *
 * Rows. Packing (default) puts whole examples into rows of `seq` tokens by best-fit decreasing: the
 * split's examples in the epoch's shuffled order (ties of length stay in that order), longest first, each
 * into the open row with the least room that fits it, else a new row; then the rows are shuffled. So the
 * number of rows is the same in every epoch and padding is small. Within a row each example is its own
 * document: doc_ids 0, 1, 2, ... and positions restarting at 0; the rest of the row is padding (EOS, or 0
 * without one) with targets ignored, as one more document. Without packing each example has a row of its
 * own, padded the same way, and the rows are shuffled. The training split is shuffled per epoch from
 * (seed, epoch); the validation split never is (its rows are the same for every epoch).
 *
 * Memory: one int32 per kept token (the mask in the top bit) plus a few words per example; a file is
 * mapped, and each record is parsed, rendered and tokenized on its own. */
#ifndef CAMELID_SFT_DATA_H
#define CAMELID_SFT_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/chat.h"
#include "camelid/status.h"
#include "camelid/tokenizer.h"

/* The target of an untrained position (PyTorch's ignore_index; the trainer ignores every target < 0). */
#define CM_SFT_IGNORE (-100)

typedef enum {
    CM_SFT_FORMAT_AUTO = 0, /* decided per record, by the rule above */
    CM_SFT_FORMAT_ALPACA,
    CM_SFT_FORMAT_SHAREGPT,
    CM_SFT_FORMAT_MESSAGES,
    CM_SFT_FORMAT_PROMPT_COMPLETION,
    CM_SFT_FORMAT_COUNT
} cm_sft_format;

/* "auto", "alpaca", "sharegpt", "messages", "prompt-completion" */
const char *cm_sft_format_name(cm_sft_format f);
cm_status cm_sft_format_from_name(const char *name, cm_sft_format *out);

typedef enum {
    CM_SFT_TRAIN = 0,
    CM_SFT_VAL = 1,
    CM_SFT_ALL = 2, /* for statistics: both splits, plus records and filtered */
} cm_sft_split;

typedef struct cm_sft_options {
    cm_template_id template_id; /* default alpaca */
    int seq;                    /* row length in tokens, >= 2 (default 512) */
    cm_sft_format format;       /* default auto */
    bool train_on_prompt;       /* train on every token, not only the assistant's (default false) */
    bool no_packing;            /* one example per row (default false: packed) */
    double val_frac;            /* share of examples held out for validation, in [0, 1) (default 0.02) */
    uint64_t seed;              /* the train/validation split (default 1337) */
    /* System prompt for records that have none (NULL: the template's default, if any). */
    const char *system;
    /* Keep only records whose "status" is this string (Alpaca-Libre marks usable rows "ok"); records with
     * another status are counted in `filtered`, records without one are kept. NULL: "status" is ignored. */
    const char *keep_status;
    /* Threads for tokenizing (records are split among them; the result does not depend on how many).
     * NULL: the calling thread only. */
    struct cm_pool *pool;
} cm_sft_options;

void cm_sft_options_defaults(cm_sft_options *o);

typedef struct cm_sft_stats {
    size_t records;        /* records read (ALL: every record of the file; a split: those assigned to it) */
    size_t filtered;       /* left out by keep_status (ALL only) */
    size_t examples;       /* examples kept (records - skipped) */
    size_t truncated;      /* kept, cut to seq tokens */
    size_t skipped;        /* left out: the prompt alone leaves no room for a response token */
    size_t dropped_turns;  /* leading assistant / trailing user turns dropped */
    size_t tokens;         /* tokens of the kept examples, after truncation */
    size_t trained_tokens; /* of those, tokens with a loss (a target points at them) */
    size_t longest;        /* tokens of the longest example before truncation (skipped ones too) */
} cm_sft_stats;

typedef struct cm_sft_dataset cm_sft_dataset;

/* Read, validate and tokenize a dataset file (`tok` and the pool are used only during the call). Errors:
 * "FILE:LINE: problem" for a bad record (CM_ERR_FORMAT), a bad option (CM_ERR_ARG), or I/O. A dataset with
 * no example left to train on is an error too. */
cm_status cm_sft_open(const char *path, const cm_tokenizer *tok, const cm_sft_options *o,
                      cm_sft_dataset **out);
/* The same from a caller-owned buffer; `name` stands for FILE in messages. Drives the fuzz target. */
cm_status cm_sft_open_buffer(const char *data, size_t len, const char *name, const cm_tokenizer *tok,
                             const cm_sft_options *o, cm_sft_dataset **out);
void cm_sft_close(cm_sft_dataset *ds);

const cm_sft_stats *cm_sft_stats_of(const cm_sft_dataset *ds, cm_sft_split split);
/* Examples kept in a split (CM_SFT_ALL: both). */
size_t cm_sft_examples(const cm_sft_dataset *ds, cm_sft_split split);
/* Rows per epoch of a split (the same for every epoch); 0 for an empty split. */
size_t cm_sft_rows(const cm_sft_dataset *ds, cm_sft_split split);
int cm_sft_seq(const cm_sft_dataset *ds);
int cm_sft_pad_id(const cm_sft_dataset *ds);

/* Example i of a split (file order, 0-based), for inspection and tests: returns its token count (<= seq);
 * fills up to that many ids into `tokens` and flags into `trained` (1 = the token is a loss target) when
 * they are not NULL (each must hold seq entries), and the record's line into `line` when not NULL.
 * 0 if i is out of range. */
size_t cm_sft_example(const cm_sft_dataset *ds, cm_sft_split split, size_t i, int32_t *tokens,
                      uint8_t *trained, size_t *line);

/* The rows of one epoch: which examples go into which row, in the order the trainer should take them.
 * Random access, so a resumed run starts at any row. */
typedef struct cm_sft_epoch cm_sft_epoch;

cm_status cm_sft_epoch_open(const cm_sft_dataset *ds, cm_sft_split split, uint64_t seed, uint64_t epoch,
                            cm_sft_epoch **out);
void cm_sft_epoch_close(cm_sft_epoch *e);
size_t cm_sft_epoch_rows(const cm_sft_epoch *e);
/* Rows [first, first + n) of the epoch into four arrays of n * seq int32 each (row-major, as a
 * cm_train_batch with B = n, T = seq wants them). `positions` and `doc_ids` may be NULL. Rows past the end
 * are CM_ERR_ARG. Returns in *trained (if not NULL) the number of targets >= 0 written. */
cm_status cm_sft_epoch_fill(const cm_sft_epoch *e, size_t first, int n, int32_t *tokens, int32_t *targets,
                            int32_t *positions, int32_t *doc_ids, size_t *trained);

#endif
