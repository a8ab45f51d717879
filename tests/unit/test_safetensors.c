#include "camelid/safetensors.h"

#include <stdint.h>

#include "check.h"

/* ---- helpers ---- */

/* A raw safetensors image: u64 header length, the header text verbatim, then `data_len` bytes (0..255). */
static uint8_t *make_raw(const char *header, size_t data_len, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + data_len;
    uint8_t *b = malloc(*size ? *size : 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_len; i++) b[8 + h + i] = (uint8_t)i;
    return b;
}

/* Parse a raw image built from `header` + `data_len` bytes under the name "bad.safetensors". */
static cm_status parse_raw(const char *header, size_t data_len) {
    size_t n;
    uint8_t *b = make_raw(header, data_len, &n);
    cm_safetensors *st = NULL;
    cm_status rc = cm_safetensors_parse(b, n, "bad.safetensors", &st);
    if (rc == CM_OK) cm_safetensors_close(st);
    free(b);
    return rc;
}

static cm_status parse_bytes(const void *b, size_t n) {
    cm_safetensors *st = NULL;
    cm_status rc = cm_safetensors_parse(b, n, "bad.safetensors", &st);
    if (rc == CM_OK) cm_safetensors_close(st);
    return rc;
}

/* ---- round trip ---- */

static void test_roundtrip(void) {
    char *dir = cm_test_tmpdir();
    char *path = cm_path_join(dir, "model.safetensors");

    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[4] = {0x3f80, 0x4000, 0x4040, 0x4080};
    int32_t s = 42;
    int64_t sa[2] = {2, 3}, sb[1] = {4}, sz[2] = {0, 5};
    uint8_t *owned = malloc(3);
    owned[0] = 7, owned[1] = 8, owned[2] = 9;
    int64_t so[1] = {3};

    cm_safetensors_writer *w;
    CHECK_OK(cm_safetensors_writer_open(path, &w));
    CHECK_OK(cm_safetensors_writer_set_metadata(w, "note", "hello \"world\""));
    CHECK_OK(cm_safetensors_writer_add(w, "z.weight", CM_DTYPE_F32, 2, sa, a, sizeof a));
    CHECK_OK(cm_safetensors_writer_add(w, "a.bias", CM_DTYPE_BF16, 1, sb, b, sizeof b));
    CHECK_OK(cm_safetensors_writer_add(w, "empty", CM_DTYPE_F16, 2, sz, NULL, 0));
    CHECK_OK(cm_safetensors_writer_add(w, "scalar", CM_DTYPE_I32, 0, NULL, &s, 4));
    CHECK_OK(cm_safetensors_writer_add_owned(w, "bytes", CM_DTYPE_U8, 1, so, owned, 3));
    /* caller mistakes are refused without spoiling the writer */
    CHECK_FAIL(cm_safetensors_writer_add(w, "z.weight", CM_DTYPE_F32, 2, sa, a, sizeof a), "twice");
    CHECK_FAIL(cm_safetensors_writer_add(w, "short", CM_DTYPE_F32, 2, sa, a, 20), "needs 24");
    CHECK_FAIL(cm_safetensors_writer_add(w, "__metadata__", CM_DTYPE_F32, 2, sa, a, sizeof a), "reserved");
    CHECK_FAIL(cm_safetensors_writer_add(w, "bad\xff", CM_DTYPE_F32, 2, sa, a, sizeof a), "UTF-8");
    CHECK_OK(cm_safetensors_writer_commit(w));

    /* the bytes on disk: 8-multiple header, format pt, contiguous offsets in the order added */
    char *raw;
    size_t n;
    CHECK_OK(cm_read_file(path, 1 << 20, &raw, &n));
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (uint8_t)raw[i];
    CHECK(hlen % 8 == 0);
    CHECK(8 + hlen + 24 + 8 + 0 + 4 + 3 == n);
    char *hdr = strndup(raw + 8, hlen);
    CHECK(strstr(hdr, "\"__metadata__\":{\"format\":\"pt\",\"note\":\"hello \\\"world\\\"\"}") != NULL);
    CHECK(strstr(hdr, "\"z.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}") != NULL);
    CHECK(strstr(hdr, "\"a.bias\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}") != NULL);
    CHECK(strstr(hdr, "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[32,32]}") != NULL);
    CHECK(strstr(hdr, "\"scalar\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[32,36]}") != NULL);
    CHECK(strstr(hdr, "\"bytes\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[36,39]}") != NULL);
    CHECK(strstr(hdr, "\"z.weight\"") < strstr(hdr, "\"a.bias\"")); /* header order = data order */
    size_t tl = strlen(hdr);
    CHECK(tl <= hlen && hlen - tl < 8);
    for (size_t i = tl; i < hlen; i++) CHECK(raw[8 + i] == ' '); /* padded with spaces */
    CHECK(memcmp(raw + 8 + hlen, a, 24) == 0);
    free(hdr);
    free(raw);

    cm_safetensors *st;
    CHECK_OK(cm_safetensors_open(path, &st));
    CHECK(cm_safetensors_count(st) == 5);
    CHECK(strcmp(cm_safetensors_path(st), path) == 0);
    CHECK(strcmp(cm_safetensors_metadata(st, "format"), "pt") == 0);
    CHECK(strcmp(cm_safetensors_metadata(st, "note"), "hello \"world\"") == 0);
    CHECK(cm_safetensors_metadata(st, "nope") == NULL);
    const char *order[] = {"z.weight", "a.bias", "empty", "scalar", "bytes"};
    for (size_t i = 0; i < 5; i++) CHECK(strcmp(cm_safetensors_get(st, i)->name, order[i]) == 0);
    CHECK(cm_safetensors_get(st, 5) == NULL);
    const cm_tensor *t = cm_safetensors_find(st, "z.weight");
    CHECK(t && t->dtype == CM_DTYPE_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    CHECK(t && t->nbytes == 24 && memcmp(t->data, a, 24) == 0);
    t = cm_safetensors_find(st, "a.bias");
    CHECK(t && t->dtype == CM_DTYPE_BF16 && t->nbytes == 8 && memcmp(t->data, b, 8) == 0);
    t = cm_safetensors_find(st, "empty");
    CHECK(t && t->nbytes == 0 && cm_tensor_numel(t) == 0 && t->shape[1] == 5);
    t = cm_safetensors_find(st, "scalar");
    CHECK(t && t->ndim == 0 && cm_tensor_numel(t) == 1 && *(const int32_t *)t->data == 42);
    t = cm_safetensors_find(st, "bytes");
    CHECK(t && t->nbytes == 3 && ((const uint8_t *)t->data)[2] == 9);
    CHECK(cm_safetensors_find(st, "missing") == NULL);
    cm_safetensors_close(st);

    /* metadata "format" can be overridden; an aborted writer leaves no file */
    char *path2 = cm_path_join(dir, "other.safetensors");
    CHECK_OK(cm_safetensors_writer_open(path2, &w));
    CHECK_OK(cm_safetensors_writer_set_metadata(w, "format", "np"));
    CHECK_OK(cm_safetensors_writer_commit(w));
    CHECK_OK(cm_safetensors_open(path2, &st));
    CHECK(cm_safetensors_count(st) == 0);
    CHECK(strcmp(cm_safetensors_metadata(st, "format"), "np") == 0);
    cm_safetensors_close(st);
    char *path3 = cm_path_join(dir, "aborted.safetensors");
    CHECK_OK(cm_safetensors_writer_open(path3, &w));
    CHECK_OK(cm_safetensors_writer_add(w, "x", CM_DTYPE_F32, 2, sa, a, sizeof a));
    cm_safetensors_writer_abort(w);
    CHECK(!cm_path_exists(path3));

    CHECK_FAIL(cm_safetensors_open("/nonexistent/model.safetensors", &st), "/nonexistent/model.safetensors");
    remove(path);
    remove(path2);
    remove(dir);
    free(path);
    free(path2);
    free(path3);
    free(dir);
}

/* Tensors listed in the header out of data order come back sorted by offset. */
static void test_offset_order(void) {
    const char *h = "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]},"
                    "\"z0\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[3,3]},"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}   ";
    size_t n;
    uint8_t *raw = make_raw(h, 5, &n);
    cm_safetensors *st;
    CHECK_OK(cm_safetensors_parse(raw, n, "x.safetensors", &st));
    if (st) {
        CHECK(cm_safetensors_count(st) == 3);
        CHECK(strcmp(cm_safetensors_get(st, 0)->name, "a") == 0);
        CHECK(strcmp(cm_safetensors_get(st, 1)->name, "z0") == 0);
        CHECK(strcmp(cm_safetensors_get(st, 2)->name, "b") == 0);
        CHECK(((const uint8_t *)cm_safetensors_find(st, "b")->data)[0] == 3);
        CHECK(cm_safetensors_metadata(st, "format") == NULL);
        cm_safetensors_close(st);
    }
    free(raw);
    /* an empty header with no data is a valid (empty) file */
    CHECK_OK(parse_raw("{}", 0));
    CHECK_OK(parse_raw("{\"__metadata__\":{}}", 0));
}

/* ---- malformed inputs: each is rejected with a message naming the problem ---- */

#define T1(dtype, shape, offs)                                                                               \
    "{\"x.weight\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}}"

static void test_bad_sizes(void) {
    CHECK_FAIL(parse_bytes("", 0), "bad.safetensors: file is empty");
    CHECK_FAIL(parse_bytes("\x02\0\0\0\0", 5), "too short");
    /* header length past the end of the file */
    uint8_t b[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    CHECK_FAIL(parse_bytes(b, 10), "runs past the end of the file");
    uint8_t huge[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    CHECK_FAIL(parse_bytes(huge, 10), "header length 18446744073709551615");
    uint8_t zero[8] = {0};
    CHECK_FAIL(parse_bytes(zero, 8), "too short for a JSON object");
    CHECK_FAIL(parse_raw("[1, 2]", 0), "does not start with '{'");
    /* a valid file cut short */
    size_t n;
    uint8_t *raw = make_raw(T1("F32", "[2, 3]", "[0, 24]"), 24, &n);
    CHECK_OK(parse_bytes(raw, n));
    CHECK_FAIL(parse_bytes(raw, n - 1), "truncated");
    CHECK_FAIL(parse_bytes(raw, 20), "runs past the end of the file");
    free(raw);
}

static void test_bad_json(void) {
    CHECK_FAIL(parse_raw("{\"x\": ", 0), "header JSON is invalid at byte");
    CHECK_FAIL(parse_raw("{} trailing", 0), "header JSON is invalid");
    CHECK_FAIL(parse_raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                         "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                         2),
               "duplicate");
    char nul[] = "{\"x\":1}";
    size_t n;
    uint8_t *raw = make_raw(nul, 0, &n);
    raw[8 + 3] = 0;
    CHECK_FAIL(parse_bytes(raw, n), "NUL byte at byte 11");
    free(raw);
    CHECK_FAIL(parse_raw("{\"x\": [1]}", 0), "tensor \"x\": entry must be an object");
    CHECK_FAIL(parse_raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4), "missing \"data_offsets\"");
    CHECK_FAIL(parse_raw("{\"x\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4), "missing \"dtype\"");
    CHECK_FAIL(
        parse_raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], \"extra\": 1}}", 4),
        "unexpected key \"extra\"");
    /* names with control characters stay on one line in messages */
    CHECK_FAIL(parse_raw("{\"a\\nb\": 1}", 0), "tensor \"a\\x0ab\"");
}

static void test_bad_entries(void) {
    CHECK_FAIL(parse_raw(T1("F32", "[5, 6]", "[0, 100]"), 100),
               "bad.safetensors: tensor \"x.weight\": data_offsets [0, 100] but F32 [5, 6] needs 120 bytes");
    CHECK_FAIL(parse_raw(T1("Q4_0", "[32]", "[0, 18]"), 18), "unknown dtype \"Q4_0\"");
    CHECK_FAIL(parse_raw(T1("F32", "[-1, 4]", "[0, 0]"), 0), "shape[0] is negative");
    CHECK_FAIL(parse_raw(T1("F32", "[4294967296, 4294967296]", "[0, 0]"), 0), "too large");
    CHECK_FAIL(parse_raw(T1("F32", "[4611686018427387904]", "[0, 0]"), 0), "too large");
    CHECK_FAIL(parse_raw(T1("F32", "[99999999999999999999]", "[0, 0]"), 0), "header JSON is invalid");
    CHECK_FAIL(parse_raw(T1("F32", "[1.5]", "[0, 4]"), 4), "shape[0] must be an integer");
    CHECK_FAIL(parse_raw(T1("F32", "\"4\"", "[0, 4]"), 4), "\"shape\" must be an array");
    CHECK_FAIL(parse_raw(T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0, 4]"), 4), "9 dimensions");
    CHECK_FAIL(parse_raw(T1("F32", "[1]", "[4, 0]"), 4), "end before they begin");
    CHECK_FAIL(parse_raw(T1("F32", "[1]", "[0, 4, 8]"), 8), "data_offsets\" must be an array [begin, end]");
    CHECK_FAIL(parse_raw(T1("F32", "[1]", "[-4, 0]"), 4), "negative");
    CHECK_FAIL(parse_raw(T1("F32", "[1]", "[0, \"4\"]"), 4), "must be integers");
    CHECK_FAIL(parse_raw(T1("F32", "[1]", "[0, 4]"), 3), "run past the end of the 3-byte data section");
    CHECK_FAIL(parse_raw(T1("F32", "[1]", "[1000000, 1000004]"), 4), "run past the end");
    CHECK_FAIL(parse_raw("{\"x\": {\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4),
               "\"dtype\" must be a string");
    /* zero-element tensors are fine */
    CHECK_OK(parse_raw(T1("F32", "[0, 7]", "[0, 0]"), 0));
    /* even when an earlier dimension is huge */
    CHECK_OK(parse_raw(T1("F32", "[4294967296, 4294967296, 0]", "[0, 0]"), 0));
}

static void test_bad_layout(void) {
    const char *overlap = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                          "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}";
    CHECK_FAIL(parse_raw(overlap, 6), "tensor \"b\": data_offsets [2, 6] overlap tensor \"a\"");
    const char *same = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}";
    CHECK_FAIL(parse_raw(same, 4), "overlap");
    const char *gap = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}";
    CHECK_FAIL(parse_raw(gap, 6), "gap: bytes [2, 4)");
    /* gap-free tensors but more data than they cover */
    CHECK_FAIL(parse_raw(T1("U8", "[4]", "[0, 4]"), 7), "data section is 7 bytes but the tensors cover 4");
    CHECK_FAIL(parse_raw("{}", 1), "1 trailing bytes");
}

static void test_bad_metadata(void) {
    CHECK_FAIL(parse_raw("{\"__metadata__\": {\"format\": 1}}", 0),
               "__metadata__ \"format\": value must be a string");
    CHECK_FAIL(parse_raw("{\"__metadata__\": {\"a\": {\"b\": \"c\"}}}", 0), "value must be a string");
    CHECK_FAIL(parse_raw("{\"__metadata__\": [\"pt\"]}", 0), "\"__metadata__\" must be an object");
    CHECK_FAIL(parse_raw("{\"__metadata__\": null}", 0), "\"__metadata__\" must be an object");
}

int main(void) {
    test_roundtrip();
    test_offset_order();
    test_bad_sizes();
    test_bad_json();
    test_bad_entries();
    test_bad_layout();
    test_bad_metadata();
    CHECK_DONE();
}
