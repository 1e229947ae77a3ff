#!/usr/bin/env bash
# Checks the alerting files in this folder: the rules parse (promtool check
# rules), their unit tests pass (promtool test rules), the Alertmanager
# example is valid and routes each severity where it should (amtool), and
# every alert has the labels, annotations, runbook section and tests the
# house style asks for. Exits non-zero on the first failure. Runs from any
# directory; needs promtool and amtool (scripts/install-deps.sh installs
# both).
set -euo pipefail
cd "$(dirname "$0")"

rules=context-analytics.rules.yml
tests=context-analytics.rules.test.yml
runbook=runbook.md
alertmanager=alertmanager.yml
runbook_base=https://github.com/context-analytics/context-analytics/blob/main/alert_rules/runbook.md

for tool in promtool amtool; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check.sh: $tool not found (run scripts/install-deps.sh)" >&2
        exit 1
    fi
done

promtool check rules "$rules"
promtool test rules "$tests"
amtool check-config "$alertmanager"

# Routing: severity -> receiver, as the runbook and the rules assume.
route_ok=1
for pair in critical:pager error:team warning:team info:low-priority; do
    severity=${pair%%:*} receiver=${pair#*:}
    if ! amtool config routes test --config.file="$alertmanager" \
        --verify.receivers="$receiver" severity="$severity" alertname=Check project=demo \
        >/dev/null 2>&1; then
        echo "check.sh: severity '$severity' is not routed to receiver '$receiver'" >&2
        route_ok=0
    fi
done
((route_ok)) || exit 1
echo "alertmanager routes: SUCCESS"

# Conventions promtool does not check. The rules file is block-style YAML
# with one `- alert:` line per alert; each alert's block runs to the next
# rule or group.
problems=$(awk -v base="$runbook_base" '
    function finish() {
        if (name == "") return
        if (!has_for) print name ": no for duration"
        if (!has_severity) print name ": severity must be info, warning, error or critical"
        if (!has_summary) print name ": no summary annotation"
        if (!has_description) print name ": no description annotation"
        if (runbook != base "#" tolower(name)) print name ": runbook_url must be " base "#" tolower(name)
        name = ""
    }
    /^[[:space:]]*- (alert|record|name):/ { finish() }
    /^[[:space:]]*- alert:/ {
        name = $3; has_for = has_severity = has_summary = has_description = 0; runbook = ""
    }
    name != "" && /^[[:space:]]+for: [0-9]+[smhdw]/ { has_for = 1 }
    name != "" && /^[[:space:]]+severity: (info|warning|error|critical)[[:space:]]*$/ { has_severity = 1 }
    name != "" && /^[[:space:]]+summary: / { has_summary = 1 }
    name != "" && /^[[:space:]]+description: / { has_description = 1 }
    name != "" && /^[[:space:]]+runbook_url: / { runbook = $2 }
    END { finish() }
' "$rules")

alerts=$(sed -n 's/^[[:space:]]*- alert: \([A-Za-z0-9_]*\).*/\1/p' "$rules")
for alert in $alerts; do
    grep -qx "## $alert" "$runbook" || problems+=$'\n'"$alert: no '## $alert' section in $runbook"
    # One evaluation before the alert fires and one when it fires.
    grep -Eq "^[[:space:]]+alertname: $alert\$" "$tests" \
        || problems+=$'\n'"$alert: no alert_rule_test in $tests"
    awk -v a="$alert" '
        $0 ~ "alertname: " a "$" { seen = 1; next }
        seen && /exp_alerts: \[\]/ { quiet = 1 }
        seen && /exp_alerts:$/ { firing = 1 }
        { seen = 0 }
        END { exit !(quiet && firing) }
    ' "$tests" || problems+=$'\n'"$alert: needs a test expecting no alert and one expecting it to fire"
done

problems=$(printf '%s\n' "$problems" | sed '/^$/d')
if [ -n "$problems" ]; then
    printf 'check.sh: %s\n' "$problems" >&2
    exit 1
fi
echo "alert conventions: SUCCESS ($(wc -w <<<"$alerts") alerts)"
