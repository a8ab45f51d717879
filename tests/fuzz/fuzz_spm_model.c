/* libFuzzer: SentencePiece tokenizer.model (protobuf) parser. A model that parses must encode, decode and
 * survive a write/re-read round trip. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/tokenizer.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cm_tokenizer *t = NULL;
    if (cm_tokenizer_parse_spm_model(data, size, "fuzz.model", &t) != CM_OK) return 0;
    static const char text[] = " Hello  wörld, 中文 🦙\n";
    fuzz_encode_decode(t, text, sizeof text - 1, cm_tokenizer_bos(t) >= 0);
    uint8_t *buf = NULL;
    size_t bsize = 0;
    if (cm_tokenizer_serialize_spm_model(t, &buf, &bsize) == CM_OK) {
        cm_tokenizer *r = NULL;
        if (cm_tokenizer_parse_spm_model(buf, bsize, "fuzz-resaved.model", &r) != CM_OK) __builtin_trap();
        if (cm_tokenizer_vocab_size(r) != cm_tokenizer_vocab_size(t)) __builtin_trap();
        cm_tokenizer_close(r);
        free(buf);
    }
    cm_tokenizer_close(t);
    return 0;
}
