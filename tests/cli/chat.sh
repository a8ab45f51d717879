#!/usr/bin/env bash
# `camelid template` prints exactly what a template makes of a conversation; `camelid chat` answers piped
# lines through a template, the first reply being what `generate` gives for the same rendered prompt.
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
cat >"$TMP/convo.json" <<'JSON'
[{"role": "system", "content": "You are a helpful assistant."},
 {"role": "user", "content": "Hello!"},
 {"role": "assistant", "content": "Hi! How can I help?"},
 {"role": "user", "content": "Tell me a story."}]
JSON
"$BIN" template vicuna <"$TMP/convo.json" >"$TMP/v"
printf 'You are a helpful assistant. USER: Hello! ASSISTANT: Hi! How can I help?</s>USER: Tell me a story. ASSISTANT:' >"$TMP/v.expected"
cmp -s "$TMP/v" "$TMP/v.expected" && pass "template vicuna" || fail "template vicuna: $(cat "$TMP/v")"
"$BIN" template llama3 -f "$TMP/convo.json" | tail -c 50 | grep -q 'assistant<|end_header_id|>' &&
    pass "template llama3 ends with the assistant's opening" || fail "template llama3"
echo '[{"role": "user", "content": "Name three colors."}]' >"$TMP/one.json"
"$BIN" template guanaco --system "Be brief." <"$TMP/one.json" >"$TMP/g"
[ "$(cat "$TMP/g")" = "Be brief. ### Human: Name three colors.### Assistant: " ] && pass "template --system" ||
    fail "template --system: [$(cat "$TMP/g")]"
"$BIN" template llama2 --tokenizer "$TOK" <"$TMP/one.json" 2>"$TMP/ids" >/dev/null
[ "$(cut -d' ' -f1 "$TMP/ids")" = "1" ] && pass "template --tokenizer prints ids with BOS as id 1" ||
    fail "template ids: $(cat "$TMP/ids")"
"$BIN" template zephyr <"$TMP/one.json" 2>"$TMP/err" >/dev/null
[ $? -eq 1 ] && grep -q "zephyr" "$TMP/err" && pass "unknown template is an error" || fail "unknown template"
echo '[{"role": "user", "content": 3}]' | "$BIN" template chatml 2>"$TMP/err" >/dev/null
[ $? -eq 1 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && pass "bad messages: one-line error" || fail "bad messages"
printf '[{"role": "user",' | "$BIN" template chatml 2>"$TMP/err" >/dev/null
[ $? -eq 1 ] && grep -q "line 1" "$TMP/err" && pass "invalid JSON names the line" || fail "invalid JSON: $(cat "$TMP/err")"

# chat with piped lines: the first reply equals generate on the rendered prompt (greedy)
printf 'Tell me a story about a cat.\nWhat happened next?\n/reset\nOnce upon a time\n' |
    "$BIN" chat "$MODEL" --tokenizer "$TOK" --template alpaca -n 40 --temperature 0 >"$TMP/chat" 2>"$TMP/err"
rc=$?
[ $rc -eq 0 ] && [ -s "$TMP/chat" ] && pass "chat answers piped lines" || fail "chat: exit $rc $(cat "$TMP/err")"
echo '[{"role": "user", "content": "Tell me a story about a cat."}]' | "$BIN" template alpaca >"$TMP/p1"
"$BIN" generate "$MODEL" --tokenizer "$TOK" -f "$TMP/p1" --no-echo -n 40 --temperature 0 \
    --stop "### Instruction:" 2>/dev/null | sed 's/^[ \n]*//' >"$TMP/g1"
head -c "$(wc -c <"$TMP/g1")" "$TMP/chat" | cmp -s - "$TMP/g1" && pass "first reply = generate on the template" ||
    fail "first reply differs: [$(head -c 200 "$TMP/chat")] vs [$(cat "$TMP/g1")]"
"$BIN" chat "$MODEL" --tokenizer "$TOK" --template nope </dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "nope" "$TMP/err" && pass "chat: unknown template" || fail "chat: unknown template"
finish
