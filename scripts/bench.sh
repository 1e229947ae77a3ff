#!/usr/bin/env bash
# Builds the release plugin and runs the benchmarks; prints the figures that
# BENCHMARKS.md records. `scripts/bench.sh --smoke` runs each briefly (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p context-analytics
if [ "${1:-}" = "--smoke" ]; then
    cargo bench --locked -p context-host --bench search_hook -- --warm-up-time 0.2 --measurement-time 0.5
else
    cargo bench --locked -p context-host --bench search_hook
fi
