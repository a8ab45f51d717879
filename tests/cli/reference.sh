#!/usr/bin/env bash
# `camelid generate` reproduces the reference outputs of llama2.c's run.c for stories260K from every format:
# the llama2.c .bin, the upstream GGUF, and camelid's own HF and GGUF conversions of it.
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
PROMPT="Once upon a time, there was a little girl"

"$BIN" convert "$MODEL" "$TMP/hf" --to hf --tokenizer "$TOK" 2>/dev/null || fail "convert --to hf"
"$BIN" convert "$MODEL" "$TMP/m.gguf" --to gguf --tokenizer "$TOK" 2>/dev/null || fail "convert --to gguf"
"$BIN" convert "$TMP/hf" "$TMP/hf.gguf" --to gguf 2>/dev/null || fail "convert hf --to gguf"
"$BIN" convert "$TMP/m.gguf" "$TMP/hf2" --to hf 2>/dev/null || fail "convert gguf --to hf"

for source in "bin:$MODEL --tokenizer $TOK" "gguf:$SHARED/data/models/stories260K-gguf/stories260K.gguf" \
    "hf:$TMP/hf" "gguf-written:$TMP/m.gguf" "hf-to-gguf:$TMP/hf.gguf" "gguf-to-hf:$TMP/hf2" \
    "safetensors:$TMP/hf/model.safetensors"; do
    name=${source%%:*}
    args=${source#*:}
    # shellcheck disable=SC2086
    "$BIN" generate $args --temperature 0 -n 200 >"$TMP/out" 2>"$TMP/err" || fail "$name: generate exited $?"
    same_text "$name greedy_noprompt_n200" "$TMP/out" "$REF/greedy_noprompt_n200.txt"
    # shellcheck disable=SC2086
    "$BIN" generate $args --temperature 0 -p "$PROMPT" -n 116 >"$TMP/out" 2>/dev/null || fail "$name: generate"
    same_text "$name greedy_prompt_n128" "$TMP/out" "$REF/greedy_prompt_n128.txt"
done

"$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 0 >"$TMP/out" 2>/dev/null
same_text "greedy_noprompt_n256 (default -n)" "$TMP/out" "$REF/greedy_noprompt_n256.txt"
# run.c's sampler: temperature 1, top-p 0.9, its xorshift RNG; camelid's top-k and min-p off
"$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 1 --top-p 0.9 --top-k 0 --min-p 0 --seed 133742 \
    >"$TMP/out" 2>/dev/null
same_text "sample_t1.0_p0.9_s133742_n256" "$TMP/out" "$REF/sample_t1.0_p0.9_s133742_n256.txt"
# generation stops when the model samples BOS, as run.c does (after 345 tokens)
"$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 0 -n 512 >"$TMP/out" 2>"$TMP/err"
same_text "stops at BOS like run.c" "$TMP/out" "$TESTDATA/runc_golden/bos_stop_n512.txt"
grep -q "generated 345 tokens.*stop: eos" "$TMP/err" && pass "stop reason eos" || fail "stop reason: $(cat "$TMP/err")"
# stats go to stderr, one line
"$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 0 -n 5 2>"$TMP/err" >/dev/null
grep -q "tok/s" "$TMP/err" && pass "stats on stderr" || fail "stats on stderr"
finish
