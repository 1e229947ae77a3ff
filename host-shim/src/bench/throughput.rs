//! Benchmark 2: host search throughput and p99 latency with the analytics
//! plugin enabled against disabled — same binary, same library, same corpus,
//! same run. Two hosts run side by side (the plugin `enabled = true` in one,
//! `false` in the other) and take turns, in alternating order (on-off,
//! off-on, …) so drift hits both alike. The enabled host's plugin drains
//! its queue before either runs. Figures are medians over rounds, and the
//! ratios of those medians, and the median of the rounds' own ratios.
//!
//! All of that is repeated for `--pairs` pairs of processes, started
//! afresh one after the other: a host process's own speed on scan-heavy
//! work differs from the next one's by up to ±10%, consistently over all
//! its rounds (measured; the cause is not known — where its index landed
//! in memory is the likely one), which one pair cannot tell from the
//! plugin's cost. Rounds of every pair are pooled, and each
//! pair's median ratio is printed beside.
//!
//! Both hosts do the same work: a closed loop (fixed connections, each
//! sending its next request when the last is answered) with the same seed
//! and the same number of requests on each connection, so each connection
//! sends the same requests in the same order to both and a round is timed,
//! not cut at a time. (Cut at a time, the faster host reaches further into
//! the sequence: other cache misses, other scans, and rounds of one build
//! differed by ±15%.) The disabled host's time-bounded warm-up sets the
//! counts: the enabled host then warms up with exactly its requests, and a
//! round is `--seconds` at the rate the disabled host reached.
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

use super::{
    Common, HostProcess, load_average, make_corpus, mean_interval_95, median, quartiles, verdict,
    warn_if_busy,
};
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
    /// Pairs of host processes, started afresh one after the other, each
    /// measured for every mix: a process's own speed differs by up to
    /// ±10% for scan-heavy work (see the module docs), so one pair of
    /// processes cannot show a 3% difference.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// Rounds per mix and pair; each measures both hosts once. Many short
    /// rounds: the two runs of a round are back to back, so the slow swings of a shared machine
    /// hit both hosts of a round alike.
    #[arg(long, default_value_t = 8)]
    pub rounds: usize,
    /// Length of a round per host, at the rate the disabled host reached
    /// in its warm-up (rounds are counted in requests: see the module docs).
    #[arg(long, default_value_t = 4.0)]
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
    pair: usize,
    round: usize,
    enabled: Measured,
    disabled: Measured,
}

impl Round {
    /// Enabled over disabled requests per second.
    fn throughput_ratio(&self) -> f64 {
        self.enabled.requests_per_second / self.disabled.requests_per_second
    }
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
    /// Of that, the plugin's own threads (zero when it is disabled).
    plugin_cpu_us_per_request: f64,
}

#[derive(Debug, Serialize)]
struct MixFigures {
    mix: Mix,
    /// Requests each connection sends to each host in a round, per pair.
    requests_per_connection: Vec<u64>,
    /// Per pair of processes, the median of its rounds' throughput ratios.
    pair_round_throughput_ratios: Vec<f64>,
    /// Their mean and its 95% confidence interval (Student's t over
    /// pairs: each pair is a fresh pair of processes, with a speed of its
    /// own); absent with one pair.
    pair_ratio_mean_interval_95: Option<(f64, f64, f64)>,
    rounds: Vec<Round>,
    median_rps_enabled: f64,
    median_rps_disabled: f64,
    median_p99_ms_enabled: f64,
    median_p99_ms_disabled: f64,
    /// Goal: at least 0.97. The ratio of the medians.
    throughput_ratio: f64,
    /// Goal: at most 1.05. The ratio of the medians.
    p99_ratio: f64,
    /// The median over rounds of each round's enabled/disabled ratio: the
    /// two runs of a round did the same requests back to back, so their
    /// ratio is free of the drift between rounds (caches still filling,
    /// other load on the machine).
    median_round_throughput_ratio: f64,
    /// The 25th and 75th percentiles of the per-round throughput ratios.
    round_throughput_ratio_quartiles: (f64, f64),
    median_round_p99_ratio: f64,
    /// Host CPU per request, medians over rounds: the plugin's cost even
    /// when the machine has cores to spare.
    median_cpu_us_per_request_enabled: f64,
    median_cpu_us_per_request_disabled: f64,
    /// The enabled host's plugin threads alone.
    median_plugin_threads_cpu_us_per_request: f64,
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
    /// `seconds` bounds the run; with `quotas` (one per connection) the run
    /// ends when they are sent, and a run the time bound cut is an error.
    fn load(
        self,
        host: &HostProcess,
        seconds: f64,
        connections: usize,
        seed: u64,
        quotas: &[u64],
    ) -> LoadConfig {
        let base = LoadConfig {
            url: host.url(),
            seconds,
            connections,
            reindex_every: 0.0,
            seed,
            connection_requests: quotas.to_vec(),
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
    if args.pairs == 0 || args.rounds == 0 {
        anyhow::bail!("--pairs and --rounds must be at least 1 (got {} and {})", args.pairs, args.rounds);
    }
    let load_before = warn_if_busy();
    let work = &args.common.workdir.join("throughput");
    let corpus = make_corpus(&work.join("corpus"), args.files, args.projects)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let plugin = &args.common.plugin;
    // Per mix: every pair's rounds, and each pair's requests per connection.
    let mut measured: Vec<(Vec<Round>, Vec<u64>)> = args.mix.iter().map(|_| Default::default()).collect();
    let mut events = 0;
    for pair in 0..args.pairs {
        let on = HostProcess::start_with(
            &work.join("host-on"),
            "on",
            plugin,
            true,
            &corpus.projects,
            &args.plugin_config,
        )?;
        let off = HostProcess::start(&work.join("host-off"), "off", plugin, false, &corpus.projects)?;
        runtime.block_on(async {
            on.wait_ready().await?;
            off.wait_ready().await?;
            for (&mix, (rounds, quotas)) in args.mix.iter().zip(&mut measured) {
                // The disabled host's warm-up sets the work: the enabled
                // host warms up with the same requests, and a round is
                // `seconds` at the disabled host's rate.
                let warmup = mix.load(&off, args.warmup.max(1.0), args.connections, 0, &[]);
                let reference = checked(loadgen::run(&warmup).await?, &off)?;
                on.wait_plugin_idle().await?;
                let same = mix.load(&on, bound(args.warmup), args.connections, 0, &reference.per_connection);
                all_sent(loadgen::run(&same).await?, &on)?;
                let per_connection = (reference.requests_per_second * args.seconds / args.connections as f64)
                    .ceil()
                    .max(1.0) as u64;
                quotas.push(per_connection);
                rounds.extend(measure_rounds(args, mix, pair, &on, &off, per_connection).await?);
            }
            events += on.plugin_events().await?;
            anyhow::Ok(())
        })?;
        on.stop()?;
        off.stop()?;
    }
    let mixes: Vec<MixFigures> = args
        .mix
        .iter()
        .zip(measured)
        .map(|(&mix, (rounds, quotas))| summarize(mix, rounds, quotas))
        .collect();
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
        "throughput ({} files, {} connections, {} pairs of processes x {} rounds x {} s per host and mix; load average {:.2} before, {:.2} after):",
        figures.files,
        figures.connections,
        args.pairs,
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
            "  {:?} mix ({:?} requests per connection and round, by pair): enabled median {:.0} req/s, p99 {:.3} ms; disabled median {:.0} req/s, p99 {:.3} ms\n    throughput ratio {:.3} (goal >= 0.97: {})   p99 ratio {:.3} (goal <= 1.05: {})",
            m.mix,
            m.requests_per_connection,
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
            "    per-round ratios, median: throughput {:.3} (goal >= 0.97: {}; quartiles {:.3}-{:.3})   p99 {:.3} (goal <= 1.05: {})",
            m.median_round_throughput_ratio,
            verdict(m.median_round_throughput_ratio >= 0.97),
            m.round_throughput_ratio_quartiles.0,
            m.round_throughput_ratio_quartiles.1,
            m.median_round_p99_ratio,
            verdict(m.median_round_p99_ratio <= 1.05),
        );
        println!(
            "    per pair of processes, median of its rounds' ratios: {}",
            m.pair_round_throughput_ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(", "),
        );
        if let Some((mean, low, high)) = m.pair_ratio_mean_interval_95 {
            println!(
                "    their mean {mean:.3}, 95% confidence interval {low:.3}-{high:.3} (goal >= 0.97 at its lower end: {})",
                verdict(low >= 0.97),
            );
        }
        println!(
            "    host CPU per request: enabled {:.1} us, disabled {:.1} us (difference {:+.1} us; the plugin's own threads {:.1} us)",
            m.median_cpu_us_per_request_enabled,
            m.median_cpu_us_per_request_disabled,
            m.median_cpu_us_per_request_enabled - m.median_cpu_us_per_request_disabled,
            m.median_plugin_threads_cpu_us_per_request,
        );
    }
    println!("  the enabled host's plugin received {} events", figures.plugin_events_received);
    args.common.emit(&figures)
}

/// A time bound for a run of `seconds` counted in requests: long enough
/// for a host several times slower, short enough to end a stuck run.
fn bound(seconds: f64) -> f64 {
    seconds * 10.0 + 60.0
}

async fn measure_rounds(
    args: &ThroughputArgs,
    mix: Mix,
    pair: usize,
    on: &HostProcess,
    off: &HostProcess,
    per_connection: u64,
) -> anyhow::Result<Vec<Round>> {
    let quotas = vec![per_connection; args.connections];
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [on, off] } else { [off, on] };
        let mut results = Vec::new();
        for host in order {
            on.wait_plugin_idle().await?;
            let cpu_before = host.cpu_seconds()?;
            let plugin_cpu_before = host.plugin_cpu_seconds()?;
            let config = mix.load(host, bound(args.seconds), args.connections, 1 + round as u64, &quotas);
            let report = all_sent(loadgen::run(&config).await?, host)?;
            // The plugin's work on these requests ends when its queue is
            // written out.
            on.wait_plugin_idle().await?;
            let per_request = |seconds: f64| seconds * 1e6 / report.requests.max(1) as f64;
            let cpu_us = per_request(host.cpu_seconds()? - cpu_before);
            let plugin_cpu_us = per_request(host.plugin_cpu_seconds()? - plugin_cpu_before);
            eprintln!(
                "bench: {mix:?} pair {} round {} plugin {:<8} {} requests in {:.2} s: {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  cache hits {:.1}%  host CPU {:.1} us/request (plugin threads {:.1})",
                pair + 1,
                round + 1,
                if host.label == "on" { "enabled" } else { "disabled" },
                report.requests,
                report.seconds,
                report.requests_per_second,
                report.latency_ms.p50,
                report.latency_ms.p99,
                100.0 * hits(&report) as f64 / report.searches.max(1) as f64,
                cpu_us,
                plugin_cpu_us,
            );
            results.push((host.label.clone(), report, cpu_us, plugin_cpu_us));
        }
        let pick = |label: &str| {
            let (_, r, cpu_us, plugin_cpu_us) = results.iter().find(|(l, ..)| l == label).expect("both ran");
            Measured {
                cpu_us_per_request: *cpu_us,
                plugin_cpu_us_per_request: *plugin_cpu_us,
                requests_per_second: r.requests_per_second,
                p50_ms: r.latency_ms.p50,
                p99_ms: r.latency_ms.p99,
                requests: r.requests,
                cache_hits: hits(r),
                searches: r.searches,
            }
        };
        rounds.push(Round { pair: pair + 1, round: round + 1, enabled: pick("on"), disabled: pick("off") });
    }
    Ok(rounds)
}

/// Medians over every round of every pair, and each pair's own.
fn summarize(mix: Mix, rounds: Vec<Round>, requests_per_connection: Vec<u64>) -> MixFigures {
    let med = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let (rps_on, rps_off) = (med(|r| r.enabled.requests_per_second), med(|r| r.disabled.requests_per_second));
    let (p99_on, p99_off) = (med(|r| r.enabled.p99_ms), med(|r| r.disabled.p99_ms));
    let (cpu_on, cpu_off) = (med(|r| r.enabled.cpu_us_per_request), med(|r| r.disabled.cpu_us_per_request));
    let plugin_threads = med(|r| r.enabled.plugin_cpu_us_per_request);
    let round_rps_ratios: Vec<f64> = rounds.iter().map(Round::throughput_ratio).collect();
    let round_rps_ratio = median(&round_rps_ratios);
    let round_p99_ratio = med(|r| r.enabled.p99_ms / r.disabled.p99_ms);
    let pairs = rounds.iter().map(|r| r.pair).max().unwrap_or(0);
    let pair_round_throughput_ratios: Vec<f64> = (1..=pairs)
        .map(|pair| {
            let ratios: Vec<f64> =
                rounds.iter().filter(|r| r.pair == pair).map(Round::throughput_ratio).collect();
            median(&ratios)
        })
        .collect();
    let pair_ratio_mean_interval_95 = mean_interval_95(&pair_round_throughput_ratios);
    MixFigures {
        mix,
        requests_per_connection,
        pair_round_throughput_ratios,
        pair_ratio_mean_interval_95,
        rounds,
        median_rps_enabled: rps_on,
        median_rps_disabled: rps_off,
        median_p99_ms_enabled: p99_on,
        median_p99_ms_disabled: p99_off,
        throughput_ratio: rps_on / rps_off,
        p99_ratio: p99_on / p99_off,
        median_round_throughput_ratio: round_rps_ratio,
        round_throughput_ratio_quartiles: quartiles(&round_rps_ratios),
        median_round_p99_ratio: round_p99_ratio,
        median_cpu_us_per_request_enabled: cpu_on,
        median_cpu_us_per_request_disabled: cpu_off,
        median_plugin_threads_cpu_us_per_request: plugin_threads,
    }
}

fn hits(report: &Report) -> u64 {
    report.cache.l1 + report.cache.l2 + report.cache.l3
}

/// A run given per-connection quotas that ended before sending them did
/// not do the same work as the run it is compared with: an error.
fn all_sent(report: Report, host: &HostProcess) -> anyhow::Result<Report> {
    let report = checked(report, host)?;
    if report.stopped_by != "quota" {
        anyhow::bail!(
            "load against host '{}' stopped by {} after {} requests in {:.1} s, before its quotas were sent",
            host.label,
            report.stopped_by,
            report.requests,
            report.seconds
        );
    }
    Ok(report)
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
