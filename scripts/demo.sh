#!/usr/bin/env bash
# make demo: the whole path on this machine, with nothing downloaded: train a byte-level BPE tokenizer and a
# tiny LLaMA on the fortune-cookie texts Debian's `fortunes` package ships, then generate from it.
# Usage: scripts/demo.sh [CAMELID_BIN] (DEMO_DIR, DEMO_STEPS, DEMO_THREADS override the defaults).
set -euo pipefail
bin=${1:-build/bin/camelid}
out=${DEMO_DIR:-demo-run}
steps=${DEMO_STEPS:-600}
threads=${DEMO_THREADS:-$(nproc)}
fortunes=/usr/share/games/fortunes
corpus=()
for f in "$fortunes"/*; do
    case "$f" in *.dat | *.u8 | *-o) continue ;; esac
    [ -f "$f" ] && corpus+=("$f")
done
if [ ${#corpus[@]} -eq 0 ]; then
    echo "demo: no texts in $fortunes (the fortunes package; make demo installs it)" >&2
    exit 1
fi
mkdir -p "$out"
echo "demo: 1/4 training a 1024-token byte-level BPE tokenizer on ${#corpus[@]} fortune files" >&2
"$bin" train-tokenizer --vocab-size 1024 --special "<s>" --special "</s>" --bos "<s>" --eos "</s>" \
    "${corpus[@]}" --out "$out/tokenizer/tokenizer.json"
echo "demo: 2/4 tokenizing them into shards (one fortune per document)" >&2
"$bin" tokenize-corpus --tokenizer "$out/tokenizer/tokenizer.json" "${corpus[@]}" --doc-sep $'\n%\n' \
    --seq 128 --val-frac 0.02 --out "$out/data" -t "$threads"
cat >"$out/config.json" <<'EOF'
{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "hidden_size": 96,
  "intermediate_size": 256,
  "num_hidden_layers": 4,
  "num_attention_heads": 6,
  "num_key_value_heads": 2,
  "vocab_size": 1024,
  "max_position_embeddings": 128,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "tie_word_embeddings": true,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "torch_dtype": "float32"
}
EOF
echo "demo: 3/4 training a 0.5M-parameter LLaMA (GQA, 4 layers) for $steps steps" >&2
"$bin" train --config "$out/config.json" --data "$out/data" --out "$out/run" --steps "$steps" --batch 16 \
    --seq 128 --lr 3e-3 --warmup 30 --eval-every 100 -t "$threads"
echo "demo: 4/4 generating from the trained model" >&2
for prompt in "A fool" "Love is" "The"; do
    "$bin" generate "$out/run/model" -p "$prompt" -n 60 --temperature 0.8 --seed 7 -t "$threads"
    echo
done
echo "demo: the training report is $out/run/report.html (loss curves); the log is $out/run/log.jsonl" >&2
