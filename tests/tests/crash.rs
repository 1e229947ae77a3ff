//! Issue 16, end to end: a host killed with SIGKILL under steady search
//! traffic loses no answered search and stores none twice, on the embedded
//! SQLite store and on PostgreSQL; also when the kill comes during the
//! replay of the spool, during maintenance runs, and while PostgreSQL is
//! down. Kill moments are random (the seed is printed to reproduce one).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use context_e2e::{ANALYTICS, Host, HostSpec, Postgres, Scratch, artifact, write_files};

fn project(scratch: &Scratch) -> PathBuf {
    let root = scratch.path().join("project");
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            (format!("src/m{i}.rs"), format!("pub fn needle{i}() {{ let needle = {i}; }}\n").into_bytes())
        })
        .collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    write_files(&root, &files);
    root
}

fn spec(project: &Path, storage: &str, extra: &str) -> HostSpec {
    HostSpec {
        libraries: vec![artifact(ANALYTICS)],
        plugins: vec![(
            "analytics".into(),
            true,
            format!("[plugins.analytics.config.storage]\n{storage}\n{extra}"),
        )],
        projects: vec![("sample".into(), project.to_owned())],
        instance_id: Some("crash-host".into()),
        ..Default::default()
    }
}

/// A small seeded generator (xorshift), so a failing run can be repeated.
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        let seed = std::env::var("CRASH_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("crash test seed: {seed} (CRASH_TEST_SEED={seed} repeats it)");
        Random(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Steady search traffic from a few client threads, each sending one
/// search after another until told to stop or the host is gone; keeps the
/// search id of every search answered 200. Bounded: at most 20 s and
/// 20,000 requests a thread.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(base_url: &str, user: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..3)
            .map(|t| {
                let (stop, base, user) = (stop.clone(), base_url.to_owned(), user.to_owned());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(2)))
                        .build()
                        .into();
                    let until = Instant::now() + Duration::from_secs(20);
                    let mut answered = Vec::new();
                    for i in 0..20_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > until {
                            break;
                        }
                        let url = format!("{base}/api/v1/search?q=needle{}&project=sample", (t * 7 + i) % 40);
                        let Ok(mut response) = agent.get(&url).header("X-Context-User", &user).call() else {
                            break; // the host is gone
                        };
                        if response.status().as_u16() != 200 {
                            continue;
                        }
                        let Ok(text) = response.body_mut().read_to_string() else { break };
                        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
                        answered.push(body["search_id"].as_str().unwrap_or_default().to_owned());
                    }
                    answered
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients; the search ids answered 200.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    }
}

/// Where the rows are read from after the restarts.
enum Store<'a> {
    Sqlite(&'a Path),
    Postgres(&'a Postgres),
}

impl Store<'_> {
    /// (rows, distinct search ids, distinct (boot, seq)) of `user`'s
    /// searches, and their search ids: from one read.
    fn searches(&self, user: &str) -> (u64, u64, u64, HashSet<String>) {
        let rows: Vec<(String, i64, i64)> = match self {
            Store::Sqlite(dir) => {
                let file = find(dir, "analytics.db").expect("the SQLite file");
                let conn =
                    rusqlite::Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                        .unwrap();
                let mut statement = conn
                    .prepare("SELECT search_id, boot_id, seq FROM search_events WHERE user_id = ?1")
                    .unwrap();
                statement
                    .query_map([user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Store::Postgres(pg) => pg
                .psql(&format!("SELECT search_id, boot_id, seq FROM search_events WHERE user_id = '{user}'"))
                .lines()
                .map(|line| {
                    let f: Vec<&str> = line.split('|').collect();
                    (f[0].to_owned(), f[1].parse().unwrap(), f[2].parse().unwrap())
                })
                .collect(),
        };
        let ids: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
        let seqs: HashSet<(i64, i64)> = rows.iter().map(|r| (r.1, r.2)).collect();
        (rows.len() as u64, ids.len() as u64, seqs.len() as u64, ids)
    }

    /// Waits for every answered search to be stored, then checks that none
    /// is missing and none stored twice.
    fn check(&self, host: &Host, user: &str, answered: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (rows, ids, seqs, stored) = self.searches(user);
            let missing: Vec<&String> = answered.iter().filter(|id| !stored.contains(*id)).collect();
            if missing.is_empty() {
                assert_eq!(rows, ids, "no search stored twice (by search id)");
                assert_eq!(rows, seqs, "no event id stored twice");
                assert!(rows as usize >= answered.len(), "answered {} <= stored {rows}", answered.len());
                eprintln!("{user}: {} answered, {rows} stored", answered.len());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} answered searches never stored (e.g. {:?}); health: {}",
                missing.len(),
                answered.len(),
                missing.first(),
                host.get("/api/v1/analytics/health", "ops").1
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

fn health(host: &Host) -> serde_json::Value {
    host.get_json("/api/v1/analytics/health", "ops").1
}

/// Traffic for a random 0.3-1.8 s, then SIGKILL; the ids answered.
fn run_and_kill(host: Host, user: &str, random: &mut Random) -> (Scratch, Vec<String>) {
    let load = Load::start(&host.base_url, user);
    std::thread::sleep(Duration::from_millis(300 + random.below(1_500)));
    let dir = host.kill9();
    (dir, load.finish())
}

#[test]
fn a_host_killed_under_traffic_loses_no_answered_search_on_sqlite() {
    let mut random = Random::seeded();
    let scratch = Scratch::new("crash-sqlite");
    let root = project(&scratch);
    // The embedded default, with maintenance every second so that some
    // kills land in a run.
    let storage = "maintenance_interval_secs = 1";
    let mut dir = scratch;
    let mut rounds = Vec::new();
    for round in 0..3 {
        let host = Host::start_in(dir, spec(&root, storage, ""));
        host.wait_indexed(1);
        // A user per round: the host numbers search ids per process.
        let user = format!("load{round}");
        let (next, ids) = run_and_kill(host, &user, &mut random);
        assert!(!ids.is_empty(), "round {round}: the load got answers");
        rounds.push((user, ids));
        dir = next;
    }
    let host = Host::start_in(dir, spec(&root, storage, ""));
    for (user, answered) in &rounds {
        Store::Sqlite(host.dir.path()).check(&host, user, answered);
    }
    let h = health(&host);
    assert_eq!(h["queue"]["corrupt_records"], 0, "{h}");
    assert!(host.log().contains("holds") || h["queue"]["recovered_events"].as_u64().is_some(), "{h}");
}

#[test]
fn a_host_killed_under_traffic_loses_no_answered_search_on_postgres() {
    let mut random = Random::seeded();
    let pg = Postgres::start();
    let scratch = Scratch::new("crash-pg");
    let root = project(&scratch);
    let storage = format!("url = \"{}\"\ntimescaledb = \"off\"\nmaintenance_interval_secs = 1", pg.url);
    let host = Host::start_in(scratch, spec(&root, &storage, ""));
    host.wait_indexed(1);
    let (dir, answered) = run_and_kill(host, "load", &mut random);
    let host = Host::start_in(dir, spec(&root, &storage, ""));
    Store::Postgres(&pg).check(&host, "load", &answered);
}

#[test]
fn a_host_killed_while_postgres_is_down_and_again_during_the_spool_replay_loses_nothing() {
    let mut random = Random::seeded();
    let pg = Postgres::start();
    let scratch = Scratch::new("crash-replay");
    let root = project(&scratch);
    // Small batches: the replay of the spool takes many writes, so a kill
    // soon after the restart lands in it.
    let storage = format!("url = \"{}\"\ntimescaledb = \"off\"", pg.url);
    let pipeline = "[plugins.analytics.config.pipeline]\nbatch_max_events = 20";
    let host = Host::start_in(scratch, spec(&root, &storage, pipeline));
    host.wait_indexed(1);
    host.wait_until("storage connected", || health(&host)["storage"]["connected"] == true);
    pg.stop();
    // Killed while PostgreSQL is down: events in the queue and the spool.
    let load = Load::start(&host.base_url, "down");
    host.wait_until("searches spooled", || {
        health(&host)["storage"]["events_spooled"].as_u64().unwrap_or(0) >= 3_000
    });
    std::thread::sleep(Duration::from_millis(random.below(500)));
    let mut dir = host.kill9();
    let mut rounds = vec![("down".to_owned(), load.finish())];
    pg.restart();
    let mut replays_seen = 0;
    for round in 0..3 {
        let host = Host::start_in(dir, spec(&root, &storage, pipeline));
        let user = format!("replay{round}");
        let load = Load::start(&host.base_url, &user);
        if round == 0 {
            // Killed once the replay is under way (some replayed, some not).
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let h = health(&host);
                if h["storage"]["events_replayed"].as_u64().unwrap_or(0) > 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            std::thread::sleep(Duration::from_millis(random.below(400)));
        }
        let h = health(&host);
        if h["storage"]["spool"]["bytes"].as_u64().unwrap_or(0) > 0
            && h["storage"]["events_replayed"].as_u64() > Some(0)
        {
            replays_seen += 1;
        }
        dir = host.kill9();
        rounds.push((user, load.finish()));
    }
    eprintln!("{replays_seen} of 3 kills came with the spool half replayed");
    assert!(replays_seen >= 1, "no kill landed in the spool's replay");
    let host = Host::start_in(dir, spec(&root, &storage, pipeline));
    for (user, answered) in &rounds {
        Store::Postgres(&pg).check(&host, user, answered);
    }
    host.wait_until("spool replayed", || health(&host)["storage"]["spool"]["bytes"] == 0);
}

#[test]
fn a_host_killed_during_a_maintenance_run_loses_nothing_and_the_next_run_finishes_it() {
    let mut random = Random::seeded();
    let pg = Postgres::start();
    let scratch = Scratch::new("crash-maintenance");
    let root = project(&scratch);
    let storage = format!("url = \"{}\"\ntimescaledb = \"off\"\nmaintenance_interval_secs = 1", pg.url);
    let host = Host::start_in(scratch, spec(&root, &storage, ""));
    host.wait_indexed(1);
    host.wait_until("storage connected", || health(&host)["storage"]["connected"] == true);
    let load = Load::start(&host.base_url, "maint");
    std::thread::sleep(Duration::from_millis(500 + random.below(500)));
    // Another session holds the minute rollup: the next maintenance run
    // has taken its marks and waits on its first rollup write, mid-run.
    let mut locker = std::process::Command::new("psql")
        .arg(&pg.url)
        .args(["-c", "BEGIN; LOCK TABLE search_rollup_1m IN SHARE MODE; SELECT pg_sleep(30); COMMIT;"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    host.wait_until("a maintenance run waiting mid-way", || {
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE '%search_rollup_1m%' AND pid <> pg_backend_pid()",
        ) != "0"
    });
    let dir = host.kill9();
    let answered = load.finish();
    let _ = locker.kill();
    let _ = locker.wait();
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()");

    let host = Host::start_in(dir, spec(&root, &storage, ""));
    Store::Postgres(&pg).check(&host, "maint", &answered);
    // The killed run's transaction rolled back with its marks: a later run
    // rolls the minutes up, and they add up to the raw events.
    host.wait_until("rollups caught up", || {
        pg.psql("SELECT count(*) FROM rollup_dirty") == "0"
            && pg.psql("SELECT coalesce(sum(searches), 0) FROM search_rollup_1m")
                == pg.psql("SELECT count(*) FROM search_events")
    });
}

/// The queue file of a host's data dir in /dev/shm (as plugin.rs names it).
fn shm_queue(dir: &Path) -> PathBuf {
    let data_dir = std::fs::canonicalize(dir.join("data/plugins/analytics")).unwrap();
    let hash = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    PathBuf::from(format!("/dev/shm/context-analytics-{hash:016x}.queue"))
}

#[test]
fn events_the_journal_synced_survive_the_loss_of_the_queue_a_reboot_would_bring() {
    let scratch = Scratch::new("crash-journal");
    let root = project(&scratch);
    // Rows wait in the worker a minute: when the host dies nothing is
    // stored yet, and every event lives in the queue and its journal only.
    let pipeline = "[plugins.analytics.config.pipeline]\nflush_interval_ms = 60000\nfsync_interval_ms = 200";
    let host = Host::start_in(scratch, spec(&root, "", pipeline));
    host.wait_indexed(1);
    let load = Load::start(&host.base_url, "journal");
    std::thread::sleep(Duration::from_millis(800));
    let answered = load.finish();
    // Longer than fsync_interval_ms: every answered search is journaled.
    std::thread::sleep(Duration::from_millis(600));
    let queue = shm_queue(host.dir.path());
    assert!(queue.exists(), "the queue lives in /dev/shm");
    let dir = host.kill9();
    // A reboot empties /dev/shm.
    std::fs::remove_file(&queue).unwrap();
    let host = Host::start_in(dir, spec(&root, "", pipeline));
    let h = health(&host);
    assert_eq!(h["queue"]["survived"], false, "{h}");
    assert!(h["queue"]["journal_events"].as_u64().unwrap() >= answered.len() as u64, "{h}");
    Store::Sqlite(host.dir.path()).check(&host, "journal", &answered);
}
