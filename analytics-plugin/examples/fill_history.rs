//! Fills a SQLite analytics database with 30 days of believable history for
//! the live page's load benchmark (`tests/browser/page-bench.mjs`): searches
//! over 3 projects (Zipf-popular queries, 8% finding nothing, 1% errors,
//! four cache outcomes), file opens after 20% of them, a daily reindex of
//! 300 files per project and a snapshot per project every 10 minutes; then
//! rolls it all up, as the plugin's maintenance would have.
//!
//! ```text
//! cargo run --release -p context-analytics --example fill_history -- --db target/page-bench/analytics.db --searches 1000000
//! ```

use std::time::{Duration, Instant};

use abi_stable::std_types::{RStr, RString};
use context_analytics::{
    AnalyticsPlugin,
    storage::{
        latency,
        rows::{EventId, IndexRow, OpenRow, Row, RowBatch, RowData, SearchRow, SnapshotRow},
    },
};
use plugin_api::{HostContext, HostServices, LogLevel};

extern "C" fn log(level: LogLevel, _target: RStr<'_>, message: RStr<'_>) {
    if level <= LogLevel::Warn {
        eprintln!("plugin: {message}");
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

const PROJECTS: [&str; 3] = ["alpha", "beta", "gamma"];
const FILES: i64 = 300;
const DAY: i64 = 86_400_000_000;

/// A deterministic pseudo-random stream (splitmix64).
struct Random(u64);
impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Roughly Zipf over 0..n: small values much more often.
    fn zipf(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0).floor() as u64 % n
    }
}

fn path(i: i64) -> String {
    format!("src/module_{:03}/file_{i:03}.rs", i % 40)
}

fn main() {
    // Absolute: the plugin takes a relative SQLite path from its data dir,
    // a temporary folder removed at the end.
    let db = std::path::absolute(arg("--db").expect("--db PATH")).unwrap().to_string_lossy().into_owned();
    let searches: i64 = arg("--searches").map_or(1_000_000, |v| v.parse().unwrap());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{db}{suffix}"));
    }
    if let Some(parent) = std::path::Path::new(&db).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("fill-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let host = HostContext {
        plugin_name: RString::from("analytics"),
        host_name: RString::from("fill-history"),
        host_version: RString::from("0"),
        instance_id: RString::from("history"),
        data_dir: RString::from(dir.to_string_lossy().as_ref()),
        services: HostServices::leak(log),
    };
    let config = format!(
        "[storage]\nurl = \"sqlite://{db}\"\nmaintenance_interval_secs = 86400\n\
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
    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    let start = end - 30 * DAY;
    let mut rng = Random(20261128);
    let mut rows: Vec<Row> = Vec::new();
    let mut seq = 0i64;
    let mut push = |rows: &mut Vec<Row>, data: RowData| {
        seq += 1;
        rows.push(Row { id: EventId { boot_id: 1, seq }, data });
    };
    // Reindexes and snapshots.
    for day in 0..30 {
        for (p, project) in PROJECTS.iter().enumerate() {
            for f in 0..FILES {
                let failed = rng.below(200) == 0;
                push(
                    &mut rows,
                    RowData::Index(IndexRow {
                        time_us: start + day * DAY + 3_600_000_000 + (p as i64 * FILES + f) * 1_000_000,
                        project: (*project).to_owned(),
                        path: path(f),
                        file_type: if f % 5 == 0 { "toml".into() } else { "rust".into() },
                        bytes: 2_000 + rng.below(20_000) as i64,
                        duration_ms: 0.2 + rng.below(5_000) as f64 / 1_000.0,
                        outcome: if failed { "failed" } else { "indexed" },
                        error_code: failed.then(|| "io_error".to_owned()),
                        queue_depth: FILES - f - 1,
                    }),
                );
            }
        }
    }
    for tick in 0..(30 * 144) {
        for project in PROJECTS {
            push(
                &mut rows,
                RowData::Snapshot(SnapshotRow {
                    time_us: start + tick * 600_000_000,
                    project: project.to_owned(),
                    total_files: FILES + 20,
                    indexed_files: FILES,
                    vector_store_bytes: 0,
                    embedding_cache_bytes: 0,
                    duplication_ratio: Some(0.04),
                }),
            );
        }
    }
    let started = Instant::now();
    let mut written = 0usize;
    let mut flush = |rows: &mut Vec<Row>, last: bool| {
        if rows.len() >= 20_000 || (last && !rows.is_empty()) {
            let batch = std::mem::take(rows);
            written += batch.len();
            runtime.block_on(store.write("history", &RowBatch::from_rows(1, batch))).unwrap();
        }
    };
    flush(&mut rows, true);
    let span = end - start;
    for i in 0..searches {
        let time_us = start + i * (span / searches);
        let project = PROJECTS[rng.zipf(3) as usize];
        let q = rng.zipf(2_000);
        let zero = q % 12 == 7; // about 8% of searches, always the same queries
        let error = !zero && rng.below(100) == 0;
        let latency_ns = 200_000 + rng.zipf(50_000) * 1_000 + rng.below(400_000);
        let results = if zero || error { 0 } else { 1 + rng.below(30) as i32 };
        let top: Vec<String> =
            (0..results.min(3)).map(|_| path(rng.zipf(FILES as u64) as i64 % (FILES * 2 / 3))).collect();
        let user = format!("user-{:03}", rng.zipf(500));
        let search_id = format!("h-{i}");
        let opened = results > 0 && rng.below(5) == 0;
        let first = top.first().cloned();
        push(
            &mut rows,
            RowData::Search(SearchRow {
                time_us,
                project: project.to_owned(),
                user_id: user.clone(),
                query: Some(if zero { format!("missing_{q}") } else { format!("term_{q}") }),
                kind: if q % 14 == 3 { "regex" } else { "literal" },
                cache: ["l1", "l1", "l2", "l3", "miss"][rng.below(5) as usize],
                status: if error { "error" } else { "ok" },
                error_code: error.then(|| "bad_regex".to_owned()),
                latency_ms: latency_ns as f64 / 1e6,
                latency_bucket: latency::bucket_of_ns(latency_ns),
                result_count: results,
                top_results: top.iter().collect(),
                search_id: search_id.clone(),
            }),
        );
        if let (true, Some(path)) = (opened, first) {
            push(
                &mut rows,
                RowData::Open(OpenRow {
                    time_us: time_us + 2_000_000,
                    project: project.to_owned(),
                    user_id: user,
                    path,
                    rank: 1,
                    search_id,
                }),
            );
        }
        flush(&mut rows, false);
    }
    flush(&mut rows, true);
    let loaded = started.elapsed();
    let rolled = Instant::now();
    runtime.block_on(store.maintain(end)).unwrap();
    println!(
        "{written} events ({searches} searches) over 30 days written to {db} in {:.1} s, rolled up in {:.1} s",
        loaded.as_secs_f64(),
        rolled.elapsed().as_secs_f64()
    );
    runtime.block_on(store.close());
    drop(plugin);
    let _ = std::fs::remove_dir_all(dir);
}
