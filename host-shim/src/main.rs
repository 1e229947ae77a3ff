//! The `context-host` command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use context_host::{
    bench,
    config::HostConfig,
    plugins::describe_library,
    workload::{corpus, loadgen},
};

#[derive(Parser)]
#[command(name = "context-host", version, about = "Context server stand-in that loads plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve searches with the plugins the config enables.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a plugin library's name, version and interface version, or why
    /// it cannot be loaded.
    CheckPlugin { file: PathBuf },
    /// Parse a host config file as `serve` would, print what it sets up,
    /// and exit non-zero with the offending key if it is invalid.
    CheckConfig { file: PathBuf },
    /// Write a corpus of source-like files (deterministic for a seed) and
    /// print its `[[projects]]` sections.
    GenCorpus {
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        files: usize,
        #[arg(long, default_value_t = 1)]
        projects: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The host's `index.max_file_bytes`: one file per project is made
        /// one byte larger (sparse).
        #[arg(long, default_value_t = 1024 * 1024)]
        max_file_bytes: u64,
    },
    /// Send a bounded workload to a host on 127.0.0.1.
    Loadgen(loadgen::LoadConfig),
    /// Benchmarks that run whole hosts (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Search throughput and p99, plugin enabled against disabled.
    Throughput(bench::throughput::ThroughputArgs),
    /// `/metrics` scrape time and size with 50 projects.
    Scrape(bench::scrape::ScrapeArgs),
    /// Resident memory, plugin enabled against disabled, at a fixed rate.
    Memory(bench::memory::MemoryArgs),
    /// Time from a rule's threshold crossing to its notification arriving.
    AlertLatency(bench::alert::AlertArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Serve { config } => HostConfig::load(&config).and_then(context_host::run::serve),
        Command::CheckPlugin { file } => match describe_library(&file) {
            Ok(text) => {
                println!("{text}");
                Ok(())
            }
            Err(reason) => {
                eprintln!("cannot load plugin '{}': {reason}", file.display());
                return ExitCode::FAILURE;
            }
        },
        Command::CheckConfig { file } => HostConfig::load(&file).map(|config| print!("{}", config.summary())),
        Command::GenCorpus { dir, files, projects, seed, max_file_bytes } => {
            corpus::generate(&dir, files, projects, seed, max_file_bytes).map(|made| {
                eprintln!(
                    "wrote {} files ({:.1} MB) in {} project(s) under {}",
                    made.files,
                    made.bytes as f64 / 1e6,
                    made.projects.len(),
                    made.root.display()
                );
                print!("{}", made.projects_toml());
            })
        }
        Command::Loadgen(config) => loadgen::run_blocking(&config).and_then(|report| {
            if config.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                report.print();
            }
            if report.failures > 0 {
                anyhow::bail!("{} requests failed", report.failures);
            }
            Ok(())
        }),
        Command::Bench(BenchCommand::Throughput(args)) => bench::throughput::run(&args),
        Command::Bench(BenchCommand::Scrape(args)) => bench::scrape::run(&args),
        Command::Bench(BenchCommand::Memory(args)) => bench::memory::run(&args),
        Command::Bench(BenchCommand::AlertLatency(args)) => bench::alert::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
