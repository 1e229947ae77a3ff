//! The cost of a maintenance run through an hour of steady traffic: writes
//! one hour of searches (3 result paths each, one event in five an open)
//! at `--rate` searches per second, minute by minute, into the hour before the current
//! one, with maintenance runs dated as if they ran then; times the run
//! that follows the last minute of writes at a few points of the hour, and
//! the first run after the hour ended, while a probe writes one event
//! every 50 ms beside it as the event writer would (the longest of those
//! writes is how long the run kept the writer waiting). Prints the figures
//! recorded in BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p context-analytics --example maintain_hour -- --url sqlite:///tmp/maintain-hour.db --rate 1000
//! ```

use std::time::Instant;

use context_analytics::storage::{
    self, RetentionConfig, StorageConfig, latency,
    rows::{EventId, OpenRow, Row, RowBatch, RowData, SearchRow},
};

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let url = arg("--url")
        .unwrap_or_else(|| format!("sqlite://{}/maintain-hour.db", std::env::temp_dir().display()));
    let rate: i64 = arg("--rate").map_or(1_000, |v| v.parse().unwrap());
    if let Some(path) = url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    let dir = std::env::temp_dir().join(format!("maintain-hour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = StorageConfig { url: url.clone(), ..Default::default() };
    // The pool spawns its tasks on the runtime it is made in.
    let store =
        runtime.block_on(async { storage::open(&config, &RetentionConfig::default(), &dir) }).unwrap();
    runtime.block_on(store.prepare()).unwrap();
    let real_now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    let hour = (real_now.div_euclid(HOUR) - 1) * HOUR;
    let mut seq = 0i64;
    // One minute of traffic, written in 100 ms batches (each marks its own
    // few milliseconds dirty, as the writer does).
    let mut write_minute = |m: i64| -> i64 {
        let mut written = 0;
        let per_batch = (rate / 10).max(1);
        for b in 0..600 {
            let mut rows = Vec::new();
            let t0 = hour + m * MINUTE + b * 100_000;
            for k in 0..per_batch {
                let i = seq;
                let time_us = t0 + k * 100_000 / per_batch;
                let project = ["alpha", "beta", "gamma"][(i % 3) as usize];
                let q = (i * 7919) % 2_000;
                let search_id = format!("s-{i}");
                let push = |rows: &mut Vec<Row>, seq: &mut i64, data: RowData| {
                    *seq += 1;
                    rows.push(Row { id: EventId { boot_id: 1, seq: *seq }, data });
                };
                let data = RowData::Search(SearchRow {
                    time_us,
                    project: project.into(),
                    user_id: format!("user-{:03}", (i * 31) % 500),
                    query: Some(format!("term_{q}")),
                    kind: "literal",
                    cache: "miss",
                    status: "ok",
                    error_code: None,
                    latency_ms: 1.5,
                    latency_bucket: latency::bucket_of_ns(1_500_000),
                    result_count: 3,
                    top_results: (0..3).map(|r| format!("src/file_{:03}.rs", (q + r * 17) % 300)).collect(),
                    search_id: search_id.clone(),
                });
                push(&mut rows, &mut seq, data);
                if i % 5 == 0 {
                    let data = RowData::Open(OpenRow {
                        time_us: time_us + 1,
                        project: project.into(),
                        user_id: format!("user-{:03}", (i * 31) % 500),
                        path: format!("src/file_{:03}.rs", q % 300),
                        rank: 1,
                        search_id,
                    });
                    push(&mut rows, &mut seq, data);
                }
            }
            written += rows.len() as i64;
            runtime.block_on(store.write("bench", &RowBatch::from_rows(1, rows))).unwrap();
        }
        written
    };
    let maintain = |at: i64| {
        let started = Instant::now();
        let report = runtime.block_on(store.maintain(at)).unwrap();
        (started.elapsed().as_secs_f64() * 1000.0, report)
    };
    println!("{url}: {rate} searches/s and their opens, the hour starting {hour} µs");
    let mut done = 0;
    let mut written = 0i64;
    for checkpoint in [5, 30, 55] {
        // Catch up: the minutes before the checkpoint's, one run after them.
        for m in done..checkpoint - 1 {
            written += write_minute(m);
        }
        maintain(hour + (checkpoint - 1) * MINUTE + 1_000_000);
        written += write_minute(checkpoint - 1);
        let (ms, report) = maintain(hour + checkpoint * MINUTE + 1_000_000);
        println!(
            "run at minute {checkpoint:2} ({written} events in the hour, one minute new): {ms:.1} ms ({report:?})"
        );
        done = checkpoint;
    }
    for m in done..60 {
        written += write_minute(m);
    }
    maintain(hour + 59 * MINUTE + 1_000_000);
    let running = std::sync::atomic::AtomicBool::new(true);
    let (ms, report, probe) = std::thread::scope(|scope| {
        let probe = scope.spawn(|| {
            let (mut writes, mut failed, mut longest) = (0u64, 0u64, 0f64);
            let mut seq = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                seq += 1;
                let row = Row {
                    id: EventId { boot_id: 2, seq },
                    data: RowData::Open(OpenRow {
                        time_us: hour + HOUR + seq,
                        project: "alpha".into(),
                        user_id: "probe".into(),
                        path: "src/probe.rs".into(),
                        rank: 1,
                        search_id: format!("probe-{seq}"),
                    }),
                };
                let started = Instant::now();
                let result = runtime.block_on(store.write("probe", &RowBatch::from_rows(2, vec![row])));
                longest = longest.max(started.elapsed().as_secs_f64() * 1000.0);
                writes += 1;
                failed += u64::from(result.is_err());
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            (writes, failed, longest)
        });
        let (ms, report) = maintain(hour + HOUR + 1_000_000);
        running.store(false, std::sync::atomic::Ordering::Relaxed);
        (ms, report, probe.join().unwrap())
    });
    println!("first run after the hour ended ({written} events): {ms:.1} ms ({report:?})");
    println!(
        "  beside it: {} probe writes, {} failed (timed out), the longest took {:.1} ms",
        probe.0, probe.1, probe.2
    );
    let (ms, report) = maintain(hour + HOUR + MINUTE);
    println!("next run, nothing new: {ms:.1} ms ({report:?})");
    runtime.block_on(store.close());
}
