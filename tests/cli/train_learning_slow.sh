#!/usr/bin/env bash
# Learning, as issue "Train from scratch" states it: a stories260K-shape model on the TinyStories validation
# sample, batch 8, seq 128, lr 1e-3, 300 steps: the mean of the last 10 logged losses is below 0.65x the
# first 10, and the validation loss falls. (Labelled slow: the sanitizer build skips it.)
source "$(dirname "$0")/lib.bash"

"$BIN" tokenize-corpus --tokenizer "$S260/tok512.bin" "$SHARED/data/corpora/tinystories-valid-sample/tinystories_val.txt" \
    --out "$TMP/data" --seq 128 >/dev/null 2>&1 || fail "tokenize-corpus"
"$BIN" train --config stories260K --data "$TMP/data" --out "$TMP/run" --steps 300 --batch 8 --seq 128 --lr 1e-3 \
    --eval-every 100 -t 2 >/dev/null 2>&1 || fail "train"
python3 - "$TMP/run/log.jsonl" <<'PY' && pass "loss falls below 0.65x within 300 steps" || fail "learning"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 300
first = sum(r["loss"] for r in rows[:10]) / 10
last = sum(r["loss"] for r in rows[-10:]) / 10
vals = [r["val_loss"] for r in rows if "val_loss" in r]
print(f"first 10 {first:.4f}, last 10 {last:.4f}, ratio {last / first:.3f}, val {vals}")
assert last < 0.65 * first, (first, last)
assert vals == sorted(vals, reverse=True), vals
PY
finish
