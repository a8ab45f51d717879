#!/usr/bin/env bash
# camelid quantize --type nf4 on stories260K: the bitsandbytes folder (config, tokenizer files carried over),
# generation from it (the same text whichever input format it was made from), the log-likelihood of the first
# 4,096 tokens of the TinyStories validation sample within 10% of F32's, --no-double-quant, and malformed NF4
# folders each a one-line error.
source "$(dirname "$0")/lib.bash"
TOK=$S260/tok512.bin
Q=$TMP/s260-nf4

"$BIN" quantize "$S260/stories260K.bin" "$Q" --type nf4 --tokenizer "$TOK" -t 2 2>"$TMP/err"
grep -q "35 NF4 linears (double quantization), 12 BF16 tensors" "$TMP/err" && pass "quantize to NF4" ||
    fail "quantize to NF4: $(cat "$TMP/err")"
for f in config.json model.safetensors tokenizer.model tokenizer.json tokenizer_config.json generation_config.json; do
    [ -s "$Q/$f" ] || fail "NF4 folder lacks $f"
done
python3 - "$Q" <<'EOF' && pass "quantization_config and tensor layout" || fail "quantization_config and tensor layout"
import json, struct, sys
d = sys.argv[1]
c = json.load(open(d + "/config.json"))["quantization_config"]
assert c["quant_method"] == "bitsandbytes" and c["load_in_4bit"] and c["bnb_4bit_quant_type"] == "nf4"
assert c["bnb_4bit_use_double_quant"] is True and c["bnb_4bit_quant_storage"] == "uint8"
b = open(d + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
w = "model.layers.4.mlp.down_proj.weight"
assert h[w]["dtype"] == "U8" and h[w]["shape"] == [64 * 172 // 2, 1]
assert h[w + ".absmax"]["dtype"] == "U8" and h[w + ".absmax"]["shape"] == [172]
assert h[w + ".nested_absmax"]["shape"] == [1] and h[w + ".nested_quant_map"]["shape"] == [256]
assert h[w + ".quant_map"]["shape"] == [16]
s, e = h[w + ".quant_state.bitsandbytes__nf4"]["data_offsets"]
qs = json.loads(b[8 + n + s:8 + n + e])
assert qs["quant_type"] == "nf4" and qs["blocksize"] == 64 and qs["shape"] == [64, 172]
assert qs["nested_blocksize"] == 256 and qs["nested_dtype"] == "float32"
assert h["model.embed_tokens.weight"]["dtype"] == "BF16" and "lm_head.weight" not in h
# every tensor at a multiple of its element size from the start of the file
size = {"F32": 4, "BF16": 2, "U8": 1}
assert all((8 + n + t["data_offsets"][0]) % size[t["dtype"]] == 0 for k, t in h.items() if k != "__metadata__")
EOF

# generation: the NF4 folder, and the same quantization of an HF conversion (q/k already in HF order there)
PROMPT="Once upon a time, there was a little girl"
"$BIN" generate "$Q" --temperature 0 -n 60 -p "$PROMPT" >"$TMP/gen.txt" 2>"$TMP/err" &&
    grep -q "^$PROMPT" "$TMP/gen.txt" && [ "$(wc -c <"$TMP/gen.txt")" -gt 120 ] &&
    pass "generate from the NF4 folder" || fail "generate from the NF4 folder: $(cat "$TMP/err")"
"$BIN" convert "$S260/stories260K.bin" "$TMP/hf" --to hf --tokenizer "$TOK" 2>/dev/null
"$BIN" quantize "$TMP/hf" "$TMP/hf-nf4" --type nf4 2>"$TMP/err" || fail "quantize an HF folder: $(cat "$TMP/err")"
cmp -s "$TMP/hf/tokenizer_config.json" "$TMP/hf-nf4/tokenizer_config.json" &&
    cmp -s "$TMP/hf/tokenizer.model" "$TMP/hf-nf4/tokenizer.model" && pass "tokenizer files carried over" ||
    fail "tokenizer files carried over"
"$BIN" generate "$TMP/hf-nf4" --temperature 0 -n 60 -p "$PROMPT" >"$TMP/gen2.txt" 2>/dev/null
same_text "same text from an HF input" "$TMP/gen2.txt" "$TMP/gen.txt"
cmp -s "$Q/model.safetensors" "$TMP/hf-nf4/model.safetensors" && pass "same model.safetensors from .bin and HF" ||
    fail "same model.safetensors from .bin and HF"

# the first 4,096 tokens of the TinyStories validation sample: the longest prefix of the text that tokenizes to
# 4,097 ids (BOS + 4,096 scored tokens), then eval's perplexity task on F32 and NF4
TEXT=$SHARED/data/corpora/tinystories-valid-sample/tinystories_val.txt
ids() { head -c "$1" "$TEXT" | "$BIN" tokenize --tokenizer "$TOK" --ids | wc -w; }
lo=4096 hi=20000
while [ $((hi - lo)) -gt 1 ]; do
    mid=$(((lo + hi) / 2))
    if [ "$(ids $mid)" -le 4097 ]; then lo=$mid; else hi=$mid; fi
done
head -c "$lo" "$TEXT" >"$TMP/first4096.txt"
for m in f32 nf4; do
    model=$S260/stories260K.bin
    [ $m = nf4 ] && model=$Q
    "$BIN" eval "$model" --tokenizer "$TOK" --tasks "perplexity:$TMP/first4096.txt" --out "$TMP/$m.json" --store "" \
        --no-progress -t 2 >/dev/null 2>"$TMP/err" || fail "eval $m: $(cat "$TMP/err")"
done
python3 - "$TMP/f32.json" "$TMP/nf4.json" <<'EOF' && pass "log-likelihood within 10% of F32" || fail "log-likelihood within 10% of F32"
import json, sys
r = [list(json.load(open(p))["results"].values())[0] for p in sys.argv[1:]]
ll = [x["loglikelihood"] / x["tokens"] for x in r]
rel = (ll[1] - ll[0]) / abs(ll[0])
print("stories260K, %d tokens: mean log-likelihood F32 %.5f, NF4 %.5f (%+.2f%%)" % (r[0]["tokens"], ll[0], ll[1], 100 * rel))
assert r[0]["tokens"] == r[1]["tokens"] and 4090 <= r[0]["tokens"] <= 4096 and abs(rel) < 0.10
EOF

# without double quantization: f32 block scales
"$BIN" quantize "$S260/stories260K.bin" "$TMP/plain" --type nf4 --no-double-quant --tokenizer "$TOK" 2>/dev/null
python3 - "$TMP/plain" <<'EOF' && pass "--no-double-quant layout" || fail "--no-double-quant layout"
import json, struct, sys
d = sys.argv[1]
assert json.load(open(d + "/config.json"))["quantization_config"]["bnb_4bit_use_double_quant"] is False
b = open(d + "/model.safetensors", "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
w = "model.layers.0.self_attn.q_proj.weight"
assert h[w + ".absmax"]["dtype"] == "F32" and w + ".nested_absmax" not in h
EOF
"$BIN" generate "$TMP/plain" --temperature 0 -n 20 >/dev/null 2>&1 && pass "generate without double quantization" ||
    fail "generate without double quantization"
"$BIN" inspect "$Q" --no-tensors >/dev/null 2>&1 && pass "inspect" || fail "inspect"

# malformed folders: each a one-line error naming the problem
bad() { # NAME EDIT-PYTHON EXPECTED
    rm -rf "$TMP/bad" && cp -r "$Q" "$TMP/bad"
    python3 - "$TMP/bad/model.safetensors" "$2" <<'EOF'
import json, struct, sys
path, edit = sys.argv[1], sys.argv[2]
b = open(path, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
data = b[8 + n:]
meta = h.pop("__metadata__", None)
order = sorted(h, key=lambda k: h[k]["data_offsets"][0])
t = {k: [h[k]["dtype"], h[k]["shape"], data[h[k]["data_offsets"][0]:h[k]["data_offsets"][1]]] for k in order}
W = "model.layers.2.self_attn.o_proj.weight"
exec(edit)
out, hdr, off = b"", {}, 0
for k, (dt, shape, raw) in t.items():
    hdr[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
    out += raw
    off += len(raw)
if meta: hdr["__metadata__"] = meta
hj = json.dumps(hdr).encode()
hj += b" " * (-len(hj) % 8)
open(path, "wb").write(struct.pack("<Q", len(hj)) + hj + out)
EOF
    if "$BIN" generate "$TMP/bad" -n 1 >/dev/null 2>"$TMP/err"; then
        fail "$1: accepted"
    elif [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "^camelid: error: .*$3" "$TMP/err"; then
        pass "$1"
    else
        fail "$1: $(cat "$TMP/err")"
    fi
}
QS='W + ".quant_state.bitsandbytes__nf4"'
bad "quant state not JSON" "t[$QS][2] = b'{\"quant_type\": nf4'; t[$QS][1] = [len(t[$QS][2])]" "quant state is not valid JSON"
bad "quant state shape" "s = t[$QS][2].replace(b'[64, 64]', b'[32, 128]'); t[$QS] = ['U8', [len(s)], s]" \
    "quant state shape is \[32, 128\], expected \[64, 64\]"
bad "quant state blocksize" "s = t[$QS][2].replace(b'\"blocksize\": 64', b'\"blocksize\": 100'); t[$QS] = ['U8', [len(s)], s]" \
    "blocksize\" is 100"
bad "block count" "t[W + '.absmax'] = ['U8', [63], t[W + '.absmax'][2][:63]]" "absmax\" has 1 dimension(s) and 63 values, expected \[64\]"
bad "packed size" "t[W] = ['U8', [2047, 1], t[W][2][:2047]]" "packed 4-bit weight holds 2047 bytes"
bad "missing nested scales" "del t[W + '.nested_absmax']" "nested_absmax\" is missing"
bad "FP4" "t[W + '.quant_state.bitsandbytes__fp4'] = t.pop($QS)" "FP4"
rm -rf "$TMP/bad" && cp -r "$Q" "$TMP/bad" && head -c 5000 "$Q/model.safetensors" >"$TMP/bad/model.safetensors"
"$BIN" generate "$TMP/bad" -n 1 >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && pass "truncated file" || fail "truncated file: $(cat "$TMP/err")"

# option errors
"$BIN" quantize "$S260/stories260K.bin" "$TMP/x" --type nf4 --pure 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "pure" "$TMP/err" && pass "--pure with nf4" || fail "--pure with nf4"
"$BIN" quantize "$S260/stories260K.bin" "$TMP/x.gguf" --type q4_0 --no-double-quant 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "no-double-quant" "$TMP/err" && pass "--no-double-quant with q4_0" ||
    fail "--no-double-quant with q4_0"
finish
