//! `context-host loadgen`: a bounded workload against a running host on
//! 127.0.0.1. Searches are drawn from each project's own vocabulary (the
//! host's `/api/v1/projects/{name}/terms`) with Zipf popularity; a share
//! finds nothing, a share are regexes, call-shaped phrases or case variants;
//! several users (also Zipf); file opens on some results, naming the search
//! they came from; periodic reindexing (optionally after editing files of a
//! generated corpus); and optional bursts for alert and anomaly testing.
//!
//! It always stops by itself: after `--seconds` or `--max-requests`,
//! whichever comes first. `--rate 0` is a closed loop (each connection sends
//! its next request when the last is answered); `--rate N` paces all
//! connections together to N requests per second.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, ValueEnum};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{
    corpus::MARKER,
    http::{Client, encode, loopback_addr},
    latency::Histogram,
    random::{Rng, Zipf},
};

/// What a burst does while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BurstKind {
    None,
    /// `--burst-factor` times the request rate (needs `--rate`).
    Traffic,
    /// Searches with invalid regexes: a search error-rate spike.
    Errors,
    /// Queries that find nothing: a zero-result spike.
    Zero,
    /// Uncacheable regexes that scan every file: a latency spike.
    Slow,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadConfig {
    /// The host; only 127.0.0.1 (or localhost) is accepted.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Stop after this many requests (searches, opens and reindexes).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests per second over all connections; 0: closed loop, as fast
    /// as answers come.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Distinct users (`user-000`…), Zipf-distributed.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Terms drawn from per project, most frequent first.
    #[arg(long, default_value_t = 2000)]
    pub vocabulary: usize,
    /// Zipf exponent of term popularity.
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// Share of searches for words that occur nowhere.
    #[arg(long, default_value_t = 0.08)]
    pub zero_share: f64,
    /// Words found nowhere are drawn from a pool of this many (a user
    /// repeats a failing query); 0: a fresh word every time (never cached).
    #[arg(long, default_value_t = 0)]
    pub zero_words: u64,
    /// Share of regex searches built from a term.
    #[arg(long, default_value_t = 0.07)]
    pub regex_share: f64,
    /// Share of call-shaped literal searches (`term(`).
    #[arg(long, default_value_t = 0.08)]
    pub phrase_share: f64,
    /// Share of searches for a term in another case (`Term`, `TERM`).
    #[arg(long, default_value_t = 0.05)]
    pub case_share: f64,
    /// Share of searches with results after which a result is opened.
    #[arg(long, default_value_t = 0.25)]
    pub open_share: f64,
    /// Seconds between reindex requests (projects in turn); 0: none.
    #[arg(long, default_value_t = 10.0)]
    pub reindex_every: f64,
    /// A corpus made by `gen-corpus` (it has a `.context-corpus` file):
    /// before each reindex of one of its projects, `--edits` of its files
    /// get a new line. No other folder is ever written to.
    #[arg(long)]
    pub edit_corpus: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub edits: usize,
    /// Only these projects (comma-separated); default: all.
    #[arg(long, value_delimiter = ',')]
    pub projects: Vec<String>,
    #[arg(long, value_enum, default_value_t = BurstKind::None)]
    pub burst: BurstKind,
    /// A burst starts every this many seconds (the first after one period).
    #[arg(long, default_value_t = 30.0)]
    pub burst_every: f64,
    #[arg(long, default_value_t = 5.0)]
    pub burst_seconds: f64,
    /// Rate multiplier of `traffic` bursts.
    #[arg(long, default_value_t = 5.0)]
    pub burst_factor: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds to wait for the host to finish its first index.
    #[arg(long, default_value_t = 120.0)]
    pub ready_timeout: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exactly this many requests (searches and opens) on each connection,
    /// in order (benchmarks: two hosts given the same quotas and seed get
    /// the same requests, whatever their speed); empty: no quota. The time
    /// and `max_requests` limits still apply.
    #[arg(skip)]
    pub connection_requests: Vec<u64>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: LoadConfig,
        }
        Defaults::parse_from(["loadgen"]).config
    }
}

impl LoadConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if !(self.seconds.is_finite() && self.seconds > 0.0) {
            bail!("--seconds must be a positive number (got {})", self.seconds);
        }
        if self.max_requests == 0 {
            bail!("--max-requests must be at least 1");
        }
        if !(1..=4096).contains(&self.connections) {
            bail!("--connections must be 1 to 4096 (got {})", self.connections);
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            bail!("--rate must be 0 (closed loop) or a positive number (got {})", self.rate);
        }
        let shares = [self.zero_share, self.regex_share, self.phrase_share, self.case_share];
        if shares.iter().chain([&self.open_share]).any(|s| !(0.0..=1.0).contains(s))
            || shares.iter().sum::<f64>() > 1.0
        {
            bail!("shares must be within 0..1 and the query shares must add up to at most 1");
        }
        if self.burst == BurstKind::Traffic && self.rate == 0.0 {
            bail!("--burst traffic needs --rate (a closed loop is already as fast as it goes)");
        }
        if self.burst != BurstKind::None && !(self.burst_every > 0.0 && self.burst_seconds > 0.0) {
            bail!("--burst-every and --burst-seconds must be positive");
        }
        if self.users == 0 || self.vocabulary == 0 {
            bail!("--users and --vocabulary must be at least 1");
        }
        if !self.connection_requests.is_empty() && self.connection_requests.len() != self.connections {
            bail!(
                "{} per-connection quotas for {} connections",
                self.connection_requests.len(),
                self.connections
            );
        }
        Ok(())
    }
}

/// What a run did, as counted by the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// From the first request to the last answer.
    pub seconds: f64,
    /// Requests answered (any status), per second.
    pub requests_per_second: f64,
    pub requests: u64,
    /// Searches the host ran and reported to plugins (ok, error, timeout).
    pub searches: u64,
    pub search_ok: u64,
    pub zero_results: u64,
    pub search_errors: u64,
    pub search_timeouts: u64,
    pub cache: CacheCounts,
    pub opens: u64,
    pub reindexes: u64,
    pub edits: u64,
    /// Transport errors and unexpected statuses.
    pub failures: u64,
    pub first_failure: Option<String>,
    /// Over every search and open.
    pub latency_ms: Quantiles,
    /// `time`, `count` or `quota`.
    pub stopped_by: String,
    /// Requests sent on each connection, in order (the quotas that make
    /// another run send the same requests).
    #[serde(default)]
    pub per_connection: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheCounts {
    pub l1: u64,
    pub l2: u64,
    pub l3: u64,
    pub miss: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Report {
    pub fn print(&self) {
        let c = &self.cache;
        println!(
            "loadgen: {} requests in {:.1} s ({:.0}/s), stopped by {}\n  searches {} (ok {}, nothing found {}, errors {}, timeouts {}); cache l1 {} l2 {} l3 {} miss {}\n  opens {}, reindexes {}, files edited {}, failures {}\n  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
            self.requests,
            self.seconds,
            self.requests_per_second,
            self.stopped_by,
            self.searches,
            self.search_ok,
            self.zero_results,
            self.search_errors,
            self.search_timeouts,
            c.l1,
            c.l2,
            c.l3,
            c.miss,
            self.opens,
            self.reindexes,
            self.edits,
            self.failures,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.max,
            self.latency_ms.mean,
        );
        if let Some(first) = &self.first_failure {
            println!("  first failure: {first}");
        }
    }
}

/// Runs the workload on a runtime of its own (one thread: the host it
/// measures needs the cores).
pub fn run_blocking(config: &LoadConfig) -> anyhow::Result<Report> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(config))
}

struct Target {
    name: String,
    terms: Vec<String>,
    zipf: Zipf,
    /// Source files `--edit-corpus` may append to.
    editable: Vec<PathBuf>,
}

struct Shared {
    config: LoadConfig,
    addr: SocketAddr,
    targets: Vec<Target>,
    users: Vec<String>,
    user_zipf: Zipf,
    started: Instant,
    end: Instant,
    reserved: AtomicU64,
    /// Rate mode: when the next request is due.
    next_slot: Mutex<Instant>,
}

pub async fn run(config: &LoadConfig) -> anyhow::Result<Report> {
    config.validate()?;
    let addr = loopback_addr(&config.url).map_err(|e| anyhow!(e))?;
    let targets = discover(config, addr).await?;
    let started = Instant::now();
    let shared = Arc::new(Shared {
        config: config.clone(),
        addr,
        targets,
        users: (0..config.users).map(|i| format!("user-{i:03}")).collect(),
        user_zipf: Zipf::new(config.users, 1.0),
        started,
        end: started + Duration::from_secs_f64(config.seconds),
        reserved: AtomicU64::new(0),
        next_slot: Mutex::new(started),
    });
    let mut rng = Rng::new(config.seed);
    let mut tasks = Vec::new();
    for index in 0..config.connections {
        let quota = config.connection_requests.get(index).copied();
        tasks.push(tokio::spawn(connection(shared.clone(), rng.fork(), quota)));
    }
    if config.reindex_every > 0.0 {
        tasks.push(tokio::spawn(reindexer(shared.clone(), rng.fork())));
    }
    let mut stats = Stats::default();
    let mut per_connection = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        let task = task.await.context("a load task failed")?;
        if index < config.connections {
            per_connection.push(task.sent);
        }
        stats.merge(task);
    }
    let seconds = started.elapsed().as_secs_f64();
    let answered = stats.answered;
    Ok(Report {
        seconds,
        requests_per_second: answered as f64 / seconds,
        requests: answered + stats.failures,
        searches: stats.search_ok + stats.search_errors + stats.search_timeouts,
        search_ok: stats.search_ok,
        zero_results: stats.zero_results,
        search_errors: stats.search_errors,
        search_timeouts: stats.search_timeouts,
        cache: stats.cache,
        opens: stats.opens,
        reindexes: stats.reindexes,
        edits: stats.edits,
        failures: stats.failures,
        first_failure: stats.first_failure,
        latency_ms: Quantiles {
            p50: stats.latency.quantile_ms(0.5),
            p90: stats.latency.quantile_ms(0.9),
            p99: stats.latency.quantile_ms(0.99),
            max: stats.latency.max_ms(),
            mean: stats.latency.mean_ms(),
        },
        stopped_by: if !config.connection_requests.is_empty() && per_connection == config.connection_requests
        {
            "quota"
        } else if shared.reserved.load(Ordering::Relaxed) >= config.max_requests {
            "count"
        } else {
            "time"
        }
        .to_owned(),
        per_connection,
    })
}

#[derive(Deserialize)]
struct ProjectsReply {
    ready: bool,
    projects: Vec<ProjectEntry>,
}

#[derive(Deserialize)]
struct ProjectEntry {
    name: String,
}

#[derive(Deserialize)]
struct TermsReply {
    terms: Vec<TermEntry>,
}

#[derive(Deserialize)]
struct TermEntry {
    term: String,
}

/// Waits (boundedly) for the host's first index, then takes each project's
/// vocabulary and, with `--edit-corpus`, its editable files.
async fn discover(config: &LoadConfig, addr: SocketAddr) -> anyhow::Result<Vec<Target>> {
    let mut client = Client::new(addr);
    let deadline = Instant::now() + Duration::from_secs_f64(config.ready_timeout.max(0.0));
    let projects = loop {
        let reply = client.get("/api/v1/projects", "loadgen").await;
        let reply = match reply {
            Ok(r) if r.status == 200 => serde_json::from_slice::<ProjectsReply>(&r.body)
                .context("unexpected answer from /api/v1/projects")?,
            Ok(r) => bail!("GET /api/v1/projects answered {}", r.status),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("host not answering yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot reach the host at {}", config.url)),
        };
        if reply.ready {
            break reply.projects;
        }
        if Instant::now() >= deadline {
            bail!("the host did not finish indexing within {} s", config.ready_timeout);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let corpus = match &config.edit_corpus {
        Some(dir) if !dir.join(MARKER).exists() => {
            bail!("'{}' is not a generated corpus (no {MARKER}): loadgen edits nothing else", dir.display())
        }
        other => other.clone(),
    };
    let mut targets = Vec::new();
    for project in projects {
        if !config.projects.is_empty() && !config.projects.contains(&project.name) {
            continue;
        }
        let path = format!("/api/v1/projects/{}/terms?limit={}", encode(&project.name), config.vocabulary);
        let reply = client.get(&path, "loadgen").await?;
        if reply.status != 200 {
            bail!("GET {path} answered {}", reply.status);
        }
        let terms: Vec<String> =
            serde_json::from_slice::<TermsReply>(&reply.body)?.terms.into_iter().map(|t| t.term).collect();
        let editable = match &corpus {
            Some(dir) => editable_files(&dir.join(&project.name)),
            None => Vec::new(),
        };
        targets.push(Target {
            name: project.name,
            zipf: Zipf::new(terms.len().max(1), config.zipf),
            terms,
            editable,
        });
    }
    for wanted in &config.projects {
        if !targets.iter().any(|t| &t.name == wanted) {
            bail!("the host has no project '{wanted}'");
        }
    }
    if targets.is_empty() {
        bail!("the host serves no project");
    }
    Ok(targets)
}

fn editable_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                    if matches!(ext, "rs" | "py" | "ts" | "go" | "java") {
                        out.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

#[derive(Default)]
struct Stats {
    /// Requests this connection was allowed to send.
    sent: u64,
    answered: u64,
    search_ok: u64,
    zero_results: u64,
    search_errors: u64,
    search_timeouts: u64,
    cache: CacheCounts,
    opens: u64,
    reindexes: u64,
    edits: u64,
    failures: u64,
    first_failure: Option<String>,
    latency: Histogram,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.answered += o.answered;
        self.search_ok += o.search_ok;
        self.zero_results += o.zero_results;
        self.search_errors += o.search_errors;
        self.search_timeouts += o.search_timeouts;
        self.cache.l1 += o.cache.l1;
        self.cache.l2 += o.cache.l2;
        self.cache.l3 += o.cache.l3;
        self.cache.miss += o.cache.miss;
        self.opens += o.opens;
        self.reindexes += o.reindexes;
        self.edits += o.edits;
        self.failures += o.failures;
        self.first_failure = self.first_failure.take().or(o.first_failure);
        self.latency.merge(&o.latency);
    }

    fn fail(&mut self, what: String) {
        self.failures += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(what);
        }
    }

    fn count_cache(&mut self, layer: &str) {
        match layer {
            "l1" => self.cache.l1 += 1,
            "l2" => self.cache.l2 += 1,
            "l3" => self.cache.l3 += 1,
            _ => self.cache.miss += 1,
        }
    }
}

impl Shared {
    /// Takes one request from the budget, waiting for its slot in rate
    /// mode. False when the run is over: time, `max_requests`, or this
    /// connection's `quota` of requests `sent`.
    async fn pace(&self, quota: Option<u64>, sent: &mut u64) -> bool {
        if quota.is_some_and(|quota| *sent >= quota) {
            return false;
        }
        if self.config.rate > 0.0 {
            let slot = {
                let mut next = self.next_slot.lock();
                let now = Instant::now();
                // A host that falls behind is not flooded with the backlog.
                let slot = (*next).max(now - Duration::from_millis(100));
                let rate = self.config.rate
                    * if self.burst(slot) == BurstKind::Traffic { self.config.burst_factor } else { 1.0 };
                *next = slot + Duration::from_secs_f64(1.0 / rate);
                slot
            };
            if slot >= self.end {
                return false;
            }
            tokio::time::sleep_until(slot.into()).await;
        }
        let go = Instant::now() < self.end
            && self.reserved.fetch_add(1, Ordering::Relaxed) < self.config.max_requests;
        *sent += u64::from(go);
        go
    }

    fn burst(&self, at: Instant) -> BurstKind {
        let c = &self.config;
        if c.burst == BurstKind::None {
            return BurstKind::None;
        }
        let t = at.saturating_duration_since(self.started).as_secs_f64();
        if t >= c.burst_every && t % c.burst_every < c.burst_seconds { c.burst } else { BurstKind::None }
    }

    /// A query for `target`: (text, kind).
    fn query(&self, rng: &mut Rng, target: &Target, burst: BurstKind) -> (String, &'static str) {
        let c = &self.config;
        let term = if target.terms.is_empty() {
            "main".to_owned()
        } else {
            target.terms[target.zipf.sample(rng)].clone()
        };
        match burst {
            BurstKind::Errors => return (format!("({}", regex::escape(&term)), "regex"),
            BurstKind::Zero => return (nothing(rng, 0), "literal"),
            BurstKind::Slow => {
                return (format!(r"\w+_\w+\s*\(\w*{}\w*\)", rng.below(1_000_000)), "regex");
            }
            BurstKind::None | BurstKind::Traffic => {}
        }
        let r = rng.unit();
        let mut edge = c.zero_share;
        if r < edge {
            return (nothing(rng, c.zero_words), "literal");
        }
        edge += c.regex_share;
        if r < edge {
            let t = regex::escape(&term);
            let pattern = match rng.below(3) {
                0 => format!(r"{t}_[a-z]+"),
                1 => format!(r"(fn|def|func)\s+{t}"),
                _ => format!(r"\b{t}\b"),
            };
            return (pattern, "regex");
        }
        edge += c.phrase_share;
        if r < edge {
            return (format!("{term}("), "literal");
        }
        edge += c.case_share;
        if r < edge {
            let variant = if rng.chance(0.5) {
                term.to_uppercase()
            } else {
                let mut chars = term.chars();
                chars
                    .next()
                    .map(|f| f.to_uppercase().collect::<String>() + chars.as_str())
                    .unwrap_or_default()
            };
            return (variant, "literal");
        }
        (term, "literal")
    }
}

/// A word no generated or real source contains: fresh, or one of a pool
/// of `pool` words.
fn nothing(rng: &mut Rng, pool: u64) -> String {
    let n = if pool == 0 { rng.next_u64() } else { Rng::new(rng.next_u64() % pool).next_u64() };
    format!("zq{:012x}", n & 0xffff_ffff_ffff)
}

#[derive(Deserialize)]
struct SearchReply {
    search_id: String,
    cache: String,
    total: u64,
    results: Vec<HitReply>,
}

#[derive(Deserialize)]
struct HitReply {
    path: String,
}

#[derive(Deserialize)]
struct FailedSearch {
    search: SearchReply,
}

async fn connection(shared: Arc<Shared>, mut rng: Rng, quota: Option<u64>) -> Stats {
    let mut client = Client::new(shared.addr);
    let mut stats = Stats::default();
    let c = &shared.config;
    while shared.pace(quota, &mut stats.sent).await {
        let target = &shared.targets[rng.below(shared.targets.len())];
        let user = &shared.users[shared.user_zipf.sample(&mut rng)];
        let burst = shared.burst(Instant::now());
        let (query, kind) = shared.query(&mut rng, target, burst);
        let path =
            format!("/api/v1/search?project={}&kind={kind}&q={}", encode(&target.name), encode(&query));
        let sent = Instant::now();
        let reply = match client.get(&path, user).await {
            Ok(reply) => reply,
            Err(e) => {
                stats.fail(format!("GET {path}: {e}"));
                continue;
            }
        };
        stats.latency.record(sent.elapsed());
        stats.answered += 1;
        let search = match reply.status {
            200 => serde_json::from_slice::<SearchReply>(&reply.body).ok(),
            400 | 504 => serde_json::from_slice::<FailedSearch>(&reply.body).ok().map(|f| f.search),
            _ => None,
        };
        let Some(search) = search else {
            stats.fail(format!(
                "GET {path}: status {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
            continue;
        };
        stats.count_cache(&search.cache);
        match reply.status {
            200 => {
                stats.search_ok += 1;
                stats.zero_results += u64::from(search.total == 0);
            }
            400 => stats.search_errors += 1,
            _ => stats.search_timeouts += 1,
        }
        if search.results.is_empty()
            || !rng.chance(c.open_share)
            || !shared.pace(quota, &mut stats.sent).await
        {
            continue;
        }
        // Users mostly open the first results.
        let mut rank = 1;
        while rank < search.results.len() && rng.chance(0.4) {
            rank += 1;
        }
        let body = serde_json::json!({
            "project": target.name,
            "path": search.results[rank - 1].path,
            "rank": rank,
            "search_id": search.search_id,
        });
        let sent = Instant::now();
        match client.post_json("/api/v1/files/open", user, body.to_string().as_bytes()).await {
            Ok(reply) if reply.status == 200 => {
                stats.latency.record(sent.elapsed());
                stats.answered += 1;
                stats.opens += 1;
            }
            // A file edited away between search and open is not an error.
            Ok(reply) if reply.status == 404 && !target.editable.is_empty() => stats.answered += 1,
            Ok(reply) => {
                stats.answered += 1;
                stats.fail(format!("open: status {} {}", reply.status, String::from_utf8_lossy(&reply.body)));
            }
            Err(e) => stats.fail(format!("open: {e}")),
        }
    }
    stats
}

async fn reindexer(shared: Arc<Shared>, mut rng: Rng) -> Stats {
    let mut client = Client::new(shared.addr);
    let mut stats = Stats::default();
    let every = Duration::from_secs_f64(shared.config.reindex_every);
    let mut next = shared.started + every;
    let mut turn = 0;
    loop {
        if next >= shared.end {
            return stats;
        }
        tokio::time::sleep_until(next.into()).await;
        next += every;
        if shared.reserved.fetch_add(1, Ordering::Relaxed) >= shared.config.max_requests {
            return stats;
        }
        let target = &shared.targets[turn % shared.targets.len()];
        turn += 1;
        for _ in 0..shared.config.edits.min(target.editable.len()) {
            let file = rng.pick(&target.editable);
            let term = target.terms.get(target.zipf.sample(&mut rng)).map_or("edit", String::as_str);
            let line = format!("// edited by loadgen: {term} {}\n", rng.next_u64() % 1_000_000);
            let appended = std::fs::OpenOptions::new()
                .append(true)
                .open(file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
            match appended {
                Ok(()) => stats.edits += 1,
                Err(e) => stats.fail(format!("cannot edit '{}': {e}", file.display())),
            }
        }
        let path = format!("/api/v1/projects/{}/reindex", encode(&target.name));
        match client.post_json(&path, "loadgen", b"").await {
            Ok(reply) if reply.status == 202 => {
                stats.answered += 1;
                stats.reindexes += 1;
            }
            Ok(reply) => {
                stats.answered += 1;
                stats.fail(format!("POST {path}: status {}", reply.status));
            }
            Err(e) => stats.fail(format!("POST {path}: {e}")),
        }
    }
}
