/* Token shards (see include/camelid/shards.h): the reader maps every shard of a split and checks it against
 * the manifest; the writer streams documents into shards in a temporary folder and publishes them on commit.
 * All integers on disk are little-endian. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "camelid/file.h"
#include "camelid/shards.h"
#include "train/shards_internal.h"

static const char *const split_names[2] = {"train", "val"};

int cm_shards_split_index(const char *split) {
    if (split && strcmp(split, "train") == 0) return 0;
    if (split && strcmp(split, "val") == 0) return 1;
    return -1;
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) {
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v) {
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* ---------------------------------------------------------------------------------------------------------
 * Manifest */

void cm_shards_manifest_free(cm_shards_manifest *m) {
    if (!m) return;
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < m->split[s].n; i++) free(m->split[s].shards[i].file);
        free(m->split[s].shards);
    }
    free(m->tokenizer);
    memset(m, 0, sizeof *m);
}

/* An integer member in [lo, hi]. */
static cm_status int_member(const json_t *o, const char *key, int64_t lo, int64_t hi, const char *name,
                            const char *where, int64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return cm_error(CM_ERR_FORMAT, "%s: %s\"%s\" should be an integer in %lld..%lld", name, where, key,
                        (long long)lo, (long long)hi);
    *out = (int64_t)json_integer_value(v);
    return CM_OK;
}

static bool plain_name(const char *s, size_t n) {
    if (n == 0 || n > CM_SHARDS_MAX_NAME || strlen(s) != n) return false;
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    return !strchr(s, '/') && !strchr(s, '\\');
}

static cm_status parse_split(const json_t *o, const char *name, const char *split, cm_shards_split *out) {
    char where[32];
    snprintf(where, sizeof where, "%s.", split);
    if (!json_is_object(o)) return cm_error(CM_ERR_FORMAT, "%s: \"%s\" should be an object", name, split);
    json_t *list = json_object_get(o, "shards");
    if (!json_is_array(list))
        return cm_error(CM_ERR_FORMAT, "%s: %s\"shards\" should be a list", name, where);
    size_t n = json_array_size(list);
    if (n > CM_SHARDS_MAX_FILES)
        return cm_error(CM_ERR_FORMAT, "%s: %s\"shards\" lists %zu files, more than the %d allowed", name, where,
                        n, CM_SHARDS_MAX_FILES);
    int64_t total = 0;
    CM_TRY(int_member(o, "tokens", 0, INT64_MAX, name, where, &total));
    out->shards = calloc(n ? n : 1, sizeof *out->shards);
    if (!out->shards) return cm_error(CM_ERR_NOMEM, "%s: out of memory", name);
    out->present = true;
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i);
        json_t *f = json_object_get(e, "file");
        char w[64];
        snprintf(w, sizeof w, "%s.shards[%zu].", split, i);
        if (!json_is_object(e) || !json_is_string(f) || !plain_name(json_string_value(f), json_string_length(f)))
            return cm_error(CM_ERR_FORMAT, "%s: %s\"file\" should be a plain file name in the folder", name, w);
        int64_t tokens = 0;
        CM_TRY(int_member(e, "tokens", 0, INT64_MAX, name, w, &tokens));
        if (__builtin_add_overflow(sum, tokens, &sum))
            return cm_error(CM_ERR_FORMAT, "%s: %s\"tokens\" overflows", name, where);
        if (!(out->shards[i].file = strdup(json_string_value(f)))) return cm_error(CM_ERR_NOMEM, "%s: out of memory", name);
        out->shards[i].tokens = tokens;
        out->n = (int)i + 1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(out->shards[j].file, out->shards[i].file) == 0)
                return cm_error(CM_ERR_FORMAT, "%s: %s\"%s\" is listed twice", name, where, out->shards[i].file);
    }
    if (sum != total)
        return cm_error(CM_ERR_FORMAT, "%s: %s\"tokens\" is %lld but its shards add up to %lld", name, where,
                        (long long)total, (long long)sum);
    out->tokens = total;
    return CM_OK;
}

cm_status cm_shards_manifest_parse(const char *json, size_t len, const char *name, cm_shards_manifest *m) {
    memset(m, 0, sizeof *m);
    if (!json && len) return cm_error(CM_ERR_ARG, "%s: the buffer is NULL", name);
    if (len > CM_SHARDS_MAX_MANIFEST)
        return cm_error(CM_ERR_FORMAT, "%s: %zu bytes is too large for a manifest", name, len);
    json_error_t err;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return cm_error(CM_ERR_FORMAT, "%s:%d: invalid JSON: %s", name, err.line > 0 ? err.line : 1, err.text);
    cm_status st = CM_OK;
    int64_t v = 0;
    const char *fmt = json_string_value(json_object_get(root, "format"));
    json_t *tok = json_object_get(root, "tokenizer");
    const char *dtype = json_string_value(json_object_get(root, "dtype"));
    if (!json_is_object(root)) {
        st = cm_error(CM_ERR_FORMAT, "%s: expected a JSON object", name);
    } else if (!fmt || strcmp(fmt, "camelid-token-shards") != 0) {
        st = cm_error(CM_ERR_FORMAT, "%s: \"format\" should be \"camelid-token-shards\"", name);
    } else if ((st = int_member(root, "version", 0, INT32_MAX, name, "", &v))) {
    } else if (v != CM_SHARDS_VERSION) {
        st = cm_error(CM_ERR_UNSUPPORTED, "%s: version %lld (only %d is supported)", name, (long long)v,
                      CM_SHARDS_VERSION);
    } else if ((st = int_member(root, "vocab_size", 1, INT32_MAX, name, "", &m->vocab_size))) {
    } else if ((st = int_member(root, "bos_id", 0, m->vocab_size - 1, name, "", &v))) {
    } else if ((m->bos_id = (int32_t)v, !dtype || (strcmp(dtype, "uint16") && strcmp(dtype, "uint32")))) {
        st = cm_error(CM_ERR_FORMAT, "%s: \"dtype\" should be \"uint16\" or \"uint32\"", name);
    } else if ((m->dtype = dtype[4] == '1' ? 2 : 4) == 2 && m->vocab_size > 65536) {
        st = cm_error(CM_ERR_FORMAT, "%s: dtype uint16 cannot hold a vocabulary of %lld", name,
                      (long long)m->vocab_size);
    } else if (!json_is_string(tok)) {
        st = cm_error(CM_ERR_FORMAT, "%s: \"tokenizer\" should be a string (the tokenizer's path)", name);
    } else if (!(m->tokenizer = strdup(json_string_value(tok)))) {
        st = cm_error(CM_ERR_NOMEM, "%s: out of memory", name);
    } else if ((st = int_member(root, "documents", 0, INT64_MAX, name, "", &m->documents))) {
    } else {
        for (int s = 0; s < 2 && !st; s++) {
            json_t *o = json_object_get(root, split_names[s]);
            if (o && !json_is_null(o)) st = parse_split(o, name, split_names[s], &m->split[s]);
        }
        for (int i = 0; i < m->split[0].n && !st; i++) /* a file in both splits would be read twice */
            for (int j = 0; j < m->split[1].n && !st; j++)
                if (strcmp(m->split[0].shards[i].file, m->split[1].shards[j].file) == 0)
                    st = cm_error(CM_ERR_FORMAT, "%s: \"%s\" is in both splits", name, m->split[0].shards[i].file);
    }
    json_decref(root);
    if (st) cm_shards_manifest_free(m);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------
 * One shard */

cm_status cm_shards_check(const uint8_t *data, size_t size, const char *name, int dtype, int64_t expect_tokens,
                          int64_t vocab_size, int64_t *count, uint32_t *max_token) {
    *count = 0;
    *max_token = 0;
    if (size < CM_SHARDS_HEADER)
        return cm_error(CM_ERR_FORMAT, "%s: truncated: %zu bytes, shorter than the %d-byte header", name, size,
                        CM_SHARDS_HEADER);
    if (memcmp(data, CM_SHARDS_MAGIC, 8) != 0)
        return cm_error(CM_ERR_FORMAT, "%s: not a camelid token shard (the magic is not \"CMTOKSHD\")", name);
    uint32_t version = rd32(data + 8), dt = rd32(data + 12);
    uint64_t n = rd64(data + 16), reserved = rd64(data + 24);
    if (version != CM_SHARDS_VERSION)
        return cm_error(CM_ERR_UNSUPPORTED, "%s: shard version %u (only %d is supported)", name, version,
                        CM_SHARDS_VERSION);
    if (dt != 2 && dt != 4) return cm_error(CM_ERR_FORMAT, "%s: dtype %u (expected 2 or 4 bytes per token)", name, dt);
    if (dtype && (int)dt != dtype)
        return cm_error(CM_ERR_FORMAT, "%s: %u bytes per token, but manifest.json says %d", name, dt, dtype);
    if (reserved != 0) return cm_error(CM_ERR_FORMAT, "%s: the header's reserved field is not 0", name);
    if (expect_tokens >= 0 && n != (uint64_t)expect_tokens)
        return cm_error(CM_ERR_FORMAT, "%s: the header counts %llu tokens but manifest.json says %lld", name,
                        (unsigned long long)n, (long long)expect_tokens);
    if (n > (uint64_t)INT64_MAX / 4 || (size - CM_SHARDS_HEADER) / dt != n || (size - CM_SHARDS_HEADER) % dt)
        return cm_error(CM_ERR_FORMAT,
                        "%s: %zu bytes, but a header and %llu tokens of %u bytes take %llu (truncated or padded)",
                        name, size, (unsigned long long)n, dt,
                        n > (uint64_t)INT64_MAX / 4 ? 0ull : (unsigned long long)(CM_SHARDS_HEADER + n * dt));
    const uint8_t *p = data + CM_SHARDS_HEADER;
    uint32_t mx = 0;
    if (dt == 2) {
        for (uint64_t i = 0; i < n; i++) {
            uint32_t v = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
            mx = v > mx ? v : mx;
        }
    } else {
        for (uint64_t i = 0; i < n; i++) {
            uint32_t v = rd32(p + 4 * i);
            mx = v > mx ? v : mx;
        }
    }
    if (n > 0 && (int64_t)mx >= vocab_size) {
        uint64_t at = 0; /* find the first offender, for the message */
        while (at < n && (int64_t)(dt == 2 ? (uint32_t)p[2 * at] | (uint32_t)p[2 * at + 1] << 8 : rd32(p + 4 * at)) <
                             vocab_size)
            at++;
        return cm_error(CM_ERR_FORMAT, "%s: token %u at position %llu is not below the vocabulary size %lld", name,
                        dt == 2 ? (uint32_t)p[2 * at] | (uint32_t)p[2 * at + 1] << 8 : rd32(p + 4 * at),
                        (unsigned long long)at, (long long)vocab_size);
    }
    *count = (int64_t)n;
    *max_token = mx;
    return CM_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * Reader */

struct cm_shards {
    int n;
    cm_mmap **maps;
    int64_t *start; /* n + 1: where each shard starts in the split's stream */
    int dtype;
    int64_t vocab_size;
    int32_t bos;
    uint32_t max_token;
    char *tokenizer;
};

void cm_shards_close(cm_shards *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) cm_mmap_close(s->maps[i]);
    free(s->maps);
    free(s->start);
    free(s->tokenizer);
    free(s);
}

cm_status cm_shards_open(const char *dir, const char *split, cm_shards **out) {
    *out = NULL;
    int k = cm_shards_split_index(split);
    if (k < 0) return cm_error(CM_ERR_ARG, "%s: unknown split \"%s\" (expected train or val)", dir, split ? split : "");
    char *mpath = cm_path_join(dir, "manifest.json");
    if (!mpath) return cm_error(CM_ERR_NOMEM, "%s: out of memory", dir);
    char *json = NULL;
    size_t len;
    cm_shards_manifest m;
    memset(&m, 0, sizeof m);
    cm_shards *s = NULL;
    cm_status st = cm_read_file(mpath, CM_SHARDS_MAX_MANIFEST, &json, &len);
    if (st) goto done;
    if ((st = cm_shards_manifest_parse(json, len, mpath, &m))) goto done;
    cm_shards_split *sp = &m.split[k];
    if (!sp->present || sp->n == 0 || sp->tokens == 0) {
        st = cm_error(CM_ERR_NOT_FOUND, "%s: the data set has no %s tokens", mpath, split);
        goto done;
    }
    s = calloc(1, sizeof *s);
    if (!s || !(s->maps = calloc((size_t)sp->n, sizeof *s->maps)) ||
        !(s->start = calloc((size_t)sp->n + 1, sizeof *s->start))) {
        st = cm_error(CM_ERR_NOMEM, "%s: out of memory", mpath);
        goto done;
    }
    s->dtype = m.dtype;
    s->vocab_size = m.vocab_size;
    s->bos = m.bos_id;
    s->tokenizer = m.tokenizer;
    m.tokenizer = NULL;
    for (int i = 0; i < sp->n; i++) {
        char *path = cm_path_join(dir, sp->shards[i].file);
        if (!path) {
            st = cm_error(CM_ERR_NOMEM, "%s: out of memory", dir);
            goto done;
        }
        st = cm_mmap_open(path, &s->maps[i]);
        if (!st) {
            s->n = i + 1;
            int64_t count;
            uint32_t mx;
            st = cm_shards_check(s->maps[i]->data, s->maps[i]->size, path, m.dtype, sp->shards[i].tokens,
                                 m.vocab_size, &count, &mx);
            if (count > 0 && mx > s->max_token) s->max_token = mx;
            s->start[i + 1] = s->start[i] + count;
        }
        free(path);
        if (st) goto done;
    }
done:
    free(mpath);
    free(json);
    cm_shards_manifest_free(&m);
    if (st) {
        cm_shards_close(s);
        return st;
    }
    *out = s;
    return CM_OK;
}

int64_t cm_shards_n_tokens(const cm_shards *s) {
    return s->start[s->n];
}

uint32_t cm_shards_max_token(const cm_shards *s) {
    return s->max_token;
}

int64_t cm_shards_vocab_size(const cm_shards *s) {
    return s->vocab_size;
}

int32_t cm_shards_bos(const cm_shards *s) {
    return s->bos;
}

const char *cm_shards_tokenizer(const cm_shards *s) {
    return s->tokenizer;
}

cm_status cm_shards_read(const cm_shards *s, int64_t offset, int n, int32_t *out) {
    int64_t total = s->start[s->n];
    if (offset < 0 || n < 0 || offset > total || n > total - offset)
        return cm_error(CM_ERR_ARG, "shards: tokens [%lld, %lld) are outside the split's %lld", (long long)offset,
                        (long long)offset + n, (long long)total);
    /* the last shard starting at or before offset */
    int lo = 0, hi = s->n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->start[mid] <= offset)
            lo = mid;
        else
            hi = mid - 1;
    }
    for (int i = lo, done = 0; done < n; i++) {
        int64_t at = offset + done - s->start[i];
        int64_t take = s->start[i + 1] - s->start[i] - at;
        if (take > n - done) take = n - done;
        const uint8_t *p = s->maps[i]->data + CM_SHARDS_HEADER + (size_t)at * (size_t)s->dtype;
        if (s->dtype == 2)
            for (int64_t j = 0; j < take; j++) out[done + j] = (int32_t)((uint32_t)p[2 * j] | (uint32_t)p[2 * j + 1] << 8);
        else
            for (int64_t j = 0; j < take; j++) out[done + j] = (int32_t)rd32(p + 4 * j);
        done += (int)take;
    }
    return CM_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * Writer */

#define WBUF_TOKENS (1 << 16)

typedef struct {
    char *path;    /* in the temporary folder */
    int64_t count; /* tokens */
} wshard;

struct cm_shards_writer {
    char *dir, *tmp, *tokenizer;
    int64_t vocab_size, cap;
    int32_t bos;
    int dtype;
    int64_t documents, total;
    wshard *stream; /* the stream's shards, in order */
    int n_stream, cap_stream;
    int fd; /* the open (last) stream shard, -1 if none */
    uint8_t *buf;
    size_t buf_n; /* bytes */
};

static cm_status write_all(int fd, const void *data, size_t n, const char *path) {
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return cm_error(CM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        p += k;
        n -= (size_t)k;
    }
    return CM_OK;
}

static cm_status pwrite_all(int fd, const void *data, size_t n, off_t off, const char *path) {
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return cm_error(CM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        p += k;
        n -= (size_t)k;
        off += k;
    }
    return CM_OK;
}

static void header(uint8_t h[CM_SHARDS_HEADER], int dtype, int64_t count) {
    memcpy(h, CM_SHARDS_MAGIC, 8);
    wr32(h + 8, CM_SHARDS_VERSION);
    wr32(h + 12, (uint32_t)dtype);
    wr64(h + 16, (uint64_t)count);
    wr64(h + 24, 0);
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = cm_path_join(dir, e->d_name);
            if (p) unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void writer_free(cm_shards_writer *w) {
    if (w->fd >= 0) close(w->fd);
    for (int i = 0; i < w->n_stream; i++) free(w->stream[i].path);
    free(w->stream);
    free(w->buf);
    free(w->dir);
    free(w->tmp);
    free(w->tokenizer);
    free(w);
}

void cm_shards_writer_abort(cm_shards_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    if (w->tmp) remove_tree(w->tmp);
    writer_free(w);
}

cm_status cm_shards_writer_open(const char *dir, const cm_shards_writer_opts *o, cm_shards_writer **out) {
    *out = NULL;
    if (!dir || !o || !o->tokenizer) return cm_error(CM_ERR_ARG, "shards: bad writer options");
    if (o->vocab_size < 1 || o->vocab_size > INT32_MAX)
        return cm_error(CM_ERR_ARG, "%s: vocabulary size %lld is outside 1..%d", dir, (long long)o->vocab_size, INT32_MAX);
    if (o->bos_id < 0 || o->bos_id >= o->vocab_size)
        return cm_error(CM_ERR_ARG, "%s: BOS id %d is outside the vocabulary", dir, o->bos_id);
    if (o->shard_tokens < 0) return cm_error(CM_ERR_ARG, "%s: shard size %lld", dir, (long long)o->shard_tokens);
    CM_TRY(cm_mkdir_p(dir));
    cm_shards_writer *w = calloc(1, sizeof *w);
    if (!w) return cm_error(CM_ERR_NOMEM, "%s: out of memory", dir);
    w->fd = -1;
    w->vocab_size = o->vocab_size;
    w->bos = o->bos_id;
    w->dtype = o->vocab_size <= 65536 ? 2 : 4;
    w->cap = o->shard_tokens ? o->shard_tokens : CM_SHARDS_DEFAULT_SHARD_TOKENS;
    w->dir = strdup(dir);
    w->tokenizer = strdup(o->tokenizer);
    w->tmp = cm_path_join(dir, ".shards-tmp-XXXXXX");
    w->buf = malloc((size_t)WBUF_TOKENS * 4);
    if (!w->dir || !w->tokenizer || !w->tmp || !w->buf) {
        writer_free(w);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", dir);
    }
    if (!mkdtemp(w->tmp)) {
        cm_status st = cm_error(CM_ERR_IO, "%s: cannot create a temporary folder: %s", dir, strerror(errno));
        free(w->tmp);
        w->tmp = NULL;
        writer_free(w);
        return st;
    }
    *out = w;
    return CM_OK;
}

static cm_status flush_buf(cm_shards_writer *w) {
    if (w->buf_n == 0) return CM_OK;
    CM_TRY(write_all(w->fd, w->buf, w->buf_n, w->stream[w->n_stream - 1].path));
    w->buf_n = 0;
    return CM_OK;
}

/* Write the count into the open shard's header, sync and close it. */
static cm_status close_shard(cm_shards_writer *w) {
    if (w->fd < 0) return CM_OK;
    wshard *sh = &w->stream[w->n_stream - 1];
    uint8_t h[CM_SHARDS_HEADER];
    header(h, w->dtype, sh->count);
    cm_status st = flush_buf(w);
    if (!st) st = pwrite_all(w->fd, h, sizeof h, 0, sh->path);
    if (!st && fsync(w->fd) != 0) st = cm_error(CM_ERR_IO, "%s: fsync failed: %s", sh->path, strerror(errno));
    if (close(w->fd) != 0 && !st) st = cm_error(CM_ERR_IO, "%s: close failed: %s", sh->path, strerror(errno));
    w->fd = -1;
    return st;
}

static cm_status open_shard(cm_shards_writer *w) {
    if (w->n_stream == w->cap_stream) {
        int cap = w->cap_stream ? 2 * w->cap_stream : 8;
        wshard *s = realloc(w->stream, (size_t)cap * sizeof *s);
        if (!s) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->dir);
        w->stream = s;
        w->cap_stream = cap;
    }
    char name[32];
    snprintf(name, sizeof name, "stream_%05d.bin", w->n_stream);
    char *path = cm_path_join(w->tmp, name);
    if (!path) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->dir);
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0) {
        cm_status st = cm_error(CM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        free(path);
        return st;
    }
    w->stream[w->n_stream++] = (wshard){.path = path, .count = 0};
    w->fd = fd;
    uint8_t h[CM_SHARDS_HEADER];
    header(h, w->dtype, 0); /* the count is written when the shard is closed */
    return write_all(fd, h, sizeof h, path);
}

static cm_status put_token(cm_shards_writer *w, uint32_t v) {
    if (w->fd < 0 || w->stream[w->n_stream - 1].count == w->cap) {
        CM_TRY(close_shard(w));
        CM_TRY(open_shard(w));
    }
    if (w->buf_n + 4 > (size_t)WBUF_TOKENS * 4) CM_TRY(flush_buf(w));
    if (w->dtype == 2) {
        w->buf[w->buf_n++] = (uint8_t)v;
        w->buf[w->buf_n++] = (uint8_t)(v >> 8);
    } else {
        wr32(w->buf + w->buf_n, v);
        w->buf_n += 4;
    }
    w->stream[w->n_stream - 1].count++;
    w->total++;
    return CM_OK;
}

cm_status cm_shards_writer_begin_document(cm_shards_writer *w) {
    CM_TRY(put_token(w, (uint32_t)w->bos));
    w->documents++;
    return CM_OK;
}

cm_status cm_shards_writer_append(cm_shards_writer *w, const int32_t *tokens, size_t n) {
    if (!tokens && n) return cm_error(CM_ERR_ARG, "%s: tokens is NULL", w->dir);
    if (w->documents == 0) return cm_error(CM_ERR_ARG, "%s: tokens appended before any document began", w->dir);
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= w->vocab_size)
            return cm_error(CM_ERR_ARG, "%s: document %lld: token %d is outside the vocabulary (0..%lld)", w->dir,
                            (long long)w->documents, tokens[i], (long long)w->vocab_size - 1);
    for (size_t i = 0; i < n; i++) CM_TRY(put_token(w, (uint32_t)tokens[i]));
    return CM_OK;
}

cm_status cm_shards_writer_add_document(cm_shards_writer *w, const int32_t *tokens, size_t n) {
    if (!tokens && n) return cm_error(CM_ERR_ARG, "%s: tokens is NULL", w->dir);
    for (size_t i = 0; i < n; i++) /* checked first: a refused document leaves nothing behind */
        if (tokens[i] < 0 || tokens[i] >= w->vocab_size)
            return cm_error(CM_ERR_ARG, "%s: document %lld: token %d at position %zu is outside the vocabulary (0..%lld)",
                            w->dir, (long long)w->documents + 1, tokens[i], i, (long long)w->vocab_size - 1);
    CM_TRY(cm_shards_writer_begin_document(w));
    return cm_shards_writer_append(w, tokens, n);
}

int64_t cm_shards_writer_n_tokens(const cm_shards_writer *w) {
    return w->total;
}

/* Copy tokens [from, w->total) of the stream into val shards in the temporary folder. */
static cm_status write_val(cm_shards_writer *w, int64_t from, char ***names, int *n_names, int64_t **counts) {
    int64_t v = w->total - from;
    int n = (int)((v + w->cap - 1) / w->cap);
    *names = calloc((size_t)n + 1, sizeof **names);
    *counts = calloc((size_t)n + 1, sizeof **counts);
    if (!*names || !*counts) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->dir);
    int64_t pos = from, start = 0;
    int si = 0;
    while (si < w->n_stream && start + w->stream[si].count <= pos) start += w->stream[si++].count;
    cm_status st = CM_OK;
    int in = -1;
    for (int k = 0; k < n && !st; k++) {
        char name[32];
        snprintf(name, sizeof name, "val_%05d.bin", k);
        char *path = cm_path_join(w->tmp, name);
        if (!path) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->dir);
        (*names)[k] = path;
        *n_names = k + 1;
        int64_t want = v - (int64_t)k * w->cap < w->cap ? v - (int64_t)k * w->cap : w->cap;
        (*counts)[k] = want;
        int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) return cm_error(CM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        uint8_t h[CM_SHARDS_HEADER];
        header(h, w->dtype, want);
        st = write_all(fd, h, sizeof h, path);
        while (!st && want > 0) {
            if (in < 0 && (in = open(w->stream[si].path, O_RDONLY | O_CLOEXEC)) < 0) {
                st = cm_error(CM_ERR_IO, "%s: cannot open: %s", w->stream[si].path, strerror(errno));
                break;
            }
            int64_t at = pos - start, left = w->stream[si].count - at;
            int64_t take = left < want ? left : want;
            if (take > WBUF_TOKENS) take = WBUF_TOKENS;
            size_t bytes = (size_t)take * (size_t)w->dtype;
            ssize_t got = pread(in, w->buf, bytes, CM_SHARDS_HEADER + (off_t)at * w->dtype);
            if (got != (ssize_t)bytes) {
                st = cm_error(CM_ERR_IO, "%s: read failed", w->stream[si].path);
                break;
            }
            st = write_all(fd, w->buf, bytes, path);
            pos += take;
            want -= take;
            if (pos == start + w->stream[si].count) {
                close(in);
                in = -1;
                start += w->stream[si++].count;
            }
        }
        if (!st && fsync(fd) != 0) st = cm_error(CM_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
        if (close(fd) != 0 && !st) st = cm_error(CM_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    }
    if (in >= 0) close(in);
    return st;
}

static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static json_t *split_json(char **names, const int64_t *counts, int n, int64_t tokens) {
    json_t *o = json_object(), *list = json_array();
    json_object_set_new(o, "tokens", json_integer(tokens));
    for (int i = 0; i < n; i++) {
        json_t *e = json_object();
        const char *base = strrchr(names[i], '/') ? strrchr(names[i], '/') + 1 : names[i];
        json_object_set_new(e, "file", json_string(base));
        json_object_set_new(e, "tokens", json_integer(counts[i]));
        json_array_append_new(list, e);
    }
    json_object_set_new(o, "shards", list);
    return o;
}

cm_status cm_shards_writer_commit(cm_shards_writer *w, int64_t val_tokens, cm_shards_summary *summary) {
    cm_status st = close_shard(w);
    char **val_names = NULL, **train_names = NULL;
    int64_t *val_counts = NULL, *train_counts = NULL;
    int n_val = 0, n_train = 0;
    char *mpath = cm_path_join(w->dir, "manifest.json");
    cm_shards_manifest old;
    memset(&old, 0, sizeof old);
    if (!st && !mpath) st = cm_error(CM_ERR_NOMEM, "%s: out of memory", w->dir);
    if (!st && w->total == 0) st = cm_error(CM_ERR_ARG, "%s: no tokens to write (no documents)", w->dir);
    if (!st && (val_tokens < 0 || val_tokens >= w->total))
        st = cm_error(CM_ERR_ARG, "%s: a val split of %lld tokens leaves no training tokens (the stream has %lld)",
                      w->dir, (long long)val_tokens, (long long)w->total);
    int64_t train = w->total - val_tokens;
    if (!st && val_tokens > 0) st = write_val(w, train, &val_names, &n_val, &val_counts);
    /* the train part: the stream's shards cut at `train` tokens */
    if (!st) {
        train_names = calloc((size_t)w->n_stream + 1, sizeof *train_names);
        train_counts = calloc((size_t)w->n_stream + 1, sizeof *train_counts);
        if (!train_names || !train_counts) st = cm_error(CM_ERR_NOMEM, "%s: out of memory", w->dir);
    }
    int64_t start = 0;
    for (int i = 0; i < w->n_stream && !st; i++) {
        wshard *sh = &w->stream[i];
        int64_t keep = train - start < sh->count ? train - start : sh->count;
        start += sh->count;
        if (keep <= 0) {
            unlink(sh->path);
            continue;
        }
        if (keep < sh->count) {
            int fd = open(sh->path, O_RDWR | O_CLOEXEC);
            uint8_t h[CM_SHARDS_HEADER];
            header(h, w->dtype, keep);
            if (fd < 0)
                st = cm_error(CM_ERR_IO, "%s: cannot open: %s", sh->path, strerror(errno));
            else if (ftruncate(fd, CM_SHARDS_HEADER + (off_t)keep * w->dtype) != 0)
                st = cm_error(CM_ERR_IO, "%s: cannot truncate: %s", sh->path, strerror(errno));
            else if (!(st = pwrite_all(fd, h, sizeof h, 0, sh->path)) && fsync(fd) != 0)
                st = cm_error(CM_ERR_IO, "%s: fsync failed: %s", sh->path, strerror(errno));
            if (fd >= 0) close(fd);
        }
        char name[32];
        snprintf(name, sizeof name, "train_%05d.bin", n_train);
        train_names[n_train] = cm_path_join(w->dir, name);
        train_counts[n_train] = keep;
        if (!train_names[n_train]) st = cm_error(CM_ERR_NOMEM, "%s: out of memory", w->dir);
        n_train++;
    }
    /* publish: no manifest while shards move in, then the new one */
    if (!st) {
        char *data = NULL;
        size_t len;
        if (cm_path_exists(mpath) && cm_read_file(mpath, CM_SHARDS_MAX_MANIFEST, &data, &len) == CM_OK &&
            cm_shards_manifest_parse(data, len, mpath, &old) != CM_OK)
            memset(&old, 0, sizeof old); /* unreadable: nothing of it to clean up */
        free(data);
        cm_clear_error();
        if (unlink(mpath) != 0 && errno != ENOENT)
            st = cm_error(CM_ERR_IO, "%s: cannot remove the old manifest: %s", mpath, strerror(errno));
        else
            sync_dir(w->dir);
    }
    for (int i = 0, t = 0; i < w->n_stream && !st; i++) {
        if (access(w->stream[i].path, F_OK) != 0) continue; /* all val: removed above */
        if (rename(w->stream[i].path, train_names[t]) != 0)
            st = cm_error(CM_ERR_IO, "%s: cannot move into place: %s", train_names[t], strerror(errno));
        t++;
    }
    for (int i = 0; i < n_val && !st; i++) {
        const char *base = strrchr(val_names[i], '/') + 1;
        char *dst = cm_path_join(w->dir, base);
        if (!dst)
            st = cm_error(CM_ERR_NOMEM, "%s: out of memory", w->dir);
        else if (rename(val_names[i], dst) != 0)
            st = cm_error(CM_ERR_IO, "%s: cannot move into place: %s", dst, strerror(errno));
        free(dst);
    }
    if (!st) {
        sync_dir(w->dir);
        json_t *root = json_object();
        json_object_set_new(root, "format", json_string("camelid-token-shards"));
        json_object_set_new(root, "version", json_integer(CM_SHARDS_VERSION));
        json_object_set_new(root, "tokenizer", json_string(w->tokenizer));
        json_object_set_new(root, "vocab_size", json_integer(w->vocab_size));
        json_object_set_new(root, "bos_id", json_integer(w->bos));
        json_object_set_new(root, "dtype", json_string(w->dtype == 2 ? "uint16" : "uint32"));
        json_object_set_new(root, "documents", json_integer(w->documents));
        json_object_set_new(root, "train", split_json(train_names, train_counts, n_train, train));
        json_object_set_new(root, "val", split_json(val_names, val_counts, n_val, val_tokens));
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(root);
        if (!text) {
            st = cm_error(CM_ERR_NOMEM, "%s: out of memory (or the tokenizer path is not UTF-8)", mpath);
        } else {
            size_t n = strlen(text);
            text[n] = '\n';
            st = cm_write_file_atomic(mpath, text, n + 1);
            free(text);
        }
    }
    if (!st) { /* the old data set's shards that the new manifest does not name */
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < old.split[s].n; i++) {
                const char *f = old.split[s].shards[i].file;
                bool kept = false;
                for (int j = 0; j < n_train && !kept; j++) kept = !strcmp(strrchr(train_names[j], '/') + 1, f);
                for (int j = 0; j < n_val && !kept; j++) kept = !strcmp(strrchr(val_names[j], '/') + 1, f);
                char *p = kept ? NULL : cm_path_join(w->dir, f);
                if (p) unlink(p);
                free(p);
            }
    }
    if (!st && summary)
        *summary = (cm_shards_summary){.documents = w->documents, .train_tokens = train, .val_tokens = val_tokens,
                                       .train_shards = n_train, .val_shards = n_val, .dtype = w->dtype};
    for (int i = 0; i < n_val; i++) free(val_names[i]);
    for (int i = 0; i < n_train; i++) free(train_names[i]);
    free(val_names);
    free(val_counts);
    free(train_names);
    free(train_counts);
    free(mpath);
    cm_shards_manifest_free(&old);
    remove_tree(w->tmp);
    writer_free(w);
    return st;
}
