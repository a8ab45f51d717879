#!/usr/bin/env bash
# Runs every fuzz target in BUILD/bin for SECONDS each, starting from its committed seed corpus
# (tests/fuzz/corpus/<name>/) in a scratch copy, so the repository's corpus never changes. Any crash fails.
set -euo pipefail
build=${1:-build-fuzz}
seconds=${2:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
shopt -s nullglob
for exe in "$build"/bin/fuzz_*; do
    name=$(basename "$exe")
    work="$scratch/$name"
    mkdir -p "$work/corpus" "$work/artifacts"
    [ -d "$root/tests/fuzz/corpus/$name" ] && cp -r "$root/tests/fuzz/corpus/$name/." "$work/corpus/"
    if "$exe" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
        -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/log" | awk '{print $2}' || true)
        echo "fuzz: $name ok (${seconds}s${runs:+, $runs runs})"
    else
        echo "fuzz: $name FAILED"
        tail -n 40 "$work/log"
        mkdir -p "$root/$build/fuzz-artifacts"
        cp "$work"/artifacts/* "$root/$build/fuzz-artifacts/" 2>/dev/null || true
        status=1
    fi
done
exit $status
