/* trainer_state.json: what a checkpoint records of its run (step, horizon, the settings that decide the data
 * order and the optimizer state's shapes) and the check that a resumed run is the same run. `camelid train` and
 * `camelid finetune` write the same layout; only the format name, the mode and the list of settings differ. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

static const char *rope_name(cm_rope_layout rope) { return rope == CM_ROPE_HALF ? "half" : "interleaved"; }

/* append to a heap string, growing it; *s stays NULL after a failure */
static void append(char **s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(char **s, const char *fmt, ...) {
    if (!*s) return;
    va_list ap;
    va_start(ap, fmt);
    char *more = NULL, *both = NULL;
    int ok = vasprintf(&more, fmt, ap) >= 0;
    va_end(ap);
    if (ok) ok = asprintf(&both, "%s%s", *s, more) >= 0;
    free(more);
    free(*s);
    *s = ok ? both : NULL;
}

char *cm_run_state_json(const cm_run_state *rs, int step, double loss) {
    char *s = NULL;
    if (asprintf(&s, "{\n  \"format\": \"%s\",\n  \"version\": 1,\n  \"step\": %d,\n  \"steps\": %d,\n", rs->format,
                 step, rs->steps) < 0)
        return NULL;
    if (rs->mode) append(&s, "  \"mode\": \"%s\",\n", rs->mode);
    for (int i = 0; i < rs->n_settings; i++) append(&s, "  \"%s\": %lld,\n", rs->settings[i].key, rs->settings[i].value);
    append(&s, "  \"lr\": %.9g,\n  \"loss\": %.9g,\n  \"rope_layout\": \"%s\"", rs->lr, loss, rope_name(rs->rope));
    if (rs->check_rope) append(&s, ",\n  \"moments_layout\": \"as rope_layout\"");
    append(&s, "\n}\n");
    return s;
}

cm_status cm_run_state_check(const cm_run_state *rs, const char *text, const char *ckpt, int *step) {
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j) return cm_error(CM_ERR_FORMAT, "%s/trainer_state.json:%d: %s", ckpt, je.line, je.text);
    cm_status st = CM_OK;
    json_t *s = json_object_get(j, "step"), *mode = json_object_get(j, "mode");
    if (!json_is_integer(s) || json_integer_value(s) < 0)
        st = cm_error(CM_ERR_FORMAT, "%s/trainer_state.json: \"step\" should be a non-negative integer", ckpt);
    else if (rs->mode && !json_is_string(mode))
        st = cm_error(CM_ERR_FORMAT, "%s/trainer_state.json: \"mode\" should be a string", ckpt);
    else if (rs->mode && strcmp(json_string_value(mode), rs->mode) != 0)
        st = cm_error(CM_ERR_ARG, "%s is a %s fine-tune; resume it with the same mode (this run is %s)", ckpt,
                      json_string_value(mode), rs->mode);
    for (int i = 0; i < rs->n_settings && !st; i++) {
        const cm_run_setting *want = &rs->settings[i];
        json_t *v = json_object_get(j, want->key);
        if (!json_is_integer(v))
            st = cm_error(CM_ERR_FORMAT, "%s/trainer_state.json: \"%s\" should be an integer", ckpt, want->key);
        else if (json_integer_value(v) != want->value)
            st = cm_error(CM_ERR_ARG, "%s was made with %s %lld; resume with the same value (this run has %lld)", ckpt,
                          want->flag, (long long)json_integer_value(v), want->value);
    }
    json_t *layout = json_object_get(j, "rope_layout");
    if (!st && rs->check_rope && (!json_is_string(layout) || strcmp(json_string_value(layout), rope_name(rs->rope)) != 0))
        st = cm_error(CM_ERR_ARG,
                      "%s: its optimizer state is in the %s RoPE layout, this run's model in the %s one (start "
                      "the run from the same --config or --init-from)",
                      ckpt, json_is_string(layout) ? json_string_value(layout) : "(unknown)", rope_name(rs->rope));
    if (!st) *step = (int)json_integer_value(s);
    json_decref(j);
    return st;
}
