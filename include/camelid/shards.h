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

#endif
