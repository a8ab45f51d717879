/* libFuzzer target: token-shard metadata. The input is a manifest.json, a NUL byte, then the bytes of one
 * shard. An accepted manifest must be self-consistent (bounded sizes, plain file names, per-split sums); the
 * shard is then checked against its first train entry (else against any header), and an accepted shard must
 * have exactly header + count x dtype bytes with every token below the vocabulary. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "train/shards_internal.h"

static void check_shard(const uint8_t *data, size_t size, int dtype, int64_t expect, int64_t vocab) {
    int64_t count;
    uint32_t mx;
    if (cm_shards_check(data, size, "fuzz.bin", dtype, expect, vocab, &count, &mx) != CM_OK) return;
    uint32_t dt = (uint32_t)data[12] | (uint32_t)data[13] << 8;
    if (dt != 2 && dt != 4) __builtin_trap();
    if (dtype && (int)dt != dtype) __builtin_trap();
    if (expect >= 0 && count != expect) __builtin_trap();
    if ((uint64_t)count * dt + CM_SHARDS_HEADER != size) __builtin_trap();
    if (count > 0 && (int64_t)mx >= vocab) __builtin_trap();
    for (int64_t i = 0; i < count; i++) { /* the maximum really is the maximum */
        const uint8_t *p = data + CM_SHARDS_HEADER + (size_t)i * dt;
        uint32_t v = dt == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8
                             : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (v > mx) __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t mlen = nul ? (size_t)(nul - data) : size;
    const uint8_t *shard = nul ? nul + 1 : data + size;
    size_t slen = size - mlen - (nul ? 1 : 0);
    cm_shards_manifest m;
    if (cm_shards_manifest_parse((const char *)data, mlen, "fuzz.json", &m) == CM_OK) {
        if (m.vocab_size < 1 || m.bos_id < 0 || m.bos_id >= m.vocab_size) __builtin_trap();
        if (m.dtype != 2 && m.dtype != 4) __builtin_trap();
        if (m.dtype == 2 && m.vocab_size > 65536) __builtin_trap();
        if (!m.tokenizer) __builtin_trap();
        for (int s = 0; s < 2; s++) {
            int64_t sum = 0;
            for (int i = 0; i < m.split[s].n; i++) {
                const char *f = m.split[s].shards[i].file;
                if (!f[0] || strchr(f, '/') || !strcmp(f, "..") || m.split[s].shards[i].tokens < 0) __builtin_trap();
                sum += m.split[s].shards[i].tokens;
            }
            if (sum != m.split[s].tokens) __builtin_trap();
        }
        if (m.split[0].n > 0)
            check_shard(shard, slen, m.dtype, m.split[0].shards[0].tokens, m.vocab_size);
        else
            check_shard(shard, slen, m.dtype, -1, m.vocab_size);
        cm_shards_manifest_free(&m);
    } else {
        cm_shards_manifest_free(&m);
        check_shard(shard, slen, 0, -1, 1000);
    }
    /* the shard bytes alone, with each dtype */
    check_shard(data, size, 2, -1, 65536);
    check_shard(data, size, 4, -1, 70000);
    return 0;
}
