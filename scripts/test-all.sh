#!/usr/bin/env bash
# Runs every test: installs what the tests need, checks formatting, checks
# the alerting rules (promtool/amtool), starts a real PostgreSQL 15 and the
# TimescaleDB test server on 127.0.0.1, builds the workspace (the end-to-end
# tests load the built .so files), runs the unit, storage, in-process and
# end-to-end tests, then proves every dashboard panel against a real
# Prometheus and both databases. Servers it started are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all -- --check
alert_rules/check.sh

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/context-tests.XXXXXX)
chmod 755 "$work"
cleanup() {
    scripts/db/timescale.sh stop "$work/timescale" >/dev/null 2>&1 || true
    scripts/db/postgres.sh stop "$work/postgres" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
CONTEXT_TEST_POSTGRES_URL=$(scripts/db/postgres.sh start "$work/postgres" "$(free_port)" | tail -n 1)
CONTEXT_TEST_TIMESCALE_URL=$(scripts/db/timescale.sh start "$work/timescale" "$(free_port)" | tail -n 1)
export CONTEXT_TEST_POSTGRES_URL CONTEXT_TEST_TIMESCALE_URL
echo "PostgreSQL: $CONTEXT_TEST_POSTGRES_URL  TimescaleDB: $CONTEXT_TEST_TIMESCALE_URL"

cargo build --workspace --all-targets --locked
# The deploy stack: Compose file, every config it mounts, the systemd unit.
deploy/check.sh
cargo test --workspace --locked

# Every dashboard panel against a real Prometheus scraping the real host,
# and every SQL panel against both databases (after the storage suite: the
# check recreates the analytics tables). psql needs a password for the
# TimescaleDB test server; any one does.
python3 dashboards/check.py --host-bin target/debug/context-host \
    --plugin-so target/debug/libcontext_analytics.so \
    --postgres-url "$CONTEXT_TEST_POSTGRES_URL" \
    --timescale-url "${CONTEXT_TEST_TIMESCALE_URL/postgres@/postgres:test@}" \
    --workdir "$work/dashboards"

# Every route of the OpenAPI document fuzzed by schemathesis (from PyPI):
# no 5xx, every response as the document says.
tests/fuzz/run.sh target/debug/context-host target/debug/libcontext_analytics.so "$work/fuzz"

# The live page in Debian's headless Chromium against the real host and .so
# (screenshots kept in target/browser-artifacts/).
BROWSER_ARTIFACTS=target/browser-artifacts \
    tests/browser/run.sh target/debug/context-host target/debug/libcontext_analytics.so "$work/browser"

# Every benchmark briefly, so none of them can rot (figures: BENCHMARKS.md).
scripts/bench.sh --smoke
