//! The status outbox: reports are committed to the ledger first and sent to the StatusQueue by
//! one background sender, oldest first, retrying with backoff while the cloud is unreachable.
//! Nothing is dropped across outages or restarts, and no job waits for the cloud to finish.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chrono::Utc;
use pbs_shared::message::{Heartbeat, JobStatus, V1};
use pbs_shared::{ExecutorId, JobId, JobMessage, JobResult, JobState, PoolName, StatusMessage};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ledger::{Ledger, LedgerError};

/// Reports sent per SQS request (the SendMessageBatch maximum).
const BATCH: u32 = 10;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Even without a wake-up, the outbox is looked at this often.
const IDLE_CHECK: Duration = Duration::from_secs(5);

pub struct StatusOutbox {
    /// The StatusQueue; `None` when the executor runs standalone (nothing is reported).
    sink: Option<(aws_sdk_sqs::Client, String)>,
    executor_id: ExecutorId,
    pool: PoolName,
    ledger: Arc<Ledger>,
    wake: Notify,
}

impl StatusOutbox {
    pub fn new(
        sink: Option<(aws_sdk_sqs::Client, String)>,
        executor_id: ExecutorId,
        pool: PoolName,
        ledger: Arc<Ledger>,
    ) -> Self {
        Self {
            sink,
            executor_id,
            pool,
            ledger,
            wake: Notify::new(),
        }
    }

    /// A job status report from this executor.
    pub fn message(
        &self,
        job_id: &JobId,
        attempt: u32,
        state: JobState,
        result: Option<JobResult>,
    ) -> JobStatus {
        JobStatus {
            v: V1,
            job_id: job_id.clone(),
            executor_id: self.executor_id.clone(),
            pool: self.pool.clone(),
            executor_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            attempt,
            state,
            at: Utc::now(),
            result,
            job: None,
        }
    }

    /// A report on `job`; jobs made on this executor carry their summary, so that the cloud can
    /// list a job it never planned.
    pub fn for_job(
        &self,
        job: &JobMessage,
        attempt: u32,
        state: JobState,
        result: Option<JobResult>,
    ) -> JobStatus {
        let mut status = self.message(&job.job_id, attempt, state, result);
        status.job = job.summary();
        status
    }

    /// Whether reports go anywhere (false when standalone).
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// The StatusQueue body of a job report.
    pub fn body(status: &JobStatus) -> String {
        serde_json::to_string(&StatusMessage::Job(status.clone()))
            .expect("status messages serialise")
    }

    /// Commits a report to the outbox and wakes the sender.
    pub fn report(&self, status: &JobStatus) -> Result<(), LedgerError> {
        if !self.enabled() {
            return Ok(());
        }
        self.ledger
            .enqueue_report(&status.job_id, &Self::body(status))?;
        self.wake();
        Ok(())
    }

    /// Tells the sender there is something new (after a report committed elsewhere).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends reports until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        if !self.enabled() {
            return;
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.send_batch().await {
                Ok(0) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_CHECK) => {}
                    }
                }
                Ok(_) => backoff = Duration::from_secs(1),
                Err(e) => {
                    let depth = self.ledger.outbox_depth().unwrap_or(0);
                    warn!(error = %e, outbox_depth = depth, retry_in_s = backoff.as_secs(), "status reports not sent; will retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends a heartbeat every `interval` until `shutdown`. Heartbeats skip the outbox: one that
    /// cannot be sent is replaced by the next, and a backlog of them would say nothing.
    pub async fn heartbeats(&self, interval: Duration, shutdown: CancellationToken) {
        let Some((sqs, queue_url)) = &self.sink else {
            return;
        };
        loop {
            let running_jobs = self
                .ledger
                .unfinished()
                .map(|j| j.len() as u32)
                .unwrap_or(0);
            let beat = StatusMessage::Heartbeat(Heartbeat {
                v: V1,
                executor_id: self.executor_id.clone(),
                pool: self.pool.clone(),
                executor_version: env!("CARGO_PKG_VERSION").to_owned(),
                at: Utc::now(),
                interval_seconds: interval.as_secs() as u32,
                running_jobs,
            });
            let body = serde_json::to_string(&beat).expect("status messages serialise");
            match sqs
                .send_message()
                .queue_url(queue_url)
                .message_body(body)
                .send()
                .await
            {
                Ok(_) => debug!(running_jobs, "heartbeat sent"),
                Err(e) => {
                    warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "heartbeat not sent")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Sends what is left, for up to `limit` (at shutdown).
    pub async fn flush(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            while let Ok(n) = self.send_batch().await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Sends the oldest reports; returns how many were delivered.
    async fn send_batch(&self) -> Result<usize, String> {
        let Some((sqs, queue_url)) = &self.sink else {
            return Ok(0);
        };
        let head = self.ledger.outbox_head(BATCH).map_err(|e| e.to_string())?;
        if head.is_empty() {
            return Ok(0);
        }
        let entries = head
            .iter()
            .map(|(seq, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("s{seq}"))
                    .message_body(body)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) => format!("{se}"),
                None => aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            })?;
        let sent: Vec<i64> = out
            .successful()
            .iter()
            .filter_map(|ok| ok.id().strip_prefix('s').and_then(|n| n.parse().ok()))
            .collect();
        self.ledger
            .outbox_remove(&sent)
            .map_err(|e| e.to_string())?;
        debug!(sent = sent.len(), "status reports sent");
        if let Some(failed) = out.failed().first() {
            return Err(format!(
                "{} report(s) refused: {} {}",
                out.failed().len(),
                failed.code(),
                failed.message().unwrap_or_default()
            ));
        }
        Ok(sent.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbs_shared::message::field_paths;

    fn outbox(dir: &std::path::Path) -> StatusOutbox {
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .build();
        StatusOutbox::new(
            Some((aws_sdk_sqs::Client::from_conf(conf), "unused".into())),
            ExecutorId::parse("edit-bay-1").unwrap(),
            PoolName::parse("default").unwrap(),
            Arc::new(Ledger::open(&dir.join("ledger.sqlite")).unwrap()),
        )
    }

    fn shape(status: &JobStatus) -> serde_json::Value {
        serde_json::from_str(&StatusOutbox::body(status)).unwrap()
    }

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn reports_have_the_documented_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let s = outbox(dir.path());
        let id = JobId::parse("ev-1").unwrap();
        let running = shape(&s.message(&id, 1, JobState::Running, None));
        assert_eq!(
            field_paths(&running),
            field_paths(&fixture("status-running.v1.json"))
        );
        let ok = JobResult {
            files: 1,
            bytes: 5,
            duration_ms: 3,
            error_class: None,
            error: None,
            note: None,
            delivered: vec![pbs_shared::DeliveredFile {
                key: "k".into(),
                dest_path: "k".into(),
                size: 5,
                md5: Some("0".repeat(32)),
                outcome: pbs_shared::FileOutcome::Copied,
            }],
            log_key: Some("logs/default/ev-1/attempt-1.log".into()),
            report_key: Some("reports/default/ev-1/attempt-1.json".into()),
        };
        let done = shape(&s.message(&id, 1, JobState::Succeeded, Some(ok)));
        assert_eq!(
            field_paths(&done),
            field_paths(&fixture("status-succeeded.v1.json"))
        );
        let failed = JobResult {
            files: 0,
            bytes: 0,
            duration_ms: 3,
            error_class: Some(pbs_shared::ErrorClass::NotFound),
            error: Some("gone".into()),
            note: None,
            delivered: Vec::new(),
            log_key: Some("logs/default/ev-1/attempt-1.log".into()),
            report_key: Some("reports/default/ev-1/attempt-1.json".into()),
        };
        let failed = shape(&s.message(&id, 1, JobState::Failed, Some(failed)));
        assert_eq!(
            field_paths(&failed),
            field_paths(&fixture("status-failed.v1.json"))
        );
    }
}
