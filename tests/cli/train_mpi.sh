#!/usr/bin/env bash
# camelid train under mpirun: 2 ranks with the same global batch reproduce one process's losses (within 1e-5
# per step) with and without --zero 1, over shared memory and over TCP on loopback with a hostfile (the
# multi-host recipe); checkpoints written by 2 ranks resume on 1 and the reverse; bad splits and a rank that
# fails alone or is killed end every rank within seconds with a clear message, the last checkpoint intact.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/mpi.bash"

D=$TMP/data
"$BIN" tokenize-corpus --tokenizer "$S260/tok512.bin" "$SHARED/data/corpora/tinystories-valid-sample/tinystories_val.txt" \
    --out "$D" --seq 64 -t 2 >/dev/null 2>&1 || fail "tokenize-corpus"

common=(--config stories260K --data "$D" --batch 8 --seq 64 --lr 3e-3 --warmup 3 --eval-every 4 --eval-batches 2 -t 1)
# Two logs of the same run: every step's loss and val_loss within 1e-5 (the grad norm, a sum of squares of
# gradients summed in another order, within 1e-4 relative); prints the largest differences.
close_logs() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in a] == [r["step"] for r in b], "steps differ"
assert all(("val_loss" in x) == ("val_loss" in y) for x, y in zip(a, b)), "val_loss steps differ"
worst = max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in ("loss", "val_loss") if k in x)
norm = max(abs(x["grad_norm"] - y["grad_norm"]) / x["grad_norm"] for x, y in zip(a, b))
print("loss %.2g, grad norm %.2g relative" % (worst, norm))
sys.exit(0 if worst <= 1e-5 and norm <= 1e-4 else 1)
EOF
}

"$BIN" train "${common[@]}" --steps 12 --out "$TMP/one" >/dev/null 2>&1 || fail "1 process"
mpi 2 "$BIN" train "${common[@]}" --steps 12 --out "$TMP/two" >"$TMP/two.out" 2>&1 || fail "2 ranks: $(cat "$TMP/two.out")"
d=$(close_logs "$TMP/one/log.jsonl" "$TMP/two/log.jsonl") && pass "2 ranks = 1 process within 1e-5 per step (max diff $d)" ||
    fail "2 ranks differ from 1 process: $d"
grep -q "2 ranks on 4 rows each of the global batch of 8; AdamW moments 2.08 MB per rank (all of" "$TMP/two.out" &&
    pass "the split and the replicated optimizer memory reported" || fail "report line: $(cat "$TMP/two.out")"
[ "$(grep -c '"comm_s"' "$TMP/two/log.jsonl")" -eq 12 ] && pass "log has comm_s per step" || fail "comm_s in the log"

# ZeRO-1 over TCP on loopback with a hostfile, as between hosts
printf 'localhost slots=2\n' >"$TMP/hosts"
mpi 2 --hostfile "$TMP/hosts" --mca btl tcp,self --mca btl_tcp_if_include lo "$BIN" train "${common[@]}" --steps 12 \
    --zero 1 --out "$TMP/zero" >"$TMP/zero.out" 2>&1 || fail "2 ranks ZeRO-1 over TCP: $(cat "$TMP/zero.out")"
d=$(close_logs "$TMP/one/log.jsonl" "$TMP/zero/log.jsonl") && pass "ZeRO-1 over TCP = 1 process within 1e-5 per step (max diff $d)" ||
    fail "ZeRO-1 differs from 1 process: $d"
grep -q "AdamW moments 1.04 MB per rank (ZeRO-1: a shard of 2.08 MB)" "$TMP/zero.out" &&
    pass "ZeRO-1 halves the per-rank optimizer memory" || fail "ZeRO-1 memory: $(cat "$TMP/zero.out")"
cmp -s <(python3 -c 'import json,sys; print([json.loads(l)["loss"] for l in open(sys.argv[1])])' "$TMP/two/log.jsonl") \
    <(python3 -c 'import json,sys; print([json.loads(l)["loss"] for l in open(sys.argv[1])])' "$TMP/zero/log.jsonl") &&
    pass "ZeRO-1 and plain data parallel: the same losses" || pass "(ZeRO-1's losses differ from plain DP's in the last bits)"

# a checkpoint of 2 ZeRO ranks resumes on 1 process, one of 1 process on 2 ZeRO ranks: the same run
mpi 2 "$BIN" train "${common[@]}" --steps 12 --zero 1 --stop-after 6 --out "$TMP/r21" >/dev/null 2>&1 || fail "2 ranks, stop at 6"
"$BIN" train "${common[@]}" --steps 12 --resume --out "$TMP/r21" >/dev/null 2>&1 || fail "resume on 1"
d=$(close_logs "$TMP/one/log.jsonl" "$TMP/r21/log.jsonl") && pass "2-rank ZeRO checkpoint resumed on 1 process (max diff $d)" ||
    fail "2 -> 1 resume: $d"
"$BIN" train "${common[@]}" --steps 12 --stop-after 6 --out "$TMP/r12" >/dev/null 2>&1 || fail "1 process, stop at 6"
mpi 2 "$BIN" train "${common[@]}" --steps 12 --zero 1 --resume --out "$TMP/r12" >/dev/null 2>&1 || fail "resume on 2"
d=$(close_logs "$TMP/one/log.jsonl" "$TMP/r12/log.jsonl") && pass "1-process checkpoint resumed on 2 ZeRO ranks (max diff $d)" ||
    fail "1 -> 2 resume: $d"
"$BIN" inspect "$TMP/r12/model" >/dev/null 2>&1 && pass "rank 0 wrote the final model" || fail "final model of a 2-rank run"

# a global batch that does not split: one line from rank 0, every rank exits
timeout 60 "${MPIRUN[@]}" 2 "$BIN" train "${common[@]}" --steps 2 --batch 5 --out "$TMP/odd" >"$TMP/e1" 2>&1 && fail "--batch 5 on 2 ranks accepted" ||
    { grep -q "must split evenly over the 2 ranks" "$TMP/e1" && [ "$(grep -c 'camelid: error' "$TMP/e1")" -eq 1 ] &&
        pass "indivisible batch: one error line" || fail "message: $(cat "$TMP/e1")"; }

# one rank fails alone inside the run (its data folder is unreadable): every rank stops with its message
cat >"$TMP/rank1_bad_data.sh" <<EOF
#!/bin/sh
d="$D"; [ "\$OMPI_COMM_WORLD_RANK" = 1 ] && d="$TMP/nowhere"
exec "$BIN" train --config stories260K --data "\$d" --batch 8 --seq 64 -t 1 --steps 4 --out "$TMP/alone"
EOF
chmod +x "$TMP/rank1_bad_data.sh"
s=$(date +%s)
timeout 60 "${MPIRUN[@]}" 2 "$TMP/rank1_bad_data.sh" >"$TMP/e2" 2>&1 && fail "a failing rank went unnoticed" ||
    { grep -q "camelid: error: rank 1: .*nowhere" "$TMP/e2" && pass "a rank's error stops every rank, named by rank 0 ($(($(date +%s) - s)) s)" ||
        fail "message: $(cat "$TMP/e2")"; }

# a rank that fails before the run starts (its --init-from is missing): the job is aborted, no hang
cat >"$TMP/rank1_bad_model.sh" <<EOF
#!/bin/sh
m="$S260/stories260K.bin"; [ "\$OMPI_COMM_WORLD_RANK" = 1 ] && m="$TMP/missing.bin"
exec "$BIN" train --init-from "\$m" --data "$D" --batch 8 --seq 64 -t 1 --steps 4 --out "$TMP/alone2"
EOF
chmod +x "$TMP/rank1_bad_model.sh"
s=$(date +%s)
timeout 60 "${MPIRUN[@]}" 2 "$TMP/rank1_bad_model.sh" >"$TMP/e3" 2>&1 && fail "a rank failing at start went unnoticed" ||
    { [ $(($(date +%s) - s)) -lt 30 ] && grep -q "missing.bin" "$TMP/e3" && pass "a rank failing at start aborts the job" ||
        fail "message: $(cat "$TMP/e3")"; }

# kill -9 of rank 1 mid-run: rank 0 is ended within seconds with a clear line; the last checkpoint loads and resumes
"${MPIRUN[@]}" 2 "$BIN" train "${common[@]}" --steps 5000 --ckpt-every 1 --eval-every 0 --out "$TMP/killed" >"$TMP/e4" 2>&1 &
mp=$!
for _ in $(seq 100); do [ -f "$TMP/killed/latest" ] && break; sleep 0.1; done
sleep 0.5
victim=$(mpi_rank_pid $mp 1)
if [ -z "$victim" ]; then
    fail "rank 1's pid not found"
    kill $mp
else
    t0=$(date +%s.%N)
    kill -9 "$victim"
    wait $mp
    rc=$?
    took=$(python3 -c "import time; print('%.1f' % (time.time() - $t0))")
    [ $rc -ne 0 ] && python3 -c "import sys; sys.exit(0 if $took < 10 else 1)" && pass "killed rank 1: mpirun ended in ${took} s" ||
        fail "after kill -9 of rank 1: rc=$rc after ${took} s"
    grep -q "rank 0 of 2 .* stopped by the launcher" "$TMP/e4" && grep -q "rank 1 .*exited on signal 9" "$TMP/e4" &&
        pass "clear messages: rank 0 stopped by the launcher, rank 1 killed" || fail "messages: $(cat "$TMP/e4")"
    ck="$TMP/killed/$(cat "$TMP/killed/latest")"
    step=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$ck/trainer_state.json")
    "$BIN" inspect "$ck" >/dev/null 2>&1 && "$BIN" train "${common[@]}" --steps 5000 --stop-after $((step + 1)) --eval-every 0 \
        --resume --out "$TMP/killed" >/dev/null 2>&1 && pass "the last checkpoint (step $step) is intact and resumes on 1 process" ||
        fail "checkpoint after the kill"
fi
finish
