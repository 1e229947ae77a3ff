//! Benchmark 6: the plugin's memory. The same corpus and the same paced
//! workload (default 10,000 requests/s, each search or open one hook event,
//! for 60 s) run against a host with the plugin disabled, then one with it
//! enabled (SQLite storage, the default); zero-result words come from a
//! pool of 1,000 so that after the warm-up every kind of query can be
//! cached and the host keeps up with the rate. Resident memory (`VmRSS` from
//! `/proc/PID/status`) is sampled every few seconds from the start of the
//! load; the figures are the enabled-minus-disabled difference per sample
//! time and the slope of the enabled host's RSS over the second half of the
//! run (flat means no growth once caches and buffers are warm).

use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::{
    Common, HostProcess, load_average, make_corpus, median, slope, throughput::checked, verdict, warn_if_busy,
};
use crate::workload::loadgen::{self, LoadConfig, Report};

#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 3000)]
    pub files: usize,
    #[arg(long, default_value_t = 3)]
    pub projects: usize,
    /// Requests per second (searches and opens: one hook event each).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample_every: f64,
    /// Seconds of unsampled load before (warms the caches of both hosts).
    #[arg(long, default_value_t = 20.0)]
    pub warmup: f64,
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// The enabled plugin's config (TOML after `[plugins.analytics.config]`,
    /// nested tables spelled out), e.g.
    /// `[plugins.analytics.config.alerting]\nenabled = false`.
    #[arg(long, default_value = "")]
    pub plugin_config: String,
}

#[derive(Debug, Serialize)]
struct Run {
    /// (seconds since the load started, RSS bytes).
    samples: Vec<(f64, u64)>,
    requests_per_second: f64,
    /// Hook events per second the plugin received (enabled host), or the
    /// searches and opens per second the host answered (disabled host).
    events_per_second: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Figures {
    benchmark: &'static str,
    target_rate: f64,
    seconds: f64,
    disabled: Run,
    enabled: Run,
    /// Enabled minus disabled RSS at each sample time, MB.
    difference_mb: Vec<f64>,
    median_difference_mb: f64,
    max_difference_mb: f64,
    /// Goal: at most 64.
    final_difference_mb: f64,
    /// Enabled host's RSS growth over the second half, MB per minute.
    enabled_slope_mb_per_min: f64,
    difference_slope_mb_per_min: f64,
    load_average_before: f64,
    load_average_after: f64,
}

const MB: f64 = 1024.0 * 1024.0;

pub fn run(args: &MemoryArgs) -> anyhow::Result<()> {
    args.common.check()?;
    let load_before = warn_if_busy();
    let work = args.common.workdir.join("memory");
    let corpus = make_corpus(&work.join("corpus"), args.files, args.projects)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut runs = Vec::new();
    for (label, enabled) in [("off", false), ("on", true)] {
        let host = HostProcess::start_with(
            &work.join(format!("host-{label}")),
            label,
            &args.common.plugin,
            enabled,
            &corpus.projects,
            &args.plugin_config,
        )?;
        let run = runtime.block_on(measure(args, &host, enabled))?;
        host.stop()?;
        eprintln!(
            "bench: plugin {:<8} {:.0} req/s, {:.0} events/s, RSS {} MB",
            if enabled { "enabled" } else { "disabled" },
            run.requests_per_second,
            run.events_per_second,
            run.samples
                .iter()
                .map(|(t, b)| format!("{t:.0}s:{:.1}", *b as f64 / MB))
                .collect::<Vec<_>>()
                .join(" ")
        );
        runs.push(run);
    }
    let enabled = runs.pop().expect("two runs");
    let disabled = runs.pop().expect("two runs");
    let pairs = enabled.samples.len().min(disabled.samples.len());
    if pairs == 0 {
        bail!("no RSS samples taken");
    }
    let difference: Vec<f64> =
        (0..pairs).map(|i| (enabled.samples[i].1 as f64 - disabled.samples[i].1 as f64) / MB).collect();
    let second_half = |samples: &[(f64, u64)]| -> Vec<(f64, f64)> {
        let from = samples.len() / 2;
        samples[from..].iter().map(|(t, b)| (*t / 60.0, *b as f64 / MB)).collect()
    };
    let diff_points: Vec<(f64, f64)> =
        (pairs / 2..pairs).map(|i| (enabled.samples[i].0 / 60.0, difference[i])).collect();
    let figures = Figures {
        benchmark: "memory",
        target_rate: args.rate,
        seconds: args.seconds,
        median_difference_mb: median(&difference),
        max_difference_mb: difference.iter().copied().fold(f64::MIN, f64::max),
        final_difference_mb: *difference.last().expect("samples"),
        enabled_slope_mb_per_min: slope(&second_half(&enabled.samples)),
        difference_slope_mb_per_min: slope(&diff_points),
        difference_mb: difference,
        disabled,
        enabled,
        load_average_before: load_before,
        load_average_after: load_average(),
    };
    println!(
        "memory at {:.0} req/s for {:.0} s: plugin enabled {:.0} events/s received ({:.0} req/s answered; disabled host {:.0} req/s)\n  RSS difference enabled - disabled: median {:.1} MB, max {:.1} MB, at the end {:.1} MB (goal <= 64 MB: {})\n  enabled RSS slope over the second half {:+.2} MB/min, difference slope {:+.2} MB/min (load average {:.2} before, {:.2} after)",
        figures.target_rate,
        figures.seconds,
        figures.enabled.events_per_second,
        figures.enabled.requests_per_second,
        figures.disabled.requests_per_second,
        figures.median_difference_mb,
        figures.max_difference_mb,
        figures.final_difference_mb,
        verdict(figures.max_difference_mb <= 64.0),
        figures.enabled_slope_mb_per_min,
        figures.difference_slope_mb_per_min,
        figures.load_average_before,
        figures.load_average_after,
    );
    args.common.emit(&figures)
}

async fn measure(args: &MemoryArgs, host: &HostProcess, enabled: bool) -> anyhow::Result<Run> {
    host.wait_ready().await?;
    let load = |seconds: f64, seed: u64| LoadConfig {
        url: host.url(),
        seconds,
        rate: args.rate,
        connections: args.connections,
        reindex_every: 0.0,
        // Failing queries repeat: after the warm-up they are cached like
        // the rest, and the host can keep up with the rate.
        zero_words: 1000,
        seed,
        // Bounded by time: the default request cap (a million) would end a
        // 10,000/s run after 100 s.
        max_requests: ((args.rate.max(1.0) * seconds * 2.0) as u64).max(1_000_000),
        ..LoadConfig::default()
    };
    if args.warmup > 0.0 {
        checked(loadgen::run(&load(args.warmup, 0)).await?, host)?;
    }
    let events_before = if enabled { host.plugin_events().await? } else { 0 };
    let started = Instant::now();
    let config = load(args.seconds, 1);
    let mut workload = std::pin::pin!(loadgen::run(&config));
    let mut samples = vec![(0.0, host.rss_bytes()?)];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(args.sample_every));
    tick.tick().await;
    let report: Report = loop {
        tokio::select! {
            report = &mut workload => break report?,
            _ = tick.tick() => samples.push((started.elapsed().as_secs_f64(), host.rss_bytes()?)),
        }
    };
    let report = checked(report, host)?;
    let end = started.elapsed().as_secs_f64();
    if samples.last().is_some_and(|(t, _)| end - t > args.sample_every / 2.0) {
        samples.push((end, host.rss_bytes()?));
    }
    let events_per_second = if enabled {
        (host.plugin_events().await? - events_before) as f64 / report.seconds
    } else {
        (report.searches + report.opens) as f64 / report.seconds
    };
    Ok(Run {
        samples,
        requests_per_second: report.requests_per_second,
        events_per_second,
        p99_ms: report.latency_ms.p99,
    })
}
