//! A job's transitions, one call each: claim, start, requeue, finish (and the acknowledgement of
//! a job that already ended, and the rejection of a message that is no job). Each call writes
//! the job's ledger row and, when the executor reports to a cloud, its status report into the
//! outbox in the same SQLite transaction: an outcome is never recorded without its report, nor
//! reported without being recorded. The status sender (`cloud::status_sender`) only sends what
//! the outbox holds; a call here wakes it.
//!
//! Each write runs on the runtime's blocking pool (`spawn_blocking`): a commit waits for the disk
//! (`synchronous = FULL`), and a slow disk must not stall the tasks that poll, beat and report.
//! (Not `block_in_place`: it may retire the worker thread that spawned an rclone, whose
//! parent-death signal then kills the copy.)

use std::sync::Arc;

use chrono::Utc;
use pbs_shared::message::{JobStatus, V1};
use pbs_shared::{ExecutorId, JobId, JobMessage, JobResult, JobState, PoolName, StatusMessage};
use tokio::sync::Notify;

use super::{Claim, Ledger, LedgerError, Outcome, PreviousRun};

/// Who the reports are from.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub executor_id: ExecutorId,
    pub pool: PoolName,
}

pub struct Journal {
    ledger: Arc<Ledger>,
    /// `None` when the executor runs standalone: transitions are recorded, nothing is reported.
    reporter: Option<Reporter>,
    /// Wakes the status sender after a report joined the outbox.
    wake: Arc<Notify>,
}

impl Journal {
    pub fn new(ledger: Arc<Ledger>, reporter: Option<Reporter>) -> Self {
        Self {
            ledger,
            reporter,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// What the status sender waits on.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Records that `job` was delivered and decides whether this delivery runs it (see
    /// [`Ledger::claim`]); `body` is the message as received.
    pub async fn claim(&self, job: &JobMessage, body: &str) -> Result<Claim, LedgerError> {
        let (job, body) = (job.clone(), body.to_owned());
        self.write(move |l| l.claim(&job, &body)).await
    }

    /// A delivery of a job that already ended here: its end is reported again, as the attempt
    /// that ended it, so the job's history stays true.
    pub async fn acknowledge(
        &self,
        job: &JobMessage,
        prev: &PreviousRun,
    ) -> Result<(), LedgerError> {
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
        let attempt = prev.attempt.max(1);
        match self.body(&job.job_id, Some(job), attempt, prev.state, Some(result)) {
            Some(body) => self.enqueue(&job.job_id, body).await,
            None => Ok(()),
        }
    }

    /// Starts `attempt`: the ledger's attempt row and the `running` report, together.
    pub async fn start(&self, job: &JobMessage, attempt: u32) -> Result<(), LedgerError> {
        let body = self.body(&job.job_id, Some(job), attempt, JobState::Running, None);
        let id = job.job_id.clone();
        self.write(move |l| l.start_attempt(&id, attempt, body.as_deref()))
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// An attempt that runs again (interrupted, or a retryable failure): recorded, not reported
    /// (the job is still running as far as the cloud knows).
    pub async fn requeue(
        &self,
        job_id: &JobId,
        attempt: u32,
        outcome: &Outcome,
    ) -> Result<(), LedgerError> {
        let (id, outcome) = (job_id.clone(), outcome.clone());
        self.write(move |l| l.finish(&id, attempt, &outcome, None))
            .await
    }

    /// The final outcome of `attempt` and its report, with `result`.
    pub async fn finish(
        &self,
        job: &JobMessage,
        attempt: u32,
        outcome: &Outcome,
        result: JobResult,
    ) -> Result<(), LedgerError> {
        let body = self.body(&job.job_id, Some(job), attempt, outcome.state, Some(result));
        let (id, outcome) = (job.job_id.clone(), outcome.clone());
        self.write(move |l| l.finish(&id, attempt, &outcome, body.as_deref()))
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// A message that is not a valid job but names `job_id`: reported failed with `result`.
    pub async fn reject(
        &self,
        job_id: &JobId,
        attempt: u32,
        result: JobResult,
    ) -> Result<(), LedgerError> {
        match self.body(job_id, None, attempt, JobState::Failed, Some(result)) {
            Some(body) => self.enqueue(job_id, body).await,
            None => Ok(()),
        }
    }

    async fn enqueue(&self, job_id: &JobId, body: String) -> Result<(), LedgerError> {
        let id = job_id.clone();
        self.write(move |l| l.enqueue_report(&id, &body)).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Runs a ledger write on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        F: FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
        T: Send + 'static,
    {
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || f(&ledger))
            .await
            .map_err(|e| LedgerError::Unfinished(e.to_string()))?
    }

    /// The StatusQueue body of a report on `job_id` (`None` when standalone). Jobs made on this
    /// executor carry their summary, so that the cloud can list a job it never planned.
    fn body(
        &self,
        job_id: &JobId,
        job: Option<&JobMessage>,
        attempt: u32,
        state: JobState,
        result: Option<JobResult>,
    ) -> Option<String> {
        let reporter = self.reporter.as_ref()?;
        let status = JobStatus {
            v: V1,
            job_id: job_id.clone(),
            executor_id: reporter.executor_id.clone(),
            pool: reporter.pool.clone(),
            executor_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            attempt,
            state,
            at: Utc::now(),
            result,
            job: job.and_then(JobMessage::summary),
        };
        Some(serde_json::to_string(&StatusMessage::Job(status)).expect("status messages serialise"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbs_shared::message::field_paths;

    fn journal(dir: &std::path::Path) -> Journal {
        Journal::new(
            Arc::new(Ledger::open(&dir.join("ledger.sqlite")).unwrap()),
            Some(Reporter {
                executor_id: ExecutorId::parse("edit-bay-1").unwrap(),
                pool: PoolName::parse("default").unwrap(),
            }),
        )
    }

    fn shape(body: Option<String>) -> serde_json::Value {
        serde_json::from_str(&body.unwrap()).unwrap()
    }

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn result(error: Option<&str>) -> JobResult {
        JobResult {
            files: u64::from(error.is_none()),
            bytes: 5,
            duration_ms: 3,
            error_class: error.map(|_| pbs_shared::ErrorClass::NotFound),
            error: error.map(str::to_owned),
            note: None,
            delivered: match error {
                Some(_) => Vec::new(),
                None => vec![pbs_shared::DeliveredFile {
                    key: "k".into(),
                    dest_path: "k".into(),
                    size: 5,
                    md5: Some("0".repeat(32)),
                    outcome: pbs_shared::FileOutcome::Copied,
                }],
            },
            log_key: Some("logs/default/ev-1/attempt-1.log".into()),
            report_key: Some("reports/default/ev-1/attempt-1.json".into()),
        }
    }

    #[test]
    fn reports_have_the_documented_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let id = JobId::parse("ev-1").unwrap();
        let running = shape(j.body(&id, None, 1, JobState::Running, None));
        assert_eq!(
            field_paths(&running),
            field_paths(&fixture("status-running.v1.json"))
        );
        let done = shape(j.body(&id, None, 1, JobState::Succeeded, Some(result(None))));
        assert_eq!(
            field_paths(&done),
            field_paths(&fixture("status-succeeded.v1.json"))
        );
        let failed = shape(j.body(&id, None, 1, JobState::Failed, Some(result(Some("gone")))));
        assert_eq!(
            field_paths(&failed),
            field_paths(&fixture("status-failed.v1.json"))
        );
    }

    #[tokio::test]
    async fn each_transition_leaves_its_report_in_the_outbox_and_a_standalone_one_none() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let job =
            JobMessage::parse(include_str!("../../../tests/fixtures/job-message.v1.json")).unwrap();
        assert!(matches!(
            j.claim(&job, "{}").await.unwrap(),
            Claim::Run { .. }
        ));
        j.start(&job, 1).await.unwrap();
        assert_eq!(j.ledger().outbox_depth().unwrap(), 1);
        let outcome = Outcome::succeeded(1, 5, 3, None);
        j.finish(&job, 1, &outcome, result(None)).await.unwrap();
        // The final report replaces the `running` one still waiting.
        let head = j.ledger().outbox_head(10).unwrap();
        assert_eq!(head.len(), 1);
        assert!(head[0].1.contains("\"succeeded\""), "{}", head[0].1);

        let alone = tempfile::tempdir().unwrap();
        let standalone = Journal::new(
            Arc::new(Ledger::open(&alone.path().join("ledger.sqlite")).unwrap()),
            None,
        );
        standalone.claim(&job, "{}").await.unwrap();
        standalone.start(&job, 1).await.unwrap();
        standalone
            .finish(&job, 1, &outcome, result(None))
            .await
            .unwrap();
        assert_eq!(standalone.ledger().outbox_depth().unwrap(), 0);
        assert_eq!(
            standalone.ledger().job_state(&job.job_id).unwrap(),
            Some(JobState::Succeeded)
        );
    }
}
