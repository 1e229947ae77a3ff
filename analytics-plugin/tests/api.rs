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
        for table in ["search_events", "index_events", "open_events", "project_snapshots", "ingest_progress"]
        {
            store.query_strings(&format!("DELETE FROM {table} RETURNING 1")).await.unwrap();
        }
    }
    for (instance, boot, rows) in fixture().rows {
        for chunk in rows.chunks(500) {
            store.write(&instance, &RowBatch::from_rows(boot, chunk.to_vec())).await.unwrap();
        }
    }
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
    } else {
        store.maintain(now_us()).await.unwrap();
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
