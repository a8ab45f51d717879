#!/usr/bin/env bash
# --adapter DIR (generate, chat): a PEFT LoRA adapter for stories260K (tests/data/lora-stories260K, made by
# scripts/golden/lora_golden.py) changes the greedy text, identically on the llama2.c file, the GGUF and an HF
# conversion (its q/k lora_B rows follow each layout); a bad adapter is a one-line error and exit status 1.
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
ADAPTER=$TESTDATA/lora-stories260K
P="Once upon a time"
"$BIN" generate --help | grep -q -- "--adapter DIR" && pass "generate --help lists --adapter" ||
    fail "generate --help lists --adapter"
"$BIN" generate "$MODEL" --tokenizer "$TOK" -p "$P" -n 40 --temperature 0 >"$TMP/base" 2>/dev/null
"$BIN" generate "$MODEL" --tokenizer "$TOK" -p "$P" -n 40 --temperature 0 --adapter "$ADAPTER" >"$TMP/lora" \
    2>"$TMP/err"
st=$?
[ $st -eq 0 ] && [ -s "$TMP/lora" ] && ! cmp -s "$TMP/base" "$TMP/lora" && pass "generate --adapter changes the text" ||
    fail "generate --adapter (status $st): $(cat "$TMP/lora" "$TMP/err")"
"$BIN" generate "$SHARED/data/models/stories260K-gguf/stories260K.gguf" -p "$P" -n 40 --temperature 0 \
    --adapter "$ADAPTER" >"$TMP/lora-gguf" 2>/dev/null
cmp -s "$TMP/lora" "$TMP/lora-gguf" && pass "same text from the GGUF" || fail "GGUF + adapter: $(cat "$TMP/lora-gguf")"
"$BIN" convert "$MODEL" "$TMP/hf" --to hf --tokenizer "$TOK" 2>/dev/null
"$BIN" generate "$TMP/hf" -p "$P" -n 40 --temperature 0 --adapter "$ADAPTER" >"$TMP/lora-hf" 2>/dev/null
cmp -s "$TMP/lora" "$TMP/lora-hf" && pass "same text from the HF folder" || fail "HF + adapter: $(cat "$TMP/lora-hf")"

# chat: the first reply is generate's continuation of the rendered prompt, with the adapter too
printf 'Tell me a story.\n' | "$BIN" chat "$MODEL" --tokenizer "$TOK" --template alpaca -n 30 --temperature 0 \
    >"$TMP/chat-base" 2>/dev/null
printf 'Tell me a story.\n' | "$BIN" chat "$MODEL" --tokenizer "$TOK" --template alpaca -n 30 --temperature 0 \
    --adapter "$ADAPTER" >"$TMP/chat-lora" 2>"$TMP/err"
st=$?
[ $st -eq 0 ] && [ -s "$TMP/chat-lora" ] && ! cmp -s "$TMP/chat-base" "$TMP/chat-lora" &&
    pass "chat --adapter changes the reply" || fail "chat --adapter (status $st): $(cat "$TMP/err")"

# bad adapters: exit 1, one line on stderr naming the problem
mkdir -p "$TMP/bad"
cp "$ADAPTER/adapter_model.safetensors" "$TMP/bad/"
sed 's/"bias": "none"/"bias": "all"/' "$ADAPTER/adapter_config.json" >"$TMP/bad/adapter_config.json"
one_line_error() { # NAME NEEDLE command...
    local name=$1 needle=$2
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local st=$?
    if [ $st -eq 1 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q -- "$needle" "$TMP/err"; then
        pass "$name"
    else
        fail "$name (status $st): $(cat "$TMP/err")"
    fi
}
one_line_error "generate: bias all" 'bias is "all"' \
    "$BIN" generate "$MODEL" --tokenizer "$TOK" -n 5 --adapter "$TMP/bad"
one_line_error "generate: missing folder" "not a folder" \
    "$BIN" generate "$MODEL" --tokenizer "$TOK" -n 5 --adapter "$TMP/nothing-here"
mkdir -p "$TMP/noconf" && cp "$ADAPTER/adapter_model.safetensors" "$TMP/noconf/"
one_line_error "chat: no adapter_config.json" "no adapter_config.json" \
    "$BIN" chat "$MODEL" --tokenizer "$TOK" --adapter "$TMP/noconf" </dev/null
one_line_error "adapter for another model" "has shape" \
    "$BIN" generate "$MODEL" --tokenizer "$TOK" -n 5 --adapter "$TESTDATA/lora-tiny/all-linear"
finish
