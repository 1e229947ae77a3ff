//! `copy` into TimescaleDB (the test server `scripts/test-all.sh` starts,
//! `CONTEXT_TEST_TIMESCALE_URL`): raw events land in the hypertables, the
//! continuous aggregates are materialized over the whole copied history
//! (the refresh policy alone would only look back three days), and rollup
//! rows older than every raw event, which a continuous aggregate cannot
//! hold, are counted in the output rather than silently dropped.

use std::{process::Command, time::Duration};

use context_analytics::storage::{
    self, InsertMethod, RetentionConfig, StorageConfig, TimescaleMode, Value, latency,
    rows::{EventId, Row, RowBatch, RowData, SearchRow},
};
use context_e2e::Scratch;

const HOUR: i64 = 3_600_000_000;

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn timescale_url() -> String {
    std::env::var("CONTEXT_TEST_TIMESCALE_URL").unwrap_or_else(|_| {
        panic!("CONTEXT_TEST_TIMESCALE_URL is not set: run through scripts/test-all.sh, which starts the databases")
    })
}

fn timescale_config(url: &str) -> StorageConfig {
    StorageConfig {
        url: url.to_owned(),
        timescaledb: TimescaleMode::On,
        max_connections: 1,
        insert_method: InsertMethod::Unnest,
        ..Default::default()
    }
}

/// Empties the shared test server's event and alert tables (other suites
/// leave theirs).
async fn reset(url: &str, dir: &std::path::Path) {
    let mut last = String::new();
    for _ in 0..50 {
        let store = storage::open(&timescale_config(url), &RetentionConfig::default(), dir).unwrap();
        let result = async {
            store.prepare().await?;
            let alerting =
                ["alert_rules", "alert_state", "alert_history", "alert_silences", "alert_deliveries"];
            for table in storage::DATA_TABLES.iter().chain(&alerting) {
                store.query_strings(&format!("DELETE FROM {table} RETURNING 1")).await?;
            }
            Ok::<_, storage::StorageError>(())
        }
        .await;
        store.close().await;
        match result {
            Ok(()) => return,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the TimescaleDB test server did not take a connection: {last}");
}

#[test]
fn copy_into_timescaledb_materializes_the_history() {
    let url = timescale_url();
    let scratch = Scratch::new("copy-timescale");
    let sqlite = format!("sqlite://{}", scratch.path().join("old.db").display());
    let start = (now_us() - 2 * HOUR) / HOUR * HOUR;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        reset(&url, scratch.path()).await;
        let config = StorageConfig { url: sqlite.clone(), ..Default::default() };
        let old = storage::open(&config, &RetentionConfig::default(), scratch.path()).unwrap();
        old.prepare().await.unwrap();
        // Six searches, one every 10 minutes, from two hours ago.
        let rows = (0..6).map(|i| Row {
            id: EventId { boot_id: 7, seq: i + 1 },
            data: RowData::Search(SearchRow {
                time_us: start + i * 600_000_000,
                project: "sample".into(),
                user_id: "alice".into(),
                query: Some("needle".into()),
                kind: "literal",
                cache: "miss",
                status: "ok",
                error_code: None,
                latency_ms: 2.0,
                latency_bucket: latency::bucket_of_ns(2_000_000),
                result_count: 1,
                top_results: ["src/a.rs"].into_iter().collect(),
                search_id: format!("s{i}"),
            }),
        });
        old.write("old-server", &RowBatch::from_rows(7, rows)).await.unwrap();
        old.maintain(now_us()).await.unwrap();
        // An hourly rollup row from 30 days ago, past raw retention.
        old.query(
            "INSERT INTO search_rollup_1h (bucket, instance_id, project, kind, status, cache, searches, \
             zero_results, results_sum, latency_ms_sum, latency_ms_min, latency_ms_max) \
             VALUES (?1, 'old-server', 'sample', 'literal', 'ok', 'miss', 40, 0, 40, 80.0, 2.0, 2.0)",
            &[Value::Int(start - 30 * 24 * HOUR)],
        )
        .await
        .unwrap();
        old.close().await;
    });

    // The server takes one connection; right after ours closed, a new one
    // can be refused for a moment.
    let mut attempt = 0;
    let (stdout, stderr) = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_context-analytics-admin"))
            .args(["copy", "--from", &sqlite, "--to", &url, "--timescaledb", "on"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            break (stdout, stderr);
        }
        attempt += 1;
        assert!(attempt < 20 && stderr.contains("cannot prepare"), "copy failed:\n{stderr}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(stderr.contains("(timescaledb)"), "{stderr}");
    assert!(stdout.starts_with("copied 6 events"), "{stdout}");
    assert!(stderr.contains("continuous aggregates refreshed from the copied events"), "{stderr}");
    assert!(
        stderr.contains(
            "note: 1 rows of search_rollup_1h predate the oldest raw event and are not carried over"
        ),
        "{stderr}"
    );

    runtime.block_on(async {
        let mut store = None;
        for _ in 0..50 {
            let s =
                storage::open(&timescale_config(&url), &RetentionConfig::default(), scratch.path()).unwrap();
            if s.prepare().await.is_ok() {
                store = Some(s);
                break;
            }
            s.close().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let store = store.expect("a connection to the TimescaleDB test server");
        let one = |sql: &'static str| {
            let store = store.clone();
            async move { store.query_strings(sql).await.unwrap().join(",") }
        };
        assert_eq!(one("SELECT count(*) FROM search_events").await, "6");
        assert_eq!(
            one("SELECT instance_id || ':' || CAST(boot_id AS TEXT) FROM ingest_progress").await,
            "old-server:7"
        );
        // Materialized, not only computed on the fly: the continuous
        // aggregate's own hypertable holds the two hours.
        let materialized = one(
            "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) \
             FROM timescaledb_information.continuous_aggregates WHERE view_name = 'search_rollup_1h'",
        )
        .await;
        let rows = store
            .query_strings(&format!("SELECT CAST(sum(searches) AS BIGINT) FROM {materialized}"))
            .await
            .unwrap();
        assert_eq!(rows, vec!["6".to_owned()], "{materialized}");
        store.close().await;
    });
}
