#!/usr/bin/env bash
# Fine-tuning learns: LoRA on all seven linears of stories260K over the Alpaca demo set with the alpaca template,
# lr 2e-3, batch 4, seq 256, 120 steps (the issue's run), with the CLI's default seed 1337 and with seeds 1 and 2.
# The figure "mean masked loss of the last 20 steps / the first 20" moves with the seed (batch-4 losses swing by
# about +-0.4 nats from step to step; bench/finetune_learning.sh measures the spread): 0.900, 0.865 and 0.798 for
# these three. The test asserts their mean below 0.9 (the issue's bar), every run below 0.95, and every run's
# validation loss below the base model's. (Labelled slow: the sanitizer build skips it.)
source "$(dirname "$0")/lib.bash"

args=("$S260/stories260K.bin" --tokenizer "$S260/tok512.bin"
    --data "$SHARED/data/sft/llamafactory-alpaca-en-demo/alpaca_en_demo.json" --template alpaca --batch 4 --seq 256 -t 2)
seeds=(1337 1 2)
for s in "${seeds[@]}"; do
    "$BIN" finetune "${args[@]}" --lora --steps 120 --lr 2e-3 --seed "$s" --out "$TMP/ft$s" >/dev/null 2>"$TMP/err" ||
        fail "finetune --seed $s: $(cat "$TMP/err")"
    # the base's validation loss on this seed's split: a learning rate too small to move B off zero in one step
    "$BIN" finetune "${args[@]}" --lora --steps 1 --lr 1e-12 --seed "$s" --out "$TMP/base$s" >/dev/null 2>&1 ||
        fail "base val loss, seed $s"
done
python3 - "$TMP" "${seeds[@]}" <<'PY' && pass "LoRA fine-tuning learns" || fail "learning"
import json, sys
tmp, seeds = sys.argv[1], sys.argv[2:]
ratios = []
for s in seeds:
    rows = [json.loads(l) for l in open(f"{tmp}/ft{s}/log.jsonl")]
    steps = [r["loss"] for r in rows if "loss" in r]
    val = [r["val_loss"] for r in rows if "val_loss" in r][-1]
    base = [json.loads(l)["val_loss"] for l in open(f"{tmp}/base{s}/log.jsonl") if "val_loss" in l][-1]
    first, last = sum(steps[:20]) / 20, sum(steps[-20:]) / 20
    ratios.append(last / first)
    print(f"seed {s}: first 20 {first:.4f}, last 20 {last:.4f}, ratio {last / first:.3f}; val loss {base:.4f} -> {val:.4f}")
    assert len(steps) == 120
    assert last < 0.95 * first, (s, first, last)
    assert val < base, (s, base, val)
mean = sum(ratios) / len(ratios)
print(f"mean ratio {mean:.3f}")
assert mean < 0.9, mean
PY
finish
