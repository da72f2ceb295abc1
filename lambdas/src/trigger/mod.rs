//! The trigger function: S3 object events (through the EventsQueue) become jobs.
//!
//! Per SQS record: parse the S3 notification, match it against the templates and record each job
//! in the jobs table with a conditional put under its deterministic id; then the batch's new jobs
//! go to their pools' work queues, ten to a request, each marked dispatched once sent. A
//! duplicate event finds the job already recorded and sends nothing new (unless the first
//! delivery died between recording and sending). A body that can never be processed goes to
//! the dead-letter queue with its reason; a transient failure is reported as a batch item failure
//! so SQS retries that record alone.

pub mod plan;
mod template_cache;

use std::collections::BTreeSet;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use pbs_shared::JobMessage;
use tracing::{info, warn};

use crate::dead_letter::dead_letter;
use crate::dispatch::Dispatcher;
use crate::env::TriggerEnv;
use crate::job_table::{Inserted, JobTable};
use crate::template_table::TemplateTable;
use plan::{Body, Planned, parse_body, plan};
use template_cache::TemplateCache;

/// A failure worth retrying (DynamoDB or SQS unavailable, throttling).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(String);

pub struct Trigger {
    env: TriggerEnv,
    sqs: aws_sdk_sqs::Client,
    jobs: JobTable,
    templates: TemplateCache,
    dispatcher: Dispatcher,
}

impl Trigger {
    pub fn new(
        env: TriggerEnv,
        dynamo: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
    ) -> Self {
        let jobs = JobTable::new(dynamo.clone(), &env.jobs_table, env.job_ttl_days);
        Self {
            dispatcher: Dispatcher::new(sqs.clone(), jobs.clone(), &env.pool_queue_prefix),
            jobs,
            templates: TemplateCache::new(TemplateTable::new(dynamo, &env.templates_table)),
            env,
            sqs,
        }
    }

    /// Handles one batch; only records that failed transiently (or one of whose jobs could not
    /// be sent) are returned for retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let outcomes = crate::sqs_batch::map_records(event, |record| async move {
            self.handle_body(&record.body.unwrap_or_default())
                .await
                .map_err(|e| e.0)
        })
        .await;
        let mut failed = BTreeSet::new();
        let mut to_send: Vec<(String, JobMessage)> = Vec::new();
        for (id, outcome) in outcomes {
            match outcome {
                Ok(jobs) => to_send.extend(jobs.into_iter().map(|j| (id.clone(), j))),
                Err(e) => {
                    warn!(message_id = %id, error = %e, "record will be retried");
                    failed.insert(id);
                }
            }
        }
        let messages: Vec<&JobMessage> = to_send.iter().map(|(_, m)| m).collect();
        let answers = self.dispatcher.send_all(&messages).await;
        for ((id, m), answer) in to_send.iter().zip(answers) {
            if let Err(e) = answer {
                warn!(message_id = %id, job_id = %m.job_id, error = %e, "job not sent; its record will be retried");
                failed.insert(id.clone());
            }
        }
        crate::sqs_batch::retry_only(failed)
    }

    /// Records the jobs of one event body; returns those to send.
    async fn handle_body(&self, body: &str) -> Result<Vec<JobMessage>, Transient> {
        let objects = match parse_body(body) {
            Ok(Body::TestEvent) => {
                info!("s3:TestEvent acknowledged");
                return Ok(Vec::new());
            }
            Ok(Body::Objects(objects)) => objects,
            Err(bad) => {
                let reason = bad.to_string();
                warn!(reason = %reason, "unprocessable event body sent to the dead-letter queue");
                return dead_letter(&self.sqs, &self.env.dead_letter_queue_url, body, &reason)
                    .await
                    .map(|()| Vec::new())
                    .map_err(Transient);
            }
        };
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let templates = self
            .templates
            .current()
            .await
            .map_err(|e| Transient(e.to_string()))?;
        let now = Utc::now();
        let mut to_send = Vec::new();
        for object in &objects {
            let planned = plan(&templates, object, now);
            if planned.is_empty() {
                info!(bucket = %object.object.bucket, key = %object.object.key, "no template matches");
            }
            for job in planned {
                to_send.extend(self.record(job).await?);
            }
        }
        Ok(to_send)
    }

    /// Records a planned job; returns it when it is to be sent (new, or recorded before but never
    /// sent).
    async fn record(&self, job: Planned) -> Result<Option<JobMessage>, Transient> {
        let transient = |e: crate::job_table::JobTableError| Transient(e.to_string());
        match job {
            Planned::Reject(rejected) => {
                warn!(job_id = %rejected.job_id, template = %rejected.template.id, reason = %rejected.reason, "job rejected");
                self.jobs
                    .insert_rejected(&rejected, Utc::now())
                    .await
                    .map_err(transient)?;
                Ok(None)
            }
            Planned::Dispatch(message) => {
                match self.jobs.insert_queued(&message).await.map_err(transient)? {
                    Inserted::New | Inserted::Exists { dispatched: false } => {}
                    Inserted::Exists { dispatched: true } => {
                        info!(job_id = %message.job_id, "duplicate event: job already dispatched");
                        return Ok(None);
                    }
                }
                Ok(Some(*message))
            }
        }
    }
}
