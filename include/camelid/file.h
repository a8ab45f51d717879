/* Files: read-only memory maps (zero-copy tensor views), bounded whole-file reads, atomic writes. */
#ifndef CAMELID_FILE_H
#define CAMELID_FILE_H

#include <stdint.h>
#include <stdio.h>

#include "camelid/status.h"

typedef struct cm_mmap {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
    char *path;
} cm_mmap;

/* Map `path` read-only. A directory or unreadable file is an error naming the path. */
cm_status cm_mmap_open(const char *path, cm_mmap **out);
void cm_mmap_close(cm_mmap *m);

/* Read a whole (small) file into a NUL-terminated heap buffer; fails if it is larger than `max_size`. */
cm_status cm_read_file(const char *path, size_t max_size, char **data, size_t *size);

/* Atomic write: data goes to a temporary file beside `path`; commit flushes, fsyncs and renames it over
 * `path` (then fsyncs the folder); abort (or close without commit) removes the temporary file. */
typedef struct cm_atomic_file cm_atomic_file;
cm_status cm_atomic_open(const char *path, cm_atomic_file **out);
FILE *cm_atomic_stream(cm_atomic_file *f);
cm_status cm_atomic_write(cm_atomic_file *f, const void *data, size_t size);
cm_status cm_atomic_commit(cm_atomic_file *f); /* frees f */
void cm_atomic_abort(cm_atomic_file *f);       /* frees f */
/* Write a whole buffer to `path` atomically. */
cm_status cm_write_file_atomic(const char *path, const void *data, size_t size);

/* Path helpers (heap strings, caller frees). */
char *cm_path_join(const char *dir, const char *name);
char *cm_path_dirname(const char *path);
int cm_path_is_dir(const char *path);
int cm_path_exists(const char *path);
/* True if `path` ends with `suffix` (case-insensitive). */
int cm_path_has_suffix(const char *path, const char *suffix);
/* Create a folder (and its parents) if missing. */
cm_status cm_mkdir_p(const char *path);

#endif
