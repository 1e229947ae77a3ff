//! Issue 7, end to end: the host's cache layers and incremental reindex as
//! the plugin sees them, and the load generator (bounded, loopback only,
//! counting exactly what the plugin counts) over a generated corpus.

use std::time::Duration;

use context_e2e::{ANALYTICS, Host, HostSpec, Scratch, artifact, run_context_host, write_files};
use serde_json::{Value, json};

fn host_over(projects: &[(&str, std::path::PathBuf)]) -> Host {
    Host::start(HostSpec {
        libraries: vec![artifact(ANALYTICS)],
        plugins: vec![("analytics".into(), true, String::new())],
        projects: projects.iter().map(|(n, p)| (n.to_string(), p.clone())).collect(),
        ..Default::default()
    })
}

fn search(host: &Host, query: &str) -> Value {
    let (status, body) = host.get_json(&format!("/api/v1/search?project=sample&q={query}"), "alice");
    assert_eq!(status, 200, "{body}");
    body
}

fn reindex(host: &Host, runs_before: usize) {
    let (status, body) = host.post_json("/api/v1/projects/sample/reindex", "ops", &json!(null));
    assert_eq!(status, 202, "{body}");
    host.wait_indexed(runs_before + 1);
}

#[test]
fn each_cache_layer_shows_in_the_metrics_and_l3_survives_a_reindex() {
    let scratch = Scratch::new("layers");
    let root = scratch.path().join("project");
    write_files(
        &root,
        &[
            ("src/lib.rs", b"pub fn needle() {}\npub fn needle_twice() {}\n"),
            ("src/main.rs", b"fn main() {\n    let needle = 1;\n}\n"),
        ],
    );
    let host = host_over(&[("sample", root.clone())]);
    host.wait_indexed(1);

    assert_eq!(search(&host, "needle")["cache"], "miss");
    assert_eq!(search(&host, "needle")["cache"], "l1");
    assert_eq!(search(&host, "NEEDLE")["cache"], "l2", "literal search ignores case: same answer");
    let call = search(&host, "needle(");
    assert_eq!((call["cache"].clone(), call["total"].clone()), (json!("l3"), json!(1)), "from needle's list");

    // A changed file makes L1/L2 answers stale; L3's list is repaired.
    write_files(&root, &[("src/main.rs", b"fn main() {\n    let needle = 1;\n    needle(); needle();\n}\n")]);
    reindex(&host, 1);
    let after = search(&host, "needle");
    assert_eq!(after["cache"], "l3");
    assert_eq!(after["total"], 2);
    assert_eq!(after["results"][0]["path"], "src/main.rs", "now the file with most matches");

    let m = host.metrics();
    let lookups = |layer: &str, result: &str| {
        m.value(&format!(
            r#"context_search_cache_lookups_total{{layer="{layer}",project="sample",result="{result}"}}"#
        ))
    };
    assert_eq!((lookups("l1", "hit"), lookups("l1", "miss")), (1.0, 4.0));
    assert_eq!((lookups("l2", "hit"), lookups("l2", "miss")), (1.0, 3.0));
    assert_eq!((lookups("l3", "hit"), lookups("l3", "miss")), (2.0, 1.0));

    // Snapshots carry the real sizes the host reports for its stores.
    let (_, projects) = host.get_json("/api/v1/projects", "ops");
    let stats = &projects["projects"][0];
    assert_eq!(stats["cache"]["l3_terms"], 1);
    let store = stats["store_bytes"].as_f64().unwrap();
    host.wait_until("a snapshot with the current store size", || {
        host.metrics().value(r#"context_vector_store_bytes{project="sample"}"#) == store
    });
    assert!(host.metrics().value(r#"context_embedding_cache_bytes{project="sample"}"#) > 0.0);
}

#[test]
fn a_reindex_reports_only_files_that_changed() {
    let scratch = Scratch::new("incremental");
    let root = scratch.path().join("project");
    write_files(
        &root,
        &[
            ("a.rs", b"fn alpha() {}\n"),
            ("b.rs", b"fn beta() {}\n"),
            ("c.md", b"# gamma\n"),
            ("d.txt", b"delta\n"),
        ],
    );
    let host = host_over(&[("sample", root.clone())]);
    host.wait_indexed(1);
    let indexed = |host: &Host| host.metrics().sum("context_index_files_total", &[r#"project="sample""#]);
    assert_eq!(indexed(&host), 4.0);

    // Nothing changed: the files were written moments ago, so they are
    // read again (mtime is too close to trust), found equal, not reported.
    reindex(&host, 1);
    assert!(host.log_lines("indexed project 'sample'").last().unwrap().contains("(0 changed, 0 removed,"));
    assert_eq!(indexed(&host), 4.0);

    // Same size, other content; a new file; a removed one; a dangling link.
    write_files(&root, &[("a.rs", b"fn omega() {}\n"), ("e.rs", b"fn epsilon() {}\n")]);
    std::fs::remove_file(root.join("c.md")).unwrap();
    std::os::unix::fs::symlink(root.join("gone.rs"), root.join("f.rs")).unwrap();
    reindex(&host, 2);
    let line = host.log_lines("indexed project 'sample'").pop().unwrap();
    assert!(line.contains("sample': 5 files (3 changed, 1 removed,"), "{line}");
    assert_eq!(indexed(&host), 7.0, "a.rs, e.rs and f.rs reported, nothing else");
    let m = host.metrics();
    assert_eq!(m.value(r#"context_index_errors_total{code="unreadable",project="sample"}"#), 1.0);
    assert_eq!(m.value(r#"context_index_queue_depth{project="sample"}"#), 0.0);
    // The plugin's worker applies snapshots to the gauges shortly after.
    host.wait_until("the run's snapshot applied", || {
        let m = host.metrics();
        m.value(r#"context_project_files{project="sample",state="total"}"#) == 5.0
            && m.value(r#"context_project_files{project="sample",state="indexed"}"#) == 4.0
    });
    assert_eq!(search(&host, "gamma")["total"], 0, "the removed file is gone from the index");
    assert_eq!(search(&host, "omega")["total"], 1);
}

fn loadgen(host: &Host, extra: &[&str], limit: Duration) -> (context_e2e::CommandRun, Value) {
    let mut args = vec!["loadgen", "--url", &host.base_url, "--json", "--ready-timeout", "20"];
    args.extend_from_slice(extra);
    let run = run_context_host(&args, limit);
    assert_eq!(run.code, Some(0), "loadgen failed:\n{}\n{}", run.stdout, run.stderr);
    let report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    (run, report)
}

#[test]
fn loadgen_is_bounded_and_the_plugin_counts_what_it_sent() {
    let scratch = Scratch::new("loadgen");
    let corpus = scratch.path().join("corpus");
    let made = run_context_host(
        &["gen-corpus", corpus.to_str().unwrap(), "--files", "60", "--projects", "2"],
        Duration::from_secs(30),
    );
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    assert!(made.stdout.contains("name = \"gen-01\""), "{}", made.stdout);
    let host = host_over(&[("gen-00", corpus.join("gen-00")), ("gen-01", corpus.join("gen-01"))]);
    host.wait_indexed(2);
    let m = host.metrics();
    assert_eq!(m.value(r#"context_analytics_events_received_total{kind="index"}"#), 60.0 + 2.0 * 4.0);
    for code in ["binary", "too_large", "invalid_utf8", "unreadable"] {
        assert_eq!(m.sum("context_index_errors_total", &[&format!("code=\"{code}\"")]), 2.0, "{code}");
    }

    // Bounded by count: exactly 300 requests, well before the time limit.
    let (run, report) = loadgen(
        &host,
        &["--seconds", "60", "--max-requests", "300", "--connections", "3", "--reindex-every", "0"],
        Duration::from_secs(60),
    );
    assert_eq!(report["stopped_by"], "count", "{report}");
    assert_eq!(report["requests"], 300);
    assert_eq!(report["failures"], 0);
    assert!(run.elapsed < Duration::from_secs(30), "{:?}", run.elapsed);
    let m = host.metrics();
    let n = |key: &str| report[key].as_f64().unwrap();
    assert_eq!(m.sum("context_search_requests_total", &[]), n("searches"));
    assert_eq!(m.sum("context_search_zero_results_total", &[]), n("zero_results"));
    assert!(n("zero_results") > 0.0 && n("opens") > 0.0, "{report}");
    assert_eq!(m.sum("context_file_opens_total", &[]), n("opens"));
    assert_eq!(n("searches") + n("opens"), 300.0);
    for layer in ["l1", "l2", "l3"] {
        let hits =
            m.sum("context_search_cache_lookups_total", &[&format!("layer=\"{layer}\""), r#"result="hit""#]);
        assert_eq!(hits, report["cache"][layer].as_f64().unwrap(), "{layer}: {report}");
    }
    let active = m.value(r#"context_active_users{window="5m"}"#);
    assert!(active >= 2.0, "several users: {active}");

    // Bounded by time, paced, with reindexing after edits of the corpus:
    // only the files loadgen changed are reported again.
    let index_before = m.value(r#"context_analytics_events_received_total{kind="index"}"#);
    let runs_before = host.log_lines("indexed project '").len();
    let (run, report) = loadgen(
        &host,
        &[
            "--seconds",
            "2",
            "--rate",
            "40",
            "--reindex-every",
            "0.5",
            "--edits",
            "2",
            "--edit-corpus",
            corpus.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(report["stopped_by"], "time");
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    let requests = report["requests"].as_u64().unwrap();
    assert!((50..=100).contains(&requests), "about 40/s for 2 s, plus reindexes: {report}");
    let (edits, reindexes) =
        (report["edits"].as_u64().unwrap(), report["reindexes"].as_u64().unwrap() as usize);
    assert!(edits >= 4 && reindexes >= 2, "{report}");
    host.wait_indexed(runs_before + reindexes);
    host.wait_until("edited files reported", || {
        host.metrics().value(r#"context_analytics_events_received_total{kind="index"}"#) > index_before
    });
    let reported =
        host.metrics().value(r#"context_analytics_events_received_total{kind="index"}"#) - index_before;
    assert!(reported <= edits as f64, "{reported} index events for {edits} edits");
}

#[test]
fn loadgen_refuses_other_hosts_and_folders_it_did_not_generate() {
    let run = run_context_host(
        &["loadgen", "--url", "http://192.0.2.1:80", "--seconds", "1"],
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("only 127.0.0.1 is allowed"), "{}", run.stderr);

    let scratch = Scratch::new("refuse");
    let root = scratch.path().join("project");
    write_files(&root, &[("src/main.rs", b"fn main() {}\n")]);
    let host = host_over(&[("sample", root.clone())]);
    host.wait_indexed(1);
    let run = run_context_host(
        &["loadgen", "--url", &host.base_url, "--seconds", "1", "--edit-corpus", root.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("is not a generated corpus"), "{}", run.stderr);
    assert_eq!(std::fs::read(root.join("src/main.rs")).unwrap(), b"fn main() {}\n");
}
