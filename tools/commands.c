/* Helpers that several commands share (commands.h): how a model is named, which chat template it gets,
 * merging --adapter folders, trimming a reply. Each was written out again in the commands that use it. */
#include <stdlib.h>
#include <string.h>

#include "camelid/lora.h"
#include "camelid/model.h"
#include "camelid/tokenizer.h"
#include "commands.h"
#include "sampling_opts.h"

char *cli_model_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t end = n;
    for (size_t i = n; i > start + 1; i--) {
        if (path[i - 1] == '.') {
            end = i - 1;
            break;
        }
    }
    char *s = malloc(end - start + 1);
    if (s) {
        memcpy(s, path + start, end - start);
        s[end - start] = 0;
    }
    return s;
}

cm_template_id cli_chat_template(const char *template_name, cm_template_id named, const cm_tokenizer *tok) {
    if (template_name) return named;
    cm_template_id t;
    /* llama.cpp's fallback when the model's own template is missing or not one camelid knows */
    return cm_template_detect(cm_tokenizer_chat_template(tok), &t) ? t : CM_TEMPLATE_CHATML;
}

int cli_merge_adapters(cm_model *m, const string_list *adapters) {
    for (int i = 0; i < adapters->n; i++)
        if (cm_model_merge_adapter(m, adapters->items[i]) != CM_OK) return cli_fail_status();
    return 0;
}

int cli_one_model(const char *command, const char *model_path, const char *extra) {
    if (!model_path) return cli_fail("%s needs a MODEL (see camelid %s --help)", command, command);
    if (extra) return cli_fail("%s takes one MODEL, got an extra argument \"%s\"", command, extra);
    return 0;
}

int cli_check_chat_opts(int n_predict, int ctx, struct sampling_opts *so, const char *template_name,
                        cm_template_id *tmpl) {
    if (n_predict < 1) return cli_fail("--n-predict must be at least 1");
    if (ctx < 0) return cli_fail("--ctx-size must be positive");
    if (sampling_opts_resolve(so) != 0) return 1;
    if (template_name && cm_template_from_name(template_name, tmpl) != CM_OK) return cli_fail_status();
    return 0;
}

char *cli_trim_copy(const char *s) {
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r')) n--;
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = 0;
    }
    return c;
}
