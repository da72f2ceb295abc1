//! The trigger function: S3 object events (through the EventsQueue) become jobs.
//!
//! Per SQS record: parse the S3 notification, match it against the templates and plan one job
//! per matching template (a job that can never run is recorded `failed` at once). The batch's
//! planned jobs of small objects for the same template and destination are then coalesced
//! into jobs with a file list ([`plan::coalesce`](pbs_shared::plan::coalesce)), each recorded in the jobs table under its
//! deterministic id together with a claim per event, so a duplicate event, however it is
//! batched, finds the job that holds it. New jobs go to their pools' work queues, ten to a
//! request, each marked dispatched once sent; a job recorded before but never sent (its
//! function died in between) is sent by whichever delivery of its events comes next. A body
//! that can never be processed goes to the dead-letter queue with its reason; a transient
//! failure is reported as a batch item failure so SQS retries those records alone.

pub mod body;
mod template_cache;

use std::collections::BTreeSet;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use futures_util::StreamExt;
use pbs_shared::{JobId, JobMessage};
use tracing::{info, warn};

use crate::dead_letter::dead_letter;
use crate::dispatch::Dispatcher;
use crate::env::TriggerEnv;
use crate::job_table::{EventInsert, Found, JobTable};
use crate::template_table::TemplateTable;
use body::{Body, parse_body};
use pbs_shared::plan::{self, Dispatch, Planned, plan};
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
    /// be recorded or sent) are returned for retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        // Records are handled concurrently; their jobs are coalesced in the batch's order.
        let position: std::collections::HashMap<String, usize> = event
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.message_id.clone().unwrap_or_default(), i))
            .collect();
        let mut outcomes = crate::sqs_batch::map_records(event, |record| async move {
            self.handle_body(&record.body.unwrap_or_default())
                .await
                .map_err(|e| e.0)
        })
        .await;
        outcomes.sort_by_key(|(id, _)| position.get(id).copied().unwrap_or(usize::MAX));
        let mut failed = BTreeSet::new();
        let mut planned = Vec::new();
        for (id, outcome) in outcomes {
            match outcome {
                Ok(jobs) => planned.extend(jobs.into_iter().map(|j| (id.clone(), j))),
                Err(e) => {
                    warn!(message_id = %id, error = %e, "record will be retried");
                    failed.insert(id);
                }
            }
        }
        let groups = plan::coalesce(planned);
        let recorded: Vec<_> = futures_util::stream::iter(groups)
            .map(|group| async move {
                let (ids, members): (BTreeSet<String>, Vec<JobMessage>) = group.into_iter().unzip();
                (ids, self.record_group(members).await)
            })
            .buffer_unordered(crate::sqs_batch::CONCURRENCY)
            .collect()
            .await;
        // Each job to send once, with the records it answers for.
        let mut to_send: Vec<(BTreeSet<String>, JobMessage)> = Vec::new();
        for (ids, outcome) in recorded {
            match outcome {
                Ok(jobs) => {
                    for job in jobs {
                        match to_send.iter_mut().find(|(_, m)| m.job_id == job.job_id) {
                            Some((theirs, _)) => theirs.extend(ids.iter().cloned()),
                            None => to_send.push((ids.clone(), job)),
                        }
                    }
                }
                Err(e) => {
                    warn!(records = ids.len(), error = %e.0, "records will be retried");
                    failed.extend(ids);
                }
            }
        }
        let messages: Vec<&JobMessage> = to_send.iter().map(|(_, m)| m).collect();
        let answers = self.dispatcher.send_all(&messages).await;
        for ((ids, m), answer) in to_send.iter().zip(answers) {
            if let Err(e) = answer {
                warn!(job_id = %m.job_id, records = ids.len(), error = %e, "job not sent; its records will be retried");
                failed.extend(ids.iter().cloned());
            }
        }
        crate::sqs_batch::retry_only(failed)
    }

    /// Plans the jobs of one event body, recording those that can never run; returns the others.
    async fn handle_body(&self, body: &str) -> Result<Vec<Dispatch>, Transient> {
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
        let mut to_record = Vec::new();
        for object in &objects {
            let planned = plan(&templates, object, now);
            if planned.is_empty() {
                info!(bucket = %object.object.bucket, key = %object.object.key, "no template matches");
            }
            for job in planned {
                match job {
                    Planned::Dispatch(d) => to_record.push(*d),
                    Planned::Reject(rejected) => {
                        warn!(job_id = %rejected.job_id, template = %rejected.template.id, reason = %rejected.reason, "job rejected");
                        self.jobs
                            .insert_rejected(&rejected, Utc::now())
                            .await
                            .map_err(|e| Transient(e.to_string()))?;
                    }
                }
            }
        }
        Ok(to_record)
    }

    /// Records the job of one group from [`plan::coalesce`]; returns the jobs to send: it when
    /// new, and any job recorded before but never sent that holds one of its events. Members
    /// whose events another job holds already leave the group, which is then recorded without
    /// them (under the id of the members left).
    async fn record_group(
        &self,
        mut members: Vec<JobMessage>,
    ) -> Result<Vec<JobMessage>, Transient> {
        let mut to_send = Vec::new();
        while !members.is_empty() {
            let job = plan::merge(&members.iter().collect::<Vec<_>>());
            let ids: Vec<&JobId> = members.iter().map(|m| &m.job_id).collect();
            let answer = self
                .jobs
                .insert_event_job(&job, &ids)
                .await
                .map_err(|e| Transient(e.to_string()))?;
            let claimed = match answer {
                EventInsert::New => {
                    if members.len() > 1 {
                        info!(job_id = %job.job_id, events = members.len(), "events coalesced into one job");
                    }
                    to_send.push(job);
                    break;
                }
                EventInsert::Found(found) => {
                    info!(job_id = %job.job_id, "duplicate event: job recorded before");
                    to_send.extend(unsent(found, &job));
                    break;
                }
                EventInsert::Claimed(claimed) => claimed,
            };
            let mut held = BTreeSet::new();
            for (i, found) in claimed {
                info!(job_id = %members[i].job_id, "duplicate event: another job holds it");
                to_send.extend(unsent(found, &members[i]));
                held.insert(i);
            }
            members = members
                .into_iter()
                .enumerate()
                .filter_map(|(i, m)| (!held.contains(&i)).then_some(m))
                .collect();
        }
        Ok(to_send)
    }
}

/// The job to send for an event found recorded: none if it was sent; the recorded job (or
/// `planned` itself) if it never was.
fn unsent(found: Found, planned: &JobMessage) -> Option<JobMessage> {
    match found {
        Found::Sent => None,
        Found::Unsent(Some(recorded)) => Some(*recorded),
        Found::Unsent(None) => Some(planned.clone()),
    }
}
