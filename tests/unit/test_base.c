#include "camelid/dtype.h"
#include "camelid/file.h"
#include "check.h"

static void test_f16_roundtrip(void) {
    /* every finite f16 converts to f32 and back unchanged */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        float f = cm_f16_to_f32((uint16_t)h);
        CHECK(cm_f32_to_f16(f) == (uint16_t)h);
    }
    CHECK(cm_f16_to_f32(0x3c00) == 1.0f);
    CHECK(cm_f16_to_f32(0xc000) == -2.0f);
    CHECK(cm_f32_to_f16(65520.0f) == 0x7c00);           /* overflows to inf */
    CHECK(cm_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00); /* tie goes to even */
    CHECK(cm_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);
    CHECK(cm_f32_to_f16(5.96046448e-08f) == 0x0001); /* smallest subnormal */
    CHECK(cm_f32_to_f16(2.98023224e-08f) == 0x0000); /* half of it: tie to even (0) */
}

static void test_bf16(void) {
    CHECK(cm_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(cm_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(cm_f32_to_bf16(1.00390625f) == 0x3f80); /* tie to even */
    CHECK(cm_f32_to_bf16(1.01171875f) == 0x3f82);
}

static void test_atomic_write(void) {
    char *dir = cm_test_tmpdir();
    char *path = cm_path_join(dir, "x.bin");
    CHECK_OK(cm_write_file_atomic(path, "hello", 5));
    char *data;
    size_t n;
    CHECK_OK(cm_read_file(path, 100, &data, &n));
    CHECK(n == 5 && memcmp(data, "hello", 5) == 0);
    free(data);
    CHECK_FAIL(cm_read_file(path, 3, &data, &n), "larger");
    cm_atomic_file *f;
    CHECK_OK(cm_atomic_open(path, &f));
    CHECK_OK(cm_atomic_write(f, "xx", 2));
    cm_atomic_abort(f); /* the old content survives an aborted write */
    CHECK_OK(cm_read_file(path, 100, &data, &n));
    CHECK(n == 5);
    free(data);
    cm_mmap *m;
    CHECK_FAIL(cm_mmap_open(dir, &m), "not a regular file");
    CHECK_FAIL(cm_mmap_open("/nonexistent/file", &m), "/nonexistent/file");
    remove(path);
    remove(dir);
    free(path);
    free(dir);
}

int main(void) {
    test_f16_roundtrip();
    test_bf16();
    test_atomic_write();
    CHECK_DONE();
}
