#!/usr/bin/env bash
# Data-parallel scaling of camelid train on this machine, and a paper estimate for clusters.
#
#   bench/mpi_scaling.sh [BUILD_DIR] [SHAPE] [STEPS]      (defaults: build stories15M 6)
#
# 1. tokens/s of `camelid train` with the same global batch (8 x 256 tokens) on 1 rank and on 2 ranks, one
#    thread each, plain data parallel and ZeRO-1, and the share of the step spent in collectives (log.jsonl's
#    comm_s: all-reduce of the gradient, or reduce-scatter + all-gather, and waiting for the slower rank);
# 2. the all-reduce bandwidth of the gradient-sized buffers (bench_allreduce), over shared memory and over
#    TCP on loopback (as between hosts);
# 3. the step time of the stories110M shape on one core (bench_train, 4 x 256 tokens) and from it, with the
#    measured TCP bus bandwidth and latency, the ring all-reduce estimate for 8 and 64 hosts:
#    t(H) = t_compute + 2 (H-1)/H x 4 N bytes / busbw + 2 (H-1) x latency (weak scaling: each host keeps its
#    4 x 256 tokens, so the global batch grows with H).
# Prints figures; nothing fails on a slow machine. Needs mpirun (openmpi-bin) and an MPI build.
set -euo pipefail
BUILD=${1:-build}
SHAPE=${2:-stories15M}
STEPS=${3:-6}
BIN=$BUILD/bin/camelid
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${CAMELID_SHARED:-$ROOT/../shared}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIRUN=(mpirun --oversubscribe -np 2)
TCP=(--mca btl tcp,self --mca btl_tcp_if_include lo)
T=$(mktemp -d "${TMPDIR:-/tmp}/camelid-mpi-bench-XXXXXX")
trap 'rm -rf "$T"' EXIT

"$BIN" tokenize-corpus --tokenizer "$SHARED/data/models/stories260K/tok512.bin" \
    "$SHARED/data/corpora/tinystories-valid-sample/tinystories_val.txt" --out "$T/data" --seq 256 -t 2 >/dev/null 2>&1
args=(--config "$SHAPE" --data "$T/data" --batch 8 --seq 256 --steps "$STEPS" --eval-every 0 --lr 1e-4 -t 1)

# median tokens/s and collective share over the steps after the first (warm-up)
summary() {
    python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
tps = statistics.median(r["tokens_per_s"] for r in rows)
share = statistics.median(r["comm_s"] * r["tokens_per_s"] / (8 * 256) for r in rows) if "comm_s" in rows[0] else 0.0
print("%.1f %.3f" % (tps, share))
PY
}
echo "== $SHAPE, global batch 8 x 256 tokens, $STEPS steps, one thread per rank (median of steps 2..$STEPS)"
"$BIN" train "${args[@]}" --out "$T/r1" >/dev/null 2>&1
read -r tps1 _ < <(summary "$T/r1/log.jsonl")
"${MPIRUN[@]}" "$BIN" train "${args[@]}" --out "$T/r2" >/dev/null 2>"$T/r2.err"
read -r tps2 share2 < <(summary "$T/r2/log.jsonl")
"${MPIRUN[@]}" "$BIN" train "${args[@]}" --zero 1 --out "$T/z2" >/dev/null 2>"$T/z2.err"
read -r tpsz sharez < <(summary "$T/z2/log.jsonl")
"${MPIRUN[@]}" "${TCP[@]}" "$BIN" train "${args[@]}" --zero 1 --out "$T/t2" >/dev/null 2>"$T/t2.err"
read -r tpst sharet < <(summary "$T/t2/log.jsonl")
printf '%-34s %10s %9s %14s\n' "" "tokens/s" "speed-up" "in collectives"
printf '%-34s %10.1f %9s %14s\n' "1 rank" "$tps1" "1.00x" "-"
printf '%-34s %10.1f %8.2fx %13.0f%%\n' "2 ranks (shared memory)" "$tps2" "$(echo "$tps2 / $tps1" | bc -l)" "$(echo "$share2 * 100" | bc -l)"
printf '%-34s %10.1f %8.2fx %13.0f%%\n' "2 ranks ZeRO-1 (shared memory)" "$tpsz" "$(echo "$tpsz / $tps1" | bc -l)" "$(echo "$sharez * 100" | bc -l)"
printf '%-34s %10.1f %8.2fx %13.0f%%\n' "2 ranks ZeRO-1 (TCP on loopback)" "$tpst" "$(echo "$tpst / $tps1" | bc -l)" "$(echo "$sharet * 100" | bc -l)"
sed -n 's/^camelid: train: //p' "$T/r2.err" "$T/z2.err"

echo
echo "== all-reduce of gradient-sized buffers, 2 ranks"
echo "-- shared memory"
"${MPIRUN[@]}" "$BUILD/bin/bench_allreduce" 4 64 256 | tee "$T/shm.txt"
echo "-- TCP on loopback (--mca btl tcp,self --mca btl_tcp_if_include lo)"
"${MPIRUN[@]}" "${TCP[@]}" "$BUILD/bin/bench_allreduce" 4 64 256 | tee "$T/tcp.txt"

echo
echo "== stories110M on one core (bench_train, 4 x 256 tokens per step)"
"$BUILD/bin/bench_train" stories110M 4 256 1 2 | tee "$T/110m.txt"
python3 - "$T/tcp.txt" "$T/110m.txt" <<'PY'
import re, sys
tcp = open(sys.argv[1]).read()
lat = float(re.search(r"latency ([0-9.]+) us", tcp).group(1)) * 1e-6
# the bus bandwidth of the largest buffer measured (the gradient-sized one, past every cache)
busbw = [float(l.split()[3]) for l in tcp.splitlines() if re.match(r"\s*[0-9.]+\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+\s*$", l)][-1]
t110 = open(sys.argv[2]).read()
step = float(re.search(r"step ([0-9.]+) s", t110).group(1))
nparams = float(re.search(r"\(([0-9.]+)M parameters\)", t110).group(1)) * 1e6
S = 4 * nparams
print("\n== paper estimate: stories110M (%.1fM parameters, %.0f MB of f32 gradient), ring all-reduce" % (nparams / 1e6, S / 1e6))
print("   compute %.2f s per step per host (1 core, 4 x 256 tokens); bus bandwidth %.3f GB/s and latency %.0f us"
      " as measured over TCP on loopback" % (step, busbw, lat * 1e6))
for cores in (1, 16):
    print("   hosts computing on %d core%s (%.2f s per step, 4 x 256 tokens per host):" % (cores, "s" if cores > 1 else "", step / cores))
    for link, bw in (("measured TCP loopback", busbw * 1e9), ("10 GbE (1.1 GB/s)", 1.1e9), ("100 Gb/s (11 GB/s)", 11e9)):
        for H in (8, 64):
            ar = 2 * (H - 1) / H * S / bw + 2 * (H - 1) * lat
            t = step / cores + ar
            print("   %-24s %3d hosts: all-reduce %6.2f s, step %6.2f s, all-reduce %3.0f%% of the step, %8.0f tokens/s"
                  % (link, H, ar, t, 100 * ar / t, H * 1024 / t))
print("   (16 cores: the one-core step / 16, as if the cores scaled perfectly; ZeRO-1 moves the same bytes:"
      " reduce-scatter + all-gather = one all-reduce)")
PY
