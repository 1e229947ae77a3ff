#!/usr/bin/env bash
# The main job, end to end: builds context-host and the analytics plugin
# (release), generates a corpus of source-like files, starts the host with
# the plugin on embedded storage (SQLite, the default) over this
# repository's own crates and the corpus, sends a bounded demo workload
# (DEMO_SECONDS, default 30 s: Zipf searches from the indexed vocabulary,
# zero-result and regex queries, several users, file opens, reindexing after
# edits of the generated corpus, a traffic burst every 15 s), prints where to
# look, and keeps the host running until Ctrl-C (plugins flush on the way
# out). PORT (default 8080) sets the port; only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
port=${PORT:-8080}
seconds=${DEMO_SECONDS:-30}
demo=target/demo

command -v curl >/dev/null 2>&1 || scripts/install-deps.sh
cargo build --release --locked -p context-host -p context-analytics
host=target/release/context-host
mkdir -p "$demo/plugins"
cp target/release/libcontext_analytics.so "$demo/plugins/"
# Generated files only: never committed, replaced on every run.
$host gen-corpus "$demo/corpus" --files 2000 --projects 2 > "$demo/corpus-projects.toml"
cat > "$demo/host.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
data_dir = "data"
snapshot_interval_secs = 5

[plugins]
dir = "plugins"

[plugins.analytics]
enabled = true

[[projects]]
name = "plugin-api"
path = "$root/plugin-api"

[[projects]]
name = "analytics-plugin"
path = "$root/analytics-plugin"

[[projects]]
name = "host-shim"
path = "$root/host-shim"

TOML
cat "$demo/corpus-projects.toml" >> "$demo/host.toml"

$host check-plugin "$demo/plugins/libcontext_analytics.so"
$host serve --config "$demo/host.toml" &
host_pid=$!
trap 'kill -TERM $host_pid 2>/dev/null; wait $host_pid' INT TERM EXIT
base="http://127.0.0.1:$port"

# loadgen waits for the first index of every project, then stops by itself.
$host loadgen --url "$base" --seconds "$seconds" --rate 200 --connections 4 \
    --users 12 --reindex-every 5 --edit-corpus "$demo/corpus" --edits 3 \
    --burst traffic --burst-every 15 --burst-seconds 3 --burst-factor 4

cat <<TXT

context-host is running with the analytics plugin (SQLite in $demo/data/).
  Live page (browser):  $base/analytics/
  Prometheus metrics:   $base/metrics
  Plugin health:        $base/api/v1/analytics/health
  Analytics routes:     $base/api/v1/analytics/search-performance?timerange=1h
                        (all of them: $base/api/v1/analytics/openapi.json)
  Projects and caches:  $base/api/v1/projects
  Search yourself:      $base/api/v1/search?project=host-shim&q=plugin
  Grafana dashboards:   $root/dashboards/ (json/ and provisioning/)
  More load:            $host loadgen --url $base --seconds 60
  Host config and data: $root/$demo/
Press Ctrl-C to stop.
TXT
wait $host_pid
