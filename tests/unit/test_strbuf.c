/* cm_strbuf: appends, printf, growth across many reallocations, take/free and the empty buffer. */
#include "camelid/strbuf.h"

#include "check.h"

int main(void) {
    cm_strbuf b = {0};
    char *s = cm_strbuf_take(&b);
    CHECK(s && s[0] == '\0'); /* nothing appended: an empty string, not NULL (NULL means out of memory) */
    free(s);

    cm_strbuf_puts(&b, "abc");
    cm_strbuf_append(&b, "defgh", 2);
    cm_strbuf_append(&b, "", 0);
    cm_strbuf_printf(&b, "|%d|%s|%.2f", 42, "x", 0.5);
    CHECK(b.len == strlen(b.buf));
    CHECK(!strcmp(b.buf, "abcde|42|x|0.50"));

    /* grow through many reallocations; the text stays exact and NUL-terminated */
    char want[20000];
    size_t n = strlen(b.buf);
    memcpy(want, b.buf, n);
    for (int i = 0; n + 8 < sizeof want; i++) {
        char piece[8];
        int k = snprintf(piece, sizeof piece, "%d,", i % 1000);
        if (i % 2) cm_strbuf_printf(&b, "%d,", i % 1000);
        else cm_strbuf_append(&b, piece, (size_t)k);
        memcpy(want + n, piece, (size_t)k);
        n += (size_t)k;
    }
    want[n] = '\0';
    CHECK(!b.failed && b.len == n && b.cap > n);
    CHECK(!strcmp(b.buf, want));
    s = cm_strbuf_take(&b);
    CHECK(s && !strcmp(s, want));
    CHECK(!b.buf && b.len == 0 && b.cap == 0);
    free(s);

    /* a failed buffer stays failed, gives NULL and frees what it had */
    cm_strbuf_puts(&b, "kept?");
    b.failed = true;
    cm_strbuf_puts(&b, "more");
    CHECK(b.len == 5);
    CHECK(cm_strbuf_take(&b) == NULL);
    CHECK(!b.buf && !b.failed);

    cm_strbuf_printf(&b, "%s", "x");
    cm_strbuf_free(&b);
    CHECK(!b.buf && b.len == 0);
    CHECK_DONE();
}
