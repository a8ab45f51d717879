#!/usr/bin/env bash
# make demo: run camelid on a model that needs no download.
set -euo pipefail
bin=${1:-build/bin/camelid}
root=$(cd "$(dirname "$0")/.." && pwd)
shared="${CAMELID_SHARED:-$root/../shared}"
model="$shared/data/models/stories260K"
if [ -f "$model/stories260K.bin" ]; then
    echo "demo: generating from the real pretrained stories260K in $model (greedy, 200 tokens)" >&2
    exec "$bin" generate "$model/stories260K.bin" --tokenizer "$model/tok512.bin" --temperature 0 -n 200
fi
echo "demo: $model is missing (the shared data folder should sit beside the repository)" >&2
exit 1
