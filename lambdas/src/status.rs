//! The status function: executors' reports (through the StatusQueue) move jobs forward.
//!
//! Each report is applied with a conditional update, so states only move forward whatever order
//! reports arrive in (a late `running` after `succeeded` changes nothing), and the reporting
//! executor's last-seen time is recorded. A body that can never be applied goes to the
//! dead-letter queue with its reason; a transient failure is retried alone.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

use pbs_shared::message::{CancelRequest, ControlMessage, Heartbeat, JobStatus, V1};
use pbs_shared::{ExecutorId, JobState, PoolName, StatusMessage};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::dead_letter::dead_letter;
use crate::env::StatusEnv;
use crate::items::{Update, describe_error, is_condition_failure, n, s};
use crate::job_table::{Applied, JobTable};

pub struct Status {
    env: StatusEnv,
    follow_up: crate::flow::FollowUp,
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    jobs: JobTable,
    /// Executors whose control queue this instance has made sure of.
    controlled: Mutex<HashSet<ExecutorId>>,
    /// When this instance last recorded each executor as seen from a job report.
    touched: Mutex<HashMap<ExecutorId, std::time::Instant>>,
}

/// How often a job report records its executor as seen (heartbeats do so every interval).
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Status {
    pub fn new(
        env: StatusEnv,
        dynamo: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        s3: aws_sdk_s3::Client,
    ) -> Self {
        let jobs = JobTable::new(dynamo.clone(), &env.jobs_table, env.job_ttl_days);
        Self {
            follow_up: crate::flow::FollowUp {
                jobs: jobs.clone(),
                templates: crate::template_table::TemplateTable::new(
                    dynamo.clone(),
                    &env.templates_table,
                ),
                dispatcher: crate::dispatch::Dispatcher::new(
                    sqs.clone(),
                    jobs.clone(),
                    &env.pool_queue_prefix,
                ),
                sqs: sqs.clone(),
                s3,
                notify_queue_url: env.notify_queue_url.clone(),
                staging_bucket: env.staging_bucket.clone(),
                cache: Default::default(),
            },
            jobs,
            env,
            dynamo,
            sqs,
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
                return match self
                    .jobs
                    .apply_progress(&p)
                    .await
                    .map_err(|e| e.to_string())?
                {
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
                return dead_letter(&self.sqs, &self.env.dead_letter_queue_url, body, &reason)
                    .await;
            }
        };
        let (applied, moved) = self
            .jobs
            .apply_status(&status)
            .await
            .map_err(|e| e.to_string())?;
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
            self.follow_up.after_end(&(&status).into(), moved).await?;
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
        let job = self
            .jobs
            .get(st.job_id.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let Some(job) = job.filter(|j| j.state == JobState::Cancelled.as_str()) else {
            return Ok(());
        };
        let name =
            crate::control::queue_name(&self.env.pool_queue_prefix, &st.pool, &st.executor_id);
        let url = crate::control::ensure(
            &self.sqs,
            &self.env.pool_queue_prefix,
            &st.pool,
            &st.executor_id,
        )
        .await?;
        let request = ControlMessage::Cancel(CancelRequest {
            v: V1,
            job_id: st.job_id.clone(),
            requested_by: job
                .cancel_requested_by
                .unwrap_or_else(|| "an operator".into()),
            at: Utc::now(),
        });
        crate::control::post(&self.sqs, &url, &request)
            .await
            .map_err(|e| format!("sending a cancel to {name}: {e}"))?;
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
        let url =
            crate::control::ensure(&self.sqs, &self.env.pool_queue_prefix, pool, executor).await?;
        self.dynamo
            .update_item()
            .table_name(&self.env.executors_table)
            .key("executor_id", s(executor.as_str()))
            .update_expression("SET control_queue_url = :u")
            .expression_attribute_values(":u", s(&url))
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        self.controlled.lock().await.insert(executor.clone());
        Ok(())
    }

    /// Records a job report's executor as seen.
    async fn touch_executor(&self, st: &JobStatus) -> Result<(), String> {
        let mut update = Update::new();
        if let Some(v) = &st.executor_version {
            update = update.set("version", s(v));
        }
        update = update.set("last_job", s(st.job_id.as_str()));
        self.record_executor(&st.executor_id, &st.pool, st.at, update)
            .await
    }

    /// Records a heartbeat: version, interval (for the offline rule) and running jobs.
    async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), String> {
        info!(executor = %beat.executor_id, running_jobs = beat.running_jobs, "heartbeat");
        let update = Update::new()
            .set("version", s(&beat.executor_version))
            .set("heartbeat_seconds", n(beat.interval_seconds))
            .set("running_jobs", n(beat.running_jobs))
            .set("last_heartbeat", s(beat.at.to_rfc3339()));
        self.record_executor(&beat.executor_id, &beat.pool, beat.at, update)
            .await?;
        self.ensure_control_queue(&beat.executor_id, &beat.pool)
            .await
    }

    /// Sets `update` and the last-seen time on an executor's item; a report older than the last
    /// one recorded changes nothing.
    async fn record_executor(
        &self,
        executor: &ExecutorId,
        pool: &PoolName,
        at: DateTime<Utc>,
        update: Update,
    ) -> Result<(), String> {
        let req = self
            .dynamo
            .update_item()
            .table_name(&self.env.executors_table)
            .key("executor_id", s(executor.as_str()));
        let res = update
            .set("pool", s(pool.as_str()))
            .set("last_seen", s(at.to_rfc3339()))
            .set("last_seen_epoch_ms", n(at.timestamp_millis()))
            .apply(
                req,
                Some("attribute_not_exists(#last_seen_epoch_ms) OR #last_seen_epoch_ms <= :last_seen_epoch_ms"),
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(describe_error(&e)),
        }
    }
}
