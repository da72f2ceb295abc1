//! Runs one job message to its outcome: dedup against the ledger, status reports, the copy itself
//! and its verification. Returns what should happen to the SQS message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use pbs_shared::Bandwidth;
use pbs_shared::message::{STAGING_ENDPOINT, sequencer_cmp};
use pbs_shared::report::{self, ReportRow};
use pbs_shared::{
    DeliveredFile, DestPath, ErrorClass, FileOutcome, JobId, JobMessage, JobResult, JobSource,
    JobState, Overwrite,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::cloud::artifacts::LogUploader;
use crate::cloud::progress::ProgressSink;
use crate::cloud::status_sender::StatusOutbox;
use crate::config::{Config, EndpointConfig};
use crate::jobs::batch;
use crate::jobs::cancels::Cancels;
use crate::jobs::dest_locks::DestLocks;
use crate::ledger::{Claim, Ledger, Outcome};
use crate::metrics::{self, METRICS};
use crate::transfer;
use crate::transfer::endpoints::{self, Endpoints, Side};
use crate::transfer::rclone;

/// What to do with the SQS message once the job is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The outcome is recorded and reported: delete the message.
    Delete,
    /// Make the message visible again after this delay (retry, shutdown, or a poison message that
    /// the queue's redrive policy will move to its dead-letter queue).
    Release(Duration),
    /// Leave the message as it is; it reappears when its visibility timeout ends.
    Keep,
}

/// Everything a job needs from the executor.
pub struct JobContext {
    pub config: Arc<Config>,
    pub endpoints: Arc<Endpoints>,
    pub ledger: Arc<Ledger>,
    pub status: Arc<StatusOutbox>,
    pub credentials: SharedCredentialsProvider,
    pub dest_locks: DestLocks,
    /// Cancel requests and the running jobs they stop.
    pub cancels: Arc<Cancels>,
    /// Where running jobs' progress goes (`None`: standalone).
    pub progress: Option<ProgressSink>,
    /// Where finished attempts' logs go (`None`: they stay in the state folder).
    pub logs: Option<LogUploader>,
}

/// A received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    /// SQS's receive count: the attempt number across every executor of the pool.
    pub receive_count: u32,
}

pub async fn handle(ctx: &JobContext, msg: &Received, abort: &CancellationToken) -> Disposition {
    let job = match JobMessage::parse(&msg.body) {
        Ok(job) => job,
        Err(e) => return poison(ctx, msg, &e.to_string()).await,
    };
    let span =
        info_span!("job", job_id = %job.job_id, template = %job.template_id, pool = %job.pool);
    run(ctx, msg, job, abort).instrument(span).await.0
}

/// Runs jobs received together (one [`batch`] unit) with one copy; each job keeps its own claim,
/// attempt, result, report and disposition (returned in the order given).
pub async fn handle_batch(
    ctx: &JobContext,
    batch: &[(Received, JobMessage)],
    abort: &CancellationToken,
) -> Vec<Disposition> {
    let job_span = |job: &JobMessage| info_span!("job", job_id = %job.job_id, template = %job.template_id, pool = %job.pool);
    let mut settled: Vec<Option<Disposition>> = vec![None; batch.len()];
    let mut running: Vec<(usize, u32)> = Vec::with_capacity(batch.len());
    for (i, (msg, job)) in batch.iter().enumerate() {
        match job_span(job).in_scope(|| begin(ctx, msg, job)) {
            Ok(attempt) => running.push((i, attempt)),
            Err((disposition, _)) => settled[i] = Some(disposition),
        }
    }
    if !running.is_empty() {
        METRICS.batch(running.len());
        let started = Instant::now();
        // One copy: cancelling one of its jobs stops it; the others run again (interrupted).
        let stop = abort.child_token();
        let ids = running.iter().map(|&(i, _)| &batch[i].1.job_id);
        let copies = {
            let _running = ctx.cancels.register(ids, &stop);
            copy_together(ctx, batch, &running, &stop)
                .instrument(info_span!("batch", jobs = running.len()))
                .await
        };
        let mut finals = Vec::new();
        for (&(i, attempt), copied) in running.iter().zip(copies) {
            let job = &batch[i].1;
            let copied = cancelled_or(ctx, job, abort, copied);
            match job_span(job).in_scope(|| decide(ctx, job, attempt, started, copied)) {
                Decided::Again(disposition) => settled[i] = Some(disposition),
                Decided::Final { outcome, delivered } => {
                    finals.push((i, attempt, outcome, delivered))
                }
            }
        }
        if let Some(&(first, attempt, ..)) = finals.first() {
            // The batch's log and one report for all its finished jobs.
            let log = rclone::log_path(
                &ctx.config.state_dir,
                batch[first].1.job_id.as_str(),
                attempt,
            );
            let ended: Vec<_> = finals
                .iter()
                .map(|(i, _, o, d)| (&batch[*i].1, o, d))
                .collect();
            let artifacts = upload_artifacts(ctx, &ended, attempt, &log).await;
            for (i, attempt, outcome, delivered) in finals {
                let job = &batch[i].1;
                let (disposition, _) = job_span(job).in_scope(|| {
                    record(
                        ctx,
                        job,
                        attempt,
                        started,
                        (outcome, delivered),
                        artifacts.clone(),
                    )
                });
                settled[i] = Some(disposition);
            }
        }
    }
    settled
        .into_iter()
        .map(|d| d.expect("every job of a batch is settled"))
        .collect()
}

/// The copy of a batch's running jobs (`(index, attempt)` into `batch`), one [`Copy`] per job.
async fn copy_together(
    ctx: &JobContext,
    batch: &[(Received, JobMessage)],
    running: &[(usize, u32)],
    abort: &CancellationToken,
) -> Vec<Copy> {
    let jobs: Vec<&JobMessage> = running.iter().map(|&(i, _)| &batch[i].1).collect();
    let (first, first_attempt) = (jobs[0], running[0].1);
    let (src, dst) = match sides(ctx, first).await {
        Ok(s) => s,
        Err(c) => return vec![c; jobs.len()],
    };
    let destination = first.destination.as_str();
    // Writes of one path run one at a time (locked in path order, so batches never deadlock).
    let mut paths: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j.files.iter().map(|f| f.dest_path.as_str()))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    let mut _locks = Vec::with_capacity(paths.len());
    for p in paths {
        _locks.push(ctx.dest_locks.lock(destination, p).await);
    }
    // Files a newer write already reached are not copied again.
    let mut superseded: Vec<Vec<bool>> = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let mut flags = Vec::with_capacity(job.files.len());
        for file in &job.files {
            let newer = match &file.sequencer {
                Some(seq) => match ctx
                    .ledger
                    .delivered_sequencer(destination, file.dest_path.as_str())
                {
                    Ok(known) => known.is_some_and(|k| sequencer_cmp(&k, seq).is_gt()),
                    Err(e) => return vec![failed(ErrorClass::Internal, e.to_string()); jobs.len()],
                },
                None => false,
            };
            flags.push(newer);
        }
        superseded.push(flags);
    }
    let Some(mapping) = batch::mapping(&jobs) else {
        // Jobs are grouped by their mapping, so this does not happen; run them one by one if it does.
        return one_by_one(ctx, &jobs, running, abort).await;
    };
    // Which files go in the copy, by their index in the mapping.
    let mut wanted = Vec::new();
    let mut expected = Vec::new();
    let mut index = 0;
    for (job, flags) in jobs.iter().zip(&superseded) {
        for (file, newer) in job.files.iter().zip(flags) {
            if !newer {
                wanted.push(mapping.rels[index].clone());
                expected.push(file.size);
            }
            index += 1;
        }
    }
    let log = rclone::log_path(&ctx.config.state_dir, first.job_id.as_str(), first_attempt);
    let bandwidth = bandwidth_limit(
        ctx.config.bandwidth_limit.as_ref(),
        first.bandwidth.as_ref(),
    );
    let runner = runner(ctx, (&src, &dst), &log, bandwidth.as_deref(), abort);
    let checked = if wanted.is_empty() {
        Vec::new()
    } else {
        match runner
            .deliver_each(
                &src,
                &dst,
                (&mapping.src_dir, &mapping.dst_dir, &wanted),
                &expected,
                first.delivery,
            )
            .await
        {
            Ok(c) => c,
            Err(transfer::Fail::Interrupted) => return vec![Copy::Interrupted; jobs.len()],
            Err(transfer::Fail::Failed { error, .. }) => {
                warn!(error = %error, jobs = jobs.len(), "the batch copy failed; running its jobs one by one");
                return one_by_one(ctx, &jobs, running, abort).await;
            }
        }
    };
    // Every job's own rclone log is the batch's.
    for (job, &(_, attempt)) in jobs.iter().zip(running).skip(1) {
        let theirs = rclone::log_path(&ctx.config.state_dir, job.job_id.as_str(), attempt);
        let _ = std::fs::hard_link(&log, theirs);
    }
    let (from, to) = (src.display(&mapping.src_dir), dst.display(&mapping.dst_dir));
    // The delivered writes' sequencers, recorded in one transaction for the whole copy.
    let mut results = checked.iter();
    let mut writes = Vec::new();
    for (job, flags) in jobs.iter().zip(&superseded) {
        for (file, newer) in job.files.iter().zip(flags) {
            if *newer {
                continue;
            }
            if let Some(transfer::Checked::Delivered(_)) = results.next()
                && let Some(seq) = &file.sequencer
            {
                writes.push((file.dest_path.as_str(), seq.as_str(), &job.job_id));
            }
        }
    }
    let unrecorded = ctx
        .ledger
        .record_delivered_all(destination, &writes)
        .err()
        .map(|e| e.to_string());
    let mut results = checked.into_iter();
    let mut copies = Vec::with_capacity(jobs.len());
    for (job, flags) in jobs.iter().zip(&superseded) {
        let (mut files, mut bytes) = (0, 0);
        let mut superseded_keys = Vec::new();
        let mut delivered = Vec::with_capacity(job.files.len());
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        let unrecorded = unrecorded
            .as_ref()
            .filter(|_| writes.iter().any(|(_, _, id)| *id == &job.job_id));
        for (file, newer) in job.files.iter().zip(flags) {
            let mut entry = DeliveredFile {
                key: file.key.clone(),
                dest_path: file.dest_path.to_string(),
                size: file.size,
                md5: None,
                outcome: FileOutcome::Superseded,
            };
            if *newer {
                superseded_keys.push(file.key.clone());
            } else {
                match results.next().expect("one result per copied file") {
                    transfer::Checked::Delivered(d) => {
                        files += 1;
                        bytes += d.size;
                        entry.size = d.size;
                        entry.md5 = d.md5;
                        entry.outcome = d.outcome;
                    }
                    transfer::Checked::Missing => {
                        missing.push(file);
                        continue;
                    }
                    transfer::Checked::Mismatch(why) => {
                        mismatched.push(why);
                        continue;
                    }
                }
            }
            delivered.push(entry);
        }
        // A file that did not land fails its job; the report still tells each file's outcome.
        let failed = |class, error| Copy::Failed {
            class,
            error,
            delivered: delivered.clone(),
        };
        copies.push(if let Some(e) = unrecorded {
            failed(ErrorClass::Internal, e.clone())
        } else if let [file] = missing.as_slice() {
            // The same words as for a job copied alone.
            failed(
                ErrorClass::NotFound,
                transfer::source_not_found(
                    &src.display(&file.key),
                    &dst.display(file.dest_path.as_str()),
                ),
            )
        } else if !missing.is_empty() {
            let keys: Vec<&str> = missing.iter().map(|f| f.key.as_str()).collect();
            failed(
                ErrorClass::NotFound,
                transfer::not_delivered(&keys, job.files.len(), &from, &to),
            )
        } else if !mismatched.is_empty() {
            let why: Vec<&str> = mismatched.iter().map(String::as_str).collect();
            failed(ErrorClass::Integrity, transfer::mismatched(&why))
        } else {
            Copy::Done {
                files,
                bytes,
                superseded: superseded_keys,
                delivered,
            }
        });
    }
    copies
}

/// Each running job of a batch copied on its own.
async fn one_by_one(
    ctx: &JobContext,
    jobs: &[&JobMessage],
    running: &[(usize, u32)],
    abort: &CancellationToken,
) -> Vec<Copy> {
    let mut out = Vec::with_capacity(jobs.len());
    for (job, &(_, attempt)) in jobs.iter().zip(running) {
        out.push(copy(ctx, job, attempt, abort).await);
    }
    out
}

/// Runs a job made on this executor (watch, schedule) as attempt `attempt`; also returns the
/// state it ended in, when it ended.
pub async fn handle_local(
    ctx: &JobContext,
    job: JobMessage,
    attempt: u32,
    abort: &CancellationToken,
) -> (Disposition, Option<JobState>) {
    let msg = Received {
        body: serde_json::to_string(&job).expect("jobs serialise"),
        receive_count: attempt,
    };
    let span =
        info_span!("job", job_id = %job.job_id, template = %job.template_id, pool = %job.pool);
    run(ctx, &msg, job, abort).instrument(span).await
}

/// A message that is not a valid v1 job: reported as a failed job when its id can be read, and
/// released so the queue's redrive policy moves it to the dead-letter queue.
async fn poison(ctx: &JobContext, msg: &Received, reason: &str) -> Disposition {
    error!(reason = %reason, receive_count = msg.receive_count, "unprocessable job message");
    let job_id = serde_json::from_str::<serde_json::Value>(&msg.body)
        .ok()
        .and_then(|v| v.get("job_id").and_then(|j| j.as_str()).map(str::to_owned))
        .and_then(|j| JobId::parse(j).ok());
    if let Some(job_id) = job_id {
        let result = failure_result(
            ErrorClass::BadRequest,
            format!("invalid job message: {reason}"),
            0,
        );
        let report = ctx
            .status
            .message(&job_id, msg.receive_count, JobState::Failed, Some(result));
        if let Err(e) = ctx.status.report(&report) {
            error!(error = %e, "failure report not recorded");
        }
    }
    Disposition::Release(Duration::ZERO)
}

fn failure_result(class: ErrorClass, error: String, duration_ms: u64) -> JobResult {
    JobResult {
        files: 0,
        bytes: 0,
        duration_ms,
        error_class: Some(class),
        error: Some(error),
        note: None,
        delivered: Vec::new(),
        log_key: None,
        report_key: None,
    }
}

async fn run(
    ctx: &JobContext,
    msg: &Received,
    job: JobMessage,
    abort: &CancellationToken,
) -> (Disposition, Option<JobState>) {
    let attempt = match begin(ctx, msg, &job) {
        Ok(attempt) => attempt,
        Err(settled) => return settled,
    };
    let started = Instant::now();
    let log = rclone::log_path(&ctx.config.state_dir, job.job_id.as_str(), attempt);
    let copied = match ctx.cancels.requested(&job.job_id) {
        // Cancelled while it waited in the queue.
        Some(by) => Copy::Cancelled { by },
        None => {
            let stop = abort.child_token();
            let _running = ctx.cancels.register([&job.job_id], &stop);
            let watch_stop = CancellationToken::new();
            let watching = ctx.progress.clone().map(|sink| {
                let (job, log, watch_stop) = (job.clone(), log.clone(), watch_stop.clone());
                tokio::spawn(async move { sink.watch(&job, attempt, &log, watch_stop).await })
            });
            let copied = copy(ctx, &job, attempt, &stop).await;
            watch_stop.cancel();
            if let Some(w) = watching {
                let _ = w.await;
            }
            cancelled_or(ctx, &job, abort, copied)
        }
    };
    match decide(ctx, &job, attempt, started, copied) {
        Decided::Again(disposition) => (disposition, None),
        Decided::Final { outcome, delivered } => {
            let artifacts =
                upload_artifacts(ctx, &[(&job, &outcome, &delivered)], attempt, &log).await;
            record(ctx, &job, attempt, started, (outcome, delivered), artifacts)
        }
    }
}

/// An interrupted copy whose job an operator cancelled (and not the executor's shutdown) is
/// cancelled; anything else stays as it is.
fn cancelled_or(
    ctx: &JobContext,
    job: &JobMessage,
    abort: &CancellationToken,
    copied: Copy,
) -> Copy {
    match (copied, ctx.cancels.requested(&job.job_id)) {
        (Copy::Interrupted, Some(by)) if !abort.is_cancelled() => Copy::Cancelled { by },
        (copied, _) => copied,
    }
}

/// Uploads the log and the delivery report of finished jobs that shared one attempt's `log` (one
/// job, or a batch: one log and one report, under its first job).
async fn upload_artifacts(
    ctx: &JobContext,
    ended: &[(&JobMessage, &Outcome, &Vec<DeliveredFile>)],
    attempt: u32,
    log: &std::path::Path,
) -> Artifacts {
    let Some(uploader) = ctx.logs.as_ref() else {
        return Artifacts::default();
    };
    let first = &ended[0].0.job_id;
    let rows: Vec<ReportRow> = ended
        .iter()
        .flat_map(|(job, outcome, delivered)| {
            report::rows(job, delivered, outcome.error.as_deref())
        })
        .collect();
    let mut secrets = ctx.endpoints.secrets();
    if let Ok(creds) = ctx.credentials.provide_credentials().await {
        secrets.push(creds.secret_access_key().to_owned());
        secrets.extend(creds.session_token().map(str::to_owned));
    }
    Artifacts {
        log_key: match log.exists() {
            true => uploader.upload(first, attempt, log, &secrets).await,
            false => None,
        },
        report_key: uploader.upload_report(first, attempt, &rows).await,
    }
}

/// Claims a delivery in the ledger and starts its attempt: `Ok(attempt)` when the job is to run
/// now, or how the message is settled when it is not (a duplicate, an already finished job, an
/// unusable ledger).
fn begin(
    ctx: &JobContext,
    msg: &Received,
    job: &JobMessage,
) -> Result<u32, (Disposition, Option<JobState>)> {
    let attempt = msg.receive_count.max(1);
    let claim = match ctx.ledger.claim(job, &msg.body) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "ledger unavailable; job left for redelivery");
            return Err((Disposition::Keep, None));
        }
    };
    let deliveries = match claim {
        Claim::Run { deliveries } => deliveries,
        Claim::InFlight => {
            // The running delivery holds its own message, which comes back if it fails.
            info!("duplicate delivery of a job running here now; dropped");
            return Err((Disposition::Delete, None));
        }
        Claim::Done(prev) => {
            info!(state = %prev.state, "this version's job already ended here; acknowledging without running it again");
            let result = JobResult {
                files: prev.files,
                bytes: prev.bytes,
                duration_ms: prev.duration_ms,
                error_class: prev.error_class,
                error: prev.error.clone(),
                note: None,
                delivered: Vec::new(),
                log_key: None,
                report_key: None,
            };
            // Reported as the attempt that ended it, so the job's history stays true.
            let report = ctx
                .status
                .for_job(job, prev.attempt.max(1), prev.state, Some(result));
            return Err(match ctx.status.report(&report) {
                Ok(()) => (Disposition::Delete, Some(prev.state)),
                Err(e) => {
                    error!(error = %e, "report not recorded; job left for redelivery");
                    (Disposition::Keep, None)
                }
            });
        }
    };
    tracing::debug!(deliveries, attempt, "running");
    if let Err(e) = ctx.ledger.start_attempt(&job.job_id, attempt) {
        error!(error = %e, "ledger unavailable; job left for redelivery");
        return Err((Disposition::Keep, None));
    }
    let running = ctx.status.for_job(job, attempt, JobState::Running, None);
    if let Err(e) = ctx.status.report(&running) {
        warn!(error = %e, "running report not recorded; continuing");
    }
    Ok(attempt)
}

/// How an attempt ends.
enum Decided {
    /// It runs again (interrupted, or a retryable failure): already noted in the ledger.
    Again(Disposition),
    /// Its outcome, to be recorded and reported by [`record`].
    Final {
        outcome: Outcome,
        delivered: Vec<DeliveredFile>,
    },
}

/// What an attempt that started at `started` comes to.
fn decide(
    ctx: &JobContext,
    job: &JobMessage,
    attempt: u32,
    started: Instant,
    copied: Copy,
) -> Decided {
    let duration_ms = started.elapsed().as_millis() as u64;
    let (outcome, delivered) = match copied {
        Copy::Done {
            files,
            bytes,
            superseded,
            delivered,
        } => {
            let skipped = delivered
                .iter()
                .filter(|d| d.outcome == FileOutcome::SkippedExisting)
                .count();
            let mut notes = Vec::new();
            if !superseded.is_empty() {
                notes.push(format!(
                    "skipped as superseded (a newer write was already delivered): {}",
                    superseded.join(", ")
                ));
            }
            if skipped > 0 {
                notes.push(format!(
                    "{skipped} file(s) already at the destination were left as they are (skip-existing)"
                ));
            }
            let note = (!notes.is_empty()).then(|| notes.join("; "));
            (
                Outcome::succeeded(files, bytes, duration_ms, note),
                delivered,
            )
        }
        Copy::Interrupted => {
            METRICS.job(metrics::Outcome::interrupted, 0, 0, started.elapsed());
            warn!("interrupted by shutdown; releasing the job to another executor");
            let requeued =
                Outcome::requeued(None, "interrupted by executor shutdown".into(), duration_ms);
            let _ = ctx.ledger.finish(&job.job_id, attempt, &requeued, None);
            return Decided::Again(Disposition::Release(Duration::ZERO));
        }
        Copy::Failed { class, error, .. }
            if class.is_retryable() && job.retry.may_retry_after(attempt) =>
        {
            METRICS.job(metrics::Outcome::retried, 0, 0, started.elapsed());
            let delay = job.retry.delay_after(attempt, jitter());
            warn!(error = %error, ?class, attempt, retry_in_s = delay.as_secs(), "attempt failed; will retry");
            let _ = ctx.ledger.finish(
                &job.job_id,
                attempt,
                &Outcome::requeued(Some(class), error, duration_ms),
                None,
            );
            return Decided::Again(Disposition::Release(delay));
        }
        Copy::Failed {
            class,
            error,
            delivered,
        } => (Outcome::failed(class, error, duration_ms), delivered),
        Copy::Cancelled { by } => (Outcome::cancelled(&by, duration_ms), Vec::new()),
    };
    Decided::Final { outcome, delivered }
}

/// Where an attempt's log and delivery report were uploaded.
#[derive(Debug, Clone, Default)]
struct Artifacts {
    log_key: Option<String>,
    report_key: Option<String>,
}

/// Records and reports a final outcome.
fn record(
    ctx: &JobContext,
    job: &JobMessage,
    attempt: u32,
    started: Instant,
    (outcome, delivered): (Outcome, Vec<DeliveredFile>),
    artifacts: Artifacts,
) -> (Disposition, Option<JobState>) {
    let duration_ms = outcome.duration_ms;
    let result = JobResult {
        files: outcome.files,
        bytes: outcome.bytes,
        duration_ms,
        error_class: outcome.error_class,
        error: outcome.error.clone(),
        note: outcome.note.clone(),
        delivered,
        log_key: artifacts.log_key,
        report_key: artifacts.report_key,
    };
    let report = ctx
        .status
        .for_job(job, attempt, outcome.state, Some(result.clone()));
    // Outcome and report are committed together; the message may then go, whatever the cloud's
    // state: the outbox delivers the report when it can.
    let body = ctx.status.enabled().then(|| StatusOutbox::body(&report));
    if let Err(e) = ctx
        .ledger
        .finish(&job.job_id, attempt, &outcome, body.as_deref())
    {
        error!(error = %e, "outcome could not be recorded; job left for redelivery");
        return (Disposition::Keep, None);
    }
    ctx.status.wake();
    METRICS.job(
        metrics::Outcome::of(outcome.state),
        outcome.files,
        outcome.bytes,
        started.elapsed(),
    );
    match outcome.state {
        JobState::Succeeded => info!(
            files = outcome.files,
            bytes = outcome.bytes,
            duration_ms,
            "job succeeded"
        ),
        JobState::Cancelled => info!(
            reason = outcome.error.as_deref().unwrap_or(""),
            duration_ms, "job cancelled"
        ),
        _ => error!(error = outcome.error.as_deref().unwrap_or(""), "job failed"),
    }
    (Disposition::Delete, Some(outcome.state))
}

/// A number in [0, 1] that differs between executors and moments, to spread retries.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1001) / 1000.0
}

#[derive(Clone)]
enum Copy {
    Done {
        files: u64,
        bytes: u64,
        /// Keys not copied because a newer write of them was already delivered.
        superseded: Vec<String>,
        delivered: Vec<DeliveredFile>,
    },
    Failed {
        class: ErrorClass,
        error: String,
        /// The files that did land (a job of several files fails for those that did not).
        delivered: Vec<DeliveredFile>,
    },
    /// Stopped by the executor's shutdown: the job runs again.
    Interrupted,
    /// Stopped at an operator's request: the job ends `cancelled`.
    Cancelled { by: String },
}

impl From<transfer::Fail> for Copy {
    fn from(f: transfer::Fail) -> Self {
        match f {
            transfer::Fail::Failed { class, error } => Copy::Failed {
                class,
                error,
                delivered: Vec::new(),
            },
            transfer::Fail::Interrupted => Copy::Interrupted,
        }
    }
}

fn failed(class: ErrorClass, error: impl Into<String>) -> Copy {
    Copy::Failed {
        class,
        error: error.into(),
        delivered: Vec::new(),
    }
}

/// Resolves the job's source and destination into rclone remotes.
async fn sides(ctx: &JobContext, job: &JobMessage) -> Result<(Side, Side), Copy> {
    let cloud = ctx.config.cloud.as_ref();
    let unknown = |e: endpoints::EndpointError| {
        failed(ErrorClass::BadRequest, format!("{e} (pool {})", job.pool))
    };
    // `staging` is the stack's relay staging area, not an endpoint of the configuration.
    let staging = |e: &pbs_shared::EndpointName| e.as_str() == STAGING_ENDPOINT;
    let dest = match &job.destination {
        d if staging(d) => None,
        d => Some(ctx.endpoints.get(d).map_err(unknown)?),
    };
    let source = match &job.source {
        JobSource::S3 { .. } => None,
        JobSource::Endpoint { endpoint } if staging(endpoint) => None,
        JobSource::Endpoint { endpoint } => Some(ctx.endpoints.get(endpoint).map_err(unknown)?),
    };
    let needs_aws = source.is_none_or(|s| matches!(s.config, EndpointConfig::S3(_)))
        || dest.is_none_or(|d| matches!(d.config, EndpointConfig::S3(_)));
    let creds = if needs_aws {
        match ctx.credentials.provide_credentials().await {
            Ok(c) => Some(c),
            Err(e) => {
                return Err(failed(
                    ErrorClass::Auth,
                    format!("AWS credentials for {}: {e}", job.source.describe()),
                ));
            }
        }
    } else {
        None
    };
    let bad = |e: endpoints::EndpointError| failed(ErrorClass::BadRequest, e.to_string());
    let src = match (&job.source, source) {
        (JobSource::S3 { bucket }, _) => {
            endpoints::s3_source(cloud, bucket, creds.as_ref().expect("fetched above"))
                .map_err(bad)?
        }
        (_, Some(ep)) => ep.side("SRC", cloud, creds.as_ref()).map_err(bad)?,
        (JobSource::Endpoint { .. }, None) => {
            endpoints::staging_side("SRC", cloud, "", creds.as_ref().expect("fetched above"))
                .map_err(bad)?
        }
    };
    let dst = match dest {
        Some(d) => d.side("DST", cloud, creds.as_ref()).map_err(bad)?,
        None => endpoints::staging_side(
            "DST",
            cloud,
            &format!("{}/{}", job.pool, job.job_id),
            creds.as_ref().expect("fetched above"),
        )
        .map_err(bad)?,
    };
    Ok((src, dst))
}

/// The rclone runner of an attempt between `src` and `dst`, logging to `log`, at most at
/// `bandwidth` (see [`bandwidth_limit`]).
fn runner<'a>(
    ctx: &'a JobContext,
    (src, dst): (&Side, &Side),
    log: &'a std::path::Path,
    bandwidth: Option<&'a str>,
    abort: &'a CancellationToken,
) -> transfer::Runner<'a> {
    transfer::Runner {
        rclone: &ctx.config.rclone,
        home: &ctx.config.state_dir,
        log,
        secrets: src.secrets().into_iter().chain(dst.secrets()).collect(),
        bandwidth_limit: bandwidth,
        abort,
    }
}

/// A job's rclone `--bwlimit`: the executor's limit and the job's template's, the lower at every
/// minute of the week; `None` when neither limits anything.
pub fn bandwidth_limit(own: Option<&Bandwidth>, job: Option<&Bandwidth>) -> Option<String> {
    let limit = match (own, job) {
        (None, None) => return None,
        (Some(a), None) => a.clone(),
        (None, Some(b)) => b.clone(),
        (Some(a), Some(b)) => a.lowest(b),
    };
    (!limit.is_off()).then(|| limit.to_string())
}

async fn copy(ctx: &JobContext, job: &JobMessage, attempt: u32, abort: &CancellationToken) -> Copy {
    let (src, dst) = match sides(ctx, job).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    let log = rclone::log_path(&ctx.config.state_dir, job.job_id.as_str(), attempt);
    let bandwidth = bandwidth_limit(ctx.config.bandwidth_limit.as_ref(), job.bandwidth.as_ref());
    let runner = runner(ctx, (&src, &dst), &log, bandwidth.as_deref(), abort);
    // Paths read from an endpoint obey the same rules as paths written: no escaping its root.
    if matches!(job.source, JobSource::Endpoint { .. }) {
        for file in &job.files {
            if let Err(e) = DestPath::parse(&file.key) {
                return failed(
                    ErrorClass::BadRequest,
                    format!("source path {:?} is not allowed: {e}", file.key),
                );
            }
        }
    }
    let items: Vec<transfer::Item> = job
        .files
        .iter()
        .map(|f| transfer::Item {
            source: &f.key,
            dest: f.dest_path.as_str(),
            size: f.size,
            etag: f.etag.as_deref(),
        })
        .collect();
    // Several files keeping their relative paths (a schedule's folder, say) go in one rclone run.
    if items.len() > 1
        && job.delivery.overwrite == Overwrite::Overwrite
        && job.files.iter().all(|f| f.sequencer.is_none())
        && let Some((src_dir, dst_dir, rels)) = transfer::common_folders(&items)
    {
        let mut paths: Vec<&str> = job.files.iter().map(|f| f.dest_path.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        let mut _locks = Vec::with_capacity(paths.len());
        for p in paths {
            _locks.push(ctx.dest_locks.lock(job.destination.as_str(), p).await);
        }
        let sizes: Vec<u64> = job.files.iter().map(|f| f.size).collect();
        let done = match runner
            .deliver_batch(
                &src,
                &dst,
                (&src_dir, &dst_dir, &rels),
                &sizes,
                job.delivery,
            )
            .await
        {
            Ok(d) => d,
            Err(f) => return f.into(),
        };
        let delivered: Vec<DeliveredFile> = job
            .files
            .iter()
            .zip(done)
            .map(|(file, d)| DeliveredFile {
                key: file.key.clone(),
                dest_path: file.dest_path.to_string(),
                size: d.size,
                md5: d.md5,
                outcome: d.outcome,
            })
            .collect();
        return Copy::Done {
            files: delivered.len() as u64,
            bytes: delivered.iter().map(|d| d.size).sum(),
            superseded: Vec::new(),
            delivered,
        };
    }
    let mut files = 0;
    let mut bytes = 0;
    let mut superseded = Vec::new();
    let mut delivered = Vec::with_capacity(job.files.len());
    for (file, item) in job.files.iter().zip(&items) {
        // Writes of one path run one at a time, and an older write never replaces a newer one.
        let _path_lock = ctx
            .dest_locks
            .lock(job.destination.as_str(), file.dest_path.as_str())
            .await;
        if let Some(seq) = &file.sequencer {
            match ctx
                .ledger
                .delivered_sequencer(job.destination.as_str(), file.dest_path.as_str())
            {
                Ok(Some(known)) if sequencer_cmp(&known, seq).is_gt() => {
                    info!(key = %file.key, "a newer write of this key was already delivered; skipped");
                    superseded.push(file.key.clone());
                    delivered.push(DeliveredFile {
                        key: file.key.clone(),
                        dest_path: file.dest_path.to_string(),
                        size: file.size,
                        md5: None,
                        outcome: FileOutcome::Superseded,
                    });
                    continue;
                }
                Ok(_) => {}
                Err(e) => return failed(ErrorClass::Internal, e.to_string()),
            }
        }
        let done = match runner.deliver(&src, &dst, *item, job.delivery).await {
            Ok(d) => d,
            Err(f) => return f.into(),
        };
        if let Some(seq) = &file.sequencer
            && let Err(e) = ctx.ledger.record_delivered(
                job.destination.as_str(),
                file.dest_path.as_str(),
                seq,
                &job.job_id,
            )
        {
            return failed(ErrorClass::Internal, e.to_string());
        }
        if done.outcome == FileOutcome::Copied {
            files += 1;
            bytes += done.size;
        }
        delivered.push(DeliveredFile {
            key: file.key.clone(),
            dest_path: file.dest_path.to_string(),
            size: done.size,
            md5: done.md5,
            outcome: done.outcome,
        });
    }
    Copy::Done {
        files,
        bytes,
        superseded,
        delivered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_of_the_executor_and_template_limits_applies() {
        let bw = |s: &str| Bandwidth::parse(s).unwrap();
        assert_eq!(bandwidth_limit(None, None), None);
        assert_eq!(bandwidth_limit(Some(&bw("off")), None), None);
        assert_eq!(
            bandwidth_limit(Some(&bw("8M")), None).as_deref(),
            Some("8M")
        );
        assert_eq!(
            bandwidth_limit(None, Some(&bw("2M"))).as_deref(),
            Some("2M")
        );
        assert_eq!(
            bandwidth_limit(Some(&bw("8M")), Some(&bw("2M"))).as_deref(),
            Some("2M")
        );
        assert_eq!(
            bandwidth_limit(Some(&bw("off")), Some(&bw("Mon-08:00,1M Mon-18:00,off"))).as_deref(),
            Some("Mon-08:00,1M Mon-18:00,off")
        );
        assert_eq!(
            bandwidth_limit(Some(&bw("4M")), Some(&bw("Mon-08:00,1M Mon-18:00,off"))).as_deref(),
            Some("Mon-08:00,1M Mon-18:00,4M")
        );
    }
}
