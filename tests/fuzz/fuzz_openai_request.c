/* libFuzzer target: OpenAI request bodies (chat, completions, tokenize, detokenize) and the arena's (battle,
 * vote). The first byte picks
 * the kind. A request that parses must hold what the validator promises, and its error JSON must parse. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/serve_api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    cm_api_kind kind = (cm_api_kind)(data[0] % 6);
    cm_api_request r;
    cm_api_error e;
    if (!cm_api_parse_request(kind, (const char *)data + 1, size - 1, &r, &e)) {
        if (e.status != 400) abort();
        char *j = cm_api_error_json(&e);
        json_t *root = j ? json_loads(j, 0, NULL) : NULL;
        if (!root) abort();
        json_decref(root);
        free(j);
        return 0;
    }
    if (r.max_tokens == 0 || r.max_tokens < -1 || r.n_stop > CM_API_MAX_STOP) abort();
    if (kind == CM_API_CHAT && r.n_messages == 0) abort();
    if (kind == CM_API_ARENA_BATTLE &&
        (r.n_messages < 1 || r.n_messages > 2 || strcmp(r.messages[r.n_messages - 1].role, "user") ||
         !r.messages[r.n_messages - 1].content[0]))
        abort();
    if (kind == CM_API_ARENA_VOTE && (r.winner < 0 || r.winner > 3)) abort();
    for (size_t i = 0; i < r.n_messages; i++)
        if (!r.messages[i].role || !r.messages[i].content) abort();
    if ((kind == CM_API_COMPLETION && !r.prompt && !r.has_tokens) || (kind == CM_API_TOKENIZE && !r.prompt))
        abort();
    for (size_t i = 0; i < r.n_tokens; i++)
        if (r.tokens[i] < 0) abort();
    if (r.has_temperature && !(r.temperature >= 0 && r.temperature <= 2)) abort();
    cm_api_usage u = {1, 2};
    const char *text = r.prompt ? r.prompt : "";
    char *s = cm_api_response_json(kind == CM_API_CHAT ? CM_API_CHAT : CM_API_COMPLETION, "id", 1,
                                   r.model ? r.model : "m", text, strlen(text), "stop", &u);
    json_t *root = s ? json_loads(s, 0, NULL) : NULL;
    if (!root) abort();
    json_decref(root);
    free(s);
    cm_api_request_free(&r);
    return 0;
}
