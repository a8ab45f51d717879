#!/usr/bin/env bash
# camelid train: exact resume, the log and report, checkpoints that survive kill -9 and a full disk, and
# clear errors on bad input (corrupt shards, another model's checkpoint, a NaN loss).
source "$(dirname "$0")/lib.bash"

D=$TMP/data
"$BIN" tokenize-corpus --tokenizer "$S260/tok512.bin" "$SHARED/data/corpora/tinystories-valid-sample/tinystories_val.txt" \
    --out "$D" --seq 32 -t 2 >/dev/null 2>&1 || fail "tokenize-corpus"

# losses of a log as "step loss" lines
losses() { python3 -c 'import json,sys
for l in open(sys.argv[1]): o=json.loads(l); print(o["step"], repr(o["loss"]))' "$1"; }

common=(--config stories260K --data "$D" --batch 4 --seq 32 --lr 3e-3 --warmup 3 --eval-every 10 --eval-batches 2 -t 1)

# straight 40 steps vs 20 + resume to 40: bitwise the same losses on one thread
"$BIN" train "${common[@]}" --steps 40 --out "$TMP/straight" >"$TMP/straight.out" 2>&1 || fail "train 40 steps"
"$BIN" train "${common[@]}" --steps 40 --stop-after 20 --out "$TMP/resumed" >/dev/null 2>&1 || fail "train --stop-after 20"
[ "$(cat "$TMP/resumed/latest")" = "checkpoints/step-000020" ] && pass "stop-after leaves a checkpoint at 20" ||
    fail "latest after --stop-after: $(cat "$TMP/resumed/latest")"
[ -d "$TMP/resumed/model" ] && fail "a stopped run must not write the final model" || pass "no final model before the horizon"
"$BIN" train "${common[@]}" --steps 40 --resume --out "$TMP/resumed" >/dev/null 2>&1 || fail "train --resume"
if cmp -s <(losses "$TMP/straight/log.jsonl") <(losses "$TMP/resumed/log.jsonl"); then
    pass "exact resume: 40 straight == 20 + 20 resumed, bit for bit"
else
    fail "resumed losses differ"
    diff <(losses "$TMP/straight/log.jsonl") <(losses "$TMP/resumed/log.jsonl") | head -5 >&2
fi
[ "$(wc -l <"$TMP/resumed/log.jsonl")" -eq 40 ] && pass "one log line per step" || fail "log has $(wc -l <"$TMP/resumed/log.jsonl") lines"
python3 - "$TMP/straight/log.jsonl" <<'EOF' && pass "log fields" || fail "log fields"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rows] == list(range(1, 41))
for r in rows:
    assert set(r) >= {"step", "loss", "lr", "grad_norm", "tokens_per_s"}, r
assert [r["step"] for r in rows if "val_loss" in r] == [10, 20, 30, 40]
assert rows[0]["lr"] < rows[3]["lr"]  # warm-up
assert rows[-1]["loss"] < rows[0]["loss"]
EOF
grep -q "<svg" "$TMP/straight/report.html" && pass "report.html has the loss curves" || fail "report.html"
grep -q "^trained: " "$TMP/straight.out" && pass "summary line" || fail "summary: $(cat "$TMP/straight.out")"

# the trained model runs
"$BIN" generate "$TMP/straight/model" -n 8 --temp 0 -p "Once" >"$TMP/gen.txt" 2>&1 && [ -s "$TMP/gen.txt" ] &&
    pass "generate from RUN_DIR/model" || fail "generate from the trained model: $(cat "$TMP/gen.txt")"

# evaluation runs on a freshly trained model like on any other
"$BIN" eval "$TMP/straight/model" --tasks "mmlu:$SHARED/data/mmlu:abstract_algebra,bigbench:$SHARED/data/bigbench/snarks/task.json" \
    --limit 2 --shots 1 --out "$TMP/eval.json" --no-progress -t 1 >/dev/null 2>"$TMP/eval.err" &&
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; assert "mmlu" in r and "bigbench_snarks" in r' "$TMP/eval.json" &&
    pass "eval on the trained model" || fail "eval on the trained model: $(cat "$TMP/eval.err")"

# resuming with other settings or another model's checkpoint is refused
"$BIN" train "${common[@]}" --steps 60 --resume --batch 8 --out "$TMP/resumed" >"$TMP/e1" 2>&1 &&
    fail "resume with another batch accepted" || { grep -q -- "--batch 4" "$TMP/e1" && pass "resume with another --batch refused" || fail "message: $(cat "$TMP/e1")"; }
"$BIN" train --config stories15M --data "$D" --batch 4 --seq 32 --steps 60 --resume --out "$TMP/resumed" -t 1 >"$TMP/e2" 2>&1 &&
    fail "resume with another shape accepted" || { grep -q "was made for dim 64" "$TMP/e2" && pass "checkpoint of another config refused" || fail "message: $(cat "$TMP/e2")"; }
"$BIN" train "${common[@]}" --steps 40 --resume --out "$TMP/nothing" >"$TMP/e3" 2>&1 &&
    fail "resume without a checkpoint accepted" || { grep -q "nothing to resume" "$TMP/e3" && pass "resume without a checkpoint" || fail "message: $(cat "$TMP/e3")"; }

# NaN: a learning rate that blows up stops with a clear message; the last good checkpoint stays
"$BIN" train "${common[@]}" --steps 30 --lr 1e30 --clip 0 --ckpt-every 1 --out "$TMP/nan" >"$TMP/e4" 2>&1 &&
    fail "an exploding run finished" || { grep -q "became NaN or infinite at step" "$TMP/e4" && pass "NaN loss stops the run" || fail "message: $(cat "$TMP/e4")"; }
if [ -f "$TMP/nan/latest" ]; then
    "$BIN" inspect "$TMP/nan/$(cat "$TMP/nan/latest")" >/dev/null 2>&1 && pass "last good checkpoint after NaN loads" || fail "checkpoint after NaN"
fi

# corrupt shards: one clear line naming the file
cp -r "$D" "$TMP/bad"
printf 'XXXXXXXX' | dd of="$TMP/bad/train_00000.bin" conv=notrunc 2>/dev/null
"$BIN" train "${common[@]}" --steps 2 --data "$TMP/bad" --out "$TMP/badrun" >"$TMP/e5" 2>&1 &&
    fail "corrupt shard accepted" || { grep -q "train_00000.bin" "$TMP/e5" && pass "corrupt shard named" || fail "message: $(cat "$TMP/e5")"; }
[ "$(grep -c . "$TMP/e5")" -eq 1 ] && pass "one-line error" || fail "error is $(grep -c . "$TMP/e5") lines"

# kill -9 at random moments of a run that checkpoints every step: the latest checkpoint always loads and resumes
for delay in 0.3 0.6 0.9 1.3; do
    rm -rf "$TMP/killed"
    "$BIN" train "${common[@]}" --steps 400 --ckpt-every 1 --out "$TMP/killed" >/dev/null 2>&1 &
    pid=$!
    sleep $delay
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    [ -f "$TMP/killed/latest" ] || continue
    ck="$TMP/killed/$(cat "$TMP/killed/latest")"
    [ -f "$ck/trainer_state.json" ] && [ -f "$ck/optimizer.safetensors" ] && "$BIN" inspect "$ck" >/dev/null 2>&1 ||
        fail "checkpoint after kill -9 at ${delay}s is broken"
done
if [ -f "$TMP/killed/latest" ]; then
    step=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$TMP/killed/$(cat "$TMP/killed/latest")/trainer_state.json")
    "$BIN" train "${common[@]}" --steps $((step + 2)) --resume --out "$TMP/killed" >/dev/null 2>&1 &&
        pass "resume after kill -9 (from step $step)" || fail "resume after kill -9"
fi

# a full disk (a file size limit) while writing a checkpoint: the run fails, the previous checkpoint survives
"$BIN" train "${common[@]}" --steps 4 --ckpt-every 2 --stop-after 2 --out "$TMP/full" >/dev/null 2>&1 || fail "run before disk full"
(trap '' XFSZ; ulimit -f 64; "$BIN" train "${common[@]}" --steps 4 --ckpt-every 2 --resume --out "$TMP/full") >"$TMP/e6" 2>&1 &&
    fail "a checkpoint larger than the file limit was written" || pass "disk full fails the run"
[ "$(cat "$TMP/full/latest")" = "checkpoints/step-000002" ] && "$BIN" inspect "$TMP/full/checkpoints/step-000002" >/dev/null 2>&1 &&
    pass "previous checkpoint survives a full disk" || fail "checkpoint after disk full: $(cat "$TMP/full/latest")"
"$BIN" train "${common[@]}" --steps 4 --ckpt-every 2 --resume --out "$TMP/full" >/dev/null 2>&1 && pass "resume after disk full" ||
    fail "resume after disk full"

# bad arguments
"$BIN" train --config nope --data "$D" --out "$TMP/x" >"$TMP/e7" 2>&1 && fail "unknown shape accepted" ||
    { grep -q "stories260K" "$TMP/e7" && pass "unknown shape lists the known ones" || fail "message: $(cat "$TMP/e7")"; }
"$BIN" train --config stories260K --data "$TMP/missing" --out "$TMP/x" >"$TMP/e8" 2>&1 && fail "missing data accepted" ||
    pass "missing data refused"
"$BIN" train --help | grep -q -- "--stop-after" && pass "help" || fail "help"
finish
