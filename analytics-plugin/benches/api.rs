//! Analytics route latency over a large history: N search events spread
//! over 30 days (3 projects, 2 instances), rolled up, then
//! `search-performance?timerange=30d&aggregation=p95` timed, and a 7-day
//! export of one project measured in rows per second.
//!
//! ```text
//! cargo bench -p context-analytics --bench api -- --url sqlite:///tmp/api-bench.db --events 1000000
//! cargo bench -p context-analytics --bench api -- --url postgres://postgres@127.0.0.1:55433/analytics --events 1000000
//! cargo bench -p context-analytics --bench api -- --url postgres://postgres@127.0.0.1:55434/postgres --timescale --events 1000000
//! ```
//! `--timescale`: the TimescaleDB test server (one connection; its tables
//! are emptied first; continuous aggregates refreshed instead of the
//! maintenance pass). `--reuse`: read the database an earlier run with the
//! same `--events` left behind (no load; the rollups only catch up).

use std::time::{Duration, Instant};

use abi_stable::std_types::{RStr, RString};
use axum::{body::Body, http::Request};
use context_analytics::{
    AnalyticsPlugin,
    storage::{
        latency,
        rows::{EventId, Row, RowBatch, RowData, SearchRow},
    },
};
use http_body_util::BodyExt;
use plugin_api::{HostContext, HostServices, LogLevel};
use tower::ServiceExt;

extern "C" fn log(level: LogLevel, _target: RStr<'_>, message: RStr<'_>) {
    if level <= LogLevel::Warn {
        eprintln!("plugin: {message}");
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let url =
        arg("--url").unwrap_or_else(|| format!("sqlite://{}/api-bench.db", std::env::temp_dir().display()));
    let events: i64 = arg("--events").map_or(1_000_000, |v| v.parse().unwrap());
    let runs: usize = arg("--runs").map_or(15, |v| v.parse().unwrap());
    let timescale = std::env::args().any(|a| a == "--timescale");
    // `--reuse`: keep the database an earlier run with the same --events
    // loaded and rolled up, and time only the reads.
    let reuse = std::env::args().any(|a| a == "--reuse");
    if let Some(path) = url.strip_prefix("sqlite://").filter(|_| !reuse) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    let dir = std::env::temp_dir().join(format!("api-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let host = HostContext {
        plugin_name: RString::from("analytics"),
        host_name: RString::from("api-bench"),
        host_version: RString::from("0"),
        instance_id: RString::from("api-bench"),
        data_dir: RString::from(dir.to_string_lossy().as_ref()),
        services: HostServices::leak(log),
    };
    let backend =
        if timescale { "timescaledb = \"on\"\nmax_connections = 1" } else { "timescaledb = \"off\"" };
    let config = format!(
        "[storage]\nurl = \"{url}\"\n{backend}\nmaintenance_interval_secs = 86400\n\
         [retention]\nraw_days = 32\nminute_days = 32"
    );
    let plugin = AnalyticsPlugin::new(host, &config).expect("plugin starts");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !plugin.shared().pipeline.storage_health.lock().ready {
        assert!(Instant::now() < deadline, "storage did not connect");
        std::thread::sleep(Duration::from_millis(20));
    }
    let store = plugin.shared().storage.clone();
    if timescale && !reuse {
        runtime.block_on(async {
            for table in
                ["search_events", "index_events", "open_events", "project_snapshots", "ingest_progress"]
            {
                store.query_strings(&format!("DELETE FROM {table} RETURNING 1")).await.unwrap();
            }
        });
    }
    let end = now_us();
    let span = 30 * 86_400_000_000i64;
    let started = Instant::now();
    runtime.block_on(async {
        if reuse {
            return;
        }
        let batch = 20_000i64;
        for (n, instance) in ["bench-a", "bench-b"].iter().enumerate() {
            let per_instance = events / 2;
            let mut seq = 0i64;
            while seq < per_instance {
                let rows: Vec<Row> = (seq..(seq + batch).min(per_instance))
                    .map(|i| {
                        let latency_ns = 300_000 + (i.wrapping_mul(2_654_435_761) % 40_000_000) as u64;
                        Row {
                            id: EventId { boot_id: n as i64 + 1, seq: i + 1 },
                            data: RowData::Search(SearchRow {
                                time_us: end - span + i * (span / per_instance) + n as i64,
                                project: ["alpha", "beta", "gamma"][(i % 3) as usize].into(),
                                user_id: format!("user{}", i % 500),
                                query: Some(format!("query {}", i % 2000)),
                                kind: if i % 7 == 0 { "regex" } else { "literal" },
                                cache: ["l1", "l2", "l3", "miss"][(i % 4) as usize],
                                status: if i % 100 == 0 { "error" } else { "ok" },
                                error_code: None,
                                latency_ms: latency_ns as f64 / 1e6,
                                latency_bucket: latency::bucket_of_ns(latency_ns),
                                result_count: (i % 30) as i32,
                                top_results: ["src/a.rs", "src/b.rs", "src/c.rs"].into_iter().collect(),
                                search_id: format!("{instance}-{i}"),
                            }),
                        }
                    })
                    .collect();
                seq += rows.len() as i64;
                store.write(instance, &RowBatch::from_rows(n as i64 + 1, rows)).await.unwrap();
            }
        }
    });
    let loaded = started.elapsed();
    let rolled = Instant::now();
    if timescale {
        runtime.block_on(async {
            for view in ["search_rollup", "search_latency", "index_rollup", "open_rollup", "snapshot_rollup"]
            {
                for level in ["1h", "1d"] {
                    let call = format!("CALL refresh_continuous_aggregate('{view}_{level}', NULL, NULL)");
                    store.query_strings(&call).await.unwrap();
                }
            }
        });
    } else {
        // The plugin's own maintenance task may hold the lock (it starts
        // with the plugin): wait for a pass of our own.
        while !runtime.block_on(store.maintain(now_us())).unwrap().ran {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    println!(
        "loaded {events} events over 30 days in {:.1} s, rolled up in {:.1} s ({})",
        loaded.as_secs_f64(),
        rolled.elapsed().as_secs_f64(),
        plugin.shared().pipeline.storage_health.lock().backend
    );

    let router = plugin.router();
    let call = |path: String| {
        let router = router.clone();
        runtime.block_on(async move {
            let t = Instant::now();
            let response = router.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (t.elapsed(), body)
        })
    };
    let route = "/api/v1/analytics/search-performance?timerange=30d&aggregation=p95".to_owned();
    let (_, body) = call(route.clone());
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["summary"]["requests"].as_i64().unwrap(), events, "every event counted");
    let times: Vec<f64> = (0..runs).map(|_| call(route.clone()).0.as_secs_f64() * 1e3).collect();
    println!(
        "search-performance 30d p95: median {:.1} ms over {runs} runs (min {:.1}, max {:.1})",
        median(times.clone()),
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max)
    );

    let export =
        "/api/v1/analytics/export?dataset=raw-searches&format=csv&timerange=7d&project=alpha".to_owned();
    // Median of 5 exports (the machine is shared and noisy).
    let mut timed: Vec<(f64, usize, usize)> = (0..5)
        .map(|_| {
            let (elapsed, body) = call(export.clone());
            (elapsed.as_secs_f64(), body.iter().filter(|b| **b == b'\n').count() - 1, body.len())
        })
        .collect();
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (seconds, rows, bytes) = timed[timed.len() / 2];
    println!(
        "export 7d of one project: {rows} rows, {:.1} MB; median of 5: {seconds:.2} s = {:.0} rows/s (min {:.2} s, max {:.2} s)",
        bytes as f64 / 1e6,
        rows as f64 / seconds,
        timed[0].0,
        timed[timed.len() - 1].0
    );
    runtime.block_on(store.close());
    drop(plugin);
    let _ = std::fs::remove_dir_all(dir);
}
