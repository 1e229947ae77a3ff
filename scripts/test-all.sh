#!/usr/bin/env bash
# Runs every test: installs what the tests need, checks formatting, checks
# the alerting rules (promtool/amtool), builds the workspace (the end-to-end
# tests load the built .so files) and runs the unit, in-process and
# end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all -- --check
alert_rules/check.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --locked
