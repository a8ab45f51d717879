#!/usr/bin/env bash
# The CLI contract: --help for every command, -t/--threads everywhere, last option wins, tokenize's output
# shapes, inspect's report, --stop and --no-echo.
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
for cmd in generate tokenize convert inspect; do
    "$BIN" "$cmd" --help >"$TMP/help" 2>&1 && grep -q "usage: camelid $cmd" "$TMP/help" &&
        grep -q -- "--threads" "$TMP/help" && pass "$cmd --help" || fail "$cmd --help"
    "$BIN" "$cmd" -h >/dev/null 2>&1 && pass "$cmd -h" || fail "$cmd -h"
done
"$BIN" --help | grep -q "generate" && pass "camelid --help" || fail "camelid --help"

# tokenize: ids on one line, BOS first; pieces one per line; empty text -> empty line
printf 'Once upon a time, there was a little girl' | "$BIN" tokenize --tokenizer "$TOK" --ids >"$TMP/ids"
[ "$(cat "$TMP/ids")" = "1 403 407 261 378 432 383 286 261 376 298 315 421" ] && pass "tokenize --ids" ||
    fail "tokenize --ids: $(cat "$TMP/ids")"
printf 'Once upon' | "$BIN" tokenize --tokenizer "$TOK" --no-bos >"$TMP/pieces"
[ "$(printf '403\t▁Once\n407\t▁upon')" = "$(cat "$TMP/pieces")" ] && pass "tokenize pieces" ||
    fail "tokenize pieces: $(cat "$TMP/pieces")"
printf '' | "$BIN" tokenize --tokenizer "$TOK" --ids --no-bos >"$TMP/empty"
[ "$(wc -c <"$TMP/empty")" -eq 1 ] && pass "empty text -> empty line" || fail "empty text"
printf 'Hello world\n' >"$TMP/in.txt"
"$BIN" tokenize --tokenizer "$SHARED/data/tokenizers/llama2-sentencepiece/tokenizer.model" --ids --no-bos \
    -f "$TMP/in.txt" >"$TMP/hw"
[ "$(cat "$TMP/hw")" = "15043 3186 13" ] && pass "tokenize -f keeps the newline" || fail "tokenize -f: $(cat "$TMP/hw")"
"$BIN" tokenize --tokenizer "$SHARED/data/tokenizers/llamacpp-vocab-tests/ggml-vocab-llama-spm.gguf" --ids \
    -f "$TMP/in.txt" >"$TMP/hw"
[ "$(cat "$TMP/hw")" = "1 15043 3186 13" ] && pass "tokenize from a GGUF vocab" || fail "GGUF vocab: $(cat "$TMP/hw")"
"$BIN" convert "$MODEL" "$TMP/hf" --to hf --tokenizer "$TOK" 2>/dev/null
printf 'Once upon' | "$BIN" tokenize --tokenizer "$TMP/hf" --ids >"$TMP/ids"
[ "$(cat "$TMP/ids")" = "1 403 407" ] && pass "tokenize with a folder" || fail "folder: $(cat "$TMP/ids")"

# last option wins; -t and --threads accepted everywhere
"$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 0 -n 3 -n 200 -t 1 --threads 2 >"$TMP/out" 2>/dev/null
same_text "last -n wins" "$TMP/out" "$REF/greedy_noprompt_n200.txt"
"$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 0.9 --temp=0 -n 200 >"$TMP/out" 2>/dev/null
same_text "--temp=0 after --temperature wins" "$TMP/out" "$REF/greedy_noprompt_n200.txt"
printf 'x' | "$BIN" tokenize -t 3 --tokenizer "$TOK" --ids >/dev/null && pass "tokenize -t" || fail "tokenize -t"
"$BIN" inspect --threads 2 "$MODEL" --tokenizer "$TOK" >"$TMP/inspect" && pass "inspect -t" || fail "inspect -t"

# inspect shows config with defaults, tensors, tokenizer
grep -q "n_kv_heads *4 (GQA)" "$TMP/inspect" && grep -q "rope_theta *10000" "$TMP/inspect" &&
    grep -q "layers.4.feed_forward.w2.weight" "$TMP/inspect" && grep -q "vocab_size *512" "$TMP/inspect" &&
    pass "inspect report" || fail "inspect report"
"$BIN" inspect "$TMP/hf" | grep -q "model.layers.0.self_attn.q_proj.weight *F32 *\[64, 64\] *16384" &&
    pass "inspect HF tensor table" || fail "inspect HF tensor table"
"$BIN" inspect "$SHARED/data/models/llama-2-tiny-random-gguf/llama-2-tiny-random.gguf" >"$TMP/i2" &&
    grep -q "token_embd.weight *F16" "$TMP/i2" && grep -q "vocab_size *32000" "$TMP/i2" &&
    pass "inspect F16 GGUF" || fail "inspect F16 GGUF"
"$BIN" inspect "$TOK" | grep -q "vocab_size *512" && pass "inspect tokenizer.bin" || fail "inspect tokenizer.bin"
"$BIN" inspect "$SHARED/data/tokenizers/llama2-sentencepiece/tokenizer.model" | grep -q "vocab_size *32000" &&
    pass "inspect tokenizer.model" || fail "inspect tokenizer.model"

# --no-echo prints the continuation only; --stop cuts before the stop string
P="Once upon a time, there was a little girl"
"$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 0 -p "$P" -n 116 --no-echo >"$TMP/cont" 2>/dev/null
full=$(cat "$REF/greedy_prompt_n128.txt")
[ "$P$(cat "$TMP/cont")" = "$full" ] && pass "--no-echo" || fail "--no-echo"
"$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 0 -p "$P" -n 116 --stop "park" >"$TMP/stop" 2>"$TMP/err"
[ "$(cat "$TMP/stop")" = "${full%%park*}" ] && grep -q "stop: stop string" "$TMP/err" && pass "--stop" ||
    fail "--stop: $(cat "$TMP/stop")"
# a random F16 model with the full Llama 2 vocabulary runs
"$BIN" generate "$SHARED/data/models/llama-2-tiny-random-gguf/llama-2-tiny-random.gguf" -p "Hello" -n 8 \
    --seed 1 >/dev/null 2>&1 && pass "F16 GGUF generates" || fail "F16 GGUF generates"
# same seed, same text
"$BIN" generate "$MODEL" --tokenizer "$TOK" --seed 5 -n 40 >"$TMP/a" 2>/dev/null
"$BIN" generate "$MODEL" --tokenizer "$TOK" --seed 5 -n 40 -t 1 >"$TMP/b" 2>/dev/null
cmp -s "$TMP/a" "$TMP/b" && pass "seed reproduces" || fail "seed reproduces"
finish
