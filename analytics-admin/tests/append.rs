//! `copy --append` where both databases wrote the same minute: the source's
//! rollup rows for it conflict with the target's and are not copied, so the
//! command must recompute that minute (and its hour and day) from the merged
//! raw events. Events two hours old, so no server's own maintenance of the
//! current minute could hide a missing recompute.

use std::process::Command;

use context_analytics::storage::{
    self, RetentionConfig, Storage, StorageConfig, latency,
    rows::{EventId, Row, RowBatch, RowData, SearchRow},
};
use context_e2e::{Postgres, Scratch};

const MINUTE: i64 = 60_000_000;

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn searches(boot: i64, first_time: i64, n: i64) -> RowBatch {
    let rows = (0..n).map(|i| Row {
        id: EventId { boot_id: boot, seq: i + 1 },
        data: RowData::Search(SearchRow {
            time_us: first_time + i * 1_000_000,
            project: "sample".into(),
            user_id: format!("user{boot}"),
            query: Some("needle".into()),
            kind: "literal",
            cache: "miss",
            status: "ok",
            error_code: None,
            latency_ms: 1.5,
            latency_bucket: latency::bucket_of_ns(1_500_000),
            result_count: 2,
            top_results: ["src/a.rs", "src/b.rs"].into_iter().collect(),
            search_id: format!("s{boot}-{i}"),
        }),
    });
    RowBatch::from_rows(boot, rows)
}

async fn filled(url: &str, dir: &std::path::Path, batch: &RowBatch) -> std::sync::Arc<dyn Storage> {
    let config = StorageConfig { url: url.to_owned(), max_connections: 2, ..Default::default() };
    let store = storage::open(&config, &RetentionConfig::default(), dir).unwrap();
    store.prepare().await.unwrap();
    store.write("switched", batch).await.unwrap();
    let report = store.maintain(now_us()).await.unwrap();
    assert!(report.ran);
    store
}

#[test]
fn append_recomputes_the_buckets_both_databases_wrote() {
    let scratch = Scratch::new("append-minute");
    let pg = Postgres::start();
    // One minute two hours ago: 5 searches before the switch, 3 after.
    let minute = (now_us() - 2 * 3_600_000_000) / MINUTE * MINUTE;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sqlite_url = format!("sqlite://{}", scratch.path().join("old.db").display());
    runtime.block_on(async {
        let old = filled(&sqlite_url, scratch.path(), &searches(1, minute + 1_000_000, 5)).await;
        old.close().await;
        let new = filled(&pg.url, scratch.path(), &searches(2, minute + 30_000_000, 3)).await;
        new.close().await;
    });
    let sum = |table: &str| pg.psql(&format!("SELECT COALESCE(sum(searches), 0) FROM {table}"));
    assert_eq!(sum("search_rollup_1m"), "3", "the target's own minute before the merge");

    let out = Command::new(env!("CARGO_BIN_EXE_context-analytics-admin"))
        .args(["copy", "--append", "--from", &sqlite_url, "--to", &pg.url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("  search_rollup_1m: 0 rows"), "the conflicting row is not copied: {stderr}");
    assert!(stderr.contains("rollups rebuilt from the raw events"), "{stderr}");

    assert_eq!(pg.psql("SELECT count(*) FROM search_events"), "8");
    for table in ["search_rollup_1m", "search_rollup_1h", "search_rollup_1d", "search_latency_1h"] {
        assert_eq!(sum(table), "8", "{table} holds both sides of the minute");
    }
    assert_eq!(
        pg.psql("SELECT searches FROM search_histogram_1h WHERE all_projects = 1"),
        "8",
        "the hourly latency histogram too"
    );
}
