//! The status function: executors' reports (through the StatusQueue) move jobs forward.
//!
//! Each report is applied with a conditional update, so states only move forward whatever order
//! reports arrive in (a late `running` after `succeeded` changes nothing), and the reporting
//! executor's last-seen time is recorded. A body that can never be applied goes to the
//! dead-letter queue with its reason; a transient failure is retried alone.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use pbs_shared::message::JobStatus;
use pbs_shared::{JobState, StatusMessage};
use tracing::{info, warn};

use crate::dead_letter::dead_letter;
use crate::env::StatusEnv;
use crate::items::{Update, describe_error, is_condition_failure, n, s};
use crate::job_table::{Applied, JobTable};

pub struct Status {
    env: StatusEnv,
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    jobs: JobTable,
}

impl Status {
    pub fn new(env: StatusEnv, dynamo: aws_sdk_dynamodb::Client, sqs: aws_sdk_sqs::Client) -> Self {
        Self {
            jobs: JobTable::new(dynamo.clone(), &env.jobs_table, env.job_ttl_days),
            env,
            dynamo,
            sqs,
        }
    }

    /// Handles one batch; only records that failed transiently are returned for retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        crate::sqs_batch::for_each_body(event, |body| async move { self.handle_body(&body).await })
            .await
    }

    async fn handle_body(&self, body: &str) -> Result<(), String> {
        let status = match StatusMessage::parse(body) {
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
        let applied = self
            .jobs
            .apply_status(&status)
            .await
            .map_err(|e| e.to_string())?;
        match applied {
            Applied::Moved => {
                info!(job_id = %status.job_id, state = %status.state, attempt = status.attempt, executor = %status.executor_id, "job moved")
            }
            Applied::Stale => {
                info!(job_id = %status.job_id, state = %status.state, attempt = status.attempt, "stale report ignored")
            }
        }
        self.touch_executor(&status).await
    }

    /// Records the executor's last-seen time; never moves it backwards.
    async fn touch_executor(&self, st: &JobStatus) -> Result<(), String> {
        let req = self
            .dynamo
            .update_item()
            .table_name(&self.env.executors_table)
            .key("executor_id", s(st.executor_id.as_str()));
        let mut update = Update::new();
        if let Some(v) = &st.executor_version {
            update = update.set("version", s(v));
        }
        let res = update
            .set("pool", s(st.pool.as_str()))
            .set("last_seen", s(st.at.to_rfc3339()))
            .set("last_seen_epoch_ms", n(st.at.timestamp_millis()))
            .set("last_job", s(st.job_id.as_str()))
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
