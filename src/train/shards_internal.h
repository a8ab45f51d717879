/* Private to src/train/shards.c (and its fuzz target): the manifest and one shard's bytes, checked from
 * buffers. */
#ifndef CAMELID_TRAIN_SHARDS_INTERNAL_H
#define CAMELID_TRAIN_SHARDS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/status.h"

#define CM_SHARDS_MAGIC "CMTOKSHD"
#define CM_SHARDS_VERSION 1
#define CM_SHARDS_HEADER 32
/* Bounds on what a manifest may claim. */
#define CM_SHARDS_MAX_MANIFEST ((size_t)64 << 20)
#define CM_SHARDS_MAX_FILES 1000000
#define CM_SHARDS_MAX_NAME 255

typedef struct {
    char *file; /* a plain file name inside the data folder */
    int64_t tokens;
} cm_shard_entry;

typedef struct {
    bool present;
    int n;
    cm_shard_entry *shards;
    int64_t tokens;
} cm_shards_split;

typedef struct {
    int64_t vocab_size;
    int32_t bos_id;
    int dtype; /* 2 or 4 */
    char *tokenizer;
    int64_t documents;
    cm_shards_split split[2]; /* train, val */
} cm_shards_manifest;

/* 0 for "train", 1 for "val", -1 otherwise. */
int cm_shards_split_index(const char *split);
/* Parse and check manifest.json (`name` in errors). On failure *m is left empty (free it anyway). */
cm_status cm_shards_manifest_parse(const char *json, size_t len, const char *name, cm_shards_manifest *m);
void cm_shards_manifest_free(cm_shards_manifest *m);
/* Check one shard's bytes: the header (magic, version, dtype = `dtype`, reserved 0), its count against
 * `expect_tokens` (-1: any) and against the size, and every token below `vocab_size`. Gives the count and
 * the largest token (0 when empty). */
cm_status cm_shards_check(const uint8_t *data, size_t size, const char *name, int dtype, int64_t expect_tokens,
                          int64_t vocab_size, int64_t *count, uint32_t *max_token);

#endif
