#!/usr/bin/env bash
# Validates the deploy stack with the real tools, without a Docker engine:
#   - compose.yml parses and resolves with .env.example (docker-compose 1.29
#     `config -q`), and every variable it requires is in .env.example;
#   - each service's --config flag names a file it mounts, and every address
#     the configs point at (scrape targets, Alertmanager, Grafana's data
#     sources, the plugin's storage URL) is a service of the file;
#   - every bind mount of the resolved file is reproduced under a scratch
#     root, then each mounted config is checked by the program that reads
#     it: `promtool check config` (Prometheus, with the mounted rules),
#     `amtool check-config` (Alertmanager), `context-host check-config`
#     (the server's keys) and `context-analytics-admin check-config` (the
#     plugin's keys, as the plugin checks them at load), the dashboards'
#     JSON and provisioning files, the database init script (`sh -n`);
#   - the built plugin is accepted by the built host (`check-plugin`, as the
#     image build does);
#   - the systemd unit passes `systemd-analyze verify` (skipped, with a
#     message, where systemd-analyze is missing).
# Needs the debug build (cargo build --workspace) or CONTEXT_BIN_DIR.
set -euo pipefail
cd "$(dirname "$0")"
bin_dir=$(cd "${CONTEXT_BIN_DIR:-../target/debug}" && pwd)

# PyYAML comes with Debian's docker-compose, for the system Python.
python=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import yaml' 2>/dev/null; then python=/usr/bin/python3; fi

for tool in docker-compose promtool amtool "$python"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "deploy/check.sh: $tool not found (run scripts/install-deps.sh)" >&2
        exit 1
    fi
done
for artifact in context-host context-analytics-admin libcontext_analytics.so; do
    if [ ! -e "$bin_dir/$artifact" ]; then
        echo "deploy/check.sh: $bin_dir/$artifact missing (cargo build --workspace first)" >&2
        exit 1
    fi
done

work=$(mktemp -d /tmp/context-deploy-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

compose() { docker-compose --env-file .env.example -f compose.yml "$@"; }

compose config -q
echo "compose.yml: valid (docker-compose config)"

# Every ${VAR:?...} the file requires must be in .env.example, and the
# example must hold no secret but placeholders.
required=$(grep -o '\${[A-Z_]*:?' compose.yml | sed 's/^\${//; s/:?$//' | sort -u)
for var in $required; do
    if ! grep -q "^$var=" .env.example; then
        echo "deploy/check.sh: compose.yml requires $var but .env.example does not set it" >&2
        exit 1
    fi
done
if grep -E '^[A-Z_]*(PASSWORD|SECRET)[A-Z_]*=' .env.example | grep -v '=change-me' >/dev/null; then
    echo "deploy/check.sh: .env.example must hold placeholders (change-me...), not secrets" >&2
    exit 1
fi
# Without an env file the required variables are refused by name.
: >"$work/empty.env"
unset_required=()
for var in $required; do unset_required+=(-u "$var"); done
if env "${unset_required[@]}" docker-compose --env-file "$work/empty.env" -f compose.yml config -q 2>"$work/missing.txt"; then
    echo "deploy/check.sh: compose.yml resolves without secrets; they must be required" >&2
    exit 1
fi
grep -q 'ANALYTICS_DB_PASSWORD' "$work/missing.txt"

# Reproduce each service's bind mounts under $work/root/SERVICE.
compose config >"$work/resolved.yml"
"$python" - "$work/resolved.yml" "$work/root" <<'PY'
import os, shutil, sys, yaml
resolved, root = sys.argv[1], sys.argv[2]
services = yaml.safe_load(open(resolved))["services"]
for name, service in services.items():
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target = volume["source"], volume["target"]
        else:
            parts = volume.split(":")
            if not parts[0].startswith("/"):
                continue  # a named volume
            source, target = parts[0], parts[1]
        if not os.path.exists(source):
            sys.exit(f"deploy/check.sh: {name} mounts {source}, which does not exist")
        dest = os.path.join(root, name, target.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.isdir(source):
            if target.startswith("/srv/projects/"):
                os.makedirs(dest, exist_ok=True)  # indexed files: only its existence matters
            else:
                shutil.copytree(source, dest)
        else:
            shutil.copy(source, dest)

# Each service's config flags name a file it really has mounted.
for name, service in services.items():
    command = service.get("command") or []
    if isinstance(command, str):
        command = command.split()
    for i, arg in enumerate(command):
        path = None
        if arg.startswith("--config.file="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(command):
            path = command[i + 1]
        if path and not os.path.isfile(os.path.join(root, name, path.lstrip("/"))):
            sys.exit(f"deploy/check.sh: {name} reads {path}, which compose.yml does not mount")

# Every host name the configs point at is a service of this file.
def host_of(address):
    address = address.split("://", 1)[-1]
    return address.split("/", 1)[0].rsplit(":", 1)[0]
prometheus = yaml.safe_load(open(os.path.join(root, "prometheus/etc/prometheus/prometheus.yml")))
addresses = [t for job in prometheus["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
addresses += [t for am in prometheus["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
grafana_env = services["grafana"]["environment"]
addresses += [grafana_env["PROMETHEUS_URL"], grafana_env["ANALYTICS_DB_HOST"]]
import tomllib
host_config = tomllib.load(open(os.path.join(root, "context/etc/context/host.toml"), "rb"))
storage_url = host_config["plugins"]["analytics"]["config"]["storage"]["url"]
addresses.append(storage_url.split("@", 1)[-1])
for address in addresses:
    host = host_of(address)
    if host not in services and host not in ("127.0.0.1", "localhost"):
        sys.exit(f"deploy/check.sh: '{address}' points at '{host}', which is not a service of compose.yml")
print(f"compose.yml: config files mounted where each service reads them; {len(addresses)} addresses name services")
PY
root=$work/root

promtool check config "$root/prometheus/etc/prometheus/prometheus.yml"
amtool check-config "$root/alertmanager/etc/alertmanager/alertmanager.yml"

host_config=$root/context/etc/context/host.toml
"$bin_dir/context-host" check-config "$host_config"
(
    set -a
    # shellcheck disable=SC1091
    . ./.env.example
    set +a
    "$bin_dir/context-analytics-admin" check-config "$host_config"
)
"$bin_dir/context-host" check-plugin "$bin_dir/libcontext_analytics.so"

# Grafana: the provisioning files parse, and the dashboards folder they
# point at is what compose mounts, holding valid dashboard JSON.
"$python" - "$root/grafana" <<'PY'
import glob, json, os, sys, yaml
root = sys.argv[1]
for kind in ("datasources", "dashboards"):
    files = glob.glob(f"{root}/etc/grafana/provisioning/{kind}/*.yml")
    if not files:
        sys.exit(f"deploy/check.sh: no Grafana {kind} provisioning file is mounted")
    for f in files:
        yaml.safe_load(open(f))
provider = yaml.safe_load(open(glob.glob(f"{root}/etc/grafana/provisioning/dashboards/*.yml")[0]))
path = provider["providers"][0]["options"]["path"]
dashboards = glob.glob(os.path.join(root, path.lstrip("/"), "*.json"))
if not dashboards:
    sys.exit(f"deploy/check.sh: the dashboard provider reads {path}, where nothing is mounted")
for d in dashboards:
    if "panels" not in json.load(open(d)):
        sys.exit(f"deploy/check.sh: {d} is not a dashboard")
print(f"grafana: {len(dashboards)} dashboards at {path}, provisioning parses")
PY
for script in "$root"/timescaledb/docker-entrypoint-initdb.d/*.sh; do
    sh -n "$script"
done
echo "timescaledb init scripts: syntax OK"

# systemd: verify the unit with the binary paths pointing at the build.
if command -v systemd-analyze >/dev/null 2>&1; then
    unit=$work/context-host.service
    sed "s#/usr/local/bin/context-host#$bin_dir/context-host#g" systemd/context-host.service >"$unit"
    if ! systemd-analyze verify "$unit" 2>"$work/verify.txt"; then
        cat "$work/verify.txt" >&2
        exit 1
    fi
    # verify reports most problems (unknown keys, bad values) as warnings
    # and still exits 0: any line but the sandbox's own is a failure.
    if grep -v -e 'Failed to connect to bus' -e 'must be run as root' "$work/verify.txt" >&2; then
        exit 1
    fi
    echo "systemd unit: verified (systemd-analyze verify)"
else
    echo "systemd unit: not verified (systemd-analyze not installed)"
fi
echo "deploy: SUCCESS"
