#!/usr/bin/env bash
# Greedy text is byte-identical to run.c's references on every kernel path (CAMELID_ISA, clamped to what the
# CPU has) and with 1 and 2 threads: the batched prompt (GEMM) and the decode steps (GEMV) of stories260K.
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
PROMPT="Once upon a time, there was a little girl"
for isa in scalar avx2 avx512; do
    for t in 1 2; do
        CAMELID_ISA=$isa "$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 0 -n 200 -t $t >"$TMP/out" \
            2>/dev/null || fail "$isa -t $t: generate exited $?"
        same_text "$isa -t $t greedy_noprompt_n200" "$TMP/out" "$REF/greedy_noprompt_n200.txt"
        CAMELID_ISA=$isa "$BIN" generate "$MODEL" --tokenizer "$TOK" --temperature 0 -p "$PROMPT" -n 116 -t $t \
            >"$TMP/out" 2>/dev/null || fail "$isa -t $t: generate exited $?"
        same_text "$isa -t $t greedy_prompt_n128" "$TMP/out" "$REF/greedy_prompt_n128.txt"
    done
done
finish
