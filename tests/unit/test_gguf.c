/* GGUF reader and writer: the two real files in ../shared/data, a round trip of every KV type, a rewrite of
 * stories260K.gguf through the writer, and one malformed file per kind of damage the reader must catch. */
#include "camelid/file.h"
#include "camelid/gguf.h"
#include "check.h"

#define STORIES "models/stories260K-gguf/stories260K.gguf"
#define TINY "models/llama-2-tiny-random-gguf/llama-2-tiny-random.gguf"

/* ---- a byte builder for hand-made files ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void b_bytes(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void b_u32(buf *b, uint32_t v) {
    b_bytes(b, &v, 4);
}
static void b_u64(buf *b, uint64_t v) {
    b_bytes(b, &v, 8);
}
static void b_str(buf *b, const char *s) {
    b_u64(b, strlen(s));
    b_bytes(b, s, strlen(s));
}
static void b_zeros(buf *b, size_t n) {
    for (size_t i = 0; i < n; i++) b_bytes(b, "", 1);
}
static void b_pad(buf *b, size_t a) {
    b_zeros(b, (a - b->n % a) % a);
}
static void b_header(buf *b, uint32_t version, int64_t n_t, int64_t n_kv) {
    b_bytes(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, (uint64_t)n_t);
    b_u64(b, (uint64_t)n_kv);
}
static void b_kv_u32(buf *b, const char *key, uint32_t v) {
    b_str(b, key);
    b_u32(b, CM_GGUF_UINT32);
    b_u32(b, v);
}
/* A tensor info with ne0-first dims. */
static void b_tensor(buf *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                     uint64_t off) {
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) b_u64(b, (uint64_t)ne[i]);
    b_u32(b, type);
    b_u64(b, off);
}

static cm_status parse_buf(buf *b) {
    cm_gguf *g = NULL;
    cm_status st = cm_gguf_parse(b->p, b->n, "bad.gguf", &g);
    cm_gguf_close(g);
    free(b->p);
    *b = (buf){0};
    return st;
}

/* ---- the real files ---- */

static void test_stories260k(void) {
    cm_gguf *g;
    CHECK_OK(cm_gguf_open(cm_test_shared(STORIES), &g));
    if (!g) return;
    CHECK(cm_gguf_version(g) == 3);
    CHECK(cm_gguf_tensor_count(g) == 48);
    CHECK(cm_gguf_kv_count(g) == 19);
    CHECK(cm_gguf_alignment(g) == 32);
    CHECK(strcmp(cm_gguf_kv_key(g, 0), "tokenizer.ggml.tokens") == 0);

    const cm_tensor *t = cm_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t && t->ndim == 2 && t->shape[0] == 512 && t->shape[1] == 64 && t->dtype == CM_DTYPE_F32);
    CHECK(t && t->nbytes == 512 * 64 * 4);
    CHECK(cm_gguf_tensor(g, 0) == t && cm_gguf_tensor_ggml_type(g, 0) == CM_GGML_F32);
    t = cm_gguf_find_tensor(g, "blk.4.ffn_down.weight");
    CHECK(t && t->ndim == 2 && t->shape[0] == 64 && t->shape[1] == 172);
    t = cm_gguf_find_tensor(g, "output_norm.weight");
    CHECK(t && t->ndim == 1 && t->shape[0] == 64);
    CHECK(cm_gguf_find_tensor(g, "nope") == NULL);
    /* output.weight is an explicit copy of the embedding */
    const cm_tensor *e = cm_gguf_find_tensor(g, "token_embd.weight"),
                    *o = cm_gguf_find_tensor(g, "output.weight");
    CHECK(e && o && e->nbytes == o->nbytes && memcmp(e->data, o->data, e->nbytes) == 0);

    uint32_t u;
    CHECK_OK(cm_gguf_get_u32(g, "llama.embedding_length", &u));
    CHECK(u == 64);
    CHECK_OK(cm_gguf_get_u32(g, "tokenizer.ggml.seperator_token_id", &u));
    CHECK(u == 0xFFFFFFFFu);
    int64_t i64;
    CHECK_OK(cm_gguf_get_i64(g, "llama.block_count", &i64));
    CHECK(i64 == 5);
    float f;
    CHECK_OK(cm_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f));
    CHECK(f == 1e-5f);
    const char *s;
    size_t n;
    CHECK_OK(cm_gguf_get_str(g, "general.architecture", &s, &n));
    CHECK(n == 5 && memcmp(s, "llama", 5) == 0);

    cm_gguf_type et;
    uint64_t count;
    CHECK_OK(cm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &count));
    CHECK(et == CM_GGUF_STRING && count == 512);
    CHECK_OK(cm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 1, &s, &n));
    CHECK(n == 3 && memcmp(s, "<s>", 3) == 0);
    CHECK_OK(cm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 2, &s, &n));
    CHECK(n == 4 && memcmp(s, "</s>", 4) == 0);
    CHECK_FAIL(cm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 512, &s, &n), "index 512");
    CHECK_OK(cm_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &count));
    CHECK(et == CM_GGUF_FLOAT32 && count == 512);
    const void *arr;
    CHECK_OK(cm_gguf_get_arr_data(g, "tokenizer.ggml.scores", &arr));
    CHECK_FAIL(cm_gguf_get_arr_data(g, "tokenizer.ggml.tokens", &arr), "strings");

    /* getters: missing keys and type mismatches */
    CHECK(cm_gguf_get_u32(g, "llama.nope", &u) == CM_ERR_NOT_FOUND);
    CHECK_FAIL(cm_gguf_get_u32(g, "llama.nope", &u), "llama.nope");
    CHECK_FAIL(cm_gguf_get_u32(g, "llama.nope", &u), "stories260K.gguf");
    CHECK_FAIL(cm_gguf_get_str(g, "llama.block_count", &s, &n), "expected STRING");
    CHECK_FAIL(cm_gguf_get_u32(g, "general.name", &u), "an integer");
    CHECK_FAIL(cm_gguf_get_f32(g, "llama.block_count", &f), "FLOAT32");
    bool bv;
    CHECK_FAIL(cm_gguf_get_bool(g, "llama.block_count", &bv), "BOOL");
    CHECK(cm_gguf_find(g, "general.name") == 5 && cm_gguf_kv_type(g, 5) == CM_GGUF_STRING);
    cm_gguf_close(g);

    /* the data blob starts at byte 14176 (README), seen through a caller-owned buffer */
    char *data;
    size_t size;
    CHECK_OK(cm_read_file(cm_test_shared(STORIES), 1 << 24, &data, &size));
    CHECK_OK(cm_gguf_parse(data, size, "stories260K.gguf", &g));
    if (g) {
        CHECK((const char *)cm_gguf_tensor(g, 0)->data - data == 14176);
        cm_gguf_close(g);
    }
    free(data);
}

static void test_tiny_random(void) {
    cm_gguf *g;
    CHECK_OK(cm_gguf_open(cm_test_shared(TINY), &g));
    if (!g) return;
    CHECK(cm_gguf_version(g) == 3 && cm_gguf_tensor_count(g) == 12 && cm_gguf_kv_count(g) == 18);
    const cm_tensor *t = cm_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t && t->dtype == CM_DTYPE_F16 && t->ndim == 2 && t->shape[0] == 32000 && t->shape[1] == 8);
    CHECK(t && t->nbytes == 32000 * 8 * 2);
    t = cm_gguf_find_tensor(g, "blk.0.attn_norm.weight");
    CHECK(t && t->dtype == CM_DTYPE_F32 && t->ndim == 1 && t->shape[0] == 8);
    t = cm_gguf_find_tensor(g, "blk.0.ffn_down.weight");
    CHECK(t && t->dtype == CM_DTYPE_F16 && t->shape[0] == 8 && t->shape[1] == 32);
    cm_gguf_type et;
    uint64_t count;
    CHECK_OK(cm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &count));
    CHECK(et == CM_GGUF_STRING && count == 32000);
    const char *s;
    size_t n;
    CHECK_OK(cm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 31999, &s, &n));
    CHECK(n > 0);
    uint32_t u;
    CHECK_OK(cm_gguf_get_u32(g, "general.file_type", &u));
    CHECK(u == 1);
    CHECK_OK(cm_gguf_get_str(g, "general.name", &s, &n));
    CHECK(n == 8 && memcmp(s, "LLaMA v2", 8) == 0);
    cm_gguf_close(g);
}

/* ---- writer ---- */

static int same_kv(const cm_gguf *a, const cm_gguf *b, size_t i) {
    const char *key = cm_gguf_kv_key(a, i);
    cm_gguf_type t = cm_gguf_kv_type(a, i);
    int64_t j = cm_gguf_find(b, key);
    if (j < 0 || cm_gguf_kv_type(b, (size_t)j) != t) return 0;
    switch (t) {
    case CM_GGUF_FLOAT32:
    case CM_GGUF_FLOAT64: {
        double x, y;
        return cm_gguf_get_f64(a, key, &x) == CM_OK && cm_gguf_get_f64(b, key, &y) == CM_OK && x == y;
    }
    case CM_GGUF_BOOL: {
        bool x, y;
        return cm_gguf_get_bool(a, key, &x) == CM_OK && cm_gguf_get_bool(b, key, &y) == CM_OK && x == y;
    }
    case CM_GGUF_STRING: {
        const char *x, *y;
        size_t nx, ny;
        return cm_gguf_get_str(a, key, &x, &nx) == CM_OK && cm_gguf_get_str(b, key, &y, &ny) == CM_OK &&
               nx == ny && memcmp(x, y, nx) == 0;
    }
    case CM_GGUF_ARRAY: {
        cm_gguf_type ex, ey;
        uint64_t cx, cy;
        if (cm_gguf_get_arr(a, key, &ex, &cx) || cm_gguf_get_arr(b, key, &ey, &cy) || ex != ey || cx != cy)
            return 0;
        if (ex == CM_GGUF_STRING) {
            for (uint64_t k = 0; k < cx; k++) {
                const char *x, *y;
                size_t nx, ny;
                if (cm_gguf_get_arr_str(a, key, k, &x, &nx) || cm_gguf_get_arr_str(b, key, k, &y, &ny) ||
                    nx != ny || memcmp(x, y, nx) != 0)
                    return 0;
            }
            return 1;
        }
        const void *x, *y;
        static const size_t esz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        return cm_gguf_get_arr_data(a, key, &x) == CM_OK && cm_gguf_get_arr_data(b, key, &y) == CM_OK &&
               (cx == 0 || memcmp(x, y, (size_t)cx * esz[ex]) == 0);
    }
    default: { /* integers: compare through int64 (fails alike for huge uint64) */
        int64_t x = 0, y = 0;
        cm_status sx = cm_gguf_get_i64(a, key, &x), sy = cm_gguf_get_i64(b, key, &y);
        return sx == sy && x == y;
    }
    }
}

static void test_roundtrip_all_types(void) {
    char *dir = cm_test_tmpdir();
    char *path = cm_path_join(dir, "all.gguf");
    cm_gguf_writer *w;
    CHECK_OK(cm_gguf_writer_open(path, &w));
    if (!w) return;
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint64_t u64 = 1ull << 40;
    int64_t i64 = -(1ll << 50);
    double f64 = 3.141592653589793;
    CHECK_OK(cm_gguf_writer_set_u32(w, "t.u32", 7)); /* replaced below, keeps its place */
    CHECK_OK(cm_gguf_writer_set_scalar(w, "t.u8", CM_GGUF_UINT8, &u8));
    CHECK_OK(cm_gguf_writer_set_scalar(w, "t.i8", CM_GGUF_INT8, &i8));
    CHECK_OK(cm_gguf_writer_set_scalar(w, "t.u16", CM_GGUF_UINT16, &u16));
    CHECK_OK(cm_gguf_writer_set_scalar(w, "t.i16", CM_GGUF_INT16, &i16));
    CHECK_OK(cm_gguf_writer_set_u32(w, "t.u32", 4000000000u));
    CHECK_OK(cm_gguf_writer_set_i32(w, "t.i32", -2000000000));
    CHECK_OK(cm_gguf_writer_set_f32(w, "t.f32", 0.1f));
    CHECK_OK(cm_gguf_writer_set_bool(w, "t.bool", true));
    CHECK_OK(cm_gguf_writer_set_str(w, "t.str", "hello, gguf"));
    CHECK_OK(cm_gguf_writer_set_scalar(w, "t.u64", CM_GGUF_UINT64, &u64));
    CHECK_OK(cm_gguf_writer_set_scalar(w, "t.i64", CM_GGUF_INT64, &i64));
    CHECK_OK(cm_gguf_writer_set_scalar(w, "t.f64", CM_GGUF_FLOAT64, &f64));
    int32_t ai[3] = {-1, 0, 1};
    float af[2] = {1.5f, -2.25f};
    bool ab[3] = {true, false, true};
    double ad[1] = {-1e300};
    const char *as[3] = {"a", "", "\xe2\x96\x81the"};
    CHECK_OK(cm_gguf_writer_set_arr(w, "t.arr_i32", CM_GGUF_INT32, ai, 3));
    CHECK_OK(cm_gguf_writer_set_arr(w, "t.arr_f32", CM_GGUF_FLOAT32, af, 2));
    CHECK_OK(cm_gguf_writer_set_arr(w, "t.arr_bool", CM_GGUF_BOOL, ab, 3));
    CHECK_OK(cm_gguf_writer_set_arr(w, "t.arr_f64", CM_GGUF_FLOAT64, ad, 1));
    CHECK_OK(cm_gguf_writer_set_arr(w, "t.arr_empty", CM_GGUF_UINT8, NULL, 0));
    CHECK_OK(cm_gguf_writer_set_arr_str(w, "t.arr_str", as, NULL, 3));
    CHECK_FAIL(cm_gguf_writer_set_arr(w, "t.bad", CM_GGUF_STRING, as, 3), "set_arr_str");
    CHECK_FAIL(cm_gguf_writer_set_i32(w, "general.alignment", 64), "UINT32");

    float t32[6] = {1, 2, 3, 4, 5, 6};
    uint16_t t16[5] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0};
    uint16_t tb16[64];
    for (int i = 0; i < 64; i++) tb16[i] = (uint16_t)(0x3f80 + i);
    CHECK_OK(cm_gguf_writer_add_tensor(w, "a.f32", CM_DTYPE_F32, 2, (int64_t[]){2, 3}, t32, sizeof t32));
    CHECK_OK(cm_gguf_writer_add_tensor(w, "b.f16", CM_DTYPE_F16, 1, (int64_t[]){5}, t16, sizeof t16));
    CHECK_OK(
        cm_gguf_writer_add_tensor(w, "c.bf16", CM_DTYPE_BF16, 3, (int64_t[]){2, 1, 32}, tb16, sizeof tb16));
    float *owned = malloc(4 * sizeof *owned);
    for (int i = 0; i < 4; i++) owned[i] = (float)-i;
    CHECK_OK(cm_gguf_writer_add_tensor_owned(w, "d.owned", CM_DTYPE_F32, 1, (int64_t[]){4}, owned, 16));
    CHECK_FAIL(cm_gguf_writer_add_tensor(w, "a.f32", CM_DTYPE_F32, 1, (int64_t[]){1}, t32, 4), "twice");
    CHECK_FAIL(cm_gguf_writer_add_tensor(w, "e", CM_DTYPE_F32, 1, (int64_t[]){3}, t32, 4), "needs 12");
    CHECK_FAIL(cm_gguf_writer_add_tensor_ggml(w, "q", CM_GGML_Q8_0, 1, (int64_t[]){33}, t32, 34), "block");
    CHECK_OK(cm_gguf_writer_commit(w));

    cm_gguf *g;
    CHECK_OK(cm_gguf_open(path, &g));
    if (g) {
        CHECK(cm_gguf_version(g) == 3 && cm_gguf_alignment(g) == 32);
        CHECK(cm_gguf_kv_count(g) == 18 && cm_gguf_tensor_count(g) == 4);
        CHECK(strcmp(cm_gguf_kv_key(g, 0), "t.u32") == 0 && cm_gguf_find(g, "general.alignment") < 0);
        int64_t v;
        uint32_t u;
        CHECK_OK(cm_gguf_get_i64(g, "t.u8", &v));
        CHECK(v == 200);
        CHECK_OK(cm_gguf_get_i64(g, "t.i8", &v));
        CHECK(v == -100);
        CHECK_OK(cm_gguf_get_i64(g, "t.u16", &v));
        CHECK(v == 60000);
        CHECK_OK(cm_gguf_get_i64(g, "t.i16", &v));
        CHECK(v == -30000);
        CHECK_OK(cm_gguf_get_u32(g, "t.u32", &u));
        CHECK(u == 4000000000u);
        CHECK_OK(cm_gguf_get_i64(g, "t.i32", &v));
        CHECK(v == -2000000000);
        CHECK_OK(cm_gguf_get_i64(g, "t.u64", &v));
        CHECK(v == 1ll << 40);
        CHECK_OK(cm_gguf_get_i64(g, "t.i64", &v));
        CHECK(v == -(1ll << 50));
        CHECK_OK(cm_gguf_get_u32(g, "t.u8", &u));
        CHECK(u == 200);
        CHECK_FAIL(cm_gguf_get_u32(g, "t.i8", &u), "does not fit");
        CHECK_FAIL(cm_gguf_get_u32(g, "t.u64", &u), "does not fit");
        float f;
        double d;
        CHECK_OK(cm_gguf_get_f32(g, "t.f32", &f));
        CHECK(f == 0.1f);
        CHECK_OK(cm_gguf_get_f64(g, "t.f64", &d));
        CHECK(d == f64);
        bool bv = false;
        CHECK_OK(cm_gguf_get_bool(g, "t.bool", &bv));
        CHECK(bv);
        const char *s;
        size_t n;
        CHECK_OK(cm_gguf_get_str(g, "t.str", &s, &n));
        CHECK(n == 11 && memcmp(s, "hello, gguf", 11) == 0);
        cm_gguf_type et;
        uint64_t cnt;
        const void *p;
        CHECK_OK(cm_gguf_get_arr(g, "t.arr_i32", &et, &cnt));
        CHECK(et == CM_GGUF_INT32 && cnt == 3);
        CHECK_OK(cm_gguf_get_arr_data(g, "t.arr_i32", &p));
        CHECK(memcmp(p, ai, sizeof ai) == 0);
        CHECK_OK(cm_gguf_get_arr_data(g, "t.arr_f32", &p));
        CHECK(memcmp(p, af, sizeof af) == 0);
        CHECK_OK(cm_gguf_get_arr_data(g, "t.arr_f64", &p));
        CHECK(memcmp(p, ad, sizeof ad) == 0);
        CHECK_OK(cm_gguf_get_arr_data(g, "t.arr_bool", &p));
        CHECK(memcmp(p, "\1\0\1", 3) == 0);
        CHECK_OK(cm_gguf_get_arr(g, "t.arr_empty", &et, &cnt));
        CHECK(et == CM_GGUF_UINT8 && cnt == 0);
        CHECK_OK(cm_gguf_get_arr(g, "t.arr_str", &et, &cnt));
        CHECK(et == CM_GGUF_STRING && cnt == 3);
        for (int i = 0; i < 3; i++) {
            CHECK_OK(cm_gguf_get_arr_str(g, "t.arr_str", (uint64_t)i, &s, &n));
            CHECK(n == strlen(as[i]) && memcmp(s, as[i], n) == 0);
        }
        const cm_tensor *t = cm_gguf_find_tensor(g, "a.f32");
        CHECK(t && t->dtype == CM_DTYPE_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
        CHECK(t && t->nbytes == sizeof t32 && memcmp(t->data, t32, sizeof t32) == 0);
        t = cm_gguf_find_tensor(g, "b.f16");
        CHECK(t && t->dtype == CM_DTYPE_F16 && t->ndim == 1 && memcmp(t->data, t16, sizeof t16) == 0);
        t = cm_gguf_find_tensor(g, "c.bf16");
        CHECK(t && t->dtype == CM_DTYPE_BF16 && t->ndim == 3 && t->shape[0] == 2 && t->shape[2] == 32);
        CHECK(t && memcmp(t->data, tb16, sizeof tb16) == 0);
        t = cm_gguf_find_tensor(g, "d.owned");
        CHECK(t && t->nbytes == 16 && ((const float *)t->data)[3] == -3.0f);
        for (size_t i = 0; i < cm_gguf_tensor_count(g); i++)
            CHECK(((uintptr_t)cm_gguf_tensor(g, i)->data & 31) == 0);
        cm_gguf_close(g);
    }

    /* an aborted writer leaves the old file alone; a custom alignment is honoured and recorded */
    CHECK_OK(cm_gguf_writer_open(path, &w));
    CHECK_OK(cm_gguf_writer_set_u32(w, "x", 1));
    cm_gguf_writer_abort(w);
    CHECK_OK(cm_gguf_open(path, &g));
    if (g) CHECK(cm_gguf_kv_count(g) == 18);
    cm_gguf_close(g);
    CHECK_OK(cm_gguf_writer_open(path, &w));
    CHECK_OK(cm_gguf_writer_set_u32(w, "general.alignment", 64));
    CHECK_OK(cm_gguf_writer_add_tensor(w, "a", CM_DTYPE_F32, 1, (int64_t[]){3}, t32, 12));
    CHECK_OK(cm_gguf_writer_add_tensor(w, "b", CM_DTYPE_F32, 1, (int64_t[]){3}, t32, 12));
    CHECK_OK(cm_gguf_writer_commit(w));
    CHECK_OK(cm_gguf_open(path, &g));
    if (g) {
        CHECK(cm_gguf_alignment(g) == 64);
        CHECK((const char *)cm_gguf_tensor(g, 1)->data - (const char *)cm_gguf_tensor(g, 0)->data == 64);
        cm_gguf_close(g);
    }
    remove(path);
    remove(dir);
    free(path);
    free(dir);
}

static void test_rewrite_stories(void) {
    char *dir = cm_test_tmpdir();
    char *path = cm_path_join(dir, "copy.gguf");
    cm_gguf *a, *b;
    CHECK_OK(cm_gguf_open(cm_test_shared(STORIES), &a));
    if (!a) return;
    cm_gguf_writer *w;
    CHECK_OK(cm_gguf_writer_open(path, &w));
    for (size_t i = 0; i < cm_gguf_kv_count(a); i++) CHECK_OK(cm_gguf_writer_copy_kv(w, a, i));
    for (size_t i = 0; i < cm_gguf_tensor_count(a); i++) {
        const cm_tensor *t = cm_gguf_tensor(a, i);
        CHECK_OK(cm_gguf_writer_add_tensor_ggml(w, t->name, cm_gguf_tensor_ggml_type(a, i), t->ndim, t->shape,
                                                t->data, t->nbytes));
    }
    CHECK_OK(cm_gguf_writer_commit(w));
    CHECK_OK(cm_gguf_open(path, &b));
    if (b) {
        CHECK(cm_gguf_kv_count(b) == 19 && cm_gguf_tensor_count(b) == 48);
        for (size_t i = 0; i < cm_gguf_kv_count(a); i++) {
            CHECK(strcmp(cm_gguf_kv_key(a, i), cm_gguf_kv_key(b, i)) == 0);
            CHECK(same_kv(a, b, i));
        }
        for (size_t i = 0; i < cm_gguf_tensor_count(a); i++) {
            const cm_tensor *x = cm_gguf_tensor(a, i), *y = cm_gguf_tensor(b, i);
            CHECK(strcmp(x->name, y->name) == 0 && x->ndim == y->ndim && x->nbytes == y->nbytes);
            CHECK(memcmp(x->shape, y->shape, sizeof x->shape) == 0);
            CHECK(memcmp(x->data, y->data, x->nbytes) == 0);
        }
        cm_gguf_close(b);
    }
    cm_gguf_close(a);
    /* llama.cpp lays files out the same way, so the copy is byte-identical to the original */
    char *x, *y;
    size_t nx, ny;
    CHECK_OK(cm_read_file(cm_test_shared(STORIES), 1 << 24, &x, &nx));
    CHECK_OK(cm_read_file(path, 1 << 24, &y, &ny));
    CHECK(nx == ny && memcmp(x, y, nx) == 0);
    free(x);
    free(y);
    remove(path);
    remove(dir);
    free(path);
    free(dir);
}

/* ---- malformed files ---- */

/* A small valid file: 2 KVs, 2 F32 tensors of 4 elements. */
static void b_valid(buf *b) {
    b_header(b, 3, 2, 2);
    b_kv_u32(b, "a", 1);
    b_str(b, "s");
    b_u32(b, CM_GGUF_STRING);
    b_str(b, "hi");
    b_tensor(b, "t0", 1, (int64_t[]){4}, CM_GGML_F32, 0);
    b_tensor(b, "t1", 2, (int64_t[]){2, 2}, CM_GGML_F32, 32);
    b_pad(b, 32);
    b_zeros(b, 48);
}

static void test_truncated(void) {
    buf b = {0};
    b_valid(&b);
    cm_gguf *g = NULL;
    CHECK_OK(cm_gguf_parse(b.p, b.n, "ok.gguf", &g));
    cm_gguf_close(g);
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        g = NULL;
        if (cm_gguf_parse(b.p, n, "cut.gguf", &g) == CM_OK || g) bad++;
        if (!strstr(cm_last_error(), "cut.gguf")) bad++;
    }
    CHECK(bad == 0);
    CHECK_FAIL(cm_gguf_parse(b.p, 30, "cut.gguf", &g),
               "KV count 2 is more than a file of 30 bytes could hold");
    CHECK_FAIL(cm_gguf_parse(b.p, 100, "cut.gguf", &g),
               "offset 98: tensor 1: file ends inside the tensor name length");
    CHECK_FAIL(cm_gguf_parse(b.p, b.n - 1, "cut.gguf", &g), "runs past the end of the file");
    CHECK_FAIL(cm_gguf_parse(NULL, 0, "empty.gguf", &g), "not a GGUF file");
    free(b.p);
}

static void test_bad_header(void) {
    buf b = {0};
    b_valid(&b);
    memcpy(b.p, "GGUX", 4);
    CHECK_FAIL(parse_buf(&b), "not a GGUF file");

    b_header(&b, 1, 0, 0);
    CHECK(parse_buf(&b) == CM_ERR_UNSUPPORTED);
    b_header(&b, 1, 0, 0);
    CHECK_FAIL(parse_buf(&b), "version 1");
    b_header(&b, 4, 0, 0);
    CHECK_FAIL(parse_buf(&b), "version 4");
    b_header(&b, 0x03000000u, 0, 0);
    CHECK_FAIL(parse_buf(&b), "big-endian");

    b_header(&b, 2, 0, 0); /* v2 with nothing in it is fine */
    CHECK_OK(parse_buf(&b));

    b_header(&b, 3, 0, INT64_MAX);
    CHECK_FAIL(parse_buf(&b), "KV count 9223372036854775807 is more than a file of 24 bytes could hold");
    b_header(&b, 3, 1ll << 40, 0);
    CHECK_FAIL(parse_buf(&b), "tensor count");
    b_header(&b, 3, -1, 0);
    CHECK_FAIL(parse_buf(&b), "tensor count -1 is negative");
    b_header(&b, 3, 0, -5);
    CHECK_FAIL(parse_buf(&b), "negative");
}

static void test_bad_kvs(void) {
    buf b = {0};
    /* string length past EOF, in a key and in a value */
    b_header(&b, 3, 0, 1);
    b_u64(&b, UINT64_MAX);
    b_zeros(&b, 16);
    CHECK_FAIL(parse_buf(&b), "bad.gguf: offset 24: key 0: key length 18446744073709551615 runs past the end "
                              "of the file (48 bytes)");
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, CM_GGUF_STRING);
    b_u64(&b, 1000);
    b_zeros(&b, 8);
    CHECK_FAIL(parse_buf(&b), "offset 37: key 0 'k': string length 1000 runs past the end of the file");

    b_header(&b, 3, 0, 2);
    b_kv_u32(&b, "dup", 1);
    b_kv_u32(&b, "dup", 2);
    CHECK_FAIL(parse_buf(&b), "key 1 'dup': duplicate key (first defined as key 0)");

    b_header(&b, 3, 0, 1);
    b_str(&b, "flag");
    b_u32(&b, CM_GGUF_BOOL);
    b_bytes(&b, "\2", 1);
    CHECK_FAIL(parse_buf(&b), "bool value 2 is not 0 or 1");
    b_header(&b, 3, 0, 1);
    b_str(&b, "flags");
    b_u32(&b, CM_GGUF_ARRAY);
    b_u32(&b, CM_GGUF_BOOL);
    b_u64(&b, 3);
    b_bytes(&b, "\1\0\7", 3);
    CHECK_FAIL(parse_buf(&b), "bool array element 2 is 7");

    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, CM_GGUF_INT32);
    b_u32(&b, 32);
    CHECK_FAIL(parse_buf(&b), "'general.alignment': has type INT32, expected UINT32");
    b_header(&b, 3, 0, 1);
    b_kv_u32(&b, "general.alignment", 48);
    CHECK_FAIL(parse_buf(&b), "alignment 48 is not a nonzero power of two");
    b_header(&b, 3, 0, 1);
    b_kv_u32(&b, "general.alignment", 0);
    CHECK_FAIL(parse_buf(&b), "power of two");
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.architecture");
    b_u32(&b, CM_GGUF_UINT32);
    b_u32(&b, 1);
    CHECK_FAIL(parse_buf(&b), "expected STRING");
    b_header(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, CM_GGUF_ARRAY);
    b_u32(&b, CM_GGUF_INT32);
    b_u64(&b, 0);
    CHECK_FAIL(parse_buf(&b), "expected an array of STRING");

    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 13);
    b_u32(&b, 0);
    CHECK_FAIL(parse_buf(&b), "value type 13 is not a GGUF type");
    b_header(&b, 3, 0, 1);
    b_str(&b, "nest");
    b_u32(&b, CM_GGUF_ARRAY);
    b_u32(&b, CM_GGUF_ARRAY);
    b_u64(&b, 1);
    b_zeros(&b, 12);
    CHECK_FAIL(parse_buf(&b), "nested arrays are not supported");
    b_header(&b, 3, 0, 1);
    b_str(&b, "big");
    b_u32(&b, CM_GGUF_ARRAY);
    b_u32(&b, CM_GGUF_UINT64);
    b_u64(&b, 1ull << 61);
    CHECK_FAIL(parse_buf(&b), "array of 2305843009213693952 UINT64 elements runs past the end");
    b_header(&b, 3, 0, 1);
    b_str(&b, "strs");
    b_u32(&b, CM_GGUF_ARRAY);
    b_u32(&b, CM_GGUF_STRING);
    b_u64(&b, 1ull << 62);
    CHECK_FAIL(parse_buf(&b), "array of 4611686018427387904 strings");
    b_header(&b, 3, 0, 1);
    b_u64(&b, 3);
    b_bytes(&b, "a\0b", 3);
    b_u32(&b, CM_GGUF_UINT8);
    b_zeros(&b, 1);
    CHECK_FAIL(parse_buf(&b), "NUL");
}

static void test_bad_tensors(void) {
    buf b = {0};
    b_header(&b, 3, 2, 0);
    b_tensor(&b, "w", 1, (int64_t[]){8}, CM_GGML_F32, 0);
    b_tensor(&b, "w", 1, (int64_t[]){8}, CM_GGML_F32, 32);
    b_pad(&b, 32);
    b_zeros(&b, 64);
    CHECK_FAIL(parse_buf(&b), "tensor 1 'w': duplicate tensor name");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, (int64_t[]){8}, CM_GGML_F32, 0);
    b_pad(&b, 32);
    b_zeros(&b, 31);
    CHECK_FAIL(parse_buf(&b),
               "tensor 0 'w': data (32 bytes at data offset 0, file offset 64) runs past the end");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, (int64_t[]){8}, CM_GGML_F32, UINT64_MAX - 31);
    b_pad(&b, 32);
    b_zeros(&b, 32);
    CHECK_FAIL(parse_buf(&b), "runs past the end");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, (int64_t[]){8}, CM_GGML_F32, 4);
    b_pad(&b, 32);
    b_zeros(&b, 64);
    CHECK_FAIL(parse_buf(&b), "data offset 4 is not a multiple of the alignment 32");

    b_header(&b, 3, 3, 0);
    b_tensor(&b, "a", 1, (int64_t[]){16}, CM_GGML_F32, 0);
    b_tensor(&b, "b", 1, (int64_t[]){8}, CM_GGML_F32, 64);
    b_tensor(&b, "c", 1, (int64_t[]){8}, CM_GGML_F32, 32);
    b_pad(&b, 32);
    b_zeros(&b, 96);
    CHECK_FAIL(parse_buf(&b), "tensor 'c' data [32, 64) overlaps tensor 'a' data starting at 0");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "neg", 2, (int64_t[]){4, -1}, CM_GGML_F32, 0);
    CHECK_FAIL(parse_buf(&b), "tensor 0 'neg': ne[1] = -1 is negative");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "odd", 1, (int64_t[]){8}, 99, 0);
    CHECK(parse_buf(&b) == CM_ERR_UNSUPPORTED);
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "odd", 1, (int64_t[]){8}, 99, 0);
    CHECK_FAIL(parse_buf(&b), "tensor 0 'odd': unknown ggml type 99");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "q", 2, (int64_t[]){33, 2}, CM_GGML_Q8_0, 0);
    CHECK_FAIL(parse_buf(&b), "Q8_0 type with ne [33,2]: ne[0] is not a multiple of the type's block size");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "big", 4, (int64_t[]){1ll << 20, 1ll << 20, 1ll << 20, 1ll << 20}, CM_GGML_F32, 0);
    CHECK_FAIL(parse_buf(&b), "overflows");

    b_header(&b, 3, 1, 0);
    b_str(&b, "dims");
    b_u32(&b, 9);
    b_zeros(&b, 100);
    CHECK_FAIL(parse_buf(&b), "has 9 dimensions, more than the 8 supported");

    /* quantized tensors get their byte size from the block table; Q8_0 has a cm dtype */
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "q", 2, (int64_t[]){64, 3}, CM_GGML_Q8_0, 0);
    b_pad(&b, 32);
    b_zeros(&b, 2 * 34 * 3);
    cm_gguf *g = NULL;
    CHECK_OK(cm_gguf_parse(b.p, b.n, "q.gguf", &g));
    if (g) {
        const cm_tensor *t = cm_gguf_tensor(g, 0);
        CHECK(t->nbytes == 204 && t->dtype == CM_DTYPE_Q8_0 && t->shape[0] == 3 && t->shape[1] == 64);
        CHECK(strcmp(cm_ggml_type_name(cm_gguf_tensor_ggml_type(g, 0)), "Q8_0") == 0);
        cm_gguf_close(g);
    }
    free(b.p);
    CHECK(strcmp(cm_ggml_type_name(CM_GGML_Q6_K), "Q6_K") == 0 && cm_ggml_type_name(4) == NULL);
    size_t be, bb;
    CHECK(cm_ggml_type_block(CM_GGML_Q8_1, &be, &bb) && be == 32 && bb == 36);
    CHECK(cm_ggml_type_block(CM_GGML_Q8_K, &be, &bb) && be == 256 && bb == 292);
}

int main(void) {
    test_stories260k();
    test_tiny_random();
    test_roundtrip_all_types();
    test_rewrite_stories();
    test_truncated();
    test_bad_header();
    test_bad_kvs();
    test_bad_tensors();
    CHECK_DONE();
}
