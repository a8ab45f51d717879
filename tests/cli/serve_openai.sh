#!/usr/bin/env bash
# `camelid serve` on stories260K driven by the official openai npm client (tests/serve/openai_client.mjs):
# chat and completions, streamed and not, greedy text equal to `camelid generate` / `camelid chat`, 8
# concurrent streams equal to their solo text, error statuses, misbehaving clients amid normal traffic;
# then SIGTERM must exit 0 with the request log flushed.
. "$(dirname "$0")/lib.bash"
MODEL=$S260/stories260K.bin
TOK=$S260/tok512.bin
SERVE_DIR=$(cd "$(dirname "$0")/../serve" && pwd)
command -v node >/dev/null || { echo "FAIL: node is missing (make deps-test installs nodejs and npm)" >&2; exit 1; }
if [ ! -f "$SERVE_DIR/node_modules/openai/package.json" ]; then
    (cd "$SERVE_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
        { echo "FAIL: npm ci in tests/serve failed (the openai package is needed)" >&2; exit 1; }
fi

"$BIN" serve "$MODEL" --tokenizer "$TOK" --port 0 --parallel 8 -t 2 --api-key sekrit --idle-timeout 2 \
    --db "$TMP/serve.db" 2>"$TMP/serve.log" &
SERVER=$!
trap 'kill -9 $SERVER 2>/dev/null; rm -rf "$TMP"' EXIT
PORT=""
for _ in $(seq 300); do
    grep -q "ready:" "$TMP/serve.log" && break
    sleep 0.1
done
PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$TMP/serve.log")
[ -n "$PORT" ] && grep -q "ready:" "$TMP/serve.log" && pass "serve starts (port $PORT)" ||
    { fail "serve did not start: $(cat "$TMP/serve.log")"; finish; }

BASE="http://127.0.0.1:$PORT" API_KEY=sekrit BIN="$BIN" MODEL="$MODEL" TOK="$TOK" MODEL_ID=stories260K \
    timeout 120 node "$SERVE_DIR/openai_client.mjs" >"$TMP/client.out" 2>&1
rc=$?
cat "$TMP/client.out"
[ $rc -eq 0 ] && pass "openai client checks" || fail "openai client checks (exit $rc)"

kill -TERM $SERVER
wait $SERVER
rc=$?
[ $rc -eq 0 ] && pass "SIGTERM exits 0" || fail "SIGTERM: exit $rc; $(tail -5 "$TMP/serve.log")"
grep -q "stopped" "$TMP/serve.log" && pass "clean shutdown" || fail "no clean shutdown"
if command -v python3 >/dev/null; then
    rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from serve_requests').fetchone()[0])" "$TMP/serve.db")
    [ "${rows:-0}" -gt 10 ] && pass "request log has $rows rows" || fail "request log: ${rows:-none}"
fi
if grep -qiE "AddressSanitizer|runtime error|LeakSanitizer" "$TMP/serve.log"; then
    fail "sanitizer report in the server log"
    grep -iE -A20 "AddressSanitizer|runtime error|LeakSanitizer" "$TMP/serve.log" | head -40 >&2
fi
finish
