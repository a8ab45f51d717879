# Shared helpers for the CLI tests (sourced, not run: tests are the other *.sh files).
set -u
BIN=${CAMELID_BIN:?CAMELID_BIN must point at build/bin/camelid}
SHARED=${CAMELID_SHARED:-$(dirname "$0")/../../../shared}
TESTDATA=${CAMELID_TESTDATA:-$(dirname "$0")/../data}
if [ ! -d "$SHARED/data/models" ]; then
    echo "missing shared test data: $SHARED/data (set CAMELID_SHARED to the shared folder)" >&2
    exit 1
fi
S260=$SHARED/data/models/stories260K
REF=$S260/reference
TMP=$(mktemp -d "${TMPDIR:-/tmp}/camelid-cli-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
FAILS=0
fail() {
    echo "FAIL: $*" >&2
    FAILS=$((FAILS + 1))
}
pass() { echo "ok: $*"; }
# same_text NAME GOT EXPECTED: files equal (the expected file's trailing newline aside)
same_text() {
    if cmp -s <(printf '%s' "$(cat "$2")") <(printf '%s' "$(cat "$3")"); then
        pass "$1"
    else
        fail "$1"
        diff <(cat "$2") <(cat "$3") | head -5 >&2
    fi
}
finish() {
    if [ "$FAILS" -ne 0 ]; then
        echo "$FAILS failure(s)" >&2
        exit 1
    fi
    exit 0
}
