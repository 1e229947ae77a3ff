//! One storage suite, run against SQLite, PostgreSQL and TimescaleDB.
//!
//! SQLite needs nothing. PostgreSQL and TimescaleDB are the real servers
//! that `scripts/test-all.sh` starts; their URLs come from
//! `CONTEXT_TEST_POSTGRES_URL` and `CONTEXT_TEST_TIMESCALE_URL`. A missing
//! URL fails the test: a storage suite that silently skips its databases
//! would prove nothing.

mod common;

use std::sync::Arc;

use context_analytics::storage::{
    Backend, Storage, latency,
    rows::{EventId, IndexRow, OpenRow, Row, RowBatch, RowData, SearchRow, SnapshotRow},
};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// A fresh database for one test (see `common::fresh`).
async fn fresh(backend: Backend, name: &str) -> Arc<dyn Storage> {
    common::fresh(backend, "storage", name, &context_analytics::storage::DATA_TABLES).await
}

fn search(
    time_us: i64,
    project: &str,
    user: &str,
    latency_ns: u64,
    results: i32,
    status: &'static str,
) -> RowData {
    RowData::Search(SearchRow {
        time_us,
        project: project.into(),
        user_id: user.into(),
        query: Some(format!("query {}", results % 7)),
        kind: "literal",
        cache: if results % 3 == 0 { "l1" } else { "miss" },
        status,
        error_code: (status != "ok").then(|| "invalid_regex".to_owned()),
        latency_ms: latency_ns as f64 / 1e6,
        latency_bucket: latency::bucket_of_ns(latency_ns),
        result_count: results,
        top_results: ["src/a.rs", "it's \"quoted\"\tand\\tabbed"].into_iter().collect(),
        search_id: format!("s-{time_us}"),
    })
}

/// Rows numbered from `first_seq` in the given boot.
fn numbered(boot_id: i64, first_seq: i64, data: Vec<RowData>) -> Vec<Row> {
    data.into_iter()
        .enumerate()
        .map(|(i, data)| Row { id: EventId { boot_id, seq: first_seq + i as i64 }, data })
        .collect()
}

/// The single number a query returns (sums are `numeric` on PostgreSQL:
/// read through text on every backend).
async fn count(store: &dyn Storage, sql: &str) -> i64 {
    let text = store.query_strings(&format!("SELECT CAST(({sql}) AS TEXT)")).await.unwrap();
    text[0].parse::<f64>().unwrap_or_else(|_| panic!("{sql} returned {text:?}")) as i64
}

/// Makes rollups current: the maintenance task on SQLite and PostgreSQL,
/// a refresh of the continuous aggregates on TimescaleDB.
async fn roll_up(store: &dyn Storage) {
    if store.backend() == Backend::Timescaledb {
        for view in ["search_rollup", "search_latency", "index_rollup", "open_rollup", "snapshot_rollup"] {
            for level in ["1h", "1d"] {
                store
                    .query_strings(&format!(
                        "CALL refresh_continuous_aggregate('{view}_{level}', NULL, NULL)"
                    ))
                    .await
                    .ok();
            }
        }
    } else {
        store.maintain(now_us()).await.unwrap();
    }
}

async fn round_trip(backend: Backend) {
    let store = fresh(backend, "round_trip").await;
    let t = now_us() - HOUR;
    let rows = numbered(
        1,
        1,
        vec![
            search(t, "alpha", "alice", 2_500_000, 3, "ok"),
            RowData::Index(IndexRow {
                time_us: t + 1,
                project: "alpha".into(),
                path: "src/a.rs".into(),
                file_type: "rs".into(),
                bytes: 1234,
                duration_ms: 0.75,
                outcome: "skipped",
                error_code: Some("binary".into()),
                queue_depth: 9,
            }),
            RowData::Open(OpenRow {
                time_us: t + 2,
                project: "alpha".into(),
                user_id: "bob".into(),
                path: "src/a.rs".into(),
                rank: 2,
                search_id: "s-1".into(),
            }),
            RowData::Snapshot(SnapshotRow {
                time_us: t + 3,
                project: "alpha".into(),
                total_files: 10,
                indexed_files: 8,
                vector_store_bytes: 4096,
                embedding_cache_bytes: 512,
                duplication_ratio: Some(0.125),
            }),
        ],
    );
    store.write("inst-1", &RowBatch::from_rows(1, rows)).await.unwrap();
    assert_eq!(store.last_seq("inst-1", 1).await.unwrap(), 4);
    assert_eq!(store.last_seq("inst-1", 2).await.unwrap(), 0);
    assert_eq!(store.last_seq("inst-2", 1).await.unwrap(), 0);

    let one = |sql: &str| {
        let store = store.clone();
        let sql = sql.to_owned();
        async move { store.query_strings(&sql).await.unwrap().join("|") }
    };
    assert_eq!(one("SELECT user_id || ',' || query || ',' || kind || ',' || cache || ',' || status || ',' || search_id || ',' || instance_id FROM search_events").await,
        format!("alice,query 3,literal,l1,ok,s-{t},inst-1"));
    assert_eq!(count(&*store, "SELECT latency_ms FROM search_events").await, 2);
    assert_eq!(one("SELECT CAST(latency_ms * 1000 AS INTEGER) FROM search_events").await, "2500");
    let top = if backend == Backend::Sqlite {
        // Stored as the paths' numbers; read back as the paths.
        let ids = one("SELECT top_results FROM search_events").await;
        assert!(
            ids.starts_with('[') && ids[1..ids.len() - 1].split(',').all(|n| n.parse::<i64>().is_ok()),
            "{ids}"
        );
        one(&format!("SELECT {} FROM search_events", context_analytics::storage::sqlite::TOP_RESULTS_JSON))
            .await
    } else {
        one("SELECT array_to_json(top_results)::text FROM search_events").await
    };
    assert_eq!(top, r#"["src/a.rs","it's \"quoted\"\tand\\tabbed"]"#);
    assert_eq!(one("SELECT path || ',' || file_type || ',' || bytes || ',' || outcome || ',' || error_code || ',' || queue_depth FROM index_events").await,
        "src/a.rs,rs,1234,skipped,binary,9");
    assert_eq!(
        one("SELECT user_id || ',' || path || ',' || rank || ',' || search_id FROM open_events").await,
        "bob,src/a.rs,2,s-1"
    );
    assert_eq!(one("SELECT total_files || ',' || indexed_files || ',' || vector_store_bytes || ',' || embedding_cache_bytes FROM project_snapshots").await,
        "10,8,4096,512");
    assert_eq!(one("SELECT CAST(duplication_ratio * 1000 AS INTEGER) FROM project_snapshots").await, "125");
    let time_matches = if backend == Backend::Sqlite {
        format!("SELECT count(*) FROM search_events WHERE time = {t}")
    } else {
        format!(
            "SELECT count(*) FROM search_events WHERE time = TIMESTAMPTZ 'epoch' + {t} * INTERVAL '1 microsecond'"
        )
    };
    assert_eq!(count(&*store, &time_matches).await, 1, "times keep microseconds");

    // Migrations are idempotent: preparing again changes nothing.
    store.prepare().await.unwrap();
    assert_eq!(count(&*store, "SELECT count(*) FROM search_events").await, 1);
    store.close().await;
}

/// Fixture: 3 projects, 2 instances, ~3 days of searches with a wide
/// latency spread, some errors and zero-result searches.
fn fixture(now: i64) -> Vec<(String, Vec<Row>)> {
    let mut per_instance = Vec::new();
    for (n, instance) in ["inst-a", "inst-b"].iter().enumerate() {
        let mut data = Vec::new();
        for i in 0..3_000i64 {
            let project = ["alpha", "beta", "gamma"][(i % 3) as usize];
            let time = now - 3 * DAY + i * 83_000_000 + n as i64 * 1_000;
            // Latencies from 50 µs to about 4 s, heavy-tailed.
            let latency_ns = 50_000 + ((i * 7_919 + n as i64 * 104_729) % 10_007).pow(2) as u64 * 40;
            let status = if i % 50 == 0 { "error" } else { "ok" };
            data.push(search(time, project, &format!("user{}", i % 17), latency_ns, (i % 13) as i32, status));
        }
        per_instance.push((instance.to_string(), numbered(100 + n as i64, 1, data)));
    }
    per_instance
}

async fn rollups_match_raw_and_percentiles_are_accurate(backend: Backend) {
    let store = fresh(backend, "rollups").await;
    let now = now_us();
    let fixture = fixture(now);
    for (instance, rows) in &fixture {
        for chunk in rows.chunks(700) {
            let boot = chunk[0].id.boot_id;
            store.write(instance, &RowBatch::from_rows(boot, chunk.to_vec())).await.unwrap();
        }
    }
    roll_up(&*store).await;
    for level in ["1h", "1d"] {
        let raw = store
            .query_strings("SELECT project || ':' || count(*) || ':' || sum(result_count) || ':' || sum(CASE WHEN status = 'ok' AND result_count = 0 THEN 1 ELSE 0 END) FROM search_events GROUP BY project ORDER BY project")
            .await
            .unwrap();
        let rolled = store
            .query_strings(&format!("SELECT project || ':' || sum(searches) || ':' || sum(results_sum) || ':' || sum(zero_results) FROM search_rollup_{level} GROUP BY project ORDER BY project"))
            .await
            .unwrap();
        assert_eq!(rolled, raw, "{backend:?} search_rollup_{level}");
        let hist = count(&*store, &format!("SELECT sum(searches) FROM search_latency_{level}")).await;
        assert_eq!(hist, 6_000, "{backend:?} search_latency_{level}");
    }
    if backend != Backend::Timescaledb {
        let minutes = count(&*store, "SELECT sum(searches) FROM search_rollup_1m").await;
        assert_eq!(minutes, 6_000);
    }

    // Percentiles over everything (all buckets, projects and instances)
    // from the hourly histogram, against the exact ones from raw events.
    let histogram: Vec<(i16, u64)> = store
        .query_strings(
            "SELECT latency_bucket || ':' || sum(searches) FROM search_latency_1h GROUP BY latency_bucket",
        )
        .await
        .unwrap()
        .iter()
        .map(|l| {
            let (b, c) = l.split_once(':').unwrap();
            (b.parse().unwrap(), c.parse().unwrap())
        })
        .collect();
    let mut exact: Vec<f64> = store
        .query_strings("SELECT latency_ms FROM search_events")
        .await
        .unwrap()
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    for q in [0.5, 0.95, 0.99] {
        let estimate = latency::quantile_ms(&histogram, q).unwrap();
        let truth = latency::exact_quantile(&mut exact, q).unwrap();
        let error = (estimate - truth).abs() / truth;
        assert!(
            error <= 0.01,
            "{backend:?} p{}: {estimate} vs exact {truth} ({:.3}%)",
            q * 100.0,
            error * 100.0
        );
    }

    // Late events (a replayed outage) land in buckets already rolled up.
    let late = numbered(999, 1, vec![search(now - 2 * DAY, "alpha", "late", 1_000_000, 1, "ok")]);
    store.write("inst-a", &RowBatch::from_rows(999, late)).await.unwrap();
    roll_up(&*store).await;
    assert_eq!(count(&*store, "SELECT sum(searches) FROM search_rollup_1d").await, 6_001);
    store.close().await;
}

async fn retention_is_applied(backend: Backend) {
    let store = fresh(backend, "retention").await;
    let now = now_us();
    // Old rows (10 days) and recent ones (1 hour, 4 days).
    let data = vec![
        search(now - 10 * DAY, "alpha", "u", 1_000_000, 1, "ok"),
        search(now - 4 * DAY, "alpha", "u", 1_000_000, 1, "ok"),
        search(now - HOUR, "alpha", "u", 1_000_000, 1, "ok"),
    ];
    for (i, row) in numbered(1, 1, data).into_iter().enumerate() {
        store.write("inst", &RowBatch::from_rows(1, vec![row])).await.unwrap();
        assert_eq!(store.last_seq("inst", 1).await.unwrap(), i as i64 + 1);
    }
    // A maintenance run 5 days ago rolled the old row up (the two others
    // lay after that run's hour: they stayed pending in usage_dirty).
    store.maintain(now - 5 * DAY).await.unwrap();
    assert_eq!(
        count(&*store, "SELECT CAST(sum(searches) AS BIGINT) FROM user_rollup_1d").await,
        1,
        "{backend:?}"
    );
    assert_eq!(count(&*store, "SELECT count(*) FROM usage_dirty").await, 2, "{backend:?}");
    if backend == Backend::Timescaledb {
        // No background workers on the test server: run the policies' jobs.
        let jobs = store
            .query_strings("SELECT job_id::text FROM timescaledb_information.jobs WHERE hypertable_name = 'search_events' ORDER BY job_id")
            .await
            .unwrap();
        assert_eq!(jobs.len(), 2, "a retention and a compression policy: {jobs:?}");
        for job in jobs {
            store.query_strings(&format!("CALL run_job({job})")).await.unwrap();
        }
        let compressed = count(
            &*store,
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'search_events' AND is_compressed",
        )
        .await;
        assert_eq!(compressed, 1, "the 4-day-old chunk is compressed");
    }
    // Rolls the usage rollups up (and on SQLite and PostgreSQL applies raw
    // retention): they are cut with raw events, at the start of the day
    // `raw_days` (7) ago.
    store.maintain(now).await.unwrap();
    assert_eq!(
        count(&*store, "SELECT count(*) FROM search_events").await,
        2,
        "{backend:?}: the 10-day-old row is gone"
    );
    for table in ["user_rollup_1h", "user_rollup_1d", "query_rollup_1h", "query_rollup_1d"] {
        assert_eq!(
            count(&*store, &format!("SELECT CAST(sum(searches) AS BIGINT) FROM {table}")).await,
            2,
            "{backend:?}: {table} holds the two searches raw retention kept"
        );
    }
    assert_eq!(count(&*store, "SELECT count(*) FROM usage_dirty").await, 0, "{backend:?}: nothing pending");
    store.close().await;
}

async fn concurrent_prepare_is_safe(backend: Backend) {
    let store = fresh(backend, "concurrent").await;
    let again = futures_join(store.clone()).await;
    assert!(again.iter().all(|r| r.is_ok()), "{again:?}");
    store.close().await;
}

async fn futures_join(store: Arc<dyn Storage>) -> Vec<Result<(), String>> {
    let a = tokio::spawn({
        let s = store.clone();
        async move { s.prepare().await.map_err(|e| e.to_string()) }
    });
    let b = tokio::spawn(async move { store.prepare().await.map_err(|e| e.to_string()) });
    vec![a.await.unwrap(), b.await.unwrap()]
}

/// An hour with more rows per usage rollup than SQLite writes in one of a
/// run's pieces: every row arrives, once, and the run's markers go.
async fn large_hour_rolls_up_exactly(backend: Backend) {
    let store = fresh(backend, "large_hour").await;
    let hour = (now_us() / HOUR - 2) * HOUR;
    let (searches, queries) = (12_000i64, 9_000i64);
    let mut data = Vec::new();
    for i in 0..searches {
        let time_us = hour + i * (HOUR / searches);
        let project = ["p1", "p2", "p3"][(i % 3) as usize];
        let RowData::Search(mut row) = search(time_us, project, &format!("u{}", i % 12), 1_000_000, 2, "ok")
        else {
            unreachable!()
        };
        row.query = Some(format!("q{}", i % queries));
        data.push(RowData::Search(row));
        if i % 3 == 0 {
            data.push(RowData::Open(OpenRow {
                time_us: time_us + 1,
                project: project.into(),
                user_id: format!("u{}", i % 12),
                path: "src/a.rs".into(),
                rank: 1,
                search_id: format!("s-{time_us}"),
            }));
        }
    }
    let rows = numbered(1, 1, data);
    for chunk in rows.chunks(2_000) {
        store.write("large", &RowBatch::from_rows(1, chunk.to_vec())).await.unwrap();
    }
    store.maintain(now_us()).await.unwrap();
    // Times are integers (µs) on SQLite, timestamptz on PostgreSQL.
    let at = |us: i64| match backend {
        Backend::Sqlite => us.to_string(),
        _ => format!("to_timestamp({us}::double precision / 1000000)"),
    };
    let within = format!("time >= {} AND time < {}", at(hour), at(hour + HOUR));
    let bucket = format!("bucket = {}", at(hour));
    let expected = [
        (format!("SELECT count(*) FROM search_keys WHERE {within}"), searches),
        (format!("SELECT count(*) FROM open_keys WHERE {within}"), searches / 3),
        (format!("SELECT sum(searches) FROM user_rollup_1h WHERE {bucket}"), searches),
        (format!("SELECT sum(opens) FROM user_rollup_1h WHERE {bucket}"), searches / 3),
        (format!("SELECT count(*) FROM query_rollup_1h WHERE {bucket}"), queries),
        (format!("SELECT sum(searches) FROM query_rollup_1h WHERE {bucket}"), searches),
        (format!("SELECT sum(opens) FROM query_rollup_1h WHERE {bucket}"), searches / 3),
        // Two result paths per search, and the opens of the first.
        (format!("SELECT sum(returned) FROM file_rollup_1h WHERE {bucket}"), 2 * searches),
        (format!("SELECT sum(opened) FROM file_rollup_1h WHERE {bucket}"), searches / 3),
    ];
    for (sql, value) in &expected {
        assert_eq!(count(&*store, sql).await, *value, "{sql}");
    }
    assert_eq!(count(&*store, "SELECT count(*) FROM usage_dirty").await, 0);
    assert_eq!(count(&*store, "SELECT count(*) FROM rollup_dirty").await, 0);
    // A second run finds nothing to do and changes nothing.
    store.maintain(now_us()).await.unwrap();
    assert_eq!(count(&*store, &format!("SELECT count(*) FROM search_keys WHERE {within}")).await, searches);
    assert_eq!(
        count(&*store, &format!("SELECT sum(searches) FROM query_rollup_1h WHERE {bucket}")).await,
        searches
    );
    // A late event marks the hour again: its old rows go (in pieces on
    // SQLite) and it is recomputed whole.
    let late = search(hour + HOUR / 2 + 7, "p1", "u0", 1_000_000, 2, "ok");
    store
        .write("large", &RowBatch::from_rows(1, numbered(1, rows.len() as i64 + 1, vec![late])))
        .await
        .unwrap();
    store.maintain(now_us()).await.unwrap();
    assert_eq!(
        count(&*store, &format!("SELECT count(*) FROM search_keys WHERE {within}")).await,
        searches + 1
    );
    assert_eq!(
        count(&*store, &format!("SELECT sum(searches) FROM user_rollup_1h WHERE {bucket}")).await,
        searches + 1
    );
    assert_eq!(
        count(&*store, &format!("SELECT sum(returned) FROM file_rollup_1h WHERE {bucket}")).await,
        2 * searches + 2
    );
    assert_eq!(count(&*store, "SELECT count(*) FROM rollup_dirty").await, 0);
}

/// SQLite stores result paths by number since migration 0006; rows written
/// before hold the paths. Both read alike: every path of each, in order,
/// once in the dictionary, and rolled up together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_result_paths_stored_either_way() {
    use context_analytics::storage::sqlite::{RESULT_PATH, TOP_RESULTS_JSON};
    let store = fresh(Backend::Sqlite, "result_paths").await;
    let hour = (now_us() / HOUR - 2) * HOUR;
    // A row as migration 0005 left it: paths as JSON strings.
    store
        .query(
            "INSERT INTO search_events (time, instance_id, boot_id, seq, project, user_id, query, kind, cache, \
             status, error_code, latency_ms, latency_bucket, result_count, top_results, search_id) \
             VALUES (?1, 'old', 1, 1, 'p', 'u', 'q', 'literal', 'miss', 'ok', NULL, 1.0, 0, 2, \
             '[\"src/old.rs\",\"src/a.rs\"]', 's-old')",
            &[context_analytics::storage::Value::Int(hour + 10)],
        )
        .await
        .unwrap();
    store
        .query(
            "INSERT INTO rollup_dirty (from_time, to_time) VALUES (?1, ?1)",
            &[context_analytics::storage::Value::Int(hour + 10)],
        )
        .await
        .unwrap();
    // New rows, two batches: the second finds the first's paths known.
    for (seq, paths) in [(1, vec!["src/a.rs", "src/b.rs"]), (2, vec!["src/b.rs", "src/c.rs", "src/a.rs"])] {
        let RowData::Search(mut row) = search(hour + 20 + seq, "p", "u", 1_000_000, 3, "ok") else {
            unreachable!()
        };
        row.top_results = paths.into_iter().collect();
        store
            .write("new", &RowBatch::from_rows(1, numbered(1, seq, vec![RowData::Search(row)])))
            .await
            .unwrap();
    }
    let strings = |sql: String| {
        let store = store.clone();
        async move { store.query_strings(&sql).await.unwrap() }
    };
    assert_eq!(
        strings(format!("SELECT {TOP_RESULTS_JSON} FROM search_events ORDER BY time")).await,
        [
            r#"["src/old.rs","src/a.rs"]"#,
            r#"["src/a.rs","src/b.rs"]"#,
            r#"["src/b.rs","src/c.rs","src/a.rs"]"#
        ]
    );
    assert_eq!(
        strings(format!(
            "SELECT {RESULT_PATH} FROM search_events s, json_each(s.top_results) AS r ORDER BY s.time, r.key"
        ))
        .await,
        ["src/old.rs", "src/a.rs", "src/a.rs", "src/b.rs", "src/b.rs", "src/c.rs", "src/a.rs"]
    );
    assert_eq!(
        strings("SELECT path FROM result_paths ORDER BY path".into()).await,
        ["src/a.rs", "src/b.rs", "src/c.rs"]
    );
    // The hour's file rollup counts each path over both kinds of rows.
    store.maintain(now_us()).await.unwrap();
    assert_eq!(
        strings(format!("SELECT path || '=' || sum(returned) FROM file_rollup_1h WHERE bucket = {hour} GROUP BY path ORDER BY path")).await,
        ["src/a.rs=3", "src/b.rs=2", "src/c.rs=1", "src/old.rs=1"]
    );
}

/// The TimescaleDB test server takes one connection and has one database:
/// its tests take turns.
static TIMESCALE_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn turn(backend: Backend) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    match backend {
        Backend::Timescaledb => Some(TIMESCALE_TURN.lock().await),
        _ => None,
    }
}

macro_rules! suite {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip_of_every_event_kind() {
                let _turn = turn($backend).await;
                round_trip($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rollups_equal_raw_aggregates_and_percentiles_are_within_one_percent() {
                let _turn = turn($backend).await;
                rollups_match_raw_and_percentiles_are_accurate($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_drops_what_expired() {
                let _turn = turn($backend).await;
                retention_is_applied($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_large_hour_rolls_up_exactly() {
                let _turn = turn($backend).await;
                large_hour_rolls_up_exactly($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn preparing_twice_at_once_is_safe() {
                let _turn = turn($backend).await;
                concurrent_prepare_is_safe($backend).await;
            }
        }
    };
}

suite!(sqlite, Backend::Sqlite);
suite!(postgres, Backend::Postgres);
suite!(timescaledb, Backend::Timescaledb);
