//! The plugin linked in-process (rlib): hooks drive exact metric values and
//! the routes answer through the same router the host reaches.

use abi_stable::std_types::{ROption, RSlice, RStr, RString};
use axum::{body::Body, http::Request};
use context_analytics::AnalyticsPlugin;
use http_body_util::BodyExt;
use plugin_api::{
    CacheOutcome, FileIndexed, FileOpened, HostContext, HostServices, IndexOutcome, LogLevel, Plugin,
    ProjectSnapshot, QueryKind, RequestRecord, SearchExecuted, SearchStatus,
};
use tower::ServiceExt;

extern "C" fn log(_level: LogLevel, _target: RStr<'_>, _message: RStr<'_>) {}

/// A data dir of its own per plugin instance, as every server has (its
/// event queue file is locked by the instance that opened it).
fn host() -> HostContext {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("in-process-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    HostContext {
        plugin_name: RString::from("analytics"),
        host_name: RString::from("test-host"),
        host_version: RString::from("9.9.9"),
        instance_id: RString::from("test-1"),
        data_dir: RString::from(dir.to_string_lossy().as_ref()),
        services: HostServices::leak(log),
    }
}

fn search<'a>(
    project: &'a str,
    user: &'a str,
    cache: CacheOutcome,
    status: SearchStatus,
    results: u64,
    top: &'a [RStr<'a>],
) -> SearchExecuted<'a> {
    SearchExecuted {
        search_id: RStr::from("s"),
        project: RStr::from(project),
        user: RStr::from(user),
        query: RStr::from("needle"),
        kind: QueryKind::Literal,
        cache,
        status,
        error_code: RStr::from(if status == SearchStatus::Ok { "" } else { "invalid_regex" }),
        latency_ns: 3_000_000,
        result_count: results,
        top_results: RSlice::from_slice(top),
        timestamp_us: now_us(),
    }
}

/// A fresh SQLite file per plugin instance.
fn storage() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("in-process-{}-{n}.db", std::process::id()));
    format!("[storage]\nurl = \"sqlite://{}\"", path.display())
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// The value of one sample line (`name{labels}`) in the exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn get(plugin: &AnalyticsPlugin, path: &str) -> (u16, String) {
    let response = plugin.router().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn hooks_drive_exact_metric_values() {
    let plugin = AnalyticsPlugin::new(host(), &format!("max_projects = 2\n{}", storage())).unwrap();
    let top = [RStr::from("src/a.rs"), RStr::from("src/b.rs")];
    plugin.on_search_executed(&search("alpha", "alice", CacheOutcome::Miss, SearchStatus::Ok, 2, &top));
    plugin.on_search_executed(&search("alpha", "bob", CacheOutcome::L1, SearchStatus::Ok, 2, &top));
    plugin.on_search_executed(&search("alpha", "bob", CacheOutcome::L2, SearchStatus::Ok, 0, &[]));
    plugin.on_search_executed(&search("alpha", "carol", CacheOutcome::Miss, SearchStatus::Error, 0, &[]));
    // Beyond max_projects = 2, projects fold into `other`.
    plugin.on_search_executed(&search("beta", "dave", CacheOutcome::Miss, SearchStatus::Ok, 1, &top[..1]));
    plugin.on_search_executed(&search("gamma", "erin", CacheOutcome::Miss, SearchStatus::Ok, 1, &top[..1]));
    plugin.on_search_executed(&search("delta", "erin", CacheOutcome::Miss, SearchStatus::Ok, 1, &top[..1]));
    for (path, outcome, code) in [
        ("src/a.rs", IndexOutcome::Indexed, ""),
        ("src/b.rs", IndexOutcome::Indexed, ""),
        ("src/c.rs", IndexOutcome::Indexed, ""),
        ("blob.bin", IndexOutcome::Skipped, "binary"),
    ] {
        plugin.on_file_indexed(&FileIndexed {
            project: RStr::from("alpha"),
            path: RStr::from(path),
            file_type: RStr::from(path.rsplit('.').next().unwrap()),
            bytes: 100,
            duration_ns: 50_000,
            outcome,
            error_code: RStr::from(code),
            queue_depth: 0,
            timestamp_us: now_us() - 1_000_000,
        });
    }
    plugin.on_file_opened(&FileOpened {
        project: RStr::from("alpha"),
        user: RStr::from("frank"),
        path: RStr::from("src/a.rs"),
        rank: 1,
        search_id: RStr::from("s"),
        timestamp_us: now_us(),
    });
    plugin.on_project_snapshot(&ProjectSnapshot {
        project: RStr::from("alpha"),
        total_files: 4,
        indexed_files: 3,
        vector_store_bytes: 1234,
        embedding_cache_bytes: 56,
        duplication_ratio: ROption::RSome(0.25),
        timestamp_us: now_us(),
    });
    plugin.after_request(&RequestRecord {
        method: RStr::from("GET"),
        route: RStr::from("/api/v1/search"),
        status: 200,
        duration_ns: 1_000_000,
        request_bytes: 0,
        response_bytes: 300,
    });
    // The pipeline worker drains the queue within a few milliseconds;
    // shutting it down drains it completely.
    plugin.shutdown().unwrap();

    let (status, text) = get(&plugin, "/metrics").await;
    assert_eq!(status, 200);
    let expect = [
        (r#"context_search_requests_total{kind="literal",project="alpha",status="ok"}"#, 3.0),
        (r#"context_search_requests_total{kind="literal",project="alpha",status="error"}"#, 1.0),
        (r#"context_search_requests_total{kind="literal",project="beta",status="ok"}"#, 1.0),
        (r#"context_search_requests_total{kind="literal",project="other",status="ok"}"#, 2.0),
        (r#"context_search_zero_results_total{project="alpha"}"#, 1.0),
        (r#"context_search_errors_total{code="invalid_regex",project="alpha"}"#, 1.0),
        (r#"context_search_cache_lookups_total{layer="l1",project="alpha",result="hit"}"#, 1.0),
        (r#"context_search_cache_lookups_total{layer="l1",project="alpha",result="miss"}"#, 3.0),
        (r#"context_search_cache_lookups_total{layer="l2",project="alpha",result="hit"}"#, 1.0),
        (r#"context_search_cache_lookups_total{layer="l2",project="alpha",result="miss"}"#, 2.0),
        (r#"context_search_cache_lookups_total{layer="l3",project="alpha",result="miss"}"#, 2.0),
        (r#"context_search_duration_seconds_count{kind="literal",project="alpha"}"#, 4.0),
        (r#"context_search_duration_seconds_bucket{kind="literal",project="alpha",le="0.0025"}"#, 0.0),
        (r#"context_search_duration_seconds_bucket{kind="literal",project="alpha",le="0.005"}"#, 4.0),
        (r#"context_index_files_total{file_type="rs",outcome="indexed",project="alpha"}"#, 3.0),
        (r#"context_index_files_total{file_type="bin",outcome="skipped",project="alpha"}"#, 1.0),
        (r#"context_index_errors_total{code="binary",project="alpha"}"#, 1.0),
        (r#"context_index_bytes_total{project="alpha"}"#, 400.0),
        (r#"context_file_opens_total{project="alpha"}"#, 1.0),
        (r#"context_active_users{window="5m"}"#, 6.0),
        (r#"context_project_files{project="alpha",state="total"}"#, 4.0),
        (r#"context_index_coverage_ratio{project="alpha"}"#, 0.75),
        (r#"context_duplication_ratio{project="alpha"}"#, 0.25),
        (r#"context_vector_store_bytes{project="alpha"}"#, 1234.0),
        // a.rs and b.rs were returned or opened; c.rs never was.
        (r#"context_dead_code_files{project="alpha"}"#, 1.0),
        (
            r#"context_http_request_duration_seconds_count{code="200",method="GET",route="/api/v1/search"}"#,
            1.0,
        ),
        (r#"context_analytics_events_received_total{kind="search"}"#, 7.0),
        (r#"context_analytics_events_received_total{kind="index"}"#, 4.0),
        (r#"context_analytics_events_dropped_total{reason="queue_full"}"#, 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series}");
    }
    assert!(text.contains("process_resident_memory_bytes"), "process metrics are exported");
    assert!(!text.contains("src/a.rs") && !text.contains("alice"), "no paths or users as labels");

    let (status, health) = get(&plugin, "/api/v1/analytics/health").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["instance_id"], "test-1");
    assert_eq!(health["events"]["received"]["search"], 7);
    assert_eq!(health["events"]["received"]["open"], 1);

    let (status, body) = get(&plugin, "/api/v1/analytics/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("no analytics route '/api/v1/analytics/nope'"), "{body}");
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    // The smallest queue file (64 KiB, about 680 of these searches): most
    // of a burst cannot be queued, and no hook waits.
    let plugin =
        AnalyticsPlugin::new(host(), &format!("[pipeline]\nqueue_capacity = 1\n{}", storage())).unwrap();
    let top = [RStr::from("x.rs")];
    for _ in 0..5_000 {
        plugin.on_search_executed(&search("p", "u", CacheOutcome::Miss, SearchStatus::Ok, 1, &top));
    }
    let c = &plugin.shared().collector;
    let dropped = c.events_dropped.with_label_values(&["queue_full"]).get();
    let received = c.events_received.with_label_values(&["search"]).get();
    assert_eq!(received, 5_000);
    assert!((4_000..5_000).contains(&dropped), "dropped {dropped}");
    plugin.shutdown().unwrap();
}

#[test]
fn bad_config_is_a_config_error_naming_the_key() {
    let Err(error) = AnalyticsPlugin::new(host(), "max_projcts = 3") else {
        panic!("unknown key accepted");
    };
    assert_eq!(error.kind, plugin_api::ErrorKind::Config);
    assert!(error.message.contains("unknown field `max_projcts`"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_settings_hash_users_and_drop_queries_before_storage() {
    // SAFETY: set before any thread of this test reads it; no other test
    // uses this variable.
    unsafe { std::env::set_var("CONTEXT_TEST_PRIVACY_SECRET", "a secret of more than sixteen bytes") };
    let config = format!(
        "{}\n[privacy]\nuser_ids = \"hashed\"\nqueries = \"none\"\nhash_secret_env = \"CONTEXT_TEST_PRIVACY_SECRET\"",
        storage()
    );
    let plugin = AnalyticsPlugin::new(host(), &config).unwrap();
    let top = [RStr::from("src/a.rs")];
    plugin.on_search_executed(&search("alpha", "alice", CacheOutcome::Miss, SearchStatus::Ok, 1, &top));
    plugin.on_search_executed(&search("alpha", "alice", CacheOutcome::L1, SearchStatus::Ok, 1, &top));
    plugin.on_search_executed(&search("alpha", "bob", CacheOutcome::Miss, SearchStatus::Ok, 1, &top));
    plugin.shutdown().unwrap();
    let store = &plugin.shared().storage;
    let users = store.query_strings("SELECT user_id FROM search_events ORDER BY seq").await.unwrap();
    assert_eq!(users.len(), 3);
    assert!(users.iter().all(|u| u.len() == 64 && u.chars().all(|c| c.is_ascii_hexdigit())), "{users:?}");
    assert_eq!(users[0], users[1], "the same user hashes the same");
    assert_ne!(users[0], users[2]);
    let queries =
        store.query_strings("SELECT count(*) FROM search_events WHERE query IS NULL").await.unwrap();
    assert_eq!(queries, ["3"], "no query text is stored");
    let raw = store
        .query_strings("SELECT count(*) FROM search_events WHERE user_id IN ('alice', 'bob')")
        .await
        .unwrap();
    assert_eq!(raw, ["0"]);
}

#[test]
fn hashing_without_a_secret_is_a_config_error_naming_the_variable() {
    let Err(error) = AnalyticsPlugin::new(
        host(),
        &format!(
            "{}\n[privacy]\nqueries = \"hashed\"\nhash_secret_env = \"CONTEXT_TEST_UNSET_SECRET\"",
            storage()
        ),
    ) else {
        panic!("hashing without a secret was accepted");
    };
    assert_eq!(error.kind, plugin_api::ErrorKind::Config);
    assert!(
        error.message.contains("environment variable 'CONTEXT_TEST_UNSET_SECRET' (privacy.hash_secret_env)"),
        "{}",
        error.message
    );
}
