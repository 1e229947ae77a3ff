//! The search hook through the loaded analytics `.so`, collector update and
//! event copy included: what the host pays per search.
//!
//! Needs the release library: `cargo build --release -p context-analytics`
//! then `cargo bench -p context-host --bench search_hook`
//! (`scripts/bench.sh` does both). `CONTEXT_PLUGIN_SO` overrides the path.

use std::path::PathBuf;

use abi_stable::std_types::{RSlice, RStr};
use context_host::plugins::{HostIdentity, construct, load_library};
use criterion::{Criterion, criterion_group, criterion_main};
use plugin_api::{CacheOutcome, QueryKind, SearchExecuted, SearchStatus};

fn library_path() -> PathBuf {
    std::env::var_os("CONTEXT_PLUGIN_SO").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/libcontext_analytics.so")
    })
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
    let plugin = construct(&library, &identity, "").expect("plugin starts");
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
        b.iter(|| plugin.object.on_search_executed(std::hint::black_box(&event)))
    });
    let _ = plugin.object.shutdown();
    let _ = std::fs::remove_dir_all(data_dir);
}

criterion_group!(benches, search_hook);
criterion_main!(benches);
