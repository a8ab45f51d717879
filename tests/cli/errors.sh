#!/usr/bin/env bash
# Bad input never crashes: every case exits with status 1 and one line on stderr naming the problem.
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin

# expect_error NAME NEEDLE CMD...: exit 1, exactly one stderr line, starting "camelid: error:", containing NEEDLE
expect_error() {
    local name=$1 needle=$2
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    local lines
    lines=$(wc -l <"$TMP/err")
    if [ "$rc" -ne 1 ]; then
        fail "$name: exit status $rc, expected 1"
    elif [ "$lines" -ne 1 ]; then
        fail "$name: $lines lines on stderr"
        cat "$TMP/err" >&2
    elif ! grep -q "^camelid: error: " "$TMP/err"; then
        fail "$name: stderr does not start with 'camelid: error:'"
    elif ! grep -qF -- "$needle" "$TMP/err"; then
        fail "$name: message lacks \"$needle\": $(cat "$TMP/err")"
    else
        pass "$name: $(cat "$TMP/err")"
    fi
}

# llama2.c checkpoints
: >"$TMP/empty.bin"
head -c 10 "$MODEL" >"$TMP/tiny.bin"
head -c 500000 "$MODEL" >"$TMP/trunc.bin"
cp "$MODEL" "$TMP/long.bin" && printf 'xxxx' >>"$TMP/long.bin"
python3 - "$MODEL" "$TMP" <<'PY'
import struct, sys
src, tmp = sys.argv[1], sys.argv[2]
data = open(src, 'rb').read()
hdr = list(struct.unpack('7i', data[:28]))
def write(name, fields):
    open(f'{tmp}/{name}', 'wb').write(struct.pack('7i', *fields) + data[28:])
write('zero_heads.bin', hdr[:3] + [0] + hdr[4:])
write('huge_dim.bin', [1 << 30] + hdr[1:])
write('neg_layers.bin', hdr[:2] + [-5] + hdr[3:])
write('kv_not_divisor.bin', hdr[:4] + [3] + hdr[5:])
write('vocab_big.bin', hdr[:5] + [600] + hdr[6:])
PY
expect_error "empty .bin" "empty.bin" "$BIN" generate "$TMP/empty.bin" --tokenizer "$TOK"
expect_error "tiny .bin" "tiny.bin" "$BIN" generate "$TMP/tiny.bin" --tokenizer "$TOK"
expect_error "truncated .bin" "needs exactly" "$BIN" generate "$TMP/trunc.bin" --tokenizer "$TOK"
expect_error "trailing bytes .bin" "needs exactly" "$BIN" generate "$TMP/long.bin" --tokenizer "$TOK"
expect_error "zero heads" "zero_heads.bin" "$BIN" generate "$TMP/zero_heads.bin" --tokenizer "$TOK"
expect_error "huge dim" "huge_dim.bin" "$BIN" generate "$TMP/huge_dim.bin" --tokenizer "$TOK"
expect_error "negative layers" "neg_layers.bin" "$BIN" generate "$TMP/neg_layers.bin" --tokenizer "$TOK"
expect_error "kv heads not a divisor" "kv_not_divisor.bin" "$BIN" inspect "$TMP/kv_not_divisor.bin"
expect_error "vocab larger than file" "vocab_big.bin" "$BIN" generate "$TMP/vocab_big.bin" --tokenizer "$TOK"
expect_error "missing model" "no such file" "$BIN" generate "$TMP/nope.bin"
expect_error "model is a folder without config" "config.json" "$BIN" generate "$TMP"

# tokenizers
head -c 100 "$TOK" >"$TMP/tok_trunc.bin"
expect_error "truncated tokenizer" "tok_trunc.bin" "$BIN" generate "$MODEL" --tokenizer "$TMP/tok_trunc.bin"
expect_error "tokenizer vocab larger than the model" "vocabulary" \
    "$BIN" generate "$SHARED/data/models/stories260K-gguf/stories260K.gguf" \
    --tokenizer "$SHARED/data/tokenizers/llama2-sentencepiece/tokenizer.model"
expect_error "no tokenizer" "--tokenizer" "$BIN" generate "$MODEL"
printf 'caf\xc3' >"$TMP/bad_utf8.txt"
expect_error "invalid UTF-8 prompt" "UTF-8" "$BIN" generate "$MODEL" --tokenizer "$TOK" -f "$TMP/bad_utf8.txt"
expect_error "invalid UTF-8 stdin" "UTF-8" "$BIN" tokenize --tokenizer "$TOK" -f "$TMP/bad_utf8.txt"

# HF folders and safetensors
"$BIN" convert "$MODEL" "$TMP/hf" --to hf --tokenizer "$TOK" 2>/dev/null || fail "convert"
mk() { rm -rf "$TMP/$1" && cp -r "$TMP/hf" "$TMP/$1"; }
mk badjson && printf '{"hidden_size": 64,' >"$TMP/badjson/config.json"
expect_error "bad JSON config" "config.json" "$BIN" generate "$TMP/badjson"
mk badtype && sed -i 's/"hidden_size": 64/"hidden_size": "64"/' "$TMP/badtype/config.json"
expect_error "wrong JSON type" "hidden_size" "$BIN" inspect "$TMP/badtype"
mk zeroheads && sed -i 's/"num_attention_heads": 8/"num_attention_heads": 0/' "$TMP/zeroheads/config.json"
expect_error "zero heads in config" "zeroheads" "$BIN" generate "$TMP/zeroheads"
mk shape && sed -i 's/"intermediate_size": 172/"intermediate_size": 170/' "$TMP/shape/config.json"
expect_error "shape mismatch" "mlp" "$BIN" generate "$TMP/shape"
mk vocab && sed -i 's/"vocab_size": 512/"vocab_size": 500/' "$TMP/vocab/config.json"
expect_error "wrong vocab size" "embed_tokens" "$BIN" inspect "$TMP/vocab"
mk untied && sed -i 's/"tie_word_embeddings": true/"tie_word_embeddings": false/' "$TMP/untied/config.json"
expect_error "missing tensor" "lm_head.weight" "$BIN" generate "$TMP/untied"
mk rope && sed -i 's/"rope_scaling": null/"rope_scaling": {"rope_type": "weird", "factor": 2.0}/' "$TMP/rope/config.json"
expect_error "unknown rope type" "weird" "$BIN" inspect "$TMP/rope"
ST=$TMP/hf/model.safetensors
mk st_trunc && head -c 1000 "$ST" >"$TMP/st_trunc/model.safetensors"
expect_error "truncated safetensors" "model.safetensors" "$BIN" generate "$TMP/st_trunc"
mk st_tiny && printf 'abc' >"$TMP/st_tiny/model.safetensors"
expect_error "tiny safetensors" "model.safetensors" "$BIN" generate "$TMP/st_tiny"
mk st_hdr && python3 - "$TMP/st_hdr/model.safetensors" <<'PY'
import struct, sys
p = sys.argv[1]
d = bytearray(open(p, 'rb').read())
d[0:8] = struct.pack('<Q', len(d) * 4)  # header length past EOF
open(p, 'wb').write(d)
PY
expect_error "header length past EOF" "model.safetensors" "$BIN" generate "$TMP/st_hdr"
mk st_dtype && python3 - "$TMP/st_dtype/model.safetensors" <<'PY'
import sys
p = sys.argv[1]
d = open(p, 'rb').read().replace(b'"F32"', b'"F33"', 1)
open(p, 'wb').write(d)
PY
expect_error "unknown dtype" "F33" "$BIN" generate "$TMP/st_dtype"
mk st_overlap && python3 - "$TMP/st_overlap/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
d = open(p, 'rb').read()
n = struct.unpack('<Q', d[:8])[0]
h = json.loads(d[8:8 + n])
names = [k for k in h if k != '__metadata__']
a, b = names[0], names[1]
# make b overlap a
h[b]['data_offsets'] = [h[a]['data_offsets'][0], h[a]['data_offsets'][0] + (h[b]['data_offsets'][1] - h[b]['data_offsets'][0])]
hj = json.dumps(h).encode()
hj += b' ' * ((8 - len(hj) % 8) % 8)
open(p, 'wb').write(struct.pack('<Q', len(hj)) + hj + d[8 + n:])
PY
expect_error "overlapping offsets" "overlap" "$BIN" generate "$TMP/st_overlap"

# GGUF
G=$SHARED/data/models/stories260K-gguf/stories260K.gguf
head -c 20000 "$G" >"$TMP/trunc.gguf"
expect_error "truncated GGUF" "trunc.gguf" "$BIN" generate "$TMP/trunc.gguf"
head -c 7 "$G" >"$TMP/tiny.gguf"
expect_error "tiny GGUF" "tiny.gguf" "$BIN" inspect "$TMP/tiny.gguf"
python3 - "$G" "$TMP/count.gguf" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
d[8:16] = struct.pack('<q', 1 << 40)  # tensor count the file cannot hold
open(sys.argv[2], 'wb').write(d)
PY
expect_error "implausible tensor count" "count.gguf" "$BIN" generate "$TMP/count.gguf"

# command line
expect_error "unknown option" "--bogus" "$BIN" generate "$MODEL" --bogus
expect_error "bad number" "--top-k" "$BIN" generate "$MODEL" --tokenizer "$TOK" --top-k abc
expect_error "missing value" "-n" "$BIN" generate "$MODEL" --tokenizer "$TOK" -n
expect_error "bad top-p" "top-p" "$BIN" generate "$MODEL" --tokenizer "$TOK" --top-p 2
expect_error "bad --to" "--to" "$BIN" convert "$MODEL" "$TMP/x" --to onnx
expect_error "unknown command" "frobnicate" "$BIN" frobnicate
expect_error "prompt longer than context" "context" "$BIN" generate "$MODEL" --tokenizer "$TOK" -c 4 -p "Once upon a time there was"
finish
