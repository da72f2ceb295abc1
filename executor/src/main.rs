//! pbs-executor: the on-prem daemon of PBS Rclone and its command line.
//!
//! This file only parses the command line and hands each subcommand on: `run` to [`daemon`],
//! the others to [`cli`]. The daemon's parts, from the top down:
//!
//! - `daemon`: builds the workers from the configuration; ordered shutdown;
//! - `rules`: watch folders and cron schedules, which make local jobs;
//! - `cloud`: the work-queue poller, control queue, status sender, progress, uploads, rules feed;
//! - `jobs`: the job pipeline (claim → copy → finish), batches, cancels, local jobs, recovery;
//! - `transfer`: endpoints as rclone remotes, the rclone process, delivery and verification;
//! - `ledger`, `config`, `metrics`, `http`, `worker`: the state, settings, windows and loop shape
//!   every part shares.
//!
//! A module uses only modules below it in this list (docs/architecture.md draws the map).

mod cli;
mod cloud;
mod config;
mod daemon;
mod http;
mod jobs;
mod ledger;
mod metrics;
mod rules;
mod transfer;
mod worker;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::cli::doctor;
use crate::config::Config;
use crate::transfer::endpoints::Endpoints;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines (coloured only when stderr is a terminal).
    Text,
    /// One JSON object per line, for journald and log shippers.
    Json,
}

#[derive(Parser)]
#[command(name = "pbs-executor", version, about = "PBS Rclone on-prem executor")]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        env = "PBS_EXECUTOR_CONFIG",
        default_value = "/etc/pbs-executor/config.toml",
        global = true
    )]
    config: PathBuf,
    /// Log format; default: JSON lines under systemd (its journal is stderr), text elsewhere.
    #[arg(long, env = "PBS_LOG_FORMAT", value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGINT or SIGTERM.
    Run,
    /// Check the configuration file and print a summary.
    CheckConfig,
    /// Check everything the executor needs (configuration, rclone, state folder, secrets, AWS
    /// credentials and queue, each endpoint), one line each with a fix hint; non-zero exit when
    /// any check fails.
    Doctor,
    /// The configured endpoints.
    Endpoints {
        #[command(subcommand)]
        command: EndpointsCommand,
    },
    /// Jobs recorded in the local ledger.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Endpoint passwords as systemd encrypted credentials.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Seal the password read from standard input as credential NAME (systemd-creds), write the
    /// unit drop-in that loads it, and print the endpoint's `password_credential` line.
    Seal {
        name: String,
        /// Which key seals it.
        #[arg(long, value_enum, default_value_t = cli::secrets::SealKey::Auto)]
        with_key: cli::secrets::SealKey,
        /// Where the sealed file goes.
        #[arg(long, default_value_os_t = cli::secrets::default_dir())]
        dir: PathBuf,
        /// Where the unit's drop-in goes.
        #[arg(long, default_value_os_t = cli::secrets::default_unit_dir())]
        unit_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum EndpointsCommand {
    /// Write, list, read and delete a probe file on each endpoint (or the one named), and report
    /// what is wrong in seconds. Exits non-zero when any endpoint fails.
    Test {
        /// Only this endpoint.
        name: Option<String>,
        /// Print one JSON object per endpoint instead of a line of text.
        #[arg(long)]
        json: bool,
        /// Seconds allowed per endpoint.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// One job: its state, attempts, result, message and the path of its rclone logs.
    Show {
        job_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The most recent jobs, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// JSON lines when stderr goes to systemd's journal (it sets `JOURNAL_STREAM`), text elsewhere.
fn default_log_format(under_systemd: bool) -> LogFormat {
    if under_systemd {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout is for command output (`jobs list --json`). Colour codes only
    // reach a terminal, never a log file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    init_tracing(cli.log_format.unwrap_or(default_log_format(under_systemd)));
    // Sealing needs no configuration: it comes before one that uses the credential.
    if let Command::Secrets {
        command:
            SecretsCommand::Seal {
                name,
                with_key,
                dir,
                unit_dir,
            },
    } = &cli.command
    {
        return cli::secrets::seal(name, *with_key, dir, unit_dir);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) if matches!(cli.command, Command::Doctor) => {
            println!(
                "FAIL  config: {e} (fix: correct the file; docs/configuration.md lists every key)"
            );
            std::process::exit(1);
        }
        Err(e) => return Err(e.into()),
    };
    match cli.command {
        Command::Doctor => doctor::print(&config).await,
        Command::Run => daemon::run(config, cli.config.clone()).await,
        Command::Endpoints {
            command:
                EndpointsCommand::Test {
                    name,
                    json,
                    timeout,
                },
        } => cli::endpoints::test(config, name, json, Duration::from_secs(timeout)).await,
        Command::CheckConfig => check_config(&config).await,
        Command::Jobs {
            command: JobsCommand::Show { job_id, json },
        } => cli::jobs::show(&config.state_dir, &job_id, json),
        Command::Jobs {
            command: JobsCommand::List { limit, json },
        } => cli::jobs::list(&config.state_dir, limit, json),
        Command::Secrets { .. } => unreachable!("handled before the configuration is read"),
    }
}

/// `check-config`: the file parses, its rules hold, its secrets can be read.
async fn check_config(config: &Config) -> Result<()> {
    Endpoints::resolve(config).await?;
    println!(
        "ok: executor {} in pool {}, {} endpoint(s), {}",
        config.executor_id(),
        config.pool,
        config.endpoints.len(),
        if config.cloud.is_some() {
            "cloud configured"
        } else {
            "standalone"
        }
    );
    Ok(())
}

#[cfg(test)]
mod log_format_tests {
    use super::*;

    #[test]
    fn json_lines_under_systemd_text_elsewhere_unless_asked() {
        assert_eq!(default_log_format(true), LogFormat::Json);
        assert_eq!(default_log_format(false), LogFormat::Text);
        let cli = Cli::parse_from(["pbs-executor", "--log-format", "text", "doctor"]);
        assert_eq!(
            cli.log_format,
            Some(LogFormat::Text),
            "an explicit choice wins"
        );
    }
}
