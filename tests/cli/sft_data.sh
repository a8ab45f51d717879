#!/usr/bin/env bash
# camelid template --data: a fine-tuning dataset rendered with its loss mask, the statistics line, and a bad
# record named by file and line (exit status 1).
source "$(dirname "$0")/lib.bash"
TOK=$S260/tok512.bin

printf '%s\n' '{"instruction": "Name three colors.", "input": "", "output": "Red, green and blue.", "status": "ok"}' \
    '{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}' >"$TMP/d.jsonl"
"$BIN" template alpaca --data "$TMP/d.jsonl" --tokenizer "$TOK" >"$TMP/out" 2>"$TMP/err" || fail "template --data"
cat >"$TMP/want" <<'X'
== TMPDIR/d.jsonl:1: 120 tokens, 13 trained
<s>Below is an instruction that describes a task. Write a response that appropriately completes the request.

### Instruction:
Name three colors.

### Response:[[Red, green and blue.</s>]]
== TMPDIR/d.jsonl:2: 103 tokens, 6 trained
<s>Below is an instruction that describes a task. Write a response that appropriately completes the request.

### Instruction:
Hi

### Response:[[Hello!</s>]]
X
sed -i "s|TMPDIR|$TMP|" "$TMP/want"
same_text "alpaca and sharegpt records through the alpaca template, trained in [[ ]]" "$TMP/out" "$TMP/want"
grep -q '^camelid: 2 records, 2 examples (0 truncated, 0 skipped' "$TMP/err" && pass "statistics line" ||
    fail "statistics line: $(cat "$TMP/err")"

# --train-on-prompt marks everything after BOS
"$BIN" template vicuna --data "$TMP/d.jsonl" --tokenizer "$TOK" --train-on-prompt --limit 1 >"$TMP/out" 2>/dev/null
head -2 "$TMP/out" | tail -1 | grep -q '^<s>\[\[A chat between.*blue\.</s>]]$' && pass "--train-on-prompt" ||
    fail "--train-on-prompt"

# a short --seq cuts the reply (never the prompt) or skips the example: the prompts are 107 and 97 tokens
"$BIN" template alpaca --data "$TMP/d.jsonl" --tokenizer "$TOK" --seq 110 >"$TMP/out" 2>"$TMP/err"
grep -q '(1 truncated, 0 skipped' "$TMP/err" && grep -q '^== .*d.jsonl:1: 110 tokens, 3 trained' "$TMP/out" &&
    grep -q "### Response:\\[\\[Red,]]$" "$TMP/out" && pass "--seq truncates the reply" || fail "--seq 110: $(cat "$TMP/err")"
"$BIN" template alpaca --data "$TMP/d.jsonl" --tokenizer "$TOK" --seq 105 >"$TMP/out" 2>"$TMP/err"
grep -q '1 examples (0 truncated, 1 skipped' "$TMP/err" && ! grep -q 'd.jsonl:1:' "$TMP/out" &&
    pass "--seq skips what does not fit" || fail "--seq 105: $(cat "$TMP/err")"
"$BIN" template alpaca --data "$TMP/d.jsonl" --tokenizer "$TOK" --seq 90 >"$TMP/out" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q 'no training example left' "$TMP/err" && pass "--seq too short for every prompt" ||
    fail "--seq 20: $(cat "$TMP/err")"

# bad records: one line naming FILE:LINE, exit status 1
printf '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "a",\n   "output": 3}\n]\n' >"$TMP/bad.json"
"$BIN" template alpaca --data "$TMP/bad.json" --tokenizer "$TOK" >/dev/null 2>"$TMP/err"
rc=$?
[ $rc -eq 1 ] && [ "$(cat "$TMP/err")" = "camelid: error: $TMP/bad.json:3: \"output\" must be a string, got an integer" ] &&
    pass "bad record named by file and line" || fail "bad record: rc $rc, $(cat "$TMP/err")"
printf '{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}\n' >"$TMP/bad.jsonl"
"$BIN" template vicuna --data "$TMP/bad.jsonl" --tokenizer "$TOK" >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "bad.jsonl:1: turn 2: a second user turn in a row" "$TMP/err" && pass "role order" ||
    fail "role order: $(cat "$TMP/err")"
"$BIN" template alpaca --data "$TMP/d.jsonl" >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "needs --tokenizer" "$TMP/err" && pass "--data needs --tokenizer" || fail "--data without tokenizer"
finish
