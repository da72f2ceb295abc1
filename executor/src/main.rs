//! pbs-executor: the on-prem daemon of PBS Rclone and its command line.

mod batch;
mod cancels;
mod cloud_rules;
mod config;
mod control;
mod dest_locks;
mod doctor;
mod endpoints;
mod job_logs;
mod job_runner;
mod ledger;
mod local_jobs;
mod metrics;
mod poller;
mod probe;
mod progress;
mod rclone;
mod recovery;
mod rule_set;
mod rules;
mod schedule;
mod status_outbox;
mod transfer;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::cancels::Cancels;
use crate::cloud_rules::CloudRules;
use crate::config::{CloudConfig, Config};
use crate::endpoints::Endpoints;
use crate::job_logs::LogUploader;
use crate::job_runner::JobContext;
use crate::ledger::Ledger;
use crate::local_jobs::LocalJobs;
use crate::poller::Poller;
use crate::progress::ProgressSink;
use crate::rule_set::RuleSet;
use crate::status_outbox::StatusOutbox;

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
    /// Log format: `text` or `json`.
    #[arg(long, env = "PBS_LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
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

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout is for command output (`jobs list --json`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
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
        Command::Doctor => {
            let checks = doctor::run(&config).await;
            for c in &checks {
                println!("{}", c.line());
            }
            let failed = checks.iter().filter(|c| !c.ok).count();
            if failed > 0 {
                anyhow::bail!("{failed} check(s) failed");
            }
            Ok(())
        }
        Command::Run => run(config, cli.config.clone()).await,
        Command::Endpoints {
            command:
                EndpointsCommand::Test {
                    name,
                    json,
                    timeout,
                },
        } => test_endpoints(config, name, json, Duration::from_secs(timeout)).await,
        Command::CheckConfig => {
            Endpoints::resolve(&config).await?;
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
        Command::Jobs {
            command: JobsCommand::Show { job_id, json },
        } => {
            let ledger = Ledger::open(&config.state_dir.join("ledger.sqlite"))?;
            let Some(mut detail) = ledger.job_detail(&job_id)? else {
                anyhow::bail!("job {job_id:?} is not in this executor's ledger");
            };
            let logs: Vec<String> = std::fs::read_dir(config.state_dir.join("logs"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{job_id}.")))
                })
                .map(|p| p.display().to_string())
                .collect();
            detail["logs"] = serde_json::json!(logs);
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                print_job(&detail);
            }
            Ok(())
        }
        Command::Jobs {
            command: JobsCommand::List { limit, json },
        } => {
            let ledger = Ledger::open(&config.state_dir.join("ledger.sqlite"))?;
            for row in ledger.recent(limit)? {
                if json {
                    println!("{}", serde_json::to_string(&row)?);
                } else {
                    println!(
                        "{}  {:<9}  deliveries={} attempts={} bytes={} {}",
                        row.job_id,
                        row.state,
                        row.deliveries,
                        row.attempts,
                        row.bytes.unwrap_or(0),
                        row.error.unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
    }
}

fn print_job(d: &serde_json::Value) {
    let text = |k: &str| match &d[k] {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    println!("job        {}", text("job_id"));
    println!("rule       {}", text("template_id"));
    println!("state      {}", text("state"));
    if let Some(origin) = d["job"]["origin"].as_object() {
        println!(
            "origin     {} {}",
            origin["kind"].as_str().unwrap_or(""),
            origin["rule"].as_str().unwrap_or("")
        );
    }
    println!("source     {}", d["job"]["source"]);
    println!(
        "to         {}",
        d["job"]["destination"].as_str().unwrap_or("-")
    );
    println!("files      {} ({} bytes)", text("files"), text("bytes"));
    println!("received   {}", text("received_at"));
    println!("finished   {}", text("finished_at"));
    if d["error"].is_string() {
        println!("error      [{}] {}", text("error_class"), text("error"));
    }
    for a in d["attempt_history"].as_array().into_iter().flatten() {
        println!(
            "attempt {}  {}  {} .. {}  {}",
            a["attempt"],
            a["state"].as_str().unwrap_or(""),
            a["started_at"].as_str().unwrap_or(""),
            a["finished_at"].as_str().unwrap_or("-"),
            a["error"].as_str().unwrap_or("")
        );
    }
    for f in d["job"]["files"].as_array().into_iter().flatten() {
        println!(
            "file       {} -> {} ({} bytes)",
            f["key"].as_str().unwrap_or(""),
            f["dest_path"].as_str().unwrap_or(""),
            f["size"]
        );
    }
    for l in d["logs"].as_array().into_iter().flatten() {
        println!("log        {}", l.as_str().unwrap_or(""));
    }
}

/// The fetcher of the pool's rules from the cloud, when `cloud.rules_bucket` is set.
/// An S3 client for the stack's own buckets (rules, logs).
fn cloud_s3_client(cloud: &CloudConfig, sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut s3 = aws_sdk_s3::config::Builder::from(sdk);
    if let Some(url) = cloud
        .s3_endpoint_url
        .as_ref()
        .or(cloud.endpoint_url.as_ref())
    {
        s3 = s3.endpoint_url(url).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(s3.build())
}

fn cloud_rules_fetcher(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    ledger: Arc<Ledger>,
) -> Option<CloudRules> {
    let cloud = config.cloud.as_ref()?;
    let bucket = cloud.rules_bucket.clone()?;
    Some(CloudRules {
        s3: cloud_s3_client(cloud, sdk),
        bucket,
        pool: config.pool.clone(),
        ledger,
        every: Duration::from_secs(cloud.rules_poll_seconds),
    })
}

/// AWS credentials from the standard chain, for S3 endpoints outside a `[cloud]` section.
async fn aws_credentials(config: &Config) -> Option<aws_credential_types::Credentials> {
    use aws_credential_types::provider::ProvideCredentials;
    let sdk = config.aws_sdk_config().await;
    sdk.credentials_provider()?.provide_credentials().await.ok()
}

async fn test_endpoints(
    config: Config,
    only: Option<String>,
    json: bool,
    limit: Duration,
) -> Result<()> {
    std::fs::create_dir_all(config.state_dir.join("logs"))
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    std::fs::write(config.state_dir.join("rclone.conf"), "").context("writing rclone.conf")?;
    rclone::check_version(&config.rclone).await?;
    let endpoints = Endpoints::resolve(&config).await?;
    let selected: Vec<_> = endpoints
        .iter()
        .filter(|e| only.as_deref().is_none_or(|n| e.name.as_str() == n))
        .collect();
    if let Some(n) = &only
        && selected.is_empty()
    {
        anyhow::bail!("endpoint {n:?} is not defined in the configuration");
    }
    let creds = if endpoints.uses_s3() {
        aws_credentials(&config).await
    } else {
        None
    };
    let mut failed = 0;
    for ep in selected {
        let report = match ep.side("DST", config.cloud.as_ref(), creds.as_ref()) {
            Ok(side) => probe::probe(ep, &side, &config.rclone, &config.state_dir, limit).await,
            Err(e) => probe::ProbeReport {
                endpoint: ep.name.to_string(),
                location: probe::location(&ep.config),
                ok: false,
                step: Some("setup"),
                problem: Some("auth"),
                message: Some(e.to_string()),
                elapsed_ms: 0,
            },
        };
        if !report.ok {
            failed += 1;
        }
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", report.line());
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} endpoint(s) failed the test");
    }
    Ok(())
}

async fn run(config: Config, config_path: PathBuf) -> Result<()> {
    std::fs::create_dir_all(config.state_dir.join("logs"))
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    // rclone reads remotes from the environment only; its config file stays empty.
    std::fs::write(config.state_dir.join("rclone.conf"), "").context("writing rclone.conf")?;
    let ledger = Arc::new(Ledger::open(&config.state_dir.join("ledger.sqlite"))?);
    let rclone_version = rclone::check_version(&config.rclone).await?;
    let endpoints = Arc::new(Endpoints::resolve(&config).await?);
    recovery::recover(&config, &ledger).context("recovering interrupted jobs")?;
    let executor_id = config.executor_id();
    let config = Arc::new(config);

    let shutdown = CancellationToken::new();
    let abort = CancellationToken::new();
    let tracker = TaskTracker::new();
    spawn_signal_handler(shutdown.clone());

    let cloud = config.cloud.clone();
    let sdk = config.aws_sdk_config().await;
    let credentials = sdk
        .credentials_provider()
        .context("no AWS credentials provider found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or a role)")?;
    let sqs = metrics::counted_sqs_client(&sdk);
    let status = Arc::new(StatusOutbox::new(
        cloud
            .as_ref()
            .map(|c| (sqs.clone(), c.status_queue_url.clone())),
        executor_id.clone(),
        config.pool.clone(),
        ledger.clone(),
    ));
    // The sender outlives the poller: it stops only after running jobs are settled.
    let sender_stop = CancellationToken::new();
    let sender = tokio::spawn({
        let status = status.clone();
        let stop = sender_stop.clone();
        async move { status.run(stop).await }
    });
    if let Some(c) = &cloud {
        let status = status.clone();
        let stop = shutdown.clone();
        let every = Duration::from_secs(u64::from(c.heartbeat_seconds));
        tokio::spawn(async move { status.heartbeats(every, stop).await });
    }
    let cancels = Arc::new(Cancels::default());
    if let Some(c) = &cloud {
        match c
            .control_queue_url
            .clone()
            .or_else(|| control::derived_url(&c.work_queue_url, &executor_id))
        {
            Some(url) => {
                tokio::spawn(control::follow(
                    sqs.clone(),
                    url,
                    cancels.clone(),
                    shutdown.clone(),
                ));
            }
            None => {
                warn!(work_queue_url = %c.work_queue_url, "no control queue can be derived from the work queue URL; set cloud.control_queue_url to cancel jobs from the cloud")
            }
        }
    }
    let ctx = Arc::new(JobContext {
        config: config.clone(),
        endpoints: endpoints.clone(),
        ledger: ledger.clone(),
        status: status.clone(),
        credentials,
        dest_locks: Default::default(),
        cancels,
        progress: cloud.as_ref().map(|c| ProgressSink {
            sqs: sqs.clone(),
            status_queue_url: c.status_queue_url.clone(),
            executor_id: executor_id.clone(),
            pool: config.pool.clone(),
            every: Duration::from_secs(c.progress_seconds),
        }),
        logs: cloud.as_ref().and_then(|c| {
            c.logs_bucket.clone().map(|bucket| LogUploader {
                s3: cloud_s3_client(c, &sdk),
                bucket,
                pool: config.pool.clone(),
            })
        }),
    });
    info!(executor = %executor_id, pool = %config.pool, version = env!("CARGO_PKG_VERSION"), rclone = %rclone_version,
          mode = if cloud.is_some() { "cloud" } else { "standalone" }, "executor starting");

    if config.http_listen != "off" {
        let listener = metrics::bind(&config.http_listen)
            .await
            .with_context(|| format!("binding http_listen {}", config.http_listen))?;
        let health = Arc::new(metrics::Health {
            ledger: ledger.clone(),
            state_dir: config.state_dir.clone(),
            rclone: config.rclone.clone(),
            poll_wait: cloud
                .as_ref()
                .map(|c| Duration::from_secs(c.wait_seconds as u64)),
        });
        tokio::spawn(metrics::serve(listener, health, shutdown.clone()));
    }
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let local = Arc::new(LocalJobs {
        ctx: ctx.clone(),
        slots: slots.clone(),
        shutdown: shutdown.clone(),
        abort: abort.clone(),
        tracker: tracker.clone(),
    });
    let mut rules = RuleSet::new(
        config.pool.clone(),
        endpoints,
        local,
        tracker.clone(),
        shutdown.clone(),
    );
    let (cloud_tx, cloud_rx) = tokio::sync::mpsc::unbounded_channel();
    if let Some(fetcher) = cloud_rules_fetcher(&config, &sdk, ledger.clone()) {
        // The last rules received keep running while the cloud is unreachable.
        let (etag, cached) = fetcher.cached();
        rules.apply_cloud(cached);
        tracker.spawn(fetcher.run(etag, cloud_tx, shutdown.clone()));
    }
    rules.apply(&config);
    info!(rules = rules.len(), "watch and schedule rules in force");
    tracker.spawn(rules.follow(config_path, cloud_rx, shutdown.clone()));

    match cloud {
        Some(cloud) => {
            let poller = Poller {
                sqs,
                queue_url: cloud.work_queue_url.clone(),
                wait_seconds: cloud.wait_seconds,
                visibility_timeout: cloud.visibility_timeout_seconds,
                slots,
                batch_max_files: config.batch_max_files,
                ctx,
            };
            poller
                .run(shutdown.clone(), abort.clone(), tracker.clone())
                .await;
        }
        None => {
            info!("no [cloud] section: running standalone (watch and schedule rules only)");
            shutdown.cancelled().await;
        }
    }

    tracker.close();
    let grace = config.shutdown_grace();
    info!(
        running = tracker.len(),
        grace_s = grace.as_secs(),
        "waiting for running jobs"
    );
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!("grace period over: stopping rclone and releasing running jobs");
        abort.cancel();
        tracker.wait().await;
    }
    sender_stop.cancel();
    let _ = sender.await;
    status.flush(Duration::from_secs(5)).await;
    let unsent = ledger.outbox_depth().unwrap_or(0);
    if unsent > 0 {
        warn!(
            unsent,
            "status reports kept in the outbox for the next start"
        );
    }
    info!("executor stopped");
    Ok(())
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutdown requested");
        shutdown.cancel();
    });
}
