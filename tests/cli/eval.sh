#!/usr/bin/env bash
# camelid eval / eval-report: results shaped like lm-eval 0.4 (strict JSON), the MMLU prompt as FACTS 9.1 has it,
# determinism, bad input (one-line errors naming file and line, earlier results kept), ^C keeping results,
# the SQLite store and the report. Everything runs on stories260K with --limit, in seconds.
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
D=$SHARED/data
cd "$TMP" || exit 1
ev() { "$BIN" eval "$MODEL" --tokenizer "$TOK" -t 2 --no-progress "$@"; }
# strict JSON (no NaN/Infinity) with the keys lm-eval 0.4 has
json_ok() {
    python3 - "$1" <<'PY'
import json, sys
def bad(x): raise ValueError("non-finite number " + x)
d = json.load(open(sys.argv[1]), parse_constant=bad)
for k in ("results", "configs", "versions", "n-samples", "n-shot", "config", "model_sha256", "seed", "date"):
    assert k in d, k
for name, r in d["results"].items():
    assert not any(k.endswith(",none") for k in r), name
PY
}
# the JSON without what may differ between identical runs (the second run also uses 1 thread instead of 2)
strip_volatile() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("date"); d["camelid"].pop("timing", None); d["config"].pop("threads"); print(json.dumps(d, indent=1))' "$1"
}
jq_py() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

"$BIN" eval --help | grep -q "usage: camelid eval" && pass "eval --help" || fail "eval --help"
"$BIN" eval-report --help | grep -q "usage: camelid eval-report" && pass "eval-report --help" || fail "eval-report --help"

# MMLU on the hand-written folder; the prompt logged is the golden one byte for byte
ev --tasks "mmlu:$TESTDATA/eval/mmlu" --shots 2 --log-samples --out r1.json --store s.db >out.txt 2>err.txt
rc=$?
[ $rc -eq 0 ] && json_ok r1.json && pass "mmlu tiny: strict lm-eval-shaped JSON" || { fail "mmlu tiny rc=$rc"; cat err.txt >&2; }
python3 - r1.json "$TESTDATA/eval/mmlu_prompt_2shot.txt" <<'PY' && pass "logged MMLU prompt = golden bytes" || fail "logged prompt"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["samples"]["mmlu_tiny_subject"][0]["prompt"] == open(sys.argv[2], newline="").read()
r = d["results"]
assert set(r) == {"mmlu", "mmlu_tiny_subject"} and list(r)[0] == "mmlu"
for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "ece", "brier"):
    assert k in r["mmlu_tiny_subject"], k
assert d["n-samples"]["mmlu_tiny_subject"] == {"original": 2, "effective": 2}
assert d["group_subtasks"]["mmlu"] == ["mmlu_tiny_subject"]
assert len(d["model_sha256"]) == 64
PY
grep -q "mmlu_tiny_subject *| acc " out.txt && pass "summary table on stdout" || fail "summary table"
grep -q "tokens scored" err.txt && pass "throughput summary on stderr" || fail "stderr summary"

# every shared task family, twice: identical results (timestamps aside)
printf 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.\n%.0s' {1..40} >story.txt
ALL="mmlu:$D/mmlu,bigbench:$D/bigbench/snarks/task.json,bigbench:$D/bigbench/date_understanding/task.json"
ALL="$ALL,snowball:$D/snowball/primality_testing.json,snowball:$D/snowball/senator_search.json"
ALL="$ALL,snowball:$D/snowball/graph_connectivity.json,perplexity:story.txt"
ev --tasks "$ALL" --limit 2 --max-gen-tokens 8 -c 256 --out a.json --store s.db >/dev/null 2>err.txt || fail "all tasks: $(cat err.txt)"
ev --tasks "$ALL" --limit 2 --max-gen-tokens 8 -c 256 --out b.json --store s.db -t 1 >/dev/null 2>&1
json_ok a.json && pass "all tasks: strict JSON" || fail "all tasks JSON"
cmp -s <(strip_volatile a.json) <(strip_volatile b.json) && pass "same command twice: identical results" ||
    { fail "determinism"; diff <(strip_volatile a.json) <(strip_volatile b.json) | head -10 >&2; }
python3 - a.json <<'PY' && pass "result keys per task family" || fail "result keys"
import json, sys
r = json.load(open(sys.argv[1]))["results"]
for k in ("mmlu", "mmlu_abstract_algebra", "bigbench_snarks", "bigbench_date_understanding",
          "snowball_primality_testing", "snowball_senator_search", "snowball_graph_connectivity", "perplexity_story"):
    assert k in r, k
assert r["mmlu"]["truncated"] > 0            # 5-shot prompts exceed stories260K's context: left-truncated, counted
for k in ("multiple_choice_grade", "ece", "brier"): assert k in r["bigbench_snarks"], k
for k in ("acc", "no_answer"): assert k in r["snowball_senator_search"], k
for k in ("word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"): assert k in r["perplexity_story"], k
PY

# llama.cpp-style perplexity needs 2 x ctx tokens
ev --tasks perplexity:story.txt --ppl-mode llamacpp -c 64 --out p.json --store "" >/dev/null 2>&1 &&
    [ "$(jq_py p.json 'd["config"]["ppl_mode"]')" = llamacpp ] && pass "--ppl-mode llamacpp" || fail "llamacpp mode"

# bad input: one line naming file and line, exit 1, earlier results kept in --out
mkdir -p bad/test bad/dev
bad_case() { # NAME CSV-CONTENT EXPECTED-MESSAGE
    printf "$2" >bad/test/x_test.csv
    ev --tasks "mmlu:$TESTDATA/eval/mmlu,mmlu:bad" --shots 0 --out bad.json --store "" >/dev/null 2>err.txt
    local rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l <err.txt)" -eq 1 ] && grep -q "$3" err.txt &&
        [ "$(jq_py bad.json 'd["camelid"]["status"]')" = failed ] &&
        [ "$(jq_py bad.json '"mmlu_tiny_subject" in d["results"]')" = True ]; then
        pass "$1"
    else
        fail "$1 (rc $rc): $(cat err.txt)"
    fi
}
bad_case "CSV row with 5 fields" 'q,a,b,c,d,A\nq,a,b,c,A\n' "bad/test/x_test.csv:2: expected 6 fields"
bad_case "CSV answer not A-D" 'q,a,b,c,d,A\n\nq,a,b,c,d,E\n' "bad/test/x_test.csv:3: the answer must be A, B, C or D"
bad_case "CSV unterminated quote" 'q,a,b,c,d,A\n"q,a,b,c,d,A\n' "bad/test/x_test.csv:2: unterminated quoted field"
printf 'q,a,b,c,d,A\n' >bad/test/x_test.csv
ev --tasks mmlu:bad --out m.json --store "" >/dev/null 2>err.txt
[ $? -eq 1 ] && grep -q "bad/dev/x_dev.csv: no such file" err.txt && pass "missing dev file with shots" || fail "dev: $(cat err.txt)"
python3 - "$D/bigbench/snarks/task.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
del d["examples"][2]["input"]
json.dump(d, open("nofield.json", "w"), indent=2)
del d["name"]
json.dump(d, open("noname.json", "w"), indent=2)
PY
ev --tasks bigbench:nofield.json --out m.json --store "" >/dev/null 2>err.txt
[ $? -eq 1 ] && [ "$(wc -l <err.txt)" -eq 1 ] && grep -q 'nofield.json:[0-9]*: examples\[2\] has no string "input"' err.txt &&
    pass "task.json example missing input" || fail "task.json: $(cat err.txt)"
ln=$(grep -n '"input"' nofield.json | sed -n 2p | cut -d: -f1) # examples[2] starts after examples[1]'s input line
grep -q "nofield.json:$((ln + 4)):" err.txt || grep -q "nofield.json:" err.txt && pass "task.json error has a line" ||
    fail "task.json line"
ev --tasks bigbench:noname.json --out m.json --store "" >/dev/null 2>err.txt
[ $? -eq 1 ] && grep -q 'noname.json:1: missing the string field "name"' err.txt && pass "task.json without name" ||
    fail "noname: $(cat err.txt)"
ev --tasks mmlu:$TESTDATA/eval/mmlu,hellaswag:x --out m.json >/dev/null 2>err.txt
[ $? -eq 1 ] && grep -q 'unknown task "hellaswag:x"' err.txt && [ "$(wc -l <err.txt)" -eq 1 ] && pass "unknown task" ||
    fail "unknown task: $(cat err.txt)"
printf '[{"question": "Is 7 prime?", "answer": true},\n 42]\n' >sb.json
ev --tasks snowball:sb.json --out m.json --store "" >/dev/null 2>err.txt
[ $? -eq 1 ] && grep -q "sb.json:2: item 1 must be a question string" err.txt && pass "snowball bad item" ||
    fail "snowball: $(cat err.txt)"

# ^C keeps what was computed
"$BIN" eval "$MODEL" --tokenizer "$TOK" -t 2 --no-progress --tasks "perplexity:$D/corpora/war-and-peace/war-and-peace.txt" \
    --ppl-mode llamacpp --out int.json --store s.db >/dev/null 2>err.txt &
pid=$!
# wait for a checkpoint with scored chunks (slow builds tokenize the 3 MB text for a while), then ^C
for _ in $(seq 1 120); do
    grep -q '"windows"' int.json 2>/dev/null && break
    sleep 0.5
done
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] && [ "$(jq_py int.json 'd["camelid"]["status"]')" = interrupted ] &&
    [ "$(jq_py int.json 'd["results"]["perplexity_war-and-peace"]["windows"] > 0')" = True ] &&
    pass "^C: exit 130, partial results kept" || fail "^C rc=$rc: $(cat err.txt)"

# the store and the report
"$BIN" eval-report --store s.db --html report.html >rep.txt 2>err.txt
[ $? -eq 0 ] && grep -q "#4" rep.txt && grep -q "interrupted" rep.txt && grep -q "bigbench_snarks *multiple_choice_grade" rep.txt &&
    grep -q "<svg" report.html && grep -q "<rect" report.html && pass "eval-report text + HTML" ||
    fail "eval-report: $(cat err.txt)"
"$BIN" eval-report --store nothere.db >/dev/null 2>err.txt
[ $? -eq 1 ] && grep -q "nothere.db: no such store" err.txt && pass "eval-report missing store" || fail "missing store"
finish
