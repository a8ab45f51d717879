#!/usr/bin/env bash
# tokenize with byte-level BPE: GPT-2 (vocab.json + merges.txt, GGUF) and Llama 3 (encoder.json + vocab.bpe,
# --pre llama3 adds <|begin_of_text|> unless --no-bos), pieces in bytes_to_unicode form, bad --pre.
. "$(dirname "$0")/lib.bash"
BPE=$SHARED/data/tokenizers
printf 'Hello world' | "$BIN" tokenize --tokenizer "$BPE/gpt2-bpe/vocab.json" --ids >"$TMP/ids"
[ "$(cat "$TMP/ids")" = "15496 995" ] && pass "gpt2 vocab.json --ids" || fail "gpt2 vocab.json --ids: $(cat "$TMP/ids")"
printf 'Hello world' | "$BIN" tokenize --tokenizer "$BPE/gpt2-bpe/merges.txt" --pre gpt2 --ids >"$TMP/ids"
[ "$(cat "$TMP/ids")" = "15496 995" ] && pass "gpt2 merges.txt --pre gpt2" || fail "gpt2 --pre gpt2: $(cat "$TMP/ids")"
printf 'Hello world' | "$BIN" tokenize --tokenizer "$BPE/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf" --ids >"$TMP/ids"
[ "$(cat "$TMP/ids")" = "15496 995" ] && pass "gpt2 gguf --ids" || fail "gpt2 gguf --ids: $(cat "$TMP/ids")"
printf 'Hello world' | "$BIN" tokenize --tokenizer "$BPE/gpt2-bpe/vocab.json" >"$TMP/pieces"
[ "$(printf '15496\tHello\n995\tĠworld')" = "$(cat "$TMP/pieces")" ] && pass "gpt2 pieces" ||
    fail "gpt2 pieces: $(cat "$TMP/pieces")"
printf 'Hello world' | "$BIN" tokenize --tokenizer "$BPE/llama3-bpe/encoder.json" --pre llama3 --ids >"$TMP/ids"
[ "$(cat "$TMP/ids")" = "128000 9906 1917" ] && pass "llama3 --ids (BOS)" || fail "llama3 --ids: $(cat "$TMP/ids")"
printf 'Hello world' | "$BIN" tokenize --tokenizer "$BPE/llama3-bpe/vocab.bpe" --pre llama3 --no-bos --ids >"$TMP/ids"
[ "$(cat "$TMP/ids")" = "9906 1917" ] && pass "llama3 --no-bos" || fail "llama3 --no-bos: $(cat "$TMP/ids")"
if printf 'x' | "$BIN" tokenize --tokenizer "$BPE/gpt2-bpe/vocab.json" --pre gpt5 >"$TMP/out" 2>"$TMP/err"; then
    fail "bad --pre accepted"
else
    grep -q "gpt5" "$TMP/err" && pass "bad --pre" || fail "bad --pre message: $(cat "$TMP/err")"
fi
"$BIN" tokenize --help | grep -q -- "--pre" && pass "tokenize --help lists --pre" || fail "tokenize --help --pre"
finish
