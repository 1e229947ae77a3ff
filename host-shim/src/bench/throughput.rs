//! Benchmark 2: host search throughput and p99 latency with the analytics
//! plugin enabled against disabled — same binary, same library, same corpus,
//! same run. Two hosts run side by side (the plugin `enabled = true` in one,
//! `false` in the other) and take turns: every round loads each for the
//! same time with the same closed-loop workload (fixed connections, same
//! seed), in alternating order (on-off, off-on, …) so drift hits both
//! alike. The enabled host's plugin drains its queue before either runs.
//! Figures are medians over rounds, and the ratios of those medians.
//!
//! Two workload mixes, each after a warm-up that brings the caches to a
//! steady state:
//! - `realistic`: loadgen's default mix (Zipf terms, 8% words found
//!   nowhere, regexes, phrases, case variants, opens). Fresh zero-result
//!   words and long-tail terms keep some searches scanning the corpus.
//! - `hot`: the 100 most frequent terms only, so every search is an L1 hit
//!   and a request costs little more than HTTP: the worst case for the
//!   plugin's share of the cost.

use clap::ValueEnum;
use serde::Serialize;

use super::{Common, HostProcess, load_average, make_corpus, median, verdict, warn_if_busy};
use crate::workload::loadgen::{self, LoadConfig, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    Realistic,
    Hot,
}

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
    /// Workload mixes to measure, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mix::Realistic, Mix::Hot])]
    pub mix: Vec<Mix>,
    /// Rounds per mix; each measures both hosts once.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Seconds of load per host per round.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of unmeasured load per host before each mix's rounds.
    #[arg(long, default_value_t = 20.0)]
    pub warmup: f64,
    /// Concurrent connections of the closed loop.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// The enabled plugin's config (TOML after `[plugins.analytics.config]`,
    /// nested tables spelled out), to see what a part of the plugin costs,
    /// e.g. `[plugins.analytics.config.alerting]\nenabled = false`.
    #[arg(long, default_value = "")]
    pub plugin_config: String,
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
    cache_hits: u64,
    searches: u64,
    /// CPU time of the host process per request (user + system), from
    /// just before its load to when its plugin's queue was empty again.
    cpu_us_per_request: f64,
}

#[derive(Debug, Serialize)]
struct MixFigures {
    mix: Mix,
    rounds: Vec<Round>,
    median_rps_enabled: f64,
    median_rps_disabled: f64,
    median_p99_ms_enabled: f64,
    median_p99_ms_disabled: f64,
    /// Goal: at least 0.97.
    throughput_ratio: f64,
    /// Goal: at most 1.05.
    p99_ratio: f64,
    /// Host CPU per request, medians over rounds: the plugin's cost even
    /// when the machine has cores to spare.
    median_cpu_us_per_request_enabled: f64,
    median_cpu_us_per_request_disabled: f64,
}

#[derive(Debug, Serialize)]
struct Figures {
    benchmark: &'static str,
    files: usize,
    projects: usize,
    connections: usize,
    seconds_per_round: f64,
    warmup_seconds: f64,
    mixes: Vec<MixFigures>,
    plugin_events_received: u64,
    load_average_before: f64,
    load_average_after: f64,
}

impl Mix {
    fn load(self, host: &HostProcess, seconds: f64, connections: usize, seed: u64) -> LoadConfig {
        let base = LoadConfig {
            url: host.url(),
            seconds,
            connections,
            reindex_every: 0.0,
            seed,
            ..LoadConfig::default()
        };
        match self {
            Mix::Realistic => base,
            Mix::Hot => LoadConfig {
                vocabulary: 100,
                zero_share: 0.0,
                regex_share: 0.0,
                phrase_share: 0.0,
                case_share: 0.0,
                ..base
            },
        }
    }
}

pub fn run(args: &ThroughputArgs) -> anyhow::Result<()> {
    args.common.check()?;
    let load_before = warn_if_busy();
    let work = &args.common.workdir.join("throughput");
    let corpus = make_corpus(&work.join("corpus"), args.files, args.projects)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let plugin = &args.common.plugin;
    let on = HostProcess::start_with(
        &work.join("host-on"),
        "on",
        plugin,
        true,
        &corpus.projects,
        &args.plugin_config,
    )?;
    let off = HostProcess::start(&work.join("host-off"), "off", plugin, false, &corpus.projects)?;
    let (mixes, events) = runtime.block_on(async {
        on.wait_ready().await?;
        off.wait_ready().await?;
        let mut mixes = Vec::new();
        for &mix in &args.mix {
            for host in [&on, &off] {
                if args.warmup > 0.0 {
                    on.wait_plugin_idle().await?;
                    checked(loadgen::run(&mix.load(host, args.warmup, args.connections, 0)).await?, host)?;
                }
            }
            mixes.push(measure_mix(args, mix, &on, &off).await?);
        }
        anyhow::Ok((mixes, on.plugin_events().await?))
    })?;
    on.stop()?;
    off.stop()?;
    let figures = Figures {
        benchmark: "throughput",
        files: corpus.files,
        projects: corpus.projects.len(),
        connections: args.connections,
        seconds_per_round: args.seconds,
        warmup_seconds: args.warmup,
        mixes,
        plugin_events_received: events,
        load_average_before: load_before,
        load_average_after: load_average(),
    };
    println!(
        "throughput ({} files, {} connections, {} rounds x {} s per host and mix; load average {:.2} before, {:.2} after):",
        figures.files,
        figures.connections,
        args.rounds,
        figures.seconds_per_round,
        figures.load_average_before,
        figures.load_average_after,
    );
    if !args.plugin_config.is_empty() {
        println!("  enabled plugin's config: {}", args.plugin_config.replace('\n', "; "));
    }
    for m in &figures.mixes {
        println!(
            "  {:?} mix: enabled median {:.0} req/s, p99 {:.3} ms; disabled median {:.0} req/s, p99 {:.3} ms\n    throughput ratio {:.3} (goal >= 0.97: {})   p99 ratio {:.3} (goal <= 1.05: {})",
            m.mix,
            m.median_rps_enabled,
            m.median_p99_ms_enabled,
            m.median_rps_disabled,
            m.median_p99_ms_disabled,
            m.throughput_ratio,
            verdict(m.throughput_ratio >= 0.97),
            m.p99_ratio,
            verdict(m.p99_ratio <= 1.05),
        );
        println!(
            "    host CPU per request: enabled {:.1} us, disabled {:.1} us (the plugin: {:+.1} us)",
            m.median_cpu_us_per_request_enabled,
            m.median_cpu_us_per_request_disabled,
            m.median_cpu_us_per_request_enabled - m.median_cpu_us_per_request_disabled,
        );
    }
    println!("  the enabled host's plugin received {} events", figures.plugin_events_received);
    args.common.emit(&figures)
}

async fn measure_mix(
    args: &ThroughputArgs,
    mix: Mix,
    on: &HostProcess,
    off: &HostProcess,
) -> anyhow::Result<MixFigures> {
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [on, off] } else { [off, on] };
        let mut results = Vec::new();
        for host in order {
            on.wait_plugin_idle().await?;
            let cpu_before = host.cpu_seconds()?;
            let config = mix.load(host, args.seconds, args.connections, 1 + round as u64);
            let report = checked(loadgen::run(&config).await?, host)?;
            // The plugin's work on these requests ends when its queue is
            // written out.
            on.wait_plugin_idle().await?;
            let cpu_us = (host.cpu_seconds()? - cpu_before) * 1e6 / report.requests.max(1) as f64;
            eprintln!(
                "bench: {mix:?} round {} plugin {:<8} {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  cache hits {:.1}%  host CPU {:.1} us/request",
                round + 1,
                if host.label == "on" { "enabled" } else { "disabled" },
                report.requests_per_second,
                report.latency_ms.p50,
                report.latency_ms.p99,
                100.0 * hits(&report) as f64 / report.searches.max(1) as f64,
                cpu_us,
            );
            results.push((host.label.clone(), report, cpu_us));
        }
        let pick = |label: &str| {
            let (_, r, cpu_us) = results.iter().find(|(l, _, _)| l == label).expect("both ran");
            Measured {
                cpu_us_per_request: *cpu_us,
                requests_per_second: r.requests_per_second,
                p50_ms: r.latency_ms.p50,
                p99_ms: r.latency_ms.p99,
                requests: r.requests,
                cache_hits: hits(r),
                searches: r.searches,
            }
        };
        rounds.push(Round { round: round + 1, enabled: pick("on"), disabled: pick("off") });
    }
    let med = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let (rps_on, rps_off) = (med(|r| r.enabled.requests_per_second), med(|r| r.disabled.requests_per_second));
    let (p99_on, p99_off) = (med(|r| r.enabled.p99_ms), med(|r| r.disabled.p99_ms));
    let (cpu_on, cpu_off) = (med(|r| r.enabled.cpu_us_per_request), med(|r| r.disabled.cpu_us_per_request));
    Ok(MixFigures {
        mix,
        rounds,
        median_rps_enabled: rps_on,
        median_rps_disabled: rps_off,
        median_p99_ms_enabled: p99_on,
        median_p99_ms_disabled: p99_off,
        throughput_ratio: rps_on / rps_off,
        p99_ratio: p99_on / p99_off,
        median_cpu_us_per_request_enabled: cpu_on,
        median_cpu_us_per_request_disabled: cpu_off,
    })
}

fn hits(report: &Report) -> u64 {
    report.cache.l1 + report.cache.l2 + report.cache.l3
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
