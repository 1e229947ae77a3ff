//! `context-analytics-admin`: operator commands that use the plugin's own
//! config types and storage module, so they accept exactly what the plugin
//! accepts and write exactly what it writes.
//!
//! - `check-config FILE`: the `[plugins.analytics.config]` table of a host
//!   config, checked as the plugin checks it at load.
//! - `copy --from URL --to URL [--append]`: every event, rollup and ingest
//!   mark from one analytics database into another (SQLite to PostgreSQL or
//!   TimescaleDB, and back): an empty one, or with `--append` one that
//!   servers already write.

mod check;
mod copy;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "context-analytics-admin",
    version,
    about = "Operator commands for the Context analytics plugin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the `[plugins.analytics.config]` table of a host config file as
    /// the plugin does at load (keys, values, storage URL, tokens, the
    /// privacy secret's environment variable).
    CheckConfig {
        file: PathBuf,
        /// The plugin's section name in the host config.
        #[arg(long, default_value = "analytics")]
        plugin: String,
    },
    /// Copy an analytics database into another, empty one: raw events,
    /// ingest marks, and the rollups where the target keeps them as tables.
    Copy {
        /// Source URL (`sqlite://PATH` or `postgres://USER@HOST:PORT/DB`).
        #[arg(long)]
        from: String,
        /// Target URL; its tables are created if missing and must be empty.
        #[arg(long)]
        to: String,
        /// Folder relative `sqlite://` paths are taken from (the plugin's
        /// data dir: `<server data_dir>/plugins/analytics`).
        #[arg(long, default_value = ".")]
        data_dir: PathBuf,
        /// `timescaledb` setting for the target: auto, on or off.
        #[arg(long, default_value = "auto")]
        timescaledb: String,
        /// Merge into a target that servers already write (after switching
        /// them to it), instead of requiring an empty one. Refused when the
        /// target already holds events of a source's instance and boot.
        #[arg(long)]
        append: bool,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::CheckConfig { file, plugin } => check::run(&file, &plugin).map(|text| print!("{text}")),
        Command::Copy { from, to, data_dir, timescaledb, append } => {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(copy::run(&from, &to, &data_dir, &timescaledb, append)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
