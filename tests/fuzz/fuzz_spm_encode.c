/* libFuzzer: encode arbitrary bytes with a tiny byte-fallback vocabulary, then decode (whole and streamed).
 * Valid UTF-8 must come back unchanged (but for "▁", which reads as a space). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/tokenizer.h"
#include "fuzz_util.h"

#define S "\xE2\x96\x81" /* "▁" */

static cm_tokenizer *tiny(bool spanning) {
    static const char *const words[] = {S,
                                        "a",
                                        "b",
                                        "c",
                                        "e",
                                        "h",
                                        "l",
                                        "o",
                                        S "a",
                                        "ab",
                                        "ll",
                                        "he",
                                        "hell",
                                        "hello",
                                        S "hello",
                                        S S,
                                        S S S,
                                        "\xC3\xA9",
                                        "\xE4\xB8\xAD",
                                        "\xE4\xB8\xAD\xE6\x96\x87",
                                        "\xE6\x96\x87",
                                        "aa",
                                        "aaa",
                                        "ba",
                                        "ca",
                                        "bc",
                                        "abc"};
    /* a piece spanning a word start turns word-by-word merging off; as invalid UTF-8 it never matches. The
     * scores tie on purpose. */
    return fuzz_tiny_spm(words, (int)(sizeof words / sizeof words[0]), spanning ? "\xFF" S : "\xFF", 7, 13);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static cm_tokenizer *t, *t_whole;
    if (!t) t = tiny(false), t_whole = tiny(true);
    int32_t *ids = NULL, *ids2 = NULL;
    size_t n = 0, n2 = 0;
    if (cm_tokenizer_encode(t, (const char *)data, size, true, true, &ids, &n) != CM_OK) return 0;
    /* word-by-word merging gives the same tokens as merging over the whole text */
    if (cm_tokenizer_encode(t_whole, (const char *)data, size, true, true, &ids2, &n2) != CM_OK)
        __builtin_trap();
    if (n != n2 || memcmp(ids, ids2, n * sizeof *ids) != 0) __builtin_trap();
    free(ids2);
    char *out = NULL;
    size_t len = 0;
    if (cm_tokenizer_decode(t, ids, n, &out, &len) != CM_OK) __builtin_trap();
    /* the text comes back, except that a literal "▁" in it is a space (as in sentencepiece) */
    char *want = malloc(size + 1);
    size_t wlen = 0;
    for (size_t i = 0; i < size;) {
        if (size - i >= 3 && memcmp(data + i, S, 3) == 0) {
            want[wlen++] = ' ';
            i += 3;
        } else {
            want[wlen++] = (char)data[i++];
        }
    }
    if (len != wlen || memcmp(out, want, wlen) != 0) __builtin_trap();
    /* streamed, one id at a time; every piece is whole UTF-8 here, so the final flush has nothing left */
    if (fuzz_check_streamed(t, ids, n, want, wlen) != 0) __builtin_trap();
    free(want);
    free(out);
    free(ids);
    return 0;
}
