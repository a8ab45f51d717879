/* llama2.c tokenizer.bin (FACTS 2.1): uint32 max_token_length, then per token float32 score, int32 length and
 * the bytes. No vocabulary size: it comes from the model (the hint), or tokens are read to the end of the
 * file. Pieces are mapped back to SentencePiece form: ' ' -> "▁", "\n<s>\n" -> "<s>", "\n</s>\n" -> "</s>".
 */
#include <stdlib.h>
#include <string.h>

#include "camelid/tokenizer.h"
#include "tokenizer/spm_internal.h"

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Check the record of token `i` at *pos and advance past it; its bytes are data[*pos - len, *pos). */
static cm_status next_record(const uint8_t *data, size_t size, size_t *pos, int i, const char *name,
                             float *score, size_t *len) {
    size_t at = *pos;
    if (size - at < 8)
        return cm_error(CM_ERR_FORMAT,
                        "%s: token %d at byte offset %zu: record truncated (%zu bytes left, need 8)", name, i,
                        at, size - at);
    uint32_t bits = rd_u32(data + at);
    memcpy(score, &bits, 4);
    int32_t n = (int32_t)rd_u32(data + at + 4);
    if (n < 0)
        return cm_error(CM_ERR_FORMAT, "%s: token %d at byte offset %zu: negative length %d", name, i, at, n);
    if (n == 0) return cm_error(CM_ERR_FORMAT, "%s: token %d at byte offset %zu: empty piece", name, i, at);
    if ((size_t)n > size - at - 8)
        return cm_error(CM_ERR_FORMAT,
                        "%s: token %d at byte offset %zu: length %d runs past the end (%zu bytes left)", name,
                        i, at, n, size - at - 8);
    if (n > CM_SPM_MAX_PIECE_LEN)
        return cm_error(CM_ERR_FORMAT,
                        "%s: token %d at byte offset %zu: length %d is more than the %d supported", name, i,
                        at, n, CM_SPM_MAX_PIECE_LEN);
    *len = (size_t)n;
    *pos = at + 8 + (size_t)n;
    return CM_OK;
}

cm_status cm_tokenizer_parse_llama2c(const void *data_, size_t size, int vocab_size_hint, const char *name,
                                     cm_tokenizer **out) {
    const uint8_t *data = data_;
    *out = NULL;
    if (!name) name = "tokenizer.bin";
    if (!data && size > 0) return cm_error(CM_ERR_ARG, "%s: data is NULL", name);
    if (vocab_size_hint < 0) return cm_error(CM_ERR_ARG, "%s: negative vocab size %d", name, vocab_size_hint);
    if (size < 4)
        return cm_error(CM_ERR_FORMAT, "%s: %zu bytes is too short for the max_token_length header", name,
                        size);

    size_t n = (size_t)vocab_size_hint;
    if (n == 0) { /* count records to the end of the file */
        size_t pos = 4;
        while (pos < size) {
            float score = 0.0f;
            size_t len = 0;
            CM_TRY(next_record(data, size, &pos, (int)n, name, &score, &len));
            if (++n > CM_SPM_MAX_VOCAB)
                return cm_error(CM_ERR_FORMAT, "%s: more than %d tokens", name, CM_SPM_MAX_VOCAB);
        }
        if (n == 0) return cm_error(CM_ERR_FORMAT, "%s: the file holds no tokens", name);
    }

    cm_tokenizer *t;
    CM_TRY(cm_spm_alloc(n, name, &t));
    char *piece = malloc(CM_SPM_MAX_PIECE_LEN * 3);
    if (!piece) {
        cm_tokenizer_close(t);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", name);
    }
    cm_status st = CM_OK;
    size_t pos = 4;
    for (size_t i = 0; i < n; i++) {
        float score = 0.0f;
        size_t len = 0;
        if (pos >= size) {
            st = cm_error(CM_ERR_FORMAT, "%s: expected %zu tokens, but the file ends after %zu", name, n, i);
            break;
        }
        if ((st = next_record(data, size, &pos, (int)i, name, &score, &len))) break;
        const char *s = (const char *)data + pos - len;
        size_t m = 0;
        if (len == 5 && memcmp(s, "\n<s>\n", 5) == 0) {
            memcpy(piece, "<s>", m = 3);
        } else if (len == 6 && memcmp(s, "\n</s>\n", 6) == 0) {
            memcpy(piece, "</s>", m = 4);
        } else {
            for (size_t k = 0; k < len; k++) {
                if (s[k] == ' ') {
                    memcpy(piece + m, "\xE2\x96\x81", 3);
                    m += 3;
                } else {
                    piece[m++] = s[k];
                }
            }
        }
        int type = CM_TOKEN_NORMAL;
        if (i == 0)
            type = CM_TOKEN_UNKNOWN;
        else if (i == 1 || i == 2)
            type = CM_TOKEN_CONTROL;
        else if (cm_spm_byte_piece_value(piece, m) >= 0)
            type = CM_TOKEN_BYTE;
        if ((st = cm_spm_set_piece(t, (int)i, piece, m, score, type, name))) break;
    }
    free(piece);
    if (st) {
        cm_tokenizer_close(t);
        return st;
    }
    t->unk = 0;
    t->bos = n > 1 ? 1 : -1;
    t->eos = n > 2 ? 2 : -1;
    t->add_bos = true;
    t->add_eos = false;
    CM_TRY(cm_spm_finish(t, name));
    *out = t;
    return CM_OK;
}
