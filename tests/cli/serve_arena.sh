#!/usr/bin/env bash
# The arena API of `camelid serve` (tests/serve/arena_api.mjs): pages, battles streamed and not, bad votes
# (400/404/409), fewer than two models (409), votes acknowledged before kill -9 present after a restart.
. "$(dirname "$0")/lib.bash"
SERVE_DIR=$(cd "$(dirname "$0")/../serve" && pwd)
command -v node >/dev/null || { echo "FAIL: node is missing (make deps-test installs nodejs and npm)" >&2; exit 1; }
BIN="$BIN" MODEL="$S260/stories260K.bin" TOK="$S260/tok512.bin" TMP="$TMP" \
    timeout 120 node "$SERVE_DIR/arena_api.mjs" >"$TMP/client.out" 2>&1
rc=$?
cat "$TMP/client.out"
[ $rc -eq 0 ] && pass "arena API checks" || fail "arena API checks (exit $rc); server log: $(tail -5 "$TMP/serve.log")"
if grep -qiE "AddressSanitizer|runtime error|LeakSanitizer" "$TMP/serve.log"; then
    fail "sanitizer report in the server log"
    grep -iE -A20 "AddressSanitizer|runtime error|LeakSanitizer" "$TMP/serve.log" | head -40 >&2
fi
finish
