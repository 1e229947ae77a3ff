//! Benchmark 5: `/metrics` scrape time and size with 50 projects. A host
//! with the plugin serves 50 generated projects; a short workload touches
//! every project (searches of every kind, opens, cache layers, index
//! errors), snapshots publish the project gauges, then `/metrics` is
//! fetched repeatedly over one keep-alive connection, as Prometheus does.
//! Time is client-side, request written to last body byte.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::{Common, HostProcess, load_average, make_corpus, median, throughput::checked, warn_if_busy};
use crate::workload::{
    http::Client,
    loadgen::{self, LoadConfig},
};

#[derive(Debug, Clone, clap::Args)]
pub struct ScrapeArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 50)]
    pub projects: usize,
    /// Files in the corpus, over all projects.
    #[arg(long, default_value_t = 2500)]
    pub files: usize,
    /// Seconds of workload before scraping.
    #[arg(long, default_value_t = 10.0)]
    pub load_seconds: f64,
    #[arg(long, default_value_t = 100)]
    pub scrapes: usize,
}

#[derive(Debug, Serialize)]
struct Figures {
    benchmark: &'static str,
    projects: usize,
    files: usize,
    scrapes: usize,
    median_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    bytes: usize,
    series: usize,
    families: usize,
    project_label_values: usize,
    load_average_before: f64,
    load_average_after: f64,
}

pub fn run(args: &ScrapeArgs) -> anyhow::Result<()> {
    args.common.check()?;
    let load_before = warn_if_busy();
    let work = args.common.workdir.join("scrape");
    let corpus = make_corpus(&work.join("corpus"), args.files, args.projects)?;
    let host = HostProcess::start(&work.join("host"), "scrape", &args.common.plugin, true, &corpus.projects)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let figures = runtime.block_on(async {
        host.wait_ready().await?;
        let load = LoadConfig {
            url: host.url(),
            seconds: args.load_seconds,
            connections: 4,
            reindex_every: 0.0,
            ..LoadConfig::default()
        };
        checked(loadgen::run(&load).await?, &host)?;
        host.wait_plugin_idle().await?;
        // Two snapshot periods: every project's gauges are published.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut client = Client::new(host.addr);
        let mut times = Vec::with_capacity(args.scrapes);
        let mut text = Vec::new();
        for _ in 0..args.scrapes.max(1) {
            let started = Instant::now();
            let reply = client.get("/metrics", "prometheus").await?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            if reply.status != 200 {
                bail!("/metrics answered {}", reply.status);
            }
            text = reply.body;
        }
        let text = String::from_utf8(text)?;
        let series = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
        let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let projects: std::collections::BTreeSet<&str> =
            text.split("project=\"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let p99 = sorted[((sorted.len() as f64 * 0.99).ceil() as usize).clamp(1, sorted.len()) - 1];
        anyhow::Ok(Figures {
            benchmark: "scrape",
            projects: corpus.projects.len(),
            files: corpus.files,
            scrapes: times.len(),
            median_ms: median(&times),
            p99_ms: p99,
            max_ms: *sorted.last().unwrap_or(&0.0),
            bytes: text.len(),
            series,
            families,
            project_label_values: projects.len(),
            load_average_before: load_before,
            load_average_after: load_average(),
        })
    })?;
    host.stop()?;
    if figures.project_label_values < figures.projects.min(50) {
        bail!(
            "only {} project label values in /metrics (expected {})",
            figures.project_label_values,
            figures.projects
        );
    }
    println!(
        "/metrics with {} projects: median {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} scrapes; {} bytes, {} series in {} families, {} project label values (load average {:.2} before, {:.2} after)",
        figures.projects,
        figures.median_ms,
        figures.p99_ms,
        figures.max_ms,
        figures.scrapes,
        figures.bytes,
        figures.series,
        figures.families,
        figures.project_label_values,
        figures.load_average_before,
        figures.load_average_after,
    );
    args.common.emit(&figures)
}
