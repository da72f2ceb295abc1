//! The status function: executors' reports (through the StatusQueue) move jobs forward.
//!
//! Each report is applied with a conditional update, so states only move forward whatever order
//! reports arrive in (a late `running` after `succeeded` changes nothing), and the reporting
//! executor's last-seen time is recorded. A body that can never be applied goes to the
//! dead-letter queue with its reason; a transient failure is retried alone.

mod stack;

use std::collections::{HashMap, HashSet};
use std::future::Future;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use pbs_shared::message::{CancelRequest, ControlMessage, Heartbeat, JobProgress, JobStatus, V1};
use pbs_shared::{ExecutorId, JobId, JobState, PoolName, StatusMessage};
use tokio::sync::Mutex;
use tracing::{Instrument, info, info_span, warn};

use crate::store::jobs::{Applied, JobView};
pub use stack::StackStore;

/// What an executor was seen doing, recorded on its item.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// It reported on `job_id`.
    Job {
        version: Option<&'a str>,
        job_id: &'a JobId,
    },
    /// Its heartbeat: version, interval (for the offline rule) and running jobs.
    Heartbeat(&'a Heartbeat),
}

/// What the status function needs from the stack, as small capabilities: [`StackStore`] serves
/// them from DynamoDB, SQS and S3; the unit tests below from memory. `Err` is always transient.
pub trait StatusStore: Send + Sync {
    /// Applies a job report forward-only; the job as recorded when it moved.
    fn apply_status(
        &self,
        st: &JobStatus,
    ) -> impl Future<Output = Result<(Applied, Option<JobView>), String>> + Send;
    /// Applies a running job's progress.
    fn apply_progress(
        &self,
        p: &JobProgress,
    ) -> impl Future<Output = Result<Applied, String>> + Send;
    /// Who asked to cancel `job_id`, when it is cancelled.
    fn cancelled_by(
        &self,
        job_id: &JobId,
    ) -> impl Future<Output = Result<Option<String>, String>> + Send;
    /// Posts `message` on the executor's control queue (made when missing).
    fn tell_executor(
        &self,
        pool: &PoolName,
        executor: &ExecutorId,
        message: &ControlMessage,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Makes sure the executor has a control queue, recorded on its item.
    fn ensure_control_queue(
        &self,
        executor: &ExecutorId,
        pool: &PoolName,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Records the executor as seen at `at` (a report older than the last recorded changes
    /// nothing).
    fn record_executor(
        &self,
        executor: &ExecutorId,
        pool: &PoolName,
        at: DateTime<Utc>,
        seen: Seen<'_>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Notifications, next step and staging clean-up of a job that ended (`job` as recorded,
    /// when at hand); done once however often it is asked.
    fn after_end(
        &self,
        st: &JobStatus,
        job: Option<JobView>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Puts a body that can never be applied on the dead-letter queue, with the reason.
    fn dead_letter(
        &self,
        body: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

pub struct Status<S> {
    store: S,
    /// Executors whose control queue this instance has made sure of.
    controlled: Mutex<HashSet<ExecutorId>>,
    /// When this instance last recorded each executor as seen from a job report.
    touched: Mutex<HashMap<ExecutorId, std::time::Instant>>,
}

/// How often a job report records its executor as seen (heartbeats do so every interval).
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Status<StackStore> {
    /// The status function of the deployed stack.
    pub fn new(
        env: crate::env::StatusEnv,
        dynamo: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        s3: aws_sdk_s3::Client,
    ) -> Self {
        Self::with_store(StackStore::new(env, dynamo, sqs, s3))
    }
}

impl<S: StatusStore> Status<S> {
    pub fn with_store(store: S) -> Self {
        Self {
            store,
            controlled: Mutex::new(HashSet::new()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Handles one batch; only records that failed transiently are returned for retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        crate::sqs_batch::for_each_body(event, |body| async move { self.handle_body(&body).await })
            .await
    }

    async fn handle_body(&self, body: &str) -> Result<(), String> {
        let status = match StatusMessage::parse(body) {
            Ok(StatusMessage::Heartbeat(beat)) => return self.heartbeat(&beat).await,
            Ok(StatusMessage::Progress(p)) => {
                return match self.store.apply_progress(&p).await? {
                    Applied::Moved => Ok(()),
                    Applied::Stale => {
                        info!(job_id = %p.job_id, attempt = p.attempt, "progress of a job no longer running ignored");
                        Ok(())
                    }
                };
            }
            Ok(StatusMessage::Probe(probe)) => {
                info!(executor = %probe.executor_id, pool = %probe.pool, "doctor probe received");
                return Ok(());
            }
            Ok(StatusMessage::Job(status)) if status.state == JobState::Queued => {
                Err("a job status report cannot set state \"queued\"".to_owned())
            }
            Ok(StatusMessage::Job(status)) => Ok(status),
            Err(e) => Err(e.to_string()),
        };
        let status = match status {
            Ok(s) => s,
            Err(reason) => {
                warn!(reason = %reason, "unprocessable status body sent to the dead-letter queue");
                return self.store.dead_letter(body, &reason).await;
            }
        };
        let span = info_span!("job", job_id = %status.job_id, pool = %status.pool, executor = %status.executor_id);
        self.apply(status).instrument(span).await
    }

    /// Applies a job report and what follows it.
    async fn apply(&self, status: JobStatus) -> Result<(), String> {
        let (applied, moved) = self.store.apply_status(&status).await?;
        match applied {
            Applied::Moved => {
                info!(job_id = %status.job_id, state = %status.state, attempt = status.attempt, executor = %status.executor_id, "job moved")
            }
            Applied::Stale => {
                info!(job_id = %status.job_id, state = %status.state, attempt = status.attempt, "stale report ignored");
                if status.state == JobState::Running {
                    self.cancel_if_cancelled(&status).await?;
                }
            }
        }
        // An end that was recorded (now, or by an earlier delivery of this report whose follow-up
        // did not finish) gets its notifications, next step and staging clean-up.
        if status.state.is_terminal() {
            self.store.after_end(&status, moved).await?;
        }
        // Heartbeats keep the executor's item; a job report touches it at most once a minute (per
        // function instance), so an event storm does not write the same item for every job.
        let due = {
            let mut touched = self.touched.lock().await;
            match touched.get(&status.executor_id) {
                Some(at) if at.elapsed() < TOUCH_EVERY => false,
                _ => {
                    touched.insert(status.executor_id.clone(), std::time::Instant::now());
                    true
                }
            }
        };
        if due && let Err(e) = self.touch_executor(&status).await {
            self.touched.lock().await.remove(&status.executor_id);
            return Err(e);
        }
        Ok(())
    }

    /// A job cancelled while it was queued may still reach an executor, which then reports it
    /// `running`: that executor is told to stop it.
    async fn cancel_if_cancelled(&self, st: &JobStatus) -> Result<(), String> {
        let Some(requested_by) = self.store.cancelled_by(&st.job_id).await? else {
            return Ok(());
        };
        let request = ControlMessage::Cancel(CancelRequest {
            v: V1,
            job_id: st.job_id.clone(),
            requested_by,
            at: Utc::now(),
        });
        self.store
            .tell_executor(&st.pool, &st.executor_id, &request)
            .await?;
        info!(job_id = %st.job_id, executor = %st.executor_id, "a cancelled job was started: its executor is told to stop it");
        Ok(())
    }

    /// Makes sure the executor has a control queue (once per executor per function instance;
    /// creating an existing queue with the same attributes changes nothing).
    async fn ensure_control_queue(
        &self,
        executor: &ExecutorId,
        pool: &PoolName,
    ) -> Result<(), String> {
        if self.controlled.lock().await.contains(executor) {
            return Ok(());
        }
        self.store.ensure_control_queue(executor, pool).await?;
        self.controlled.lock().await.insert(executor.clone());
        Ok(())
    }

    /// Records a job report's executor as seen.
    async fn touch_executor(&self, st: &JobStatus) -> Result<(), String> {
        let seen = Seen::Job {
            version: st.executor_version.as_deref(),
            job_id: &st.job_id,
        };
        self.store
            .record_executor(&st.executor_id, &st.pool, st.at, seen)
            .await
    }

    /// Records a heartbeat: version, interval (for the offline rule) and running jobs.
    async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), String> {
        info!(executor = %beat.executor_id, running_jobs = beat.running_jobs, "heartbeat");
        let seen = Seen::Heartbeat(beat);
        self.store
            .record_executor(&beat.executor_id, &beat.pool, beat.at, seen)
            .await?;
        self.ensure_control_queue(&beat.executor_id, &beat.pool)
            .await
    }
}

#[cfg(test)]
mod tests {
    //! The handler through [`StatusStore`], with the status message fixtures: what is applied,
    //! what follows a job's end, what an executor's item records, what goes to the dead-letter
    //! queue, what is retried.

    use std::sync::Mutex as StdMutex;

    use super::*;

    const RUNNING: &str = include_str!("../../../tests/fixtures/status-running.v1.json");
    const SUCCEEDED: &str = include_str!("../../../tests/fixtures/status-succeeded.v1.json");
    const FAILED: &str = include_str!("../../../tests/fixtures/status-failed.v1.json");
    const HEARTBEAT: &str = include_str!("../../../tests/fixtures/status-heartbeat.v1.json");
    const PROGRESS: &str = include_str!("../../../tests/fixtures/status-progress.v1.json");

    /// A jobs table that moves states forward only, and a log of every other call.
    #[derive(Default)]
    struct Memory {
        /// Job id → state recorded.
        states: StdMutex<HashMap<String, JobState>>,
        /// Jobs cancelled by an operator (by whom).
        cancelled: StdMutex<HashMap<String, String>>,
        calls: StdMutex<Vec<String>>,
        /// Applying a report fails (DynamoDB throttling) while set.
        unavailable: std::sync::atomic::AtomicBool,
    }

    impl Memory {
        fn log(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn rank(state: JobState) -> u8 {
        match state {
            JobState::Queued => 0,
            JobState::Running => 1,
            _ => 2,
        }
    }

    impl StatusStore for Memory {
        async fn apply_status(&self, st: &JobStatus) -> Result<(Applied, Option<JobView>), String> {
            if self.unavailable.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("DynamoDB is throttling".into());
            }
            let mut states = self.states.lock().unwrap();
            let now = states.get(st.job_id.as_str()).copied();
            if now.is_some_and(|s| rank(s) >= rank(st.state)) {
                return Ok((Applied::Stale, None));
            }
            states.insert(st.job_id.to_string(), st.state);
            Ok((Applied::Moved, None))
        }

        async fn apply_progress(&self, p: &JobProgress) -> Result<Applied, String> {
            self.log(format!(
                "progress {} {}/{}",
                p.job_id, p.bytes, p.total_bytes
            ));
            let running = self.states.lock().unwrap().get(p.job_id.as_str()).copied();
            Ok(match running {
                Some(JobState::Running) => Applied::Moved,
                _ => Applied::Stale,
            })
        }

        async fn cancelled_by(&self, job_id: &JobId) -> Result<Option<String>, String> {
            Ok(self.cancelled.lock().unwrap().get(job_id.as_str()).cloned())
        }

        async fn tell_executor(
            &self,
            pool: &PoolName,
            executor: &ExecutorId,
            message: &ControlMessage,
        ) -> Result<(), String> {
            let ControlMessage::Cancel(c) = message;
            self.log(format!(
                "cancel {} on {pool}/{executor} by {}",
                c.job_id, c.requested_by
            ));
            Ok(())
        }

        async fn ensure_control_queue(
            &self,
            executor: &ExecutorId,
            pool: &PoolName,
        ) -> Result<(), String> {
            self.log(format!("control queue {pool}/{executor}"));
            Ok(())
        }

        async fn record_executor(
            &self,
            executor: &ExecutorId,
            pool: &PoolName,
            at: DateTime<Utc>,
            seen: Seen<'_>,
        ) -> Result<(), String> {
            let what = match seen {
                Seen::Job { job_id, .. } => format!("job {job_id}"),
                Seen::Heartbeat(b) => format!("heartbeat {} running", b.running_jobs),
            };
            self.log(format!(
                "seen {pool}/{executor} at {} ({what})",
                at.to_rfc3339()
            ));
            Ok(())
        }

        async fn after_end(&self, st: &JobStatus, _job: Option<JobView>) -> Result<(), String> {
            self.log(format!("after end {} {}", st.job_id, st.state));
            Ok(())
        }

        async fn dead_letter(&self, _body: &str, reason: &str) -> Result<(), String> {
            self.log(format!("dead letter: {reason}"));
            Ok(())
        }
    }

    fn batch(bodies: &[&str]) -> SqsEvent {
        crate::sqs_batch::test_event("pbs-status", bodies)
    }

    /// Handles each body in its own batch, in order (as a FIFO of one would deliver them).
    async fn handle_each(status: &Status<Memory>, bodies: &[&str]) -> Vec<String> {
        let mut retried = Vec::new();
        for body in bodies {
            let answer = status.handle(batch(&[body])).await;
            retried.extend(
                answer
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier),
            );
        }
        retried
    }

    const JOB: &str = "ev-3f0c2a9d8b7e6f5a4c3b2a1908f7e6d5c4b3a291";

    #[tokio::test]
    async fn a_job_runs_then_ends_and_its_end_is_followed_up_once() {
        let status = Status::with_store(Memory::default());
        let retried = handle_each(&status, &[RUNNING, SUCCEEDED, SUCCEEDED]).await;
        assert!(retried.is_empty(), "{retried:?}");
        assert_eq!(
            status.store.states.lock().unwrap().get(JOB),
            Some(&JobState::Succeeded)
        );
        let calls = status.store.calls();
        // A redelivered end asks for its follow-ups again (they run once, in the store).
        let ends: Vec<&String> = calls
            .iter()
            .filter(|c| c.starts_with("after end"))
            .collect();
        assert_eq!(ends, [&format!("after end {JOB} succeeded"); 2]);
        // The executor is recorded as seen once a minute at most, not per report.
        let seen: Vec<&String> = calls.iter().filter(|c| c.starts_with("seen")).collect();
        assert_eq!(seen.len(), 1, "{calls:?}");
        assert!(seen[0].starts_with("seen default/edit-bay-1"), "{seen:?}");
    }

    #[tokio::test]
    async fn a_late_running_report_of_a_job_that_failed_starts_nothing() {
        let status = Status::with_store(Memory::default());
        assert!(handle_each(&status, &[FAILED, RUNNING]).await.is_empty());
        let calls = status.store.calls();
        // No cancel sent (the job was not cancelled), no second follow-up, nothing dead-lettered.
        assert!(
            calls
                .iter()
                .all(|c| !c.starts_with("cancel") && !c.starts_with("dead letter")),
            "{calls:?}"
        );
        let ends = calls.iter().filter(|c| c.starts_with("after end")).count();
        assert_eq!(ends, 1, "{calls:?}");
    }

    #[tokio::test]
    async fn a_cancelled_job_reported_running_is_cancelled_on_its_executor() {
        let store = Memory::default();
        store
            .states
            .lock()
            .unwrap()
            .insert(JOB.into(), JobState::Cancelled);
        store
            .cancelled
            .lock()
            .unwrap()
            .insert(JOB.into(), "dev-operator".into());
        let status = Status::with_store(store);
        assert!(handle_each(&status, &[RUNNING]).await.is_empty());
        assert!(
            status.store.calls().contains(&format!(
                "cancel {JOB} on default/edit-bay-1 by dev-operator"
            )),
            "{:?}",
            status.store.calls()
        );
    }

    #[tokio::test]
    async fn heartbeats_record_the_executor_and_make_its_control_queue_once() {
        let status = Status::with_store(Memory::default());
        assert!(
            handle_each(&status, &[HEARTBEAT, HEARTBEAT])
                .await
                .is_empty()
        );
        let calls = status.store.calls();
        let beats = calls
            .iter()
            .filter(|c| c.contains("(heartbeat 2 running)"))
            .count();
        let queues = calls
            .iter()
            .filter(|c| c.starts_with("control queue"))
            .count();
        assert_eq!((beats, queues), (2, 1), "{calls:?}");
        assert!(
            calls[0].contains("at 2026-11-25T16:31:00+00:00"),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn progress_is_applied_to_a_running_job() {
        let status = Status::with_store(Memory::default());
        assert!(handle_each(&status, &[RUNNING, PROGRESS]).await.is_empty());
        assert!(
            status
                .store
                .calls()
                .contains(&format!("progress {JOB} 536870912/1073741824"))
        );
    }

    #[tokio::test]
    async fn bodies_that_can_never_apply_go_to_the_dead_letter_queue_with_their_reason() {
        let status = Status::with_store(Memory::default());
        let queued = RUNNING.replace("\"running\"", "\"queued\"");
        let retried = handle_each(&status, &["{not json", &queued]).await;
        assert!(retried.is_empty());
        let dead: Vec<String> = status
            .store
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("dead letter"))
            .collect();
        assert_eq!(dead.len(), 2, "{dead:?}");
        assert!(dead[1].contains("cannot set state \"queued\""), "{dead:?}");
        assert!(status.store.states.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_store_failure_retries_the_report_alone() {
        let store = Memory::default();
        store
            .unavailable
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let status = Status::with_store(store);
        let answer = status.handle(batch(&[SUCCEEDED, HEARTBEAT])).await;
        let retried: Vec<String> = answer
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        assert_eq!(retried, ["m0"]);
    }
}
