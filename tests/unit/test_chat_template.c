/* Chat templates against FACTS section 7, byte for byte, on a fixed two-turn conversation; tokenization maps
 * markers to special ids where the vocabulary has them. */
#include "camelid/chat.h"
#include "check.h"

static const cm_chat_message convo[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello!"},
    {"assistant", "Hi! How can I help?"},
    {"user", "Tell me a story."},
};

static const struct {
    cm_template_id id;
    const char *expected;
} goldens[] = {
    {CM_TEMPLATE_LLAMA2,
     "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi! How can I "
     "help? </s><s>[INST] Tell me a story. [/INST]"},
    {CM_TEMPLATE_VICUNA, "You are a helpful assistant. USER: Hello! ASSISTANT: Hi! How can I help?</s>USER: "
                         "Tell me a story. ASSISTANT:"},
    {CM_TEMPLATE_ALPACA,
     "You are a helpful assistant.\n\n### Instruction:\nHello!\n\n### Response:Hi! How can I "
     "help?</s>\n\n### Instruction:\nTell me a story.\n\n### Response:"},
    {CM_TEMPLATE_GUANACO,
     "You are a helpful assistant. ### Human: Hello!### Assistant: Hi! How can I help?### "
     "Human: Tell me a story.### Assistant: "},
    {CM_TEMPLATE_CHATML,
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_"
     "end|>\n<|im_start|>assistant\nHi! How can I help?<|im_end|>\n<|im_start|>user\nTell me a "
     "story.<|im_end|>\n<|im_start|>assistant\n"},
    {CM_TEMPLATE_LLAMA3, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
                         "assistant.<|eot_id|><|start_"
                         "header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|"
                         "end_header_id|>\n\nHi! How "
                         "can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nTell me a "
                         "story.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
};

static char *render(cm_template_id id, const cm_chat_message *m, size_t n) {
    cm_chat_rendered r;
    if (cm_chat_render(id, m, n, true, &r) != CM_OK) return NULL;
    char *s = cm_chat_rendered_text(&r);
    cm_chat_rendered_free(&r);
    return s;
}

static void test_goldens(void) {
    for (size_t i = 0; i < sizeof goldens / sizeof *goldens; i++) {
        char *s = render(goldens[i].id, convo, 4);
        CHECK(s && strcmp(s, goldens[i].expected) == 0);
        if (s && strcmp(s, goldens[i].expected) != 0)
            fprintf(stderr, "%s rendered:\n[%s]\nexpected:\n[%s]\n", cm_template_name(goldens[i].id), s,
                    goldens[i].expected);
        free(s);
    }
}

/* FACTS 7's single-turn forms with the templates' own system prompts */
static void test_defaults(void) {
    cm_chat_message one[] = {{"user", "Name three colors."}};
    char *s = render(CM_TEMPLATE_ALPACA, one, 1);
    CHECK(s &&
          strcmp(s, "Below is an instruction that describes a task. Write a response that appropriately "
                    "completes the request.\n\n### Instruction:\nName three colors.\n\n### Response:") == 0);
    free(s);
    s = render(CM_TEMPLATE_GUANACO, one, 1);
    CHECK(s &&
          strcmp(s,
                 "A chat between a curious human and an artificial intelligence assistant. The assistant "
                 "gives helpful, detailed, and polite answers to the user's questions. ### Human: Name three "
                 "colors.### Assistant: ") == 0);
    free(s);
    s = render(CM_TEMPLATE_VICUNA, one, 1);
    CHECK(s &&
          strcmp(s, "A chat between a curious user and an artificial intelligence assistant. The assistant "
                    "gives helpful, detailed, and polite answers to the user's questions. USER: Name three "
                    "colors. ASSISTANT:") == 0);
    free(s);
    s = render(CM_TEMPLATE_LLAMA2, one, 1);
    CHECK(s && strcmp(s, "<s>[INST] Name three colors. [/INST]") == 0);
    free(s);
    s = render(CM_TEMPLATE_CHATML, one, 1);
    CHECK(s && strcmp(s, "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n") == 0);
    free(s);
}

static void test_names_and_detection(void) {
    cm_template_id id;
    for (int i = 0; i < CM_TEMPLATE_COUNT; i++) {
        CHECK_OK(cm_template_from_name(cm_template_name((cm_template_id)i), &id));
        CHECK(id == (cm_template_id)i);
    }
    CHECK_FAIL(cm_template_from_name("zephyr", &id), "zephyr");
    /* the Jinja templates models ship, recognised by their markers */
    CHECK(cm_template_detect("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                             "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
                             &id) &&
          id == CM_TEMPLATE_CHATML);
    CHECK(cm_template_detect("{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}", &id) &&
          id == CM_TEMPLATE_LLAMA2);
    CHECK(
        cm_template_detect(
            "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' %}", &id) &&
        id == CM_TEMPLATE_LLAMA3);
    CHECK(cm_template_detect("{{ 'USER: ' + m['content'] + ' ASSISTANT:' }}", &id) &&
          id == CM_TEMPLATE_VICUNA);
    CHECK(cm_template_detect("### Human: {{q}}### Assistant:", &id) && id == CM_TEMPLATE_GUANACO);
    CHECK(cm_template_detect("### Instruction:\n{{q}}\n\n### Response:", &id) && id == CM_TEMPLATE_ALPACA);
    CHECK(!cm_template_detect("{{ messages }}", &id));
    CHECK(!cm_template_detect(NULL, &id));
}

static void test_bad_roles(void) {
    cm_chat_rendered r;
    cm_chat_message bad[] = {{"user", "a"}, {"user", "b"}};
    CHECK_FAIL(cm_chat_render(CM_TEMPLATE_CHATML, bad, 2, true, &r), "message 2");
    cm_chat_message sys_late[] = {{"user", "a"}, {"system", "b"}};
    CHECK_FAIL(cm_chat_render(CM_TEMPLATE_CHATML, sys_late, 2, true, &r), "system");
}

static void test_tokenize(void) {
    cm_tokenizer *tok;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("models/stories260K/tok512.bin"), 512, &tok));
    if (!tok) return;
    cm_chat_rendered r;
    /* llama2: <s> and </s> are BOS/EOS ids, text after them gets SentencePiece's dummy prefix */
    CHECK_OK(cm_chat_render(CM_TEMPLATE_LLAMA2, convo, 4, true, &r));
    int32_t *ids;
    size_t n;
    CHECK_OK(cm_chat_tokenize(&r, tok, &ids, &n));
    int bos = 0, eos = 0;
    for (size_t i = 0; i < n; i++) {
        bos += ids[i] == 1;
        eos += ids[i] == 2;
    }
    CHECK(n > 10 && ids[0] == 1 && bos == 2 && eos == 1);
    int32_t *direct;
    size_t nd;
    CHECK_OK(cm_tokenizer_encode(tok, "[INST] Tell me a story. [/INST]", 31, false, false, &direct, &nd));
    CHECK(nd <= n && memcmp(ids + n - nd, direct, nd * sizeof *ids) == 0);
    free(direct);
    free(ids);
    cm_chat_rendered_free(&r);
    /* chatml markers are not in tok512: they are encoded as plain text, BOS first (the tokenizer adds it) */
    CHECK_OK(cm_chat_render(CM_TEMPLATE_CHATML, convo + 1, 1, true, &r));
    CHECK_OK(cm_chat_tokenize(&r, tok, &ids, &n));
    char *text = cm_chat_rendered_text(&r);
    CHECK_OK(cm_tokenizer_encode(tok, text, strlen(text), true, false, &direct, &nd));
    CHECK(nd == n && memcmp(ids, direct, n * sizeof *ids) == 0);
    free(text);
    free(direct);
    free(ids);
    cm_chat_rendered_free(&r);
    int32_t stop[4];
    CHECK(cm_template_stop_tokens(CM_TEMPLATE_VICUNA, tok, stop, 4) == 1 && stop[0] == 2);
    CHECK(cm_template_stop_tokens(CM_TEMPLATE_CHATML, tok, stop, 4) == 0);
    cm_tokenizer_close(tok);
}

/* Llama 3: every marker is one special id of Meta's vocabulary */
static void test_tokenize_llama3(void) {
    cm_tokenizer *tok;
    CHECK_OK(cm_tokenizer_open_bpe(cm_test_shared("tokenizers/llama3-bpe/encoder.json"), "llama3", &tok));
    if (!tok) return;
    cm_chat_message m[] = {{"system", "Be brief."}, {"user", "Hi"}};
    cm_chat_rendered r;
    CHECK_OK(cm_chat_render(CM_TEMPLATE_LLAMA3, m, 2, true, &r));
    int32_t *ids;
    size_t n;
    CHECK_OK(cm_chat_tokenize(&r, tok, &ids, &n));
    static const int32_t want[] = {128000, 128006, 9125,   128007, 271,    3513, 10015,
                                   13,     128009, 128006, 882,    128007, 271,  13347,
                                   128009, 128006, 78191,  128007, 271};
    CHECK(n == sizeof want / sizeof *want && memcmp(ids, want, sizeof want) == 0);
    int32_t stop[4];
    CHECK(cm_template_stop_tokens(CM_TEMPLATE_LLAMA3, tok, stop, 4) == 1 && stop[0] == 128009);
    free(ids);
    cm_chat_rendered_free(&r);
    cm_tokenizer_close(tok);
}

int main(void) {
    test_tokenize_llama3();
    test_goldens();
    test_defaults();
    test_names_and_detection();
    test_bad_roles();
    test_tokenize();
    CHECK_DONE();
}
