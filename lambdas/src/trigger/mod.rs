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
mod stack;
mod template_cache;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use pbs_shared::plan::{self, Dispatch, Planned, RejectedJob, plan};
use pbs_shared::{JobId, JobMessage, TemplateSet};
use tracing::{Instrument, info, info_span, warn};

use crate::store::jobs::{EventInsert, Found};
use body::{Body, parse_body};
pub use stack::StackStore;

/// A failure worth retrying (DynamoDB or SQS unavailable, throttling).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(String);

/// What the trigger needs from the stack, as small capabilities: [`StackStore`] serves them from
/// DynamoDB and SQS; the unit tests below from memory. `Err` is always transient.
pub trait TriggerStore: Send + Sync {
    /// The enabled templates in force now.
    fn templates(&self) -> impl Future<Output = Result<Arc<TemplateSet>, String>> + Send;
    /// Records a job that can never run, `failed` with its reason.
    fn reject(
        &self,
        job: &RejectedJob,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Records an event job and a claim for each of its `events`, all or nothing.
    fn record(
        &self,
        job: &JobMessage,
        events: &[&JobId],
    ) -> impl Future<Output = Result<EventInsert, String>> + Send;
    /// Sends recorded jobs to their pools' queues and marks them dispatched; one answer each.
    fn send(&self, jobs: &[&JobMessage]) -> impl Future<Output = Vec<Result<(), String>>> + Send;
    /// Puts a body that can never be processed on the dead-letter queue, with the reason.
    fn dead_letter(
        &self,
        body: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

pub struct Trigger<S> {
    store: S,
}

impl Trigger<StackStore> {
    /// The trigger of the deployed stack.
    pub fn new(
        env: crate::env::TriggerEnv,
        dynamo: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
    ) -> Self {
        Self::with_store(StackStore::new(env, dynamo, sqs))
    }
}

impl<S: TriggerStore> Trigger<S> {
    pub fn with_store(store: S) -> Self {
        Self { store }
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
        // The templates are read once per batch (one GetItem of their generation), by the first
        // record that names an object, and shared by the rest.
        let templates = tokio::sync::OnceCell::new();
        let templates = &templates;
        let mut outcomes = crate::sqs_batch::map_records(event, |record| async move {
            self.handle_body(&record.body.unwrap_or_default(), templates)
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
                let first = &members[0];
                let span = info_span!("job", template = %first.template_id, pool = %first.pool, events = members.len());
                (ids, self.record_group(members).instrument(span).await)
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
        let answers = self.store.send(&messages).await;
        for ((ids, m), answer) in to_send.iter().zip(answers) {
            if let Err(e) = answer {
                warn!(job_id = %m.job_id, records = ids.len(), error = %e, "job not sent; its records will be retried");
                failed.extend(ids.iter().cloned());
            }
        }
        crate::sqs_batch::retry_only(failed)
    }

    /// Plans the jobs of one event body, recording those that can never run; returns the others.
    async fn handle_body(
        &self,
        body: &str,
        templates: &tokio::sync::OnceCell<Result<Arc<TemplateSet>, String>>,
    ) -> Result<Vec<Dispatch>, Transient> {
        let objects = match parse_body(body) {
            Ok(Body::TestEvent) => {
                info!("s3:TestEvent acknowledged");
                return Ok(Vec::new());
            }
            Ok(Body::Objects(objects)) => objects,
            Err(bad) => {
                let reason = bad.to_string();
                warn!(reason = %reason, "unprocessable event body sent to the dead-letter queue");
                return self
                    .store
                    .dead_letter(body, &reason)
                    .await
                    .map(|()| Vec::new())
                    .map_err(Transient);
            }
        };
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let templates = templates
            .get_or_init(|| self.store.templates())
            .await
            .clone()
            .map_err(Transient)?;
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
                        self.store
                            .reject(&rejected, Utc::now())
                            .await
                            .map_err(Transient)?;
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
            let answer = self.store.record(&job, &ids).await.map_err(Transient)?;
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

#[cfg(test)]
mod tests {
    //! The handler through [`TriggerStore`], with the emulator's S3 event fixtures: what reaches
    //! the pools' queues, what is recorded, what goes to the dead-letter queue, what is retried.

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use pbs_shared::Template;

    use super::*;
    use crate::sqs_batch::retried;

    const PUT: &str = include_str!("../../../tests/fixtures/s3-event-put.json");
    const TEST_EVENT: &str = include_str!("../../../tests/fixtures/s3-test-event.json");

    /// The jobs table, the pools' queues and the dead-letter queue, in memory, with the
    /// recording semantics of the jobs table (a job, and a claim per event, all or nothing).
    #[derive(Default)]
    struct Memory {
        templates: Arc<TemplateSet>,
        /// Recorded jobs, and whether each was sent.
        jobs: Mutex<HashMap<JobId, (JobMessage, bool)>>,
        /// Event id → the job holding it.
        claims: Mutex<HashMap<JobId, JobId>>,
        queued: Mutex<Vec<JobMessage>>,
        rejected: Mutex<Vec<RejectedJob>>,
        dead: Mutex<Vec<(String, String)>>,
        /// Sends (then records) that fail before the next one succeeds.
        failing_sends: AtomicU32,
        failing_records: AtomicU32,
        /// How many times the templates were read.
        template_reads: AtomicU32,
    }

    impl Memory {
        fn with(template: serde_json::Value) -> Self {
            let t: Template = serde_json::from_value(template).unwrap();
            Self {
                templates: Arc::new(TemplateSet::compile(vec![t]).0),
                ..Default::default()
            }
        }

        fn found(&self, job_id: &JobId, other: bool) -> Found {
            let jobs = self.jobs.lock().unwrap();
            match jobs.get(job_id) {
                Some((_, true)) | None => Found::Sent,
                Some((job, false)) if other => Found::Unsent(Some(Box::new(job.clone()))),
                Some((_, false)) => Found::Unsent(None),
            }
        }
    }

    fn fails(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    impl TriggerStore for Memory {
        async fn templates(&self) -> Result<Arc<TemplateSet>, String> {
            self.template_reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.templates.clone())
        }

        async fn reject(&self, job: &RejectedJob, _at: DateTime<Utc>) -> Result<(), String> {
            self.rejected.lock().unwrap().push(job.clone());
            Ok(())
        }

        async fn record(&self, job: &JobMessage, events: &[&JobId]) -> Result<EventInsert, String> {
            if fails(&self.failing_records) {
                return Err("DynamoDB is throttling".into());
            }
            if self.jobs.lock().unwrap().contains_key(&job.job_id) {
                return Ok(EventInsert::Found(self.found(&job.job_id, false)));
            }
            let holders: Vec<(usize, JobId)> = {
                let claims = self.claims.lock().unwrap();
                events
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| Some((i, claims.get(*e)?.clone())))
                    .collect()
            };
            if !holders.is_empty() {
                let claimed = holders
                    .into_iter()
                    .map(|(i, holder)| (i, self.found(&holder, true)))
                    .collect();
                return Ok(EventInsert::Claimed(claimed));
            }
            let mut claims = self.claims.lock().unwrap();
            for e in events {
                claims.insert((*e).clone(), job.job_id.clone());
            }
            let mut jobs = self.jobs.lock().unwrap();
            jobs.insert(job.job_id.clone(), (job.clone(), false));
            Ok(EventInsert::New)
        }

        async fn send(&self, jobs: &[&JobMessage]) -> Vec<Result<(), String>> {
            jobs.iter()
                .map(|job| {
                    if fails(&self.failing_sends) {
                        return Err("SQS is unavailable".into());
                    }
                    self.queued.lock().unwrap().push((*job).clone());
                    if let Some(entry) = self.jobs.lock().unwrap().get_mut(&job.job_id) {
                        entry.1 = true;
                    }
                    Ok(())
                })
                .collect()
        }

        async fn dead_letter(&self, body: &str, reason: &str) -> Result<(), String> {
            let entry = (body.to_owned(), reason.to_owned());
            self.dead.lock().unwrap().push(entry);
            Ok(())
        }
    }

    fn template(path: &str) -> serde_json::Value {
        serde_json::json!({
            "id": "media-in",
            "trigger": {"type": "s3", "bucket": "pbs-source", "key_glob": "incoming/**"},
            "destination": {"pool": "default", "endpoint": "local-disk", "path": path}
        })
    }

    fn batch(bodies: &[&str]) -> SqsEvent {
        crate::sqs_batch::test_event("pbs-events", bodies)
    }

    /// The fixture's event for another key, size and sequencer.
    fn put(key: &str, size: u64, sequencer: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(PUT).unwrap();
        v["Records"][0]["s3"]["object"]["key"] = key.into();
        v["Records"][0]["s3"]["object"]["size"] = size.into();
        v["Records"][0]["s3"]["object"]["sequencer"] = sequencer.into();
        v.to_string()
    }

    #[tokio::test]
    async fn an_object_event_becomes_one_job_on_its_pool_queue() {
        let trigger = Trigger::with_store(Memory::with(template("out/{key}")));
        let answer = trigger.handle(batch(&[PUT])).await;
        assert_eq!(retried(&answer), Vec::<String>::new());
        let queued = trigger.store.queued.lock().unwrap().clone();
        assert_eq!(queued.len(), 1, "{queued:?}");
        let job = &queued[0];
        assert_eq!(job.pool.as_str(), "default");
        assert_eq!(job.destination.as_str(), "local-disk");
        assert_eq!(job.files.len(), 1);
        assert_eq!(job.files[0].key, "incoming/a b+c%.txt/été.txt");
        assert_eq!(
            job.files[0].dest_path.as_str(),
            "out/incoming/a b+c%.txt/été.txt"
        );
        assert!(job.job_id.as_str().starts_with("ev-"), "{}", job.job_id);
    }

    #[tokio::test]
    async fn a_batch_reads_the_templates_once_and_a_batch_without_objects_not_at_all() {
        let trigger = Trigger::with_store(Memory::with(template("{key}")));
        let events: Vec<String> = (0..10)
            .map(|i| put(&format!("incoming/{i}.txt"), 3, &format!("{i:02}")))
            .collect();
        let bodies: Vec<&str> = events.iter().map(String::as_str).collect();
        let answer = trigger.handle(batch(&bodies)).await;
        assert!(retried(&answer).is_empty());
        assert_eq!(trigger.store.template_reads.load(Ordering::SeqCst), 1);
        trigger.handle(batch(&[TEST_EVENT])).await;
        assert_eq!(trigger.store.template_reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_duplicate_event_sends_nothing_more_however_it_is_batched() {
        let trigger = Trigger::with_store(Memory::with(template("{key}")));
        let first = trigger.handle(batch(&[PUT, PUT])).await;
        let again = trigger.handle(batch(&[PUT])).await;
        assert!(retried(&first).is_empty() && retried(&again).is_empty());
        assert_eq!(trigger.store.queued.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn small_objects_of_one_batch_share_a_job_and_a_redelivery_finds_it() {
        let trigger = Trigger::with_store(Memory::with(template("{key}")));
        let (a, b) = (
            put("incoming/a.txt", 3, "01"),
            put("incoming/b.txt", 4, "02"),
        );
        let answer = trigger.handle(batch(&[&a, &b])).await;
        assert!(retried(&answer).is_empty());
        let queued = trigger.store.queued.lock().unwrap().clone();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(
            queued[0].job_id.as_str().starts_with("co-"),
            "{}",
            queued[0].job_id
        );
        let keys: Vec<&str> = queued[0].files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["incoming/a.txt", "incoming/b.txt"]);
        // One of its events again, alone: its claim leads to the job, which was sent.
        trigger.handle(batch(&[&b])).await;
        assert_eq!(trigger.store.queued.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_job_recorded_but_never_sent_is_sent_by_the_next_delivery() {
        let store = Memory::with(template("{key}"));
        store.failing_sends.store(1, Ordering::SeqCst);
        let trigger = Trigger::with_store(store);
        let first = trigger.handle(batch(&[PUT])).await;
        assert_eq!(retried(&first), ["m0"]);
        assert!(trigger.store.queued.lock().unwrap().is_empty());
        let again = trigger.handle(batch(&[PUT])).await;
        assert!(retried(&again).is_empty());
        assert_eq!(trigger.store.queued.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_store_failure_retries_only_its_records() {
        let store = Memory::with(template("{key}"));
        store.failing_records.store(1, Ordering::SeqCst);
        let trigger = Trigger::with_store(store);
        let big = put("incoming/big.mov", 1 << 30, "03");
        let answer = trigger.handle(batch(&[PUT, &big])).await;
        // Each object is its own job (one is big): one recording fails, the other is sent.
        assert_eq!(retried(&answer).len(), 1, "{answer:?}");
        assert_eq!(trigger.store.queued.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unprocessable_bodies_go_to_the_dead_letter_queue_with_their_reason() {
        let trigger = Trigger::with_store(Memory::with(template("{key}")));
        let answer = trigger
            .handle(batch(&["not json", r#"{"Message": "hello"}"#, TEST_EVENT]))
            .await;
        assert!(retried(&answer).is_empty());
        let dead = trigger.store.dead.lock().unwrap().clone();
        let reasons: Vec<&str> = dead.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(dead.len(), 2, "{dead:?}");
        assert!(
            reasons.iter().any(|r| r.starts_with("body is not JSON")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("not an S3 event notification")),
            "{reasons:?}"
        );
        assert!(trigger.store.queued.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_job_whose_path_would_escape_is_recorded_failed_and_never_sent() {
        let trigger = Trigger::with_store(Memory::with(template("{key}")));
        let escaping = put("incoming/../../etc/passwd", 5, "04");
        let answer = trigger.handle(batch(&[&escaping])).await;
        assert!(retried(&answer).is_empty());
        assert!(trigger.store.queued.lock().unwrap().is_empty());
        let rejected = trigger.store.rejected.lock().unwrap().clone();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert!(rejected[0].reason.contains(".."), "{}", rejected[0].reason);
    }
}
