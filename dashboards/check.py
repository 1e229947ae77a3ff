#!/usr/bin/env python3
"""Proves the Grafana dashboards in this folder against real components.

Starts the real `context-host` with the real analytics plugin over folders of
this repository, drives a small workload through its HTTP API, starts a real
Prometheus (Debian's `prometheus`) that scrapes it and loads the repository's
alert rules, and then checks:

- lint: the dashboard JSON against the applicable rules of Grafana's
  dashboard linter (unique panel ids, no overlapping grid positions, data
  sources that are provisioned uids or the template variables, units, titles
  and descriptions, `$__rate_interval` in rates, counters only inside
  rate/increase, `job` and `instance` matchers, template variables);
- promql: every PromQL target, with the template variables substituted the
  way Grafana does, parses and returns at least one series; every rule group
  loaded from alert_rules/ is healthy;
- sql: every SQL target, with Grafana's PostgreSQL macros expanded, runs and
  returns rows on plain PostgreSQL and on TimescaleDB, loaded with the
  repository's migrations and fixture events;
- metrics: every metric name in the dashboards and rules exists in the
  plugin's /metrics, and every exported family is used or listed in
  unused-metrics.txt.

Prints one line per failure and ends with `N passed, M failed`; exits 1 on
any failure. The SQL check DROPS and recreates the analytics tables in both
databases: point it at test databases only. Standard library only.

    python3 dashboards/check.py --host-bin target/debug/context-host \\
        --plugin-so target/debug/libcontext_analytics.so \\
        --postgres-url postgres://postgres@127.0.0.1:55440/analytics \\
        --timescale-url postgres://postgres@127.0.0.1:55441/postgres
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DASHBOARD_DIR = HERE / "json"
DATASOURCES_FILE = HERE / "provisioning" / "datasources" / "datasources.yml"
PROVIDERS_FILE = HERE / "provisioning" / "dashboards" / "dashboards.yml"
UNUSED_FILE = HERE / "unused-metrics.txt"
RULES_DIR = REPO / "alert_rules"
RULES_FILE = RULES_DIR / "context-analytics.rules.yml"
SQL_EVENTS = REPO / "sql" / "postgres" / "0001_events.sql"
SQL_ROLLUPS = REPO / "sql" / "postgres" / "0002_rollups.sql"
SQL_TIMESCALE = REPO / "sql" / "timescale" / "0002_timescale.sql"

# The sample projects: real folders of this repository, plus a generated one
# whose binary, oversized and non-UTF-8 files make the indexer's skip and
# failure paths (and so context_index_errors_total) observable.
PROJECTS = {"plugin-api": REPO / "plugin-api", "host-shim": REPO / "host-shim"}
GENERATED_PROJECT = "fixtures"

# Dashboards watched live refresh every 5 s; the others read long ranges.
LIVE_DASHBOARDS = {"context-overview", "context-search-performance", "context-index-performance",
                   "context-system-resources"}
MIN_DASHBOARDS = 6
MIN_PANELS = 51

# Grafana substitutes these per panel; the check uses one fixed value each.
RATE_INTERVAL = "1m"
PROMQL_INTERVAL = "15s"
# Scraped seconds before PromQL targets are run: 1 m rate windows then hold
# dozens of samples and the recording rules (5 m and 10 m windows) at least two.
MIN_SCRAPE_SECONDS = 30
MAX_SCRAPE_WAIT_SECONDS = 90
DEADLINE_SECONDS = 225  # the whole run stays under 4 minutes

SQL_TYPE = "grafana-postgresql-datasource"
PROM_TYPE = "prometheus"
DS_VARIABLES = {"datasource": PROM_TYPE, "sqlsource": SQL_TYPE}

# Names Prometheus creates itself; they are not in the plugin's exposition.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                     "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS",
                     "ALERTS_FOR_STATE"}
PENDING_MARK = "not yet in this build"

# Units Grafana knows (a subset of packages/grafana-data/src/valueFormats/categories.ts,
# as in the dashboard linter's panel-units-rule).
VALID_UNITS = {
    "none", "string", "short", "percent", "percentunit", "sci", "locale",
    "bytes", "decbytes", "bits", "decbits", "kbytes", "mbytes", "gbytes",
    "pps", "binBps", "Bps", "binbps", "bps", "KiBs", "MiBs", "GiBs", "KBs", "MBs", "GBs",
    "dateTimeAsIso", "dateTimeAsIsoNoDateIfToday", "dateTimeAsUS", "dateTimeAsLocal",
    "dateTimeAsLocalNoDateIfToday", "dateTimeAsSystem", "dateTimeFromNow",
    "hertz", "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms", "dtdhms",
    "timeticks", "clockms", "clocks",
    "cps", "ops", "reqps", "rps", "wps", "iops", "eps", "mps", "recps", "rowsps", "cpm", "opm", "rpm", "wpm",
    "bool", "bool_yes_no", "bool_on_off",
}


# ------------------------------------------------------------------- reporting
class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.notes: list[str] = []
        self._lock = threading.Lock()

    def check(self, ok: bool, failure: str) -> bool:
        with self._lock:
            if ok:
                self.passed += 1
            else:
                self.failed += 1
                print(f"FAIL {failure}", flush=True)
        return ok

    def ok(self) -> None:
        self.check(True, "")

    def fail(self, failure: str) -> None:
        self.check(False, failure)

    def note(self, text: str) -> None:
        with self._lock:
            if text not in self.notes:
                self.notes.append(text)


STARTED = time.monotonic()


def progress(text: str) -> None:
    print(f"check.py [{time.monotonic() - STARTED:3.0f}s]: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------- dashboards
@dataclass
class Target:
    dashboard: "Dashboard"
    panel: dict
    target: dict
    kind: str  # "promql" or "sql"

    @property
    def where(self) -> str:
        p = self.panel
        return f"{self.dashboard.path.name} panel {p.get('id')} '{p.get('title', '')}' target {self.target.get('refId', '?')}"


@dataclass
class Dashboard:
    path: Path
    json: dict
    panels: list[dict] = field(default_factory=list)  # every panel, rows included

    @property
    def uid(self) -> str:
        return self.json.get("uid", "")

    def variable(self, name: str) -> dict | None:
        for v in self.json.get("templating", {}).get("list", []):
            if v.get("name") == name:
                return v
        return None

    def targets(self) -> list[Target]:
        out = []
        for p in self.panels:
            if p.get("type") == "row":
                continue
            for t in p.get("targets", []):
                out.append(Target(self, p, t, target_kind(p, t)))
        return out


def ds_of(panel: dict, target: dict | None = None) -> dict:
    ds = (target or {}).get("datasource") or panel.get("datasource") or {}
    return ds if isinstance(ds, dict) else {"uid": str(ds)}


def target_kind(panel: dict, target: dict) -> str:
    ds = ds_of(panel, target)
    if ds.get("type") == SQL_TYPE or "rawSql" in target:
        return "sql"
    return "promql"


def load_dashboards(results: Results) -> list[Dashboard]:
    dashboards = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            results.fail(f"{path.name}: not valid JSON: {e}")
            continue
        d = Dashboard(path, data)
        for p in data.get("panels", []):
            d.panels.append(p)
            d.panels.extend(p.get("panels", []))  # panels inside collapsed rows
        dashboards.append(d)
    return dashboards


# ------------------------------------------------------------------ PromQL scan
PROMQL_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<lbrace>\{) | (?P<rbrace>\})
  | (?P<lparen>\() | (?P<rparen>\))
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^,<>=@])
""", re.VERBOSE)

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset", "inf", "nan", "atan2", "start", "end"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


@dataclass
class Selector:
    name: str | None
    matchers: str  # text between the braces, "" when none
    range: str | None  # "[...]" when a range selector
    call: str | None  # innermost enclosing function, if its argument


def scan_promql(expr: str) -> list[Selector]:
    """Finds the vector selectors of an expression: enough of PromQL to lint
    dashboards and collect metric names; Prometheus itself judges validity."""
    tokens = []
    pos = 0
    while pos < len(expr):
        m = PROMQL_TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup not in ("ws", "comment"):
            tokens.append((m.lastgroup, m.group()))
    selectors: list[Selector] = []
    stack: list[str | None] = []  # per open paren: the function it calls, or None
    aggregation: str | None = None
    i = 0

    def skip_group(j: int) -> int:  # tokens[j] is "(": index after its ")"
        depth = 0
        while j < len(tokens):
            if tokens[j][0] == "lparen":
                depth += 1
            elif tokens[j][0] == "rparen":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return j

    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else (None, None)
        if kind == "ident" and text in PROMQL_KEYWORDS:
            if text in LABEL_LIST_KEYWORDS and nxt[0] == "lparen":
                i = skip_group(i + 1)
                continue
            i += 1
            continue
        if kind == "ident" and nxt[0] == "lparen":
            stack.append(text)
            i += 2
            continue
        if kind == "ident" and nxt in (("ident", "by"), ("ident", "without")):
            aggregation = text  # `sum by (le) (...)`: the call follows the label list
            i += 1
            continue
        if kind == "lparen":
            stack.append(aggregation)
            aggregation = None
            i += 1
            continue
        if kind == "rparen":
            if stack:
                stack.pop()
            i += 1
            continue
        if kind in ("ident", "lbrace"):
            name = text if kind == "ident" else None
            j = i + 1 if kind == "ident" else i
            matchers = ""
            if j < len(tokens) and tokens[j][0] == "lbrace":
                k = j + 1
                parts = []
                while k < len(tokens) and tokens[k][0] != "rbrace":
                    parts.append(tokens[k][1])
                    k += 1
                matchers = " ".join(parts)
                j = k + 1
            rng = None
            if j < len(tokens) and tokens[j][0] == "range":
                rng = tokens[j][1]
                j += 1
            call = stack[-1] if stack else None
            selectors.append(Selector(name, matchers, rng, call))
            i = j
            continue
        i += 1
    return selectors


def normalize_matchers(text: str) -> str:
    return re.sub(r"\s+", "", text)


# ------------------------------------------------------------------ minimal YAML
def yaml_block_values(text: str, key: str) -> list[str]:
    """Values of `key:` in block-style YAML, plain or `|`/`>` block scalars."""
    lines = text.splitlines()
    out = []
    pattern = re.compile(rf"^(\s*)(?:-\s+)?{re.escape(key)}:\s*(.*)$")
    i = 0
    while i < len(lines):
        m = pattern.match(lines[i])
        if not m:
            i += 1
            continue
        indent, value = len(m.group(1)), m.group(2).strip()
        i += 1
        if value[:1] in ("|", ">"):
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            out.append("\n".join(block).strip())
        else:
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out.append(value)
    return out


# ------------------------------------------------------------------------ lint
def lint(dashboards: list[Dashboard], results: Results) -> None:
    provisioned = provisioned_datasources(results)
    check_provider(results)
    results.check(len(dashboards) >= MIN_DASHBOARDS,
                  f"lint: {len(dashboards)} dashboards in {DASHBOARD_DIR} (expected at least {MIN_DASHBOARDS})")
    total = sum(1 for d in dashboards for p in d.panels if p.get("type") != "row")
    results.check(total >= MIN_PANELS, f"lint: {total} panels in all dashboards (expected at least {MIN_PANELS})")
    uids: dict[str, str] = {}
    for d in dashboards:
        name = d.path.name
        uid = d.uid
        results.check(bool(re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", uid)),
                      f"{name}: uid '{uid}' must be a stable lowercase id of at most 40 characters")
        results.check(uid not in uids, f"{name}: uid '{uid}' is also used by {uids.get(uid)}")
        uids[uid] = name
        results.check(bool(d.json.get("title")), f"{name}: no title")
        results.check(d.json.get("id") is None, f"{name}: 'id' must be null so provisioning assigns it")
        results.check(d.json.get("schemaVersion", 0) >= 39,
                      f"{name}: schemaVersion {d.json.get('schemaVersion')} (expected 39 or later)")
        if uid in LIVE_DASHBOARDS:
            results.check(d.json.get("refresh") == "5s",
                          f"{name}: live dashboard refresh is '{d.json.get('refresh')}' (expected '5s')")
        lint_templating(d, provisioned, results)
        lint_panels(d, provisioned, results)
    # The check resolves the variables once, from the first dashboard.
    for d in dashboards[1:]:
        for var in ("job", "instance", "project"):
            mine, first = d.variable(var), dashboards[0].variable(var)
            if mine and first:
                results.check(variable_query(mine) == variable_query(first),
                              f"{d.path.name}: variable '{var}' query differs from {dashboards[0].path.name}'s")


def provisioned_datasources(results: Results) -> dict[str, str]:
    """uid -> type of the provisioned data sources."""
    try:
        text = DATASOURCES_FILE.read_text()
    except OSError as e:
        results.fail(f"lint: cannot read {DATASOURCES_FILE}: {e}")
        return {}
    uids = yaml_block_values(text, "uid")
    types = yaml_block_values(text, "type")
    out = dict(zip(uids, types))
    results.check(out.get("prometheus") == PROM_TYPE,
                  f"{DATASOURCES_FILE.name}: no prometheus data source with uid 'prometheus'")
    results.check(out.get("analytics-db") == SQL_TYPE,
                  f"{DATASOURCES_FILE.name}: no {SQL_TYPE} data source with uid 'analytics-db'")
    results.check(re.search(r"^\s*timescaledb:\s*true\s*$", text, re.M) is not None,
                  f"{DATASOURCES_FILE.name}: analytics-db needs jsonData.timescaledb: true")
    secrets = yaml_block_values(text, "password")
    results.check(bool(secrets) and all(s.startswith("$") for s in secrets),
                  f"{DATASOURCES_FILE.name}: passwords must come from the environment ($VAR), not the file")
    return out


def check_provider(results: Results) -> None:
    try:
        text = PROVIDERS_FILE.read_text()
    except OSError as e:
        results.fail(f"lint: cannot read {PROVIDERS_FILE}: {e}")
        return
    results.check("file" in yaml_block_values(text, "type") and bool(yaml_block_values(text, "path")),
                  f"{PROVIDERS_FILE.name}: needs a provider of type 'file' with options.path")


def lint_templating(d: Dashboard, provisioned: dict[str, str], results: Results) -> None:
    name = d.path.name
    has_sql = any(t.kind == "sql" for t in d.targets())
    for var, ds_type in DS_VARIABLES.items():
        if var == "sqlsource" and not has_sql:
            continue
        v = d.variable(var)
        if not results.check(v is not None, f"{name}: no '{var}' data source variable"):
            continue
        results.check(v.get("type") == "datasource" and v.get("query") == ds_type,
                      f"{name}: variable '{var}' must be of type datasource with query '{ds_type}'")
        current = (v.get("current") or {}).get("value")
        results.check(provisioned.get(current) == ds_type,
                      f"{name}: variable '{var}' defaults to '{current}', not a provisioned {ds_type} uid")
    for var in ("job", "instance", "project"):
        v = d.variable(var)
        if not results.check(v is not None, f"{name}: no '{var}' template variable"):
            continue
        results.check(v.get("type") == "query" and ds_of(v).get("uid") in ("${datasource}", "$datasource"),
                      f"{name}: variable '{var}' must be a query on ${{datasource}}")
        results.check(v.get("refresh") == 2, f"{name}: variable '{var}' must refresh on time range change (2)")
        results.check(bool(v.get("multi")) and bool(v.get("includeAll")),
                      f"{name}: variable '{var}' must be multi-value with an All option")
        query = variable_query(v)
        results.check(re.fullmatch(r"label_values\((.+,\s*)?\w+\)", query or "") is not None,
                      f"{name}: variable '{var}' query '{query}' is not label_values(...)")
        if var in ("job", "instance"):
            results.check(v.get("allValue") == ".+", f"{name}: variable '{var}' allValue must be '.+'")
        else:
            # SQL panels need the expanded list of values for `IN ($project)`.
            results.check(not v.get("allValue") or not has_sql,
                          f"{name}: variable 'project' must not have a custom allValue (SQL panels use IN ($project))")


def variable_query(v: dict) -> str:
    q = v.get("query")
    if isinstance(q, dict):
        q = q.get("query")
    return q or v.get("definition") or ""


def lint_panels(d: Dashboard, provisioned: dict[str, str], results: Results) -> None:
    name = d.path.name
    seen_ids: dict[int, str] = {}
    boxes = []
    for p in d.panels:
        pid = p.get("id")
        label = f"{name} panel {pid} '{p.get('title', '')}'"
        results.check(isinstance(pid, int) and pid not in seen_ids,
                      f"{label}: id must be a unique integer (also used by '{seen_ids.get(pid)}')")
        if isinstance(pid, int):
            seen_ids.setdefault(pid, p.get("title", ""))
        g = p.get("gridPos") or {}
        ok = all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")) and g["w"] > 0 and g["h"] > 0 \
            and g["x"] >= 0 and g["x"] + g["w"] <= 24
        if results.check(ok, f"{label}: gridPos {g} must have integer x, y, w, h inside 24 columns"):
            for other_label, og in boxes:
                overlap = g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"] \
                    and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]
                results.check(not overlap, f"{label}: gridPos overlaps {other_label}")
            boxes.append((label, g))
        if p.get("type") == "row":
            continue
        results.check(bool(str(p.get("title", "")).strip()), f"{label}: no title")
        results.check(bool(str(p.get("description", "")).strip()), f"{label}: no description")
        unit = (p.get("fieldConfig") or {}).get("defaults", {}).get("unit")
        results.check(unit in VALID_UNITS, f"{label}: unit '{unit}' is missing or unknown to Grafana")
        for o in (p.get("fieldConfig") or {}).get("overrides", []):
            for prop in o.get("properties", []):
                if prop.get("id") == "unit":
                    results.check(prop.get("value") in VALID_UNITS,
                                  f"{label}: override unit '{prop.get('value')}' is unknown to Grafana")
        targets = p.get("targets") or []
        results.check(bool(targets), f"{label}: no targets")
        lint_datasource(label, ds_of(p), provisioned, results)
        for t in targets:
            tlabel = f"{label} target {t.get('refId', '?')}"
            lint_datasource(tlabel, ds_of(p, t), provisioned, results)
            if target_kind(p, t) == "sql":
                lint_sql_target(tlabel, t, results)
            else:
                lint_promql_target(tlabel, t, results)


def lint_datasource(label: str, ds: dict, provisioned: dict[str, str], results: Results) -> None:
    uid, typ = ds.get("uid"), ds.get("type")
    variable = re.fullmatch(r"\$\{?(\w+)\}?", uid or "")
    if variable:
        expected = DS_VARIABLES.get(variable.group(1))
        results.check(expected is not None and typ == expected,
                      f"{label}: data source '{uid}' of type '{typ}' is not a data source variable of that type")
    else:
        results.check(provisioned.get(uid) == typ and typ is not None,
                      f"{label}: data source uid '{uid}' of type '{typ}' is not provisioned")


def lint_promql_target(label: str, t: dict, results: Results) -> None:
    expr = t.get("expr") or ""
    if not results.check(bool(expr.strip()), f"{label}: empty PromQL expression"):
        return
    try:
        selectors = scan_promql(expr)
    except ValueError as e:
        results.fail(f"{label}: {e}")
        return
    for s in selectors:
        what = s.name or "{" + s.matchers + "}"
        if s.call in ("rate", "irate", "increase") and s.range is not None:
            results.check(s.range == "[$__rate_interval]",
                          f"{label}: {s.call}({what}{s.range}) must use [$__rate_interval]")
        if s.name and s.name.endswith("_total"):
            results.check(s.range is not None and s.call in ("rate", "irate", "increase"),
                          f"{label}: counter {s.name} must be inside rate, irate or increase")
        m = normalize_matchers(s.matchers)
        results.check('job=~"$job"' in m and 'instance=~"$instance"' in m,
                      f"{label}: selector {what} needs job=~\"$job\" and instance=~\"$instance\"")


def lint_sql_target(label: str, t: dict, results: Results) -> None:
    raw = t.get("rawSql") or ""
    if not results.check(bool(raw.strip()) and t.get("rawQuery") is True,
                         f"{label}: SQL targets need rawQuery: true and rawSql"):
        return
    results.check(t.get("format") in ("table", "time_series"),
                  f"{label}: format '{t.get('format')}' (expected table or time_series)")
    results.check("IN ($project)" in raw, f"{label}: SQL must filter with `project IN ($project)`")
    results.check("_1m" not in raw, f"{label}: *_1m rollups exist only on plain PostgreSQL")


# ----------------------------------------------------------- template variables
def parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|[smhdwy])", text.strip().strip("'"))
    if not parts or "".join(a + b for a, b in parts) != text.strip().strip("'"):
        raise ValueError(f"invalid interval '{text}'")
    return sum(float(n) * units[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


# Grafana's rounded intervals (roundInterval in grafana-data's rangeutil).
NICE_INTERVALS = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800,
                  21600, 43200, 86400, 604800]


def grafana_interval(range_seconds: float, min_interval: str | None) -> float:
    raw = range_seconds / 1000  # about one point per pixel of a wide panel
    interval = next((n for n in NICE_INTERVALS if n >= raw), NICE_INTERVALS[-1])
    if min_interval:
        interval = max(interval, parse_duration(min_interval))
    return interval


def relative_seconds(text: str) -> float:
    """'now-24h' or '7d' -> seconds back from now."""
    text = text.strip()
    if text.startswith("now-"):
        text = text[4:]
    return parse_duration(text)


def prom_regex_escape(value: str) -> str:
    return re.sub(r"([\\^$*+?.()|{}\[\]/])", r"\\\1", value).replace("\\", "\\\\")


@dataclass
class Variable:
    name: str
    values: list[str]
    all_value: str | None
    selected_all: bool
    multi: bool


def format_prom(var: Variable) -> str:
    # Mirrors the Prometheus data source's interpolateQueryExpr.
    if var.selected_all and var.all_value is not None:
        return var.all_value
    escaped = [prom_regex_escape(v) for v in var.values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def format_sql(var: Variable) -> str:
    # Mirrors the SQL data sources: multi-value variables become quoted lists.
    if var.selected_all and var.all_value is not None:
        values = [var.all_value]
    else:
        values = var.values
    if not var.multi:
        return values[0]
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


VAR_REF = re.compile(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]")


def substitute(text: str, variables: dict[str, Variable], builtins: dict[str, str], sql: bool) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3)
        if name in builtins:
            return builtins[name]
        var = variables.get(name)
        if var is None:
            return m.group(0)  # a macro such as $__timeFilter, or unknown
        if fmt == "csv":
            return ",".join(var.values)
        if fmt == "pipe":
            return "|".join(var.values)
        if fmt == "regex":
            return format_prom(var)
        if fmt == "sqlstring":
            return ",".join("'" + v.replace("'", "''") + "'" for v in var.values)
        return format_sql(var) if sql else format_prom(var)

    return VAR_REF.sub(repl, text)


# --------------------------------------------------------------- Grafana macros
MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def go_float(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def expand_macros(sql: str, t_from: dt.datetime, t_to: dt.datetime, timescaledb: bool) -> str:
    """Expands macros the way Grafana's PostgreSQL data source does
    (pkg/tsdb/grafana-postgresql-datasource/macros.go)."""

    def evaluate(name: str, args: list[str]) -> str:
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339(t_from)}' AND '{rfc3339(t_to)}'"
        if name == "__timeFrom":
            return f"'{rfc3339(t_from)}'"
        if name == "__timeTo":
            return f"'{rfc3339(t_to)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            if len(args) < 2:
                raise ValueError(f"macro {name} needs a time column and an interval")
            seconds = parse_duration(args[1])
            if timescaledb:
                expr = f"time_bucket('{seconds:.3f}s',{args[0]})"
            else:
                expr = f"floor(extract(epoch from {args[0]})/{go_float(seconds)})*{go_float(seconds)}"
            return expr + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(t_from.timestamp())} AND {args[0]} <= {int(t_to.timestamp())}"
        if name == "__unixEpochFrom":
            return str(int(t_from.timestamp()))
        if name == "__unixEpochTo":
            return str(int(t_to.timestamp()))
        if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
            seconds = go_float(parse_duration(args[1]))
            expr = f"floor(({args[0]})/{seconds})*{seconds}"
            return expr + (' AS "time"' if name == "__unixEpochGroupAlias" else "")
        raise ValueError(f"unknown macro '${name}'")

    def repl(m: re.Match) -> str:
        name = m.group(1)
        # Grafana reads `$__timeGroup(...),` as the pre-5.3 form that aliases.
        if name == "__timeGroup" and sql[m.end():m.end() + 1] == ",":
            name = "__timeGroupAlias"
        args = [a.strip() for a in m.group(2).split(",")]
        return evaluate(name, args)

    return MACRO.sub(repl, sql)


# ------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Host:
    """The real context-host with the plugin, over the sample projects."""

    def __init__(self, host_bin: Path, plugin_so: Path, workdir: Path) -> None:
        self.dir = workdir / "host"
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "plugins").mkdir(parents=True)
        shutil.copy2(plugin_so, self.dir / "plugins" / plugin_so.name)
        generated = make_generated_project(workdir / "projects" / GENERATED_PROJECT)
        self.generated = generated
        projects = dict(PROJECTS, **{GENERATED_PROJECT: generated})
        config = [
            "[server]",
            'listen = "127.0.0.1:0"',
            'data_dir = "data"',
            "snapshot_interval_secs = 1",
            "",
            "[plugins]",
            'dir = "plugins"',
            "",
            "[plugins.analytics]",
            "enabled = true",
            "",
            # Alerting evaluates every second, so the evaluation panels have
            # samples within the check's scrapes; the per-channel series
            # (notifications, dead letters, queue depth) exist only for
            # configured channels, and the `log` kind needs no receiver.
            "[plugins.analytics.config.alerting]",
            'evaluation_interval = "1s"',
            "",
            "[[plugins.analytics.config.alerting.channels]]",
            'name = "journal"',
            'kind = "log"',
        ]
        for name, path in projects.items():
            config += ["", "[[projects]]", f"name = {json.dumps(name)}", f"path = {json.dumps(str(path))}"]
        (self.dir / "host.toml").write_text("\n".join(config) + "\n")
        self.projects = list(projects)
        self.log_path = self.dir / "host.log"
        self.proc = subprocess.Popen(
            [str(host_bin), "serve", "--config", str(self.dir / "host.toml")],
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("RUST_LOG", "info")),
        )
        self.port: int | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        with open(self.log_path, "wb") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                text = re.sub(r"\x1b\[[0-9;]*m", "", line.decode(errors="replace"))
                m = re.search(r"context-host listening on http://127\.0\.0\.1:(\d+)", text)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float) -> None:
        self._ready.wait(timeout)
        if self.port is None:
            raise RuntimeError(f"context-host did not report its address (log: {self.log_path})")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def make_generated_project(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    (path / "src").mkdir(parents=True)
    (path / "src" / "main.py").write_text("def search(query):\n    return [query]\n\nprint(search('fn'))\n")
    (path / "README.md").write_text("# fixtures\n\nFiles that exercise the indexer's skip and failure paths.\n")
    (path / "config.json").write_text('{"impl": "plugin", "struct": "config"}\n')
    (path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))  # binary: skipped
    (path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))  # not UTF-8: failed
    (path / "big.log").write_text("fn search\n" * 120_000)  # over 1 MiB: skipped
    return path


class Workload(threading.Thread):
    """Searches, file opens and reindexes against the host until stopped."""

    WORDS = ["fn", "pub", "struct", "impl", "plugin", "search", "event", "Result", "config", "use"]
    REGEXES = [r"fn\s+\w+", r"impl\s+\w+", r"pub\s+(struct|enum)", r"\bSelf\b"]
    NOTHING = ["zzq_no_such_symbol", "qqq_absent_word"]

    def __init__(self, host: Host) -> None:
        super().__init__(daemon=True)
        self.host = host
        self.stop_event = threading.Event()
        self.requests = 0
        self.failures: list[str] = []
        self.rng = random.Random(7)

    def _get(self, path: str, user: str) -> tuple[int, dict]:
        status, body = http(self.host.url + path, headers={"X-Context-User": user})
        self.requests += 1
        try:
            return status, json.loads(body or b"{}")
        except json.JSONDecodeError:
            return status, {}

    def _post(self, path: str, user: str, payload: dict | None) -> int:
        data = json.dumps(payload).encode() if payload is not None else b""
        status, _ = http(self.host.url + path, "POST", data,
                         {"X-Context-User": user, "Content-Type": "application/json"})
        self.requests += 1
        return status

    def step(self, n: int) -> None:
        project = self.host.projects[n % len(self.host.projects)]
        user = f"user{self.rng.randrange(1, 9)}"
        if n % 25 == 7:
            q, kind = "(", "regex"  # invalid regex: a search error
        elif n % 10 == 3:
            q, kind = self.rng.choice(self.REGEXES), "regex"
        elif n % 10 == 5:
            q, kind = self.rng.choice(self.NOTHING), "literal"
        else:
            q, kind = self.rng.choice(self.WORDS), "literal"
        query = urllib.parse.urlencode({"project": project, "q": q, "kind": kind})
        status, body = self._get(f"/api/v1/search?{query}", user)
        expected = 400 if q == "(" else 200
        if status != expected and len(self.failures) < 5:
            self.failures.append(f"search {query} answered {status}")
        results = body.get("results") or []
        # Opens and reindexes rotate over the projects independently of the
        # search rotation, so every project gets both.
        if status == 200 and results and n % 4 == 0:
            rank = self.rng.randrange(len(results)) + 1
            self._post("/api/v1/files/open", user, {
                "project": project, "path": results[rank - 1]["path"], "rank": rank,
                "search_id": body.get("search_id", ""),
            })
        if n % 60 == 11:
            reindexed = self.host.projects[(n // 60) % len(self.host.projects)]
            if reindexed == GENERATED_PROJECT:
                # Reindexing is incremental: change files so that it reports
                # them again (one indexed, one that fails), keeping the index
                # rate and failure ratio alive.
                touched = self.host.generated
                (touched / "src" / "main.py").write_text(f"def search(query):\n    return [query, {n}]\n")
                (touched / "latin1.txt").write_bytes(f"caf\xe9 {n}\n".encode("latin-1"))
            self._post(f"/api/v1/projects/{reindexed}/reindex", user, None)

    def run(self) -> None:
        n = 0
        while not self.stop_event.is_set():
            try:
                self.step(n)
            except (OSError, KeyError, ValueError) as e:
                if len(self.failures) < 5:
                    self.failures.append(f"request failed: {e}")
                self.stop_event.wait(0.5)
            n += 1
            self.stop_event.wait(0.03)


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.dir = workdir / "prometheus"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        rules = self.dir / RULES_FILE.name
        shutil.copy2(RULES_FILE, rules)
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "rule_files:\n"
            f"  - {json.dumps(str(rules))}\n"
            "scrape_configs:\n"
            "  - job_name: context\n"
            "    static_configs:\n"
            f"      - targets: [{json.dumps(target)}]\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode} (log: {self.dir / 'prometheus.log'})")
            try:
                if http(self.url + "/-/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout:.0f} s")

    def api(self, path: str, params: dict | None = None, post: bool = False) -> dict:
        query = urllib.parse.urlencode(params or {})
        if post:
            status, body = http(self.url + path, "POST", query.encode(),
                                {"Content-Type": "application/x-www-form-urlencoded"})
        else:
            status, body = http(self.url + path + ("?" + query if query else ""))
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return {"status": "error", "error": f"HTTP {status}: {body[:200]!r}"}

    def query(self, expr: str) -> dict:
        return self.api("/api/v1/query", {"query": expr}, post=True)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


# ------------------------------------------------------------------- PromQL
def resolve_variables(prom: Prometheus, dashboards: list[Dashboard], results: Results) -> dict[str, Variable]:
    """Evaluates the job, instance and project variables as Grafana does
    when a dashboard opens: each label_values query through Prometheus's
    label API, with the variables before it substituted, and the dashboard's
    default selection (lint checks that every dashboard defines them alike)."""
    variables: dict[str, Variable] = {}
    reference = dashboards[0]
    for name in ("job", "instance", "project"):
        v = reference.variable(name)
        if v is None:
            continue
        query = substitute(variable_query(v), variables, {}, sql=False)
        m = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", query.strip())
        if not m:
            results.fail(f"variable {name}: cannot evaluate '{query}'")
            continue
        match, label = m.group(1), m.group(2)
        params = {"match[]": match} if match else {}
        answer = prom.api(f"/api/v1/label/{label}/values", params)
        values = sorted(answer.get("data") or [])
        if not results.check(answer.get("status") == "success" and bool(values),
                             f"variable {name}: '{query}' gave no values ({answer.get('error', 'empty')})"):
            values = [".+"]
        current = (v.get("current") or {}).get("value")
        current = current if isinstance(current, list) else [current]
        selected_all = "$__all" in current
        chosen = values if selected_all else [c for c in current if c in values] or values[:1]
        variables[name] = Variable(name, chosen, v.get("allValue"), selected_all, bool(v.get("multi")))
    return variables


def wait_for_data(prom: Prometheus, started: float, record_names: list[str], deadline: float) -> None:
    """Waits for MIN_SCRAPE_SECONDS of scrapes and for every recording rule
    to have produced a series, within MAX_SCRAPE_WAIT_SECONDS."""
    give_up = min(started + MAX_SCRAPE_WAIT_SECONDS, deadline)
    while time.monotonic() < give_up:
        if time.monotonic() - started >= MIN_SCRAPE_SECONDS:
            missing = [r for r in record_names if not prom.query(r).get("data", {}).get("result")]
            if not missing:
                return
        time.sleep(1)


def check_promql(prom: Prometheus, dashboards: list[Dashboard], variables: dict[str, Variable],
                 pending_absent: set[str], results: Results) -> None:
    builtins = {"__rate_interval": RATE_INTERVAL, "__interval": PROMQL_INTERVAL, "__range": "1h",
                "__range_s": "3600", "__interval_ms": str(int(parse_duration(PROMQL_INTERVAL) * 1000)),
                "datasource": "prometheus", "sqlsource": "analytics-db"}
    for d in dashboards:
        for t in d.targets():
            if t.kind != "promql":
                continue
            expr = substitute(t.target.get("expr", ""), variables, builtins, sql=False)
            answer = prom.query(expr)
            if not results.check(answer.get("status") == "success",
                                 f"{t.where}: query failed: {answer.get('error')}: {expr}"):
                continue
            data = answer.get("data", {})
            series = data.get("result") if data.get("resultType") in ("vector", "matrix") else [data.get("result")]
            names = {s.name for s in scan_promql(t.target.get("expr", "")) if s.name}
            if not series and names & pending_absent:
                results.note(f"{t.where}: no series yet, uses {', '.join(sorted(names & pending_absent))} "
                             f"({PENDING_MARK}); checked that it parses")
                results.ok()
                continue
            results.check(bool(series), f"{t.where}: no series for: {expr}")


def check_rules(prom: Prometheus, results: Results) -> None:
    groups = prom.api("/api/v1/rules").get("data", {}).get("groups", [])
    loaded = {g["name"]: g for g in groups}
    expected = yaml_block_values(RULES_FILE.read_text(), "name")
    for name in expected:
        g = loaded.get(name)
        if not results.check(g is not None, f"rules: group '{name}' is not loaded by Prometheus"):
            continue
        for r in g.get("rules", []):
            results.check(r.get("health") == "ok" and not r.get("lastError"),
                          f"rules: {name}/{r.get('name')} health '{r.get('health')}' {r.get('lastError', '')}".rstrip())


# ------------------------------------------------------------------------- SQL
FIXTURES_SQL = r"""
-- Two days of events for three projects, shaped so that every panel finds rows:
-- zero-result and failed searches, several file types and outcomes, files
-- that are never returned or opened (dead code) and one file opened far more
-- often than the others (a hot spot).
INSERT INTO search_events (time, instance_id, boot_id, seq, project, user_id, query, kind, cache, status,
                           error_code, latency_ms, latency_bucket, result_count, top_results, search_id)
SELECT ts.t, 'fixture:8080', 1, ts.g * 10 + p.n, p.project, 'user' || ((ts.g * 7 + p.n) % 9),
       q.query, q.kind, CASE WHEN q.status = 'ok' AND ts.g % 3 = 0 THEN 'l1' ELSE 'miss' END,
       q.status, q.error_code, l.ms, floor(ln(l.ms * 1e6) / ln(1.01))::smallint, rc.n,
       ARRAY(SELECT 'src/mod_' || lpad(((ts.g + k) % 30)::text, 2, '0') || '.rs'
             FROM generate_series(0, least(rc.n, 5) - 1) AS k),
       'fixture-' || (ts.g * 10 + p.n)
FROM generate_series(now() - interval '2 days', now(), interval '5 minutes') WITH ORDINALITY AS ts(t, g)
CROSS JOIN (VALUES (1, 'plugin-api'), (2, 'host-shim'), (3, 'fixtures')) AS p(n, project)
CROSS JOIN LATERAL (
  SELECT (ARRAY['fn', 'impl', 'struct', 'plugin', 'search', 'zzq_no_such_symbol', 'config', '('])[(ts.g % 8 + 1)::int] AS query,
         CASE WHEN ts.g % 8 IN (1, 7) THEN 'regex' WHEN ts.g % 8 = 4 THEN 'semantic' ELSE 'literal' END AS kind,
         CASE WHEN ts.g % 8 = 7 THEN 'error' WHEN ts.g % 97 = 0 THEN 'timeout' ELSE 'ok' END AS status,
         CASE WHEN ts.g % 8 = 7 THEN 'invalid_regex' WHEN ts.g % 97 = 0 THEN 'timeout' END AS error_code
) AS q
CROSS JOIN LATERAL (SELECT 0.05 + (ts.g % 40) * 0.7 + CASE WHEN ts.g % 53 = 0 THEN 800 ELSE 0 END AS ms) AS l
CROSS JOIN LATERAL (SELECT CASE WHEN q.status <> 'ok' OR ts.g % 8 = 5 THEN 0 ELSE (1 + ts.g % 9)::int END AS n) AS rc;

INSERT INTO index_events (time, instance_id, boot_id, seq, project, path, file_type, bytes, duration_ms,
                          outcome, error_code, queue_depth)
SELECT ts.t, 'fixture:8080', 1, ts.g * 10 + p.n, p.project,
       'src/mod_' || lpad((ts.g % 60)::text, 2, '0') || '.' || ty.ft, ty.ft,
       1000 + (ts.g % 50) * 300, 0.2 + (ts.g % 25) * 0.4,
       CASE ty.ft WHEN 'png' THEN 'skipped' WHEN 'txt' THEN 'failed' ELSE 'indexed' END,
       CASE ty.ft WHEN 'png' THEN 'binary' WHEN 'txt' THEN 'invalid_utf8' END,
       ts.g % 13
FROM generate_series(now() - interval '2 days', now(), interval '2 minutes') WITH ORDINALITY AS ts(t, g)
CROSS JOIN (VALUES (1, 'plugin-api'), (2, 'host-shim'), (3, 'fixtures')) AS p(n, project)
CROSS JOIN LATERAL (
  SELECT CASE WHEN ts.g % 60 < 40 THEN 'rs' WHEN ts.g % 60 < 48 THEN 'toml' WHEN ts.g % 60 < 54 THEN 'md'
              WHEN ts.g % 60 < 57 THEN 'png' ELSE 'txt' END AS ft
) AS ty;

INSERT INTO open_events (time, instance_id, boot_id, seq, project, user_id, path, rank, search_id)
SELECT ts.t, 'fixture:8080', 1, ts.g * 10 + p.n, p.project, 'user' || ((ts.g * 3 + p.n) % 9),
       CASE WHEN ts.g % 4 = 0 THEN 'src/mod_00.rs' ELSE 'src/mod_' || lpad((ts.g % 20)::text, 2, '0') || '.rs' END,
       (1 + ts.g % 5)::int, 'fixture-' || (ts.g * 10 + p.n)
FROM generate_series(now() - interval '2 days', now(), interval '10 minutes') WITH ORDINALITY AS ts(t, g)
CROSS JOIN (VALUES (1, 'plugin-api'), (2, 'host-shim'), (3, 'fixtures')) AS p(n, project);

INSERT INTO project_snapshots (time, instance_id, boot_id, seq, project, total_files, indexed_files,
                               vector_store_bytes, embedding_cache_bytes, duplication_ratio)
SELECT ts.t, 'fixture:8080', 1, ts.g * 10 + p.n, p.project, 60, 50 + ts.g % 6,
       100000 + ts.g * 10, 5000 + ts.g, 0.02 + (ts.g % 10) / 100.0
FROM generate_series(now() - interval '2 days', now(), interval '5 minutes') WITH ORDINALITY AS ts(t, g)
CROSS JOIN (VALUES (1, 'plugin-api'), (2, 'host-shim'), (3, 'fixtures')) AS p(n, project);
"""

EVENT_TABLES = ["search_events", "index_events", "open_events", "project_snapshots", "ingest_progress"]
ROLLUP_FAMILIES = ["search_rollup", "search_latency", "index_rollup", "open_rollup", "snapshot_rollup"]


def postgres_rollups_sql() -> str:
    """Fills the plain-PostgreSQL rollup tables from the raw fixture events,
    the way the plugin's maintenance task does."""
    out = []
    for suffix, width in (("1m", "1 minute"), ("1h", "1 hour"), ("1d", "1 day")):
        b = f"date_bin('{width}', time, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
        out += [
            f"INSERT INTO search_rollup_{suffix} SELECT {b}, instance_id, project, kind, status, cache, count(*),"
            " sum(CASE WHEN status = 'ok' AND result_count = 0 THEN 1 ELSE 0 END), sum(result_count),"
            " sum(latency_ms), min(latency_ms), max(latency_ms) FROM search_events GROUP BY 1, 2, 3, 4, 5, 6;",
            f"INSERT INTO search_latency_{suffix} SELECT {b}, instance_id, project, latency_bucket, count(*)"
            " FROM search_events GROUP BY 1, 2, 3, 4;",
            f"INSERT INTO index_rollup_{suffix} SELECT {b}, instance_id, project, file_type, outcome, count(*),"
            " sum(bytes), sum(duration_ms), max(duration_ms) FROM index_events GROUP BY 1, 2, 3, 4, 5;",
            f"INSERT INTO open_rollup_{suffix} SELECT {b}, instance_id, project, count(*), sum(rank)"
            " FROM open_events GROUP BY 1, 2, 3;",
            f"INSERT INTO snapshot_rollup_{suffix} SELECT {b}, instance_id, project, max(total_files),"
            " max(indexed_files), max(vector_store_bytes), max(embedding_cache_bytes)"
            " FROM project_snapshots GROUP BY 1, 2, 3;",
        ]
    return "\n".join(out) + "\n"


@dataclass
class Database:
    label: str
    url: str
    timescaledb: bool


def psql(db: Database, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    # -w: fail at once rather than prompt when the server asks for a password.
    return subprocess.run(["psql", db.url, "-X", "-w", "-v", "ON_ERROR_STOP=1", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def setup_database(db: Database, workdir: Path) -> str | None:
    """Recreates the schema from the repository's migrations and loads the
    fixtures; returns an error text or None. One psql process at a time: the
    TimescaleDB test server takes a single connection."""
    sql_dir = workdir / "sql"
    sql_dir.mkdir(parents=True, exist_ok=True)
    drop = []
    if db.timescaledb:
        for width in ("1d", "1h"):
            drop += [f"DROP MATERIALIZED VIEW IF EXISTS {f}_{width} CASCADE;" for f in ROLLUP_FAMILIES]
        files = [SQL_EVENTS, SQL_TIMESCALE]
        fill = [f"CALL refresh_continuous_aggregate('{f}_{w}', NULL, NULL);"
                for w in ("1h", "1d") for f in ROLLUP_FAMILIES]
    else:
        tables = [f"{f}_{w}" for f in ROLLUP_FAMILIES for w in ("1m", "1h", "1d")] + ["rollup_dirty"]
        drop += [f"DROP TABLE IF EXISTS {t} CASCADE;" for t in tables]
        files = [SQL_EVENTS, SQL_ROLLUPS]
        fill = [postgres_rollups_sql()]
    drop += [f"DROP TABLE IF EXISTS {t} CASCADE;" for t in EVENT_TABLES]
    name = "timescale" if db.timescaledb else "postgres"
    drop_file = sql_dir / f"{name}-drop.sql"
    drop_file.write_text("\n".join(drop) + "\n")
    fixture_file = sql_dir / f"{name}-fixtures.sql"
    fixture_file.write_text(FIXTURES_SQL + "\n".join(fill) + "\n")
    args = ["-q"]
    for f in [drop_file, *files, fixture_file]:
        args += ["-f", str(f)]
    try:
        r = psql(db, args, timeout=90)
    except subprocess.TimeoutExpired:
        return "setup timed out after 90 s"
    if r.returncode != 0:
        errors = [l for l in r.stderr.splitlines() if "ERROR" in l or "FATAL" in l or "psql:" in l]
        return "; ".join(errors[-3:]) or r.stderr.strip()[-300:]
    return None


def run_sql_query(db: Database, query: str) -> tuple[str | None, list[str], int]:
    """Runs one query; returns (error, column names, row count)."""
    try:
        r = psql(db, ["-A", "-F", "\t", "-P", "footer=on", "-c", query], timeout=30)
    except subprocess.TimeoutExpired:
        return "timed out after 30 s", [], 0
    if r.returncode != 0:
        errors = [l for l in r.stderr.splitlines() if "ERROR" in l or "FATAL" in l]
        return (" ".join(errors) or r.stderr.strip())[:400], [], 0
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    m = re.fullmatch(r"\((\d+) rows?\)", lines[-1]) if lines else None
    if not m:
        return f"cannot read psql output: {r.stdout[-200:]!r}", [], 0
    return None, lines[0].split("\t"), int(m.group(1))


def check_sql(databases: list[Database], dashboards: list[Dashboard], variables: dict[str, Variable],
              workdir: Path, deadline: float, results: Results) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    # Leave time for the PromQL phase, which needs the scrapes meanwhile.
    sql_deadline = deadline - 60
    for db in databases:
        if time.monotonic() > sql_deadline:
            results.fail(f"sql {db.label}: not checked, out of time (a slow or stuck database?)")
            continue
        progress(f"sql: loading schema and fixtures into {db.label}")
        error = setup_database(db, workdir)
        if not results.check(error is None, f"sql {db.label}: schema or fixtures failed: {error}"):
            continue
        for d in dashboards:
            dash_range = relative_seconds(d.json.get("time", {}).get("from", "now-6h"))
            for t in d.targets():
                if t.kind != "sql":
                    continue
                if time.monotonic() > sql_deadline:
                    results.fail(f"{t.where} on {db.label}: not run, out of time")
                    continue
                span = relative_seconds(t.panel["timeFrom"]) if t.panel.get("timeFrom") else dash_range
                interval = grafana_interval(span, t.panel.get("interval"))
                builtins = {"__interval": format_duration(interval), "__interval_ms": str(int(interval * 1000)),
                            "__range": format_duration(span), "__range_s": str(int(span)),
                            "datasource": "prometheus", "sqlsource": "analytics-db"}
                raw = substitute(t.target.get("rawSql", ""), variables, builtins, sql=True)
                try:
                    query = expand_macros(raw, now - dt.timedelta(seconds=span), now, db.timescaledb)
                except ValueError as e:
                    results.fail(f"{t.where} on {db.label}: {e}")
                    continue
                error, columns, rows = run_sql_query(db, query)
                if not results.check(error is None, f"{t.where} on {db.label}: {error}"):
                    continue
                results.check(rows > 0, f"{t.where} on {db.label}: no rows")
                if t.target.get("format") == "time_series":
                    results.check("time" in columns,
                                  f"{t.where} on {db.label}: time_series result has no 'time' column ({columns})")


# --------------------------------------------------------------------- metrics
def exposition_families(text: str) -> dict[str, str]:
    """Family name -> type, from the `# TYPE` lines (the plugin writes one
    for every family, as `promtool check metrics` requires)."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))


def family_of(name: str, families: dict[str, str]) -> str | None:
    if name in families:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and families.get(base) in ("histogram", "summary"):
            return base
    return None


def read_unused(results: Results) -> dict[str, str]:
    out = {}
    try:
        lines = UNUSED_FILE.read_text().splitlines()
    except OSError as e:
        results.fail(f"metrics: cannot read {UNUSED_FILE}: {e}")
        return out
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, reason = line.partition("#")
        if results.check(bool(reason.strip()) and len(name.split()) == 1,
                         f"{UNUSED_FILE.name}:{n}: expected 'metric_name  # reason'"):
            out[name.strip()] = reason.strip()
    return out


def rule_sources() -> tuple[list[str], set[str]]:
    """Expressions of every rules file, and the names they record."""
    exprs, records = [], set()
    for path in sorted(RULES_DIR.glob("*.rules.yml")):
        text = path.read_text()
        exprs += yaml_block_values(text, "expr")
        records |= set(yaml_block_values(text, "record"))
    return exprs, records


def referenced_metrics(dashboards: list[Dashboard], results: Results) -> dict[str, str]:
    """Metric name -> where it is first used, in dashboards and rules;
    recording-rule names and Prometheus's own series left out."""
    used: dict[str, str] = {}
    exprs, records = rule_sources()
    sources = [(f"rules expr {e.splitlines()[0][:60]!r}", e) for e in exprs]
    for d in dashboards:
        for t in d.targets():
            if t.kind == "promql":
                sources.append((t.where, t.target.get("expr", "")))
        for name in ("job", "instance", "project"):
            v = d.variable(name)
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable_query(v).strip()) if v else None
            if m:
                sources.append((f"{d.path.name} variable {name}", m.group(1)))
    for where, expr in sources:
        try:
            selectors = scan_promql(expr)
        except ValueError as e:
            results.fail(f"metrics: {where}: {e}")
            continue
        for s in selectors:
            if s.name and s.name not in records and s.name not in PROMETHEUS_SERIES and s.name != "label_values":
                used.setdefault(s.name, where)
    return used


def check_metrics(exposition: str, dashboards: list[Dashboard], results: Results) -> set[str]:
    """Returns the pending families that this build does not export."""
    families = exposition_families(exposition)
    unused = read_unused(results)
    pending = {name for name, reason in unused.items() if PENDING_MARK in reason}
    used = referenced_metrics(dashboards, results)
    used_families = set()
    pending_absent = set()
    for name, where in sorted(used.items()):
        family = family_of(name, families)
        if family:
            used_families.add(family)
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in pending or base in pending:
            pending_absent.add(name)
            results.note(f"{name} is not exported by this build ({PENDING_MARK}); used by {where}")
            results.ok()
            continue
        results.fail(f"metrics: {name} (used by {where}) is not in the plugin's /metrics")
    for family in sorted(families):
        if family in used_families:
            results.check(family not in unused or family in pending,
                          f"metrics: {family} is used but listed as unused in {UNUSED_FILE.name}")
            if family in pending:
                results.note(f"{family} is exported now: remove it from {UNUSED_FILE.name}")
            continue
        results.check(family in unused, f"metrics: {family} is exported but used by no panel or rule "
                                         f"and not listed in {UNUSED_FILE.name}")
    for name in sorted(set(unused) - set(families) - pending):
        results.fail(f"metrics: {UNUSED_FILE.name} lists {name}, which the plugin does not export")
    return pending_absent


# ------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host-bin", required=True, type=Path, help="the context-host binary")
    parser.add_argument("--plugin-so", required=True, type=Path, help="libcontext_analytics.so")
    parser.add_argument("--postgres-url", required=True, help="plain PostgreSQL test database (tables are dropped)")
    parser.add_argument("--timescale-url", required=True, help="TimescaleDB test database (tables are dropped)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed on success)")
    args = parser.parse_args()

    started = time.monotonic()
    deadline = started + DEADLINE_SECONDS
    results = Results()
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="dashboards-check-")) if own_workdir else args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for tool in ("prometheus", "psql"):
        if shutil.which(tool) is None:
            results.fail(f"setup: {tool} not found (apt-get install prometheus postgresql-client)")
    for path in (args.host_bin, args.plugin_so):
        if not path.is_file():
            results.fail(f"setup: {path} does not exist")
    if results.failed:
        print(f"{results.passed} passed, {results.failed} failed")
        return 1

    dashboards = load_dashboards(results)
    progress(f"lint: {len(dashboards)} dashboards")
    lint(dashboards, results)

    host = prom = workload = None
    try:
        progress("starting context-host")
        host = Host(args.host_bin.resolve(), args.plugin_so.resolve(), workdir)
        host.wait_ready(30)
        workload = Workload(host)
        workload.start()
        progress(f"starting prometheus (scraping {host.url})")
        prom = Prometheus(workdir, f"127.0.0.1:{host.port}")
        prom.wait_ready(30)
        scrape_started = time.monotonic()
        while time.monotonic() - scrape_started < 20:
            if prom.query('context_project_files{job="context"}').get("data", {}).get("result"):
                break
            time.sleep(0.5)
        variables = resolve_variables(prom, dashboards, results) if dashboards else {}

        databases = [Database("postgresql", args.postgres_url, False),
                     Database("timescaledb", args.timescale_url, True)]
        check_sql(databases, dashboards, variables, workdir, deadline, results)

        progress("metrics: comparing with the plugin's /metrics")
        status, body = http(host.url + "/metrics")
        pending_absent = set()
        if results.check(status == 200, f"metrics: GET /metrics answered {status}"):
            pending_absent = check_metrics(body.decode(), dashboards, results)

        _, records = rule_sources()
        progress("promql: waiting for scrapes and rule evaluations")
        wait_for_data(prom, scrape_started, sorted(records), deadline)
        progress("promql: running every target")
        check_promql(prom, dashboards, variables, pending_absent, results)
        check_rules(prom, results)
        for f in workload.failures:
            results.fail(f"workload: {f}")
        results.check(workload.requests > 0, "workload: no request reached the host")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        results.fail(f"setup: {e}")
    finally:
        if workload:
            workload.stop_event.set()
            workload.join(timeout=5)
        if prom:
            prom.stop()
        if host:
            host.stop()

    for note in results.notes:
        progress(f"note: {note}")
    elapsed = time.monotonic() - started
    results.check(elapsed < 240, f"time: the check took {elapsed:.0f} s (limit 240 s)")
    if own_workdir and results.failed == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    elif results.failed:
        progress(f"logs and generated files are in {workdir}")
    progress(f"done in {elapsed:.0f} s" + (f", {workload.requests} workload requests" if workload else ""))
    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
