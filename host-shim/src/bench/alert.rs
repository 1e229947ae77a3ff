//! `bench alert-latency`: from a threshold crossing to the notification
//! arriving. A host with the plugin runs one rule (search error rate above
//! 0.5 over a short window, `for` and evaluation interval from the
//! arguments) routed to a webhook channel whose receiver is this process,
//! on 127.0.0.1. Each trial starts from a clean window, sends failing
//! searches (an invalid regular expression) from time t0 — the first one
//! crosses the threshold — and measures until the firing notification
//! arrives at the receiver; then it stops, waits for the resolution, and
//! goes again. The goal is at most `for` + 2 evaluation intervals.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

use super::{Common, HostProcess, load_average, make_corpus, median, warn_if_busy};
use crate::workload::http::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct AlertArgs {
    #[command(flatten)]
    pub common: Common,
    /// Threshold crossings measured.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// The rule's evaluation interval, milliseconds.
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
    /// The rule's `for`, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub for_ms: u64,
}

#[derive(Debug, Serialize)]
struct Figures {
    benchmark: &'static str,
    trials: usize,
    evaluation_interval_ms: u64,
    for_ms: u64,
    goal_ms: u64,
    median_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    within_goal: usize,
    load_average_before: f64,
    load_average_after: f64,
}

/// The webhook receiver: every POST body's `status`, with its arrival time.
async fn receive(listener: TcpListener, tx: mpsc::UnboundedSender<(Instant, String)>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let Ok(n) = stream.read(&mut chunk).await else { return };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        let arrived = Instant::now();
                        let body: serde_json::Value =
                            serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap_or_default();
                        let status = body["status"].as_str().unwrap_or("").to_owned();
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        let _ = tx.send((arrived, status));
                        return;
                    }
                }
            }
        });
    }
}

pub fn run(args: &AlertArgs) -> anyhow::Result<()> {
    args.common.check()?;
    if args.trials == 0 || args.interval_ms < 100 {
        bail!("--trials must be at least 1 and --interval-ms at least 100");
    }
    let load_before = warn_if_busy();
    let work = args.common.workdir.join("alert-latency");
    let corpus = make_corpus(&work.join("corpus"), 40, 1)?;
    let project = corpus.projects[0].0.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (figures, host) = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(receive(listener, tx));
        let window_ms = 2000;
        let config = format!(
            r#"[plugins.analytics.config.alerting]
evaluation_interval = "{interval}ms"
keep_firing_for = "0s"
default_rules = false
[[plugins.analytics.config.alerting.rules]]
name = "BenchSearchErrors"
measure = "search_error_rate"
window = "{window_ms}ms"
op = ">"
threshold = 0.5
for = "{for_ms}ms"
severity = "critical"
min_samples = 1
repeat_interval = "0s"
[[plugins.analytics.config.alerting.channels]]
name = "bench-hook"
kind = "webhook"
[plugins.analytics.config.alerting.channels.options]
url = "http://127.0.0.1:{port}/hook"
"#,
            interval = args.interval_ms,
            for_ms = args.for_ms,
        );
        let host = HostProcess::start_with(
            &work.join("host"),
            "alert",
            &args.common.plugin,
            true,
            &corpus.projects,
            &config,
        )?;
        host.wait_ready().await?;
        let failing = format!("/api/v1/search?project={project}&kind=regex&q=(bench");
        let mut client = Client::new(host.addr);
        let mut latencies = Vec::with_capacity(args.trials);
        for trial in 0..args.trials {
            // A clean window: the last failing search has left it.
            tokio::time::sleep(Duration::from_millis(window_ms + 2 * args.interval_ms)).await;
            while rx.try_recv().is_ok() {}
            let t0 = Instant::now();
            let arrived = loop {
                client.get(&failing, "bench").await.context("failing search")?;
                if let Ok((at, status)) = rx.try_recv() {
                    if status == "firing" {
                        break at;
                    }
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("trial {trial}: no notification within 30 s; host log:\n{}", host.log());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let ms = arrived.duration_since(t0).as_secs_f64() * 1e3;
            latencies.push(ms);
            eprintln!("bench: trial {trial}: {ms:.0} ms");
            // Wait for the resolution before the next crossing.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                    Ok(Some((_, status))) if status == "resolved" => break,
                    _ if Instant::now() > deadline => bail!("trial {trial}: no resolution within 30 s"),
                    _ => {}
                }
            }
        }
        let goal = args.for_ms + 2 * args.interval_ms;
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let p95 = sorted[((sorted.len() as f64 * 0.95).ceil() as usize).clamp(1, sorted.len()) - 1];
        let figures = Figures {
            benchmark: "alert-latency",
            trials: latencies.len(),
            evaluation_interval_ms: args.interval_ms,
            for_ms: args.for_ms,
            goal_ms: goal,
            median_ms: median(&latencies),
            p95_ms: p95,
            max_ms: *sorted.last().unwrap_or(&f64::NAN),
            within_goal: latencies.iter().filter(|ms| **ms <= goal as f64).count(),
            load_average_before: load_before,
            load_average_after: load_average(),
        };
        Ok::<_, anyhow::Error>((figures, host))
    })?;
    println!(
        "alert latency (threshold crossing → webhook), for {} ms, evaluation every {} ms: median {:.0} ms, p95 {:.0} ms, max {:.0} ms; goal ≤ {} ms (for + 2 intervals): {}/{} within",
        figures.for_ms,
        figures.evaluation_interval_ms,
        figures.median_ms,
        figures.p95_ms,
        figures.max_ms,
        figures.goal_ms,
        figures.within_goal,
        figures.trials
    );
    args.common.emit(&figures)?;
    drop(host);
    Ok(())
}
