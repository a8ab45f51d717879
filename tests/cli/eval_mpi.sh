#!/usr/bin/env bash
# camelid eval under mpirun: the requests of every task family split over 2 and 3 ranks give the results JSON
# of one process (samples included: per-choice log-likelihoods, generated texts, per-token log-probs), only
# rank 0 writes; a bad task file stops every rank with one error line and keeps the earlier tasks' results.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/mpi.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
D=$SHARED/data
cd "$TMP" || exit 1
printf 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.\n%.0s' {1..40} >story.txt
printf '{"text": "One day a cat sat on a mat."}\n{"text": "The dog ran to the big red ball and the sun was hot."}\n' >docs.jsonl
ALL="mmlu:$D/mmlu,bigbench:$D/bigbench/snarks/task.json,bigbench:$D/bigbench/date_understanding/task.json"
ALL="$ALL,snowball:$D/snowball/primality_testing.json,snowball:$D/snowball/senator_search.json,perplexity:story.txt"
ALL="$ALL,perplexity:docs.jsonl"
args=("$MODEL" --tokenizer "$TOK" -t 1 --no-progress --tasks "$ALL" --limit 4 --shots 2 --max-gen-tokens 8 -c 256 --log-samples)
# the document without what differs between identical runs (date, timings, threads/ranks) and the count of
# tokens run: prefix sharing stops at the edges of the ranks' shares
strip() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("date"); d["camelid"].pop("timing", None)
for k in ("threads", "ranks"): d["config"].pop(k)
d["camelid"]["lm"].pop("tokens_forwarded"); print(json.dumps(d, indent=1))' "$1"
}

"$BIN" eval "${args[@]}" --out one.json --store one.db >one.txt 2>one.err || fail "1 process: $(cat one.err)"
# (the sanitizer build, several times slower, checks 2 ranks only)
for n in $([ "$SANITIZED" = 1 ] && echo 2 || echo 2 3); do
    mpi $n "$BIN" eval "${args[@]}" --out r$n.json --store r$n.db >r$n.txt 2>r$n.err || fail "$n ranks: $(cat r$n.err)"
    if cmp -s <(strip one.json) <(strip r$n.json); then
        pass "$n ranks: the results JSON of one process ($(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["results"]))' one.json) task entries, samples included)"
    else
        fail "$n ranks: results differ"
        diff <(strip one.json) <(strip r$n.json) | head -10 >&2
    fi
    cmp -s one.txt r$n.txt && pass "$n ranks: the same summary table, printed once" || fail "$n ranks: table differs"
    [ "$(grep -c "camelid: eval:" r$n.err)" -eq 1 ] && pass "$n ranks: one throughput line" || fail "throughput lines: $(cat r$n.err)"
    python3 - r$n.json "$n" <<'EOF' && pass "$n ranks: recorded in config.ranks, status complete" || fail "$n ranks: config"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["config"]["ranks"] == int(sys.argv[2]) and d["camelid"]["status"] == "complete"
EOF
done
[ "$(sqlite3 r2.db 'select count(*) from runs' 2>/dev/null || python3 -c 'import sqlite3; print(sqlite3.connect("r2.db").execute("select count(*) from runs").fetchone()[0])')" = 1 ] &&
    pass "one run in the store (rank 0 writes)" || fail "store rows"

# a bad task file after a good task: every rank stops, rank 0 says where, the first task's results are kept
mkdir -p bad/test
printf 'q1,a,b,c,d,A\nq2,a,b,c,d,B\nq3,a,b,c,d\n' >bad/test/x_test.csv
timeout 60 "${MPIRUN[@]}" 2 "$BIN" eval "$MODEL" --tokenizer "$TOK" -t 1 --no-progress --shots 0 \
    --tasks "perplexity:story.txt,mmlu:bad" --out bad.json --store "" >bad.txt 2>bad.err && fail "a bad task file passed" ||
    { grep -q "x_test.csv:3" bad.err && [ "$(grep -c 'camelid: error' bad.err)" -eq 1 ] && pass "bad task file: one error line naming file and line" ||
        fail "message: $(cat bad.err)"; }
python3 - bad.json <<'EOF' && pass "bad task file: earlier results kept, status failed" || fail "bad.json"
import json, sys
d = json.load(open(sys.argv[1]))
assert "perplexity_story" in d["results"] and d["camelid"]["status"] == "failed", d["camelid"]
EOF
finish
