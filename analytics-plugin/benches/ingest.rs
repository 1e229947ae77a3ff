//! End-to-end ingest: hooks called at a target rate for a fixed time, until
//! every event is committed in the database. Prints the figures recorded in
//! BENCHMARKS.md.
//!
//! ```text
//! cargo bench -p context-analytics --bench ingest -- --url sqlite:///tmp/ingest.db --rate 50000 --seconds 10
//! cargo bench -p context-analytics --bench ingest -- --url postgres://postgres@127.0.0.1:55433/analytics --rate max
//! ```
//! `--rate max` sends as fast as the pipeline absorbs without spooling (the
//! producer waits while the queue file is over a third full): the writer's
//! capacity.

use std::time::{Duration, Instant};

use abi_stable::std_types::{RSlice, RStr, RString};
use context_analytics::AnalyticsPlugin;
use plugin_api::{
    CacheOutcome, FileIndexed, FileOpened, HostContext, HostServices, IndexOutcome, LogLevel, Plugin,
    QueryKind, SearchExecuted, SearchStatus,
};

extern "C" fn log(level: LogLevel, _target: RStr<'_>, message: RStr<'_>) {
    if level <= LogLevel::Warn {
        eprintln!("plugin: {message}");
    }
}

struct Args {
    url: String,
    rate: Option<u64>,
    seconds: u64,
    method: Option<String>,
}

fn args() -> Args {
    let mut args = Args { url: String::new(), rate: Some(50_000), seconds: 10, method: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--url" => args.url = it.next().expect("--url URL"),
            "--rate" => {
                let v = it.next().expect("--rate N|max");
                args.rate = if v == "max" { None } else { Some(v.parse().expect("--rate N")) };
            }
            "--seconds" => args.seconds = it.next().expect("--seconds S").parse().expect("--seconds S"),
            "--insert-method" => args.method = it.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    if args.url.is_empty() {
        args.url = format!("sqlite://{}/ingest-bench.db", std::env::temp_dir().display());
    }
    args
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// CPU time (user + system) of the whole process and of the calling
/// thread, in seconds. Every other thread here is the plugin's (its runtime,
/// the SQLite writer running in place on it, sqlx's workers), and the
/// process figure keeps the time of threads that have ended.
fn cpu_seconds() -> (f64, f64) {
    let read = |who| {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(who, &mut usage) }, 0, "getrusage");
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    };
    (read(libc::RUSAGE_SELF), read(libc::RUSAGE_THREAD))
}

fn main() {
    let args = args();
    let data_dir = std::env::temp_dir().join(format!("ingest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir).unwrap();
    if let Some(path) = args.url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    let instance = format!("bench-{}", std::process::id());
    let host = HostContext {
        plugin_name: RString::from("analytics"),
        host_name: RString::from("ingest-bench"),
        host_version: RString::from("0"),
        instance_id: RString::from(instance.as_str()),
        data_dir: RString::from(data_dir.to_string_lossy().as_ref()),
        services: HostServices::leak(log),
    };
    let method = args.method.as_deref().map(|m| format!("insert_method = \"{m}\"\n")).unwrap_or_default();
    let config = format!("[storage]\nurl = \"{}\"\ntimescaledb = \"off\"\n{method}", args.url);
    let plugin = AnalyticsPlugin::new(host, &config).expect("plugin starts");
    // Let the writer connect and migrate before timing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !plugin.shared().pipeline.storage_health.lock().connected {
        assert!(Instant::now() < deadline, "storage did not connect");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Result paths shaped like the generated corpus's (`gen-corpus`): a
    // search's ten results are ten of 3,000 files.
    let words =
        ["query", "index", "cache", "search", "result", "config", "parse", "server", "timeout", "split"];
    let paths: Vec<String> = (0..3_000)
        .map(|i| {
            let w = |k: usize| words[(i / k) % words.len()];
            format!("src/{}_{}/{}_{}_{i}.rs", w(1), w(7), w(3), w(11))
        })
        .collect();
    let tops: Vec<Vec<RStr<'_>>> = (0..300)
        .map(|k| (0..10).map(|j| RStr::from(paths[(k * 37 + j * 301) % paths.len()].as_str())).collect())
        .collect();
    let users: Vec<String> = (0..200).map(|i| format!("user{i}@example.com")).collect();
    let queries: Vec<String> = (0..500).map(|i| format!("fn handler_{i}")).collect();
    let queue = &plugin.shared().pipeline.queue;
    let total_target = args.rate.map(|r| r * args.seconds);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut hook_time = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        // Pace: at a target rate, send what is due every millisecond.
        let due = match args.rate {
            Some(rate) => (started.elapsed().as_secs_f64() * rate as f64) as u64,
            None => sent + 256,
        };
        // At `max`, wait while the queue file is a third full (rows waiting
        // for their commit hold their room): the writer's own pace.
        if args.rate.is_none() && queue.used_bytes() > queue.capacity_bytes() / 3 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        if sent >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        let t = Instant::now();
        while sent < due {
            let i = sent as usize;
            let ts = now_us();
            match i % 20 {
                0 => plugin.on_file_indexed(&FileIndexed {
                    project: RStr::from("bench"),
                    path: RStr::from(paths[i * 7 % paths.len()].as_str()),
                    file_type: RStr::from("rs"),
                    bytes: 4096,
                    duration_ns: 150_000,
                    outcome: IndexOutcome::Indexed,
                    error_code: RStr::from(""),
                    queue_depth: 3,
                    timestamp_us: ts,
                }),
                1 | 2 => plugin.on_file_opened(&FileOpened {
                    project: RStr::from("bench"),
                    user: RStr::from(users[i % 200].as_str()),
                    path: RStr::from(paths[i * 7 % paths.len()].as_str()),
                    rank: 1 + (i % 5) as u32,
                    search_id: RStr::from("bench-1"),
                    timestamp_us: ts,
                }),
                _ => plugin.on_search_executed(&SearchExecuted {
                    search_id: RStr::from("bench-search-123456"),
                    project: RStr::from(["bench", "other", "third"][i % 3]),
                    user: RStr::from(users[i % 200].as_str()),
                    query: RStr::from(queries[i % 500].as_str()),
                    kind: QueryKind::Literal,
                    cache: CacheOutcome::ALL[i % 4],
                    status: SearchStatus::Ok,
                    error_code: RStr::from(""),
                    latency_ns: 1_000_000 + (i as u64 % 977) * 13_000,
                    result_count: (i % 40) as u64,
                    top_results: RSlice::from_slice(&tops[i % tops.len()]),
                    timestamp_us: ts,
                }),
            }
            sent += 1;
        }
        hook_time += t.elapsed();
    }
    let sending = started.elapsed();
    plugin.shutdown().expect("flush");
    let committed_at = started.elapsed();
    let cpu_after = cpu_seconds();
    let plugin_cpu = (cpu_after.0 - cpu_before.0) - (cpu_after.1 - cpu_before.1);
    let shared = plugin.shared();
    let health = shared.pipeline.storage_health.lock().clone();
    let dropped = shared.collector.events_dropped.with_label_values(&["queue_full"]).get();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stored: u64 = runtime.block_on(async {
        let mut total = 0u64;
        for table in ["search_events", "index_events", "open_events"] {
            let sql = format!("SELECT count(*) FROM {table} WHERE instance_id = '{instance}'");
            total += shared.storage.query_strings(&sql).await.unwrap()[0].parse::<u64>().unwrap();
        }
        total
    });
    println!("backend: {}  url: {}", health.backend, health.target);
    let left_in_spool = health.events_spooled - health.events_replayed;
    println!(
        "sent {sent} events in {:.2} s (target {}), dropped {dropped}, spooled {} (left in spool {left_in_spool}), committed {stored}",
        sending.as_secs_f64(),
        total_target.map_or("max".to_owned(), |t| t.to_string()),
        health.events_spooled,
    );
    println!(
        "ingest: {:.0} events/s from first hook to last commit ({:.2} s); hook mean {:.0} ns incl. pacing overhead",
        stored as f64 / committed_at.as_secs_f64(),
        committed_at.as_secs_f64(),
        hook_time.as_nanos() as f64 / sent.max(1) as f64,
    );
    println!(
        "plugin threads' CPU: {:.2} s, {:.2} µs per event (the hooks' own time on the sending thread not included)",
        plugin_cpu,
        plugin_cpu * 1e6 / sent.max(1) as f64,
    );
    assert_eq!(
        stored + dropped + left_in_spool,
        sent,
        "every event is committed, spooled or counted as dropped"
    );
    drop(plugin);
    let _ = std::fs::remove_dir_all(data_dir);
}
