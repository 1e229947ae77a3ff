//! Issue 3, end to end: the real host and plugin writing to a real
//! PostgreSQL that goes away and comes back, a host killed with SIGKILL
//! while events wait in the spool, a corrupt spool, bad storage config.

use std::time::Duration;

use context_e2e::{ANALYTICS, Host, HostSpec, Postgres, Scratch, artifact, free_port, write_files};

fn project(scratch: &Scratch) -> std::path::PathBuf {
    let root = scratch.path().join("project");
    write_files(
        &root,
        &[("src/main.rs", b"fn main() { let needle = 1; }\n"), ("src/lib.rs", b"pub fn needle() {}\n")],
    );
    root
}

fn spec(project: &std::path::Path, storage: &str) -> HostSpec {
    HostSpec {
        libraries: vec![artifact(ANALYTICS)],
        plugins: vec![(
            "analytics".into(),
            true,
            format!(
                "[plugins.analytics.config.storage]\n{storage}\n[plugins.analytics.config.pipeline]\nflush_interval_ms = 50"
            ),
        )],
        projects: vec![("sample".into(), project.to_owned())],
        instance_id: Some("e2e-host".into()),
        ..Default::default()
    }
}

fn searches(host: &Host, n: usize, user: &str) {
    for i in 0..n {
        let (status, _) = host.get(&format!("/api/v1/search?q=needle{i}&project=sample"), user);
        assert_eq!(status, 200);
    }
}

fn health(host: &Host) -> serde_json::Value {
    let (status, body) = host.get_json("/api/v1/analytics/health", "ops");
    assert_eq!(status, 200);
    body
}

fn storage_u64(host: &Host, key: &str) -> u64 {
    health(host)["storage"][key].as_u64().unwrap_or(0)
}

/// Rows in search_events (0 while the server cannot answer).
fn count_searches(pg: &Postgres) -> u64 {
    pg.try_psql("SELECT count(*) FROM search_events").ok().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn an_unreachable_database_at_start_spools_and_health_says_why() {
    let scratch = Scratch::new("unreachable");
    let root = project(&scratch);
    let dead = format!("url = \"postgres://postgres@127.0.0.1:{}/analytics\"", free_port());
    let host = Host::start(spec(&root, &dead));
    host.wait_indexed(1);
    searches(&host, 5, "alice");
    host.wait_until("searches spooled", || storage_u64(&host, "events_spooled") >= 5 + 2);
    // The first connection attempt gives up after the pool's timeout.
    host.wait_until("the reason known", || health(&host)["storage"]["last_error"].is_string());
    let h = health(&host);
    assert_eq!(h["status"], "degraded");
    assert!(
        h["reason"].as_str().unwrap().starts_with("analytics database unreachable, events are spooled:"),
        "{h}"
    );
    assert_eq!(h["storage"]["connected"], false);
    assert_eq!(h["storage"]["backend"], "postgres");
    assert!(h["storage"]["last_error"].as_str().unwrap().contains("refused"), "{h}");
    assert!(h["storage"]["spool"]["bytes"].as_u64().unwrap() > 0);
    let m = host.metrics();
    assert_eq!(m.value("context_analytics_storage_up"), 0.0);
    assert!(m.value("context_analytics_spool_bytes") > 0.0);
    assert_eq!(m.sum("context_search_requests_total", &[]), 5.0, "metrics are served from memory meanwhile");
}

#[test]
fn a_malformed_storage_url_is_a_startup_error_naming_the_key() {
    let scratch = Scratch::new("badurl");
    let root = project(&scratch);
    let host = Host::start(spec(&root, "url = \"mysql://app:hunter2@db/analytics\""));
    host.wait_indexed(1);
    let lines = host.log_lines("plugin 'analytics' failed to start");
    assert_eq!(lines.len(), 1, "{}", host.log());
    assert!(
        lines[0].ends_with(
            "invalid storage.url 'mysql://app:***@db/analytics': unknown scheme \
             (expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE)"
        ),
        "{}",
        lines[0]
    );
    assert!(!host.log().contains("hunter2"), "the password stays out of the log");
    assert_eq!(host.get("/api/v1/search?q=needle&project=sample", "a").0, 200, "the host serves without it");
}

#[test]
fn a_postgres_outage_loses_and_doubles_nothing() {
    let pg = Postgres::start();
    let scratch = Scratch::new("outage");
    let root = project(&scratch);
    let host = Host::start(spec(&root, &format!("url = \"{}\"\ntimescaledb = \"off\"", pg.url)));
    host.wait_indexed(1);
    host.wait_until("storage connected", || health(&host)["storage"]["connected"] == true);
    searches(&host, 20, "before");
    host.wait_until("first searches stored", || count_searches(&pg) == 20);

    pg.stop();
    searches(&host, 30, "during");
    host.wait_until("outage noticed", || health(&host)["storage"]["connected"] == false);
    host.wait_until("outage searches spooled", || storage_u64(&host, "events_spooled") >= 30);
    assert_eq!(health(&host)["status"], "degraded");

    pg.restart();
    host.wait_until("spool replayed", || {
        let h = health(&host);
        h["storage"]["connected"] == true && h["storage"]["spool"]["bytes"] == 0
    });
    host.wait_until("all searches stored", || count_searches(&pg) >= 50);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count_searches(&pg), 50, "exactly once");
    assert_eq!(pg.psql("SELECT count(DISTINCT (boot_id, seq)) FROM search_events"), "50");
    assert_eq!(pg.psql("SELECT count(*) FROM search_events WHERE user_id = 'during'"), "30");
    assert_eq!(health(&host)["status"], "ok");
}

#[test]
fn a_host_killed_while_events_are_spooled_replays_them_once_after_restart() {
    let pg = Postgres::start();
    pg.stop();
    let scratch = Scratch::new("kill9");
    let root = project(&scratch);
    let storage = format!("url = \"{}\"\ntimescaledb = \"off\"", pg.url);
    let host = Host::start(spec(&root, &storage));
    host.wait_indexed(1);
    searches(&host, 40, "spooled");
    host.wait_until("searches spooled", || storage_u64(&host, "events_spooled") >= 40 + 2);
    let dir = host.kill9();

    pg.restart();
    let host = Host::start_in(dir, spec(&root, &storage));
    host.wait_until("spool replayed", || {
        let h = health(&host);
        h["storage"]["connected"] == true && h["storage"]["spool"]["bytes"] == 0
    });
    searches(&host, 5, "after");
    host.wait_until("new searches stored", || count_searches(&pg) >= 45);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        pg.psql("SELECT count(*) FROM search_events WHERE user_id = 'spooled'"),
        "40",
        "none lost or doubled"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM search_events WHERE user_id = 'after'"), "5");
    assert_eq!(
        pg.psql("SELECT count(DISTINCT boot_id) FROM search_events"),
        "2",
        "two boots of one instance"
    );
    assert_eq!(pg.psql("SELECT DISTINCT instance_id FROM search_events"), "e2e-host");
}

#[test]
fn a_corrupt_spool_segment_is_reported_and_skipped() {
    let pg = Postgres::start();
    pg.stop();
    let scratch = Scratch::new("corrupt");
    let root = project(&scratch);
    let storage = format!("url = \"{}\"\ntimescaledb = \"off\"", pg.url);
    let host = Host::start(spec(&root, &storage));
    host.wait_indexed(1);
    searches(&host, 10, "lost");
    host.wait_until("searches spooled", || storage_u64(&host, "events_spooled") >= 10 + 2);
    let dir = host.stop_keep();

    // Flip bytes in the middle of every segment, and add a file that is not
    // a segment at all.
    let spool = dir.path().join("data/plugins/analytics/spool");
    let mut segments = 0;
    for entry in std::fs::read_dir(&spool).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            for b in &mut bytes[middle..middle + 8] {
                *b ^= 0x5a;
            }
            std::fs::write(&path, bytes).unwrap();
            segments += 1;
        }
    }
    assert!(segments >= 1);
    std::fs::write(
        spool.join("00000000000000000001-00000000000000000001.seg"),
        b"this is not a spool segment at all",
    )
    .unwrap();

    pg.restart();
    let host = Host::start_in(dir, spec(&root, &storage));
    host.wait_until("spool handled", || {
        let h = health(&host);
        h["storage"]["connected"] == true && h["storage"]["spool"]["bytes"] == 0
    });
    let reports = host.log_lines("is corrupt");
    assert_eq!(reports.len(), segments + 1, "{}", host.log());
    assert!(reports.iter().any(|l| l.contains("not a spool segment (bad magic)")), "{reports:?}");
    assert_eq!(health(&host)["storage"]["spool"]["corrupt_segments"], segments as u64 + 1);
    assert_eq!(host.metrics().value("context_analytics_spool_corrupt_segments_total"), (segments + 1) as f64);
    assert!(spool.join("corrupt").read_dir().unwrap().count() == segments + 1);
    searches(&host, 3, "fresh");
    host.wait_until("fresh searches stored", || {
        pg.try_psql("SELECT count(*) FROM search_events WHERE user_id = 'fresh'").as_deref() == Ok("3")
    });
}

#[test]
fn two_hosts_write_to_one_postgres_at_once() {
    let pg = Postgres::start();
    let scratch = Scratch::new("twohosts");
    let root = project(&scratch);
    let storage = format!("url = \"{}\"\ntimescaledb = \"off\"", pg.url);
    let mut a = spec(&root, &storage);
    a.instance_id = Some("host-a".into());
    let mut b = spec(&root, &storage);
    b.instance_id = Some("host-b".into());
    let (a, b) = (Host::start(a), Host::start(b));
    a.wait_indexed(1);
    b.wait_indexed(1);
    std::thread::scope(|s| {
        s.spawn(|| searches(&a, 25, "user-a"));
        s.spawn(|| searches(&b, 25, "user-b"));
    });
    a.wait_until("both hosts' searches stored", || count_searches(&pg) >= 50);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        pg.psql("SELECT string_agg(instance_id || '=' || n, ',' ORDER BY instance_id) FROM (SELECT instance_id, count(*) AS n FROM search_events GROUP BY 1) t"),
        "host-a=25,host-b=25"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM search_events WHERE user_id = 'user-a' AND instance_id <> 'host-a'"),
        "0"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM schema_migrations"), "5", "migrated once");
}
