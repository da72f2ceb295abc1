//! Runs one job message to its outcome: dedup against the ledger, status reports, the copy itself
//! and its verification. Returns what should happen to the SQS message.

use std::time::{Duration, Instant};

use aws_credential_types::provider::ProvideCredentials;
use pbs_shared::report::{self, ReportRow};
use pbs_shared::{DeliveredFile, ErrorClass, FileOutcome, JobId, JobMessage, JobResult, JobState};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::jobs::admit::admit;
use crate::jobs::context::JobContext;
use crate::jobs::copy::{Copied, copy_jobs, watched};
use crate::jobs::folder;
use crate::ledger::{Claim, Outcome};
use crate::metrics::{self, METRICS};
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
    if let Err(reason) = admit(&ctx.config, &job) {
        return refuse(ctx, msg, &job, &reason).instrument(span).await;
    }
    run(ctx, job, (&msg.body, msg.receive_count), abort)
        .instrument(span)
        .await
        .0
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
        if let Err(reason) = admit(&ctx.config, job) {
            settled[i] = Some(
                refuse(ctx, msg, job, &reason)
                    .instrument(job_span(job))
                    .await,
            );
            continue;
        }
        let begun = begin(ctx, job, (&msg.body, msg.receive_count))
            .instrument(job_span(job))
            .await;
        match begun {
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
            let jobs: Vec<(&JobMessage, u32)> =
                running.iter().map(|&(i, a)| (&batch[i].1, a)).collect();
            copy_jobs(ctx, &jobs, &stop)
                .instrument(info_span!("batch", jobs = running.len()))
                .await
        };
        let mut finals = Vec::new();
        for (&(i, attempt), copied) in running.iter().zip(copies) {
            let job = &batch[i].1;
            let copied = cancelled_or(ctx, job, abort, copied);
            let decided = decide(ctx, job, attempt, started, copied)
                .instrument(job_span(job))
                .await;
            match decided {
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
                let ended = (outcome, delivered);
                let (disposition, _) = record(ctx, job, attempt, started, ended, artifacts.clone())
                    .instrument(job_span(job))
                    .await;
                settled[i] = Some(disposition);
            }
        }
    }
    settled
        .into_iter()
        .map(|d| d.expect("every job of a batch is settled"))
        .collect()
}

/// Runs a job made on this executor (watch, schedule) as attempt `attempt`; also returns the
/// state it ended in, when it ended.
pub async fn handle_local(
    ctx: &JobContext,
    job: JobMessage,
    attempt: u32,
    abort: &CancellationToken,
) -> (Disposition, Option<JobState>) {
    // The ledger keeps the job as it keeps a received message, so recovery can read it back.
    let body = serde_json::to_string(&job).expect("jobs serialise");
    let span =
        info_span!("job", job_id = %job.job_id, template = %job.template_id, pool = %job.pool);
    run(ctx, job, (&body, attempt), abort)
        .instrument(span)
        .await
}

/// A job this site does not allow (see [`admit`]): recorded and reported failed `forbidden` with
/// the reason, nothing copied; the message goes once that is recorded (it can never run here).
async fn refuse(ctx: &JobContext, msg: &Received, job: &JobMessage, reason: &str) -> Disposition {
    warn!(reason = %reason, "job refused");
    METRICS.refused();
    let attempt = match begin(ctx, job, (&msg.body, msg.receive_count)).await {
        Ok(attempt) => attempt,
        Err((disposition, _)) => return disposition,
    };
    let outcome = Outcome::failed(ErrorClass::Forbidden, reason.to_owned(), 0);
    let ended = (outcome, Vec::new());
    record(
        ctx,
        job,
        attempt,
        Instant::now(),
        ended,
        Artifacts::default(),
    )
    .await
    .0
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
        if let Err(e) = ctx.journal.reject(&job_id, msg.receive_count, result).await {
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

/// Runs `job`, received as `body` for the `receive_count`th time, to its outcome.
async fn run(
    ctx: &JobContext,
    job: JobMessage,
    (body, receive_count): (&str, u32),
    abort: &CancellationToken,
) -> (Disposition, Option<JobState>) {
    let attempt = match begin(ctx, &job, (body, receive_count)).await {
        Ok(attempt) => attempt,
        Err(settled) => return settled,
    };
    let started = Instant::now();
    let log = rclone::log_path(&ctx.config.state_dir, job.job_id.as_str(), attempt);
    // What the delivery report lists: the job's files, or what a folder transfer found.
    let mut report = job.clone();
    let copied = match ctx.cancels.requested(&job.job_id) {
        // Cancelled while it waited in the queue.
        Some(by) => Copied::Cancelled { by },
        None => {
            let stop = abort.child_token();
            let _running = ctx.cancels.register([&job.job_id], &stop);
            let copied = match &job.folder {
                // A folder transfer reports progress once it knows its files.
                Some(spec) => {
                    let done = folder::run(ctx, &job, spec, attempt, &stop).await;
                    report = done.report;
                    done.copied
                }
                None => {
                    let one = [(&job, attempt)];
                    let copy = copy_jobs(ctx, &one, &stop);
                    watched(ctx, &job, attempt, copy)
                        .await
                        .pop()
                        .expect("one result per job")
                }
            };
            cancelled_or(ctx, &job, abort, copied)
        }
    };
    match decide(ctx, &job, attempt, started, copied).await {
        Decided::Again(disposition) => (disposition, None),
        Decided::Final { outcome, delivered } => {
            let artifacts =
                upload_artifacts(ctx, &[(&report, &outcome, &delivered)], attempt, &log).await;
            record(ctx, &job, attempt, started, (outcome, delivered), artifacts).await
        }
    }
}

/// An interrupted copy whose job an operator cancelled (and not the executor's shutdown) is
/// cancelled; anything else stays as it is.
fn cancelled_or(
    ctx: &JobContext,
    job: &JobMessage,
    abort: &CancellationToken,
    copied: Copied,
) -> Copied {
    match (copied, ctx.cancels.requested(&job.job_id)) {
        (Copied::Interrupted, Some(by)) if !abort.is_cancelled() => Copied::Cancelled { by },
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
    let Some(uploader) = ctx.artifacts.as_ref() else {
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
            true => uploader.upload_log(first, attempt, log, &secrets).await,
            false => None,
        },
        report_key: uploader.upload_report(first, attempt, &rows).await,
    }
}

/// Claims a delivery in the ledger and starts its attempt: `Ok(attempt)` when the job is to run
/// now, or how the message is settled when it is not (a duplicate, an already finished job, an
/// unusable ledger).
async fn begin(
    ctx: &JobContext,
    job: &JobMessage,
    (body, receive_count): (&str, u32),
) -> Result<u32, (Disposition, Option<JobState>)> {
    let attempt = receive_count.max(1);
    let claim = match ctx.journal.claim(job, body).await {
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
            return Err(match ctx.journal.acknowledge(job, &prev).await {
                Ok(()) => (Disposition::Delete, Some(prev.state)),
                Err(e) => {
                    error!(error = %e, "report not recorded; job left for redelivery");
                    (Disposition::Keep, None)
                }
            });
        }
    };
    tracing::debug!(deliveries, attempt, "running");
    if let Err(e) = ctx.journal.start(job, attempt).await {
        error!(error = %e, "ledger unavailable; job left for redelivery");
        return Err((Disposition::Keep, None));
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
async fn decide(
    ctx: &JobContext,
    job: &JobMessage,
    attempt: u32,
    started: Instant,
    copied: Copied,
) -> Decided {
    let duration_ms = started.elapsed().as_millis() as u64;
    let (outcome, delivered) = match copied {
        Copied::Done {
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
        Copied::Interrupted => {
            METRICS.job(metrics::Outcome::interrupted, 0, 0, started.elapsed());
            warn!("interrupted by shutdown; releasing the job to another executor");
            let requeued =
                Outcome::requeued(None, "interrupted by executor shutdown".into(), duration_ms);
            let _ = ctx.journal.requeue(&job.job_id, attempt, &requeued).await;
            return Decided::Again(Disposition::Release(Duration::ZERO));
        }
        Copied::Failed { class, error, .. }
            if class.is_retryable() && job.retry.may_retry_after(attempt) =>
        {
            METRICS.job(metrics::Outcome::retried, 0, 0, started.elapsed());
            let delay = job.retry.delay_after(attempt, jitter());
            warn!(error = %error, ?class, attempt, retry_in_s = delay.as_secs(), "attempt failed; will retry");
            let requeued = Outcome::requeued(Some(class), error, duration_ms);
            let _ = ctx.journal.requeue(&job.job_id, attempt, &requeued).await;
            return Decided::Again(Disposition::Release(delay));
        }
        Copied::Failed {
            class,
            error,
            delivered,
        } => (Outcome::failed(class, error, duration_ms), delivered),
        Copied::Cancelled { by } => (Outcome::cancelled(&by, duration_ms), Vec::new()),
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
async fn record(
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
    // Outcome and report are committed together; the message may then go, whatever the cloud's
    // state: the outbox delivers the report when it can.
    if let Err(e) = ctx.journal.finish(job, attempt, &outcome, result).await {
        error!(error = %e, "outcome could not be recorded; job left for redelivery");
        return (Disposition::Keep, None);
    }
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
