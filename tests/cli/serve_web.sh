#!/usr/bin/env bash
# The pages of `camelid serve` in headless Chromium (tests/serve/arena_browser.mjs): streamed chat, an arena
# battle and vote that reaches the database and the leaderboard. Needs Debian's chromium and the
# playwright-core npm package (scripts/deps.sh test and `npm ci` in tests/serve install both).
. "$(dirname "$0")/lib.bash"
SERVE_DIR=$(cd "$(dirname "$0")/../serve" && pwd)
command -v node >/dev/null || { echo "FAIL: node is missing (make deps-test installs nodejs and npm)" >&2; exit 1; }
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
[ -n "$CHROMIUM" ] || { echo "FAIL: chromium is missing (make deps-test installs it)" >&2; exit 1; }
if [ ! -f "$SERVE_DIR/node_modules/playwright-core/package.json" ]; then
    (cd "$SERVE_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
        { echo "FAIL: npm ci in tests/serve failed (playwright-core is needed)" >&2; exit 1; }
fi
BIN="$BIN" MODEL="$S260/stories260K.bin" TOK="$S260/tok512.bin" TMP="$TMP" CHROMIUM="$CHROMIUM" \
    timeout 120 node "$SERVE_DIR/arena_browser.mjs" >"$TMP/client.out" 2>&1
rc=$?
cat "$TMP/client.out"
[ $rc -eq 0 ] && pass "browser checks" || fail "browser checks (exit $rc); server log: $(tail -5 "$TMP/serve.log")"
if grep -qiE "AddressSanitizer|runtime error|LeakSanitizer" "$TMP/serve.log"; then
    fail "sanitizer report in the server log"
    grep -iE -A20 "AddressSanitizer|runtime error|LeakSanitizer" "$TMP/serve.log" | head -40 >&2
fi
finish
