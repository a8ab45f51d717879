/* Tokenizers. SentencePiece BPE with byte fallback (Llama 1/2, FACTS 2.2), loaded from tokenizer.model
 * (protobuf), llama2.c tokenizer.bin or GGUF metadata. Pieces are kept in SentencePiece form ("▁" for space,
 * "<s>"/"</s>" for BOS/EOS, "<0xAB>" byte pieces), whatever the file stored.
 * Byte-level BPE (GPT-2, Llama 3, FACTS 2.3), loaded from vocab.json + merges.txt, encoder.json + vocab.bpe
 * or GGUF (tokenizer.ggml.model "gpt2"). Pieces are kept as vocab.json stores them (GPT-2 bytes_to_unicode
 * form, "Ġ" for space). */
#ifndef CAMELID_TOKENIZER_H
#define CAMELID_TOKENIZER_H

#include <stdbool.h>
#include <stdint.h>

#include "camelid/status.h"

/* Token types, numbered as SentencePiece and GGUF's tokenizer.ggml.token_type. */
typedef enum {
    CM_TOKEN_NORMAL = 1,
    CM_TOKEN_UNKNOWN = 2,
    CM_TOKEN_CONTROL = 3,
    CM_TOKEN_USER_DEFINED = 4,
    CM_TOKEN_UNUSED = 5,
    CM_TOKEN_BYTE = 6,
} cm_token_type;

typedef enum {
    CM_TOKENIZER_SPM = 0, /* SentencePiece BPE with byte fallback */
    CM_TOKENIZER_BPE = 1, /* byte-level BPE (GPT-2, Llama 3) */
} cm_tokenizer_kind;

typedef struct cm_tokenizer cm_tokenizer;
struct cm_gguf;

/* Open a tokenizer from a file (HF tokenizer.json (any name ending in "tokenizer.json"), tokenizer.model,
 * tokenizer.bin / *.bin in llama2.c format, *.gguf, a byte-level BPE pair vocab.json/merges.txt or
 * encoder.json/vocab.bpe: either file of a pair, the other is found beside it) or a folder holding
 * tokenizer.json (else tokenizer.model, else vocab.json + merges.txt). A tokenizer_config.json in the folder
 * (or beside a file named tokenizer.json or tokenizer.model) is applied on top
 * (cm_tokenizer_apply_hf_config). For llama2.c files, which carry no vocab size, `vocab_size_hint` > 0 gives
 * it (otherwise tokens are read to the end of the file). */
cm_status cm_tokenizer_open(const char *path, int vocab_size_hint, cm_tokenizer **out);
/* Parse a caller-owned buffer in a given format ("model" protobuf or "llama2c"); `name` is used in errors.
 * Drives the fuzz targets. */
cm_status cm_tokenizer_parse_spm_model(const void *data, size_t size, const char *name, cm_tokenizer **out);
cm_status cm_tokenizer_parse_llama2c(const void *data, size_t size, int vocab_size_hint, const char *name,
                                     cm_tokenizer **out);
/* From GGUF metadata (tokenizer.ggml.*). CM_ERR_NOT_FOUND if the file has no vocabulary
 * (no tokenizer.ggml.model or "no_vocab"). */
cm_status cm_tokenizer_from_gguf(const struct cm_gguf *g, cm_tokenizer **out);
/* Build from pieces in memory (SentencePiece form). `types` may be NULL: then `unk` is UNKNOWN, `bos`/`eos`
 * are CONTROL, "<0xXX>" pieces are BYTE and the rest NORMAL. Ids of -1 mean "none". */
cm_status cm_tokenizer_from_pieces(const char *const *pieces, const size_t *lens, const float *scores,
                                   const cm_token_type *types, size_t n, int bos, int eos, int unk,
                                   cm_tokenizer **out);
/* Byte-level BPE with a chosen pre-tokenizer: `pre` is "gpt2" (GPT-2 regex), "llama3" (Llama 3 regex and
 * ignore_merges) or NULL (GGUF: tokenizer.ggml.pre; vocab.json pairs: "llama3" for a vocabulary of 128,000+
 * tokens, else "gpt2"). `path` as for cm_tokenizer_open (a BPE pair or a .gguf). With "llama3" and an
 * encoder.json of exactly 128,000 tokens, <|begin_of_text|> = 128000 and <|end_of_text|> = 128001 are added
 * as CONTROL tokens (as Meta's tokenizer numbers them) and become BOS/EOS. */
cm_status cm_tokenizer_open_bpe(const char *path, const char *pre, cm_tokenizer **out);
/* Byte-level BPE from caller-owned buffers: a vocab.json object and a merges.txt text. `vocab_name` and
 * `merges_name` are used in errors. Drives the fuzz target. */
cm_status cm_tokenizer_parse_bpe(const char *vocab_json, size_t vocab_len, const char *vocab_name,
                                 const char *merges, size_t merges_len, const char *merges_name,
                                 const char *pre, cm_tokenizer **out);
/* HF tokenizers' tokenizer.json from a caller-owned buffer; `name` is used in errors. Two families:
 * byte-level BPE (pre_tokenizer ByteLevel, or a Sequence of a Split whose regex is GPT-2's or Llama 3's and a
 * ByteLevel; model.ignore_merges is honoured) and SentencePiece-style BPE as Llama 2's tokenizer.json has it
 * (byte_fallback, "▁" pieces, a Prepend/Replace normalizer or a Metaspace pre-tokenizer), which becomes a
 * SentencePiece tokenizer whose scores follow the merge order (a piece scores -(rank of the first merge that
 * makes it)). added_tokens become CONTROL (special) or USER_DEFINED tokens; a TemplateProcessing
 * post-processor that starts with a special token makes it BOS and sets add_bos. Other model types
 * (Unigram, WordPiece, WordLevel) give CM_ERR_UNSUPPORTED. Drives the fuzz target. */
cm_status cm_tokenizer_parse_hf_json(const char *json, size_t len, const char *name, cm_tokenizer **out);
/* Apply an HF tokenizer_config.json: bos_token, eos_token, unk_token, pad_token (a string or {"content":
 * ...}, looked up in the vocabulary), add_bos_token, add_eos_token and chat_template (a string, or a list of
 * {name, template} from which "default" is taken). Keys that are absent or null leave the tokenizer as it is.
 */
cm_status cm_tokenizer_apply_hf_config(cm_tokenizer *t, const char *json, size_t len, const char *name);
void cm_tokenizer_close(cm_tokenizer *t);

cm_tokenizer_kind cm_tokenizer_kind_of(const cm_tokenizer *t);
int cm_tokenizer_vocab_size(const cm_tokenizer *t);
int cm_tokenizer_bos(const cm_tokenizer *t); /* -1 if none */
int cm_tokenizer_eos(const cm_tokenizer *t);
int cm_tokenizer_unk(const cm_tokenizer *t);
bool cm_tokenizer_add_bos(const cm_tokenizer *t); /* does the model expect BOS first (add_bos_token) */
/* Piece as stored (SentencePiece form), not NUL-terminated. */
const char *cm_tokenizer_piece(const cm_tokenizer *t, int id, size_t *len);
float cm_tokenizer_score(const cm_tokenizer *t, int id);
cm_token_type cm_tokenizer_type(const cm_tokenizer *t, int id);
/* The Jinja chat template (from tokenizer_config.json or GGUF tokenizer.chat_template), NULL if none. */
const char *cm_tokenizer_chat_template(const cm_tokenizer *t);
/* Replace it (a copy is kept); NULL removes it. */
cm_status cm_tokenizer_set_chat_template(cm_tokenizer *t, const char *jinja);
/* Is this an end-of-generation token (EOS, or another the vocabulary marks so, e.g. <|eot_id|>)? */
bool cm_tokenizer_is_eog(const cm_tokenizer *t, int id);

/* Encode `len` bytes of UTF-8 text. Invalid UTF-8 is an error for SentencePiece; byte-level BPE keeps such
 * bytes (as their byte tokens). Special tokens written in the text are not recognized (see
 * cm_tokenizer_encode_special). `*ids` is malloc'd (caller frees). With
 * add_bos, BOS comes first; the SentencePiece dummy prefix is added to non-empty text either way. */
cm_status cm_tokenizer_encode(const cm_tokenizer *t, const char *text, size_t len, bool add_bos, bool add_eos,
                              int32_t **ids, size_t *n_ids);
/* As cm_tokenizer_encode; with parse_special, byte-level BPE first splits out the text of special tokens
 * (CONTROL and USER_DEFINED, longest first) and emits their ids. SentencePiece ignores parse_special. */
cm_status cm_tokenizer_encode_special(const cm_tokenizer *t, const char *text, size_t len, bool add_bos,
                                      bool add_eos, bool parse_special, int32_t **ids, size_t *n_ids);

/* A place to cut a long text for encoding in pieces: a position p in [from, len) such that encoding
 * text[0, p) and text[p, len) separately (no BOS/EOS, no special-token parsing) and concatenating the ids
 * gives exactly the ids of the whole text; len if there is none. Byte-level BPE cuts after a line break
 * that sits between two printable ASCII characters (no pre-token of either regex spans it, and no lookahead
 * sees across it). SentencePiece always gives len: its dummy prefix and merges span the whole text. */
size_t cm_tokenizer_split_point(const cm_tokenizer *t, const char *text, size_t len, size_t from);

/* Streaming decoder: feed ids one at a time, get bytes that never end inside a UTF-8 character. Follows
 * SentencePiece: "▁" -> space, no leading space for the first piece after BOS (or at the very start),
 * byte pieces -> raw bytes, control tokens -> nothing, unk -> " ⁇ ". As in sentencepiece, only the first
 * text piece of the stream loses its leading space (control tokens before it do not count; a BOS later in
 * the stream does not start over). Invalid UTF-8 from byte pieces is passed through as it is, once proven
 * invalid (sentencepiece would substitute U+FFFD). Byte-level BPE: pieces map back to bytes (bytes_to_unicode
 * reversed), control tokens -> nothing, no leading-space rule. */
typedef struct cm_detokenizer {
    const cm_tokenizer *tok;
    int prev;      /* previous id, -1 at start */
    bool at_start; /* no text emitted yet */
    unsigned char pending[8];
    int n_pending;
} cm_detokenizer;

void cm_detokenizer_init(cm_detokenizer *d, const cm_tokenizer *t);
/* Append the text of `id` to `out` (capacity `cap`, at least 64 + the longest piece); returns bytes
 * written. Bytes of an unfinished UTF-8 character are held back until it completes (or proves invalid). */
size_t cm_detokenizer_push(cm_detokenizer *d, int id, char *out, size_t cap);
/* Emit whatever is held back (at the end of a stream). */
size_t cm_detokenizer_flush(cm_detokenizer *d, char *out, size_t cap);
/* Decode a whole sequence into a malloc'd NUL-terminated string. */
cm_status cm_tokenizer_decode(const cm_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len);
size_t cm_tokenizer_max_piece_len(const cm_tokenizer *t);

/* Writers. SentencePiece only (byte-level BPE gives CM_ERR_UNSUPPORTED): tokenizer.model (loadable by
 * sentencepiece and transformers' LlamaTokenizer). Both families: the GGUF tokenizer.ggml.* keys (+
 * tokenizer.chat_template) and HF tokenizer.json. */
cm_status cm_tokenizer_save_spm_model(const cm_tokenizer *t, const char *path);
/* The same tokenizer.model bytes in a malloc'd buffer (caller frees). */
cm_status cm_tokenizer_serialize_spm_model(const cm_tokenizer *t, uint8_t **data, size_t *size);
struct cm_gguf_writer;
cm_status cm_tokenizer_write_gguf(const cm_tokenizer *t, struct cm_gguf_writer *w);
/* tokenizer.json as HF tokenizers loads it. SentencePiece: Llama 2's layout (normalizer Prepend "▁" + Replace
 * " " -> "▁", model BPE with byte_fallback and merges derived from the pieces and scores so that HF's BPE
 * reproduces the SentencePiece tokenization). Byte-level BPE: Split(regex) + ByteLevel (Llama 3) or
 * ByteLevel with its regex (GPT-2), the merges, ignore_merges, added_tokens for CONTROL/USER_DEFINED tokens.
 * Written atomically. */
cm_status cm_tokenizer_save_hf_json(const cm_tokenizer *t, const char *path);
/* The same text in a malloc'd NUL-terminated buffer (caller frees). */
cm_status cm_tokenizer_serialize_hf_json(const cm_tokenizer *t, char **json, size_t *len);

#endif
