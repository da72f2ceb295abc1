//! The status function: executors' reports (through their pool's status queue) move jobs forward.
//!
//! A report speaks for the pool whose status queue it came through (the record's
//! `eventSourceARN`; only that pool's executors may send there), never for the pool its body
//! names: a body naming another pool, a report on another pool's job, an end of an attempt another
//! executor holds, or a report creating a job no executor makes itself is refused. Times are
//! trusted only up to when SQS took the message (`SentTimestamp`) plus [`MAX_SKEW`].
//!
//! Each report is applied with a conditional update, so states only move forward whatever order
//! reports arrive in (a late `running` after `succeeded` changes nothing), and the reporting
//! executor's last-seen time is recorded. A body that can never be applied or is refused goes to
//! the dead-letter queue with its reason; a transient failure is retried alone.

mod once;
mod stack;

use std::collections::{HashMap, HashSet};
use std::future::Future;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use pbs_shared::message::{
    CancelRequest, ControlMessage, EndpointTestResult, Heartbeat, JobProgress, JobStatus, V1,
};
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
    /// Applies a job report forward-only, when its pool and executor may move the job (see
    /// [`crate::store::jobs::JobTable::apply_status`]); the job as recorded after it moved, or as
    /// it is when it did not (`None`: no such job).
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
    /// Completes the queued endpoint test `result` answers, when its pool and endpoint are the
    /// ones asked; `false` when there is no such queued test.
    fn complete_endpoint_test(
        &self,
        result: &EndpointTestResult,
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// Puts a body that can never be applied on the dead-letter queue, with the reason.
    fn dead_letter(
        &self,
        body: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Makes the pool act once for `beat`, a heartbeat (taken by SQS at `sent`) of an executor
    /// that runs the pool's cloud rules: the pool's rule lease claimed or renewed and the answer
    /// posted on the executor's control queue; the pool's schedules that came due sent as runs
    /// through its work queue (see `once`).
    fn act_once(
        &self,
        beat: &Heartbeat,
        sent: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Adds a job's end to the hourly counts (the dashboard's figures).
    fn count_end(&self, st: &JobStatus) -> impl Future<Output = Result<(), String>> + Send;
    /// Remembers that the pool delivered watch job `job` at `at`, so an executor taking the
    /// pool's lease over does not take the same file again.
    fn watch_delivered(
        &self,
        pool: &PoolName,
        job: &JobId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// How far past the time SQS took a message its body may date itself (clock skew).
pub const MAX_SKEW: chrono::Duration = chrono::Duration::seconds(30);

/// Who sent a report, as SQS says: the pool whose status queue it came through, and when SQS
/// took it.
#[derive(Debug, Clone)]
pub struct Sender {
    pub pool: PoolName,
    pub sent_at: Option<DateTime<Utc>>,
}

impl Sender {
    /// The sender of `record`, whose queue must be a pool's status queue (`<prefix><pool>`).
    pub fn of(record: &SqsMessage, prefix: &str) -> Result<Self, String> {
        let arn = record.event_source_arn.as_deref().unwrap_or_default();
        let queue = arn.rsplit(':').next().unwrap_or_default();
        let pool = queue
            .strip_prefix(prefix)
            .ok_or_else(|| format!("the report came through {queue:?}, which is no pool's status queue ({prefix}<pool>)"))?;
        let pool = PoolName::parse(pool).map_err(|e| {
            format!("the report came through {queue:?}, which is no pool's status queue: {e}")
        })?;
        let sent_at = record
            .attributes
            .get("SentTimestamp")
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis);
        Ok(Self { pool, sent_at })
    }

    /// `at` as a body claims it, no later than SQS took the message (plus [`MAX_SKEW`]).
    pub fn clamp(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        match self.sent_at {
            Some(sent) => at.min(sent + MAX_SKEW),
            None => at,
        }
    }
}

/// The pool a status body names.
fn claimed_pool(message: &StatusMessage) -> &PoolName {
    match message {
        StatusMessage::Heartbeat(b) => &b.pool,
        StatusMessage::Progress(p) => &p.pool,
        StatusMessage::Probe(p) => &p.pool,
        StatusMessage::Job(st) => &st.pool,
        StatusMessage::EndpointTest(t) => &t.pool,
    }
}

/// Why a job report names artifacts outside its pool's prefixes (`logs/<pool>/`,
/// `reports/<pool>/`, where only that pool's executors may write), if it does.
pub fn foreign_artifact(st: &JobStatus) -> Option<String> {
    let result = st.result.as_ref()?;
    [("logs", &result.log_key), ("reports", &result.report_key)]
        .into_iter()
        .find_map(|(kind, key)| {
            let key = key.as_deref()?;
            let own = format!("{kind}/{}/", st.pool);
            (!key.starts_with(&own) || key.split('/').any(|part| part == ".."))
                .then(|| format!("{kind} key {key:?} is outside the pool's own prefix {own}"))
        })
}

/// Why a job report that did not move its job was refused (its sender may not move it), or
/// `None` when it is only late or repeated. `job` is the job as recorded (`None`: no such job).
pub fn refusal(st: &JobStatus, job: Option<&JobView>) -> Option<String> {
    let Some(job) = job else {
        return Some(format!(
            "no job {}: a report creates only the watch and schedule jobs its executor made",
            st.job_id
        ));
    };
    let pool = job.pool.as_deref().unwrap_or_default();
    if pool != st.pool.as_str() {
        return Some(format!(
            "job {} belongs to pool {pool:?}, not to pool {} whose queue the report came through",
            st.job_id, st.pool
        ));
    }
    let holder = job.executor_id.as_deref().unwrap_or_default();
    if st.state.is_terminal() && job.attempt == st.attempt && holder != st.executor_id.as_str() {
        return Some(format!(
            "attempt {} of job {} is held by executor {holder:?}, not {}",
            st.attempt, st.job_id, st.executor_id
        ));
    }
    None
}

pub struct Status<S> {
    store: S,
    /// Pools' status queues are named `<queue_prefix><pool>`.
    queue_prefix: String,
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
        let prefix = env.status_queue_prefix.clone();
        Self::with_store(StackStore::new(env, dynamo, sqs, s3), prefix)
    }
}

impl<S: StatusStore> Status<S> {
    /// The status function over `store`, taking reports from the queues `<queue_prefix><pool>`.
    pub fn with_store(store: S, queue_prefix: impl Into<String>) -> Self {
        Self {
            store,
            queue_prefix: queue_prefix.into(),
            controlled: Mutex::new(HashSet::new()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Handles one batch; only records that failed transiently are returned for retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        crate::sqs_batch::for_each_record(event, |record| async move {
            let body = record.body.as_deref().unwrap_or_default();
            match Sender::of(&record, &self.queue_prefix) {
                Ok(sender) => self.handle_body(body, &sender).await,
                Err(reason) => self.refuse(body, &reason).await,
            }
        })
        .await
    }

    /// Puts a body that can never be applied, or that its sender may not send, on the
    /// dead-letter queue with the reason.
    async fn refuse(&self, body: &str, reason: &str) -> Result<(), String> {
        warn!(reason = %reason, refused = true, "status body refused: sent to the dead-letter queue");
        self.store.dead_letter(body, reason).await
    }

    async fn handle_body(&self, body: &str, sender: &Sender) -> Result<(), String> {
        let message = match StatusMessage::parse(body) {
            Ok(m) => m,
            Err(e) => return self.refuse(body, &e.to_string()).await,
        };
        let claimed = claimed_pool(&message);
        if claimed != &sender.pool {
            let reason = format!(
                "the body speaks for pool {claimed} but came through the status queue of pool {}",
                sender.pool
            );
            return self.refuse(body, &reason).await;
        }
        match message {
            StatusMessage::Heartbeat(beat) => self.heartbeat(&beat, sender).await,
            StatusMessage::Progress(p) => match self.store.apply_progress(&p).await? {
                Applied::Moved => Ok(()),
                Applied::Stale => {
                    info!(job_id = %p.job_id, attempt = p.attempt, executor = %p.executor_id, "progress of a job not running on its sender ignored");
                    Ok(())
                }
            },
            StatusMessage::Probe(probe) => {
                info!(executor = %probe.executor_id, pool = %probe.pool, "doctor probe received");
                Ok(())
            }
            StatusMessage::EndpointTest(t) => {
                if self.store.complete_endpoint_test(&t).await? {
                    info!(test_id = %t.test_id, endpoint = %t.endpoint, executor = %t.executor_id, ok = t.ok, "endpoint test completed");
                    return Ok(());
                }
                let reason = format!(
                    "no queued test {} of endpoint {} in pool {} (unknown, already answered, or asked of another pool or endpoint)",
                    t.test_id, t.endpoint, t.pool
                );
                self.refuse(body, &reason).await
            }
            StatusMessage::Job(st) if st.state == JobState::Queued => {
                self.refuse(body, "a job status report cannot set state \"queued\"")
                    .await
            }
            StatusMessage::Job(st) => {
                if let Some(reason) = foreign_artifact(&st) {
                    return self.refuse(body, &reason).await;
                }
                let span = info_span!("job", job_id = %st.job_id, pool = %st.pool, executor = %st.executor_id);
                self.apply(st, body, sender).instrument(span).await
            }
        }
    }

    /// Applies a job report and what follows it.
    async fn apply(&self, status: JobStatus, body: &str, sender: &Sender) -> Result<(), String> {
        let (applied, job) = self.store.apply_status(&status).await?;
        match applied {
            Applied::Moved => {
                info!(job_id = %status.job_id, state = %status.state, attempt = status.attempt, executor = %status.executor_id, "job moved");
                // Counted once, when the end is recorded; a count that fails is lost, never
                // counted twice.
                if status.state.is_terminal()
                    && let Err(e) = self.store.count_end(&status).await
                {
                    warn!(job_id = %status.job_id, error = %e, "the job's end was not counted");
                }
            }
            Applied::Stale => {
                if let Some(reason) = refusal(&status, job.as_ref()) {
                    return self.refuse(body, &reason).await;
                }
                info!(job_id = %status.job_id, state = %status.state, attempt = status.attempt, "stale report ignored");
                if status.state == JobState::Running {
                    self.cancel_if_cancelled(&status).await?;
                }
            }
        }
        // An end that was recorded (now, or by an earlier delivery of this report whose follow-up
        // did not finish) gets its notifications, next step and staging clean-up.
        if status.state.is_terminal() {
            self.store.after_end(&status, job).await?;
        }
        if status.state == JobState::Succeeded && pbs_shared::job::is_watch_job(&status.job_id) {
            self.store
                .watch_delivered(&status.pool, &status.job_id, sender.clamp(status.at))
                .await?;
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
        if due && let Err(e) = self.touch_executor(&status, sender).await {
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
    async fn touch_executor(&self, st: &JobStatus, sender: &Sender) -> Result<(), String> {
        let seen = Seen::Job {
            version: st.executor_version.as_deref(),
            job_id: &st.job_id,
        };
        self.store
            .record_executor(&st.executor_id, &st.pool, sender.clamp(st.at), seen)
            .await
    }

    /// Records a heartbeat: version, interval (for the offline rule) and running jobs. A time
    /// ahead of when SQS took the message counts as that time: a heartbeat dated in the future
    /// cannot keep an executor online.
    async fn heartbeat(&self, beat: &Heartbeat, sender: &Sender) -> Result<(), String> {
        info!(executor = %beat.executor_id, running_jobs = beat.running_jobs, "heartbeat");
        let seen = Seen::Heartbeat(beat);
        self.store
            .record_executor(&beat.executor_id, &beat.pool, sender.clamp(beat.at), seen)
            .await?;
        self.ensure_control_queue(&beat.executor_id, &beat.pool)
            .await?;
        if beat.runs_rules {
            let sent = sender.sent_at.unwrap_or_else(|| sender.clamp(beat.at));
            self.store.act_once(beat, sent).await?;
        }
        Ok(())
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

    /// Pools' status queues in these tests are `pbs-reports-<pool>`.
    const PREFIX: &str = "pbs-reports-";

    /// A job as the table holds it.
    #[derive(Debug, Clone)]
    struct Recorded {
        state: JobState,
        pool: String,
        attempt: u32,
        executor: Option<String>,
    }

    /// A jobs table with the table's rules (forward only, own pool, attempt holder, creation of
    /// executor-made jobs only), and a log of every other call.
    #[derive(Default)]
    struct Memory {
        jobs: StdMutex<HashMap<String, Recorded>>,
        /// Jobs cancelled by an operator (by whom).
        cancelled: StdMutex<HashMap<String, String>>,
        calls: StdMutex<Vec<String>>,
        /// Applying a report fails (DynamoDB throttling) while set.
        unavailable: std::sync::atomic::AtomicBool,
    }

    impl Memory {
        /// The fixtures' job, queued in pool `pool`.
        fn with_job(pool: &str) -> Self {
            let m = Self::default();
            m.put(JOB, JobState::Queued, pool, 0, None);
            m
        }

        fn put(&self, id: &str, state: JobState, pool: &str, attempt: u32, executor: Option<&str>) {
            let recorded = Recorded {
                state,
                pool: pool.into(),
                attempt,
                executor: executor.map(Into::into),
            };
            self.jobs.lock().unwrap().insert(id.into(), recorded);
        }

        fn state(&self, id: &str) -> Option<JobState> {
            self.jobs.lock().unwrap().get(id).map(|r| r.state)
        }

        fn log(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn dead_letters(&self) -> Vec<String> {
            let calls = self.calls();
            calls
                .into_iter()
                .filter(|c| c.starts_with("dead letter"))
                .collect()
        }
    }

    fn view(id: &str, r: &Recorded) -> JobView {
        use crate::store::items::{n, s};
        let mut item = crate::store::items::Item::from([
            ("job_id".into(), s(id)),
            ("state".into(), s(r.state.as_str())),
            ("pool".into(), s(&r.pool)),
            ("attempt".into(), n(r.attempt)),
        ]);
        if let Some(e) = &r.executor {
            item.insert("executor_id".into(), s(e));
        }
        JobView::from_item(&item)
    }

    /// Whether the table would apply `st` to `r` (the condition of `JobTable::apply_status`).
    fn may_apply(st: &JobStatus, r: Option<&Recorded>) -> bool {
        let Some(r) = r else {
            return st.job.is_some() && pbs_shared::job::made_on_executor(&st.job_id);
        };
        let forward = !r.state.is_terminal()
            && (r.attempt < st.attempt
                || (r.attempt == st.attempt && r.state.rank() < st.state.rank()));
        let holder = !st.state.is_terminal()
            || r.attempt < st.attempt
            || r.executor.as_deref() == Some(st.executor_id.as_str());
        r.pool == st.pool.as_str() && forward && holder
    }

    impl StatusStore for Memory {
        async fn apply_status(&self, st: &JobStatus) -> Result<(Applied, Option<JobView>), String> {
            if self.unavailable.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("DynamoDB is throttling".into());
            }
            let mut jobs = self.jobs.lock().unwrap();
            let now = jobs.get(st.job_id.as_str());
            if !may_apply(st, now) {
                return Ok((Applied::Stale, now.map(|r| view(st.job_id.as_str(), r))));
            }
            let recorded = Recorded {
                state: st.state,
                pool: st.pool.to_string(),
                attempt: st.attempt,
                executor: Some(st.executor_id.to_string()),
            };
            jobs.insert(st.job_id.to_string(), recorded);
            Ok((Applied::Moved, None))
        }

        async fn apply_progress(&self, p: &JobProgress) -> Result<Applied, String> {
            let applies = self
                .jobs
                .lock()
                .unwrap()
                .get(p.job_id.as_str())
                .is_some_and(|r| {
                    r.state == JobState::Running
                        && r.pool == p.pool.as_str()
                        && r.executor.as_deref() == Some(p.executor_id.as_str())
                });
            self.log(format!(
                "progress {} {}/{} {}",
                p.job_id,
                p.bytes,
                p.total_bytes,
                if applies { "applied" } else { "ignored" }
            ));
            Ok(if applies {
                Applied::Moved
            } else {
                Applied::Stale
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
            match message {
                ControlMessage::Cancel(c) => self.log(format!(
                    "cancel {} on {pool}/{executor} by {}",
                    c.job_id, c.requested_by
                )),
                ControlMessage::Lease(_) => self.log(format!("lease answer to {executor}")),
                ControlMessage::Retry(r) => {
                    self.log(format!("retry of {} on {executor}", r.retry_of))
                }
            }
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

        async fn complete_endpoint_test(
            &self,
            result: &EndpointTestResult,
        ) -> Result<bool, String> {
            self.log(format!("endpoint test {} ok={}", result.test_id, result.ok));
            Ok(result.test_id == "asked")
        }

        async fn dead_letter(&self, _body: &str, reason: &str) -> Result<(), String> {
            self.log(format!("dead letter: {reason}"));
            Ok(())
        }

        async fn count_end(&self, st: &JobStatus) -> Result<(), String> {
            self.log(format!("counted {} {}", st.job_id, st.state));
            Ok(())
        }

        async fn act_once(&self, beat: &Heartbeat, _sent: DateTime<Utc>) -> Result<(), String> {
            self.log(format!("act once for {}", beat.executor_id));
            Ok(())
        }

        async fn watch_delivered(
            &self,
            pool: &PoolName,
            job: &JobId,
            _at: DateTime<Utc>,
        ) -> Result<(), String> {
            self.log(format!("delivered {job} in {pool}"));
            Ok(())
        }
    }

    /// A batch from the default pool's status queue.
    fn batch(bodies: &[&str]) -> SqsEvent {
        crate::sqs_batch::test_event("pbs-reports-default", bodies)
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
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
        let retried = handle_each(&status, &[RUNNING, SUCCEEDED, SUCCEEDED]).await;
        assert!(retried.is_empty(), "{retried:?}");
        assert_eq!(status.store.state(JOB), Some(JobState::Succeeded));
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
    async fn an_endpoint_test_answer_completes_only_the_test_its_pool_was_asked() {
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
        let answer = |id: &str, pool: &str| {
            serde_json::json!({
                "kind": "endpoint_test", "v": 1, "test_id": id, "executor_id": "edit-bay-1",
                "pool": pool, "endpoint": "nas", "ok": true, "location": "smb://nas/media",
                "elapsed_ms": 120, "at": "2026-11-30T09:00:00Z"
            })
            .to_string()
        };
        let bodies = [
            answer("asked", "default"),
            answer("forged", "default"),
            answer("asked", "site-b"),
        ];
        let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        assert!(handle_each(&status, &bodies).await.is_empty());
        let calls = status.store.calls();
        let dead: Vec<&String> = calls
            .iter()
            .filter(|c| c.starts_with("dead letter"))
            .collect();
        assert_eq!(dead.len(), 2, "{calls:?}");
        assert!(
            dead[0].contains("no queued test forged of endpoint nas in pool default"),
            "{dead:?}"
        );
        assert!(dead[1].contains("speaks for pool site-b"), "{dead:?}");
        assert!(
            calls.iter().any(|c| c == "endpoint test asked ok=true"),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn a_late_running_report_of_a_job_that_failed_starts_nothing() {
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
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
        store.put(JOB, JobState::Cancelled, "default", 0, None);
        store
            .cancelled
            .lock()
            .unwrap()
            .insert(JOB.into(), "dev-operator".into());
        let status = Status::with_store(store, PREFIX);
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
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
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
    async fn only_heartbeats_of_executors_running_the_pools_rules_ask_for_its_lease() {
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
        let rules = HEARTBEAT.replace(
            "\"running_jobs\": 2",
            "\"running_jobs\": 2, \"runs_rules\": true",
        );
        assert_ne!(rules, HEARTBEAT);
        assert!(handle_each(&status, &[HEARTBEAT, &rules]).await.is_empty());
        let calls = status.store.calls();
        let asked: Vec<&String> = calls.iter().filter(|c| c.starts_with("act once")).collect();
        assert_eq!(asked, ["act once for edit-bay-1"], "{calls:?}");
    }

    #[tokio::test]
    async fn progress_is_applied_to_a_running_job() {
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
        assert!(handle_each(&status, &[RUNNING, PROGRESS]).await.is_empty());
        assert!(
            status
                .store
                .calls()
                .contains(&format!("progress {JOB} 536870912/1073741824 applied"))
        );
    }

    #[tokio::test]
    async fn bodies_that_can_never_apply_go_to_the_dead_letter_queue_with_their_reason() {
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
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
        assert_eq!(status.store.state(JOB), Some(JobState::Queued));
    }

    #[tokio::test]
    async fn a_store_failure_retries_the_report_alone() {
        let store = Memory::with_job("default");
        store
            .unavailable
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let status = Status::with_store(store, PREFIX);
        let answer = status.handle(batch(&[SUCCEEDED, HEARTBEAT])).await;
        let retried: Vec<String> = answer
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        assert_eq!(retried, ["m0"]);
    }

    /// `body` sent through the status queue `queue`.
    async fn through(status: &Status<Memory>, queue: &str, body: &str) {
        let answer = status
            .handle(crate::sqs_batch::test_event(queue, &[body]))
            .await;
        assert!(answer.batch_item_failures.is_empty());
    }

    #[tokio::test]
    async fn a_report_speaks_only_for_the_pool_whose_queue_it_came_through() {
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
        through(&status, "pbs-reports-site-b", SUCCEEDED).await;
        through(&status, "pbs-status", SUCCEEDED).await;
        through(&status, "pbs-reports-Bad", HEARTBEAT).await;
        let dead = status.store.dead_letters();
        assert_eq!(dead.len(), 3, "{dead:?}");
        assert!(
            dead[0].contains(
                "speaks for pool default but came through the status queue of pool site-b"
            ),
            "{dead:?}"
        );
        assert!(dead[1].contains("no pool's status queue"), "{dead:?}");
        assert!(dead[2].contains("no pool's status queue"), "{dead:?}");
        assert_eq!(status.store.state(JOB), Some(JobState::Queued));
        assert!(
            !status
                .store
                .calls()
                .iter()
                .any(|c| c.starts_with("seen") || c.starts_with("after end"))
        );
    }

    #[tokio::test]
    async fn a_report_cannot_touch_another_pools_job_nor_create_a_cloud_job() {
        let store = Memory::with_job("site-b");
        let status = Status::with_store(store, PREFIX);
        through(&status, "pbs-reports-default", SUCCEEDED).await;
        let unknown = SUCCEEDED.replace(JOB, "ev-0000000000000000000000000000000000000009");
        through(&status, "pbs-reports-default", &unknown).await;
        let dead = status.store.dead_letters();
        assert!(dead[0].contains("belongs to pool \"site-b\""), "{dead:?}");
        assert!(dead[1].contains("no job ev-0000"), "{dead:?}");
        assert_eq!(status.store.state(JOB), Some(JobState::Queued));
        assert_eq!(
            status.store.jobs.lock().unwrap().len(),
            1,
            "nothing created"
        );
        assert!(
            !status
                .store
                .calls()
                .iter()
                .any(|c| c.starts_with("after end"))
        );

        // A watch job its executor made is created by its first report.
        let local: serde_json::Value = serde_json::from_str(RUNNING).unwrap();
        let mut local = local;
        local["job_id"] = "wt-0a1b2c".into();
        local["job"] = serde_json::json!({
            "template_id": "scans-out", "origin": {"kind": "watch", "rule": "scans-out"},
            "source": {"type": "endpoint", "endpoint": "scans"}, "destination": "archive",
            "file_count": 1, "total_bytes": 10, "created_at": "2026-11-25T16:30:00Z"
        });
        through(&status, "pbs-reports-default", &local.to_string()).await;
        assert_eq!(status.store.state("wt-0a1b2c"), Some(JobState::Running));
    }

    #[tokio::test]
    async fn only_the_executor_holding_an_attempt_ends_it() {
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
        through(&status, "pbs-reports-default", RUNNING).await;
        let intruder = SUCCEEDED.replace("edit-bay-1", "intruder");
        through(&status, "pbs-reports-default", &intruder).await;
        let dead = status.store.dead_letters();
        assert!(dead[0].contains("attempt 1 of job ev-3f0c"), "{dead:?}");
        assert!(
            dead[0].contains("held by executor \"edit-bay-1\", not intruder"),
            "{dead:?}"
        );
        assert_eq!(status.store.state(JOB), Some(JobState::Running));
        through(&status, "pbs-reports-default", SUCCEEDED).await;
        assert_eq!(status.store.state(JOB), Some(JobState::Succeeded));
    }

    #[tokio::test]
    async fn artifacts_outside_the_pools_prefixes_are_refused() {
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
        through(&status, "pbs-reports-default", RUNNING).await;
        for forged in [
            SUCCEEDED.replace("reports/default/", "reports/site-b/"),
            SUCCEEDED.replace("logs/default/", "logs/default/../site-b/"),
        ] {
            through(&status, "pbs-reports-default", &forged).await;
        }
        let dead = status.store.dead_letters();
        assert_eq!(dead.len(), 2, "{dead:?}");
        assert!(
            dead[0].contains("outside the pool's own prefix reports/default/"),
            "{dead:?}"
        );
        assert_eq!(status.store.state(JOB), Some(JobState::Running));
    }

    #[tokio::test]
    async fn a_heartbeat_dated_ahead_counts_as_when_sqs_took_it() {
        let status = Status::with_store(Memory::default(), PREFIX);
        let ahead = HEARTBEAT.replace("2026-11-25T16:31:00Z", "2036-01-01T00:00:00Z");
        through(&status, "pbs-reports-default", &ahead).await;
        let calls = status.store.calls();
        // The test batch says SQS took it at 2026-11-25T16:31:00Z; the skew allowed is 30 s.
        assert!(
            calls[0].contains("at 2026-11-25T16:31:30+00:00"),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn progress_from_another_executor_is_not_applied() {
        let status = Status::with_store(Memory::with_job("default"), PREFIX);
        through(&status, "pbs-reports-default", RUNNING).await;
        let other = PROGRESS.replace("edit-bay-1", "intruder");
        through(&status, "pbs-reports-default", &other).await;
        let calls = status.store.calls();
        assert!(
            calls.contains(&format!("progress {JOB} 536870912/1073741824 ignored")),
            "{calls:?}"
        );
        assert!(status.store.dead_letters().is_empty());
    }
}
