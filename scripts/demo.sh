#!/usr/bin/env bash
# Builds context-host and the analytics plugin (release), drops the .so into
# a plugins folder, starts the host over this repository's own crates as
# sample projects with embedded storage, runs a short demo workload and
# prints where to look. Ctrl-C stops the host (plugins flush on the way out).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
port=${PORT:-8080}
demo=target/demo

command -v curl >/dev/null 2>&1 || scripts/install-deps.sh
cargo build --release --locked -p context-host -p context-analytics
mkdir -p "$demo/plugins"
cp target/release/libcontext_analytics.so "$demo/plugins/"
cat > "$demo/host.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
data_dir = "data"

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

target/release/context-host check-plugin "$demo/plugins/libcontext_analytics.so"
target/release/context-host serve --config "$demo/host.toml" &
host_pid=$!
trap 'kill -TERM $host_pid 2>/dev/null; wait $host_pid' INT TERM EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done

# A short workload: five users, real words from the sources, some queries
# that find nothing, a regex, and file opens from the results.
words=(plugin hook metrics search index route panic config queue registry
       snapshot latency cache project runtime shutdown event counter)
for i in $(seq 1 300); do
    user="user$((i % 5))"
    word=${words[$((RANDOM % ${#words[@]}))]}
    project=$(printf 'plugin-api\nanalytics-plugin\nhost-shim\n' | sed -n "$((i % 3 + 1))p")
    if ((i % 10 == 0)); then word="nothing_matches_$i"; fi
    if ((i % 17 == 0)); then
        curl -s -o /dev/null -H "X-Context-User: $user" "$base/api/v1/search?project=$project&kind=regex&q=fn%20${word}_%5Ba-z%5D%2B"
        continue
    fi
    reply=$(curl -s -H "X-Context-User: $user" "$base/api/v1/search?project=$project&q=$word")
    if ((i % 4 == 0)); then
        path=$(printf '%s' "$reply" | sed -n 's/.*"results":\[{"path":"\([^"]*\)".*/\1/p')
        sid=$(printf '%s' "$reply" | sed -n 's/.*"search_id":"\([^"]*\)".*/\1/p')
        [ -n "$path" ] && curl -s -o /dev/null -H "X-Context-User: $user" -H 'content-type: application/json' \
            -d "{\"project\":\"$project\",\"path\":\"$path\",\"rank\":1,\"search_id\":\"$sid\"}" "$base/api/v1/files/open"
    fi
done

cat <<TXT

context-host is running with the analytics plugin (demo workload sent: 300 searches).
  Prometheus metrics:   $base/metrics
  Plugin health:        $base/api/v1/analytics/health
  Search yourself:      $base/api/v1/search?project=host-shim&q=plugin
  Host config and data: $root/$demo/
Press Ctrl-C to stop.
TXT
wait $host_pid
