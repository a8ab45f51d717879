/* Training checkpoints: RUN_DIR/checkpoints/step-NNNNNN/ holds the model as an HF folder (config.json,
 * model.safetensors in f32, the tokenizer), optimizer.safetensors (AdamW moments "m.<tensor>" and
 * "v.<tensor>") and trainer_state.json (step and the run's settings). A checkpoint is written under a .tmp
 * name, every file fsynced, then renamed into place; only then does RUN_DIR/latest (itself written atomically)
 * point to it and the previous one is removed. A crash at any moment leaves the previous checkpoint whole. */
#include <dirent.h>
#include <jansson.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "camelid/file.h"
#include "camelid/safetensors.h"
#include "camelid/trainer.h"
#include "model/model_internal.h"
#include "train/train_internal.h"

/* Remove a folder of plain files (a checkpoint); missing is fine. */
cm_status cm_train_remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? CM_OK : cm_error(CM_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    struct dirent *e;
    cm_status st = CM_OK;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = cm_path_join(dir, e->d_name);
        if (!p || unlink(p) != 0) st = cm_error(CM_ERR_IO, "%s: cannot remove %s", dir, e->d_name);
        free(p);
    }
    closedir(d);
    if (!st && rmdir(dir) != 0) st = cm_error(CM_ERR_IO, "%s: cannot remove: %s", dir, strerror(errno));
    return st;
}

static cm_status fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return cm_error(CM_ERR_IO, "%s: cannot open to sync: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? CM_OK : cm_error(CM_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
}

cm_status cm_train_write_moments(const char *path, const cm_param_tensor *tensors, int n_tensors, const float *m,
                                 const float *v) {
    cm_safetensors_writer *w;
    CM_TRY(cm_safetensors_writer_open(path, &w));
    cm_status st = cm_safetensors_writer_set_metadata(w, "format", "camelid-adamw");
    char name[96];
    for (int which = 0; which < 2 && !st; which++)
        for (int i = 0; i < n_tensors && !st; i++) {
            const cm_param_tensor *t = &tensors[i];
            snprintf(name, sizeof name, "%s.%s", which ? "v" : "m", t->name);
            int64_t shape[2] = {t->rows, t->cols};
            size_t n = (size_t)t->rows * t->cols;
            st = cm_safetensors_writer_add(w, name, CM_DTYPE_F32, t->cols > 1 ? 2 : 1, shape,
                                           (which ? v : m) + t->offset, n * sizeof(float));
        }
    if (st) {
        cm_safetensors_writer_abort(w);
        return st;
    }
    return cm_safetensors_writer_commit(w);
}

char *cm_train_checkpoint_tmp(const char *out_dir, int step) {
    char rel[64];
    snprintf(rel, sizeof rel, "checkpoints/step-%06d.tmp", step);
    return cm_path_join(out_dir, rel);
}

cm_status cm_train_checkpoint_begin(const char *out_dir, int step, char **tmp) {
    *tmp = NULL;
    char *parent = cm_path_join(out_dir, "checkpoints"), *dir = cm_train_checkpoint_tmp(out_dir, step);
    cm_status st = (!dir || !parent) ? cm_error(CM_ERR_NOMEM, "out of memory") : CM_OK;
    if (!st) st = cm_mkdir_p(parent);
    if (!st) st = cm_train_remove_dir(dir); /* a leftover of an interrupted write */
    if (!st) st = cm_mkdir_p(dir);
    free(parent);
    if (st) {
        free(dir);
        return st;
    }
    *tmp = dir;
    return CM_OK;
}

cm_status cm_train_checkpoint_commit(const char *out_dir, int step, const char *state_json, char **written) {
    char rel[64];
    snprintf(rel, sizeof rel, "checkpoints/step-%06d", step);
    char *dir = cm_path_join(out_dir, rel), *tmp = cm_train_checkpoint_tmp(out_dir, step);
    char *parent = cm_path_join(out_dir, "checkpoints");
    char *state = tmp ? cm_path_join(tmp, "trainer_state.json") : NULL, *latest = NULL, *previous = NULL;
    cm_status st = (!dir || !tmp || !parent || !state) ? cm_error(CM_ERR_NOMEM, "out of memory") : CM_OK;
    if (!st) st = cm_write_file_atomic(state, state_json, strlen(state_json));
    if (!st) st = fsync_path(tmp);
    if (!st) {
        cm_train_remove_dir(dir); /* the same step written before (a resumed run passing it again) */
        if (rename(tmp, dir) != 0) st = cm_error(CM_ERR_IO, "%s: cannot rename into place: %s", dir, strerror(errno));
    }
    if (!st) st = fsync_path(parent);
    /* point latest at it, then drop the one it replaces */
    if (!st) cm_train_latest_checkpoint(out_dir, &previous);
    if (!st) {
        latest = cm_path_join(out_dir, "latest");
        char line[80];
        int n = snprintf(line, sizeof line, "%s\n", rel);
        st = latest ? cm_write_file_atomic(latest, line, (size_t)n) : cm_error(CM_ERR_NOMEM, "out of memory");
    }
    if (!st && previous && strcmp(previous, dir) != 0) cm_train_remove_dir(previous);
    if (!st && written) {
        *written = dir;
        dir = NULL;
    }
    free(dir), free(tmp), free(parent), free(state), free(latest), free(previous);
    return st;
}

cm_status cm_train_checkpoint_save(const char *out_dir, int step, const cm_params *p, const float *m,
                                   const float *v, const cm_tokenizer *tok, const char *state_json,
                                   char **written) {
    char *tmp = NULL, *opt = NULL;
    cm_model *view = NULL;
    cm_status st = cm_train_checkpoint_begin(out_dir, step, &tmp);
    if (!st) st = cm_params_as_model(p, &view);
    if (!st) st = cm_model_save_hf(view, tok, tmp, CM_DTYPE_F32);
    if (!st && !(opt = cm_path_join(tmp, "optimizer.safetensors"))) st = cm_error(CM_ERR_NOMEM, "out of memory");
    if (!st) st = cm_train_write_moments(opt, p->tensors, p->n_tensors, m, v);
    if (!st) st = cm_train_checkpoint_commit(out_dir, step, state_json, written);
    cm_model_close(view);
    free(tmp);
    free(opt);
    return st;
}

cm_status cm_train_latest_checkpoint(const char *out_dir, char **ckpt_dir) {
    *ckpt_dir = NULL;
    char *latest = cm_path_join(out_dir, "latest");
    if (!latest) return cm_error(CM_ERR_NOMEM, "out of memory");
    char *text = NULL;
    size_t len = 0;
    cm_status st = cm_path_exists(latest) ? cm_read_file(latest, 4096, &text, &len)
                                          : cm_error(CM_ERR_NOT_FOUND, "%s: no checkpoint yet", out_dir);
    free(latest);
    if (st) return st;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) text[--len] = 0;
    if (len == 0 || strstr(text, "..") || text[0] == '/' || strchr(text, '\n')) {
        free(text);
        return cm_error(CM_ERR_FORMAT, "%s/latest: expected the relative path of a checkpoint folder", out_dir);
    }
    *ckpt_dir = cm_path_join(out_dir, text);
    free(text);
    if (!*ckpt_dir) return cm_error(CM_ERR_NOMEM, "out of memory");
    if (!cm_path_is_dir(*ckpt_dir)) {
        cm_status e = cm_error(CM_ERR_NOT_FOUND, "%s: the latest checkpoint (%s) is missing", out_dir, *ckpt_dir);
        free(*ckpt_dir);
        *ckpt_dir = NULL;
        return e;
    }
    return CM_OK;
}

static cm_status check_same_shape(const cm_config *a, const cm_config *b, const char *what) {
#define SAME(field)                                                                                          \
    if (a->field != b->field)                                                                                \
        return cm_error(CM_ERR_ARG, "%s was made for %s %d, this run's model has %s %d", what, #field,       \
                        (int)a->field, #field, (int)b->field);
    SAME(dim);
    SAME(hidden_dim);
    SAME(n_layers);
    SAME(n_heads);
    SAME(n_kv_heads);
    SAME(head_dim);
    SAME(vocab_size);
    SAME(tie_embeddings);
#undef SAME
    return CM_OK;
}

cm_status cm_train_read_moments(const char *path, const cm_param_tensor *tensors, int n_tensors, float *m, float *v) {
    cm_safetensors *st;
    CM_TRY(cm_safetensors_open(path, &st));
    char name[96];
    cm_status rc = CM_OK;
    for (int which = 0; which < 2 && !rc; which++)
        for (int i = 0; i < n_tensors && !rc; i++) {
            const cm_param_tensor *t = &tensors[i];
            snprintf(name, sizeof name, "%s.%s", which ? "v" : "m", t->name);
            const cm_tensor *x = cm_safetensors_find(st, name);
            size_t n = (size_t)t->rows * t->cols;
            if (!x)
                rc = cm_error(CM_ERR_FORMAT, "%s: tensor %s is missing", path, name);
            else if (x->dtype != CM_DTYPE_F32 || x->nbytes != n * sizeof(float))
                rc = cm_error(CM_ERR_FORMAT, "%s: tensor %s should be F32 with %zu elements", path, name, n);
            else
                memcpy((which ? v : m) + t->offset, x->data, n * sizeof(float));
        }
    cm_safetensors_close(st);
    return rc;
}

cm_status cm_train_checkpoint_load(const char *ckpt_dir, cm_params *p, float *m, float *v, char **state_json) {
    *state_json = NULL;
    cm_model *model;
    CM_TRY(cm_model_open(ckpt_dir, &model));
    cm_status st = check_same_shape(&model->cfg, &p->cfg, ckpt_dir);
    cm_params *loaded = NULL;
    if (!st) st = cm_params_from_model(model, &loaded);
    cm_model_close(model);
    if (!st && loaded->n != p->n) st = cm_error(CM_ERR_FORMAT, "%s: parameter count differs", ckpt_dir);
    if (!st) memcpy(p->data, loaded->data, p->n * sizeof(float));
    /* the folder is in HF order; a run in the interleaved RoPE layout gets its q/k rows back (exactly) */
    if (!st && loaded->cfg.rope_layout != p->cfg.rope_layout) {
        const cm_config *c = &p->cfg;
        for (int l = 0; l < c->n_layers; l++) {
            cm_permute_qk_rows(loaded->layers[l].wq, p->layers[l].wq, c->n_heads, c->head_dim,
                               (size_t)c->dim * sizeof(float), p->cfg.rope_layout == CM_ROPE_HALF);
            cm_permute_qk_rows(loaded->layers[l].wk, p->layers[l].wk, c->n_kv_heads, c->head_dim,
                               (size_t)c->dim * sizeof(float), p->cfg.rope_layout == CM_ROPE_HALF);
        }
    }
    cm_params_close(loaded);
    char *opt = cm_path_join(ckpt_dir, "optimizer.safetensors"), *state = cm_path_join(ckpt_dir, "trainer_state.json");
    if (!st && (!opt || !state)) st = cm_error(CM_ERR_NOMEM, "out of memory");
    if (!st) st = cm_train_read_moments(opt, p->tensors, p->n_tensors, m, v);
    size_t len;
    if (!st) st = cm_read_file(state, 1 << 20, state_json, &len);
    free(opt);
    free(state);
    return st;
}

cm_status cm_train_truncate_log(const char *path, int last_step) {
    if (!cm_path_exists(path)) return CM_OK;
    char *text;
    size_t len;
    CM_TRY(cm_read_file(path, (size_t)1 << 30, &text, &len));
    size_t keep = 0;
    for (size_t i = 0; i < len;) {
        char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) + 1 : len;
        json_t *j = json_loadb(text + i, end - i, 0, NULL);
        json_t *s = j ? json_object_get(j, "step") : NULL;
        bool ok = nl && s && json_is_integer(s) && json_integer_value(s) <= last_step;
        json_decref(j);
        if (!ok) break;
        keep = end;
        i = end;
    }
    cm_status st = cm_write_file_atomic(path, text, keep);
    free(text);
    return st;
}
