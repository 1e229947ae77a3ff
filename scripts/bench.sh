#!/usr/bin/env bash
# The benchmark suite; BENCHMARKS.md says what each one measures and records
# the figures with the command that made them.
#
#   scripts/bench.sh                        release build, every benchmark at
#                                           full size (about 15 minutes on 2 cores)
#   scripts/bench.sh --postgres-url URL     also ingest and route latency on
#                                           PostgreSQL (scripts/db/postgres.sh
#                                           starts one)
#   scripts/bench.sh --smoke                every benchmark briefly, on the debug
#                                           build (CI: proves they still run;
#                                           the figures mean nothing)
#
# Fails as soon as a benchmark fails. Scratch files go to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=false
postgres_url=""
while (($#)); do
    case "$1" in
        --smoke) smoke=true ;;
        --postgres-url) postgres_url=${2:?"--postgres-url needs a URL"}; shift ;;
        *) echo "usage: scripts/bench.sh [--smoke] [--postgres-url URL]" >&2; exit 2 ;;
    esac
    shift
done

work=target/bench
mkdir -p "$work"
work_abs=$(cd "$work" && pwd)
step() { printf '\n== %s\n' "$*"; }
started=$SECONDS

if $smoke; then
    cargo build --locked -p context-host -p context-analytics
    so=$PWD/target/debug/libcontext_analytics.so
    host=target/debug/context-host
    # cargo test runs a criterion bench once per benchmark, unmeasured.
    step "1. search hook through the .so (test mode)"
    CONTEXT_PLUGIN_SO=$so cargo test --locked -p context-host --bench search_hook
    step "3. ingest to SQLite"
    cargo test --locked -p context-analytics --bench ingest -- \
        --url "sqlite://$work_abs/ingest.db" --rate 2000 --seconds 2
    if [ -n "$postgres_url" ]; then
        step "3. ingest to PostgreSQL"
        cargo test --locked -p context-analytics --bench ingest -- --url "$postgres_url" --rate 2000 --seconds 2
    fi
    step "4. analytics route latency (SQLite)"
    cargo test --locked -p context-analytics --bench api -- \
        --url "sqlite://$work_abs/api.db" --events 20000 --runs 3
    step "2. throughput, plugin enabled against disabled"
    $host bench throughput --plugin $so --workdir "$work" \
        --files 200 --pairs 1 --rounds 2 --seconds 2 --warmup 1 --connections 4
    step "5. /metrics with 50 projects"
    $host bench scrape --plugin $so --workdir "$work" --files 150 --load-seconds 2 --scrapes 5
    step "6. plugin memory"
    $host bench memory --plugin $so --workdir "$work" \
        --files 200 --rate 500 --seconds 6 --sample-every 2 --warmup 1
    step "7. alert latency, threshold crossing to notification"
    $host bench alert-latency --plugin $so --workdir "$work" --trials 2
else
    cargo build --release --locked -p context-host -p context-analytics
    so=$PWD/target/release/libcontext_analytics.so
    host=target/release/context-host
    step "1. search hook through the .so"
    cargo bench --locked -p context-host --bench search_hook
    step "3. ingest to SQLite"
    cargo bench --locked -p context-analytics --bench ingest -- \
        --url "sqlite://$work_abs/ingest.db" --rate 60000 --seconds 10
    if [ -n "$postgres_url" ]; then
        step "3. ingest to PostgreSQL"
        cargo bench --locked -p context-analytics --bench ingest -- --url "$postgres_url" --rate 100000 --seconds 10
    fi
    step "4. analytics route latency (SQLite)"
    cargo bench --locked -p context-analytics --bench api -- --url "sqlite://$work_abs/api.db" --events 1000000
    if [ -n "$postgres_url" ]; then
        step "4. analytics route latency (PostgreSQL)"
        cargo bench --locked -p context-analytics --bench api -- --url "$postgres_url" --events 1000000
    fi
    step "2. throughput, plugin enabled against disabled"
    $host bench throughput --plugin $so --workdir "$work" --json "$work/throughput.json"
    step "5. /metrics with 50 projects"
    $host bench scrape --plugin $so --workdir "$work" --json "$work/scrape.json"
    step "6. plugin memory"
    $host bench memory --plugin $so --workdir "$work" --json "$work/memory.json"
    step "7. alert latency, threshold crossing to notification"
    $host bench alert-latency --plugin $so --workdir "$work" --json "$work/alert-latency.json"
fi
step "benchmarks done in $((SECONDS - started)) s"
