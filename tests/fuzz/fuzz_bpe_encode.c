/* libFuzzer: encode arbitrary bytes with a tiny in-memory byte-level BPE vocabulary (GPT-2 and Llama 3
 * pre-tokenizers, with and without special-token parsing), then decode (whole and streamed). Byte-level BPE
 * is lossless: without special parsing the bytes must come back exactly, invalid UTF-8 included. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/tokenizer.h"
#include "fuzz_util.h"

static bool b2u_printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

static cm_tokenizer *tiny(const char *pre) {
    static const char *words[] = {"he",           "ll",  "hell", "hello", "\xC4\xA0w",        "\xC4\xA0wo",
                                  "ab",           "abc", "aa",   "aaa",   "\xC4\xA0\xC4\xA0", "\xC4\xA0h",
                                  "\xC4\xA0hello"};
    static const char merges[] =
        "#version: 0.2\nh e\nl l\nhe ll\nhell o\n\xC4\xA0 w\n\xC4\xA0w o\na b\nab c\n"
        "a a\naa a\n\xC4\xA0 \xC4\xA0\n\xC4\xA0 h\n\xC4\xA0h ello\n";
    /* "ello" is not a token: the last merge is invalid, so leave it out */
    size_t mlen = strlen(merges) - strlen("\xC4\xA0h ello\n");
    char json[8192];
    size_t n = 0;
    int id = 0, extra = 0;
    n += (size_t)snprintf(json + n, sizeof json - n, "{");
    for (int b = 0; b < 256; b++) {
        int cp = b2u_printable(b) ? b : 256 + extra++;
        char ch[3];
        if (cp == '"' || cp == '\\')
            ch[0] = '\\', ch[1] = (char)cp, ch[2] = 0;
        else if (cp < 0x80)
            ch[0] = (char)cp, ch[1] = 0;
        else
            ch[0] = (char)(0xC0 | (cp >> 6)), ch[1] = (char)(0x80 | (cp & 0x3F)), ch[2] = 0;
        n += (size_t)snprintf(json + n, sizeof json - n, "%s\"%s\": %d", id ? ", " : "", ch, id);
        id++;
    }
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        n += (size_t)snprintf(json + n, sizeof json - n, ", \"%s\": %d", words[i], id++);
    n += (size_t)snprintf(json + n, sizeof json - n, ", \"<|endoftext|>\": %d}", id++);
    cm_tokenizer *t = NULL;
    if (cm_tokenizer_parse_bpe(json, n, "tiny vocab.json", merges, mlen, "tiny merges.txt", pre, &t) !=
        CM_OK) {
        fprintf(stderr, "%s\n", cm_last_error());
        __builtin_trap();
    }
    return t;
}

static void check(const cm_tokenizer *t, const uint8_t *data, size_t size, bool parse_special) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (cm_tokenizer_encode_special(t, (const char *)data, size, false, false, parse_special, &ids, &n) !=
        CM_OK)
        __builtin_trap();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= cm_tokenizer_vocab_size(t)) __builtin_trap();
    char *out = NULL;
    size_t len = 0;
    if (cm_tokenizer_decode(t, ids, n, &out, &len) != CM_OK) __builtin_trap();
    if (!parse_special && (len != size || memcmp(out, data, size) != 0)) __builtin_trap();
    fuzz_check_streamed(t, ids, n, out, len); /* streamed decoding spells the same bytes */
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static cm_tokenizer *gpt2, *llama3;
    if (!gpt2) gpt2 = tiny("gpt2"), llama3 = tiny("llama3");
    check(gpt2, data, size, false);
    check(gpt2, data, size, true);
    check(llama3, data, size, false);
    check(llama3, data, size, true);
    return 0;
}
