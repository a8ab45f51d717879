#!/usr/bin/env bash
# How clearly does LoRA fine-tuning learn? (issue "Fine-tune like Alpaca, Vicuna and Guanaco"): the issue's run —
# stories260K, the Alpaca demo set, the alpaca template, LoRA on all seven linears, lr 2e-3, batch 4, seq 256,
# 120 steps — once per seed. The seed moves the validation split, the data order, the adapter init and the
# dropout masks, so the spread over seeds is the run-to-run noise of the figure "mean of the last 20 steps /
# mean of the first 20". Prints one row per seed and the mean, spread and count below 0.9; it is not a test.
# Usage: bench/finetune_learning.sh [CAMELID_BIN] [THREADS] [SEED ...]   (default seeds: 1337, the CLI's
# default, then 1 to 10 and 42)
set -euo pipefail
bin=${1:-build/bin/camelid}
threads=${2:-$(nproc)}
shift $(($# < 2 ? $# : 2))
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1337 1 2 3 4 5 6 7 8 9 10 42)
root=$(cd "$(dirname "$0")/.." && pwd)
shared="${CAMELID_SHARED:-$root/../shared}"
s260=$shared/data/models/stories260K
data=$shared/data/sft/llamafactory-alpaca-en-demo/alpaca_en_demo.json
[ -f "$data" ] || { echo "missing shared data: $data (set CAMELID_SHARED)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/camelid-ftlearn-XXXXXX")
trap 'rm -rf "$work"' EXIT

for s in "${seeds[@]}"; do
    "$bin" finetune "$s260/stories260K.bin" --tokenizer "$s260/tok512.bin" --data "$data" --template alpaca \
        --lora --steps 120 --lr 2e-3 --batch 4 --seq 256 --seed "$s" -t "$threads" --out "$work/s$s" >/dev/null 2>&1
done
python3 - "$work" "${seeds[@]}" <<'PY'
import json, statistics, sys
work, seeds = sys.argv[1], sys.argv[2:]
print("| seed | first 20 | last 20 | ratio | val loss |")
print("|---:|---:|---:|---:|---:|")
ratios = []
for s in seeds:
    rows = [json.loads(l) for l in open(f"{work}/s{s}/log.jsonl")]
    loss = [r["loss"] for r in rows if "loss" in r]
    val = [r["val_loss"] for r in rows if "val_loss" in r][-1]
    first, last = sum(loss[:20]) / 20, sum(loss[-20:]) / 20
    ratios.append(last / first)
    print(f"| {s} | {first:.3f} | {last:.3f} | {last / first:.3f} | {val:.3f} |")
sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
print(f"ratio over {len(ratios)} seeds: mean {statistics.mean(ratios):.3f}, sd {sd:.3f}, "
      f"min {min(ratios):.3f}, max {max(ratios):.3f}; below 0.9 in {sum(r < 0.9 for r in ratios)} of {len(ratios)}")
PY
