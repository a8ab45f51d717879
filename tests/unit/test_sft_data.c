/* SFT datasets: every record format, the loss mask against the chat templates' own tokenization, packing
 * invariants, truncation and skipping, splits, malformed records naming FILE:LINE, and the shared files. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/chat.h"
#include "camelid/pool.h"
#include "camelid/sft_data.h"
#include "camelid/tokenizer.h"
#include "check.h"

static cm_tokenizer *tok512, *llama2;

static cm_sft_dataset *open_str(const char *json, const cm_tokenizer *tok, const cm_sft_options *o) {
    cm_sft_dataset *ds = NULL;
    cm_status st = cm_sft_open_buffer(json, strlen(json), "mem.json", tok, o, &ds);
    if (st != CM_OK) {
        fprintf(stderr, "open failed: %s\n", cm_last_error());
        check_failures++;
    }
    return ds;
}

static cm_sft_options opts(cm_template_id t, int seq) {
    cm_sft_options o;
    cm_sft_options_defaults(&o);
    o.template_id = t;
    o.seq = seq;
    o.val_frac = 0;
    return o;
}

/* What camelid chat would feed the model: the rendered conversation, tokenized as cm_chat_tokenize does,
 * plus the separating EOS when it does not end with one. */
static size_t expected_ids(const cm_tokenizer *tok, cm_template_id t, const cm_chat_message *m, size_t n,
                           bool gen, int32_t **ids) {
    cm_chat_rendered r;
    size_t k = 0;
    if (cm_chat_render(t, m, n, gen, &r) != CM_OK || cm_chat_tokenize(&r, tok, ids, &k) != CM_OK) {
        fprintf(stderr, "render/tokenize failed: %s\n", cm_last_error());
        check_failures++;
        *ids = NULL;
        return 0;
    }
    cm_chat_rendered_free(&r);
    int eos = cm_tokenizer_eos(tok);
    if (!gen && (k == 0 || (*ids)[k - 1] != eos)) {
        *ids = realloc(*ids, (k + 1) * sizeof **ids);
        (*ids)[k++] = eos;
    }
    return k;
}

/* The text of the trained tokens (those a target points at), decoded. */
static char *trained_text(const cm_tokenizer *tok, const int32_t *ids, const uint8_t *tr, size_t n) {
    int32_t *sel = malloc((n + 1) * sizeof *sel);
    size_t k = 0;
    for (size_t j = 1; j < n; j++)
        if (tr[j]) sel[k++] = ids[j];
    char *text = NULL;
    size_t len;
    if (cm_tokenizer_decode(tok, sel, k, &text, &len) != CM_OK) text = NULL;
    free(sel);
    return text;
}

static size_t first_trained(const uint8_t *tr, size_t n) {
    size_t f = 1;
    while (f < n && !tr[f]) f++;
    return f;
}

/* ---- formats ---- */

static void test_formats(void) {
    cm_sft_options o = opts(CM_TEMPLATE_ALPACA, 512);
    int32_t ids[512], *want;
    uint8_t tr[512];
    size_t line;

    /* Alpaca, JSON array; unknown fields ignored; an input uses FACTS 7's prompt with "### Input:" */
    const char *alpaca =
        "[\n"
        "  {\"instruction\": \"Name a color.\", \"input\": \"\", \"output\": \"Red.\", \"status\": "
        "\"too similar\", \"similarity\": 0.9},\n"
        "  {\"instruction\": \"Add the numbers.\", \"input\": \"2 and 3\", \"output\": \"5\"},\n"
        "  {\"instruction\": \"Say hi.\", \"input\": null, \"output\": \"Hi!\", \"system\": \"Be "
        "brief.\"}\n"
        "]\n";
    cm_sft_dataset *ds = open_str(alpaca, tok512, &o);
    if (!ds) return;
    CHECK(cm_sft_examples(ds, CM_SFT_TRAIN) == 3 && cm_sft_examples(ds, CM_SFT_VAL) == 0);
    size_t n = cm_sft_example(ds, CM_SFT_TRAIN, 0, ids, tr, &line);
    CHECK(line == 2);
    cm_chat_message m0[] = {{"user", "Name a color."}, {"assistant", "Red."}};
    size_t k = expected_ids(tok512, CM_TEMPLATE_ALPACA, m0, 2, false, &want);
    CHECK(n == k && memcmp(ids, want, k * sizeof *ids) == 0);
    free(want);
    char *t = trained_text(tok512, ids, tr, n);
    CHECK(t && strcmp(t, "Red.") == 0); /* the output and its </s> (a control token: no text) */
    free(t);
    CHECK(ids[n - 1] == cm_tokenizer_eos(tok512) && tr[n - 1]);
    /* the untrained part is exactly the prompt camelid chat feeds the model */
    k = expected_ids(tok512, CM_TEMPLATE_ALPACA, m0, 1, true, &want);
    CHECK(first_trained(tr, n) == k && memcmp(ids, want, k * sizeof *ids) == 0);
    free(want);

    n = cm_sft_example(ds, CM_SFT_TRAIN, 1, ids, tr, &line);
    CHECK(line == 3);
    cm_chat_message m1[] = {{"system",
                             "Below is an instruction that describes a task, paired with an input that "
                             "provides further context. Write a response that appropriately completes "
                             "the request."},
                            {"user", "Add the numbers.\n\n### Input:\n2 and 3"},
                            {"assistant", "5"}};
    k = expected_ids(tok512, CM_TEMPLATE_ALPACA, m1, 3, false, &want);
    CHECK(n == k && memcmp(ids, want, k * sizeof *ids) == 0);
    free(want);
    n = cm_sft_example(ds, CM_SFT_TRAIN, 2, ids, tr, &line);
    cm_chat_message m2[] = {{"system", "Be brief."}, {"user", "Say hi."}, {"assistant", "Hi!"}};
    k = expected_ids(tok512, CM_TEMPLATE_ALPACA, m2, 3, false, &want);
    CHECK(n == k && memcmp(ids, want, k * sizeof *ids) == 0);
    free(want);
    cm_sft_close(ds);

    /* with another template an input joins the instruction with "\n" (LLaMA-Factory) */
    o.template_id = CM_TEMPLATE_CHATML;
    ds = open_str("{\"instruction\": \"Add.\", \"input\": \"2 3\", \"output\": \"5\"}", tok512, &o);
    if (ds) {
        n = cm_sft_example(ds, CM_SFT_TRAIN, 0, ids, tr, NULL);
        cm_chat_message m[] = {{"user", "Add.\n2 3"}, {"assistant", "5"}};
        k = expected_ids(tok512, CM_TEMPLATE_CHATML, m, 2, false, &want);
        CHECK(n == k && memcmp(ids, want, k * sizeof *ids) == 0);
        free(want);
        cm_sft_close(ds);
    }

    /* JSONL with every format mixed, blank lines, CRLF; the line numbers are the file's */
    o.template_id = CM_TEMPLATE_VICUNA;
    const char *mixed = "{\"conversations\": [{\"from\": \"human\", \"value\": \"Hi\"}, {\"from\": \"gpt\", "
                        "\"value\": \"Hello!\"}]}\n"
                        "\n"
                        "{\"messages\": [{\"role\": \"system\", \"content\": \"S.\"}, {\"role\": \"user\", "
                        "\"content\": \"Q1\"}, "
                        "{\"role\": \"assistant\", \"content\": \"A1\", \"weight\": 0}, {\"role\": \"user\", "
                        "\"content\": \"Q2\"}, "
                        "{\"role\": \"assistant\", \"content\": \"A2\"}]}\r\n"
                        "{\"prompt\": \"P\", \"completion\": \"C\"}\n"
                        "   \n"
                        "{\"instruction\": \"I\", \"output\": \"O\"}";
    ds = open_str(mixed, tok512, &o);
    if (!ds) return;
    CHECK(cm_sft_examples(ds, CM_SFT_TRAIN) == 4);
    size_t lines[] = {1, 3, 4, 6};
    cm_chat_message c0[] = {{"user", "Hi"}, {"assistant", "Hello!"}};
    cm_chat_message c1[] = {
        {"system", "S."}, {"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}, {"assistant", "A2"}};
    cm_chat_message c2[] = {{"user", "P"}, {"assistant", "C"}};
    cm_chat_message c3[] = {{"user", "I"}, {"assistant", "O"}};
    const cm_chat_message *convs[] = {c0, c1, c2, c3};
    size_t lens[] = {2, 5, 2, 2};
    const char *replies[] = {"Hello!", "A2", "C", "O"};
    for (int i = 0; i < 4; i++) {
        n = cm_sft_example(ds, CM_SFT_TRAIN, (size_t)i, ids, tr, &line);
        CHECK(line == lines[i]);
        k = expected_ids(tok512, CM_TEMPLATE_VICUNA, convs[i], lens[i], false, &want);
        CHECK(n == k && memcmp(ids, want, k * sizeof *ids) == 0);
        free(want);
        t = trained_text(tok512, ids, tr, n);
        /* vicuna's reply starts with the space after "ASSISTANT:" (the decoder drops a leading one) */
        CHECK(t && strcmp(t, replies[i]) == 0);
        if (!t || strcmp(t, replies[i])) fprintf(stderr, "  record %d trained \"%s\"\n", i, t ? t : "(null)");
        free(t);
    }
    cm_sft_close(ds);

    /* a forced format refuses records of another */
    o.format = CM_SFT_FORMAT_SHAREGPT;
    CHECK_FAIL(cm_sft_open_buffer(mixed, strlen(mixed), "mixed.jsonl", tok512, &o, &ds),
               "mixed.jsonl:3: missing \"conversations\"");
    o.format = CM_SFT_FORMAT_AUTO;

    /* format names */
    for (int f = 0; f < CM_SFT_FORMAT_COUNT; f++) {
        cm_sft_format back;
        CHECK(cm_sft_format_from_name(cm_sft_format_name((cm_sft_format)f), &back) == CM_OK &&
              (int)back == f);
    }
    cm_sft_format back;
    CHECK_FAIL(cm_sft_format_from_name("csv", &back), "unknown dataset format");
}

/* ShareGPT's trimming (FastChat): a leading gpt turn and a trailing human turn are dropped and counted */
static void test_trimming(void) {
    cm_sft_options o = opts(CM_TEMPLATE_VICUNA, 512);
    const char *j =
        "[{\"conversations\": [{\"from\": \"gpt\", \"value\": \"Hi, I am a bot.\"}, {\"from\": \"human\", "
        "\"value\": \"Q\"}, {\"from\": \"gpt\", \"value\": \"A\"}, {\"from\": \"human\", \"value\": "
        "\"Bye\"}], \"system\": \"Sys.\"}]";
    cm_sft_dataset *ds = open_str(j, tok512, &o);
    if (!ds) return;
    CHECK(cm_sft_stats_of(ds, CM_SFT_ALL)->dropped_turns == 2);
    int32_t ids[512], *want;
    uint8_t tr[512];
    size_t n = cm_sft_example(ds, CM_SFT_TRAIN, 0, ids, tr, NULL);
    cm_chat_message m[] = {{"system", "Sys."}, {"user", "Q"}, {"assistant", "A"}};
    size_t k = expected_ids(tok512, CM_TEMPLATE_VICUNA, m, 3, false, &want);
    CHECK(n == k && memcmp(ids, want, k * sizeof *ids) == 0);
    free(want);
    cm_sft_close(ds);
}

/* ---- the mask under every template, on real conversations, against cm_chat_tokenize ---- */

static void check_template_on(const cm_tokenizer *tok, cm_template_id t, const char *path, size_t limit) {
    cm_sft_options o = opts(t, 4096);
    cm_sft_dataset *ds = NULL;
    if (cm_sft_open(path, tok, &o, &ds) != CM_OK) {
        fprintf(stderr, "%s with %s: %s\n", path, cm_template_name(t), cm_last_error());
        check_failures++;
        return;
    }
    /* the conversations are read back from the file independently, with jansson */
    json_error_t je;
    json_t *all = json_load_file(path, 0, &je);
    CHECK(all && json_is_array(all));
    size_t n_ex = cm_sft_examples(ds, CM_SFT_TRAIN), bad = 0;
    CHECK(n_ex == json_array_size(all));
    int32_t *ids = malloc(4096 * sizeof *ids);
    uint8_t *tr = malloc(4096);
    for (size_t i = 0; i < n_ex && i < limit; i++) {
        json_t *conv = json_object_get(json_array_get(all, i), "conversations");
        size_t nm = json_array_size(conv);
        cm_chat_message *m = calloc(nm, sizeof *m);
        for (size_t k = 0; k < nm; k++) {
            json_t *x = json_array_get(conv, k);
            m[k].role = strcmp(json_string_value(json_object_get(x, "from")), "human") ? "assistant" : "user";
            m[k].content = json_string_value(json_object_get(x, "value"));
        }
        size_t n = cm_sft_example(ds, CM_SFT_TRAIN, i, ids, tr, NULL);
        int32_t *want;
        size_t k = expected_ids(tok, t, m, nm, false, &want);
        if (n != k || memcmp(ids, want, k * sizeof *ids)) bad++;
        free(want);
        /* the prompt of the first reply is what chat feeds the model (where the template keeps it a token
         * prefix: true of all six with these tokenizers on this data) */
        k = expected_ids(tok, t, m, 1, true, &want);
        size_t f = first_trained(tr, n);
        if (t == CM_TEMPLATE_GUANACO) {
            /* its prompt ends "### Assistant: ": that space may join the reply's first token ("▁I") */
            if ((f != k && f + 1 != k) || memcmp(ids, want, f * sizeof *ids)) bad++;
        } else if (f != k || memcmp(ids, want, k * sizeof *ids)) {
            bad++;
        }
        free(want);
        /* every assistant reply is trained, nothing of the user's: the trained text is the replies */
        size_t total = 0;
        for (size_t q = 1; q < nm; q += 2) total += strlen(m[q].content);
        char *text = trained_text(tok, ids, tr, n);
        size_t have = 0;
        for (const char *c = text; c && *c; c++) have += *c != ' ' && *c != '\n';
        size_t want_chars = 0;
        for (size_t q = 1; q < nm; q += 2)
            for (const char *c = m[q].content; *c; c++) want_chars += *c != ' ' && *c != '\n';
        /* markers a vocabulary lacks are trained as text: count only the replies' own characters there */
        bool markers_as_text = (t == CM_TEMPLATE_CHATML || t == CM_TEMPLATE_LLAMA3);
        if (!markers_as_text && have != want_chars) bad++;
        if (!markers_as_text && text) {
            for (size_t q = 1; q < nm; q += 2)
                if (!strstr(text, m[q].content)) bad++;
            if (i == 0 && bad) fprintf(stderr, "  trained text: \"%s\"\n", text);
        }
        (void)total;
        free(text);
        free(m);
    }
    if (bad)
        fprintf(stderr, "%s, template %s: %zu mismatches in the first %zu conversations\n", path,
                cm_template_name(t), bad, limit);
    CHECK(bad == 0);
    free(ids);
    free(tr);
    json_decref(all);
    cm_sft_close(ds);
}

static void test_templates(void) {
    const char *path = cm_test_shared("sft/fastchat-dummy-conversation/dummy_conversation.json");
    for (int t = 0; t < CM_TEMPLATE_COUNT; t++) {
        check_template_on(tok512, (cm_template_id)t, path, 500);
        check_template_on(llama2, (cm_template_id)t, path, 200);
    }
}

/* chatml on a vocabulary without its markers: <|im_end|> is trained as text, the "\n" after it and the
 * separating EOS are not; guanaco has no end marker: the EOS appended after the reply is trained */
static void test_end_of_turn(void) {
    int32_t ids[256];
    uint8_t tr[256];
    const char *j = "{\"prompt\": \"Q\", \"completion\": \"A\"}";
    cm_sft_options o = opts(CM_TEMPLATE_CHATML, 256);
    cm_sft_dataset *ds = open_str(j, tok512, &o);
    if (ds) {
        size_t n = cm_sft_example(ds, CM_SFT_TRAIN, 0, ids, tr, NULL);
        int eos = cm_tokenizer_eos(tok512);
        CHECK(n > 3 && ids[n - 1] == eos && !tr[n - 1] && !tr[n - 2] && tr[n - 3]);
        char *t = trained_text(tok512, ids, tr, n);
        CHECK(t && strcmp(t, "A<|im_end|>") == 0);
        free(t);
        cm_sft_close(ds);
    }
    o.template_id = CM_TEMPLATE_GUANACO;
    ds = open_str(j, tok512, &o);
    if (ds) {
        size_t n = cm_sft_example(ds, CM_SFT_TRAIN, 0, ids, tr, NULL);
        CHECK(ids[n - 1] == cm_tokenizer_eos(tok512) && tr[n - 1] && tr[n - 2]);
        cm_sft_close(ds);
    }
    /* train_on_prompt: everything after the first token */
    o.train_on_prompt = true;
    ds = open_str(j, tok512, &o);
    if (ds) {
        size_t n = cm_sft_example(ds, CM_SFT_TRAIN, 0, ids, tr, NULL);
        size_t k = 0;
        for (size_t i = 1; i < n; i++) k += tr[i];
        CHECK(k == n - 1 && cm_sft_stats_of(ds, CM_SFT_ALL)->trained_tokens == n - 1);
        cm_sft_close(ds);
    }
}

/* ---- truncation and skipping ---- */

static void test_lengths(void) {
    cm_chat_message p[] = {{"user", "Tell me a story."}};
    int32_t *want;
    size_t P = expected_ids(tok512, CM_TEMPLATE_ALPACA, p, 1, true, &want); /* prompt tokens */
    free(want);
    const char *j =
        "{\"instruction\": \"Tell me a story.\", \"output\": \"Once upon a time there was a cat.\"}\n"
        "{\"instruction\": \"Tell me a story.\", \"output\": \"A\"}\n";
    int32_t ids[512];
    uint8_t tr[512];
    /* seq = P + 1: the prompt and one response token fit; the first example is cut, the second (prompt, "A",
     * </s>) too */
    cm_sft_options o = opts(CM_TEMPLATE_ALPACA, (int)P + 1);
    cm_sft_dataset *ds = open_str(j, tok512, &o);
    if (ds) {
        const cm_sft_stats *s = cm_sft_stats_of(ds, CM_SFT_ALL);
        CHECK(s->examples == 2 && s->truncated == 2 && s->skipped == 0);
        size_t n = cm_sft_example(ds, CM_SFT_TRAIN, 0, ids, tr, NULL);
        CHECK(n == P + 1 && tr[P] && first_trained(tr, n) == P && s->trained_tokens == 2);
        CHECK(s->tokens == 2 * (P + 1));
        cm_sft_close(ds);
    }
    /* seq = P: no room for a response token: both skipped, and nothing left to train on is an error */
    o.seq = (int)P;
    CHECK_FAIL(cm_sft_open_buffer(j, strlen(j), "short.jsonl", tok512, &o, &ds), "no training example left");
    /* seq = P + 2 keeps the second whole (prompt, "A", </s>: assuming "A" is one token) */
    o.seq = (int)P + 40;
    ds = open_str(j, tok512, &o);
    if (ds) {
        const cm_sft_stats *s = cm_sft_stats_of(ds, CM_SFT_ALL);
        size_t n0 = cm_sft_example(ds, CM_SFT_TRAIN, 0, ids, tr, NULL);
        size_t n1 = cm_sft_example(ds, CM_SFT_TRAIN, 1, NULL, NULL, NULL);
        CHECK(s->truncated == (n0 == (size_t)o.seq ? 1u : 0u) && s->skipped == 0);
        CHECK(n1 < (size_t)o.seq && s->longest >= n0);
        cm_sft_close(ds);
    }
    /* a mix: one kept whole, one truncated, one skipped (its instruction alone is too long) */
    char buf[4096];
    char longi[1200];
    memset(longi, 'x', sizeof longi - 1);
    longi[sizeof longi - 1] = 0;
    snprintf(buf, sizeof buf,
             "{\"instruction\": \"Hi\", \"output\": \"Yo\"}\n"
             "{\"instruction\": \"Hi\", \"output\": \"%s\"}\n"
             "{\"instruction\": \"%s\", \"output\": \"Yo\"}\n",
             longi, longi);
    o.seq = 128;
    ds = open_str(buf, tok512, &o);
    if (ds) {
        const cm_sft_stats *s = cm_sft_stats_of(ds, CM_SFT_ALL);
        CHECK(s->records == 3 && s->examples == 2 && s->truncated == 1 && s->skipped == 1);
        CHECK(cm_sft_example(ds, CM_SFT_TRAIN, 1, NULL, NULL, NULL) == 128);
        size_t line;
        cm_sft_example(ds, CM_SFT_TRAIN, 1, NULL, NULL, &line);
        CHECK(line == 2);
        CHECK(s->longest > 128);
        cm_sft_close(ds);
    }
}

/* ---- packing ---- */

static uint64_t hash_ids(const int32_t *a, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint32_t)a[i]) * 1099511628211ull;
    return h ^ n;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Walk an epoch: rows well-formed (documents, positions, targets inside documents, padding), every example
 * of the split exactly once, trained targets summing to the split's count. Returns the hash of the row
 * order (to compare epochs). */
static uint64_t check_epoch(const cm_sft_dataset *ds, cm_sft_split split, uint64_t seed, uint64_t epoch) {
    cm_sft_epoch *e;
    if (cm_sft_epoch_open(ds, split, seed, epoch, &e) != CM_OK) {
        fprintf(stderr, "epoch: %s\n", cm_last_error());
        check_failures++;
        return 0;
    }
    const int T = cm_sft_seq(ds);
    size_t rows = cm_sft_epoch_rows(e), n_ex = cm_sft_examples(ds, split);
    CHECK(rows == cm_sft_rows(ds, split));
    int32_t *tk = malloc((size_t)T * 4 * sizeof *tk), *tg = tk + T, *ps = tk + 2 * T, *dc = tk + 3 * T;
    uint64_t *seen = malloc((n_ex + 1) * sizeof *seen), *want = malloc((n_ex + 1) * sizeof *want);
    int32_t *ex = malloc((size_t)T * sizeof *ex);
    size_t n_seen = 0, trained_sum = 0, bad = 0, pad = 0;
    uint64_t order = 0;
    for (size_t r = 0; r < rows; r++) {
        size_t trained;
        CHECK_OK(cm_sft_epoch_fill(e, r, 1, tk, tg, ps, dc, &trained));
        trained_sum += trained;
        order = order * 31 + hash_ids(tk, (size_t)T);
        size_t counted = 0;
        for (int t = 0; t < T;) {
            int u = t;
            while (u < T && dc[u] == dc[t]) u++; /* one document [t, u) */
            if (t > 0 && dc[t] != dc[t - 1] + 1) bad++;
            for (int i = t; i < u; i++) {
                if (ps[i] != i - t) bad++;
                if (tg[i] >= 0) {
                    counted++;
                    if (i + 1 >= u || tg[i] != tk[i + 1]) bad++; /* never across a document */
                } else if (tg[i] != CM_SFT_IGNORE)
                    bad++;
            }
            /* padding: the rest of a row after its examples (examples start with BOS, never the pad id) */
            bool padding = u == T && t > 0;
            for (int i = t; padding && i < u; i++) padding = tk[i] == cm_sft_pad_id(ds) && tg[i] < 0;
            if (padding) {
                pad += (size_t)(u - t);
            } else {
                if (n_seen < n_ex) seen[n_seen] = hash_ids(tk + t, (size_t)(u - t));
                n_seen++;
            }
            t = u;
        }
        if (counted != trained) bad++;
    }
    if (bad) fprintf(stderr, "epoch %llu: %zu bad tokens\n", (unsigned long long)epoch, bad);
    CHECK(bad == 0);
    CHECK(n_seen == n_ex);
    CHECK(trained_sum == cm_sft_stats_of(ds, split)->trained_tokens);
    CHECK(pad + cm_sft_stats_of(ds, split)->tokens == rows * (size_t)T);
    for (size_t i = 0; i < n_ex; i++) want[i] = hash_ids(ex, cm_sft_example(ds, split, i, ex, NULL, NULL));
    if (n_seen == n_ex) {
        qsort(seen, n_ex, sizeof *seen, cmp_u64);
        qsort(want, n_ex, sizeof *want, cmp_u64);
        CHECK(memcmp(seen, want, n_ex * sizeof *seen) == 0);
    }
    /* past the end */
    CHECK_FAIL(cm_sft_epoch_fill(e, rows, 1, tk, tg, NULL, NULL, NULL), "asked of an epoch");
    free(tk);
    free(seen);
    free(want);
    free(ex);
    cm_sft_epoch_close(e);
    return order;
}

static void test_packing(void) {
    const char *path = cm_test_shared("sft/fastchat-dummy-conversation/dummy_conversation.json");
    enum { T = 1024 };
    cm_sft_options o = opts(CM_TEMPLATE_VICUNA, T);
    o.val_frac = 0.1;
    cm_sft_dataset *ds = NULL;
    CHECK_OK(cm_sft_open(path, tok512, &o, &ds));
    if (!ds) return;
    size_t n_train = cm_sft_examples(ds, CM_SFT_TRAIN), n_val = cm_sft_examples(ds, CM_SFT_VAL);
    CHECK(n_train == 450 && n_val == 50);
    /* packing pays: far fewer rows than examples, little padding */
    size_t rows = cm_sft_rows(ds, CM_SFT_TRAIN);
    const cm_sft_stats *s = cm_sft_stats_of(ds, CM_SFT_TRAIN);
    printf("packing: %zu train examples, %zu tokens -> %zu rows of %d (%.1f%% filled)\n", n_train, s->tokens,
           rows, T, 100.0 * (double)s->tokens / (double)(rows * T));
    CHECK(rows < n_train / 3);
    CHECK((double)s->tokens > 0.9 * (double)(rows * T));
    uint64_t e0 = check_epoch(ds, CM_SFT_TRAIN, 7, 0), e1 = check_epoch(ds, CM_SFT_TRAIN, 7, 1);
    CHECK(e0 != e1);                                  /* shuffled per epoch */
    CHECK(e0 == check_epoch(ds, CM_SFT_TRAIN, 7, 0)); /* deterministic */
    CHECK(e0 != check_epoch(ds, CM_SFT_TRAIN, 8, 0)); /* seeded */
    uint64_t v0 = check_epoch(ds, CM_SFT_VAL, 7, 0);
    CHECK(v0 == check_epoch(ds, CM_SFT_VAL, 9, 3)); /* validation never shuffled */
    /* a batch of rows equals its rows one by one */
    cm_sft_epoch *e;
    CHECK_OK(cm_sft_epoch_open(ds, CM_SFT_TRAIN, 7, 2, &e));
    if (e) {
        int32_t *a = malloc(4 * T * 4 * sizeof *a), *b = a + 4 * T * 2;
        CHECK_OK(cm_sft_epoch_fill(e, 3, 4, a, a + 4 * T, NULL, NULL, NULL));
        for (int r = 0; r < 4; r++) {
            CHECK_OK(cm_sft_epoch_fill(e, 3 + (size_t)r, 1, b, b + T, NULL, NULL, NULL));
            CHECK(memcmp(a + r * T, b, T * sizeof *a) == 0 &&
                  memcmp(a + 4 * T + r * T, b + T, T * sizeof *a) == 0);
        }
        free(a);
        cm_sft_epoch_close(e);
    }
    /* the split: same seed, same examples; another seed, others */
    size_t line0;
    cm_sft_example(ds, CM_SFT_VAL, 0, NULL, NULL, &line0);
    cm_sft_dataset *ds2 = NULL;
    CHECK_OK(cm_sft_open(path, tok512, &o, &ds2));
    size_t l2;
    cm_sft_example(ds2, CM_SFT_VAL, 0, NULL, NULL, &l2);
    CHECK(l2 == line0);
    cm_sft_close(ds2);
    o.seed = 99;
    CHECK_OK(cm_sft_open(path, tok512, &o, &ds2));
    bool differ = false;
    for (size_t i = 0; i < n_val; i++) {
        size_t a, b;
        cm_sft_example(ds, CM_SFT_VAL, i, NULL, NULL, &a);
        cm_sft_example(ds2, CM_SFT_VAL, i, NULL, NULL, &b);
        differ |= a != b;
    }
    CHECK(differ);
    cm_sft_close(ds2);
    cm_sft_close(ds);

    /* without packing: one example per row */
    o.no_packing = true;
    o.seed = 1337;
    CHECK_OK(cm_sft_open(path, tok512, &o, &ds));
    if (ds) {
        CHECK(cm_sft_rows(ds, CM_SFT_TRAIN) == cm_sft_examples(ds, CM_SFT_TRAIN));
        check_epoch(ds, CM_SFT_TRAIN, 7, 0);
        cm_sft_close(ds);
    }
}

/* the result does not depend on the number of threads */
static void test_threads(void) {
    const char *path = cm_test_shared("sft/llamafactory-alpaca-en-demo/alpaca_en_demo.json");
    cm_sft_options o = opts(CM_TEMPLATE_ALPACA, 256);
    cm_sft_dataset *a = NULL, *b = NULL;
    cm_pool *pool = NULL;
    CHECK_OK(cm_pool_open(2, &pool));
    CHECK_OK(cm_sft_open(path, tok512, &o, &a));
    o.pool = pool;
    CHECK_OK(cm_sft_open(path, tok512, &o, &b));
    if (a && b) {
        CHECK(memcmp(cm_sft_stats_of(a, CM_SFT_ALL), cm_sft_stats_of(b, CM_SFT_ALL), sizeof(cm_sft_stats)) ==
              0);
        int32_t x[256], y[256];
        uint8_t tx[256], ty[256];
        size_t diff = 0;
        for (size_t i = 0; i < cm_sft_examples(a, CM_SFT_TRAIN); i++) {
            size_t n = cm_sft_example(a, CM_SFT_TRAIN, i, x, tx, NULL);
            size_t m = cm_sft_example(b, CM_SFT_TRAIN, i, y, ty, NULL);
            diff += n != m || memcmp(x, y, n * sizeof *x) || memcmp(tx, ty, n);
        }
        CHECK(diff == 0);
        const cm_sft_stats *s = cm_sft_stats_of(a, CM_SFT_ALL);
        /* alpaca_en_demo: 999 records; at seq 256 with tok512 the long GPT-4 answers are mostly cut */
        CHECK(s->records == 999 && s->examples + s->skipped == 999 && s->truncated > 0);
        printf("alpaca_en_demo, tok512, seq 256: %zu examples, %zu truncated, %zu skipped, %zu tokens, %zu "
               "trained\n",
               s->examples, s->truncated, s->skipped, s->tokens, s->trained_tokens);
    }
    cm_sft_close(a);
    cm_sft_close(b);
    cm_pool_close(pool);
}

/* ---- the shared files ---- */

static void test_shared_files(void) {
    cm_sft_options o = opts(CM_TEMPLATE_ALPACA, 1024);
    cm_sft_dataset *ds = NULL;
    /* alpaca_en_demo with the Llama 2 tokenizer: nothing needs cutting at 1024; the first example's trained
     * text is its output */
    const char *demo = cm_test_shared("sft/llamafactory-alpaca-en-demo/alpaca_en_demo.json");
    o.val_frac = 0.02;
    CHECK_OK(cm_sft_open(demo, llama2, &o, &ds));
    if (ds) {
        const cm_sft_stats *s = cm_sft_stats_of(ds, CM_SFT_ALL);
        CHECK(s->records == 999 && s->examples == 999 && s->truncated == 0 && s->skipped == 0);
        CHECK(cm_sft_examples(ds, CM_SFT_VAL) == 20 && cm_sft_examples(ds, CM_SFT_TRAIN) == 979);
        json_t *all = json_load_file(demo, 0, NULL);
        int32_t ids[1024];
        uint8_t tr[1024];
        size_t bad = 0, straddled = 0;
        for (size_t i = 0; i < cm_sft_examples(ds, CM_SFT_TRAIN); i++) {
            size_t line, n = cm_sft_example(ds, CM_SFT_TRAIN, i, ids, tr, &line);
            /* pretty-printed with 5 lines per record: record k starts on line 2 + 5k */
            size_t k = (line - 2) / 5;
            char *t = trained_text(llama2, ids, tr, n);
            const char *out = json_string_value(json_object_get(json_array_get(all, k), "output"));
            /* the trained text is the output, except where the output's first characters merged with the
             * prompt's last into one token (":\"" in "### Response:\"Chillax"): that token is trained */
            size_t lt = t ? strlen(t) : 0, lo = out ? strlen(out) : 0;
            if (!t || !out || lt < lo || strcmp(t + lt - lo, out) != 0 ||
                ids[n - 1] != cm_tokenizer_eos(llama2) || !tr[n - 1]) {
                if (!bad) fprintf(stderr, "line %zu: trained \"%s\"\n  output \"%s\"\n", line, t, out);
                bad++;
            } else if (lt > lo) {
                straddled++;
                if (lt - lo > 3 || memcmp(t, ":", 1) != 0) bad++;
            }
            free(t);
        }
        CHECK(bad == 0);
        printf(
            "alpaca_en_demo, Llama 2 tokenizer: %zu of %zu training examples share their first trained token "
            "with the prompt\n",
            straddled, cm_sft_examples(ds, CM_SFT_TRAIN));
        json_decref(all);
        cm_sft_close(ds);
    }
    /* alpaca-libre: keep only status "ok" (1,202 of 2,375 in v1), as its README says */
    const char *libre = cm_test_shared("sft/alpaca-libre/alpaca_libre_tasks_v1.jsonl");
    o.keep_status = "ok";
    o.val_frac = 0;
    CHECK_OK(cm_sft_open(libre, llama2, &o, &ds));
    if (ds) {
        const cm_sft_stats *s = cm_sft_stats_of(ds, CM_SFT_ALL);
        CHECK(s->records == 2375 && s->filtered == 1173 && s->examples == 1202);
        cm_sft_close(ds);
    }
    o.keep_status = NULL; /* status ignored: every row */
    CHECK_OK(cm_sft_open(libre, llama2, &o, &ds));
    if (ds) {
        CHECK(cm_sft_stats_of(ds, CM_SFT_ALL)->examples == 2375);
        cm_sft_close(ds);
    }
    /* ShareGPT with the vicuna template: 500 conversations, 1,000 replies each ending in </s> */
    o.template_id = CM_TEMPLATE_VICUNA;
    CHECK_OK(cm_sft_open(cm_test_shared("sft/fastchat-dummy-conversation/dummy_conversation.json"), llama2,
                         &o, &ds));
    if (ds) {
        CHECK(cm_sft_examples(ds, CM_SFT_TRAIN) == 500 &&
              cm_sft_stats_of(ds, CM_SFT_ALL)->dropped_turns == 0);
        size_t eos_trained = 0;
        int32_t ids[1024];
        uint8_t tr[1024];
        for (size_t i = 0; i < 500; i++) {
            size_t n = cm_sft_example(ds, CM_SFT_TRAIN, i, ids, tr, NULL);
            for (size_t j = 0; j < n; j++) eos_trained += ids[j] == cm_tokenizer_eos(llama2) && tr[j];
        }
        CHECK(eos_trained == 1000);
        cm_sft_close(ds);
    }
}

/* One Alpaca example with the stories260K tokenizer, trained tokens in [brackets]. */
static void show_mask(void) {
    cm_sft_options o = opts(CM_TEMPLATE_ALPACA, 512);
    cm_sft_dataset *ds = open_str(
        "{\"instruction\": \"Name three colors.\", \"output\": \"Red, green and blue.\"}", tok512, &o);
    if (!ds) return;
    int32_t ids[512];
    uint8_t tr[512];
    size_t n = cm_sft_example(ds, CM_SFT_TRAIN, 0, ids, tr, NULL);
    printf("alpaca, tok512, trained in [ ]:\n");
    for (size_t j = 0; j < n; j++) {
        size_t len;
        const char *p = cm_tokenizer_piece(tok512, ids[j], &len);
        printf(tr[j] ? "[%.*s]" : "%.*s", (int)len, p);
    }
    printf("\n");
    char *t = trained_text(tok512, ids, tr, n);
    CHECK(t && strcmp(t, "Red, green and blue.") == 0);
    free(t);
    cm_sft_close(ds);
}

/* ---- malformed input ---- */

static void test_errors(void) {
    cm_sft_options o = opts(CM_TEMPLATE_ALPACA, 512);
    cm_sft_dataset *ds = NULL;
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"", "bad.json: no records"},
        {"\n  \n", "bad.json: no records"},
        {"[]", "bad.json: no records"},
        {"{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\", \"output\": \"b\"\n",
         "bad.json:2: invalid JSON"},
        {"{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": \"a\"}\n",
         "bad.json:3: missing \"output\""},
        {"{\"instruction\": 3, \"output\": \"b\"}",
         "bad.json:1: \"instruction\" must be a string, got an integer"},
        {"{\"instruction\": \"a\", \"output\": \"b\", \"input\": []}",
         "bad.json:1: \"input\" must be a string"},
        {"[\n {\"instruction\": \"a\", \"output\": \"b\"},\n\n {\"instruction\": \"a\",\n  \"output\": 5}\n]",
         "bad.json:4: \"output\" must be a string"},
        {"[\n {\"instruction\": \"a\", \"output\": \"b\"},\n 7\n]",
         "bad.json:3: a record must be a JSON object, got an "
         "integer"},
        {"[\n {\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": \"a\",\n \"output\": \"b\"}",
         "bad.json:4: the JSON array is not closed"},
        {"[\n {\"instruction\": \"a\", \"output\": \"b\"},\n]", "bad.json:3: expected a record, got ']'"},
        {"[\n {\"instruction\": \"a\", \"output\": \"b\"} x\n]", "bad.json:2: expected ',' or ']'"},
        {"[{\"instruction\": \"a\", \"output\": \"b\"}]\n]",
         "bad.json:2: unexpected text after the JSON array"},
        {"[\n {\"instruction\": \"a\", \"output\": \"b\n", "bad.json:2: the record is not closed"},
        {"[\n {\"instruction\": \"a\", \"output\":: \"b\"}\n]", "bad.json:2: invalid JSON"},
        {"{\"instruction\": \"a\", \"output\": \"b\", \"output\": \"c\"}", "bad.json:1: invalid JSON"},
        {"{\"text\": \"a\"}", "bad.json:1: unknown record"},
        {"{\"conversations\": []}", "bad.json:1: empty conversation"},
        {"{\"conversations\": {}}", "bad.json:1: \"conversations\" must be an array, got an object"},
        {"{\"conversations\": [{\"from\": \"bing\", \"value\": \"x\"}]}",
         "bad.json:1: conversations[0]: unknown "
         "\"from\" value \"bing\""},
        {"{\"conversations\": [{\"from\": \"human\"}]}", "bad.json:1: conversations[0]: missing \"value\""},
        {"{\"conversations\": [\"hi\"]}", "bad.json:1: conversations[0]: must be an object"},
        {"{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}]}", "bad.json:1: no assistant turn"},
        {"{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"human\", \"value\": "
         "\"b\"}, "
         "{\"from\": \"gpt\", \"value\": \"c\"}]}",
         "bad.json:1: turn 2: a second user turn in a row"},
        {"{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"system\", \"value\": "
         "\"b\"}]}",
         "bad.json:1: turn 2: a system turn may only come first"},
        {"{\"conversations\": [{\"from\": \"system\", \"value\": \"s\"}, {\"from\": \"human\", \"value\": "
         "\"a\"}, "
         "{\"from\": \"gpt\", \"value\": \"b\"}], \"system\": \"t\"}",
         "bad.json:1: both a system turn and a \"system\" field"},
        {"{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}",
         "bad.json:1: messages[0]: unknown role "
         "\"tool\""},
        {"{\"messages\": [{\"role\": \"user\", \"content\": null}]}",
         "bad.json:1: messages[0]: \"content\" must be a "
         "string, got null"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": "
         "\"a\", "
         "\"weight\": 2}]}",
         "bad.json:1: messages[1]: \"weight\" must be 0 or 1"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": "
         "\"a\", "
         "\"weight\": 0}]}",
         "bad.json:1: every assistant turn has weight 0"},
        {"{\"prompt\": \"p\"}", "bad.json:1: missing \"completion\""},
        {"{\"instruction\": \"a\", \"output\": \"b\\u0000\"}", "bad.json:1: invalid JSON"},
        {"[{\"instruction\": \"a\", \"output\": \"b\"}, {\"instruction\": \"a\", \"output\": \"b\", \"x\": "
         "[[[[}]",
         "bad.json:1: the record is not closed"},
        {"[{\"instruction\": \"a\", \"output\": \"b\"}, {\"instruction\": \"a\", \"output\": \"b\", \"x\": "
         "[[}]]}]",
         "bad.json:1: expected ',' or ']' after a record"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cm_status st = cm_sft_open_buffer(cases[i].text, strlen(cases[i].text), "bad.json", tok512, &o, &ds);
        if (st == CM_OK || !strstr(cm_last_error(), cases[i].needle)) {
            fprintf(stderr, "case %zu: %s: got \"%s\", want \"%s\"\n", i,
                    st == CM_OK ? "accepted" : "wrong message", st == CM_OK ? "" : cm_last_error(),
                    cases[i].needle);
            check_failures++;
            cm_sft_close(ds);
            ds = NULL;
        }
    }
    /* every record filtered out */
    o.keep_status = "ok";
    const char *f = "{\"instruction\": \"a\", \"output\": \"b\", \"status\": \"bad\"}";
    CHECK_FAIL(cm_sft_open_buffer(f, strlen(f), "bad.json", tok512, &o, &ds),
               "every record was filtered out");
    o.keep_status = NULL;
    /* bad options */
    const char *ok = "{\"instruction\": \"a\", \"output\": \"b\"}";
    o.seq = 1;
    CHECK_FAIL(cm_sft_open_buffer(ok, strlen(ok), "x", tok512, &o, &ds), "seq must be at least 2");
    o.seq = 512;
    o.val_frac = 1.0;
    CHECK_FAIL(cm_sft_open_buffer(ok, strlen(ok), "x", tok512, &o, &ds), "val_frac");
    o.val_frac = 0;
    CHECK_FAIL(cm_sft_open("/nonexistent/data.json", tok512, &o, &ds), "/nonexistent/data.json");
    /* a one-example dataset with val_frac > 0 keeps it for training */
    o.val_frac = 0.5;
    ds = open_str(ok, tok512, &o);
    if (ds) CHECK(cm_sft_examples(ds, CM_SFT_TRAIN) == 1 && cm_sft_examples(ds, CM_SFT_VAL) == 0);
    cm_sft_close(ds);
}

int main(void) {
    CHECK_OK(cm_tokenizer_open(cm_test_shared("models/stories260K/tok512.bin"), 0, &tok512));
    CHECK_OK(
        cm_tokenizer_open(cm_test_shared("tokenizers/llama2-sentencepiece/tokenizer.model"), 0, &llama2));
    if (!tok512 || !llama2) CHECK_DONE();
    test_formats();
    test_trimming();
    test_end_of_turn();
    test_lengths();
    test_errors();
    show_mask();
    test_packing();
    test_threads();
    test_templates();
    test_shared_files();
    cm_tokenizer_close(tok512);
    cm_tokenizer_close(llama2);
    CHECK_DONE();
}
