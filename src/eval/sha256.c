/* SHA-256 (FIPS 180-4) for the model identity in evaluation results. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/eval.h"
#include "camelid/file.h"

typedef struct {
    uint32_t h[8];
    uint8_t block[64];
    size_t fill;
    uint64_t total;
} sha256_ctx;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t rotr(uint32_t x, int n) {
    return (x >> n) | (x << (32 - n));
}

static void compress(sha256_ctx *c, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6],
             h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d, c->h[4] += e, c->h[5] += f, c->h[6] += g,
        c->h[7] += h;
}

static void sha_init(sha256_ctx *c) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->fill = 0;
    c->total = 0;
}

static void sha_update(sha256_ctx *c, const void *data, size_t len) {
    const uint8_t *p = data;
    c->total += len;
    if (c->fill) {
        size_t take = 64 - c->fill < len ? 64 - c->fill : len;
        memcpy(c->block + c->fill, p, take);
        c->fill += take, p += take, len -= take;
        if (c->fill < 64) return;
        compress(c, c->block);
        c->fill = 0;
    }
    for (; len >= 64; p += 64, len -= 64) compress(c, p);
    memcpy(c->block, p, len);
    c->fill = len;
}

static void sha_final(sha256_ctx *c, char hex[65]) {
    uint64_t bits = c->total * 8;
    uint8_t pad = 0x80, zero = 0, len[8];
    uint64_t total = c->total;
    sha_update(c, &pad, 1);
    while (c->fill != 56) sha_update(c, &zero, 1);
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(c, len, 8);
    (void)total;
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", c->h[i]);
    hex[64] = 0;
}

void cm_sha256_buffer(const void *data, size_t len, char hex[65]) {
    sha256_ctx c;
    sha_init(&c);
    sha_update(&c, data, len);
    sha_final(&c, hex);
}

static cm_status hash_into(sha256_ctx *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return cm_error(CM_ERR_IO, "%s: cannot open for hashing", path);
    static const size_t chunk = (size_t)1 << 20;
    uint8_t *buf = malloc(chunk);
    if (!buf) {
        fclose(f);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    size_t n;
    while ((n = fread(buf, 1, chunk, f)) > 0) sha_update(c, buf, n);
    int bad = ferror(f);
    free(buf);
    fclose(f);
    return bad ? cm_error(CM_ERR_IO, "%s: read error while hashing", path) : CM_OK;
}

cm_status cm_sha256_file(const char *path, char hex[65]) {
    sha256_ctx c;
    sha_init(&c);
    CM_TRY(hash_into(&c, path));
    sha_final(&c, hex);
    return CM_OK;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

cm_status cm_sha256_model_weights(const char *path, char hex[65]) {
    if (!cm_path_is_dir(path)) return cm_sha256_file(path, hex);
    DIR *d = opendir(path);
    if (!d) return cm_error(CM_ERR_IO, "%s: cannot list the folder", path);
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    cm_status st = CM_OK;
    while ((e = readdir(d))) {
        if (!cm_path_has_suffix(e->d_name, ".safetensors")) continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (!nn || !(nn[n] = strdup(e->d_name))) {
            if (nn) names = nn;
            st = cm_error(CM_ERR_NOMEM, "out of memory");
            break;
        }
        names = nn;
        n++;
    }
    closedir(d);
    if (st == CM_OK && n == 0) st = cm_error(CM_ERR_NOT_FOUND, "%s: no .safetensors file to hash", path);
    sha256_ctx c;
    sha_init(&c);
    if (st == CM_OK) qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n && st == CM_OK; i++) {
        char *p = cm_path_join(path, names[i]);
        st = p ? hash_into(&c, p) : cm_error(CM_ERR_NOMEM, "out of memory");
        free(p);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (st == CM_OK) sha_final(&c, hex);
    return st;
}
