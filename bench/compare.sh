#!/usr/bin/env bash
# camelid vs llama.cpp on the same files, same threads, same run: the table of the "Fast CPU inference" issue, and
# camelid's NF4 (which llama.cpp does not read) beside llama.cpp's Q4_0.
# Usage: bench/compare.sh [THREADS] [REPS]. Uses build/bin/camelid (or $CAMELID_BIN); llama-bench from PATH or $LLAMA_BENCH
# (and llama-quantize beside it, or camelid quantize, for the Q8_0/Q4_0 files). Files go to $BENCH_DIR
# (default /tmp/camelid-bench), made once.
set -euo pipefail
threads=${1:-2}
reps=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CAMELID_BIN:-$root/build/bin/camelid}
dir=${BENCH_DIR:-/tmp/camelid-bench}
shared=${CAMELID_SHARED:-$root/../shared}
mkdir -p "$dir"
llama_bench=${LLAMA_BENCH:-$(command -v llama-bench || true)}

if [ ! -f "$dir/s110m-f32.gguf" ]; then
    "$bin" init --shape stories110M --random --seed 1 \
        --tokenizer "$shared/data/tokenizers/llama2-sentencepiece/tokenizer.model" "$dir/s110m-hf" 2>/dev/null
    "$bin" convert "$dir/s110m-hf" "$dir/s110m-f32.gguf" --to gguf 2>/dev/null
fi
for t in q8_0 q4_0; do
    [ -f "$dir/s110m-$t.gguf" ] && continue
    if "$bin" quantize --help >/dev/null 2>&1; then
        "$bin" quantize "$dir/s110m-f32.gguf" "$dir/s110m-$t.gguf" --type "$t" >/dev/null 2>&1
    elif [ -n "$llama_bench" ] && [ -x "$(dirname "$llama_bench")/llama-quantize" ]; then
        "$(dirname "$llama_bench")/llama-quantize" "$dir/s110m-f32.gguf" "$dir/s110m-$t.gguf" "$t" >/dev/null 2>&1
    fi
done

# NF4: a bitsandbytes folder llama.cpp cannot run; its row compares with llama.cpp's Q4_0 of the same shape
[ -d "$dir/s110m-nf4" ] || "$bin" quantize "$dir/s110m-hf" "$dir/s110m-nf4" --type nf4 >/dev/null 2>&1 || true

printf '%-6s | %-22s | %-22s | %-22s | %-22s\n' weights "camelid pp128 tok/s" "llama.cpp pp128" "camelid tg64 tok/s" "llama.cpp tg64"
q4_lpp= q4_ltg=
for t in f32 q8_0 q4_0 nf4; do
    f=$dir/s110m-$t.gguf
    [ $t = nf4 ] && f=$dir/s110m-nf4
    [ -e "$f" ] || continue
    cj=$("$bin" bench "$f" -p 128 -n 64 -t "$threads" -r "$reps" --json)
    cpp=$(printf '%s' "$cj" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f" % d["pp_tokens_per_s"])')
    ctg=$(printf '%s' "$cj" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f" % d["tg_tokens_per_s"])')
    lpp=- ltg=- rpp= rtg=
    if [ $t = nf4 ] && [ -n "$q4_lpp" ]; then
        lpp="$q4_lpp (Q4_0)" ltg="$q4_ltg (Q4_0)"
        rpp=$(python3 -c "print(' (%.2fx)' % ($cpp / $q4_lpp))")
        rtg=$(python3 -c "print(' (%.2fx)' % ($ctg / $q4_ltg))")
    elif [ -n "$llama_bench" ] && [ $t != nf4 ]; then
        lj=$("$llama_bench" -m "$f" -p 128 -n 64 -t "$threads" -r "$reps" -o json 2>/dev/null)
        lpp=$(printf '%s' "$lj" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f" % [x for x in d if x["n_prompt"]>0][0]["avg_ts"])')
        ltg=$(printf '%s' "$lj" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f" % [x for x in d if x["n_gen"]>0][0]["avg_ts"])')
        rpp=$(python3 -c "print(' (%.2fx)' % ($cpp / $lpp))")
        rtg=$(python3 -c "print(' (%.2fx)' % ($ctg / $ltg))")
    fi
    [ $t = q4_0 ] && q4_lpp=$lpp q4_ltg=$ltg
    [ "$q4_lpp" = - ] && q4_lpp=
    printf '%-6s | %-22s | %-22s | %-22s | %-22s\n' "$t" "$cpp$rpp" "$lpp" "$ctg$rtg" "$ltg"
done
