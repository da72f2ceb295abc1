//! The trigger function: S3 object events (through the EventsQueue) become jobs.
//!
//! Per SQS record: parse the S3 notification, match it against the templates, record each job in
//! the jobs table with a conditional put under its deterministic id, and send it to its pool's
//! work queue. A duplicate event finds the job already recorded and sends nothing new (unless the
//! first delivery died between recording and sending). A body that can never be processed goes to
//! the dead-letter queue with its reason; a transient failure is reported as a batch item failure
//! so SQS retries that record alone.

pub mod plan;
mod template_cache;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
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

    /// Handles one batch; only records that failed transiently are returned for retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        crate::sqs_batch::for_each_body(event, |body| async move {
            self.handle_body(&body).await.map_err(|e| e.0)
        })
        .await
    }

    async fn handle_body(&self, body: &str) -> Result<(), Transient> {
        let objects = match parse_body(body) {
            Ok(Body::TestEvent) => {
                info!("s3:TestEvent acknowledged");
                return Ok(());
            }
            Ok(Body::Objects(objects)) => objects,
            Err(bad) => {
                let reason = bad.to_string();
                warn!(reason = %reason, "unprocessable event body sent to the dead-letter queue");
                return dead_letter(&self.sqs, &self.env.dead_letter_queue_url, body, &reason)
                    .await
                    .map_err(Transient);
            }
        };
        if objects.is_empty() {
            return Ok(());
        }
        let templates = self
            .templates
            .current()
            .await
            .map_err(|e| Transient(e.to_string()))?;
        let now = Utc::now();
        for object in &objects {
            let planned = plan(&templates, object, now);
            if planned.is_empty() {
                info!(bucket = %object.object.bucket, key = %object.object.key, "no template matches");
            }
            for job in planned {
                self.record(job).await?;
            }
        }
        Ok(())
    }

    async fn record(&self, job: Planned) -> Result<(), Transient> {
        let transient = |e: crate::job_table::JobTableError| Transient(e.to_string());
        match job {
            Planned::Reject(rejected) => {
                warn!(job_id = %rejected.job_id, template = %rejected.template.id, reason = %rejected.reason, "job rejected");
                self.jobs
                    .insert_rejected(&rejected, Utc::now())
                    .await
                    .map_err(transient)?;
                Ok(())
            }
            Planned::Dispatch(message) => {
                match self.jobs.insert_queued(&message).await.map_err(transient)? {
                    Inserted::New | Inserted::Exists { dispatched: false } => {}
                    Inserted::Exists { dispatched: true } => {
                        info!(job_id = %message.job_id, "duplicate event: job already dispatched");
                        return Ok(());
                    }
                }
                self.dispatcher.send(&message).await.map_err(Transient)?;
                Ok(())
            }
        }
    }
}
