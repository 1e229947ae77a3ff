#!/usr/bin/env bash
# Fuzzes every operation of the analytics API's OpenAPI document with
# schemathesis, against the real context-host with the real plugin .so and
# its default embedded SQLite storage holding a small real workload.
#
#   tests/fuzz/run.sh HOST_BIN PLUGIN_SO WORKDIR
#
# WORKDIR gets the venv (reused on reruns), the host config, data and log
# (data is wiped at every start), and schemathesis' reports. Only loopback
# is used once the venv is installed. Exit status: 0 when schemathesis
# reports no failure and no error, non-zero otherwise (also when the host
# does not come up or the wall-clock limit is hit). The host is stopped in
# every case.
#
# The last line printed is always "N passed, M failed": N and M count API
# OPERATIONS of the document, as schemathesis reports them in its JSON run
# report (an operation failed when any check failed, or it errored, on any
# request sent to it; skipped operations count as neither).
#
# Knobs (environment): FUZZ_EXAMPLES (test cases per operation and phase,
# default 40), FUZZ_SEED (default 20261128), FUZZ_TIME_LIMIT (seconds for
# the whole schemathesis run, default 900).
set -euo pipefail

if [ "$#" -ne 3 ]; then
    echo "usage: $0 HOST_BIN PLUGIN_SO WORKDIR" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
host_bin=$(realpath -e "$1")
plugin_so=$(realpath -e "$2")
mkdir -p "$3"
work=$(cd "$3" && pwd)

examples=${FUZZ_EXAMPLES:-40}
seed=${FUZZ_SEED:-20261128}
time_limit=${FUZZ_TIME_LIMIT:-900}

summary() { # the final line; "0 passed, 0 failed" (and exit 1) when the fuzzer could not run
    echo "${1:-0} passed, ${2:-0} failed"
}
die() {
    echo "fuzz: $*" >&2
    summary 0 0
    exit 1
}

# Loopback only: never send the fuzzer's or curl's requests through a proxy.
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy

# --- the fuzzer, in a venv of its own -------------------------------------
venv=$work/venv
if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        # Debian 12 ships venv (ensurepip) as a separate package.
        rm -rf "$venv"
        echo "fuzz: python3 -m venv failed; installing python3-venv" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
py=$venv/bin/python

# --- the host, with the plugin and one real project -----------------------
rm -rf "$work/data" "$work/plugins" "$work/report"
mkdir -p "$work/plugins" "$work/report"
cp "$plugin_so" "$work/plugins/"
project=plugin-api
cat >"$work/host.toml" <<TOML
[server]
listen = "127.0.0.1:0"
data_dir = "data"
snapshot_interval_secs = 1

[plugins]
dir = "plugins"

[plugins.analytics]
enabled = true

[[projects]]
name = "$project"
path = "$root/plugin-api"
TOML

log=$work/host.log
host_pid=
stop_host() {
    [ -n "$host_pid" ] || return 0
    if kill -0 "$host_pid" 2>/dev/null; then
        kill -TERM "$host_pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$host_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$host_pid" 2>/dev/null || true
    fi
    wait "$host_pid" 2>/dev/null || true
    host_pid=
}
trap stop_host EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NO_COLOR=1 RUST_LOG=info "$host_bin" serve --config "$work/host.toml" >"$work/host.stdout" 2>"$log" &
host_pid=$!

base=
for _ in $(seq 300); do
    base=$(sed -n 's/.*context-host listening on \(http:\/\/127\.0\.0\.1:[0-9][0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$base" ] && break
    kill -0 "$host_pid" 2>/dev/null || { cat "$log" >&2; die "context-host exited before listening"; }
    sleep 0.1
done
[ -n "$base" ] || { cat "$log" >&2; die "no 'context-host listening on' line in $log"; }
echo "fuzz: context-host at $base (log: $log)"

json_get() { # json_get EXPR: evaluates EXPR on the JSON document `d` read from stdin
    "$py" -c "import json,sys
try:
    d = json.load(sys.stdin); v = $1
except Exception:
    v = ''
print('' if v is None else (json.dumps(v) if isinstance(v, bool) else v))"
}

connected=
for _ in $(seq 300); do
    connected=$(curl -s --max-time 5 "$base/api/v1/analytics/health" | json_get 'd["storage"]["connected"]')
    [ "$connected" = true ] && break
    sleep 0.1
done
[ "$connected" = true ] || { cat "$log" >&2; die "analytics storage never reported connected"; }
ready=
for _ in $(seq 300); do
    ready=$(curl -s --max-time 5 "$base/healthz" | json_get 'd["ready"]')
    [ "$ready" = true ] && break
    sleep 0.1
done
[ "$ready" = true ] || die "the project was never indexed"

# --- a small workload, so that the datasets are not all empty -------------
words=(plugin hook route event module request response header sink guard
    version panic host context snapshot)
searches=0 opens=0
for i in $(seq 1 50); do
    user="user$((i % 5))"
    word=${words[$((i % ${#words[@]}))]}
    if ((i % 10 == 0)); then
        q="nothing_matches_$i"
    elif ((i % 7 == 0)); then
        q="fn%20${word}_%5Ba-z%5D%2B&kind=regex" # fn <word>_[a-z]+
    else
        q=$word
    fi
    reply=$(curl -s --max-time 10 -H "X-Context-User: $user" "$base/api/v1/search?project=$project&q=$q")
    searches=$((searches + 1))
    if ((i % 4 == 1)); then
        path=$(printf '%s' "$reply" | json_get 'd["results"][0]["path"]')
        sid=$(printf '%s' "$reply" | json_get 'd["search_id"]')
        if [ -n "$path" ] && [ -n "$sid" ]; then
            body=$("$py" -c 'import json,sys; print(json.dumps({"project": sys.argv[1], "path": sys.argv[2], "rank": 1, "search_id": sys.argv[3]}))' \
                "$project" "$path" "$sid")
            curl -s --max-time 10 -o /dev/null -H "X-Context-User: $user" -H 'content-type: application/json' \
                -d "$body" "$base/api/v1/files/open"
            opens=$((opens + 1))
        fi
    fi
done
sleep 1.2 # the writer commits batches about every second
echo "fuzz: workload sent: $searches searches, $opens file opens"

# --- the fuzzer ------------------------------------------------------------
# Operations in the document (for the summary if schemathesis never reports).
doc_ops=$(curl -s --max-time 10 "$base/api/v1/analytics/openapi.json" |
    json_get 'sum(len(m) for m in d["paths"].values())')

# A schemathesis hook; see its header for why and what it does.
cat >"$work/hooks.py" <<'PY'
# Written by tests/fuzz/run.sh; loaded by schemathesis via SCHEMATHESIS_HOOKS.
#
# The analytics API has rules BETWEEN query parameters that its OpenAPI 3.0
# document states in prose (parameter and operation descriptions) but
# cannot express as schemas: OpenAPI 3.0 parameters are independent. A
# schema-valid combination that breaks one of them is rightly answered 400,
# which the positive_data_acceptance check would report as "schema-valid
# request rejected", once per operation, hiding every other rejection of a
# schema-valid value. So, for POSITIVE test cases only (negative ones are
# sent as generated), this hook makes the query follow those rules before
# it is sent; schemathesis revalidates the case after the edit, and every
# value sent is still one the document allows.
#
#   from/to   "start (RFC 3339), with to" / "end (RFC 3339), after from":
#             a lone one is dropped; reversed ones are swapped; equal ones
#             are both dropped.
#   timerange dropped when from/to are sent (the document says "not with
#             from/to"; the handler answers 400 to both at once).
#   step      "at most 5000 buckets": a step too short for the range is
#             replaced by the shortest whole number of days that fits.
#   export    "Dataset parameters apply only to their dataset": each of
#             aggregation, limit, zero_results, hot_spot_factor, page and
#             page_size is dropped unless the dataset takes it.
#   alerts    The same for JSON bodies: the rules between an alert rule's
#             fields and a silence's, as their descriptions state them
#             (fix_rule and fix_silence below).
import datetime
import math
import re

import schemathesis
from schemathesis import GenerationMode

MINUTE, HOUR, DAY = 60_000_000, 3_600_000_000, 86_400_000_000  # microseconds
# (span, default step) of each timerange, as in params.rs
TIMERANGES = {
    "1h": (HOUR, MINUTE),
    "6h": (6 * HOUR, 5 * MINUTE),
    "24h": (DAY, 15 * MINUTE),
    "7d": (7 * DAY, HOUR),
    "30d": (30 * DAY, 6 * HOUR),
}
MAX_BUCKETS = 5000
EXPORT_OWN = {
    "search-performance": {"aggregation"},
    "usage": {"limit"},
    "top-queries": {"limit", "zero_results"},
    "code-health": {"hot_spot_factor", "page", "page_size"},
}
EXPORT_DATASET_PARAMS = ("aggregation", "limit", "zero_results", "hot_spot_factor", "page", "page_size")
RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})")
STEP = re.compile(r"([1-9][0-9]{0,3})([mhd])")
EPOCH = datetime.date(1970, 1, 1).toordinal()


def micros(text):
    """Unix microseconds of an RFC 3339 time, or None."""
    m = RFC3339.fullmatch(str(text))
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        days = datetime.date(year, month, day).toordinal() - EPOCH
    except ValueError:
        return None
    fraction = int((m.group(7) or "").ljust(6, "0")[:6])
    zone = m.group(8)
    offset = 0 if zone in ("Z", "z") else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return (days * 86_400 + hour * 3600 + minute * 60 + second - offset) * 1_000_000 + fraction


def step_micros(text):
    m = STEP.fullmatch(str(text))
    return None if m is None else int(m.group(1)) * {"m": MINUTE, "h": HOUR, "d": DAY}[m.group(2)]


def buckets(start, end, step):
    return (-(-end // step) * step - (start // step) * step) // step


DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LABEL_KEY = re.compile(r"[A-Za-z0-9_]{1,128}")
PROCESS_MEASURES = ("cpu", "resident_memory")
YEAR = 365 * 86400


def seconds(text):
    """Seconds of a duration such as 1h30m, or None."""
    parts = DURATION.findall(str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        return None
    return sum(int(n) * DURATION_UNITS[u] for n, u in parts)


def fix_rule(body, path_name):
    """The rules an alert rule's description states between its fields:
    percentile is for search_latency only; op "anomalous" is for
    request_rate only and takes no threshold, other ops need one; window is
    1s to 7d, for/keep_firing_for/repeat_interval at most 365d; per_project
    is not for the process measures (cpu, resident_memory); label and
    annotation keys are A-Z a-z 0-9 _ and labels do not set alertname,
    severity or project; PUT's body names the rule of its path."""
    if path_name is not None:
        body["name"] = path_name
    if body.get("op") == "anomalous":
        body["measure"] = "request_rate"
        body.pop("threshold", None)
    elif "threshold" not in body:
        body["threshold"] = 0.5
    if body.get("measure") != "search_latency":
        body.pop("percentile", None)
    if "window" in body and not (1 <= (seconds(body["window"]) or 0) <= 7 * 86400):
        body["window"] = "5m"
    for key in ("for", "keep_firing_for", "repeat_interval"):
        if key in body and (seconds(body[key]) or 0) > YEAR:
            body[key] = "1h"
    if body.get("measure") in PROCESS_MEASURES:
        body["per_project"] = False
    for key in ("labels", "annotations"):
        if isinstance(body.get(key), dict):
            body[key] = {k: v for k, v in body[key].items() if LABEL_KEY.fullmatch(k)
                         and not (key == "labels" and k in ("alertname", "severity", "project"))}


def fix_silence(body):
    """Exactly one of ends_at or duration; it ends after it starts, in the
    future and within a year (starts_at is dropped: now); =~ and !~ values
    are regular expressions (made empty: the hook cannot check Rust's
    syntax)."""
    body.pop("starts_at", None)
    if "ends_at" in body:
        end = micros(body["ends_at"])
        now = datetime.datetime.now(datetime.timezone.utc).timestamp() * 1e6
        if "duration" in body or end is None or not (now + 60e6 < end < now + YEAR * 1e6):
            body.pop("ends_at")
    if "ends_at" not in body and not (1 <= (seconds(body.get("duration")) or 0) <= YEAR):
        body["duration"] = "1h"
    for m in body.get("matchers") or []:
        if isinstance(m, dict) and m.get("op") in ("=~", "!~"):
            m["value"] = ""


@schemathesis.hook
def before_call(ctx, case, kwargs):
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return
    path = case.operation.path
    if isinstance(case.body, dict) and path.startswith("/api/v1/analytics/alerts/rules"):
        fix_rule(case.body, (case.path_parameters or {}).get("name"))
    if isinstance(case.body, dict) and path == "/api/v1/analytics/alerts/silences":
        fix_silence(case.body)
    if not case.query:
        return
    q = case.query
    if case.operation.path.endswith("/export"):
        own = EXPORT_OWN.get(q.get("dataset"), set())
        for key in EXPORT_DATASET_PARAMS:
            if key in q and key not in own:
                del q[key]
    if ("from" in q) != ("to" in q):
        q.pop("from", None)
        q.pop("to", None)
    if "from" in q:
        q.pop("timerange", None)
        start, end = micros(q["from"]), micros(q["to"])
        if start is None or end is None:
            return  # not a time this hook understands: let the API judge it
        if end < start:
            q["from"], q["to"] = q["to"], q["from"]
            start, end = end, start
        if end == start:
            del q["from"], q["to"]
    if "from" in q:
        span = end - start
        default_step = next((t[1] for t in TIMERANGES.values() if span <= t[0]), DAY)
        step = step_micros(q.get("step")) or default_step
        too_many = buckets(start, end, step) > MAX_BUCKETS
    else:
        span, default_step = TIMERANGES.get(q.get("timerange"), TIMERANGES["24h"])
        step = step_micros(q.get("step")) or default_step
        too_many = span // step + 2 > MAX_BUCKETS  # the range ends "now": allow for alignment
    if too_many:
        q["step"] = f"{max(1, math.ceil(span / ((MAX_BUCKETS - 2) * DAY)))}d"
PY
: >"$work/schemathesis.toml" # pinned, so no schemathesis.toml around WORKDIR applies

# All checks are on: not_a_server_error (no 5xx), status_code_conformance,
# content_type_conformance, response_headers_conformance,
# response_schema_conformance, negative_data_rejection,
# positive_data_acceptance, missing_required_header, unsupported_method,
# allow_header_conformance and the stateful/auth ones (which report nothing
# here: the document has no links and no tokens are configured). Phases:
# examples (none in the document), coverage, fuzzing, stateful. Bounded by
# --max-examples per operation and the wall clock (`timeout`); no
# --max-time, because in schemathesis 4 that makes fuzzing repeat until the
# budget is spent. Deterministic: fixed seed, one worker, no example
# database. --continue-on-failure: keep testing an operation after its
# first failure, so one finding does not hide the others.
report=$work/report
echo "fuzz: schemathesis, $examples examples per operation, seed $seed, limit ${time_limit}s"
set +e
(
    cd "$work"
    SCHEMATHESIS_HOOKS=$work/hooks.py timeout --foreground --kill-after=10 "$time_limit" \
        "$venv/bin/st" --config-file "$work/schemathesis.toml" --no-color run \
        "$base/api/v1/analytics/openapi.json" \
        --checks all \
        --workers 1 \
        --max-examples "$examples" \
        --seed "$seed" \
        --generation-database none \
        --continue-on-failure \
        --request-timeout 30 \
        --report json,junit --report-dir "$report"
)
st_status=$?
set -e
stop_host

errors=$(grep -E ' (ERROR|WARN) ' "$log" || true)
if [ -n "$errors" ]; then
    echo
    echo "fuzz: errors and warnings in the host log ($log):"
    printf '%s\n' "$errors" | head -n 50
fi

if [ "$st_status" -eq 124 ] || [ "$st_status" -eq 137 ]; then
    echo "fuzz: schemathesis did not finish within ${time_limit}s" >&2
fi
json_report=$(ls -t "$report"/json-*.json 2>/dev/null | head -n1 || true)
if [ -z "$json_report" ]; then
    echo "fuzz: schemathesis wrote no JSON report (exit status $st_status)" >&2
    summary 0 "${doc_ops:-0}"
    exit 1
fi
# Operations that failed = those named by any failure or error; passed =
# the other operations that were run (selected and not skipped).
read -r passed failed < <("$py" - "$json_report" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
ops = report["operations"]
bad = set()
for failure in report.get("failures", []):
    bad.update(failure.get("operations", []))
unlabelled = 0
for error in report.get("errors", []):
    labels = error.get("operations") or ([error["operation"]] if error.get("operation") else [])
    bad.update(labels)
    unlabelled += not labels
failed = max(len(bad), ops.get("errored", 0)) + unlabelled
print(max(0, ops.get("selected", 0) - ops.get("skipped", 0) - failed), failed)
PY
)
passed=${passed:-0} failed=${failed:-${doc_ops:-0}}
if [ "$st_status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1 # schemathesis failed without naming an operation: never report success
fi
echo
summary "$passed" "$failed"
[ "$st_status" -eq 0 ] && [ "$failed" -eq 0 ]
