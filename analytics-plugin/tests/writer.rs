//! The writer against a real SQLite database: spooled rows that were
//! already committed before a crash are skipped on replay, so every event is
//! stored exactly once.

use std::sync::Arc;

use abi_stable::std_types::{RStr, RString};
use context_analytics::{
    collector::Collector,
    config::AnalyticsConfig,
    pipeline::{
        spool::Spool,
        writer::{StorageHealth, Writer},
    },
    storage::{
        self, Backend, RetentionConfig, StorageConfig, latency,
        rows::{EventId, Row, RowBatch, RowData, SearchRow},
    },
};
use parking_lot::Mutex;
use plugin_api::{HostContext, HostServices, LogLevel};

extern "C" fn log(_level: LogLevel, _target: RStr<'_>, _message: RStr<'_>) {}

fn logger() -> plugin_api::HostLogger {
    HostContext {
        plugin_name: RString::from("analytics"),
        host_name: RString::from("t"),
        host_version: RString::from("0"),
        instance_id: RString::from("i"),
        data_dir: RString::from("/tmp"),
        services: HostServices::leak(log),
    }
    .logger("analytics")
}

fn rows(boot_id: i64, seqs: std::ops::RangeInclusive<i64>) -> Vec<Row> {
    seqs.map(|seq| Row {
        id: EventId { boot_id, seq },
        data: RowData::Search(SearchRow {
            time_us: 1_700_000_000_000_000 + seq,
            project: "p".into(),
            user_id: "u".into(),
            query: Some("q".into()),
            kind: "literal",
            cache: "miss",
            status: "ok",
            error_code: None,
            latency_ms: 1.0,
            latency_bucket: latency::bucket_of_ns(1_000_000),
            result_count: 1,
            top_results: ["a.rs"].into_iter().collect(),
            search_id: format!("s{seq}"),
        }),
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_skips_rows_committed_before_a_crash() {
    let dir = std::env::temp_dir().join(format!("writer-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = StorageConfig { url: format!("sqlite://{}/a.db", dir.display()), ..Default::default() };
    let store = storage::open(&config, &RetentionConfig::default(), &dir).unwrap();
    store.prepare().await.unwrap();
    // Rows 1..=100 were committed; the crash came before their spool
    // segment was deleted, and rows 101..=150 were only spooled.
    store.write("inst", &RowBatch::from_rows(7, rows(7, 1..=100))).await.unwrap();
    let mut spool = Spool::open(&dir.join("spool"), "inst", 1 << 30, 1 << 20).unwrap();
    spool.append(&rows(7, 1..=150)).unwrap();
    drop(spool);

    let spool = Spool::open(&dir.join("spool"), "inst", 1 << 30, 1 << 20).unwrap();
    let collector = Arc::new(Collector::new(&AnalyticsConfig::default()).unwrap());
    let health = Arc::new(Mutex::new(StorageHealth::new(Backend::Sqlite, "test".into())));
    let mut writer = Writer::new(
        store.clone(),
        spool,
        "inst".into(),
        collector.clone(),
        health.clone(),
        logger(),
        std::time::Duration::from_secs(5),
        64,
        8,
    );
    assert!(writer.wait_connected(std::time::Duration::from_secs(5)).await);
    while writer.replay_some().await > 0 {}
    assert!(writer.spool_is_empty());
    let stored = store
        .query_strings("SELECT count(*) || ':' || count(DISTINCT seq) || ':' || max(seq) FROM search_events")
        .await
        .unwrap();
    assert_eq!(stored, ["150:150:150"]);
    assert_eq!(store.last_seq("inst", 7).await.unwrap(), 150);
    assert_eq!(health.lock().events_replayed, 50);
    assert_eq!(collector.events_replayed.get(), 50);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16: after a crash the event queue replays its unreleased events
/// under their old boot; those committed before the crash are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_replay_of_an_earlier_boot_skips_rows_already_committed() {
    let dir = std::env::temp_dir().join(format!("writer-queue-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = StorageConfig { url: format!("sqlite://{}/a.db", dir.display()), ..Default::default() };
    let store = storage::open(&config, &RetentionConfig::default(), &dir).unwrap();
    store.prepare().await.unwrap();
    store.write("inst", &RowBatch::from_rows(7, rows(7, 1..=100))).await.unwrap();
    let spool = Spool::open(&dir.join("spool"), "inst", 1 << 30, 1 << 20).unwrap();
    let collector = Arc::new(Collector::new(&AnalyticsConfig::default()).unwrap());
    let health = Arc::new(Mutex::new(StorageHealth::new(Backend::Sqlite, "test".into())));
    let mut writer = Writer::new(
        store.clone(),
        spool,
        "inst".into(),
        collector.clone(),
        health.clone(),
        logger(),
        std::time::Duration::from_secs(5),
        64,
        8,
    );
    assert!(writer.wait_connected(std::time::Duration::from_secs(5)).await);
    // Boot 7's rows 61..=150 were still in the queue; then boot 8's own.
    writer.write_live(RowBatch::from_rows(7, rows(7, 61..=150)), false).await;
    writer.write_live(RowBatch::from_rows(8, rows(8, 1..=10)), false).await;
    let stored = store
        .query_strings(
            "SELECT boot_id || ':' || count(*) || ':' || count(DISTINCT seq) || ':' || max(seq) \
             FROM search_events GROUP BY boot_id ORDER BY boot_id",
        )
        .await
        .unwrap();
    assert_eq!(stored, ["7:150:150:150", "8:10:10:10"]);
    assert_eq!(health.lock().events_written, 60);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
