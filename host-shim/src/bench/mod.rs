//! `context-host bench …`: benchmarks that need whole host processes —
//! throughput and p99 with the plugin enabled against disabled
//! ([`throughput`]), `/metrics` with 50 projects ([`scrape`]), and the
//! plugin's resident memory under a fixed event rate ([`memory`]), and the
//! time from a rule's threshold crossing to its notification ([`alert`]). Each
//! starts real `context-host serve` processes (this same binary) over a
//! generated corpus and drives them with the load generator.

pub mod alert;
pub mod memory;
pub mod scrape;
pub mod throughput;

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

use crate::workload::{corpus, http::Client};

/// What every benchmark takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The analytics plugin library (a release build for real figures).
    #[arg(long)]
    pub plugin: PathBuf,
    /// Scratch folder for corpora, host configs, data and logs (replaced).
    #[arg(long, default_value = "target/bench")]
    pub workdir: PathBuf,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Common {
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.plugin.is_file() {
            bail!(
                "plugin library '{}' not found (build it: cargo build --release -p context-analytics)",
                self.plugin.display()
            );
        }
        Ok(())
    }

    /// Writes the figures as JSON when `--json` asks for it.
    pub fn emit<T: Serialize>(&self, figures: &T) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(figures)?;
        if let Some(path) = &self.json {
            fs::write(path, &text).with_context(|| format!("cannot write '{}'", path.display()))?;
        }
        Ok(())
    }
}

/// A generated corpus under `dir` (made afresh).
pub fn make_corpus(dir: &Path, files: usize, projects: usize) -> anyhow::Result<corpus::Corpus> {
    let started = Instant::now();
    let made = corpus::generate(dir, files, projects, 42, 1024 * 1024)?;
    eprintln!(
        "bench: corpus of {} files ({:.1} MB) in {} project(s) at {} ({:.1} s)",
        made.files,
        made.bytes as f64 / 1e6,
        made.projects.len(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(made)
}

/// One `context-host serve` process of this binary.
pub struct HostProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub label: String,
}

impl HostProcess {
    /// Starts a host in `dir` (replaced) with the plugin library in its
    /// plugins folder, enabled or not, over `projects`.
    pub fn start(
        dir: &Path,
        label: &str,
        plugin: &Path,
        enabled: bool,
        projects: &[(String, PathBuf)],
    ) -> anyhow::Result<Self> {
        Self::start_with(dir, label, plugin, enabled, projects, "")
    }

    /// [`HostProcess::start`] with the plugin's config (TOML written after
    /// `[plugins.analytics.config]`; nested tables spelled out in full).
    pub fn start_with(
        dir: &Path,
        label: &str,
        plugin: &Path,
        enabled: bool,
        projects: &[(String, PathBuf)],
        plugin_config: &str,
    ) -> anyhow::Result<Self> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("plugins"))?;
        let library = plugin.file_name().ok_or_else(|| anyhow!("bad plugin path"))?;
        fs::copy(plugin, dir.join("plugins").join(library))
            .with_context(|| format!("cannot copy '{}'", plugin.display()))?;
        let mut config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\ninstance_id = \"bench-{label}\"\nsnapshot_interval_secs = 2\n\n[plugins]\ndir = \"plugins\"\n\n[plugins.analytics]\nenabled = {enabled}\n"
        );
        if !plugin_config.is_empty() {
            config.push_str(&format!("\n[plugins.analytics.config]\n{plugin_config}\n"));
        }
        for (name, path) in projects {
            let path = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            config.push_str(&format!("\n[[projects]]\nname = \"{name}\"\npath = \"{}\"\n", path.display()));
        }
        fs::write(dir.join("host.toml"), config)?;
        let log = fs::File::create(dir.join("host.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["serve", "--config"])
            .arg(dir.join("host.toml"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start context-host serve")?;
        let mut host = HostProcess {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: dir.to_owned(),
            label: label.to_owned(),
        };
        host.addr = host.wait_for_address()?;
        Ok(host)
    }

    fn wait_for_address(&mut self) -> anyhow::Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let log = self.log();
            if let Some(rest) = log.split("context-host listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("");
                return addr.parse().with_context(|| format!("bad address '{addr}' in the host log"));
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("host '{}' exited with {status}:\n{log}", self.label);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("host '{}' did not listen within 60 s:\n{}", self.label, self.log())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("host.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Resident memory now, from `/proc/PID/status` (`VmRSS`).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow!("no VmRSS"))?;
        let kb: u64 = line.split_whitespace().nth(1).unwrap_or("").parse()?;
        Ok(kb * 1024)
    }

    /// CPU time the process has used so far (user + system), from
    /// `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        Ok(stat_cpu(&fs::read_to_string(format!("/proc/{}/stat", self.pid()))?)?.1)
    }

    /// CPU time the analytics plugin's own threads have used so far: its
    /// runtime's (`analytics-rt`, the SQLite event writer runs there) and
    /// sqlx's SQLite workers (queries, maintenance). What the plugin costs
    /// on the host's own threads (hooks, middleware) is not in it.
    pub fn plugin_cpu_seconds(&self) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for task in fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            // A thread that ended since the listing is skipped.
            let Ok(stat) = fs::read_to_string(task?.path().join("stat")) else { continue };
            let (name, seconds) = stat_cpu(&stat)?;
            if name.starts_with("analytics-rt") || name.starts_with("sqlx-sqlite") {
                total += seconds;
            }
        }
        Ok(total)
    }

    /// Waits for the first index of every project.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let mut client = Client::new(self.addr);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let reply = client.get("/api/v1/projects", "bench").await?;
            let body: serde_json::Value = serde_json::from_slice(&reply.body)?;
            if body["ready"] == true {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("host '{}' did not finish indexing within 300 s", self.label);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The plugin's health document.
    pub async fn plugin_health(&self) -> anyhow::Result<serde_json::Value> {
        let reply = Client::new(self.addr).get("/api/v1/analytics/health", "bench").await?;
        if reply.status != 200 {
            bail!("plugin health answered {} on host '{}'", reply.status, self.label);
        }
        Ok(serde_json::from_slice(&reply.body)?)
    }

    /// Events the plugin received so far (every kind).
    pub async fn plugin_events(&self) -> anyhow::Result<u64> {
        let health = self.plugin_health().await?;
        let received = &health["events"]["received"];
        Ok(["search", "index", "open", "snapshot"].iter().map(|k| received[k].as_u64().unwrap_or(0)).sum())
    }

    /// Waits until the plugin's queue is empty and its writer has stopped
    /// writing, so one round's backlog does not cost the next.
    pub async fn wait_plugin_idle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last_written = u64::MAX;
        loop {
            let health = self.plugin_health().await?;
            let depth = health["queue"]["depth"].as_u64().unwrap_or(0);
            let written = health["events"]["written"].as_u64().unwrap_or(0);
            if depth == 0 && written == last_written {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the plugin of host '{}' did not drain within 60 s", self.label);
            }
            last_written = written;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGTERM, then a clean exit within 30 s (else SIGKILL and an error).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("host '{}' exited with {status}:\n{}", self.label, self.log());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("host '{}' did not stop within 30 s of SIGTERM", self.label);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] }
}

/// The quartiles (25th and 75th percentiles, nearest rank) of `values`:
/// how far apart rounds of one benchmark fell.
pub fn quartiles(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    (at(0.25), at(0.75))
}

/// The mean of `values` and its two-sided 95% confidence interval
/// (Student's t, for independent samples such as separate processes);
/// `None` for fewer than two values.
pub fn mean_interval_95(values: &[f64]) -> Option<(f64, f64, f64)> {
    // t(0.975) for 1..=30 degrees of freedom; the normal 1.96 beyond.
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042,
    ];
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    let half = T.get(n - 2).copied().unwrap_or(1.96) * (variance / n as f64).sqrt();
    Some((mean, mean - half, mean + half))
}

/// Least-squares slope of `(x, y)` points (y per unit of x).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points
        .iter()
        .fold((0.0, 0.0), |(num, den), (x, y)| (num + (x - mx) * (y - my), den + (x - mx) * (x - mx)));
    if den == 0.0 { 0.0 } else { num / den }
}

/// The 1-minute load average (`/proc/loadavg`): recorded beside figures
/// so a run that shared the machine with other work shows it.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Warns when something else keeps the CPUs busy before a benchmark.
pub fn warn_if_busy() -> f64 {
    let load = load_average();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if load > 0.5 * cores {
        eprintln!(
            "bench: warning: load average {load:.2} on {cores} cores before starting: figures will be noisy"
        );
    }
    load
}

/// "met" or "MISSED", for the figures' verdict lines.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// The command name and CPU time (user + system) in a `/proc/…/stat` line:
/// fields 2, 14 and 15, in USER_HZ = 100 ticks/s.
fn stat_cpu(stat: &str) -> anyhow::Result<(&str, f64)> {
    // The command name may hold spaces: count fields after its ')'.
    let (head, rest) = stat.rsplit_once(')').ok_or_else(|| anyhow!("bad /proc stat"))?;
    let name = head.split_once('(').map_or("", |(_, n)| n);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).ok_or_else(|| anyhow!("short stat"))?.parse()?)
    };
    // fields[0] is field 3 (state): utime is field 14, stime 15.
    Ok((name, (ticks(11)? + ticks(12)?) / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mean_and_its_95_percent_interval() {
        assert_eq!(mean_interval_95(&[1.0]), None);
        // mean 2, sample sd 1, n 3: half-width 4.303 / sqrt(3).
        let (mean, low, high) = mean_interval_95(&[1.0, 2.0, 3.0]).unwrap();
        assert!((mean - 2.0).abs() < 1e-12);
        assert!((high - mean - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!((mean - low - (high - mean)).abs() < 1e-12);
        let (mean, low, high) = mean_interval_95(&[0.97; 8]).unwrap();
        assert!((mean - 0.97).abs() < 1e-12 && (low - 0.97).abs() < 1e-12 && (high - 0.97).abs() < 1e-12);
    }

    #[test]
    fn medians_and_slopes() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-12);
        assert_eq!(slope(&[(0.0, 1.0)]), 0.0);
    }
}
