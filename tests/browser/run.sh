#!/usr/bin/env bash
# The live page in a real browser: installs this folder's Node packages
# (playwright-core, from package-lock.json) and runs live.test.mjs, which
# starts real context-host processes with the real plugin .so and drives
# Debian's headless Chromium (/usr/bin/chromium) against them.
#
#   tests/browser/run.sh HOST_BIN PLUGIN_SO WORKDIR
#
# WORKDIR gets the hosts' configs, data and logs and Chromium's throw-away
# profiles; screenshots of the loaded page go to $BROWSER_ARTIFACTS
# (default WORKDIR/artifacts). Only loopback is used once the packages are
# installed. Exit status: the test runner's.
set -euo pipefail

if [ "$#" -ne 3 ]; then
    echo "usage: $0 HOST_BIN PLUGIN_SO WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOST_BIN=$(realpath -e "$1")
PLUGIN_SO=$(realpath -e "$2")
mkdir -p "$3"
WORKDIR=$(cd "$3" && pwd)
mkdir -p "${BROWSER_ARTIFACTS:=$WORKDIR/artifacts}"
BROWSER_ARTIFACTS=$(cd "$BROWSER_ARTIFACTS" && pwd)
export HOST_BIN PLUGIN_SO WORKDIR BROWSER_ARTIFACTS

[ -x /usr/bin/chromium ] || { echo "browser tests: /usr/bin/chromium is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

cd "$here"
want=$(node -p "require('./package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "require('./node_modules/playwright-core/package.json').version" 2>/dev/null || true)
[ "$want" = "$have" ] || npm ci --no-audit --no-fund --loglevel=error
rm -rf "$WORKDIR/open" "$WORKDIR/auth"
status=0
node --test --test-concurrency=1 --test-reporter=spec live.test.mjs || status=$?
echo "browser tests: screenshots in $BROWSER_ARTIFACTS/"
exit "$status"
