#!/usr/bin/env bash
# camelid quantize: types per tensor (default mix and --pure), the tokenizer carried over, the result loads and
# generates, errors are one line.
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
"$BIN" quantize --help | grep -q "usage: camelid quantize" && pass "quantize --help" || fail "quantize --help"

# stories260K: dim 64, ffn rows of 172 (not a multiple of 32: stay F32), tied embedding = the output head;
# q4_0 wants Q6_K for it but 64 is not a multiple of 256, so Q8_0 (llama-quantize's fallback)
"$BIN" quantize "$MODEL" "$TMP/q4.gguf" --type q4_0 --tokenizer "$TOK" -t 2 2>"$TMP/err" && pass "quantize q4_0" ||
    fail "quantize q4_0: $(cat "$TMP/err")"
grep -q "1 Q8_0, 30 Q4_0, 0 Q6_K weights, 5 left as they were" "$TMP/err" && pass "q4_0 summary" ||
    fail "q4_0 summary: $(cat "$TMP/err")"
"$BIN" inspect "$TMP/q4.gguf" >"$TMP/inspect" 2>&1
grep -Eq "token_embd.weight +Q8_0" "$TMP/inspect" && grep -Eq "blk.0.attn_q.weight +Q4_0" "$TMP/inspect" &&
    grep -Eq "blk.0.ffn_down.weight +F32" "$TMP/inspect" && grep -Eq "blk.0.ffn_gate.weight +Q4_0" "$TMP/inspect" &&
    pass "q4_0 tensor types" || fail "q4_0 tensor types: $(grep -E 'token_embd|blk.0' "$TMP/inspect")"
"$BIN" generate "$TMP/q4.gguf" -p "Once upon a time" -n 24 --temperature 0 -t 2 >"$TMP/gen" 2>/dev/null &&
    [ "$(wc -w <"$TMP/gen")" -gt 10 ] && pass "q4_0 generates (tokenizer embedded)" || fail "q4_0 generate"

"$BIN" quantize "$MODEL" "$TMP/q4p.gguf" --type q4_0 --pure --tokenizer "$TOK" 2>/dev/null
"$BIN" inspect "$TMP/q4p.gguf" 2>&1 | grep -Eq "token_embd.weight +Q4_0" && pass "--pure: the head is Q4_0 too" ||
    fail "--pure head"

"$BIN" quantize "$MODEL" "$TMP/q8.gguf" --type q8_0 --tokenizer "$TOK" 2>/dev/null
"$BIN" inspect "$TMP/q8.gguf" 2>&1 | grep -Eq "blk.4.w?attn_v.weight +Q8_0" && pass "q8_0 tensor types" ||
    fail "q8_0 types"
# Q8_0 is close to F32: greedy text from the F32 model and the Q8_0 one share their start
"$BIN" generate "$MODEL" --tokenizer "$TOK" -p "Once upon a time" -n 12 --temperature 0 >"$TMP/f32" 2>/dev/null
"$BIN" generate "$TMP/q8.gguf" -p "Once upon a time" -n 12 --temperature 0 >"$TMP/q8" 2>/dev/null
[ "$(head -c 40 "$TMP/f32")" = "$(head -c 40 "$TMP/q8")" ] && pass "q8_0 greedy text starts as F32's" ||
    fail "q8_0 text: $(cat "$TMP/q8") vs $(cat "$TMP/f32")"
# every ISA path generates the same greedy text from the same file
for isa in scalar avx2 avx512; do
    CAMELID_ISA=$isa "$BIN" generate "$TMP/q4.gguf" -p "Once upon a time" -n 24 --temperature 0 -t 2 \
        >"$TMP/gen.$isa" 2>/dev/null
    cmp -s "$TMP/gen" "$TMP/gen.$isa" && pass "CAMELID_ISA=$isa: same text" || fail "CAMELID_ISA=$isa text differs"
done

# an HF folder in (GQA, F32)
"$BIN" quantize "$TESTDATA/hf-tiny/gqa-f32" "$TMP/gqa.gguf" --type q8_0 2>"$TMP/err" && pass "HF folder in" ||
    fail "HF folder in: $(cat "$TMP/err")"

"$BIN" quantize "$MODEL" "$TMP/x.gguf" --type q5_0 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "must be q8_0, q4_0 or nf4" "$TMP/err" && pass "bad --type" || fail "bad --type"
"$BIN" quantize "$MODEL" "$TMP/x.gguf" 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "needs --type" "$TMP/err" && pass "missing --type" || fail "missing --type"
finish
