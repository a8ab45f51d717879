#!/usr/bin/env bash
# train-tokenizer: CS336's reference merges and vocabulary from corpus.en, tokenizer_config.json, the written
# tokenizer.json through `camelid tokenize`; tokenize-corpus: shards and manifest (several shards, val at the
# end of the stream), the stream equal to `camelid tokenize` of each document, the same bytes with 1 and 2
# threads, and one-line errors (bad JSONL line, bad options, too small a corpus) that leave no data set behind.
. "$(dirname "$0")/lib.bash"
CS=$SHARED/data/tokenizers/cs336-bpe-train-reference
TOK=$TMP/tok/tokenizer.json

# --- train-tokenizer
"$BIN" train-tokenizer --vocab-size 500 --special '<|endoftext|>' "$CS/corpus.en" --out "$TOK" 2>"$TMP/err" ||
    fail "train-tokenizer: $(cat "$TMP/err")"
grep -q "wrote $TOK: 500 tokens (1 special, 256 bytes, 243 merges)" "$TMP/err" && pass "train-tokenizer summary" ||
    fail "train-tokenizer summary: $(cat "$TMP/err")"
python3 - "$TOK" "$CS" <<'EOF' && pass "merges and vocab equal CS336's reference" || fail "CS336 reference"
import json, sys
tok = json.load(open(sys.argv[1]))
ref_merges = open(sys.argv[2] + "/train-bpe-reference-merges.txt", encoding="utf-8").read().split("\n")
ref_merges = [m for m in ref_merges if m]
assert tok["model"]["merges"] == ref_merges, "merges differ"
ref_vocab = json.load(open(sys.argv[2] + "/train-bpe-reference-vocab.json", encoding="utf-8"))
assert set(tok["model"]["vocab"]) == set(ref_vocab), "vocab entries differ"
assert sorted(tok["model"]["vocab"].values()) == list(range(500))
assert tok["model"]["type"] == "BPE" and tok["pre_tokenizer"]["type"] == "ByteLevel"
assert tok["decoder"]["type"] == "ByteLevel"
assert tok["added_tokens"][0]["content"] == "<|endoftext|>" and tok["added_tokens"][0]["special"] is True
cfg = json.load(open(sys.argv[1].replace("tokenizer.json", "tokenizer_config.json")))
assert cfg["bos_token"] == "<|endoftext|>" and cfg["eos_token"] == "<|endoftext|>" and cfg["add_bos_token"] is True
EOF
# the trained tokenizer through camelid tokenize: BOS (0) first
printf 'Hello world' | "$BIN" tokenize --tokenizer "$TOK" >"$TMP/pieces"
[ "$(head -1 "$TMP/pieces")" = "$(printf '0\t<|endoftext|>')" ] && grep -q "Ġ" "$TMP/pieces" &&
    pass "tokenize --tokenizer trained tokenizer.json" || fail "tokenize trained: $(cat "$TMP/pieces")"
# --bos/--eos pick among the specials; a folder as --out
"$BIN" train-tokenizer --vocab-size 300 --special '<s>' --special '</s>' --eos '</s>' "$CS/german.txt" \
    --out "$TMP/tok2/" 2>"$TMP/err" && grep -q "BOS <s> = 0, EOS </s> = 1" "$TMP/err" &&
    grep -q '"eos_token": "</s>"' "$TMP/tok2/tokenizer_config.json" && pass "--eos, folder --out" ||
    fail "--eos, folder --out: $(cat "$TMP/err")"
# JSONL input: one document per line
head -n 40 "$SHARED/data/corpora/llamafactory-pretrain-demo/c4_demo.jsonl" >"$TMP/c4.jsonl"
"$BIN" train-tokenizer --vocab-size 400 --special '<|endoftext|>' "$TMP/c4.jsonl" --out "$TMP/tok3/" 2>"$TMP/err" &&
    grep -q "in 40 document(s) from 1 file(s)" "$TMP/err" && pass "train-tokenizer on JSONL" ||
    fail "train-tokenizer on JSONL: $(cat "$TMP/err")"
# errors: one line naming the problem, exit 1
err_case() { # COMMAND NAME EXPECTED-TEXT ARGS...
    local cmd=$1 name=$2 want=$3
    shift 3
    if "$BIN" "$cmd" "$@" >"$TMP/out" 2>"$TMP/err"; then
        fail "$name accepted"
    elif [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -qF -- "$want" "$TMP/err"; then
        pass "$name: $(cat "$TMP/err")"
    else
        fail "$name: $(cat "$TMP/err")"
    fi
}
err_case train-tokenizer "vocab too small" "too small" --vocab-size 200 --special x "$CS/german.txt" --out "$TMP/bad/"
err_case train-tokenizer "--bos not a special" '--bos "b" is not one of' --vocab-size 300 --special a --bos b \
    "$CS/german.txt" --out "$TMP/bad/"
err_case train-tokenizer "--out name" "name the file tokenizer.json" --vocab-size 300 "$CS/german.txt" --out "$TMP/x.json"
err_case train-tokenizer "missing input" "$TMP/nope.txt: cannot open" --vocab-size 300 "$TMP/nope.txt" --out "$TMP/bad/"

# --- tokenize-corpus: three documents separated by <|endoftext|> lines, and a JSONL file
printf 'First story.\n<|endoftext|>\nSecond one, with\n\ntwo paragraphs.\n<|endoftext|>\nThird!' >"$TMP/docs.txt"
head -c 60000 "$SHARED/data/corpora/tinystories-valid-sample/tinystories_val.txt" >"$TMP/stories.txt"
"$BIN" tokenize-corpus --tokenizer "$TOK" "$TMP/docs.txt" "$TMP/stories.txt" "$TMP/c4.jsonl" --out "$TMP/data" \
    --seq 256 --shard-tokens 20000 -t 2 2>"$TMP/err" || fail "tokenize-corpus: $(cat "$TMP/err")"
grep -q "wrote $TMP/data: 44 documents" "$TMP/err" && pass "tokenize-corpus summary" ||
    fail "tokenize-corpus summary: $(cat "$TMP/err")"
# each document as `camelid tokenize` encodes it (BOS first), in order
{
    printf 'First story.' | "$BIN" tokenize --tokenizer "$TOK" --ids
    printf 'Second one, with\n\ntwo paragraphs.' | "$BIN" tokenize --tokenizer "$TOK" --ids
    printf 'Third!' | "$BIN" tokenize --tokenizer "$TOK" --ids
    "$BIN" tokenize --tokenizer "$TOK" --ids -f "$TMP/stories.txt"
    mkdir -p "$TMP/c4"
    python3 -c '
import json, sys
for i, line in enumerate(open(sys.argv[1], encoding="utf-8")):
    open("%s/%03d" % (sys.argv[2], i), "w", encoding="utf-8").write(json.loads(line)["text"])
' "$TMP/c4.jsonl" "$TMP/c4"
    for doc in "$TMP"/c4/*; do "$BIN" tokenize --tokenizer "$TOK" --ids -f "$doc"; done
} | tr ' ' '\n' | grep . >"$TMP/want.ids"
python3 - "$TMP/data" "$TMP/want.ids" "$TOK" <<'EOF' && pass "shards and manifest" || fail "shards and manifest"
import json, math, os, struct, sys
d, want = sys.argv[1], [int(x) for x in open(sys.argv[2])]
m = json.load(open(d + "/manifest.json"))
assert m["format"] == "camelid-token-shards" and m["version"] == 1
assert m["vocab_size"] == 500 and m["bos_id"] == 0 and m["dtype"] == "uint16" and m["documents"] == 44
assert m["tokenizer"] == os.path.realpath(sys.argv[3])
stream = []
for split in ("train", "val"):
    n = 0
    for s in m[split]["shards"]:
        b = open(d + "/" + s["file"], "rb").read()
        magic, ver, dt, cnt, res = struct.unpack("<8sIIQQ", b[:32])
        assert magic == b"CMTOKSHD" and ver == 1 and dt == 2 and res == 0 and cnt == s["tokens"]
        assert len(b) == 32 + 2 * cnt and cnt <= 20000
        stream += struct.unpack("<%dH" % cnt, b[32:])
        n += cnt
    assert n == m[split]["tokens"]
total = m["train"]["tokens"] + m["val"]["tokens"]
assert m["val"]["tokens"] == max(math.ceil(0.05 * total), 257), m["val"]["tokens"]
assert len(m["train"]["shards"]) >= 2
assert stream == want, "stream differs from camelid tokenize"
assert sorted(os.listdir(d)) == sorted(["manifest.json"] + [s["file"] for s in m["train"]["shards"] + m["val"]["shards"]])
EOF
# the same bytes with one thread; --val-frac 0 gives no val split
"$BIN" tokenize-corpus --tokenizer "$TOK" "$TMP/docs.txt" "$TMP/stories.txt" "$TMP/c4.jsonl" --out "$TMP/data1" \
    --seq 256 --shard-tokens 20000 -t 1 2>/dev/null
cmp -s "$TMP/data/train_00001.bin" "$TMP/data1/train_00001.bin" && cmp -s "$TMP/data/val_00000.bin" "$TMP/data1/val_00000.bin" &&
    pass "1 and 2 threads write the same shards" || fail "threads change the shards"
"$BIN" tokenize-corpus --tokenizer "$TOK" "$TMP/stories.txt" --out "$TMP/data1" --val-frac 0 2>/dev/null &&
    python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); assert m["val"]["tokens"] == 0 and m["val"]["shards"] == []' \
        "$TMP/data1/manifest.json" && [ ! -e "$TMP/data1/val_00000.bin" ] && [ ! -e "$TMP/data1/train_00001.bin" ] &&
    pass "--val-frac 0, old shards removed" || fail "--val-frac 0"
# with stories260K's SentencePiece tokenizer (BOS 1)
"$BIN" tokenize-corpus --tokenizer "$S260/tok512.bin" "$TMP/stories.txt" --out "$TMP/data2" --seq 64 2>/dev/null &&
    python3 -c 'import json,sys,struct; m=json.load(open(sys.argv[1]+"/manifest.json")); b=open(sys.argv[1]+"/train_00000.bin","rb").read(); assert m["bos_id"] == 1 and m["vocab_size"] == 512 and struct.unpack("<H", b[32:34])[0] == 1' \
        "$TMP/data2" && pass "SentencePiece tokenizer" || fail "SentencePiece tokenizer"

# errors: one line naming the place, exit 1, the old data set untouched, nothing temporary left
printf '{"text": "fine"}\n{"text": 3}\n' >"$TMP/bad.jsonl"
before=$(ls -A "$TMP/data" | sort | tr '\n' ' ')
err_case tokenize-corpus "bad JSONL line" "$TMP/bad.jsonl:2: \"text\" should be a string" --tokenizer "$TOK" "$TMP/docs.txt" "$TMP/bad.jsonl" --out "$TMP/data"
err_case tokenize-corpus "too small" "too few" --tokenizer "$TOK" "$TMP/docs.txt" --out "$TMP/data"
err_case tokenize-corpus "missing input" "not a readable file" --tokenizer "$TOK" "$TMP/nope.txt" --out "$TMP/data"
err_case tokenize-corpus "bad --val-frac" "--val-frac" --tokenizer "$TOK" "$TMP/docs.txt" --out "$TMP/data" --val-frac 1
"$BIN" train-tokenizer --vocab-size 260 "$CS/german.txt" --out "$TMP/nobos/tokenizer.json" 2>/dev/null
err_case tokenize-corpus "no BOS" "no BOS token" --tokenizer "$TMP/nobos/tokenizer.json" "$TMP/stories.txt" --out "$TMP/data"
# ^C while tokenizing: exit status 130, nothing of the new data set left
for i in $(seq 1 12); do cat "$SHARED/data/corpora/war-and-peace/war-and-peace.txt"; done >"$TMP/big.txt"
"$BIN" tokenize-corpus --tokenizer "$TOK" "$TMP/big.txt" --out "$TMP/data" -t 1 2>"$TMP/err" &
pid=$!
sleep 0.3
kill -INT $pid
wait $pid
st=$?
[ $st -eq 130 ] && pass "^C: exit status 130" || fail "^C: exit status $st: $(cat "$TMP/err")"
rm -f "$TMP/big.txt"
[ "$(ls -A "$TMP/data" | sort | tr '\n' ' ')" = "$before" ] && pass "failed runs leave the data set as it was" ||
    fail "data folder changed: $(ls -A "$TMP/data")"

"$BIN" train-tokenizer --help | grep -q -- "--special TOKEN" && "$BIN" tokenize-corpus --help | grep -q -- "--val-frac F" &&
    pass "--help" || fail "--help"
finish
