#!/usr/bin/env bash
# Training speed against PyTorch CPU on this machine, in one run (speeds are compared only within a run):
# tokens/s of full steps (forward, backward, clip, AdamW) for the stories15M and stories110M shapes at batch 4,
# seq 256, with camelid (bench_train) and with plain torch (bench/torch_train.py, Debian python3-torch); prints
# both, the ratio, and camelid's GFLOP/s against the FMA peak. Usage: bench/train_vs_torch.sh [BUILD] [THREADS]
set -euo pipefail
build=${1:-build}
threads=${2:-2}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$build/bin/bench_train" ] || { echo "build $build first (bench_train)" >&2; exit 1; }
have_torch=1
/usr/bin/python3 -c 'import torch' 2>/dev/null || { have_torch=0; echo "(no python3-torch: apt-get install python3-torch for the comparison)" >&2; }
for shape in stories15M stories110M; do
    steps=5
    [ "$shape" = stories110M ] && steps=3
    out=$("$build/bin/bench_train" "$shape" 4 256 "$threads" "$steps")
    echo "$out"
    ours=$(echo "$out" | sed -n 's/.*  \([0-9.]*\) tokens\/s.*/\1/p')
    if [ "$have_torch" = 1 ]; then
        theirs=$(/usr/bin/python3 "$here/torch_train.py" "$shape" 4 256 "$threads" "$steps" | awk '{print $4}')
        python3 -c "print('  PyTorch %s: %s tokens/s; camelid / PyTorch = %.2fx' % ('$shape', '$theirs', $ours / $theirs))"
    fi
done
