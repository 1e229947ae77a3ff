//! Issue 2, end to end: the real `.so` loaded by the real `context-host`
//! over real files.

use std::process::Command;

use context_e2e::{ANALYTICS, Host, HostSpec, INCOMPATIBLE, PANICKING, Scratch, artifact, write_files};
use serde_json::json;

/// A project with three indexable files, one binary and one too large.
fn sample_project(scratch: &Scratch) -> std::path::PathBuf {
    let root = scratch.path().join("project");
    let big = vec![b'x'; 1024 * 1024 + 1];
    write_files(
        &root,
        &[
            ("src/main.rs", b"fn main() {\n    let needle = 1;\n}\n"),
            ("src/lib.rs", b"pub fn needle() {}\npub fn needle_twice() {}\n"),
            ("README.md", b"# sample\nNothing to find here.\n"),
            ("assets/logo.bin", b"\x89PNG\x00\x00\x01"),
            ("big.txt", &big),
        ],
    );
    root
}

fn spec(libraries: &[&str], plugins: &[(&str, bool, &str)], project: &std::path::Path) -> HostSpec {
    HostSpec {
        libraries: libraries.iter().map(|l| artifact(l)).collect(),
        junk: Vec::new(),
        plugins: plugins.iter().map(|(n, e, c)| (n.to_string(), *e, c.to_string())).collect(),
        projects: vec![("sample".to_owned(), project.to_owned())],
        instance_id: None,
        env: Vec::new(),
    }
}

#[test]
fn searches_indexing_and_opens_drive_exact_counters() {
    let scratch = Scratch::new("counters");
    let project = sample_project(&scratch);
    let host = Host::start(spec(&[ANALYTICS], &[("analytics", true, "")], &project));
    host.wait_indexed(1);

    let (status, first) = host.get_json("/api/v1/search?q=needle&project=sample", "alice");
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["total"], 2);
    assert_eq!(first["cache"], "miss");
    assert_eq!(first["results"][0]["path"], "src/lib.rs", "most matches first");
    let (_, second) = host.get_json("/api/v1/search?q=needle&project=sample", "bob");
    assert_eq!(second["cache"], "l1");
    let (_, nothing) = host.get_json("/api/v1/search?q=absent_word&project=sample", "bob");
    assert_eq!(nothing["total"], 0);
    let (status, regex) =
        host.get_json("/api/v1/search?q=needle_%5Ba-z%5D%2B&project=sample&kind=regex", "carol");
    assert_eq!((status, regex["total"].clone()), (200, json!(1)));
    let (status, bad) = host.get_json("/api/v1/search?q=(&project=sample&kind=regex", "carol");
    assert_eq!(status, 400);
    assert_eq!(bad["error"]["code"], "error");
    let search_id = first["search_id"].as_str().unwrap();
    let (status, _) = host.post_json(
        "/api/v1/files/open",
        "alice",
        &json!({"project": "sample", "path": "src/lib.rs", "rank": 1, "search_id": search_id}),
    );
    assert_eq!(status, 200);
    let (status, _) =
        host.post_json("/api/v1/files/open", "alice", &json!({"project": "sample", "path": "nope.rs"}));
    assert_eq!(status, 404, "opening a file that is not indexed is refused");

    // Hooks update counters synchronously; the pipeline (active users,
    // code health) within milliseconds.
    host.wait_until("active users counted", || {
        host.metrics().value(r#"context_active_users{window="5m"}"#) == 3.0
    });
    let m = host.metrics();
    let p = r#"project="sample""#;
    assert_eq!(m.sum("context_search_requests_total", &[p, r#"status="ok""#]), 4.0);
    assert_eq!(m.value(r#"context_search_requests_total{kind="literal",project="sample",status="ok"}"#), 3.0);
    assert_eq!(m.value(r#"context_search_requests_total{kind="regex",project="sample",status="ok"}"#), 1.0);
    assert_eq!(
        m.value(r#"context_search_requests_total{kind="regex",project="sample",status="error"}"#),
        1.0
    );
    assert_eq!(m.value(r#"context_search_errors_total{code="invalid_regex",project="sample"}"#), 1.0);
    assert_eq!(m.value(r#"context_search_zero_results_total{project="sample"}"#), 1.0);
    assert_eq!(
        m.value(r#"context_search_cache_lookups_total{layer="l1",project="sample",result="hit"}"#),
        1.0
    );
    assert_eq!(
        m.value(r#"context_search_cache_lookups_total{layer="l1",project="sample",result="miss"}"#),
        4.0
    );
    assert_eq!(m.sum("context_search_duration_seconds_count", &[p]), 5.0);
    assert_eq!(m.value(r#"context_search_results_count{project="sample"}"#), 4.0);
    assert_eq!(m.value(r#"context_search_results_sum{project="sample"}"#), 2.0 + 2.0 + 0.0 + 1.0);
    assert_eq!(
        m.value(r#"context_index_files_total{file_type="rs",outcome="indexed",project="sample"}"#),
        2.0
    );
    assert_eq!(
        m.value(r#"context_index_files_total{file_type="md",outcome="indexed",project="sample"}"#),
        1.0
    );
    assert_eq!(
        m.value(r#"context_index_files_total{file_type="bin",outcome="skipped",project="sample"}"#),
        1.0
    );
    assert_eq!(
        m.value(r#"context_index_files_total{file_type="txt",outcome="skipped",project="sample"}"#),
        1.0
    );
    assert_eq!(m.value(r#"context_index_errors_total{code="binary",project="sample"}"#), 1.0);
    assert_eq!(m.value(r#"context_index_errors_total{code="too_large",project="sample"}"#), 1.0);
    assert_eq!(m.value(r#"context_index_queue_depth{project="sample"}"#), 0.0);
    assert_eq!(m.value(r#"context_file_opens_total{project="sample"}"#), 1.0);
    assert_eq!(m.value(r#"context_project_files{project="sample",state="total"}"#), 5.0);
    assert_eq!(m.value(r#"context_project_files{project="sample",state="indexed"}"#), 3.0);
    assert_eq!(m.value(r#"context_index_coverage_ratio{project="sample"}"#), 0.6);
    // README.md was never returned nor opened: 1 of 3 indexed files.
    host.wait_until("code health published", || {
        host.metrics().value(r#"context_dead_code_files{project="sample"}"#) == 1.0
    });
    assert_eq!(m.value(r#"context_analytics_events_received_total{kind="search"}"#), 5.0);
    assert_eq!(m.value(r#"context_analytics_events_received_total{kind="index"}"#), 5.0);
    assert_eq!(m.value(r#"context_analytics_events_received_total{kind="open"}"#), 1.0);
    assert_eq!(m.sum("context_analytics_events_dropped_total", &[]), 0.0);
    assert_eq!(
        m.value(
            r#"context_http_request_duration_seconds_count{code="400",method="GET",route="/api/v1/search"}"#
        ),
        1.0
    );
    assert!(m.value("process_resident_memory_bytes") > 0.0);
    assert!(m.value("process_open_fds") > 0.0);
    assert!(m.value("process_threads") > 0.0);
    for forbidden in ["src/lib.rs", "alice", "needle"] {
        assert!(!m.text.contains(forbidden), "'{forbidden}' leaked into metric labels");
    }

    let (status, health) = host.get_json("/api/v1/analytics/health", "ops");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["plugin"], "analytics");
    assert_eq!(health["interface_version"], "0.1.0");
    assert_eq!(health["events"]["received"]["search"], 5);
    assert_eq!(health["events"]["hook_panics"], 0);
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let scratch = Scratch::new("promtool");
    let project = sample_project(&scratch);
    let host = Host::start(spec(&[ANALYTICS], &[("analytics", true, "")], &project));
    host.wait_indexed(1);
    host.get("/api/v1/search?q=needle&project=sample", "alice");
    host.get("/api/v1/search?q=(&project=sample&kind=regex", "alice");
    let (_, text) = host.get("/metrics", "prometheus");
    let file = scratch.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < '{}'", file.display()))
        .output()
        .expect("sh runs");
    let findings =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        !findings.contains("not found"),
        "promtool is not installed (scripts/test-all.sh installs it): {findings}"
    );
    assert!(output.status.success() && findings.trim().is_empty(), "promtool findings:\n{findings}");
}

#[test]
fn a_disabled_plugin_serves_no_routes_and_receives_no_hooks() {
    let scratch = Scratch::new("disabled");
    let project = sample_project(&scratch);
    // The panicking fixture panics in every search hook: had it received
    // one, the log would say so.
    let host = Host::start(spec(
        &[ANALYTICS, PANICKING],
        &[("analytics", false, ""), ("panicking", false, "")],
        &project,
    ));
    host.wait_indexed(1);
    let (status, _) = host.get("/api/v1/search?q=needle&project=sample", "alice");
    assert_eq!(status, 200);
    for path in ["/metrics", "/api/v1/analytics/health", "/panicking/count"] {
        let (status, body) = host.get(path, "alice");
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert!(host.log_lines("panicked").is_empty(), "{}", host.log());
    assert_eq!(host.log_lines("plugin 'analytics' 0.1.0 from").len(), 1, "{}", host.log());
    assert!(host.log_lines("is not enabled ([plugins.analytics] enabled = true)").len() == 1);
}

#[test]
fn incompatible_and_corrupt_libraries_are_refused_in_one_line() {
    let scratch = Scratch::new("refused");
    let project = sample_project(&scratch);
    let mut host_spec =
        spec(&[ANALYTICS, INCOMPATIBLE], &[("analytics", true, ""), ("incompatible", true, "")], &project);
    host_spec.junk.push(("libnot_a_library.so".to_owned(), b"this is text, not ELF".to_vec()));
    let host = Host::start(host_spec);
    host.wait_indexed(1);

    let incompatible = host.log_lines("libincompatible_plugin.so' refused:");
    assert_eq!(incompatible.len(), 1, "{}", host.log());
    assert!(
        incompatible[0].ends_with("refused: built for plugin interface 1.0.0, this host speaks 0.1.0"),
        "{}",
        incompatible[0]
    );
    let corrupt = host.log_lines("libnot_a_library.so' refused:");
    assert_eq!(corrupt.len(), 1, "{}", host.log());
    assert!(corrupt[0].contains("not a loadable library"), "{}", corrupt[0]);
    // One line each: the abi_stable report (thousands of lines) stays out.
    assert!(host.log().lines().count() < 40, "{}", host.log());

    let (status, _) = host.get("/api/v1/search?q=needle&project=sample", "alice");
    assert_eq!(status, 200);
    assert_eq!(host.metrics().sum("context_search_requests_total", &[]), 1.0);

    let check = |file: &std::path::Path| {
        let out = Command::new(artifact("context-host")).arg("check-plugin").arg(file).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = check(&artifact(ANALYTICS));
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("name: analytics\nversion: 0.1.0\ninterface: 0.1.0 (this host speaks 0.1.0)"),
        "{stdout}"
    );
    let (code, _, stderr) = check(&artifact(INCOMPATIBLE));
    assert_eq!(code, Some(1));
    assert!(
        stderr.trim_end().ends_with("built for plugin interface 1.0.0, this host speaks 0.1.0"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let junk = scratch.path().join("junk.so");
    std::fs::write(&junk, "text").unwrap();
    let (code, _, stderr) = check(&junk);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not a loadable library"), "{stderr}");
}

#[test]
fn a_panicking_plugin_leaves_the_host_serving_every_request() {
    let scratch = Scratch::new("panics");
    let project = sample_project(&scratch);
    let host = Host::start(spec(
        &[ANALYTICS, PANICKING],
        &[("analytics", true, ""), ("panicking", true, "")],
        &project,
    ));
    host.wait_indexed(1);
    for i in 0..20 {
        let (status, body) = host.get_json("/api/v1/search?q=needle&project=sample", &format!("user{i}"));
        assert_eq!(status, 200);
        assert_eq!(body["total"], 2);
    }
    let (status, body) = host.get_json("/panicking/anything", "alice");
    assert_eq!(status, 500, "a handler that panics gets a 500, not a hung request");
    assert_eq!(body["error"]["code"], "plugin_failed");
    let (status, _) = host.get("/panicking/before", "alice");
    assert_eq!(status, 500);
    // The fixture counts what its guard caught: 20 search hooks, 2 handler
    // panics, 1 middleware panic, and an after_request panic per request.
    let (status, count) = host.get("/panicking/count", "alice");
    assert_eq!(status, 200);
    assert!(count.parse::<u64>().unwrap() >= 23, "{count}");
    // The analytics plugin beside it counted every search exactly.
    assert_eq!(host.metrics().sum("context_search_requests_total", &[]), 20.0);
    let (status, _) = host.get("/healthz", "alice");
    assert_eq!(status, 200);
    let lines = host.log_lines("plugin 'panicking' panicked in on_search_executed");
    assert_eq!(lines.len(), 20);
}

#[test]
fn a_bad_plugin_config_is_refused_with_the_key_named_and_the_host_serves() {
    let scratch = Scratch::new("badconfig");
    let project = sample_project(&scratch);
    let host = Host::start(spec(&[ANALYTICS], &[("analytics", true, "max_projcts = 3")], &project));
    host.wait_indexed(1);
    let line = host.log_lines("plugin 'analytics' failed to start");
    assert_eq!(line.len(), 1, "{}", host.log());
    assert!(line[0].contains("unknown field `max_projcts`"), "{}", line[0]);
    assert!(line[0].contains("`max_projects`"), "the accepted keys are listed: {}", line[0]);
    assert_eq!(host.get("/api/v1/search?q=needle&project=sample", "a").0, 200);
    assert_eq!(host.get("/metrics", "a").0, 404);
}

#[test]
fn sigterm_shuts_plugins_down_and_the_host_exits_cleanly() {
    let scratch = Scratch::new("sigterm");
    let project = sample_project(&scratch);
    let mut host = Host::start(spec(&[ANALYTICS], &[("analytics", true, "")], &project));
    host.wait_indexed(1);
    host.get("/api/v1/search?q=needle&project=sample", "alice");
    let status = host.stop();
    assert!(status.success(), "exit status {status}:\n{}", host.log());
    assert_eq!(host.log_lines("analytics flushed its pipeline and stopped").len(), 1, "{}", host.log());
    assert_eq!(host.log_lines("plugin 'analytics' shut down").len(), 1);
    assert_eq!(host.log_lines("context-host stopped").len(), 1);
}
