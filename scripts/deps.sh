#!/usr/bin/env bash
# Installs the Debian packages camelid needs to build and test, only those missing.
# Usage: scripts/deps.sh [build|test|demo]
set -euo pipefail
want=(build-essential cmake pkg-config libjansson-dev libpcre2-dev libsqlite3-dev libmicrohttpd-dev libopenblas-dev)
# distributed training and evaluation (mpirun, mpi.h); the build works without them, single-process
want+=(openmpi-bin libopenmpi-dev)
# make demo trains on the fortune-cookie texts of Debian's fortunes package
[ "${1:-build}" = demo ] && want+=(fortunes)
if [ "${1:-build}" = test ]; then
    # clang + compiler-rt give libFuzzer and the sanitizer runtimes for the fuzz targets; the CLI tests use python3
    # to build malformed files
    want+=(clang libclang-rt-dev python3)
    # the serve test drives the server with the official openai npm client (tests/serve, `npm ci`)
    command -v node >/dev/null || want+=(nodejs)
    command -v npm >/dev/null || want+=(npm)
    # the web pages are tested in headless Chromium (driven by playwright-core from tests/serve)
    want+=(chromium)
fi
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
