//! The search hook through the loaded analytics `.so`, collector update and
//! event copy included: what the host pays per search.
//!
//! Every timed call is accepted into the event queue (none dropped): calls
//! are timed in chunks the queue file holds, and between chunks, untimed,
//! the bench waits until the plugin has stored and released all of them
//! (read from the queue file's header). A full queue's drop would be a
//! cheaper path than the one every real search takes.
//!
//! Needs the release library: `cargo build --release -p context-analytics`
//! then `cargo bench -p context-host --bench search_hook`
//! (`scripts/bench.sh` does both). `CONTEXT_PLUGIN_SO` overrides the path.

use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use abi_stable::std_types::{RSlice, RStr};
use context_host::plugins::{HostIdentity, construct, load_library};
use criterion::{Criterion, criterion_group, criterion_main};
use plugin_api::{CacheOutcome, QueryKind, SearchExecuted, SearchStatus};

fn library_path() -> PathBuf {
    std::env::var_os("CONTEXT_PLUGIN_SO").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/libcontext_analytics.so")
    })
}

/// Calls timed between two waits: about 12 MB of a 32 MiB queue file.
const CHUNK: u64 = 20_000;

/// Waits until the plugin has released everything pushed: the queue
/// file's read position (bytes 32..40) has reached its write position
/// (24..32).
fn wait_released(queue: &Path) {
    let file = std::fs::File::open(queue).expect("the plugin's event queue file");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut positions = [0u8; 16];
        file.read_exact_at(&mut positions, 24).unwrap();
        let write = u64::from_le_bytes(positions[..8].try_into().unwrap());
        let read = u64::from_le_bytes(positions[8..].try_into().unwrap());
        if read >= write {
            return;
        }
        assert!(Instant::now() < deadline, "the plugin did not store its events within 30 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn search_hook(c: &mut Criterion) {
    let path = library_path();
    let library = load_library(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let data_dir = std::env::temp_dir().join(format!("context-bench-{}", std::process::id()));
    let identity = HostIdentity {
        host_name: "bench".into(),
        host_version: "0".into(),
        instance_id: "bench-1".into(),
        data_dir: data_dir.clone(),
    };
    // The queue where the plugin puts it by default (tmpfs), in a folder
    // of the bench's own so the bench finds the file; short flushes, so
    // the last events of a chunk are stored at once.
    let shm = std::path::Path::new("/dev/shm");
    let queue_dir = if shm.is_dir() {
        shm.join(format!("context-bench-{}", std::process::id()))
    } else {
        data_dir.clone()
    };
    std::fs::create_dir_all(&queue_dir).unwrap();
    let config = format!("[pipeline]\nflush_interval_ms = 5\nqueue_dir = \"{}\"", queue_dir.display());
    let plugin = construct(&library, &identity, &config).expect("plugin starts");
    let queue = std::fs::read_dir(&queue_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "queue"))
        .expect("the plugin's event queue file");
    let paths: Vec<String> = (0..10).map(|i| format!("src/components/search/module_{i}.rs")).collect();
    let top: Vec<RStr<'_>> = paths.iter().map(|p| RStr::from(p.as_str())).collect();
    let event = SearchExecuted {
        search_id: RStr::from("bench-1-123456"),
        project: RStr::from("context-server"),
        user: RStr::from("alice@example.com"),
        query: RStr::from("fn handle_request"),
        kind: QueryKind::Literal,
        cache: CacheOutcome::L2,
        status: SearchStatus::Ok,
        error_code: RStr::from(""),
        latency_ns: 4_200_000,
        result_count: 37,
        top_results: RSlice::from_slice(&top),
        timestamp_us: 1_800_000_000_000_000,
    };
    c.bench_function("search_hook_through_so", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let started = Instant::now();
                for _ in 0..n {
                    plugin.object.on_search_executed(std::hint::black_box(&event));
                }
                timed += started.elapsed();
                left -= n;
                wait_released(&queue);
            }
            timed
        })
    });
    let _ = plugin.object.shutdown();
    let _ = std::fs::remove_dir_all(data_dir);
    let _ = std::fs::remove_dir_all(queue_dir);
}

criterion_group!(benches, search_hook);
criterion_main!(benches);
