//! docs/api.md against a live host: the reference part is generated from
//! the OpenAPI document the plugin serves and must be up to date, and every
//! example request in the doc is sent to a real host with the real plugin,
//! which must answer with the documented status and the documented shape
//! (same keys at every level, same types; values differ from run to run).
//!
//! `CONTEXT_UPDATE_DOCS=1 cargo test -p context-e2e --test docs` rewrites
//! the generated reference and every example's response from the live host.

use std::fmt::Write as _;

use context_e2e::{ANALYTICS, Host, HostSpec, Scratch, artifact, workspace_root, write_files};
use serde_json::Value;

const DOC: &str = "docs/api.md";
const BEGIN: &str = "<!-- BEGIN GENERATED: reference from /api/v1/analytics/openapi.json -->";
const END: &str = "<!-- END GENERATED -->";
const EXAMPLE_HOST: &str = "http://localhost:8080";
/// Arrays in documented responses are cut to this many items.
const MAX_ITEMS: usize = 3;

fn updating() -> bool {
    std::env::var_os("CONTEXT_UPDATE_DOCS").is_some_and(|v| v == "1")
}

/// A host with the plugin on SQLite over a small project, with searches,
/// zero-result searches and file opens from three users, written and
/// rolled up.
fn live_host(scratch: &Scratch) -> Host {
    let root = scratch.path().join("project");
    write_files(
        &root,
        &[
            ("src/main.rs", b"fn main() { let needle = parse(); }\nfn parse() -> u32 { 1 }\n"),
            ("src/lib.rs", b"pub fn needle() {}\npub fn haystack() {}\n"),
            ("src/unused.rs", b"pub fn never_found() {}\n"),
            ("README.md", b"# sample\nneedle and haystack\n"),
        ],
    );
    let host = Host::start(HostSpec {
        libraries: vec![artifact(ANALYTICS)],
        plugins: vec![(
            "analytics".into(),
            true,
            "[plugins.analytics.config.pipeline]\nflush_interval_ms = 50\n\
             [plugins.analytics.config.storage]\nmaintenance_interval_secs = 1"
                .into(),
        )],
        projects: vec![("sample".into(), root)],
        instance_id: Some("docs-host".into()),
        ..Default::default()
    });
    host.wait_indexed(1);
    let mut searches = 0;
    for (user, queries) in [
        ("alice", &["needle", "haystack", "needle", "parse"][..]),
        ("bob", &["needle", "missing_symbol", "fn main"][..]),
        ("carol", &["haystack", "missing_symbol"][..]),
    ] {
        for query in queries {
            let q = query.replace(' ', "%20");
            let (status, body) = host.get_json(&format!("/api/v1/search?q={q}&project=sample"), user);
            assert_eq!(status, 200, "{body}");
            searches += 1;
            if let Some(path) = body["results"][0]["path"].as_str() {
                let open = serde_json::json!({"project": "sample", "path": path, "search_id": body["search_id"], "rank": 1});
                let (status, answer) = host.post_json("/api/v1/files/open", user, &open);
                assert_eq!(status, 200, "file open: {answer}");
            }
        }
    }
    // Every event written (file opens may trail the last search by one
    // batch) and a project snapshot stored (code-health's totals).
    host.wait_until("events written and a snapshot stored", || {
        let (_, health) = host.get_json("/api/v1/analytics/health", "docs");
        let received = &health["events"]["received"];
        let snapshots = received["snapshot"].as_u64().unwrap_or(0);
        let all = ["search", "open", "index", "snapshot"]
            .iter()
            .map(|k| received[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        let written = health["storage"]["events_written"].as_u64().unwrap_or(0);
        let (_, health_of_code) = host.get_json("/api/v1/analytics/code-health?project=sample", "docs");
        snapshots >= 1 && written == all && health_of_code["projects"][0]["total_files"].is_u64()
    });
    host.wait_until("searches rolled up", || {
        let (status, body) = host.get_json("/api/v1/analytics/search-performance?timerange=1h", "docs");
        status == 200 && body["summary"]["requests"].as_u64() == Some(searches)
    });
    host
}

/// One documented example: the request and the documented answer.
struct Example {
    path: String,
    status: u16,
    lang: String,
    body: String,
    /// Byte range of `body` in the doc.
    span: std::ops::Range<usize>,
}

/// Examples are a ```sh block with one `curl ... 'http://localhost:8080/…'`
/// line, then a line `` `STATUS ...`: `` and a fenced block with the answer.
fn examples(doc: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(start) = doc[at..].find("```sh\ncurl ") {
        let start = at + start;
        let line_end = start + doc[start..].find('\n').unwrap() + 1;
        let command_end = line_end + doc[line_end..].find('\n').unwrap();
        let command = &doc[line_end..command_end];
        let url = command.split('\'').nth(1).unwrap_or_else(|| panic!("{DOC}: no quoted URL in `{command}`"));
        let path =
            url.strip_prefix(EXAMPLE_HOST).unwrap_or_else(|| panic!("{DOC}: {url} is not on {EXAMPLE_HOST}"));
        let after = &doc[command_end..];
        let status_at =
            after.find("\n\n`").unwrap_or_else(|| panic!("{DOC}: no status after `{command}`")) + 3;
        let status: u16 = after[status_at..status_at + 3]
            .parse()
            .unwrap_or_else(|_| panic!("{DOC}: no `STATUS` line after `{command}`"));
        let fence = after[status_at..].find("\n```").unwrap() + status_at + 4;
        let lang_end = fence + after[fence..].find('\n').unwrap();
        let body_start = lang_end + 1;
        let body_end = body_start + after[body_start..].find("```").unwrap();
        found.push(Example {
            path: path.to_owned(),
            status,
            lang: after[fence..lang_end].to_owned(),
            body: after[body_start..body_end].to_owned(),
            span: command_end + body_start..command_end + body_end,
        });
        at = command_end + body_end;
    }
    found
}

/// The same keys at every level and the same types (null matches anything;
/// documented arrays may be shorter than live ones).
fn same_shape(doc: &Value, live: &Value, at: &str) -> Result<(), String> {
    match (doc, live) {
        (Value::Null, _) | (_, Value::Null) => Ok(()),
        (Value::Bool(_), Value::Bool(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_)) => Ok(()),
        (Value::Array(d), Value::Array(l)) => {
            if !d.is_empty() && l.is_empty() {
                return Err(format!("{at}: documented with items, live empty"));
            }
            for (i, item) in d.iter().enumerate() {
                same_shape(item, &l[i.min(l.len() - 1)], &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Object(d), Value::Object(l)) => {
            let missing: Vec<&String> = l.keys().filter(|k| !d.contains_key(*k)).collect();
            let extra: Vec<&String> = d.keys().filter(|k| !l.contains_key(*k)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                return Err(format!(
                    "{at}: live keys not documented {missing:?}, documented keys not live {extra:?}"
                ));
            }
            d.iter().try_for_each(|(k, v)| same_shape(v, &l[k], &format!("{at}.{k}")))
        }
        _ => Err(format!("{at}: documented {doc}, live {live}")),
    }
}

/// A live answer as the doc shows it: pretty JSON with long arrays cut
/// (time series to their last items, where the test's searches are).
fn shown(value: &Value, key: &str) -> Value {
    match value {
        Value::Array(items) => {
            let skip =
                if matches!(key, "buckets" | "trend") { items.len().saturating_sub(MAX_ITEMS) } else { 0 };
            Value::Array(items.iter().skip(skip).take(MAX_ITEMS).map(|v| shown(v, "")).collect())
        }
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), shown(v, k))).collect()),
        other => other.clone(),
    }
}

fn shown_text(body: &str) -> String {
    let lines: Vec<&str> = body.lines().take(MAX_ITEMS + 1).collect();
    format!("{}\n", lines.join("\n"))
}

/// The reference part, from the OpenAPI document.
fn reference(api: &Value) -> String {
    let mut out = String::new();
    let components = &api["components"];
    let resolve = |v: &Value| -> Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let mut target = api;
                for part in r.trim_start_matches("#/").split('/') {
                    target = &target[part];
                }
                target.clone()
            }
            None => v.clone(),
        }
    };
    writeln!(
        out,
        "OpenAPI {} document of `context-analytics` {}.\n",
        api["openapi"].as_str().unwrap_or(""),
        api["info"]["version"].as_str().unwrap_or("")
    )
    .unwrap();
    if let Some(description) = api["info"]["description"].as_str() {
        writeln!(out, "{description}\n").unwrap();
    }
    let paths = api["paths"].as_object().expect("paths");
    for (path, item) in paths {
        let Some(get) = item.get("get") else { continue };
        writeln!(out, "### `GET {path}`\n").unwrap();
        let summary = get["summary"].as_str().unwrap_or("");
        writeln!(out, "{summary}.\n").unwrap();
        if let Some(description) = get["description"].as_str().filter(|d| *d != summary) {
            writeln!(out, "{description}\n").unwrap();
        }
        let params: Vec<Value> =
            get["parameters"].as_array().map(|p| p.iter().map(&resolve).collect()).unwrap_or_default();
        if !params.is_empty() {
            writeln!(out, "| parameter | type | default | allowed | description |\n|---|---|---|---|---|")
                .unwrap();
            for p in &params {
                let schema = &p["schema"];
                let name = p["name"].as_str().unwrap_or("");
                let required = if p["required"] == true { " (required)" } else { "" };
                let ty = schema_type(schema);
                let default = schema.get("default").map(|d| format!("`{d}`")).unwrap_or_default();
                let allowed = allowed(schema);
                let description = p["description"].as_str().unwrap_or("").replace('|', "\\|");
                writeln!(out, "| `{name}`{required} | {ty} | {default} | {allowed} | {description} |")
                    .unwrap();
            }
            out.push('\n');
        }
        let mut statuses = Vec::new();
        let mut ok_schema = None;
        if let Some(responses) = get["responses"].as_object() {
            for (status, response) in responses {
                let response = resolve(response);
                let types: Vec<&String> =
                    response["content"].as_object().map(|c| c.keys().collect()).unwrap_or_default();
                let types = if types.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", types.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "))
                };
                statuses
                    .push(format!("- `{status}`: {}{types}", response["description"].as_str().unwrap_or("")));
                if status == "200" {
                    ok_schema = response["content"]["application/json"]["schema"]
                        .as_object()
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::Object(s.clone()));
                }
            }
        }
        writeln!(out, "Responses:\n\n{}\n", statuses.join("\n")).unwrap();
        if let Some(schema) = ok_schema.filter(|s| s.get("properties").is_some()) {
            writeln!(out, "<details><summary>200 response fields</summary>\n").unwrap();
            fields(&resolve(&schema), 0, &mut out, &resolve);
            writeln!(out, "\n</details>\n").unwrap();
        }
    }
    if let Some(error) = components["schemas"].get("Error") {
        writeln!(out, "### Errors\n\nEvery error response has this body:\n").unwrap();
        fields(error, 0, &mut out, &resolve);
        out.push('\n');
    }
    out
}

fn schema_type(schema: &Value) -> String {
    let mut ty = schema["type"].as_str().unwrap_or("any").to_owned();
    if let Some(format) = schema["format"].as_str() {
        ty = format!("{ty} ({format})");
    }
    if schema["type"] == "array" {
        ty = format!("array of {}", schema_type(&schema["items"]));
    }
    if schema["nullable"] == true {
        ty.push_str(" or null");
    }
    ty
}

fn allowed(schema: &Value) -> String {
    if let Some(values) = schema["enum"].as_array() {
        return values
            .iter()
            .map(|v| format!("`{}`", v.as_str().map_or(v.to_string(), str::to_owned)))
            .collect::<Vec<_>>()
            .join(", ");
    }
    let mut parts = Vec::new();
    if let Some(min) = schema.get("minimum") {
        parts.push(format!("≥ {min}"));
    }
    if let Some(max) = schema.get("maximum") {
        parts.push(format!("≤ {max}"));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        parts.push(format!("`{}`", pattern.replace('|', "\\|")));
    }
    if let Some(max) = schema.get("maxLength") {
        parts.push(format!("at most {max} characters"));
    }
    parts.join(", ")
}

fn fields(schema: &Value, depth: usize, out: &mut String, resolve: &dyn Fn(&Value) -> Value) {
    let schema = resolve(schema);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else { return };
    for (name, property) in properties {
        let property = resolve(property);
        let optional = if required.contains(&name.as_str()) { "" } else { ", optional" };
        let mut line = format!("{}- `{name}`: {}{optional}", "  ".repeat(depth), schema_type(&property));
        let allowed = allowed(&property);
        if !allowed.is_empty() {
            write!(line, "; {allowed}").unwrap();
        }
        if let Some(description) = property["description"].as_str() {
            write!(line, " — {description}").unwrap();
        }
        writeln!(out, "{line}").unwrap();
        let nested = if property["type"] == "array" { resolve(&property["items"]) } else { property.clone() };
        if nested.get("properties").is_some() {
            fields(&nested, depth + 1, out, resolve);
        }
    }
}

#[test]
fn api_reference_is_generated_and_every_example_answers_as_documented() {
    let path = workspace_root().join(DOC);
    let mut doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {DOC}: {e}"));
    let scratch = Scratch::new("docs");
    let host = live_host(&scratch);

    // The reference, from the document the live host serves.
    let (status, api) = host.get_json("/api/v1/analytics/openapi.json", "docs");
    assert_eq!(status, 200);
    let generated = reference(&api);
    let begin = doc.find(BEGIN).unwrap_or_else(|| panic!("{DOC}: no `{BEGIN}` line")) + BEGIN.len() + 1;
    let end = doc.find(END).unwrap_or_else(|| panic!("{DOC}: no `{END}` line"));
    let up_to_date = doc[begin..end] == generated;

    // The examples, against the same host.
    let examples = examples(&doc);
    assert!(examples.len() >= 8, "{DOC}: only {} examples found", examples.len());
    let mut problems = Vec::new();
    let mut replacements = Vec::new();
    for example in &examples {
        let (status, body) = host.get(&example.path, "docs");
        if status != example.status {
            problems.push(format!("{}: documented {}, live {status}: {body}", example.path, example.status));
            continue;
        }
        let live_shown = if example.lang == "json" {
            let live: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {body}", example.path));
            match serde_json::from_str::<Value>(&example.body) {
                Ok(documented) => {
                    if let Err(e) = same_shape(&documented, &live, "$") {
                        problems.push(format!("{}: {e}", example.path));
                    }
                }
                Err(e) => problems.push(format!("{}: the documented answer is not JSON: {e}", example.path)),
            }
            format!("{}\n", serde_json::to_string_pretty(&shown(&live, "")).unwrap())
        } else if example.lang == "ndjson" {
            let live: Vec<&str> = body.lines().collect();
            for (i, line) in example.body.lines().enumerate() {
                let parsed = (
                    serde_json::from_str::<Value>(line),
                    live.get(i).map(|l| serde_json::from_str::<Value>(l)),
                );
                match parsed {
                    (Ok(documented), Some(Ok(live))) => {
                        if let Err(e) = same_shape(&documented, &live, &format!("line {}", i + 1)) {
                            problems.push(format!("{}: {e}", example.path));
                        }
                    }
                    _ => problems.push(format!("{}: line {} is not JSON on both sides", example.path, i + 1)),
                }
            }
            shown_text(&body)
        } else {
            // CSV: the header line is the contract.
            let first = |text: &str| text.lines().next().unwrap_or("").to_owned();
            if first(&example.body) != first(&body) {
                problems.push(format!(
                    "{}: first line documented {:?}, live {:?}",
                    example.path,
                    first(&example.body),
                    first(&body)
                ));
            }
            shown_text(&body)
        };
        replacements.push((example.span.clone(), live_shown));
    }

    if updating() {
        for (span, text) in replacements.into_iter().rev() {
            doc.replace_range(span, &text);
        }
        let begin = doc.find(BEGIN).unwrap() + BEGIN.len() + 1;
        let end = doc.find(END).unwrap();
        doc.replace_range(begin..end, &generated);
        std::fs::write(&path, &doc).unwrap();
        eprintln!("{DOC} rewritten from the live host");
        return;
    }
    assert!(
        up_to_date,
        "{DOC}: the generated reference is out of date with the OpenAPI document; run \
         CONTEXT_UPDATE_DOCS=1 cargo test -p context-e2e --test docs"
    );
    assert!(
        problems.is_empty(),
        "{DOC}: examples that do not answer as documented:\n{}",
        problems.join("\n")
    );
}
