/* Private to src/tokenizer: byte-level BPE (GPT-2, Llama 3) on top of the shared vocabulary (spm_internal.h).
 */
#ifndef CAMELID_TOKENIZER_BPE_INTERNAL_H
#define CAMELID_TOKENIZER_BPE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/tokenizer.h"

struct cm_bpe;

typedef enum { CM_BPE_PRE_GPT2 = 0, CM_BPE_PRE_LLAMA3 = 1 } cm_bpe_pre;

/* The most merges accepted from any file. */
#define CM_BPE_MAX_MERGES (1 << 24)

/* The pre-tokenizer's regex (compile with PCRE2_UTF | PCRE2_UCP). */
const char *cm_bpe_regex(cm_bpe_pre pre);
/* Parse a pre-tokenizer name: "gpt2"/"gpt-2" or "llama3"/"llama-bpe"; -1 if unknown. */
int cm_bpe_pre_from_name(const char *s, size_t len);

/* Turn a finished vocabulary (cm_spm_finish) into a byte-level BPE tokenizer with room for `max_merges`
 * merges: compiles the regex, finds the 256 byte tokens. On failure the tokenizer is left as it was (caller
 * closes). */
cm_status cm_bpe_setup(cm_tokenizer *t, cm_bpe_pre pre, size_t max_merges, const char *name);
/* Add the next merge (rank order): "a b". `where` names the place in errors ("file:line"). */
cm_status cm_bpe_add_merge(cm_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                           const char *where);
/* Add every merge of a merges.txt / vocab.bpe text (an optional "#version" first line; blank lines skipped).
 */
cm_status cm_bpe_add_merges_text(cm_tokenizer *t, const char *text, size_t len, const char *name);
void cm_bpe_free(struct cm_bpe *b);

cm_status cm_bpe_encode(const cm_tokenizer *t, const char *text, size_t len, bool add_bos, bool add_eos,
                        bool parse_special, int32_t **ids, size_t *n_ids);
/* Read back what a writer needs: the pre-tokenizer, ignore_merges and the merges in rank order. */
cm_bpe_pre cm_bpe_pre_of(const cm_tokenizer *t);
bool cm_bpe_ignore_merges(const cm_tokenizer *t);
void cm_bpe_set_ignore_merges(cm_tokenizer *t, bool on);
size_t cm_bpe_n_merges(const cm_tokenizer *t);
void cm_bpe_merge(const cm_tokenizer *t, size_t rank, int32_t *left, int32_t *right);
/* GPT-2's bytes_to_unicode: the UTF-8 of the character that stands for `byte` (1 or 2 bytes, returned). */
size_t cm_bpe_byte_to_unicode(unsigned char byte, char out[2]);
/* The bytes piece `id` stands for, written to out (room for the piece's stored length); returns the count. */
size_t cm_bpe_piece_bytes(const cm_tokenizer *t, int id, unsigned char *out);

#endif
