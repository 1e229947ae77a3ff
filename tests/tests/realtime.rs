//! Issue 16, end to end: real-time reads and readiness through the real
//! host and the real `.so`, on the embedded SQLite store, on plain
//! PostgreSQL and on TimescaleDB. Routes asked right after start answer or
//! say `starting` with Retry-After, never "unreachable"; events are in
//! every route's answer as soon as they are committed, with maintenance
//! (which would roll them up) an hour away; every count equals the raw
//! events the host produced; the three backends answer the same JSON.

use std::{path::PathBuf, time::Instant};

use context_e2e::{ANALYTICS, Host, HostSpec, Postgres, Scratch, artifact, write_files};
use serde_json::Value;

const SEARCHES: usize = 40;
const FILES: usize = 12;
const USERS: [&str; 3] = ["ada", "grace", "linus"];
const QUERIES: [&str; 4] = ["needle", "haystack", "fn parse", "nothing_matches_this"];

fn project(scratch: &Scratch) -> PathBuf {
    let root = scratch.path().join("project");
    let files: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| {
            let body = format!("pub fn needle{i}() {{ let haystack = {i}; }}\nfn parse() -> u32 {{ {i} }}\n");
            (format!("src/m{i}.rs"), body.into_bytes())
        })
        .collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    write_files(&root, &files);
    root
}

fn get(host: &Host, path: &str) -> (u16, Value, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.get(format!("{}{path}", host.base_url)).call().unwrap();
    let status = response.status().as_u16();
    let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), retry)
}

/// What the host produced: searches per (query, user), opens.
struct Sent {
    per_query: Vec<(String, usize)>,
    opens: usize,
    zero: usize,
}

fn send(host: &Host, project: &str) -> Sent {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut per_query: Vec<(String, usize)> = QUERIES.iter().map(|q| (q.to_string(), 0)).collect();
    let (mut opens, mut zero) = (0, 0);
    for i in 0..SEARCHES {
        let query = QUERIES[i % QUERIES.len()];
        let user = USERS[i % USERS.len()];
        let url =
            format!("{}/api/v1/search?q={}&project={project}", host.base_url, query.replace(' ', "%20"));
        let mut response = agent.get(&url).header("X-Context-User", user).call().unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        per_query[i % QUERIES.len()].1 += 1;
        let results = body["results"].as_array().unwrap();
        if results.is_empty() {
            zero += 1;
        } else if i % 3 == 0 {
            let path = results[0]["path"].as_str().unwrap();
            let open = serde_json::json!({"project": project, "path": path, "rank": 1, "search_id": body["search_id"]});
            let (status, body) = host.post_json("/api/v1/files/open", user, &open);
            assert_eq!(status, 200, "{body}");
            opens += 1;
        }
    }
    Sent { per_query, opens, zero }
}

fn received_total(health: &Value) -> u64 {
    ["search", "index", "open", "snapshot"]
        .iter()
        .map(|k| health["events"]["received"][k].as_u64().unwrap())
        .sum()
}

/// Strips what differs from run to run and by backend: times, latencies,
/// the answering source, the instance part of a live snapshot.
fn comparable(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| {
                    let timing =
                        ["latency", "duration", "per_second", "_ms", "bytes"].iter().any(|t| k.contains(t));
                    let varying =
                        ["range", "time", "instance", "seq", "heatmap", "buckets", "trend", "health"];
                    !timing && !varying.contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), comparable(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(comparable).collect()),
        other => other.clone(),
    }
}

/// Starts a host on `storage`, checks readiness from the first request,
/// sends traffic and checks every route as soon as it is committed; the
/// routes' comparable answers.
fn run(label: &str, storage: &str, project_name: &str) -> Vec<(String, Value)> {
    let scratch = Scratch::new(&format!("realtime-{label}"));
    let root = project(&scratch);
    let host = Host::start(HostSpec {
        libraries: vec![artifact(ANALYTICS)],
        plugins: vec![(
            "analytics".into(),
            true,
            format!("[plugins.analytics.config.storage]\n{storage}\nmaintenance_interval_secs = 3600"),
        )],
        projects: vec![(project_name.into(), root)],
        ..Default::default()
    });

    // Ready from the first request: an answer, or `starting` with
    // Retry-After while the store opens; never "unreachable".
    for path in ["/api/v1/analytics/alerts", "/api/v1/analytics/search-performance?timerange=1h"] {
        let (status, body, retry) = get(&host, path);
        match status {
            200 => {}
            503 => {
                assert_eq!(body["error"]["code"], "starting", "{label} {path}: {body}");
                assert_eq!(retry.as_deref(), Some("1"), "{label} {path}");
            }
            _ => panic!("{label} {path}: {status} {body}"),
        }
    }
    host.wait_until("storage ready", || get(&host, "/api/v1/analytics/health").1["storage"]["ready"] == true);
    host.wait_indexed(1);

    let sent = send(&host, project_name);
    // Committed: everything received so far is written (one queue, in order).
    let received = received_total(&get(&host, "/api/v1/analytics/health").1);
    host.wait_until("events committed", || {
        get(&host, "/api/v1/analytics/health").1["events"]["written"].as_u64().unwrap() >= received
    });
    let committed = Instant::now();
    let health = get(&host, "/api/v1/analytics/health").1;
    assert!(health["storage"]["last_maintenance_at_us"].is_null(), "{label}: no rollup run helped: {health}");

    let p = format!("project={project_name}");
    let routes = [
        format!("/api/v1/analytics/search-performance?timerange=1h&aggregation=count&{p}"),
        format!("/api/v1/analytics/search-performance?timerange=24h&step=1h&aggregation=p95&{p}"),
        format!("/api/v1/analytics/search-performance?timerange=7d&step=1d&{p}"),
        format!("/api/v1/analytics/cache-performance?timerange=1h&{p}"),
        format!("/api/v1/analytics/index-performance?timerange=24h&step=1h&{p}"),
        format!("/api/v1/analytics/usage?timerange=24h&step=1h&{p}"),
        format!("/api/v1/analytics/top-queries?timerange=24h&{p}"),
        format!("/api/v1/analytics/top-queries?timerange=24h&zero_results=true&{p}"),
        format!("/api/v1/analytics/code-health?timerange=24h&{p}"),
        format!("/api/v1/analytics/export?dataset=search-performance&format=json&timerange=7d&step=1d&{p}"),
        format!("/api/v1/analytics/live?timerange=1h&{p}"),
    ];
    let answers: Vec<(String, Value)> = routes
        .iter()
        .map(|route| {
            let (status, body, _) = get(&host, route);
            assert_eq!(status, 200, "{label} {route}: {body}");
            (route.clone(), body)
        })
        .collect();
    eprintln!("{label}: {} routes answered {:?} after the commit", routes.len(), committed.elapsed());
    let answer = |prefix: &str| &answers.iter().find(|(r, _)| r.starts_with(prefix)).unwrap().1;

    // Every count equals what the host produced.
    let searches = SEARCHES as u64;
    for (route, body) in answers.iter().take(3).chain(answers.iter().skip(9).take(1)) {
        assert_eq!(body["summary"]["requests"], searches, "{label} {route}");
        assert_eq!(body["summary"]["zero_results"], sent.zero as u64, "{label} {route}");
    }
    let lookups: u64 = answer("/api/v1/analytics/cache-performance")["overall"]
        .as_object()
        .unwrap()
        .values()
        .map(|layer| layer["lookups"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(lookups, searches, "{label}: cache lookups");
    let index = answer("/api/v1/analytics/index-performance");
    assert_eq!(index["summary"]["files"], FILES as u64, "{label}: {}", index["summary"]);
    let usage = answer("/api/v1/analytics/usage");
    assert_eq!(usage["active_users"], USERS.len() as u64, "{label}");
    let by_user: u64 =
        usage["top_users"].as_array().unwrap().iter().map(|u| u["queries"].as_u64().unwrap()).sum();
    assert_eq!(by_user, searches, "{label}: {}", usage["top_users"]);
    let top = answer("/api/v1/analytics/top-queries?timerange=24h&project");
    for (query, count) in &sent.per_query {
        let entry = top["queries"].as_array().unwrap().iter().find(|e| e["query"] == query.as_str());
        assert_eq!(entry.map(|e| e["count"].clone()), Some((*count as u64).into()), "{label} {query}: {top}");
    }
    let opened: u64 =
        usage["top_opened_files"].as_array().unwrap().iter().map(|f| f["opens"].as_u64().unwrap()).sum();
    assert_eq!(opened, sent.opens as u64, "{label}: {}", usage["top_opened_files"]);
    let live = answer("/api/v1/analytics/live");
    assert_eq!(live["sources"]["latency_p50"]["body"]["summary"]["requests"], searches, "{label}");

    answers.iter().map(|(route, body)| (route.clone(), comparable(body))).collect()
}

#[test]
fn every_route_shows_what_was_committed_on_every_backend() {
    let sqlite = run("sqlite", "", "sample");
    let pg = Postgres::start();
    let postgres = run("postgres", &format!("url = \"{}\"\ntimescaledb = \"off\"", pg.url), "sample");
    pg.stop();
    // The TimescaleDB test server is shared: a project of this run's own.
    let url = std::env::var("CONTEXT_TEST_TIMESCALE_URL")
        .expect("CONTEXT_TEST_TIMESCALE_URL (scripts/test-all.sh starts the TimescaleDB test server)");
    let project = format!("rt{}", std::process::id());
    let timescale =
        run("timescaledb", &format!("url = \"{url}\"\ntimescaledb = \"on\"\nmax_connections = 1"), &project);
    for (((route, a), (_, b)), (_, c)) in sqlite.iter().zip(&postgres).zip(&timescale) {
        assert_eq!(a, b, "SQLite and PostgreSQL differ on {route}");
        let c = serde_json::to_string(c).unwrap().replace(&project, "sample");
        assert_eq!(serde_json::to_string(a).unwrap(), c, "SQLite and TimescaleDB differ on {route}");
    }
}
