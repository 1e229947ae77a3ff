//! Benchmark 2: host search throughput and p99 latency with the analytics
//! plugin enabled against disabled — same binary, same library, same corpus,
//! same run. Two hosts run side by side (the plugin `enabled = true` in one,
//! `false` in the other) and take turns: every round loads each for the
//! same time with the same closed-loop workload (fixed connections, same
//! seed), in alternating order (on-off, off-on, …) so drift hits both
//! alike. The enabled host's plugin drains its queue before the other runs.
//! Figures are medians over rounds, and the ratios of those medians.

use serde::Serialize;

use super::{Common, HostProcess, make_corpus, median, verdict};
use crate::workload::loadgen::{self, LoadConfig, Report};

#[derive(Debug, Clone, clap::Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub common: Common,
    /// Files in the generated corpus.
    #[arg(long, default_value_t = 3000)]
    pub files: usize,
    /// Projects the corpus is split into.
    #[arg(long, default_value_t = 3)]
    pub projects: usize,
    /// Rounds; each measures both hosts once.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Seconds of load per host per round.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of unmeasured load per host before the first round.
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Concurrent connections of the closed loop.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
}

#[derive(Debug, Serialize)]
struct Round {
    round: usize,
    enabled: Measured,
    disabled: Measured,
}

#[derive(Debug, Serialize)]
struct Measured {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

#[derive(Debug, Serialize)]
struct Figures {
    benchmark: &'static str,
    files: usize,
    projects: usize,
    connections: usize,
    seconds_per_round: f64,
    rounds: Vec<Round>,
    median_rps_enabled: f64,
    median_rps_disabled: f64,
    median_p99_ms_enabled: f64,
    median_p99_ms_disabled: f64,
    /// Goal: at least 0.97.
    throughput_ratio: f64,
    /// Goal: at most 1.05.
    p99_ratio: f64,
    plugin_events_received: u64,
}

pub fn run(args: &ThroughputArgs) -> anyhow::Result<()> {
    args.common.check()?;
    let work = &args.common.workdir.join("throughput");
    let corpus = make_corpus(&work.join("corpus"), args.files, args.projects)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let plugin = &args.common.plugin;
    let on = HostProcess::start(&work.join("host-on"), "on", plugin, true, &corpus.projects)?;
    let off = HostProcess::start(&work.join("host-off"), "off", plugin, false, &corpus.projects)?;
    let figures = runtime.block_on(async {
        on.wait_ready().await?;
        off.wait_ready().await?;
        let load = |host: &HostProcess, seconds: f64, seed: u64| LoadConfig {
            url: host.url(),
            seconds,
            connections: args.connections,
            reindex_every: 0.0,
            seed,
            ..LoadConfig::default()
        };
        for host in [&on, &off] {
            if args.warmup > 0.0 {
                checked(loadgen::run(&load(host, args.warmup, 0)).await?, host)?;
            }
        }
        let mut rounds = Vec::new();
        for round in 0..args.rounds {
            let order = if round % 2 == 0 { [&on, &off] } else { [&off, &on] };
            let mut results = Vec::new();
            for host in order {
                on.wait_plugin_idle().await?;
                let report = checked(loadgen::run(&load(host, args.seconds, 1 + round as u64)).await?, host)?;
                eprintln!(
                    "bench: round {} plugin {:<8} {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
                    round + 1,
                    if host.label == "on" { "enabled" } else { "disabled" },
                    report.requests_per_second,
                    report.latency_ms.p50,
                    report.latency_ms.p99
                );
                results.push((host.label.clone(), report));
            }
            let pick = |label: &str| {
                let r = &results.iter().find(|(l, _)| l == label).expect("both ran").1;
                Measured {
                    requests_per_second: r.requests_per_second,
                    p50_ms: r.latency_ms.p50,
                    p99_ms: r.latency_ms.p99,
                    requests: r.requests,
                }
            };
            rounds.push(Round { round: round + 1, enabled: pick("on"), disabled: pick("off") });
        }
        let events = on.plugin_events().await?;
        let med = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        let (rps_on, rps_off) =
            (med(|r| r.enabled.requests_per_second), med(|r| r.disabled.requests_per_second));
        let (p99_on, p99_off) = (med(|r| r.enabled.p99_ms), med(|r| r.disabled.p99_ms));
        anyhow::Ok(Figures {
            benchmark: "throughput",
            files: corpus.files,
            projects: corpus.projects.len(),
            connections: args.connections,
            seconds_per_round: args.seconds,
            rounds,
            median_rps_enabled: rps_on,
            median_rps_disabled: rps_off,
            median_p99_ms_enabled: p99_on,
            median_p99_ms_disabled: p99_off,
            throughput_ratio: rps_on / rps_off,
            p99_ratio: p99_on / p99_off,
            plugin_events_received: events,
        })
    })?;
    on.stop()?;
    off.stop()?;
    println!(
        "throughput ({} files, {} connections, {} rounds x {} s per host):\n  plugin enabled:  median {:.0} req/s, p99 {:.3} ms\n  plugin disabled: median {:.0} req/s, p99 {:.3} ms\n  throughput ratio {:.3} (goal >= 0.97: {})   p99 ratio {:.3} (goal <= 1.05: {})   plugin received {} events",
        figures.files,
        figures.connections,
        figures.rounds.len(),
        figures.seconds_per_round,
        figures.median_rps_enabled,
        figures.median_p99_ms_enabled,
        figures.median_rps_disabled,
        figures.median_p99_ms_disabled,
        figures.throughput_ratio,
        verdict(figures.throughput_ratio >= 0.97),
        figures.p99_ratio,
        verdict(figures.p99_ratio <= 1.05),
        figures.plugin_events_received,
    );
    args.common.emit(&figures)
}

/// A run with failed requests measures nothing: it is an error.
pub fn checked(report: Report, host: &HostProcess) -> anyhow::Result<Report> {
    if report.failures > 0 || report.requests == 0 {
        anyhow::bail!(
            "load against host '{}' failed: {} failures of {} requests (first: {})",
            host.label,
            report.failures,
            report.requests,
            report.first_failure.as_deref().unwrap_or("none")
        );
    }
    Ok(report)
}
