#!/usr/bin/env bash
# Fine-tuning memory and speed (issue "Fine-tune like Alpaca, Vicuna and Guanaco"): peak RSS (/usr/bin/time -v)
# and tokens/s of LoRA and QLoRA at the stories110M and tinyllama-1.1b shapes (random weights), and of full
# fine-tuning at 110M, on the Alpaca demo set. Prints a table; it is not a test.
# Usage: bench/finetune_mem.sh [CAMELID_BIN] [WORK_DIR] [THREADS]   (needs ~10 GB of disk in WORK_DIR)
set -euo pipefail
bin=${1:-build/bin/camelid}
work=${2:-/tmp/camelid-ftbench}
threads=${3:-$(nproc)}
root=$(cd "$(dirname "$0")/.." && pwd)
shared="${CAMELID_SHARED:-$root/../shared}"
data=$shared/data/sft/llamafactory-alpaca-en-demo/alpaca_en_demo.json
tok=$shared/data/tokenizers/llama2-sentencepiece/tokenizer.model
mkdir -p "$work"

model() { # shape -> f32 HF folder and its NF4 folder
    [ -f "$work/$1/model.safetensors" ] || "$bin" init --shape "$1" --random --seed 1 "$work/$1" >/dev/null
    [ -f "$work/$1-nf4/config.json" ] || "$bin" quantize "$work/$1" "$work/$1-nf4" --type nf4 --tokenizer "$tok" >/dev/null
}

# run NAME BASE MODE-FLAGS SEQ STEPS R: prints peak RSS, wall time and tokens/s (from the log)
run() {
    local name=$1 base=$2 flags=$3 seq=$4 steps=$5 r=$6 out="$work/run-$1"
    rm -rf "$out"
    /usr/bin/time -v "$bin" finetune "$base" $flags --tokenizer "$tok" --data "$data" --template alpaca \
        --seq "$seq" --batch 1 --steps "$steps" --lora-r "$r" --out "$out" -t "$threads" >/dev/null 2>"$work/$name.time"
    local rss wall tps
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.2f", $2 / 1048576}' "$work/$name.time")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/$name.time")
    tps=$(python3 -c 'import json,sys
r=[json.loads(l)["tokens_per_s"] for l in open(sys.argv[1]) if "tokens_per_s" in l]
print("%.0f" % (sorted(r)[len(r)//2]))' "$out/log.jsonl")
    printf "| %-26s | %8s GiB | %10s | %8s |\n" "$name" "$rss" "$wall" "$tps"
}

model stories110M
model tinyllama-1.1b
printf "| %-26s | %12s | %10s | %8s |\n" "run (seq 512, batch 1)" "peak RSS" "wall" "tok/s"
printf "|%s|%s|%s|%s|\n" "----------------------------" "--------------" "------------" "----------"
run "110M LoRA r16" "$work/stories110M" --lora 512 4 16
run "110M QLoRA r16" "$work/stories110M-nf4" --qlora 512 4 16
run "110M full" "$work/stories110M" "" 512 4 16
run "1.1B LoRA r16" "$work/tinyllama-1.1b" --lora 512 2 16
run "1.1B QLoRA r16" "$work/tinyllama-1.1b-nf4" --qlora 512 2 16
