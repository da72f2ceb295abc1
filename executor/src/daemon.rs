//! `pbs-executor run`: builds the workers from the configuration and runs them until SIGINT or
//! SIGTERM, then shuts down in order: intake stops (no new job is taken), running jobs drain
//! (up to the grace period, then their copies are stopped and released), and the status sender
//! flushes what it can before the process exits.
//!
//! This is the only place that knows every part; the parts know nothing of each other beyond
//! what they are handed here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pbs_shared::ExecutorId;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cloud;
use crate::cloud::artifacts::LogUploader;
use crate::cloud::control::{self, ControlFollower, RuleRetries};
use crate::cloud::lease::PoolLease;
use crate::cloud::poller::Poller;
use crate::cloud::progress::ProgressSink;
use crate::cloud::rules_feed::{CloudRules, RulesFeed};
use crate::cloud::status_sender::{HeartbeatSender, ReportSender, StatusOutbox};
use crate::config::{CloudConfig, Config};
use crate::http;
use crate::jobs::cancels::Cancels;
use crate::jobs::context::JobContext;
use crate::jobs::local::LocalJobs;
use crate::jobs::ports::{ArtifactStore, ProgressWatch};
use crate::jobs::recovery;
use crate::ledger::{Journal, Ledger, Reporter};
use crate::metrics;
use crate::rules::cloud::PoolRules;
use crate::rules::rule_set::RuleSet;
use crate::transfer::endpoints::Endpoints;
use crate::transfer::rclone;
use crate::worker;

/// What every worker is built from, made once at start-up.
struct Parts {
    config: Arc<Config>,
    executor_id: ExecutorId,
    ledger: Arc<Ledger>,
    endpoints: Arc<Endpoints>,
    sdk: aws_config::SdkConfig,
    /// An SQS client whose requests are counted in `/metrics`.
    sqs: aws_sdk_sqs::Client,
}

/// The signals of an ordered shutdown.
#[derive(Clone)]
struct Stops {
    /// Stops intake: no new job is taken, loops end.
    shutdown: CancellationToken,
    /// Stops running copies (after the grace period); their jobs are released.
    abort: CancellationToken,
    /// Running jobs, waited for at shutdown.
    tracker: TaskTracker,
}

/// Runs the daemon until a signal, then shuts down in order.
pub async fn run(config: Config, config_path: PathBuf) -> Result<()> {
    let parts = prepare(config).await?;
    let stops = Stops {
        shutdown: CancellationToken::new(),
        abort: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    spawn_signal_handler(stops.shutdown.clone());
    let cloud = parts.config.cloud.clone();
    let journal = Arc::new(Journal::new(
        parts.ledger.clone(),
        cloud.as_ref().map(|_| Reporter {
            executor_id: parts.executor_id.clone(),
            pool: parts.config.pool.clone(),
        }),
    ));
    // An executor that runs the pool's cloud rules asks for the pool's rule lease.
    let lease = cloud
        .as_ref()
        .filter(|c| c.rules_bucket.is_some())
        .map(|_| {
            Arc::new(PoolLease::new(
                parts.executor_id.clone(),
                parts.config.pool.clone(),
            ))
        });
    let status = Arc::new(StatusOutbox::new(
        cloud
            .as_ref()
            .map(|c| (parts.sqs.clone(), c.status_queue_url.clone())),
        (
            parts.executor_id.clone(),
            parts.config.pool.clone(),
            parts.config.offered_endpoints(),
        ),
        parts.ledger.clone(),
        journal.wake_handle(),
        lease.clone(),
    ));
    // The sender outlives the poller: it stops only after running jobs are settled.
    let sender_stop = CancellationToken::new();
    let sender = tokio::spawn(worker::run(
        ReportSender(status.clone()),
        sender_stop.clone(),
    ));
    let ctx = Arc::new(job_context(&parts, journal)?);
    info!(executor = %parts.executor_id, pool = %parts.config.pool, version = env!("CARGO_PKG_VERSION"),
          mode = if cloud.is_some() { "cloud" } else { "standalone" }, "executor starting");
    serve_http(&parts, &stops).await?;
    let slots = Arc::new(Semaphore::new(parts.config.concurrency));
    let rules = start_rules(
        &parts,
        (ctx.clone(), slots.clone(), lease.clone()),
        &stops,
        config_path,
    );
    if let Some(c) = &cloud {
        let control = (&ctx.cancels, &lease, &rules);
        start_cloud_workers(&parts, c, (&status, control), &stops);
    }
    intake(&parts, (ctx, slots, rules), &stops).await;
    drain(&stops, parts.config.shutdown_grace()).await;
    sender_stop.cancel();
    let _ = sender.await;
    status.flush(Duration::from_secs(5)).await;
    let unsent = parts.ledger.outbox_depth().unwrap_or(0);
    if unsent > 0 {
        warn!(
            unsent,
            "status reports kept in the outbox for the next start"
        );
    }
    info!("executor stopped");
    Ok(())
}

/// The state folder, the ledger, rclone, the endpoints' secrets and the recovery of jobs a
/// previous run left unfinished.
async fn prepare(config: Config) -> Result<Parts> {
    std::fs::create_dir_all(config.state_dir.join("logs"))
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    // rclone reads remotes from the environment only; its config file stays empty.
    std::fs::write(config.state_dir.join("rclone.conf"), "").context("writing rclone.conf")?;
    let ledger = Arc::new(Ledger::open(&config.state_dir.join("ledger.sqlite"))?);
    let rclone_version = rclone::check_version(&config.rclone).await?;
    info!(rclone = %rclone_version, "rclone found");
    let endpoints = Arc::new(Endpoints::resolve(&config).await?);
    recovery::recover(&config, &ledger).context("recovering interrupted jobs")?;
    let sdk = config.aws_sdk_config().await;
    let sqs = metrics::counted_sqs_client(&sdk);
    Ok(Parts {
        executor_id: config.executor_id(),
        config: Arc::new(config),
        ledger,
        endpoints,
        sdk,
        sqs,
    })
}

/// What every job needs.
fn job_context(parts: &Parts, journal: Arc<Journal>) -> Result<JobContext> {
    let credentials = parts
        .sdk
        .credentials_provider()
        .context("no AWS credentials provider found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or a role)")?;
    let cloud = parts.config.cloud.as_ref();
    Ok(JobContext {
        config: parts.config.clone(),
        endpoints: parts.endpoints.clone(),
        journal,
        credentials,
        dest_locks: Default::default(),
        cancels: Arc::new(Cancels::default()),
        progress: cloud.map(|c| -> Arc<dyn ProgressWatch> {
            Arc::new(ProgressSink {
                sqs: parts.sqs.clone(),
                status_queue_url: c.status_queue_url.clone(),
                executor_id: parts.executor_id.clone(),
                pool: parts.config.pool.clone(),
                every: Duration::from_secs(c.progress_seconds),
            })
        }),
        artifacts: cloud.and_then(|c| {
            c.logs_bucket
                .clone()
                .map(|bucket| -> Arc<dyn ArtifactStore> {
                    Arc::new(LogUploader {
                        s3: cloud::s3_client(c, &parts.sdk),
                        bucket,
                        pool: parts.config.pool.clone(),
                    })
                })
        }),
    })
}

/// What the control queue's messages act on: running jobs (cancels), the pool's rule lease, the
/// cloud rules (retries).
type ControlTargets<'a> = (
    &'a Arc<Cancels>,
    &'a Option<Arc<PoolLease>>,
    &'a Arc<PoolRules>,
);

/// The heartbeats, and the follower of this executor's control queue, until shutdown.
fn start_cloud_workers(
    parts: &Parts,
    cloud: &CloudConfig,
    (status, control): (&Arc<StatusOutbox>, ControlTargets<'_>),
    stops: &Stops,
) {
    let heartbeats = HeartbeatSender {
        outbox: status.clone(),
        interval: Duration::from_secs(u64::from(cloud.heartbeat_seconds)),
    };
    tokio::spawn(worker::run(heartbeats, stops.shutdown.clone()));
    follow_control_queue(parts, cloud, control, stops);
}

/// Follows this executor's control queue (cancel requests, lease answers, retries).
fn follow_control_queue(
    parts: &Parts,
    cloud: &CloudConfig,
    (cancels, lease, rules): ControlTargets<'_>,
    stops: &Stops,
) {
    let url = cloud
        .control_queue_url
        .clone()
        .or_else(|| control::derived_url(&cloud.work_queue_url, &parts.executor_id));
    match url {
        Some(url) => {
            // Retries go to the cloud rules only when there is a rules feed.
            let retries = lease
                .as_ref()
                .map(|_| Arc::new(rules.clone()) as Arc<dyn RuleRetries>);
            let follower = ControlFollower::new(
                parts.sqs.clone(),
                url,
                cancels.clone(),
                lease.clone(),
                retries,
            );
            tokio::spawn(worker::run(follower, stops.shutdown.clone()));
        }
        None => {
            warn!(work_queue_url = %cloud.work_queue_url, "no control queue can be derived from the work queue URL; set cloud.control_queue_url to cancel jobs from the cloud")
        }
    }
}

/// `/metrics` and `/healthz`, unless `http_listen = "off"`.
async fn serve_http(parts: &Parts, stops: &Stops) -> Result<()> {
    let Some(addr) = parts.config.http_listen else {
        return Ok(());
    };
    let listener = http::bind(addr)
        .await
        .with_context(|| format!("binding http_listen {addr}"))?;
    let health = Arc::new(http::Health {
        ledger: parts.ledger.clone(),
        state_dir: parts.config.state_dir.clone(),
        rclone: parts.config.rclone.clone(),
        poll_wait: parts
            .config
            .cloud
            .as_ref()
            .map(|c| Duration::from_secs(c.wait_seconds as u64)),
    });
    tokio::spawn(http::serve(listener, health, stops.shutdown.clone()));
    Ok(())
}

/// The watch and schedule rules of the TOML file and of the cloud, followed as they change;
/// returns the cloud rules in force, for the schedule runs and retries the cloud sends.
fn start_rules(
    parts: &Parts,
    (ctx, slots, lease): (Arc<JobContext>, Arc<Semaphore>, Option<Arc<PoolLease>>),
    stops: &Stops,
    config_path: PathBuf,
) -> Arc<PoolRules> {
    let local = Arc::new(LocalJobs {
        ctx,
        slots,
        shutdown: stops.shutdown.clone(),
        abort: stops.abort.clone(),
        tracker: stops.tracker.clone(),
    });
    let mut rules = RuleSet::new(
        parts.config.pool.clone(),
        parts.endpoints.clone(),
        local,
        stops.tracker.clone(),
        stops.shutdown.clone(),
        lease,
    );
    let cloud_rules = rules.cloud_rules();
    let (cloud_tx, cloud_rx) = tokio::sync::mpsc::unbounded_channel();
    if let Some(fetcher) = rules_feed(parts) {
        // The last rules received keep running while the cloud is unreachable.
        let (etag, cached) = fetcher.cached();
        rules.apply_cloud(cached);
        let feed = RulesFeed {
            rules: fetcher,
            etag,
            tx: cloud_tx,
        };
        stops
            .tracker
            .spawn(worker::run(feed, stops.shutdown.clone()));
    }
    rules.apply(&parts.config);
    info!(rules = rules.len(), "watch and schedule rules in force");
    stops
        .tracker
        .spawn(rules.follow(config_path, cloud_rx, stops.shutdown.clone()));
    cloud_rules
}

/// The fetcher of the pool's rules from the cloud, when `cloud.rules_bucket` is set.
fn rules_feed(parts: &Parts) -> Option<CloudRules> {
    let cloud = parts.config.cloud.as_ref()?;
    let bucket = cloud.rules_bucket.clone()?;
    Some(CloudRules {
        s3: cloud::s3_client(cloud, &parts.sdk),
        bucket,
        pool: parts.config.pool.clone(),
        ledger: parts.ledger.clone(),
        every: Duration::from_secs(cloud.rules_poll_seconds),
    })
}

/// Takes jobs (and the runs of the pool's cloud `schedules`) from the pool's work queue until
/// shutdown (standalone: only waits for it).
async fn intake(
    parts: &Parts,
    (ctx, slots, schedules): (Arc<JobContext>, Arc<Semaphore>, Arc<PoolRules>),
    stops: &Stops,
) {
    let Some(cloud) = &parts.config.cloud else {
        info!("no [cloud] section: running standalone (watch and schedule rules only)");
        stops.shutdown.cancelled().await;
        return;
    };
    let poller = Poller {
        sqs: parts.sqs.clone(),
        queue_url: cloud.work_queue_url.clone(),
        wait_seconds: cloud.wait_seconds,
        visibility_timeout: cloud.visibility_timeout_seconds,
        slots,
        batch_max_files: parts.config.batch_max_files,
        ctx,
        schedules: Some(schedules),
    };
    poller
        .run(
            stops.shutdown.clone(),
            stops.abort.clone(),
            stops.tracker.clone(),
        )
        .await;
}

/// Waits for running jobs up to `grace`, then stops their copies and waits for their release.
async fn drain(stops: &Stops, grace: Duration) {
    stops.tracker.close();
    info!(
        running = stops.tracker.len(),
        grace_s = grace.as_secs(),
        "waiting for running jobs"
    );
    if tokio::time::timeout(grace, stops.tracker.wait())
        .await
        .is_err()
    {
        warn!("grace period over: stopping rclone and releasing running jobs");
        stops.abort.cancel();
        stops.tracker.wait().await;
    }
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
