#!/usr/bin/env bash
# Serving load benchmark: a random-weight 110M model (stories110M shape) behind `camelid serve`, one
# streaming client, then 16 concurrent ones (aggregate tokens/s, failures, p50/p99 TTFT and inter-token
# latency), then a soak with 16 clients while the server's RSS is sampled every second.
# usage: bench/serve_load.sh [BIN] [SOAK_SECONDS]   (env: TOKENS=128 THREADS=nproc)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$root/build/bin/camelid}
SOAK=${2:-120}
TOKENS=${TOKENS:-128}
THREADS=${THREADS:-$(nproc)}
SHARED=${CAMELID_SHARED:-$root/../shared}
MODEL=${MODEL:-/tmp/s110m.gguf}
if [ ! -f "$MODEL" ]; then
    "$BIN" init --shape stories110M --random --seed 1 \
        --tokenizer "$SHARED/data/tokenizers/llama2-sentencepiece/tokenizer.model" /tmp/s110m
    "$BIN" convert /tmp/s110m "$MODEL" --to gguf
fi
log=$(mktemp)
"$BIN" serve "$MODEL" --port 0 --parallel 16 --ctx 512 -t "$THREADS" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 600); do grep -q "ready:" "$log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log")
base="http://127.0.0.1:$port"
echo "model $MODEL, $THREADS threads, --parallel 16, $TOKENS tokens per request"
one=$(node "$root/bench/serve_load.mjs" "$base" 1 3 "$TOKENS")
echo "1 client:   $one"
many=$(node "$root/bench/serve_load.mjs" "$base" 16 2 "$TOKENS")
echo "16 clients: $many"
node -e 'const a = JSON.parse(process.argv[1]), b = JSON.parse(process.argv[2]);
  console.log(`aggregate speed-up: ${(b.tokens_per_s / a.tokens_per_s).toFixed(2)}x (target >= 3x), failures ${a.failures + b.failures}`);' "$one" "$many"
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
echo "soak: 16 clients for ${SOAK}s; RSS (MiB) every 10 s:"
samples=()
node "$root/bench/serve_load.mjs" "$base" 16 0 "$TOKENS" "$SOAK" >"$log.soak" &
loader=$!
t=0
while kill -0 $loader 2>/dev/null; do
    r=$(rss)
    samples+=("$r")
    [ $((t % 10)) -eq 0 ] && printf '  t=%3ds rss=%d MiB\n' "$t" $((r / 1024))
    sleep 1
    t=$((t + 1))
done
wait $loader || true
echo "soak result: $(cat "$log.soak")"
rm -f "$log.soak"
n=${#samples[@]}
q=$((n / 4 > 0 ? n / 4 : 1))
first=0; last=0
for ((i = 0; i < q; i++)); do first=$((first + samples[i])); last=$((last + samples[n - 1 - i])); done
echo "RSS first quarter avg $((first / q / 1024)) MiB, last quarter avg $((last / q / 1024)) MiB"
kill -TERM $server
wait $server && echo "server exited 0"
