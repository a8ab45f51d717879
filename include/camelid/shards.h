/* Token shards on disk: the training data `camelid tokenize-corpus` writes and `camelid train` reads.
 *
 * A data folder holds train_NNNNN.bin and val_NNNNN.bin shards and manifest.json. Each shard is a 32-byte
 * little-endian header (magic "CMTOKSHD", u32 version = 1, u32 dtype = 2 (uint16) or 4 (uint32), u64 token
 * count, u64 reserved 0) followed by exactly that many token ids; documents are separated by BOS. The
 * manifest names the shards of each split with their token counts, the tokenizer, its vocab size and BOS id.
 * A split reads as one stream of tokens across its shards, in manifest order. */
#ifndef CAMELID_SHARDS_H
#define CAMELID_SHARDS_H

#include <stdint.h>

#include "camelid/status.h"

typedef struct cm_shards cm_shards;

/* Open split "train" or "val" of data folder `dir` (every shard is mapped and its header and size checked
 * against the manifest). */
cm_status cm_shards_open(const char *dir, const char *split, cm_shards **out);
void cm_shards_close(cm_shards *s);
/* Tokens in the split. */
int64_t cm_shards_n_tokens(const cm_shards *s);
/* The largest token id in the split (checked on open, so that a model with a smaller vocabulary is refused
 * before training starts) and the tokenizer's vocab size recorded in the manifest. */
uint32_t cm_shards_max_token(const cm_shards *s);
int64_t cm_shards_vocab_size(const cm_shards *s);
/* Copy tokens [offset, offset + n) of the split's stream into out (crossing shard boundaries). */
cm_status cm_shards_read(const cm_shards *s, int64_t offset, int n, int32_t *out);
/* The BOS id and the tokenizer path recorded in the manifest. */
int32_t cm_shards_bos(const cm_shards *s);
const char *cm_shards_tokenizer(const cm_shards *s);

/* Writer. Tokens are appended as one stream (BOS before each document) into shards of at most
 * `shard_tokens` tokens in a temporary folder inside `dir`; commit takes the last `val_tokens` tokens of the
 * stream as the val split (cut by tokens, not at a document boundary) and the rest as train, moves the
 * shards into place, then writes manifest.json (atomically, last). A data set already in `dir` stays
 * readable until commit publishes: its manifest is removed before the new shards are moved in (so a crash
 * or failure from then on leaves no manifest rather than one naming the wrong shards), and its shards that
 * the new manifest does not name are deleted after. Abort, or a commit that fails before publishing, leaves
 * `dir` as it was (the temporary folder is removed). */
#define CM_SHARDS_DEFAULT_SHARD_TOKENS ((int64_t)1 << 26)

typedef struct cm_shards_writer cm_shards_writer;

typedef struct {
    const char *tokenizer;  /* recorded in the manifest as given (use an absolute path) */
    int64_t vocab_size;     /* 1..2^31-1; uint16 shards up to 65,536, uint32 above */
    int32_t bos_id;         /* 0..vocab_size-1 */
    int64_t shard_tokens;   /* tokens per shard at most; 0: CM_SHARDS_DEFAULT_SHARD_TOKENS */
} cm_shards_writer_opts;

typedef struct {
    int64_t documents, train_tokens, val_tokens;
    int train_shards, val_shards;
    int dtype; /* bytes per token: 2 or 4 */
} cm_shards_summary;

/* Create `dir` if needed and start a data set in it. */
cm_status cm_shards_writer_open(const char *dir, const cm_shards_writer_opts *o, cm_shards_writer **out);
/* Append one document: BOS, then `n` tokens (each must be in 0..vocab_size-1). */
cm_status cm_shards_writer_add_document(cm_shards_writer *w, const int32_t *tokens, size_t n);
/* The same in steps, for a document encoded in pieces: begin writes BOS, append adds tokens to it. */
cm_status cm_shards_writer_begin_document(cm_shards_writer *w);
cm_status cm_shards_writer_append(cm_shards_writer *w, const int32_t *tokens, size_t n);
/* Tokens appended so far (BOS included). */
int64_t cm_shards_writer_n_tokens(const cm_shards_writer *w);
/* Split, finish and publish (see above); `val_tokens` must be below the stream's length (0: no val split).
 * Frees w, whatever the outcome. `summary` may be NULL. */
cm_status cm_shards_writer_commit(cm_shards_writer *w, int64_t val_tokens, cm_shards_summary *summary);
/* Drop everything written (frees w). */
void cm_shards_writer_abort(cm_shards_writer *w);

#endif
