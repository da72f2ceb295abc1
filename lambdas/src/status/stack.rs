//! The status function's capabilities served by the deployed stack: the jobs and executors
//! tables, executors' control queues, follow-ups (notifications, chains, staging), the DLQ.

use chrono::{DateTime, Utc};
use pbs_shared::message::{ControlMessage, EndpointTestResult, Heartbeat, JobProgress, JobStatus};
use pbs_shared::{ExecutorId, JobId, JobState, PoolName};

use super::once::PoolOnce;
use super::{Seen, StatusStore};
use crate::dead_letter::dead_letter;
use crate::dispatch::Dispatcher;
use crate::env::StatusEnv;
use crate::flow::FollowUp;
use crate::store::items::{Update, describe_error, is_condition_failure, n, s};
use crate::store::jobs::{Applied, JobTable, JobView};
use crate::store::pools::PoolTable;
use crate::store::templates::TemplateTable;

pub struct StackStore {
    env: StatusEnv,
    follow_up: FollowUp,
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    jobs: JobTable,
    tests: crate::store::endpoint_tests::EndpointTests,
    once: PoolOnce,
    stats: crate::store::stats::StatsTable,
}

impl StackStore {
    pub fn new(
        env: StatusEnv,
        dynamo: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        s3: aws_sdk_s3::Client,
    ) -> Self {
        let jobs = JobTable::new(dynamo.clone(), &env.jobs_table, env.job_ttl_days);
        Self {
            follow_up: FollowUp {
                jobs: jobs.clone(),
                templates: crate::store::templates::TemplateTable::new(
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
            once: PoolOnce {
                pools: PoolTable::new(dynamo.clone(), &env.pools_table),
                templates: TemplateTable::new(dynamo.clone(), &env.templates_table),
                jobs: jobs.clone(),
                dispatcher: Dispatcher::new(sqs.clone(), jobs.clone(), &env.pool_queue_prefix),
                sqs: sqs.clone(),
                controls: Default::default(),
                schedules: Default::default(),
            },
            stats: crate::store::stats::StatsTable::new(dynamo.clone(), &env.stats_table),
            jobs,
            tests: crate::store::endpoint_tests::EndpointTests::new(
                dynamo.clone(),
                &env.endpoint_tests_table,
            ),
            env,
            dynamo,
            sqs,
        }
    }
}

impl StatusStore for StackStore {
    async fn apply_status(&self, st: &JobStatus) -> Result<(Applied, Option<JobView>), String> {
        self.jobs.apply_status(st).await.map_err(|e| e.to_string())
    }

    async fn apply_progress(&self, p: &JobProgress) -> Result<Applied, String> {
        self.jobs.apply_progress(p).await.map_err(|e| e.to_string())
    }

    async fn cancelled_by(&self, job_id: &JobId) -> Result<Option<String>, String> {
        let job = self
            .jobs
            .get(job_id.as_str())
            .await
            .map_err(|e| e.to_string())?;
        Ok(job
            .filter(|j| j.state == JobState::Cancelled.as_str())
            .map(|j| {
                j.cancel_requested_by
                    .unwrap_or_else(|| "an operator".into())
            }))
    }

    async fn tell_executor(
        &self,
        pool: &PoolName,
        executor: &ExecutorId,
        message: &ControlMessage,
    ) -> Result<(), String> {
        let prefix = &self.env.pool_queue_prefix;
        let name = crate::control::queue_name(prefix, pool, executor);
        let url = crate::control::ensure(&self.sqs, prefix, pool, executor).await?;
        crate::control::post(&self.sqs, &url, message)
            .await
            .map_err(|e| format!("sending a control message to {name}: {e}"))
    }

    async fn ensure_control_queue(
        &self,
        executor: &ExecutorId,
        pool: &PoolName,
    ) -> Result<(), String> {
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
            .map(drop)
            .map_err(|e| describe_error(&e))
    }

    async fn record_executor(
        &self,
        executor: &ExecutorId,
        pool: &PoolName,
        at: DateTime<Utc>,
        seen: Seen<'_>,
    ) -> Result<(), String> {
        let update = match seen {
            Seen::Job { version, job_id } => {
                let update = Update::new();
                let update = match version {
                    Some(v) => update.set("version", s(v)),
                    None => update,
                };
                update.set("last_job", s(job_id.as_str()))
            }
            Seen::Heartbeat(beat) => Update::new()
                .set(
                    "endpoints",
                    s(serde_json::to_string(&beat.endpoints).expect("endpoints serialise")),
                )
                .set("version", s(&beat.executor_version))
                .set("heartbeat_seconds", n(beat.interval_seconds))
                .set("running_jobs", n(beat.running_jobs))
                .set("last_heartbeat", s(beat.at.to_rfc3339())),
        };
        let req = self
            .dynamo
            .update_item()
            .table_name(&self.env.executors_table)
            .key("executor_id", s(executor.as_str()));
        // A report older than the last one recorded changes nothing.
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

    async fn after_end(&self, st: &JobStatus, job: Option<JobView>) -> Result<(), String> {
        self.follow_up.after_end(&st.into(), job).await
    }

    async fn complete_endpoint_test(&self, result: &EndpointTestResult) -> Result<bool, String> {
        self.tests.complete(result).await
    }

    async fn dead_letter(&self, body: &str, reason: &str) -> Result<(), String> {
        dead_letter(&self.sqs, &self.env.dead_letter_queue_url, body, reason).await
    }

    async fn act_once(&self, beat: &Heartbeat, sent: DateTime<Utc>) -> Result<(), String> {
        self.once.answer(beat, sent).await?;
        self.once
            .tick(&beat.pool, sent, beat.interval_seconds)
            .await
    }

    async fn count_end(&self, st: &JobStatus) -> Result<(), String> {
        let result = st.result.as_ref();
        let ended = crate::store::stats::Ended {
            pool: &st.pool,
            state: st.state,
            class: result.and_then(|r| r.error_class),
            files: result.map_or(0, |r| r.files),
            bytes: result.map_or(0, |r| r.bytes),
            // The hour by the cloud's clock, whatever the executor's says.
            at: Utc::now(),
        };
        self.stats.add(&ended).await
    }

    async fn watch_delivered(
        &self,
        pool: &PoolName,
        job: &JobId,
        at: DateTime<Utc>,
    ) -> Result<(), String> {
        self.once.pools.record_delivered(pool, job, at).await
    }
}
