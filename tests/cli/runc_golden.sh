#!/usr/bin/env bash
# More prompts against llama2.c run.c (tests/data/runc_golden, made with run.c at 350e04fe): greedy and
# sampled. run.c's -n counts all positions, camelid's new tokens: n_new = n_steps - (prompt tokens - 1).
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
DIR=$TESTDATA/runc_golden
while IFS=$'\t' read -r nn steps prompt_json n_prompt temp topp seed _; do
    case "$nn" in '#'* | '') continue ;; esac
    prompt=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]), end="")' "$prompt_json" 2>/dev/null ||
        printf '%s' "${prompt_json:1:${#prompt_json}-2}")
    new=$((steps - (n_prompt - 1)))
    args=(--temperature "$temp" -n "$new")
    if [ "$seed" != "-" ]; then args+=(--samplers "temperature;top_p" --top-p "$topp" --top-k 0 --min-p 0 --seed "$seed"); fi
    if [ -n "$prompt" ]; then args+=(-p "$prompt"); fi
    "$BIN" generate "$MODEL" --tokenizer "$TOK" "${args[@]}" >"$TMP/out" 2>/dev/null || fail "$nn: exit $?"
    same_text "run.c golden $nn" "$TMP/out" "$DIR/$nn.txt"
done <"$DIR/prompts.tsv"
finish
