/* Private to src/tokenizer: the SentencePiece BPE vocabulary and the builder the three loaders share. */
#ifndef CAMELID_TOKENIZER_SPM_INTERNAL_H
#define CAMELID_TOKENIZER_SPM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/tokenizer.h"

/* The longest piece accepted from any file (sentencepiece's own limit is far smaller). */
#define CM_SPM_MAX_PIECE_LEN 4096
/* The most pieces accepted from any file. */
#define CM_SPM_MAX_VOCAB (1 << 24)

struct cm_tokenizer {
    cm_tokenizer_kind kind;
    int n_vocab;
    char *blob;       /* all pieces, back to back */
    uint32_t *offset; /* n_vocab + 1 offsets into blob */
    float *score;     /* n_vocab */
    uint8_t *type;    /* n_vocab (cm_token_type) */
    int32_t *slots;   /* open-addressing hash of piece -> first id; -1 empty */
    size_t slot_mask; /* number of slots - 1 (a power of two) */
    int byte_id[256]; /* id of "<0xXX>" (type BYTE), -1 if absent */
    size_t max_piece_len;
    int bos, eos, unk, pad, eot, eom; /* -1 if none */
    bool add_bos, add_eos;
    bool add_dummy_prefix;         /* prepend "▁" to non-empty text */
    bool remove_extra_whitespaces; /* strip and collapse ' ' runs before encoding */
    bool escape_whitespaces;       /* ' ' -> "▁" before encoding */
    bool words_independent;        /* no piece spans a word start (see cm_spm_finish): merge word by word */
    int n_set;                     /* builder state: pieces set so far */
    size_t blob_size, blob_cap;
    struct cm_bpe *bpe;  /* byte-level BPE state (kind CM_TOKENIZER_BPE), else NULL; see bpe_internal.h */
    char *chat_template; /* Jinja source (tokenizer_config.json / tokenizer.chat_template), NULL if none */
};

/* Builder: allocate `n` empty pieces, set each with cm_spm_set_piece, then cm_spm_finish (builds the hash
 * and checks special ids). `name` is used in errors. On failure the tokenizer is freed. */
cm_status cm_spm_alloc(size_t n, const char *name, cm_tokenizer **out);
/* Pieces must be set in id order (0, 1, 2, ...). */
cm_status cm_spm_set_piece(cm_tokenizer *t, int id, const char *piece, size_t len, float score, int type,
                           const char *name);
cm_status cm_spm_finish(cm_tokenizer *t, const char *name);

/* Id of the piece equal to s[0..len), or -1. Duplicates resolve to the first id. */
int cm_spm_lookup(const cm_tokenizer *t, const char *s, size_t len);
/* 0..255 if `piece` is exactly "<0xXX>" (upper-case hex, as sentencepiece writes it), else -1. */
int cm_spm_byte_piece_value(const char *piece, size_t len);

/* tokenizer.json from a file (hf_json.c). */
cm_status cm_tokenizer_open_hf_json_file(const char *path, cm_tokenizer **out);
/* Apply dir/tokenizer_config.json if it exists. */
cm_status cm_tokenizer_apply_hf_config_file(cm_tokenizer *t, const char *dir);

/* Serialize as a SentencePiece ModelProto (heap buffer, caller frees). */
cm_status cm_spm_serialize_model(const cm_tokenizer *t, uint8_t **data, size_t *size);

#endif
