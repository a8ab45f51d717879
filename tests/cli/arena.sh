#!/usr/bin/env bash
# `camelid arena`: the leaderboard of the committed battle file against the golden numbers
# (tests/data/arena/golden.tsv, from scripts/golden/arena_golden.py: FastChat's Elo loop and scipy's BT fit),
# the JSON array and JSON Lines forms agreeing, bad battle files named by file and line, and offline battles
# on stories260K whose output the leaderboard reads back once winners are added.
. "$(dirname "$0")/lib.bash"
DATA=$TESTDATA/arena

"$BIN" arena leaderboard --battles "$DATA/battles.json" --json >"$TMP/lb.json" 2>"$TMP/err" ||
    fail "leaderboard --battles: $(cat "$TMP/err")"
# one "model elo bt" line per model from the JSON (no JSON tool needed: the fields come in a fixed order)
sed 's/},{/}\n{/g' "$TMP/lb.json" |
    sed -n 's/.*"model":"\([^"]*\)","elo":\([^,]*\),"bt":\([^,]*\),"bt_lo":\([^,]*\),"bt_hi":\([^,]*\),.*/\1 \2 \3 \4 \5/p' |
    sort >"$TMP/got.txt"
grep -v '^#' "$DATA/golden.tsv" | awk -F'\t' '{print $1, $2, $3}' | sort >"$TMP/want.txt"
[ "$(wc -l <"$TMP/got.txt")" -eq 8 ] && pass "leaderboard lists the 8 models" || fail "models: $(cat "$TMP/lb.json")"
# Elo exactly (awk parses both spellings of the same double to the same value); BT within 0.5 points
join "$TMP/got.txt" "$TMP/want.txt" | awk '
    { if ($2 != $6) { print "elo " $1 ": " $2 " vs " $6; bad++ }
      d = $3 - $7; if (d < 0) d = -d; if (d > 0.5) { print "bt " $1 ": " $3 " vs " $7; bad++ }
      if (!($4 <= $3 && $3 <= $5)) { print "interval " $1; bad++ } n++ }
    END { exit (n == 8 && bad == 0) ? 0 : 1 }' >"$TMP/cmp.txt" &&
    pass "Elo equals FastChat's exactly, BT within 0.5 of scipy's, intervals hold the point" ||
    fail "golden comparison: $(cat "$TMP/cmp.txt")"
grep -q '^{"n_battles":2000,"models":\[{"model":"vicuna-13b",' "$TMP/lb.json" &&
    pass "JSON starts with n_battles and the best model" || fail "JSON shape: $(head -c 200 "$TMP/lb.json")"

# the same battles as JSON Lines give the same leaderboard
sed '1d;$d;s/,$//' "$DATA/battles.json" >"$TMP/battles.jsonl"
"$BIN" arena leaderboard --battles "$TMP/battles.jsonl" --json >"$TMP/lb2.json" 2>&1
cmp -s "$TMP/lb.json" "$TMP/lb2.json" && pass "JSON Lines = JSON array" || fail "JSONL differs: $(head -c 200 "$TMP/lb2.json")"
"$BIN" arena leaderboard --battles "$DATA/battles.json" >"$TMP/table.txt"
head -1 "$TMP/table.txt" | grep -q "^2000 battles from" && grep -qE "^ +1  vicuna-13b +1166\.4 +\[" "$TMP/table.txt" &&
    pass "table output" || fail "table: $(head -3 "$TMP/table.txt")"
"$BIN" arena leaderboard --battles "$DATA/separable.jsonl" --json >"$TMP/sep.json" &&
    ! grep -qiE "nan|inf" "$TMP/sep.json" && grep -q '"model":"champion"' "$TMP/sep.json" &&
    pass "separable battles: finite ratings" || fail "separable: $(cat "$TMP/sep.json")"

# bad battle files: one line each, naming the file and the line, exit 1
bad() { # NAME CONTENT EXPECTED
    printf '%b' "$2" >"$TMP/bad.json"
    if "$BIN" arena leaderboard --battles "$TMP/bad.json" >"$TMP/out" 2>"$TMP/err"; then
        fail "$1: accepted"
    elif [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -qF -- "$3" "$TMP/err"; then
        pass "$1: $(cat "$TMP/err")"
    else
        fail "$1: wanted \"$3\", got: $(cat "$TMP/err")"
    fi
}
ROW='{"model_a":"x","model_b":"y","winner":"model_a"}'
bad "unknown winner" "$ROW\n$ROW\n{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"x wins\"}\n" "bad.json:3: battle 3: \"winner\" must be"
bad "missing model" "[\n$ROW,\n{\"model_a\":\"x\",\"winner\":\"tie\"}\n]" "bad.json:3: battle 2: \"model_b\" is missing"
bad "self battle" "$ROW\n\n{\"model_a\":\"x\",\"model_b\":\"x\",\"winner\":\"tie\"}\n" "bad.json:3: battle 2: model_a and model_b are both"
bad "broken JSON line" "$ROW\n{\"model_a\":\"x\",\n" "bad.json:2: battle 2: invalid JSON"
bad "unclosed array" "[\n$ROW,\n$ROW" "bad.json:3: the JSON array is not closed"
bad "wrong type" "[$ROW, 7]" "bad.json:1: battle 2: a battle must be an object"
if "$BIN" arena leaderboard --battles "$TMP/none.json" 2>"$TMP/err"; then fail "missing file accepted"; else
    grep -q "none.json" "$TMP/err" && pass "missing battle file: $(cat "$TMP/err")" || fail "missing file: $(cat "$TMP/err")"; fi
if "$BIN" arena leaderboard --db "$TMP/none.db" 2>"$TMP/err"; then fail "missing db accepted"; else
    grep -q "none.db: no such database" "$TMP/err" && pass "missing database named" || fail "missing db: $(cat "$TMP/err")"; fi
[ ! -e "$TMP/none.db" ] && pass "a missing database is not created" || fail "leaderboard created $TMP/none.db"
"$BIN" arena leaderboard --db x --battles y 2>"$TMP/err" && fail "--db with --battles accepted" ||
    pass "--db and --battles exclude each other"
"$BIN" arena 2>/dev/null && fail "arena without a subcommand accepted" || pass "arena needs a subcommand"
"$BIN" arena vote 2>"$TMP/err" && fail "unknown subcommand accepted" || grep -q 'unknown arena command "vote"' "$TMP/err" &&
    pass "unknown subcommand named"

# offline battles: three questions (one with two turns), answers from both models, then rated
printf '%s\n' '{"question_id": 1, "category": "generic", "turns": ["Tell me a story."]}' \
    '{"question_id": 2, "category": "writing", "turns": ["Once upon a time", "What happened next?"]}' \
    '{"question_id": "q3", "text": "Lily liked to"}' >"$TMP/q.jsonl"
M=$S260/stories260K.bin
"$BIN" arena battle "$M" "$M" --alias small --alias other --tokenizer "$S260/tok512.bin" --prompts "$TMP/q.jsonl" \
    --out "$TMP/battles.out.jsonl" -n 24 --temperature 0 -t 1 2>"$TMP/err" || fail "arena battle: $(cat "$TMP/err")"
[ "$(wc -l <"$TMP/battles.out.jsonl")" -eq 3 ] && pass "arena battle writes one line per question" ||
    fail "battle output: $(cat "$TMP/battles.out.jsonl")"
sed -n 2p "$TMP/battles.out.jsonl" | grep -q '^{"question_id":2,"category":"writing","model_a":"small","model_b":"other","turn":2,"conversation_a":\[{"role":"user","content":"Once upon a time"},{"role":"assistant","content":"[^"]' &&
    pass "battle rows are FastChat conversations (two turns answered)" || fail "row: $(sed -n 2p "$TMP/battles.out.jsonl" | head -c 300)"
# greedy, same model: both sides say the same; the first answer is `camelid chat`'s
first=$(printf 'Tell me a story.\n' | "$BIN" chat "$M" --tokenizer "$S260/tok512.bin" --temperature 0 -n 24 -t 1 2>/dev/null)
sed -n 1p "$TMP/battles.out.jsonl" | grep -qF "\"content\":\"$(printf '%s' "$first" | sed 's/"/\\"/g' | head -1)" &&
    pass "battle answers equal camelid chat's" || fail "answer differs from chat: $first"
# a judge's verdicts added, the leaderboard reads the battles back
awk 'NR==1{sub(/^{/,"{\"winner\":\"model_a\",")} NR==2{sub(/^{/,"{\"winner\":\"tie\",")} NR==3{sub(/^{/,"{\"winner\":\"model_b\",")} {print}' \
    "$TMP/battles.out.jsonl" >"$TMP/judged.jsonl"
"$BIN" arena leaderboard --battles "$TMP/judged.jsonl" --json >"$TMP/judged.json" 2>"$TMP/err" &&
    grep -q '"n_battles":3' "$TMP/judged.json" && pass "judged battles rate: $(cat "$TMP/judged.json" | head -c 120)" ||
    fail "judged: $(cat "$TMP/err")"
"$BIN" arena leaderboard --battles "$TMP/battles.out.jsonl" 2>"$TMP/err" && fail "battles without a winner accepted" ||
    grep -q 'battles.out.jsonl:1: battle 1: "winner" is missing' "$TMP/err" && pass "unjudged battles are refused by line"
printf '{"question_id": 1, "turns": []}\n' >"$TMP/badq.jsonl"
"$BIN" arena battle "$M" "$M" --alias a --alias b --tokenizer "$S260/tok512.bin" --prompts "$TMP/badq.jsonl" \
    --out "$TMP/x.jsonl" 2>"$TMP/err" && fail "empty turns accepted" ||
    grep -q 'badq.jsonl:1: "turns" has 0 entries' "$TMP/err" && pass "bad question file named by line"
[ ! -e "$TMP/x.jsonl" ] && pass "no output after a failure" || fail "output written after a failure"
"$BIN" arena battle "$M" "$M" --tokenizer "$S260/tok512.bin" --prompts "$TMP/q.jsonl" --out "$TMP/x.jsonl" 2>"$TMP/err" &&
    fail "two models with one name accepted" || grep -q 'both models are called "stories260K"' "$TMP/err" &&
    pass "two models need two names"
finish
