//! The `context-host` command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use context_host::{config::HostConfig, plugins::describe_library};

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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve { config } => {
            let result = HostConfig::load(&config).and_then(context_host::run::serve);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckPlugin { file } => match describe_library(&file) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(reason) => {
                eprintln!("cannot load plugin '{}': {reason}", file.display());
                ExitCode::FAILURE
            }
        },
    }
}
