/* Byte-level BPE training (FACTS 2.3), as Stanford CS336's reference trainer does it: the text is split at
 * the special tokens (which are never merged), each piece is pre-tokenized with the GPT-2 regex, and pairs
 * of adjacent tokens inside pre-tokens are merged, the most frequent first; ties go to the lexicographically
 * greater pair compared as raw bytes (first tokens, then second tokens). The vocabulary is the special tokens
 * (ids 0..), then the 256 single bytes (in byte order), then one token per merge. A merge whose bytes equal an
 * earlier token's reuses that token (HF tokenizers' trainer does the same; a vocabulary maps each string to
 * one id), so such a merge adds no token and training goes on until the vocabulary is full or no pair is
 * left. A pair whose token would be longer than CM_BPE_TRAIN_MAX_TOKEN_BYTES is never merged (long
 * repetitive runs would otherwise grow tokens without bound).
 *
 * Counting is incremental: pair -> count and pair -> words that hold it, a max-heap over the pairs, and per
 * merge only the words holding the pair are rewritten. */
#ifndef CAMELID_BPE_TRAIN_H
#define CAMELID_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "camelid/status.h"
#include "camelid/tokenizer.h"

#define CM_BPE_TRAIN_MAX_TOKEN_BYTES 2048

typedef struct cm_bpe_trainer cm_bpe_trainer;

typedef struct {
    int vocab_size;               /* wanted: specials + 256 + merges (at least specials + 256) */
    const char *const *specials;  /* special tokens, ids 0..n_specials-1: valid UTF-8, distinct, non-empty */
    int n_specials;
    int bos, eos;                 /* indexes into specials, or -1: none */
} cm_bpe_train_opts;

/* Called during cm_bpe_trainer_run after every batch of merges (and once at the end). */
typedef void (*cm_bpe_train_progress)(void *user, int merges_done, int merges_max);

cm_status cm_bpe_trainer_open(const cm_bpe_train_opts *opts, cm_bpe_trainer **out);
void cm_bpe_trainer_close(cm_bpe_trainer *t);
/* Count the pre-tokens of a text (one document, or a whole file: special tokens in it split it). Not after
 * cm_bpe_trainer_run. */
cm_status cm_bpe_trainer_add(cm_bpe_trainer *t, const char *text, size_t len);
/* Distinct pre-tokens and bytes counted so far. */
size_t cm_bpe_trainer_n_words(const cm_bpe_trainer *t);
uint64_t cm_bpe_trainer_n_bytes(const cm_bpe_trainer *t);
/* Learn the merges (once). `progress` may be NULL. */
cm_status cm_bpe_trainer_run(cm_bpe_trainer *t, cm_bpe_train_progress progress, void *user);

/* After run: the vocabulary size reached and the merges in order. */
int cm_bpe_trainer_vocab_size(const cm_bpe_trainer *t);
int cm_bpe_trainer_n_merges(const cm_bpe_trainer *t);
/* Merge `i`: left and right token ids and the id it makes. */
void cm_bpe_trainer_merge(const cm_bpe_trainer *t, int i, int *left, int *right, int *result);
/* The raw bytes of token `id` (specials as written). */
const uint8_t *cm_bpe_trainer_token(const cm_bpe_trainer *t, int id, size_t *len);

/* The trained tokenizer (byte-level BPE, GPT-2 pre-tokenizer; specials are CONTROL tokens; BOS/EOS as the
 * options name them, and add_bos when there is a BOS). Caller closes. */
cm_status cm_bpe_trainer_tokenizer(const cm_bpe_trainer *t, cm_tokenizer **out);
/* Write it as HF tokenizer.json at `path`, and tokenizer_config.json (bos_token, eos_token, add_bos_token,
 * add_eos_token) in the same folder; both atomically. camelid and transformers read the config when the
 * tokenizer file is named tokenizer.json (or its folder is given). */
cm_status cm_bpe_trainer_save(const cm_bpe_trainer *t, const char *path);

#endif
