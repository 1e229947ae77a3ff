//! Harness for the end-to-end tests: runs the real `context-host` binary
//! with real plugin `.so` files copied into a plugins folder, over real
//! project files, and talks to it over loopback HTTP.
//!
//! Build first (`cargo build --workspace`, as `scripts/test-all.sh` does);
//! `CONTEXT_E2E_PROFILE=release` tests the release artifacts instead.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// The analytics plugin library, as built by cargo.
pub const ANALYTICS: &str = "libcontext_analytics.so";
pub const PANICKING: &str = "libpanicking_plugin.so";
pub const INCOMPATIBLE: &str = "libincompatible_plugin.so";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A built artifact (binary or library) of the workspace.
pub fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = std::env::var("CONTEXT_E2E_PROFILE").unwrap_or_else(|_| "debug".to_owned());
    let path = target.join(profile).join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

/// A scratch folder removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A placeholder that owns nothing.
    fn detached() -> Self {
        Self(PathBuf::new())
    }
}

impl Scratch {
    pub fn new(label: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "context-e2e-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            // A host killed here left its event queue in /dev/shm, named
            // after its data dir as the plugin names it (plugin.rs,
            // queue_file); a clean shutdown removes it itself.
            if let Ok(data_dir) = fs::canonicalize(self.0.join("data/plugins/analytics")) {
                let hash =
                    data_dir.as_os_str().as_encoded_bytes().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                    });
                let _ = fs::remove_file(format!("/dev/shm/context-analytics-{hash:016x}.queue"));
            }
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Writes files (path relative to `root`, content) and creates folders.
pub fn write_files(root: &Path, files: &[(&str, &[u8])]) {
    for (path, content) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
}

/// How to start a host.
#[derive(Default)]
pub struct HostSpec {
    /// Library files copied into the plugins folder.
    pub libraries: Vec<PathBuf>,
    /// Extra files dropped into the plugins folder (name, content).
    pub junk: Vec<(String, Vec<u8>)>,
    /// `[plugins.<name>]` sections: name, enabled, config table body.
    pub plugins: Vec<(String, bool, String)>,
    /// `[[projects]]`: name and path.
    pub projects: Vec<(String, PathBuf)>,
    /// `[server] instance_id`, to keep an identity across restarts.
    pub instance_id: Option<String>,
    /// Environment variables of the host process (secrets of channels).
    pub env: Vec<(String, String)>,
}

pub struct Host {
    child: Option<Child>,
    pub base_url: String,
    pub dir: Scratch,
    log_path: PathBuf,
    /// Where this process's lines start in the (shared, appended) log.
    log_start: u64,
    agent: ureq::Agent,
}

impl Host {
    pub fn start(spec: HostSpec) -> Host {
        Self::start_in(Scratch::new("host"), spec)
    }

    /// Starts a host in `dir`, keeping what an earlier host left there (its
    /// data dir: spool, SQLite file).
    pub fn start_in(dir: Scratch, spec: HostSpec) -> Host {
        let plugins = dir.path().join("plugins");
        fs::create_dir_all(&plugins).unwrap();
        for library in &spec.libraries {
            fs::copy(library, plugins.join(library.file_name().unwrap())).unwrap();
        }
        for (name, content) in &spec.junk {
            fs::write(plugins.join(name), content).unwrap();
        }
        let mut config = String::from(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\nsnapshot_interval_secs = 1\n",
        );
        if let Some(id) = &spec.instance_id {
            config.push_str(&format!("instance_id = \"{id}\"\n"));
        }
        config.push_str("\n[plugins]\ndir = \"plugins\"\n");
        for (name, enabled, table) in &spec.plugins {
            config.push_str(&format!("\n[plugins.{name}]\nenabled = {enabled}\n"));
            if !table.is_empty() {
                config.push_str(&format!("[plugins.{name}.config]\n{table}\n"));
            }
        }
        for (name, path) in &spec.projects {
            config.push_str(&format!("\n[[projects]]\nname = \"{name}\"\npath = \"{}\"\n", path.display()));
        }
        let config_path = dir.path().join("host.toml");
        fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("host.log");
        // Appends, so a restarted host's log follows the first one's.
        let log = fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(artifact("context-host"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("RUST_BACKTRACE")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("context-host starts");
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut host = Host { child: Some(child), base_url: String::new(), dir, log_path, log_start, agent };
        host.base_url = host.wait_for_address();
        host
    }

    /// Ends the host with SIGKILL: no shutdown, no flush.
    pub fn kill9(mut self) -> Scratch {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let dir = std::mem::replace(&mut self.dir, Scratch::detached());
        dir
    }

    /// Stops the host with SIGTERM and keeps its folder for a restart.
    pub fn stop_keep(mut self) -> Scratch {
        let status = self.stop();
        assert!(status.success(), "exit status {status}:\n{}", self.log());
        std::mem::replace(&mut self.dir, Scratch::detached())
    }

    fn wait_for_address(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let log = self.log();
            if let Some(rest) = log.split("context-host listening on ").nth(1) {
                return rest.lines().next().unwrap().trim().to_owned();
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("context-host exited with {status} before listening:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("context-host did not listen within 30 s:\n{}", self.log());
    }

    /// Everything this host process logged so far.
    pub fn log(&self) -> String {
        let all = fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(&all[(self.log_start as usize).min(all.len())..]).into_owned()
    }

    /// Log lines of this host process containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    }

    pub fn get(&self, path_and_query: &str, user: &str) -> (u16, String) {
        let response = self
            .agent
            .get(format!("{}{path_and_query}", self.base_url))
            .header("X-Context-User", user)
            .call()
            .expect("request reaches the host");
        read(response)
    }

    pub fn post_json(&self, path: &str, user: &str, body: &serde_json::Value) -> (u16, String) {
        let response = self
            .agent
            .post(format!("{}{path}", self.base_url))
            .header("X-Context-User", user)
            .header("content-type", "application/json")
            .send(body.to_string())
            .expect("request reaches the host");
        read(response)
    }

    pub fn get_json(&self, path_and_query: &str, user: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get(path_and_query, user);
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        (status, json)
    }

    /// The `/metrics` exposition, parsed.
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics", "prometheus");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Waits until every project was indexed (the indexer logs each).
    pub fn wait_indexed(&self, projects: usize) {
        self.wait_until("projects indexed", || self.log_lines("indexed project '").len() >= projects);
    }

    pub fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("context-host did not stop within 20 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> (u16, String) {
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, body)
}

/// A parsed Prometheus text exposition: `name{labels}` → value, with labels
/// in the order the encoder writes them (sorted by name).
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self { samples, text: text.to_owned() }
    }

    /// The value of a series, or 0 when absent (a counter never touched).
    pub fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// Sum over every series of `name` whose labels contain all `labels`
    /// (`key="value"` strings).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
                n == name && labels.iter().all(|l| rest.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real PostgreSQL 15 server of the test's own (`scripts/db/postgres.sh`),
/// which the test may stop and start again.
pub struct Postgres {
    dir: Scratch,
    pub port: u16,
    pub url: String,
}

impl Postgres {
    pub fn start() -> Self {
        let dir = Scratch::new("pg");
        let port = free_port();
        let mut pg = Postgres { dir, port, url: String::new() };
        pg.url = pg.run("start");
        pg
    }

    fn run(&self, action: &str) -> String {
        let script = workspace_root().join("scripts/db/postgres.sh");
        let mut command = Command::new(&script);
        command.arg(action).arg(self.dir.path().join("data"));
        if action == "start" {
            command.arg(self.port.to_string());
        }
        let out = command.output().expect("scripts/db/postgres.sh runs");
        assert!(
            out.status.success(),
            "postgres.sh {action} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim().to_owned()
    }

    pub fn stop(&self) {
        self.run("stop");
    }

    pub fn restart(&self) {
        self.run("start");
    }

    /// Runs one statement with psql and returns its output, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|e| panic!("psql failed on `{sql}`: {e}"))
    }

    /// Like [`Postgres::psql`], for polling: an error is a value.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .arg(&self.url)
            .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
            .output()
            .map_err(|e| format!("psql does not run: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let script = workspace_root().join("scripts/db/postgres.sh");
        let _ = Command::new(script).arg("stop").arg(self.dir.path().join("data")).output();
    }
}

/// What a `context-host` subcommand run did.
#[derive(Debug)]
pub struct CommandRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `context-host` with `args` (a subcommand that ends by itself, such
/// as `gen-corpus` or `loadgen`); kills it and panics if it runs longer
/// than `limit`.
pub fn run_context_host(args: &[&str], limit: Duration) -> CommandRun {
    use std::io::Read;
    let started = Instant::now();
    let mut child = Command::new(artifact("context-host"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("context-host starts");
    let pipe = |mut reader: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = reader.read_to_string(&mut text);
            text
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().unwrap()));
    let stderr = pipe(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("context-host {args:?} still ran after {limit:?}: {}", stderr.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CommandRun {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A real HTTP/1.1 receiver on 127.0.0.1 (webhook and Slack stand-in):
/// records every request and answers with the status set by
/// [`Receiver::answer`] (200 by default), closing each connection.
pub struct Receiver {
    pub port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::start_on(0)
    }

    /// Listens on `port` (0: any free port).
    pub fn start_on(port: u16) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("receiver port free");
        let port = listener.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
        let (g, st) = (got.clone(), status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (g, st) = (g.clone(), st.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_owned();
                    let path = parts.next().unwrap_or("").to_owned();
                    let mut headers = BTreeMap::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                        }
                    }
                    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let code = st.load(std::sync::atomic::Ordering::SeqCst);
                    if code == 200 {
                        g.lock().unwrap().push(Received {
                            method,
                            path,
                            headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                    }
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {code} X\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                });
            }
        });
        Receiver { port, got, status }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests answered 200 so far (others are answered and not kept).
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The status the next requests get.
    pub fn answer(&self, status: u16) {
        self.status.store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits up to `limit` until `done` holds for what was received.
    pub fn wait(&self, what: &str, limit: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; received: {got:#?}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}
