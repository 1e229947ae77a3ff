//! Moving from SQLite to PostgreSQL without losing history: a host fills
//! its SQLite database, stops, `context-analytics-admin copy` copies it into
//! a real PostgreSQL, and a host on PostgreSQL then gives the same answers
//! on every route as the SQLite host gave, with every row there.

use std::{process::Command, time::Duration};

use context_e2e::{ANALYTICS, Host, HostSpec, Postgres, Scratch, artifact, write_files};
use serde_json::Value;

const SEARCHES: [(&str, &str); 8] = [
    ("alice", "needle"),
    ("alice", "haystack"),
    ("alice", "needle"),
    ("bob", "needle"),
    ("bob", "missing_symbol"),
    ("carol", "haystack"),
    ("carol", "missing_symbol"),
    ("carol", "parse"),
];

fn spec(storage: &str, projects: Vec<(String, std::path::PathBuf)>, instance: &str) -> HostSpec {
    HostSpec {
        libraries: vec![artifact(ANALYTICS)],
        plugins: vec![(
            "analytics".into(),
            true,
            format!(
                "[plugins.analytics.config.storage]\n{storage}\nmaintenance_interval_secs = 1\n\
                 [plugins.analytics.config.pipeline]\nflush_interval_ms = 50"
            ),
        )],
        projects,
        instance_id: Some(instance.into()),
        ..Default::default()
    }
}

fn admin(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(artifact("context-analytics-admin")).args(args).output().expect("admin runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The routes compared before and after, over one fixed range: every
/// dataset, and every raw event exported row by row.
fn answers(host: &Host, range: &str) -> Vec<(String, Value)> {
    let mut answers: Vec<(String, Value)> = [
        "search-performance?aggregation=p95",
        "search-performance?aggregation=avg&step=1h",
        "cache-performance?",
        "index-performance?",
        "usage?",
        "top-queries?",
        "top-queries?zero_results=true",
        "code-health?project=sample",
    ]
    .iter()
    .map(|route| {
        let path = format!("/api/v1/analytics/{route}&{range}");
        let (status, body) = host.get_json(&path, "reader");
        assert_eq!(status, 200, "{path}: {body}");
        (path, body)
    })
    .collect();
    for dataset in ["raw-searches", "raw-opens", "raw-index", "raw-snapshots"] {
        let path = format!("/api/v1/analytics/export?dataset={dataset}&format=ndjson&{range}");
        let (status, body) = host.get(&path, "reader");
        assert_eq!(status, 200, "{path}: {body}");
        let rows: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        answers.push((path, Value::Array(rows)));
    }
    answers
}

#[test]
fn a_sqlite_history_copied_into_postgres_answers_the_same() {
    let scratch = Scratch::new("copy");
    let root = scratch.path().join("project");
    write_files(
        &root,
        &[
            ("src/main.rs", b"fn main() { let needle = parse(); }\nfn parse() -> u32 { 1 }\n"),
            ("src/lib.rs", b"pub fn needle() {}\npub fn haystack() {}\n"),
            ("src/unused.rs", b"pub fn never_found() {}\n"),
        ],
    );
    let projects = vec![("sample".to_owned(), root.clone())];
    let host = Host::start(spec("url = \"sqlite://analytics.db\"", projects, "copy-sqlite"));
    host.wait_indexed(1);
    let mut opens = 0;
    for (user, query) in SEARCHES {
        let (status, body) = host.get_json(&format!("/api/v1/search?q={query}&project=sample"), user);
        assert_eq!(status, 200, "{body}");
        if let Some(path) = body["results"][0]["path"].as_str() {
            let open = serde_json::json!({"project": "sample", "path": path, "search_id": body["search_id"]});
            assert_eq!(host.post_json("/api/v1/files/open", user, &open).0, 200);
            opens += 1;
        }
    }
    host.wait_until("every search written and rolled up", || {
        let (_, body) = host.get_json("/api/v1/analytics/search-performance?timerange=1h", "reader");
        body["summary"]["requests"].as_u64() == Some(SEARCHES.len() as u64)
    });
    // The server writes a project snapshot every second: stop it, and read
    // the "before" answers from the same data dir served with no projects
    // (so nothing new is written), over one fixed range for both hosts.
    let dir = host.stop_keep();
    let host = Host::start_in(dir, spec("url = \"sqlite://analytics.db\"", Vec::new(), "copy-sqlite"));
    host.wait_until("storage ready", || {
        let (_, health) = host.get_json("/api/v1/analytics/health", "reader");
        health["storage"]["ready"] == true
    });
    let (_, day) = host.get_json("/api/v1/analytics/search-performance?timerange=24h", "reader");
    let range = format!(
        "from={}&to={}",
        day["range"]["from"].as_str().unwrap(),
        day["range"]["to"].as_str().unwrap()
    );
    let before = answers(&host, &range);
    assert_eq!(before[0].1["summary"]["requests"], SEARCHES.len());
    let raw_searches = before.iter().find(|(p, _)| p.contains("raw-searches")).unwrap();
    assert_eq!(raw_searches.1.as_array().unwrap().len(), SEARCHES.len());
    let snapshots = before.iter().find(|(p, _)| p.contains("raw-snapshots")).unwrap();
    assert!(!snapshots.1.as_array().unwrap().is_empty(), "snapshots are compared too");
    let dir = host.stop_keep();
    let sqlite = dir.path().join("data/plugins/analytics/analytics.db");
    assert!(sqlite.exists(), "{}", sqlite.display());

    let pg = Postgres::start();
    let from = format!("sqlite://{}", sqlite.display());
    let (ok, stdout, stderr) = admin(&["copy", "--from", &from, "--to", &pg.url]);
    assert!(ok, "copy failed:\n{stdout}{stderr}");
    let count = |table: &str| pg.psql(&format!("SELECT count(*) FROM {table}")).parse::<usize>().unwrap();
    assert_eq!(count("search_events"), SEARCHES.len());
    assert_eq!(count("open_events"), opens);
    assert_eq!(count("index_events"), 3, "three files indexed");
    assert!(count("project_snapshots") >= 1);
    assert_eq!(count("ingest_progress"), 1, "one boot of one instance");
    assert!(count("search_rollup_1m") >= 1, "rollups are copied");
    let events =
        count("search_events") + count("open_events") + count("index_events") + count("project_snapshots");
    assert!(stdout.starts_with(&format!("copied {events} events")), "{stdout}");
    assert!(stderr.contains(&format!("  search_events: {} rows", SEARCHES.len())), "{stderr}");
    assert_eq!(
        pg.psql("SELECT string_agg(user_id || ':' || query, ',' ORDER BY seq) FROM search_events"),
        SEARCHES.iter().map(|(user, query)| format!("{user}:{query}")).collect::<Vec<_>>().join(",")
    );

    // And back into a new SQLite file: times and result lists convert both
    // ways, and the copy is complete again.
    let back = format!("sqlite://{}", dir.path().join("back.db").display());
    let (ok, again, stderr) = admin(&["copy", "--from", &pg.url, "--to", &back]);
    assert!(ok, "copy back failed:\n{again}{stderr}");
    assert!(again.starts_with(&format!("copied {events} events")), "{again}");

    // A second copy into the same database is refused: it would double.
    let (ok, _, stderr) = admin(&["copy", "--from", &from, "--to", &pg.url]);
    assert!(!ok);
    assert!(stderr.contains("the target already holds 3 rows in index_events"), "{stderr}");
    assert_eq!(count("search_events"), SEARCHES.len());

    // A host on PostgreSQL (no projects: nothing new is written) answers
    // exactly as the SQLite host did.
    let host = Host::start(spec(&format!("url = \"{}\"", pg.url), Vec::new(), "copy-postgres"));
    host.wait_until("storage ready", || {
        let (_, health) = host.get_json("/api/v1/analytics/health", "reader");
        health["storage"]["ready"] == true && health["storage"]["backend"] == "postgres"
    });
    std::thread::sleep(Duration::from_millis(1500)); // one maintenance pass
    for ((path, before), (_, after)) in before.iter().zip(answers(&host, &range)) {
        assert_eq!(before, &after, "{path} differs after the move");
    }
}

#[test]
fn copy_refuses_bad_input_with_what_is_allowed() {
    let (ok, _, stderr) =
        admin(&["copy", "--from", "sqlite:///nonexistent/analytics.db", "--to", "sqlite://b.db"]);
    assert!(!ok);
    assert!(stderr.contains("no SQLite database at '/nonexistent/analytics.db'"), "{stderr}");
    let (ok, _, stderr) = admin(&["copy", "--from", "mysql://h/db", "--to", "sqlite://b.db"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown scheme (expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE)"),
        "{stderr}"
    );
    let scratch = Scratch::new("copy-bad");
    let db = scratch.path().join("a.db");
    std::fs::write(&db, b"").unwrap();
    let from = format!("sqlite://{}", db.display());
    let (ok, _, stderr) =
        admin(&["copy", "--from", &from, "--to", "sqlite://b.db", "--timescaledb", "maybe"]);
    assert!(!ok);
    assert!(stderr.contains("--timescaledb 'maybe' (expected auto, on or off)"), "{stderr}");
}

/// Without downtime beyond a restart: the server is switched to PostgreSQL
/// first and keeps writing there, then its SQLite history is merged in with
/// `copy --append`; the buckets both databases wrote are recomputed.
#[test]
fn a_server_switched_to_postgres_first_gets_its_sqlite_history_merged_in() {
    let scratch = Scratch::new("append");
    let root = scratch.path().join("project");
    write_files(
        &root,
        &[
            ("src/main.rs", b"fn main() { let needle = parse(); }\nfn parse() -> u32 { 1 }\n"),
            ("src/lib.rs", b"pub fn needle() {}\npub fn haystack() {}\n"),
        ],
    );
    let projects = vec![("sample".to_owned(), root.clone())];
    let search = |host: &Host, user: &str, query: &str| {
        let (status, body) = host.get(&format!("/api/v1/search?q={query}&project=sample"), user);
        assert_eq!(status, 200, "{body}");
    };
    let requests = |host: &Host| {
        let (_, body) = host.get_json("/api/v1/analytics/search-performance?timerange=1h", "reader");
        body["summary"]["requests"].as_u64().unwrap_or(0)
    };
    // The same server (same instance id) before and after the switch.
    let old = Host::start(spec("url = \"sqlite://analytics.db\"", projects.clone(), "switched"));
    old.wait_indexed(1);
    for (user, query) in SEARCHES {
        search(&old, user, query);
    }
    old.wait_until("searches written", || requests(&old) == SEARCHES.len() as u64);
    let dir = old.stop_keep();
    let sqlite = format!("sqlite://{}", dir.path().join("data/plugins/analytics/analytics.db").display());

    let pg = Postgres::start();
    let new = Host::start(spec(&format!("url = \"{}\"", pg.url), projects, "switched"));
    new.wait_indexed(1);
    for query in ["needle", "needle", "haystack"] {
        search(&new, "dave", query);
    }
    new.wait_until("new searches written", || requests(&new) == 3);

    let (ok, _, stderr) = admin(&["copy", "--from", &sqlite, "--to", &pg.url]);
    assert!(!ok);
    assert!(stderr.contains("or use --append to merge into a database servers already write"), "{stderr}");

    let (ok, stdout, stderr) = admin(&["copy", "--append", "--from", &sqlite, "--to", &pg.url]);
    assert!(ok, "append failed:\n{stdout}{stderr}");
    assert!(stderr.contains(&format!("  search_events: {} rows", SEARCHES.len())), "{stderr}");
    assert!(stderr.contains("  ingest_progress: 1 rows"), "{stderr}");
    let count = |sql: &str| pg.psql(sql).parse::<usize>().unwrap();
    assert_eq!(count("SELECT count(*) FROM search_events"), SEARCHES.len() + 3);
    assert_eq!(count("SELECT count(*) FROM ingest_progress WHERE instance_id = 'switched'"), 2, "two boots");

    // The server answers for both histories, from rollups too: the minute
    // both databases wrote was recomputed from the merged raw events.
    new.wait_until("merged history rolled up", || requests(&new) == SEARCHES.len() as u64 + 3);
    let (_, hourly) = new.get_json("/api/v1/analytics/search-performance?timerange=24h&step=1h", "reader");
    assert_eq!(hourly["summary"]["requests"], SEARCHES.len() + 3, "{hourly}");
    let (_, top) = new.get_json("/api/v1/analytics/top-queries?timerange=1h&limit=1", "reader");
    assert_eq!(top["queries"][0]["query"], "needle");
    assert_eq!(top["queries"][0]["count"], 3 + 2, "{top}");
    let (status, export) =
        new.get("/api/v1/analytics/export?dataset=raw-searches&format=ndjson&timerange=1h", "r");
    assert_eq!(status, 200);
    assert_eq!(export.lines().count(), SEARCHES.len() + 3);

    // Merging the same history twice is refused, naming the instance.
    let (ok, _, stderr) = admin(&["copy", "--append", "--from", &sqlite, "--to", &pg.url]);
    assert!(!ok);
    assert!(stderr.contains("the target already holds events of instance switched boot "), "{stderr}");
    assert_eq!(count("SELECT count(*) FROM search_events"), SEARCHES.len() + 3);
}
