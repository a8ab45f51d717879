/* libFuzzer: parse arbitrary bytes as an HF tokenizer.json (and, when that succeeds, encode a few strings,
 * write it back as tokenizer.json and parse that again, which must succeed), then as a tokenizer_config.json
 * applied to a small fixed tokenizer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/tokenizer.h"
#include "fuzz_util.h"

static const char small[] =
    "{\"added_tokens\": [{\"id\": 6, \"content\": \"<|end|>\", \"special\": true}], \"pre_tokenizer\": "
    "{\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, "
    "\"ab\": 3, \"abc\": 4, \"\\u0120\": 5}, \"merges\": [\"a b\", [\"ab\", \"c\"]]}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cm_tokenizer *t = NULL;
    if (cm_tokenizer_parse_hf_json((const char *)data, size, "fuzz.json", &t) == CM_OK) {
        static const char *const texts[] = {"", "abc cab", "Hello world", " \xE2\x96\x81 <s> \xFF"};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
            fuzz_encode_decode(t, texts[i], strlen(texts[i]), false);
        char *json = NULL;
        size_t len = 0;
        if (cm_tokenizer_serialize_hf_json(t, &json, &len) == CM_OK) {
            cm_tokenizer *back = NULL;
            if (cm_tokenizer_parse_hf_json(json, len, "written.json", &back) != CM_OK) {
                fprintf(stderr, "the written tokenizer.json does not parse: %s\n", cm_last_error());
                __builtin_trap();
            }
            if (cm_tokenizer_vocab_size(back) != cm_tokenizer_vocab_size(t)) __builtin_trap();
            cm_tokenizer_close(back);
        }
        free(json);
        cm_tokenizer_close(t);
    }
    t = NULL;
    if (cm_tokenizer_parse_hf_json(small, sizeof small - 1, "small.json", &t) != CM_OK) __builtin_trap();
    (void)cm_tokenizer_apply_hf_config(t, (const char *)data, size, "fuzz_config.json");
    cm_tokenizer_close(t);
    return 0;
}
