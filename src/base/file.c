#include "camelid/file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

cm_status cm_mmap_open(const char *path, cm_mmap **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cm_error(CM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return cm_error(CM_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cm_error(CM_ERR_IO, "%s: not a regular file", path);
    }
    cm_mmap *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        close(fd);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(m->path);
            free(m);
            return cm_error(CM_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
        m->data = p;
    }
    close(fd);
    *out = m;
    return CM_OK;
}

void cm_mmap_close(cm_mmap *m) {
    if (!m) return;
    if (m->data) munmap((void *)m->data, m->size);
    free(m->path);
    free(m);
}

cm_status cm_read_file(const char *path, size_t max_size, char **data, size_t *size) {
    *data = NULL;
    if (size) *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return cm_error(CM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return cm_error(CM_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_size) {
        fclose(f);
        return cm_error(CM_ERR_FORMAT, "%s: file is %lld bytes, larger than the %zu allowed", path,
                        (long long)st.st_size, max_size);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        free(buf);
        return cm_error(CM_ERR_IO, "%s: read failed", path);
    }
    buf[n] = 0;
    *data = buf;
    if (size) *size = n;
    return CM_OK;
}

struct cm_atomic_file {
    char *path;
    char *tmp_path;
    FILE *stream;
};

cm_status cm_atomic_open(const char *path, cm_atomic_file **out) {
    *out = NULL;
    cm_atomic_file *f = calloc(1, sizeof *f);
    if (!f) return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    size_t n = strlen(path) + 16;
    f->path = strdup(path);
    f->tmp_path = malloc(n);
    if (!f->path || !f->tmp_path) {
        free(f->path);
        free(f->tmp_path);
        free(f);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(f->tmp_path, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(f->tmp_path);
    if (fd < 0) {
        cm_status st = cm_error(CM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        free(f->path);
        free(f->tmp_path);
        free(f);
        return st;
    }
    fchmod(fd, 0644);
    f->stream = fdopen(fd, "wb");
    if (!f->stream) {
        close(fd);
        unlink(f->tmp_path);
        free(f->path);
        free(f->tmp_path);
        free(f);
        return cm_error(CM_ERR_IO, "%s: cannot open stream", path);
    }
    *out = f;
    return CM_OK;
}

FILE *cm_atomic_stream(cm_atomic_file *f) {
    return f->stream;
}

cm_status cm_atomic_write(cm_atomic_file *f, const void *data, size_t size) {
    if (size && fwrite(data, 1, size, f->stream) != size)
        return cm_error(CM_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
    return CM_OK;
}

static void atomic_free(cm_atomic_file *f) {
    free(f->path);
    free(f->tmp_path);
    free(f);
}

void cm_atomic_abort(cm_atomic_file *f) {
    if (!f) return;
    if (f->stream) fclose(f->stream);
    unlink(f->tmp_path);
    atomic_free(f);
}

cm_status cm_atomic_commit(cm_atomic_file *f) {
    cm_status st = CM_OK;
    if (fflush(f->stream) != 0 || fsync(fileno(f->stream)) != 0)
        st = cm_error(CM_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
    if (fclose(f->stream) != 0 && st == CM_OK)
        st = cm_error(CM_ERR_IO, "%s: close failed: %s", f->path, strerror(errno));
    f->stream = NULL;
    if (st == CM_OK && rename(f->tmp_path, f->path) != 0)
        st = cm_error(CM_ERR_IO, "%s: rename failed: %s", f->path, strerror(errno));
    if (st != CM_OK) {
        unlink(f->tmp_path);
        atomic_free(f);
        return st;
    }
    /* make the rename itself durable */
    char *dir = cm_path_dirname(f->path);
    if (dir) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    atomic_free(f);
    return CM_OK;
}

cm_status cm_write_file_atomic(const char *path, const void *data, size_t size) {
    cm_atomic_file *f;
    CM_TRY(cm_atomic_open(path, &f));
    cm_status st = cm_atomic_write(f, data, size);
    if (st != CM_OK) {
        cm_atomic_abort(f);
        return st;
    }
    return cm_atomic_commit(f);
}

char *cm_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

char *cm_path_dirname(const char *path) {
    char *copy = strdup(path);
    if (!copy) return NULL;
    char *d = strdup(dirname(copy));
    free(copy);
    return d;
}

int cm_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cm_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int cm_path_has_suffix(const char *path, const char *suffix) {
    size_t a = strlen(path), b = strlen(suffix);
    return a >= b && strcasecmp(path + a - b, suffix) == 0;
}

cm_status cm_mkdir_p(const char *path) {
    char *p = strdup(path);
    if (!p) return cm_error(CM_ERR_NOMEM, "out of memory");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            cm_status st = cm_error(CM_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
            free(p);
            return st;
        }
        *s = '/';
    }
    cm_status st = CM_OK;
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        st = cm_error(CM_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
    else if (!cm_path_is_dir(p))
        st = cm_error(CM_ERR_IO, "%s: exists and is not a folder", p);
    free(p);
    return st;
}
