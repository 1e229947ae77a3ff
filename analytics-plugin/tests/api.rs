//! The analytics routes against SQLite, PostgreSQL and TimescaleDB with the
//! same fixture events: every backend answers the same JSON, and the
//! aggregates equal a brute-force computation over the fixture.
//!
//! Needs CONTEXT_TEST_POSTGRES_URL and CONTEXT_TEST_TIMESCALE_URL (started by
//! scripts/test-all.sh), like the storage suite.

use std::{collections::BTreeMap, time::Duration};

use abi_stable::std_types::{RStr, RString};
use axum::{body::Body, http::Request};
use context_analytics::{
    AnalyticsPlugin,
    storage::{
        Backend, latency,
        rows::{EventId, IndexRow, OpenRow, Row, RowBatch, RowData, SearchRow, SnapshotRow},
    },
    time::format_rfc3339,
};
use http_body_util::BodyExt;
use plugin_api::{HostContext, HostServices, LogLevel};
use serde_json::{Value, json};
use tower::ServiceExt;

const HOUR: i64 = 3_600_000_000;

/// The tests share their databases (and the TimescaleDB test server takes
/// one connection): one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

extern "C" fn log(_level: LogLevel, _target: RStr<'_>, _message: RStr<'_>) {}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// Fixture window: 24 whole hours ending two hours ago.
fn window() -> (i64, i64) {
    let end = (now_us() / HOUR - 2) * HOUR;
    (end - 24 * HOUR, end)
}

struct Fixture {
    rows: Vec<(String, i64, Vec<Row>)>,
}

fn fixture() -> Fixture {
    let (start, _) = window();
    let mut rows = Vec::new();
    for (n, instance) in ["inst-a", "inst-b"].iter().enumerate() {
        let boot = 1000 + n as i64;
        let mut data = Vec::new();
        for i in 0..1200i64 {
            let t = start + i * 71_000_000 + n as i64 * 13;
            let project = ["alpha", "beta"][(i % 2) as usize];
            let latency_ns = 200_000 + ((i * 7919 + n as i64 * 31) % 997) as u64 * 37_000;
            let status = if i % 40 == 0 { "error" } else { "ok" };
            let results = if status == "ok" { (i % 9) as i32 } else { 0 };
            let search_id = format!("{instance}-s{i}");
            data.push(RowData::Search(SearchRow {
                time_us: t,
                project: project.into(),
                user_id: format!("user{}", i % 11),
                query: Some(
                    ["fn main", "struct Config", "impl Drop", "nothing here"][(i % 4) as usize].into(),
                ),
                kind: if i % 5 == 0 { "regex" } else { "literal" },
                cache: ["l1", "l2", "l3", "miss", "miss"][(i % 5) as usize],
                status,
                error_code: (status != "ok").then(|| "invalid_regex".into()),
                latency_ms: latency_ns as f64 / 1e6,
                latency_bucket: latency::bucket_of_ns(latency_ns),
                result_count: results,
                top_results: (0..results.min(3))
                    .map(|r| format!("src/file{}.rs", (i + r as i64) % 7))
                    .collect(),
                search_id: search_id.clone(),
            }));
            if i % 6 == 1 && results > 0 {
                data.push(RowData::Open(OpenRow {
                    time_us: t + 1,
                    project: project.into(),
                    user_id: format!("user{}", i % 11),
                    path: format!("src/file{}.rs", i % 7),
                    rank: 1,
                    search_id,
                }));
            }
            if i % 50 == 0 {
                for f in 0..10 {
                    data.push(RowData::Index(IndexRow {
                        time_us: t + 2 + f,
                        project: project.into(),
                        path: format!("src/file{f}.rs"),
                        file_type: if f == 9 { "bin".into() } else { "rs".into() },
                        bytes: 1000 + f,
                        duration_ms: 0.5 + f as f64 / 10.0,
                        outcome: if f == 9 { "skipped" } else { "indexed" },
                        error_code: (f == 9).then(|| "binary".into()),
                        queue_depth: 9 - f,
                    }));
                }
                data.push(RowData::Snapshot(SnapshotRow {
                    time_us: t + 20,
                    project: project.into(),
                    total_files: 10,
                    indexed_files: 9,
                    vector_store_bytes: 9000 + i,
                    embedding_cache_bytes: 100,
                    duplication_ratio: Some(0.1),
                }));
            }
        }
        let rows_of: Vec<Row> = data
            .into_iter()
            .enumerate()
            .map(|(k, d)| Row { id: EventId { boot_id: boot, seq: k as i64 + 1 }, data: d })
            .collect();
        rows.push((instance.to_string(), boot, rows_of));
    }
    Fixture { rows }
}

async fn plugin_for(backend: Backend) -> AnalyticsPlugin {
    let plugin = plugin_with_fixture(backend).await;
    roll_up(&plugin, backend).await;
    plugin
}

/// Runs maintenance (the usage rollups on every backend) and, on
/// TimescaleDB, refreshes the continuous aggregates.
async fn roll_up(plugin: &AnalyticsPlugin, backend: Backend) {
    let store = plugin.shared().storage.clone();
    if backend == Backend::Timescaledb {
        for view in ["search_rollup", "search_latency", "index_rollup", "open_rollup", "snapshot_rollup"] {
            for level in ["1h", "1d"] {
                store
                    .query_strings(&format!(
                        "CALL refresh_continuous_aggregate('{view}_{level}', NULL, NULL)"
                    ))
                    .await
                    .unwrap();
            }
        }
    }
    store.maintain(now_us()).await.unwrap();
}

/// A plugin on `backend` holding the fixture, not rolled up yet.
async fn plugin_with_fixture(backend: Backend) -> AnalyticsPlugin {
    let dir = std::env::temp_dir().join(format!("api-suite-{}-{:?}", std::process::id(), backend));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let storage = match backend {
        Backend::Sqlite => format!("url = \"sqlite://{}/a.db\"", dir.display()),
        Backend::Postgres => {
            let base = std::env::var("CONTEXT_TEST_POSTGRES_URL")
                .expect("CONTEXT_TEST_POSTGRES_URL (scripts/test-all.sh)");
            let admin = std::process::Command::new("psql")
                .arg(&base)
                .args([
                    "-c",
                    "DROP DATABASE IF EXISTS api_suite WITH (FORCE)",
                    "-c",
                    "CREATE DATABASE api_suite",
                ])
                .output()
                .unwrap();
            assert!(admin.status.success(), "{}", String::from_utf8_lossy(&admin.stderr));
            let (server, _) = base.rsplit_once('/').unwrap();
            format!("url = \"{server}/api_suite\"\ntimescaledb = \"off\"")
        }
        Backend::Timescaledb => {
            let url = std::env::var("CONTEXT_TEST_TIMESCALE_URL")
                .expect("CONTEXT_TEST_TIMESCALE_URL (scripts/test-all.sh)");
            format!("url = \"{url}\"\ntimescaledb = \"on\"\nmax_connections = 1")
        }
    };
    let host = HostContext {
        plugin_name: RString::from("analytics"),
        host_name: RString::from("api-suite"),
        host_version: RString::from("0"),
        instance_id: RString::from("api-suite"),
        data_dir: RString::from(dir.to_string_lossy().as_ref()),
        services: HostServices::leak(log),
    };
    let plugin =
        AnalyticsPlugin::new(host, &format!("[storage]\n{storage}\nmaintenance_interval_secs = 3600"))
            .unwrap();
    for _ in 0..300 {
        if plugin.shared().pipeline.storage_health.lock().connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = plugin.shared().pipeline.storage_health.lock().clone();
    assert!(health.connected, "{backend:?} did not connect: {health:?}");
    let store = plugin.shared().storage.clone();
    if backend == Backend::Timescaledb {
        for table in context_analytics::storage::DATA_TABLES {
            store.query_strings(&format!("DELETE FROM {table} RETURNING 1")).await.unwrap();
        }
    }
    for (instance, boot, rows) in fixture().rows {
        for chunk in rows.chunks(500) {
            store.write(&instance, &RowBatch::from_rows(boot, chunk.to_vec())).await.unwrap();
        }
    }
    plugin
}

async fn get(plugin: &AnalyticsPlugin, path: &str) -> (u16, Value) {
    let response = plugin.router().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body))))
}

async fn get_raw(plugin: &AnalyticsPlugin, path: &str) -> (u16, String, String) {
    let response = plugin.router().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let disposition = response
        .headers()
        .get("content-disposition")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, disposition, String::from_utf8(body.to_vec()).unwrap())
}

/// Exports raw searches in every format and checks them against the
/// fixture; sends injection attempts through every text parameter.
async fn export_and_injection(plugin: &AnalyticsPlugin, backend: Backend) {
    let (from, to) = window();
    let range = format!("from={}&to={}", format_rfc3339(from), format_rfc3339(to));
    let expected = fixture()
        .rows
        .iter()
        .flat_map(|(_, _, rows)| rows)
        .filter(|r| matches!(r.data, RowData::Search(_)))
        .count();
    let (status, disposition, csv) =
        get_raw(plugin, &format!("/api/v1/analytics/export?dataset=raw-searches&{range}")).await;
    assert_eq!(status, 200, "{backend:?}: {csv}");
    assert!(
        disposition.starts_with("attachment; filename=\"context-analytics-raw-searches-"),
        "{disposition}"
    );
    assert!(disposition.ends_with(".csv\""), "{disposition}");
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert_eq!(
        lines[0],
        "time,instance_id,boot_id,seq,project,user_id,query,kind,cache,status,error_code,latency_ms,result_count,top_results,search_id"
    );
    assert_eq!(lines.len() - 1, expected, "{backend:?}: one CSV line per search");
    let (_, _, ndjson) = get_raw(
        plugin,
        &format!("/api/v1/analytics/export?dataset=raw-searches&format=ndjson&{range}&project=alpha"),
    )
    .await;
    let objects: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), expected / 2);
    assert!(objects.iter().all(|o| o["project"] == "alpha" && o["top_results"].is_array()));
    let (_, _, array) =
        get_raw(plugin, &format!("/api/v1/analytics/export?dataset=raw-opens&format=json&{range}")).await;
    let opens: Vec<Value> = serde_json::from_str(&array).unwrap();
    let expected_opens = fixture()
        .rows
        .iter()
        .flat_map(|(_, _, rows)| rows)
        .filter(|r| matches!(r.data, RowData::Open(_)))
        .count();
    assert_eq!(opens.len(), expected_opens);
    let (status, disposition, usage) =
        get_raw(plugin, &format!("/api/v1/analytics/export?dataset=usage&format=csv&{range}&step=1h")).await;
    assert_eq!(status, 200);
    assert!(disposition.contains("context-analytics-usage-"), "{disposition}");
    assert_eq!(usage.trim_end().split("\r\n").count(), 25, "a header and 24 hourly rows");
    let (status, _, body) =
        get_raw(plugin, &format!("/api/v1/analytics/export?dataset=raw-index&{range}&limit=5")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("does not apply to dataset 'raw-index'"), "{body}");

    let attacks = [
        "' OR '1'='1",
        "alpha'; DROP TABLE search_events; --",
        "\" OR 1=1 --",
        "alpha) UNION SELECT 1,2,3 --",
        "%27%3B--",
    ];
    let text_params = [
        "project",
        "timerange",
        "from",
        "to",
        "step",
        "aggregation",
        "limit",
        "zero_results",
        "dataset",
        "format",
        "page",
        "hot_spot_factor",
    ];
    for route in [
        "search-performance",
        "cache-performance",
        "index-performance",
        "usage",
        "top-queries",
        "code-health",
        "export",
    ] {
        for param in text_params {
            for attack in attacks {
                let value: String = url_encode(attack);
                let path = format!(
                    "/api/v1/analytics/{route}?{range}&{param}={value}{}",
                    if route == "export" && param != "dataset" { "&dataset=usage" } else { "" }
                );
                let (status, body) = get(plugin, &path).await;
                assert!(status == 400 || status == 200, "{backend:?} {path}: {status} {body}");
                if status == 400 {
                    assert!(
                        body["error"]["message"].is_string() && body["error"]["code"] == "invalid_parameter",
                        "{body}"
                    );
                } else {
                    assert_eq!(param, "project", "only a project name may be any text: {path}");
                    assert!(body.get("error").is_none());
                }
            }
        }
    }
    let (status, body) = get(plugin, &format!("/api/v1/analytics/search-performance?{range}&step=1h")).await;
    assert_eq!(status, 200, "the tables survived: {body}");
    assert_eq!(body["summary"]["requests"], expected);
    let (status, body) = get(plugin, "/api/v1/analytics/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(body["openapi"], "3.0.3");
    assert!(body["paths"]["/api/v1/analytics/export"]["get"]["parameters"].is_array());
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn routes() -> Vec<String> {
    let (from, to) = window();
    let range = format!("from={}&to={}", format_rfc3339(from), format_rfc3339(to));
    let mut routes = Vec::new();
    for step in ["1h", "15m"] {
        for agg in ["avg", "min", "max", "p50", "p95", "p99", "count", "sum"] {
            routes
                .push(format!("/api/v1/analytics/search-performance?{range}&step={step}&aggregation={agg}"));
        }
        routes.push(format!("/api/v1/analytics/search-performance?{range}&step={step}&project=beta"));
        routes.push(format!("/api/v1/analytics/cache-performance?{range}&step={step}"));
        routes.push(format!("/api/v1/analytics/index-performance?{range}&step={step}"));
        routes.push(format!("/api/v1/analytics/usage?{range}&step={step}&limit=5"));
    }
    routes.push(format!("/api/v1/analytics/top-queries?{range}&limit=10"));
    routes.push(format!("/api/v1/analytics/top-queries?{range}&zero_results=true&project=alpha"));
    routes.push(format!("/api/v1/analytics/code-health?{range}&page_size=3"));
    routes
}

/// Strips what legitimately differs by backend: which source answered.
fn comparable(mut v: Value) -> Value {
    if let Some(range) = v.get_mut("range").and_then(Value::as_object_mut) {
        range.remove("source");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_answers_the_same_and_matches_brute_force() {
    let _turn = SERIAL.lock().await;
    let mut answers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::Timescaledb] {
        let plugin = plugin_for(backend).await;
        for route in routes() {
            let (status, body) = get(&plugin, &route).await;
            assert_eq!(status, 200, "{backend:?} {route}: {body}");
            answers.entry(route).or_default().push(comparable(body));
        }
        export_and_injection(&plugin, backend).await;
        plugin.shared().storage.close().await;
        let _ = tokio::task::spawn_blocking(move || drop(plugin)).await;
    }
    for (route, bodies) in &answers {
        if bodies[0] != bodies[1] || bodies[0] != bodies[2] {
            let dump = std::env::temp_dir().join("api-suite-diff.json");
            std::fs::write(
                &dump,
                serde_json::to_string_pretty(&json!({"route": route, "bodies": bodies})).unwrap(),
            )
            .unwrap();
        }
        assert_eq!(bodies[0], bodies[1], "SQLite and PostgreSQL differ on {route}");
        assert_eq!(bodies[0], bodies[2], "SQLite and TimescaleDB differ on {route}");
    }

    // Brute force over the fixture for search-performance (hourly, p95).
    let (from, to) = window();
    let range = format!("from={}&to={}", format_rfc3339(from), format_rfc3339(to));
    let p95 = &answers[&format!("/api/v1/analytics/search-performance?{range}&step=1h&aggregation=p95")][0];
    let searches: Vec<SearchRow> = fixture()
        .rows
        .into_iter()
        .flat_map(|(_, _, rows)| rows)
        .filter_map(|r| match r.data {
            RowData::Search(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(p95["summary"]["requests"], searches.len());
    assert_eq!(p95["summary"]["errors"], searches.iter().filter(|s| s.status != "ok").count());
    assert_eq!(
        p95["summary"]["zero_results"],
        searches.iter().filter(|s| s.status == "ok" && s.result_count == 0).count()
    );
    let mut all: Vec<f64> = searches.iter().map(|s| s.latency_ms).collect();
    let exact = latency::exact_quantile(&mut all, 0.95).unwrap();
    let reported = p95["summary"]["latency_ms"]["p95"].as_f64().unwrap();
    assert!((reported - exact).abs() / exact < 0.01, "p95 {reported} vs exact {exact}");
    for (i, bucket) in p95["buckets"].as_array().unwrap().iter().enumerate() {
        let start = from + i as i64 * HOUR;
        let mut in_bucket: Vec<f64> = searches
            .iter()
            .filter(|s| s.time_us >= start && s.time_us < start + HOUR)
            .map(|s| s.latency_ms)
            .collect();
        assert_eq!(bucket["requests"], in_bucket.len(), "bucket {i}");
        if let Some(exact) = latency::exact_quantile(&mut in_bucket, 0.95) {
            let got = bucket["latency_ms"].as_f64().unwrap();
            assert!((got - exact).abs() / exact < 0.01, "bucket {i}: p95 {got} vs {exact}");
        }
    }
    let avg = &answers[&format!("/api/v1/analytics/search-performance?{range}&step=1h&aggregation=avg")][0];
    let mean = searches.iter().map(|s| s.latency_ms).sum::<f64>() / searches.len() as f64;
    assert!((avg["summary"]["latency_ms"]["avg"].as_f64().unwrap() - mean).abs() < 0.001);

    // Cache: L1 answers every fifth search.
    let cache = &answers[&format!("/api/v1/analytics/cache-performance?{range}&step=1h")][0];
    assert_eq!(cache["overall"]["l1"]["hits"], searches.iter().filter(|s| s.cache == "l1").count());
    assert_eq!(cache["overall"]["l1"]["lookups"], searches.len());

    // Code health: the trend's last day sees the whole range, so its dead
    // files are the range's dead files.
    let health = &answers[&format!("/api/v1/analytics/code-health?{range}&page_size=3")][0];
    for project in health["projects"].as_array().unwrap() {
        let trend = project["trend"].as_array().unwrap();
        assert!(!trend.is_empty(), "{project}");
        assert_eq!(trend.last().unwrap()["dead_files"], project["dead_code"]["files"], "{project}");
    }

    // Top queries: counts per query text.
    let top = &answers[&format!("/api/v1/analytics/top-queries?{range}&limit=10")][0];
    for entry in top["queries"].as_array().unwrap() {
        let q = entry["query"].as_str().unwrap();
        assert_eq!(entry["count"], searches.iter().filter(|s| s.query.as_deref() == Some(q)).count(), "{q}");
    }
}

const MINUTE: i64 = 60_000_000;
const DAY: i64 = 24 * HOUR;

/// The whole day before the fixture's window: late events land there, so
/// ranges reaching back over it read a daily rollup row.
fn late_day() -> i64 {
    (window().0 / DAY - 1) * DAY
}

/// Events written after a rollup run: within one hour (search and open),
/// a search whose open is in the next hour, one opened in another project,
/// and an open inside the fixture's window of a search on the late day.
fn late_rows() -> Vec<Row> {
    let (start, end) = window();
    let day = late_day();
    let search = |t: i64, project: &str, query: &str, results: i32, id: &str| {
        RowData::Search(SearchRow {
            time_us: t,
            project: project.into(),
            user_id: "late-user".into(),
            query: Some(query.into()),
            kind: "literal",
            cache: "miss",
            status: "ok",
            error_code: None,
            latency_ms: 1.25,
            latency_bucket: latency::bucket_of_ns(1_250_000),
            result_count: results,
            top_results: (0..results.min(2)).map(|r| format!("src/file{r}.rs")).collect(),
            search_id: id.into(),
        })
    };
    let open = |t: i64, project: &str, path: &str, id: &str| {
        RowData::Open(OpenRow {
            time_us: t,
            project: project.into(),
            user_id: "late-opener".into(),
            path: path.into(),
            rank: 1,
            search_id: id.into(),
        })
    };
    let data = vec![
        search(day + 5 * HOUR + 10 * MINUTE, "alpha", "fn main", 3, "late-1"),
        open(day + 5 * HOUR + 11 * MINUTE, "alpha", "src/file0.rs", "late-1"),
        search(day + 6 * HOUR + 59 * MINUTE, "beta", "impl Drop", 2, "late-2"),
        open(day + 7 * HOUR + MINUTE, "beta", "src/file1.rs", "late-2"),
        search(day + 9 * HOUR, "alpha", "nothing here", 0, "late-3"),
        open(day + 9 * HOUR + 2 * MINUTE, "beta", "src/file3.rs", "late-3"),
        open(start + 3 * HOUR + 5 * MINUTE, "alpha", "src/file2.rs", "late-1"),
        // Into a rolled-up hour of the window: an opened search.
        search(start + 5 * HOUR + 30 * MINUTE, "alpha", "struct Config", 1, "late-4"),
        open(start + 5 * HOUR + 31 * MINUTE, "alpha", "src/file0.rs", "late-4"),
        // Pairs with one side in the narrow range's partial first or last
        // hour (raw) and the other in a whole hour (rolled up).
        search(start + 20 * MINUTE, "beta", "impl Drop", 2, "late-5"),
        open(start + 4 * HOUR, "beta", "src/file1.rs", "late-5"),
        search(start + 2 * HOUR, "beta", "nothing here", 0, "late-6"),
        open(end - 40 * MINUTE, "beta", "src/file2.rs", "late-6"),
    ];
    data.into_iter()
        .enumerate()
        .map(|(k, d)| Row { id: EventId { boot_id: 7, seq: k as i64 + 1 }, data: d })
        .collect()
}

/// Routes whose ranges end mid-hour and reach back over the late day.
fn split_routes() -> Vec<String> {
    let (start, end) = window();
    let wide = format!(
        "from={}&to={}",
        format_rfc3339(late_day() - 2 * HOUR - 17 * MINUTE),
        format_rfc3339(end - 23 * MINUTE)
    );
    let narrow =
        format!("from={}&to={}", format_rfc3339(start + 17 * MINUTE), format_rfc3339(end - 23 * MINUTE));
    let mut routes = Vec::new();
    // Minute steps keep the ranges' ends off the hour (a range is aligned
    // to its step).
    for range in [&wide, &narrow] {
        routes.push(format!("/api/v1/analytics/usage?{range}&step=1h&limit=50"));
        routes.push(format!("/api/v1/analytics/usage?{range}&step=1d&limit=3&project=alpha"));
        routes.push(format!("/api/v1/analytics/top-queries?{range}&step=1m&limit=10"));
        routes.push(format!("/api/v1/analytics/top-queries?{range}&step=1m&zero_results=true"));
        routes.push(format!("/api/v1/analytics/top-queries?{range}&project=beta"));
        routes.push(format!("/api/v1/analytics/code-health?{range}&step=1m&page_size=50"));
        routes.push(format!("/api/v1/analytics/code-health?{range}&project=alpha&hot_spot_factor=1.1"));
        routes.push(format!("/api/v1/analytics/usage?{range}&step=1m&limit=5"));
    }
    routes
}

async fn answers(plugin: &AnalyticsPlugin) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for route in split_routes() {
        let (status, body) = get(plugin, &route).await;
        assert_eq!(status, 200, "{route}: {body}");
        out.push((route, body));
    }
    out
}

fn assert_same(label: &str, a: &[(String, Value)], b: &[(String, Value)]) {
    for ((route, x), (_, y)) in a.iter().zip(b) {
        let (x, y) = (comparable(x.clone()), comparable(y.clone()));
        if x != y {
            let dump = std::env::temp_dir().join("api-suite-split-diff.json");
            let both = json!({"label": label, "route": route, "got": x, "expected": y});
            std::fs::write(&dump, serde_json::to_string_pretty(&both).unwrap()).unwrap();
            panic!("{label}: {route} differs (both in {})", dump.display());
        }
    }
}

/// Marks the whole of every route's range dirty, so every answer comes
/// from raw events alone (the brute-force reference).
async fn all_dirty(plugin: &AnalyticsPlugin, backend: Backend) {
    let sql = if backend == Backend::Sqlite {
        "INSERT INTO rollup_dirty (from_time, to_time) VALUES (?1, ?2)"
    } else {
        "INSERT INTO rollup_dirty (from_time, to_time) VALUES (TIMESTAMPTZ 'epoch' + $1::bigint * INTERVAL '1 microsecond', \
         TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 microsecond')"
    };
    let binds = [
        context_analytics::storage::Value::Int(late_day() - 3 * DAY),
        context_analytics::storage::Value::Int(now_us() + DAY),
    ];
    plugin.shared().storage.query(sql, &binds).await.unwrap();
}

/// Usage, top-queries and code-health read whole hours and days from the
/// usage rollups and the rest from raw events: over ranges that end
/// mid-hour, before and after a rollup run, with late events before and
/// after the next one, they answer exactly what raw events alone give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_rollups_and_raw_edges_equal_raw_events_alone() {
    let _turn = SERIAL.lock().await;
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::Timescaledb] {
        let plugin = plugin_with_fixture(backend).await;
        roll_up(&plugin, backend).await;
        let rolled = answers(&plugin).await;
        assert!(rolled.iter().any(|(_, b)| b["range"]["source"] == "1d"), "{backend:?}: a day row was read");
        assert!(rolled.iter().any(|(_, b)| b["range"]["source"] == "1h"), "{backend:?}: hour rows were read");
        all_dirty(&plugin, backend).await;
        let raw = answers(&plugin).await;
        assert!(raw.iter().all(|(_, b)| b["range"]["source"] == "raw"), "{backend:?}");
        assert_same(&format!("{backend:?} rolled up"), &rolled, &raw);
        roll_up(&plugin, backend).await;

        let store = plugin.shared().storage.clone();
        store.write("inst-late", &RowBatch::from_rows(7, late_rows())).await.unwrap();
        let mixed = answers(&plugin).await;
        all_dirty(&plugin, backend).await;
        let reference = answers(&plugin).await;
        assert_same(&format!("{backend:?} late events, dirty hours raw"), &mixed, &reference);
        roll_up(&plugin, backend).await;
        let after = answers(&plugin).await;
        assert_same(&format!("{backend:?} late events rolled up"), &after, &reference);
        assert_ne!(comparable(after[2].1.clone()), comparable(rolled[2].1.clone()), "late events counted");

        // Brute force over the fixture and the late events: the wide range's
        // top queries (count, click-through) and active users.
        let top = &after[2].1;
        let (from, to) = (
            context_analytics::time::parse_rfc3339(top["range"]["from"].as_str().unwrap()).unwrap(),
            context_analytics::time::parse_rfc3339(top["range"]["to"].as_str().unwrap()).unwrap(),
        );
        assert_ne!(from % HOUR, 0, "the range starts mid-hour");
        let mut events: Vec<RowData> =
            fixture().rows.into_iter().flat_map(|(_, _, rows)| rows).map(|r| r.data).collect();
        events.extend(late_rows().into_iter().map(|r| r.data));
        let inside = |t: i64| t >= from && t < to;
        let searches: Vec<&SearchRow> = events
            .iter()
            .filter_map(|e| match e {
                RowData::Search(s) if inside(s.time_us) => Some(s),
                _ => None,
            })
            .collect();
        let opens: Vec<&OpenRow> = events
            .iter()
            .filter_map(|e| match e {
                RowData::Open(o) if inside(o.time_us) => Some(o),
                _ => None,
            })
            .collect();
        for entry in top["queries"].as_array().unwrap() {
            let q = entry["query"].as_str().unwrap();
            let mine: Vec<&&SearchRow> = searches.iter().filter(|s| s.query.as_deref() == Some(q)).collect();
            let clicks = opens.iter().filter(|o| mine.iter().any(|s| s.search_id == o.search_id)).count();
            assert_eq!(entry["count"], mine.len(), "{backend:?} {q}");
            let rate = entry["click_through_rate"].as_f64().unwrap();
            assert!(
                (rate - clicks as f64 / mine.len() as f64).abs() < 1e-6,
                "{backend:?} {q}: {rate} vs {clicks}"
            );
        }
        // Active users over the usage route's own (minute-aligned) range.
        let usage = &after[7].1;
        assert_eq!(usage["range"], top["range"], "same range");
        let users: std::collections::BTreeSet<&str> = searches
            .iter()
            .map(|s| s.user_id.as_str())
            .chain(opens.iter().map(|o| o.user_id.as_str()))
            .collect();
        assert_eq!(usage["active_users"], users.len(), "{backend:?}");

        plugin.shared().storage.close().await;
        let _ = tokio::task::spawn_blocking(move || drop(plugin)).await;
    }
}

/// `COUNT`-like single number of `sql` with times `binds` (Unix µs), whose
/// parameters are spelled `{1}`, `{2}`... in `sql`.
async fn number(plugin: &AnalyticsPlugin, backend: Backend, sql: &str, times: &[i64]) -> i64 {
    let mut text = sql.to_owned();
    for n in 1..=times.len() {
        let param = if backend == Backend::Sqlite {
            format!("?{n}")
        } else {
            format!("(TIMESTAMPTZ 'epoch' + ${n}::bigint * INTERVAL '1 microsecond')")
        };
        text = text.replace(&format!("{{{n}}}"), &param);
    }
    let binds: Vec<_> = times.iter().map(|t| context_analytics::storage::Value::Int(*t)).collect();
    let rows = plugin.shared().storage.query(&text, &binds).await.unwrap();
    rows[0][0].as_i64()
}

/// Maintenance rolls the usage rollups up for complete hours only: writes
/// in the current hour stay pending in `usage_dirty` (answered from raw
/// events, exactly), a run with nothing new recomputes nothing, and once
/// the hour has ended the next run materializes it and empties
/// `usage_dirty`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_rollups_wait_for_the_current_hour_and_answers_stay_exact() {
    const MINUTE: i64 = 60_000_000;
    let _turn = SERIAL.lock().await;
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::Timescaledb] {
        let plugin = plugin_for(backend).await;
        let store = plugin.shared().storage.clone();
        let now = now_us();
        let hour = now.div_euclid(HOUR) * HOUR;
        let t = hour + (now - hour) / 2;
        let search = |t: i64, id: &str, query: &str| {
            RowData::Search(SearchRow {
                time_us: t,
                project: "alpha".into(),
                user_id: "current-user".into(),
                query: Some(query.into()),
                kind: "literal",
                cache: "miss",
                status: "ok",
                error_code: None,
                latency_ms: 2.5,
                latency_bucket: latency::bucket_of_ns(2_500_000),
                result_count: 1,
                top_results: ["src/current.rs"].into_iter().collect(),
                search_id: id.into(),
            })
        };
        let open = |t: i64, id: &str| {
            RowData::Open(OpenRow {
                time_us: t,
                project: "alpha".into(),
                user_id: "current-user".into(),
                path: "src/current.rs".into(),
                rank: 1,
                search_id: id.into(),
            })
        };
        // A search and its open in the current hour, and a search of the
        // previous hour opened in the current one.
        let data = vec![
            search(hour - 10 * MINUTE, "cur-0", "fn main"),
            search(t, "cur-1", "current query"),
            open(t + 1, "cur-1"),
            open(t + 2, "cur-0"),
        ];
        let rows: Vec<Row> = data
            .into_iter()
            .enumerate()
            .map(|(k, d)| Row { id: EventId { boot_id: 8, seq: k as i64 + 1 }, data: d })
            .collect();
        store.write("inst-current", &RowBatch::from_rows(8, rows)).await.unwrap();

        let first = store.maintain(now).await.unwrap();
        assert!(first.ran && first.rollup_ranges >= 1, "{backend:?}: {first:?}");
        let in_hour = "SELECT CAST(count(*) AS BIGINT) FROM user_rollup_1h WHERE bucket >= {1}";
        assert_eq!(
            number(&plugin, backend, in_hour, &[hour]).await,
            0,
            "{backend:?}: current hour not rolled up"
        );
        let previous = "SELECT CAST(sum(searches) AS BIGINT) FROM user_rollup_1h WHERE bucket = {1} AND user_id = 'current-user'";
        assert_eq!(
            number(&plugin, backend, previous, &[hour - HOUR]).await,
            1,
            "{backend:?}: previous hour rolled up"
        );
        let dirty = "SELECT CAST(count(*) AS BIGINT) FROM rollup_dirty";
        let pending = "SELECT CAST(count(*) AS BIGINT) FROM usage_dirty";
        assert_eq!(number(&plugin, backend, dirty, &[]).await, 0, "{backend:?}");
        assert!(
            number(&plugin, backend, pending, &[]).await >= 1,
            "{backend:?}: the current hour is pending"
        );

        // A second run with nothing new recomputes nothing: a minute row of
        // the current hour, altered, stays as it is.
        let minute = t.div_euclid(MINUTE) * MINUTE;
        let bump = if backend == Backend::Timescaledb {
            None
        } else {
            let p = if backend == Backend::Sqlite {
                "?1".to_owned()
            } else {
                "(TIMESTAMPTZ 'epoch' + $1::bigint * INTERVAL '1 microsecond')".to_owned()
            };
            let bump = format!("UPDATE search_rollup_1m SET searches = searches + 1000 WHERE bucket = {p}");
            store.query(&bump, &[context_analytics::storage::Value::Int(minute)]).await.unwrap();
            Some(format!("UPDATE search_rollup_1m SET searches = searches - 1000 WHERE bucket = {p}"))
        };
        let second = store.maintain(now + 1).await.unwrap();
        assert_eq!((second.rollup_ranges, second.usage_ranges), (0, 0), "{backend:?}: {second:?}");
        assert!(number(&plugin, backend, pending, &[]).await >= 1, "{backend:?}: still pending");
        if let Some(unbump) = bump {
            let minute_sum = "SELECT CAST(sum(searches) AS BIGINT) FROM search_rollup_1m WHERE bucket = {1}";
            assert!(
                number(&plugin, backend, minute_sum, &[minute]).await >= 1001,
                "{backend:?}: the minute rollup was not recomputed"
            );
            store.query(&unbump, &[context_analytics::storage::Value::Int(minute)]).await.unwrap();
        }

        // Answers over ranges holding the pending hour, from raw events.
        let (start, _) = window();
        let mut routes = Vec::new();
        for range in [
            format!("from={}&to={}", format_rfc3339(start + 17 * MINUTE), format_rfc3339(hour + HOUR)),
            format!("from={}&to={}", format_rfc3339(hour - 3 * HOUR), format_rfc3339(hour + HOUR)),
        ] {
            routes.push(format!("/api/v1/analytics/usage?{range}&step=1h&limit=50"));
            routes.push(format!("/api/v1/analytics/top-queries?{range}&limit=50"));
            routes.push(format!("/api/v1/analytics/code-health?{range}&page_size=50"));
        }
        let answer = || async {
            let mut out = Vec::new();
            for route in &routes {
                let (status, body) = get(&plugin, route).await;
                assert_eq!(status, 200, "{route}: {body}");
                out.push((route.clone(), body));
            }
            out
        };
        let while_pending = answer().await;
        let top = &while_pending[1].1["queries"];
        assert!(
            top.as_array().unwrap().iter().any(|q| q["query"] == "current query"),
            "{backend:?}: the pending hour's search is counted: {top}"
        );

        // Once the hour has ended, it is rolled up and nothing is pending.
        let third = store.maintain(hour + HOUR).await.unwrap();
        assert_eq!((third.rollup_ranges, third.usage_ranges), (0, 1), "{backend:?}: {third:?}");
        assert_eq!(number(&plugin, backend, pending, &[]).await, 0, "{backend:?}: usage_dirty emptied");
        let current = "SELECT CAST(sum(searches) AS BIGINT) FROM user_rollup_1h WHERE bucket = {1}";
        assert_eq!(
            number(&plugin, backend, current, &[hour]).await,
            1,
            "{backend:?}: current hour rolled up"
        );
        let rolled = answer().await;
        assert!(
            rolled.iter().any(|(_, b)| b["range"]["source"] != "raw"),
            "{backend:?}: rollup rows were read"
        );

        all_dirty(&plugin, backend).await;
        let reference = answer().await;
        assert_same(&format!("{backend:?} current hour pending"), &while_pending, &reference);
        assert_same(&format!("{backend:?} current hour rolled up"), &rolled, &reference);

        plugin.shared().storage.close().await;
        let _ = tokio::task::spawn_blocking(move || drop(plugin)).await;
    }
}

/// Index events and snapshots written after a rollup run: into a rolled-up
/// hour of the window and on the late day.
fn late_index_rows() -> Vec<Row> {
    let (start, _) = window();
    let index = |t: i64, project: &str, outcome: &'static str| {
        RowData::Index(IndexRow {
            time_us: t,
            project: project.into(),
            path: "src/late.rs".into(),
            file_type: "rs".into(),
            bytes: 4096,
            duration_ms: 3.5,
            outcome,
            error_code: None,
            queue_depth: 2,
        })
    };
    let snapshot = |t: i64, project: &str, total: i64| {
        RowData::Snapshot(SnapshotRow {
            time_us: t,
            project: project.into(),
            total_files: total,
            indexed_files: total - 1,
            vector_store_bytes: 123_456,
            embedding_cache_bytes: 100,
            duplication_ratio: Some(0.2),
        })
    };
    let data = vec![
        index(start + 6 * HOUR + 7 * MINUTE, "alpha", "ok"),
        index(start + 6 * HOUR + 8 * MINUTE, "beta", "error"),
        index(late_day() + 4 * HOUR, "alpha", "ok"),
        snapshot(start + 7 * HOUR + 3 * MINUTE, "alpha", 40),
        snapshot(late_day() + 4 * HOUR + 1, "beta", 25),
    ];
    data.into_iter()
        .enumerate()
        .map(|(k, d)| Row { id: EventId { boot_id: 9, seq: k as i64 + 1 }, data: d })
        .collect()
}

/// Every route of every dataset, over ranges reaching back over the late
/// day and over the window alone, at steps that read each source (raw,
/// minute, hour and day rollups).
fn realtime_routes() -> Vec<String> {
    let (start, end) = window();
    let wide = format!("from={}&to={}", format_rfc3339(late_day() - 2 * HOUR), format_rfc3339(end));
    let narrow = format!("from={}&to={}", format_rfc3339(start), format_rfc3339(end));
    let mut routes = split_routes();
    for (range, steps) in [(&wide, &["15m", "1h", "1d"][..]), (&narrow, &["1m", "15m", "1h"][..])] {
        for step in steps {
            for agg in ["count", "p95", "avg"] {
                routes.push(format!(
                    "/api/v1/analytics/search-performance?{range}&step={step}&aggregation={agg}"
                ));
            }
            routes.push(format!("/api/v1/analytics/search-performance?{range}&step={step}&project=alpha"));
            routes.push(format!("/api/v1/analytics/cache-performance?{range}&step={step}"));
            routes.push(format!("/api/v1/analytics/index-performance?{range}&step={step}"));
            routes.push(format!("/api/v1/analytics/index-performance?{range}&step={step}&project=beta"));
        }
        routes.push(format!("/api/v1/analytics/code-health?{range}&page_size=50"));
    }
    routes
}

async fn realtime_answers(plugin: &AnalyticsPlugin) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for route in realtime_routes() {
        let (status, body) = get(plugin, &route).await;
        assert_eq!(status, 200, "{route}: {body}");
        out.push((route, body));
    }
    out
}

/// Real-time reads: events written after a rollup run, into buckets the
/// rollups (continuous aggregates on TimescaleDB) already hold, are in
/// every route's answer at once, before any maintenance run; the answers
/// equal raw events alone (everything marked dirty), and stay equal after
/// the next maintenance run alone (on TimescaleDB it refreshes the
/// aggregates over what was written: no manual refresh here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_includes_events_written_since_the_last_rollup_run() {
    let _turn = SERIAL.lock().await;
    let mut per_backend: Vec<Vec<(String, Value)>> = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::Timescaledb] {
        let plugin = plugin_with_fixture(backend).await;
        roll_up(&plugin, backend).await;
        let before = realtime_answers(&plugin).await;

        let store = plugin.shared().storage.clone();
        store.write("inst-late", &RowBatch::from_rows(7, late_rows())).await.unwrap();
        store.write("inst-late", &RowBatch::from_rows(9, late_index_rows())).await.unwrap();
        let live = realtime_answers(&plugin).await;
        let report = store.maintain(now_us()).await.unwrap();
        assert!(report.ran, "{backend:?}");
        if backend == Backend::Timescaledb {
            assert!(report.aggregate_refreshes > 0, "{report:?}");
            // Every mark taken in: the answers below come from the
            // refreshed aggregates, not from raw events.
            let pending = "SELECT CAST(count(*) AS BIGINT) FROM cagg_refresh_pending";
            assert_eq!(number(&plugin, backend, pending, &[]).await, 0);
        }
        let dirty = "SELECT CAST(count(*) AS BIGINT) FROM rollup_dirty";
        assert_eq!(number(&plugin, backend, dirty, &[]).await, 0, "{backend:?}");
        let maintained = realtime_answers(&plugin).await;
        all_dirty(&plugin, backend).await;
        let reference = realtime_answers(&plugin).await;
        assert_same(&format!("{backend:?} written since the last run"), &live, &reference);
        assert_same(&format!("{backend:?} after the next run"), &maintained, &reference);

        // The late events are counted: brute force over the fixture and
        // them for the wide range's daily searches and indexed files.
        let find = |answers: &[(String, Value)], prefix: &str| {
            answers
                .iter()
                .find(|(r, _)| r.starts_with(prefix) && r.contains(&format_rfc3339(late_day() - 2 * HOUR)))
                .map(|(_, b)| b.clone())
                .unwrap()
        };
        let searches = "/api/v1/analytics/search-performance?";
        let daily = find(&live, &format!("{searches}from={}", format_rfc3339(late_day() - 2 * HOUR)));
        let mut events: Vec<RowData> =
            fixture().rows.into_iter().flat_map(|(_, _, rows)| rows).map(|r| r.data).collect();
        events.extend(late_rows().into_iter().chain(late_index_rows()).map(|r| r.data));
        let (from, to) = (
            context_analytics::time::parse_rfc3339(daily["range"]["from"].as_str().unwrap()).unwrap(),
            context_analytics::time::parse_rfc3339(daily["range"]["to"].as_str().unwrap()).unwrap(),
        );
        let inside = |t: i64| t >= from && t < to;
        let search_count =
            events.iter().filter(|e| matches!(e, RowData::Search(s) if inside(s.time_us))).count();
        assert_eq!(daily["summary"]["requests"], search_count, "{backend:?}");
        let before_daily =
            find(&before, &format!("{searches}from={}", format_rfc3339(late_day() - 2 * HOUR)));
        assert_eq!(
            before_daily["summary"]["requests"].as_u64().unwrap() + 6,
            search_count as u64,
            "{backend:?}: the six late searches are the difference"
        );
        let index = find(&live, "/api/v1/analytics/index-performance?");
        let index_count =
            events.iter().filter(|e| matches!(e, RowData::Index(i) if inside(i.time_us))).count();
        assert_eq!(index["summary"]["files"], index_count, "{backend:?}: {}", index["summary"]);
        per_backend.push(live);

        plugin.shared().storage.close().await;
        let _ = tokio::task::spawn_blocking(move || drop(plugin)).await;
    }
    assert_same("SQLite and PostgreSQL", &per_backend[0], &per_backend[1]);
    assert_same("SQLite and TimescaleDB", &per_backend[0], &per_backend[2]);
}
