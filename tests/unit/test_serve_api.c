/* OpenAI request parsing and validation, response shapes, UTF-8 sanitizing. */
#include <jansson.h>

#include "camelid/serve_api.h"
#include "check.h"

static bool parse(cm_api_kind kind, const char *body, cm_api_request *r, cm_api_error *e) {
    return cm_api_parse_request(kind, body, strlen(body), r, e);
}

/* Expect a 400 naming `param` (NULL: no param). */
static void expect_bad(cm_api_kind kind, const char *body, const char *param) {
    cm_api_request r;
    cm_api_error e;
    bool ok = parse(kind, body, &r, &e);
    CHECK(!ok);
    if (ok) {
        fprintf(stderr, "  accepted: %s\n", body);
        cm_api_request_free(&r);
        return;
    }
    CHECK(e.status == 400);
    CHECK(!strcmp(e.type, "invalid_request_error"));
    if (strcmp(e.param, param ? param : "") != 0) {
        fprintf(stderr, "  %s: param \"%s\", expected \"%s\" (%s)\n", body, e.param, param ? param : "",
                e.message);
        check_failures++;
    }
    char *j = cm_api_error_json(&e);
    json_t *root = j ? json_loads(j, 0, NULL) : NULL;
    json_t *err = json_object_get(root, "error");
    CHECK(json_is_string(json_object_get(err, "message")) && json_object_get(err, "type") &&
          json_object_get(err, "param") && json_object_get(err, "code"));
    json_decref(root);
    free(j);
}

static void test_chat(void) {
    cm_api_request r;
    cm_api_error e;
    CHECK(parse(
        CM_API_CHAT,
        "{\"model\": \"m\", \"messages\": [{\"role\": \"developer\", \"content\": \"Be brief.\"},"
        " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Hi \"},"
        " {\"type\": \"text\", \"text\": \"there\"}]}], \"max_completion_tokens\": 12, \"max_tokens\": 99,"
        " \"temperature\": 0, \"top_p\": 0.5, \"seed\": -1, \"stop\": \"END\", \"n\": 1, \"stream\": true,"
        " \"stream_options\": {\"include_usage\": true}, \"user\": \"ignored\", \"logit_bias\": {}}",
        &r, &e));
    CHECK(r.model && !strcmp(r.model, "m"));
    CHECK(r.n_messages == 2 && !strcmp(r.messages[0].role, "system") &&
          !strcmp(r.messages[1].content, "Hi there"));
    CHECK(r.max_tokens == 12); /* max_completion_tokens wins */
    CHECK(r.has_temperature && r.temperature == 0 && r.has_top_p && r.top_p == 0.5);
    CHECK(r.has_seed && r.seed == UINT64_MAX);
    CHECK(r.n_stop == 1 && !strcmp(r.stop[0], "END"));
    CHECK(r.stream && r.include_usage);
    cm_api_request_free(&r);

    CHECK(parse(CM_API_CHAT,
                "{\"messages\": [{\"role\": \"assistant\", \"content\": null}], \"stop\": [\"a\", \"\"]}", &r,
                &e));
    CHECK(!r.model && r.max_tokens == -1 && !r.has_temperature && !r.stream && r.n_stop == 1);
    CHECK(!strcmp(r.messages[0].content, ""));
    cm_api_request_free(&r);

    expect_bad(CM_API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]",
               NULL); /* truncated */
    expect_bad(CM_API_CHAT, "", NULL);
    expect_bad(CM_API_CHAT, "[1]", NULL);
    expect_bad(CM_API_CHAT, "{\"a\": 1, \"a\": 2, \"messages\": []}", NULL); /* duplicate key */
    expect_bad(CM_API_CHAT, "{}", "messages");
    expect_bad(CM_API_CHAT, "{\"messages\": []}", "messages");
    expect_bad(CM_API_CHAT, "{\"messages\": {}}", "messages");
    expect_bad(CM_API_CHAT, "{\"messages\": [\"hi\"]}", "messages[0]");
    expect_bad(CM_API_CHAT, "{\"messages\": [{\"content\": \"x\"}]}", "messages[0].role");
    expect_bad(CM_API_CHAT, "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "messages[0].role");
    expect_bad(CM_API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}", "messages[0].content");
    expect_bad(CM_API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}]}",
               "messages[0].content");
    expect_bad(CM_API_CHAT,
               "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}",
               "messages[0].content");
    const char *m = "\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]";
    char body[512];
    const struct {
        const char *extra, *param;
    } bad[] = {
        {"\"model\": 7", "model"},
        {"\"max_tokens\": \"ten\"", "max_tokens"},
        {"\"max_tokens\": 0", "max_tokens"},
        {"\"max_tokens\": 1.5", "max_tokens"},
        {"\"max_completion_tokens\": -3", "max_completion_tokens"},
        {"\"temperature\": \"hot\"", "temperature"},
        {"\"temperature\": 2.5", "temperature"},
        {"\"top_p\": 1.5", "top_p"},
        {"\"top_k\": 1.5", "top_k"},
        {"\"seed\": \"x\"", "seed"},
        {"\"n\": 2", "n"},
        {"\"stream\": \"yes\"", "stream"},
        {"\"stream_options\": 1", "stream_options"},
        {"\"stream_options\": {\"include_usage\": 1}", "stream_options.include_usage"},
        {"\"stop\": 5", "stop"},
        {"\"stop\": [\"a\", 5]", "stop"},
        {"\"stop\": "
         "[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\","
         "\"16\",\"17\"]",
         "stop"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(body, sizeof body, "{%s, %s}", m, bad[i].extra);
        expect_bad(CM_API_CHAT, body, bad[i].param);
    }
}

static void test_completion(void) {
    cm_api_request r;
    cm_api_error e;
    CHECK(parse(CM_API_COMPLETION, "{\"prompt\": \"Once upon\"}", &r, &e));
    CHECK(r.prompt && !strcmp(r.prompt, "Once upon") && !r.has_tokens);
    cm_api_request_free(&r);
    CHECK(parse(CM_API_COMPLETION, "{\"prompt\": [\"One\"]}", &r, &e));
    CHECK(r.prompt && !strcmp(r.prompt, "One"));
    cm_api_request_free(&r);
    CHECK(parse(CM_API_COMPLETION, "{\"prompt\": [1, 403, 407]}", &r, &e));
    CHECK(r.has_tokens && r.n_tokens == 3 && r.tokens[1] == 403);
    cm_api_request_free(&r);
    CHECK(parse(CM_API_COMPLETION, "{\"prompt\": [[1, 2]]}", &r, &e));
    CHECK(r.has_tokens && r.n_tokens == 2);
    cm_api_request_free(&r);
    expect_bad(CM_API_COMPLETION, "{}", "prompt");
    expect_bad(CM_API_COMPLETION, "{\"prompt\": 5}", "prompt");
    expect_bad(CM_API_COMPLETION, "{\"prompt\": [\"a\", \"b\"]}", "prompt");
    expect_bad(CM_API_COMPLETION, "{\"prompt\": [1, -2]}", "prompt");
    expect_bad(CM_API_COMPLETION, "{\"prompt\": [1, \"x\"]}", "prompt");
    CHECK(parse(CM_API_TOKENIZE, "{\"content\": \"hi\", \"add_special\": true}", &r, &e));
    CHECK(r.add_special && !strcmp(r.prompt, "hi"));
    cm_api_request_free(&r);
    expect_bad(CM_API_TOKENIZE, "{\"content\": 1}", "content");
    CHECK(parse(CM_API_DETOKENIZE, "{\"tokens\": [1, 2]}", &r, &e));
    CHECK(r.n_tokens == 2);
    cm_api_request_free(&r);
    expect_bad(CM_API_DETOKENIZE, "{\"tokens\": \"1 2\"}", "tokens");
}

static void test_responses(void) {
    cm_api_usage u = {13, 4};
    char *s = cm_api_response_json(CM_API_CHAT, "chatcmpl-1", 42, "m", "hi\xff", 3, "stop", &u);
    json_t *root = json_loads(s, 0, NULL);
    CHECK(root && !strcmp(json_string_value(json_object_get(root, "object")), "chat.completion"));
    json_t *ch = json_array_get(json_object_get(root, "choices"), 0);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(ch, "message"), "content")),
                  "hi\xEF\xBF\xBD"));
    CHECK(json_integer_value(json_object_get(json_object_get(root, "usage"), "total_tokens")) == 17);
    json_decref(root);
    free(s);
    s = cm_api_chunk_json(CM_API_CHAT, "x", 1, "m", "", 0, true, NULL, NULL, false);
    CHECK(s && strstr(s, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}") && !strstr(s, "usage"));
    free(s);
    s = cm_api_chunk_json(CM_API_CHAT, "x", 1, "m", "", 0, false, "length", NULL, true);
    CHECK(s && strstr(s, "\"delta\":{}") && strstr(s, "\"finish_reason\":\"length\"") &&
          strstr(s, "\"usage\":null"));
    free(s);
    s = cm_api_chunk_json(CM_API_COMPLETION, "x", 1, "m", NULL, 0, false, NULL, &u, false);
    CHECK(s && strstr(s, "\"choices\":[]") && strstr(s, "\"prompt_tokens\":13"));
    free(s);
    const char *ids[2] = {"a", "b"};
    s = cm_api_models_json(ids, 2, 5);
    CHECK(s && strstr(s, "\"object\":\"list\"") && strstr(s, "\"id\":\"b\""));
    free(s);
}

static void test_utf8(void) {
    const struct {
        const char *in, *out;
    } cases[] = {
        {"abc", "abc"},
        {"\xC3\xA9", "\xC3\xA9"},
        {"\xE2\x82", "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* truncated */
        {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* overlong */
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
        {"\xF0\x9F\x98\x80!", "\xF0\x9F\x98\x80!"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n;
        char *s = cm_utf8_sanitize(cases[i].in, strlen(cases[i].in), &n);
        CHECK(s && n == strlen(cases[i].out) && !strcmp(s, cases[i].out));
        free(s);
    }
}

int main(void) {
    test_chat();
    test_completion();
    test_responses();
    test_utf8();
    CHECK_DONE();
}
