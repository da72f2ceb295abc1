//! The jobs table: one item per job, written by the trigger (queued or rejected), moved forward
//! by the status Lambda with conditional updates, read by the API.
//!
//! Items carry `list_pk` = `"job"` and `created_sk` = `<created_at>#<job_id>` so the `ByCreated`
//! index lists jobs newest first.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use pbs_shared::message::JobStatus;
use pbs_shared::{ErrorClass, JobId, JobMessage, JobState};
use serde::Serialize;

use crate::store::items::{
    Item, Update, describe_error, get_bool, get_n, get_s, is_condition_failure, n, s,
};
use pbs_shared::plan::RejectedJob;

const LIST_PK: &str = "job";
pub const BY_CREATED_INDEX: &str = "ByCreated";
/// Jobs by the key of their first file (a folder transfer: its source folder), and the claims of
/// a coalesced job's other files by theirs: `list_pk`, `key_sk`.
pub const BY_KEY_INDEX: &str = "ByKey";
/// Jobs no executor has started, by pool and age: `waiting_pool` (set while the job is `queued`,
/// removed as it starts or ends, so the index holds only waiting jobs), `created_sk`.
pub const BY_WAITING_INDEX: &str = "ByWaiting";
const WAITING: &str = "waiting_pool";

#[derive(Debug, thiserror::Error)]
pub enum JobTableError {
    #[error("jobs table: {0}")]
    Dynamo(String),
    #[error("invalid page token")]
    BadPageToken,
}

fn dynamo_err<E, R>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> JobTableError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    JobTableError::Dynamo(describe_error(&e))
}

/// What a conditional insert found.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The job is new.
    New,
    /// The job was recorded before (a duplicate event); `dispatched` tells whether its message was
    /// already sent to the pool's queue.
    Exists { dispatched: bool },
}

/// A job found recorded already, from an event's point of view.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Its message is on the pool's queue: nothing more to do.
    Sent,
    /// Its message was never sent (the function recording it died before sending). `Some`: the
    /// job holding the event is another one than the caller asked about (a coalesced job), with
    /// its message as recorded; `None`: the job asked about, as the caller planned it.
    Unsent(Option<Box<JobMessage>>),
}

/// What recording an event-driven job found.
#[derive(Debug, Clone, PartialEq)]
pub enum EventInsert {
    /// Recorded now.
    New,
    /// This very job was recorded before.
    Found(Found),
    /// Nothing recorded: these members' events (index into the members given) belong to other
    /// jobs already.
    Claimed(Vec<(usize, Found)>),
}

/// A conditional update's answer: applied, or refused by its condition (stale).
fn applied<T, E, R>(
    res: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> Result<Applied, JobTableError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match res {
        Ok(_) => Ok(Applied::Moved),
        Err(e) if is_condition_failure(&e) => Ok(Applied::Stale),
        Err(e) => Err(dynamo_err(e)),
    }
}

/// Whether a status report moved a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Moved,
    /// The job is already at or past this state (a late or duplicate report).
    Stale,
}

#[derive(Clone)]
pub struct JobTable {
    client: Client,
    table: String,
    ttl: Duration,
}

impl JobTable {
    pub fn new(client: Client, table: impl Into<String>, ttl_days: i64) -> Self {
        Self {
            client,
            table: table.into(),
            ttl: Duration::days(ttl_days),
        }
    }

    /// Records a new job as `queued`, unless a job with this id exists.
    pub async fn insert_queued(&self, job: &JobMessage) -> Result<Inserted, JobTableError> {
        self.insert(queued_item(job, self.ttl)).await
    }

    /// Records an event-driven job as `queued`. `members` are the ids the job's events have on
    /// their own ([`pbs_shared::job::event_job_id`]): one, the job's own id, for a job of one
    /// event; several for a coalesced job, which is recorded together with one claim item per
    /// event (`claimed_by` = the job; not listed) in one transaction, so an event is in at most
    /// one job however its duplicates are batched. A coalesced job also keeps its whole message,
    /// so that a later delivery of any of its events can send it if it was never sent.
    pub async fn insert_event_job(
        &self,
        job: &JobMessage,
        members: &[&JobId],
    ) -> Result<EventInsert, JobTableError> {
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

        if let [only] = members
            && *only == &job.job_id
        {
            return Ok(
                match self.insert_or_read(queued_item(job, self.ttl)).await? {
                    None => EventInsert::New,
                    Some(existing) => EventInsert::Found(self.found(&existing, false).await?),
                },
            );
        }
        let puts = self.event_puts(job, members);
        let err = match self
            .client
            .transact_write_items()
            .set_transact_items(Some(puts))
            .send()
            .await
        {
            Ok(_) => return Ok(EventInsert::New),
            Err(e) => e,
        };
        let reasons = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                c.cancellation_reasons().to_vec()
            }
            _ => return Err(dynamo_err(err)),
        };
        self.insert_refused(job, members, &reasons).await
    }

    /// The job's item (with its message, for a later delivery to send) and one claim item per
    /// member event, each put only where nothing is yet.
    fn event_puts(
        &self,
        job: &JobMessage,
        members: &[&JobId],
    ) -> Vec<aws_sdk_dynamodb::types::TransactWriteItem> {
        use aws_sdk_dynamodb::types::{
            Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
        };
        let mut item = queued_item(job, self.ttl);
        // The message without its files: they are the item's `files_json` already, and every
        // byte of the item is billed again in each index that copies it and at each update.
        let bare = JobMessage {
            files: Vec::new(),
            ..job.clone()
        };
        item.insert(
            "message_json".into(),
            s(serde_json::to_string(&bare).expect("job messages serialise")),
        );
        let expires = item["expires_at"].clone();
        // Each event's file is found by its key: its claim is in the key index.
        let keys: Vec<Option<&str>> = if members.len() == job.files.len() {
            job.files.iter().map(|f| Some(f.key.as_str())).collect()
        } else {
            vec![None; members.len()]
        };
        let claims = members.iter().zip(keys).map(|(m, key)| {
            let mut claim = Item::from([
                ("job_id".into(), s(m.as_str())),
                ("claimed_by".into(), s(job.job_id.as_str())),
                ("expires_at".into(), expires.clone()),
            ]);
            if let Some(key) = key.filter(|_| *m != &job.job_id) {
                claim.insert("list_pk".into(), s(LIST_PK));
                claim.insert("key_sk".into(), s(key));
            }
            claim
        });
        std::iter::once(item)
            .chain(claims)
            .map(|item| {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(job_id)")
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .build()
                    .expect("table, item and condition are set");
                TransactWriteItem::builder().put(put).build()
            })
            .collect()
    }

    /// What a refused [`JobTable::insert_event_job`] transaction found, from its cancellation
    /// reasons (one per put: the job first, then each member's claim).
    async fn insert_refused(
        &self,
        job: &JobMessage,
        members: &[&JobId],
        reasons: &[aws_sdk_dynamodb::types::CancellationReason],
    ) -> Result<EventInsert, JobTableError> {
        let failed_check = |code: Option<&str>| code == Some("ConditionalCheckFailed");
        // Anything but a failed condition (a conflicting transaction, throttling) is transient.
        if let Some(other) = reasons
            .iter()
            .find(|r| !matches!(r.code(), None | Some("None")) && !failed_check(r.code()))
        {
            return Err(JobTableError::Dynamo(format!(
                "recording job {}: {} {}",
                job.job_id,
                other.code().unwrap_or_default(),
                other.message().unwrap_or_default()
            )));
        }
        let mut claimed = Vec::new();
        for (i, reason) in reasons.iter().enumerate() {
            if !failed_check(reason.code()) {
                continue;
            }
            let id = if i == 0 {
                job.job_id.as_str()
            } else {
                members[i - 1].as_str()
            };
            let existing = match reason.item() {
                Some(item) => item.clone(),
                None => match self.read_item(id).await? {
                    Some(item) => item,
                    // Gone since (its time to live ended): nothing holds the event any more.
                    None => continue,
                },
            };
            if i == 0 {
                return Ok(EventInsert::Found(self.found(&existing, false).await?));
            }
            claimed.push((i - 1, self.found(&existing, false).await?));
        }
        if claimed.is_empty() {
            return Err(JobTableError::Dynamo(format!(
                "recording job {}: transaction cancelled without a reason",
                job.job_id
            )));
        }
        Ok(EventInsert::Claimed(claimed))
    }

    /// What an existing item tells about the event it was looked up for: a claim is followed to
    /// the coalesced job holding the event (`other`).
    async fn found(&self, item: &Item, other: bool) -> Result<Found, JobTableError> {
        if let Some(owner) = get_s(item, "claimed_by") {
            return match self.read_item(owner).await? {
                Some(owner) => Box::pin(self.found(&owner, true)).await,
                None => Ok(Found::Sent),
            };
        }
        if get_bool(item, "dispatched").unwrap_or(true) {
            return Ok(Found::Sent);
        }
        match get_s(item, "message_json") {
            Some(json) => recorded_message(json, get_s(item, "files_json"))
                .map(|m| Found::Unsent(Some(Box::new(m))))
                .map_err(|e| {
                    JobTableError::Dynamo(format!(
                        "job {}: recorded message unreadable: {e}",
                        get_s(item, "job_id").unwrap_or_default()
                    ))
                }),
            None if other => Err(JobTableError::Dynamo(format!(
                "job {} holds an event but has no recorded message",
                get_s(item, "job_id").unwrap_or_default()
            ))),
            None => Ok(Found::Unsent(None)),
        }
    }

    async fn read_item(&self, job_id: &str) -> Result<Option<Item>, JobTableError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("job_id", s(job_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_err)?;
        Ok(out.item)
    }

    /// Records a job that can never run as `failed`, with the reason.
    pub async fn insert_rejected(
        &self,
        job: &RejectedJob,
        now: DateTime<Utc>,
    ) -> Result<Inserted, JobTableError> {
        let mut item = base_item(&job.job_id, now, self.ttl);
        let files = [serde_json::json!({"key": job.object.key, "size": job.object.size})];
        item.extend([
            ("state".into(), s(JobState::Failed.as_str())),
            ("state_rank".into(), n(JobState::Failed.rank())),
            ("attempt".into(), n(0)),
            ("template_id".into(), s(job.template.id.as_str())),
            ("pool".into(), s(job.template.destination.pool.as_str())),
            (
                "destination".into(),
                s(job.template.destination.endpoint.as_str()),
            ),
            ("source_bucket".into(), s(&job.object.bucket)),
            (
                "files_json".into(),
                s(serde_json::Value::from(files.to_vec()).to_string()),
            ),
            ("file_count".into(), n(1)),
            ("total_bytes".into(), n(job.object.size)),
            ("dispatched".into(), AttributeValue::Bool(true)),
            ("error_class".into(), s(ErrorClass::BadRequest.as_str())),
            ("error".into(), s(&job.reason)),
        ]);
        self.insert(item).await
    }

    async fn insert(&self, item: Item) -> Result<Inserted, JobTableError> {
        Ok(match self.insert_or_read(item).await? {
            None => Inserted::New,
            Some(existing) => Inserted::Exists {
                dispatched: get_bool(&existing, "dispatched").unwrap_or(true),
            },
        })
    }

    /// Puts `item` unless its id exists; `Some`: the item found instead.
    async fn insert_or_read(&self, item: Item) -> Result<Option<Item>, JobTableError> {
        let job_id = get_s(&item, "job_id").unwrap_or_default().to_owned();
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(job_id)")
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(None),
            Err(e) if is_condition_failure(&e) => {
                // The item may come with the error; read it when it does not.
                let with_error = match e.as_service_error() {
                    Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c)) => c.item.clone(),
                    _ => None,
                };
                match with_error {
                    Some(item) => Ok(Some(item)),
                    None => Ok(Some(self.read_item(&job_id).await?.unwrap_or_default())),
                }
            }
            Err(e) => Err(dynamo_err(e)),
        }
    }

    /// Notes that the job's message is on its pool's queue.
    pub async fn mark_dispatched(&self, job_id: &JobId) -> Result<(), JobTableError> {
        let req = self.update(job_id);
        Update::new()
            .set("dispatched", AttributeValue::Bool(true))
            .name("job_id")
            .apply(req, Some("attribute_exists(#job_id)"))
            .send()
            .await
            .map_err(dynamo_err)?;
        Ok(())
    }

    /// Fails a queued job that could not be dispatched (e.g. its pool has no queue).
    pub async fn fail_undispatchable(
        &self,
        job_id: &JobId,
        class: ErrorClass,
        reason: &str,
    ) -> Result<(), JobTableError> {
        let req = self.update(job_id);
        let res = Update::new()
            .set("state", s(JobState::Failed.as_str()))
            .set("state_rank", n(JobState::Failed.rank()))
            .set("error_class", s(class.as_str()))
            .set("error", s(reason))
            .set("dispatched", AttributeValue::Bool(true))
            .set("updated_at", s(Utc::now().to_rfc3339()))
            .remove(WAITING)
            .name("job_id")
            .apply(
                req,
                Some("attribute_exists(#job_id) AND #state_rank < :state_rank"),
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(dynamo_err(e)),
        }
    }

    fn update(
        &self,
        job_id: &JobId,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(job_id.as_str()))
    }

    /// Applies an executor's report if it moves the job forward (see `JobState::may_become`) and
    /// its sender may move it: the job is of the report's pool (`st.pool`, which the caller took
    /// from the queue the report came through), and an end within the recorded attempt comes
    /// from the executor holding that attempt. A report for an unknown job creates it only when
    /// an executor makes such jobs itself (watch, schedule). When the report moves the job, the
    /// job as it now is comes back with the answer (no second read); when it does not, the job
    /// as it is (`None`: no such job), so the caller can tell a stale report from a refused one.
    pub async fn apply_status(
        &self,
        st: &JobStatus,
    ) -> Result<(Applied, Option<JobView>), JobTableError> {
        let at = st.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // A job made on an executor is listed by its creation time, not its first report's.
        let created = st.job.as_ref().map_or(at.clone(), |j| {
            j.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        });
        let mut update = Update::new()
            .set("state", s(st.state.as_str()))
            .set("state_rank", n(st.state.rank()))
            .set("attempt", n(st.attempt))
            .set("updated_at", s(&at))
            .set("executor_id", s(st.executor_id.as_str()))
            .set_if_absent("pool", s(st.pool.as_str()))
            .set_if_absent("list_pk", s(LIST_PK))
            .set_if_absent("created_at", s(&created))
            .set_if_absent("created_sk", s(format!("{created}#{}", st.job_id)))
            .set_if_absent("expires_at", n((st.at + self.ttl).timestamp()))
            .remove(WAITING)
            .name("job_id")
            .value("terminal", n(JobState::Succeeded.rank()));
        update = with_summary(update, st);
        update = with_result(update, st, &at);
        let condition = status_condition(st);
        let res = update
            .apply(self.update(&st.job_id), Some(&condition))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => Ok((Applied::Moved, out.attributes().map(JobView::from_item))),
            Err(e) if is_condition_failure(&e) => Ok((
                Applied::Stale,
                self.read_item(st.job_id.as_str())
                    .await?
                    .map(|item| JobView::from_item(&item)),
            )),
            Err(e) => Err(dynamo_err(e)),
        }
    }

    /// The job `job_id`; for the id an event would have had alone, the coalesced job holding it.
    pub async fn get(&self, job_id: &str) -> Result<Option<JobView>, JobTableError> {
        let Some(item) = self.read_item(job_id).await? else {
            return Ok(None);
        };
        let item = match get_s(&item, "claimed_by") {
            Some(owner) => match self.read_item(owner).await? {
                Some(owner) => owner,
                None => return Ok(None),
            },
            None => item,
        };
        Ok(Some(JobView::from_item(&item)))
    }

    /// One page of jobs matching `filter`, newest first, and the token of the next page. Pages
    /// may hold fewer than `limit` jobs when a filter is set (DynamoDB filters after reading).
    pub async fn list(
        &self,
        filter: &JobFilter,
        limit: i32,
        page_token: Option<&str>,
    ) -> Result<(Vec<JobView>, Option<String>), JobTableError> {
        let mut start = page_token.map(decode_page_token).transpose()?;
        let mut jobs = Vec::new();
        // Read a few index pages at most, so a narrow filter still answers quickly.
        for _ in 0..MAX_READS_PER_PAGE {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":p", s(LIST_PK))
                .limit(limit - jobs.len() as i32)
                .set_exclusive_start_key(start.take());
            let mut key = "list_pk = :p".to_owned();
            let mut conditions = Vec::new();
            let (since, until) = (&filter.since, &filter.until);
            if let Some(prefix) = &filter.key_prefix {
                // In key order; the times become filters.
                key.push_str(" AND begins_with(key_sk, :prefix)");
                query = query
                    .index_name(BY_KEY_INDEX)
                    .expression_attribute_values(":prefix", s(prefix));
                if let Some(a) = since {
                    conditions.push("created_at >= :since".to_owned());
                    query = query.expression_attribute_values(":since", s(a));
                }
                if let Some(b) = until {
                    conditions.push("created_at <= :until".to_owned());
                    query = query.expression_attribute_values(":until", s(format!("{b}~")));
                }
            } else {
                query = query.index_name(BY_CREATED_INDEX).scan_index_forward(false);
                match (since, until) {
                    (Some(a), Some(b)) => {
                        key.push_str(" AND created_sk BETWEEN :since AND :until");
                        query = query
                            .expression_attribute_values(":since", s(a))
                            .expression_attribute_values(":until", s(format!("{b}~")));
                    }
                    (Some(a), None) => {
                        key.push_str(" AND created_sk >= :since");
                        query = query.expression_attribute_values(":since", s(a));
                    }
                    (None, Some(b)) => {
                        key.push_str(" AND created_sk <= :until");
                        query = query.expression_attribute_values(":until", s(format!("{b}~")));
                    }
                    (None, None) => {}
                }
            }
            let by_key = filter.key_prefix.is_some();
            for (attr, value) in [
                ("state", &filter.state),
                ("template_id", &filter.template),
                ("pool", &filter.pool),
            ] {
                // By key, a coalesced job's other files are claims without these: the job they
                // are in is filtered once read.
                if let Some(v) = value.as_ref().filter(|_| !by_key) {
                    conditions.push(format!("#{attr} = :{attr}"));
                    query = query
                        .expression_attribute_names(format!("#{attr}"), attr)
                        .expression_attribute_values(format!(":{attr}"), s(v));
                }
            }
            if !conditions.is_empty() {
                query = query.filter_expression(conditions.join(" AND "));
            }
            let out = query
                .key_condition_expression(key)
                .send()
                .await
                .map_err(dynamo_err)?;
            for item in out.items() {
                let job = match get_s(item, "claimed_by") {
                    // A coalesced job's other file: the job it is in.
                    Some(owner) => match self.read_item(owner).await? {
                        Some(job) => JobView::from_item(&job),
                        None => continue,
                    },
                    None => JobView::from_item(item),
                };
                let wanted = [
                    (&filter.state, Some(&job.state)),
                    (&filter.template, job.template_id.as_ref()),
                    (&filter.pool, job.pool.as_ref()),
                ]
                .iter()
                .all(|(want, has)| want.is_none() || want.as_ref() == *has);
                if wanted && !jobs.iter().any(|j: &JobView| j.job_id == job.job_id) {
                    jobs.push(job);
                }
            }
            start = out.last_evaluated_key().filter(|k| !k.is_empty()).cloned();
            if start.is_none() || jobs.len() as i32 >= limit {
                break;
            }
        }
        Ok((jobs, start.as_ref().map(encode_page_token)))
    }

    /// The oldest job of `pool` that no executor has started: its id and creation time.
    pub async fn oldest_waiting(
        &self,
        pool: &str,
    ) -> Result<Option<(String, String)>, JobTableError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_WAITING_INDEX)
            .key_condition_expression("#w = :pool")
            .expression_attribute_names("#w", WAITING)
            .expression_attribute_values(":pool", s(pool))
            .scan_index_forward(true)
            .limit(1)
            .send()
            .await
            .map_err(dynamo_err)?;
        // The index holds keys only: the creation time is the sort key's part before `#`.
        Ok(out.items().first().and_then(|item| {
            let created = get_s(item, "created_sk")?.split_once('#')?.0;
            Some((get_s(item, "job_id")?.to_owned(), created.to_owned()))
        }))
    }

    /// Cancels a job that no executor has started: `queued` becomes `cancelled`. Returns the
    /// job's state when it was not `queued` (and nothing changed).
    pub async fn cancel_queued(
        &self,
        job_id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, JobTableError> {
        let when = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(job_id))
            .update_expression(
                "SET #state = :cancelled, state_rank = :rank, updated_at = :at, \
                 cancel_requested_at = :at, cancel_requested_by = :by, #error = :why \
                 REMOVE waiting_pool",
            )
            .condition_expression("#state = :queued")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":cancelled", s(JobState::Cancelled.as_str()))
            .expression_attribute_values(":rank", n(JobState::Cancelled.rank()))
            .expression_attribute_values(":queued", s(JobState::Queued.as_str()))
            .expression_attribute_values(":at", s(&when))
            .expression_attribute_values(":by", s(by))
            .expression_attribute_values(":why", s(format!("cancelled by {by} before it started")))
            .send()
            .await;
        match res {
            Ok(_) => Ok(None),
            Err(e) if is_condition_failure(&e) => Ok(Some(
                self.get(job_id).await?.map(|j| j.state).unwrap_or_default(),
            )),
            Err(e) => Err(dynamo_err(e)),
        }
    }

    /// Notes that a cancel of a running job was asked for (the executor reports `cancelled`).
    pub async fn note_cancel_request(
        &self,
        job_id: &JobId,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), JobTableError> {
        let update = Update::new()
            .set(
                "cancel_requested_at",
                s(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            )
            .set("cancel_requested_by", s(by));
        self.set_fields(job_id, update).await
    }

    /// Sets fields of a job's item, whatever its state.
    pub(crate) async fn set_fields(
        &self,
        job_id: &JobId,
        update: Update,
    ) -> Result<(), JobTableError> {
        update
            .apply(self.update(job_id), None)
            .send()
            .await
            .map_err(dynamo_err)?;
        Ok(())
    }

    /// Records who made a job by hand, and which job it retries.
    pub async fn note_origin(
        &self,
        job_id: &JobId,
        created_by: &str,
        retry_of: Option<&str>,
    ) -> Result<(), JobTableError> {
        let mut update = Update::new()
            .set("origin", s("manual"))
            .set("created_by", s(created_by));
        if let Some(r) = retry_of {
            update = update.set("retry_of", s(r));
        }
        self.set_fields(job_id, update).await
    }

    /// Links a chain step to the job before it (on the new job) and to the job after it (on the
    /// job before).
    pub async fn link_chain(&self, parent: &JobId, child: &JobId) -> Result<(), JobTableError> {
        self.set_fields(child, Update::new().set("parent_job", s(parent.as_str())))
            .await?;
        self.set_fields(parent, Update::new().set("next_job", s(child.as_str())))
            .await
    }

    /// Records where a transfer between pools delivers once its first step has staged the files.
    pub async fn note_relay(
        &self,
        job: &JobId,
        relay: &pbs_shared::transfer::RelayTo,
    ) -> Result<(), JobTableError> {
        let json = serde_json::to_string(relay).expect("relays serialise");
        self.set_fields(job, Update::new().set("relay_json", s(json)))
            .await
    }

    /// Records why a succeeded job's next step could not start.
    pub async fn note_chain_error(&self, job: &JobId, reason: &str) -> Result<(), JobTableError> {
        self.set_fields(job, Update::new().set("chain_error", s(reason)))
            .await
    }

    /// Records the outcome so far of a job's notification number `index` (a JSON document, see
    /// [`NotificationView`]).
    pub async fn record_notification(
        &self,
        job: &JobId,
        index: usize,
        outcome: &NotificationView,
    ) -> Result<(), JobTableError> {
        let json = serde_json::to_string(outcome).expect("notification outcomes serialise");
        self.set_fields(job, Update::new().set(&format!("notify_{index}"), s(json)))
            .await
    }

    /// Notes that what follows a job's end (notifications, next step, staging clean-up) was done.
    pub async fn mark_followed_up(&self, job: &JobId) -> Result<(), JobTableError> {
        self.set_fields(
            job,
            Update::new().set("followed_up", AttributeValue::Bool(true)),
        )
        .await
    }

    /// Records an executor's progress figures on a running job (same attempt, still running).
    pub async fn apply_progress(
        &self,
        p: &pbs_shared::message::JobProgress,
    ) -> Result<Applied, JobTableError> {
        let mut update = Update::new()
            .set("progress_bytes", n(p.bytes))
            .set("progress_total_bytes", n(p.total_bytes))
            .set("progress_files_done", n(p.files_done))
            .set("progress_files_total", n(p.files_total))
            .set("progress_rate", n(p.bytes_per_second))
            .set(
                "progress_at",
                s(p.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            )
            .value("running", s(JobState::Running.as_str()))
            .value("attempt", n(p.attempt))
            .value("pool", s(p.pool.as_str()))
            .value("executor", s(p.executor_id.as_str()))
            .name("state")
            .name("attempt")
            .name("pool")
            .name("executor_id");
        if let Some(eta) = p.eta_seconds {
            update = update.set("progress_eta_seconds", n(eta));
        }
        applied(
            update
                .apply(
                    self.update(&p.job_id),
                    Some(
                        "#state = :running AND #attempt = :attempt AND #pool = :pool \
                         AND #executor_id = :executor",
                    ),
                )
                .send()
                .await,
        )
    }
}

/// When a report may move a job (the names and values bound by [`JobTable::apply_status`]).
/// Forward only, as `JobState::may_become`: nothing replaces a terminal state; within an attempt
/// the rank must rise; a later attempt may restart `running`. Only the job's own pool moves it,
/// and an end within the recorded attempt only from the executor that holds it.
fn status_condition(st: &JobStatus) -> String {
    let holder = if st.state.is_terminal() {
        " AND (#attempt < :attempt OR #executor_id = :executor_id)"
    } else {
        ""
    };
    let existing = format!(
        "(#pool = :pool AND (attribute_not_exists(#state_rank) OR \
         (#state_rank < :terminal AND (#attempt < :attempt OR \
         (#attempt = :attempt AND #state_rank < :state_rank)){holder})))"
    );
    if st.job.is_some() && pbs_shared::job::made_on_executor(&st.job_id) {
        format!("attribute_not_exists(#job_id) OR {existing}")
    } else {
        format!("attribute_exists(#job_id) AND {existing}")
    }
}

/// The attributes every job item has: its id, list keys, times and expiry.
fn base_item(job_id: &JobId, created_at: DateTime<Utc>, ttl: Duration) -> Item {
    let created = created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Item::from([
        ("job_id".into(), s(job_id.as_str())),
        ("list_pk".into(), s(LIST_PK)),
        ("created_sk".into(), s(format!("{created}#{job_id}"))),
        ("created_at".into(), s(&created)),
        ("updated_at".into(), s(&created)),
        ("expires_at".into(), n((created_at + ttl).timestamp())),
    ])
}

/// A coalesced job's recorded message: `message_json` holds it without its files (an item
/// written before that holds them too), `files_json` holds the files.
fn recorded_message(message: &str, files: Option<&str>) -> Result<JobMessage, serde_json::Error> {
    let mut job: JobMessage = serde_json::from_str(message)?;
    if job.files.is_empty()
        && let Some(files) = files
    {
        job.files = serde_json::from_str(files)?;
    }
    Ok(job)
}

/// The item of `job` recorded `queued`, kept for `ttl`.
pub(crate) fn queued_item(job: &JobMessage, ttl: Duration) -> Item {
    let mut item = base_item(&job.job_id, job.created_at, ttl);
    let source = match &job.source {
        pbs_shared::JobSource::S3 { bucket } => ("source_bucket", bucket.as_str()),
        pbs_shared::JobSource::Endpoint { endpoint } => ("source_endpoint", endpoint.as_str()),
    };
    item.extend([
        ("state".into(), s(JobState::Queued.as_str())),
        ("state_rank".into(), n(JobState::Queued.rank())),
        ("attempt".into(), n(0)),
        ("template_id".into(), s(job.template_id.as_str())),
        ("pool".into(), s(job.pool.as_str())),
        ("destination".into(), s(job.destination.as_str())),
        (source.0.into(), s(source.1)),
        (
            "files_json".into(),
            s(serde_json::to_string(&job.files).expect("files serialise")),
        ),
        ("file_count".into(), n(job.files.len())),
        ("total_bytes".into(), n(job.total_bytes())),
        ("dispatched".into(), AttributeValue::Bool(false)),
        (WAITING.into(), s(job.pool.as_str())),
    ]);
    if let Some(folder) = &job.folder {
        item.insert(
            "transfer_json".into(),
            s(serde_json::to_string(folder).expect("transfers serialise")),
        );
    }
    let first = job
        .files
        .first()
        .map(|f| f.key.as_str())
        .or(job.folder.as_ref().map(|f| f.folder.as_str()));
    if let Some(key) = first {
        item.insert("key_sk".into(), s(key));
    }
    item
}

/// Which jobs a list shows; every field set must match.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub state: Option<String>,
    pub template: Option<String>,
    pub pool: Option<String>,
    /// RFC 3339 times (UTC, `Z`), compared with the creation time.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Jobs with a file whose key starts with this (served by the key index, in key order).
    pub key_prefix: Option<String>,
}

/// Index pages read at most for one page of a filtered list.
const MAX_READS_PER_PAGE: usize = 5;

/// Page tokens are the index key of the last item, as URL-safe base64 JSON.
fn encode_page_token(key: &Item) -> String {
    let map: serde_json::Map<String, serde_json::Value> = key
        .iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|s| (k.clone(), s.clone().into())))
        .collect();
    URL_SAFE_NO_PAD.encode(serde_json::Value::Object(map).to_string())
}

fn decode_page_token(token: &str) -> Result<Item, JobTableError> {
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| JobTableError::BadPageToken)?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw).map_err(|_| JobTableError::BadPageToken)?;
    let mut item = Item::new();
    for key in ["job_id", "list_pk", "created_sk"] {
        let v = map
            .get(key)
            .and_then(|v| v.as_str())
            .ok_or(JobTableError::BadPageToken)?;
        item.insert(key.into(), s(v));
    }
    Ok(item)
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub state: String,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_endpoint: Option<String>,
    /// `watch` or `schedule` for jobs made by an executor's rule, `manual` for jobs made through
    /// the API; absent for S3-event jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_rule: Option<String>,
    /// The key of its first file (a folder transfer: its source folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_key: Option<String>,
    /// Why the executor that ran it did (its own rule, the pool's rule lease, a schedule run it
    /// took from the pool's queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_why: Option<String>,
    pub files: Vec<serde_json::Value>,
    pub file_count: u64,
    pub total_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// When the current attempt started on an executor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The latest progress an executor sent for the running attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
    /// Where the attempt's rclone log is (the API serves it at `/api/v1/jobs/{id}/log`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_key: Option<String>,
    /// Where the delivery report is (served at `/api/v1/jobs/{id}/report`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested_by: Option<String>,
    /// A folder transfer's folder, filters, destination folder and mode (its files are listed
    /// when it runs: see its result and report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<serde_json::Value>,
    /// A transfer between pools: where its second step delivers what this one staged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<pbs_shared::transfer::RelayTo>,
    /// Who made a manual job or retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The job a retry repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// Chains: the step before this job, the step after it, and why no step followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_error: Option<String>,
    /// Each notification of the job's end, by its place in the template's `options.notify`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationView>,
    /// Whether notifications, next step and staging clean-up were done after its end.
    #[serde(skip)]
    pub followed_up: bool,
}

/// How one notification of a job's end went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NotificationView {
    pub index: usize,
    /// The webhook URL (without query) or `sns:<topic ARN>`.
    pub target: String,
    /// `delivered`, `retrying` (another attempt is scheduled) or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProgressView {
    pub bytes: u64,
    pub total_bytes: u64,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_per_second: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    pub files: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Each file's outcome and verified hash.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<serde_json::Value>,
}

/// Largest per-file result list kept on a job item.
const MAX_DELIVERED_JSON: usize = 256 * 1024;

impl JobView {
    pub(crate) fn from_item(item: &Item) -> Self {
        let opt = |name: &str| get_s(item, name).map(str::to_owned);
        let files: Vec<serde_json::Value> = get_s(item, "files_json")
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let result = get_n::<u64>(item, "result_bytes").map(|bytes| ResultView {
            files: get_n(item, "result_files").unwrap_or(0),
            bytes,
            duration_ms: get_n(item, "duration_ms").unwrap_or(0),
            delivered: get_s(item, "delivered_json")
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default(),
        });
        Self {
            job_id: opt("job_id").unwrap_or_default(),
            state: opt("state").unwrap_or_default(),
            attempt: get_n(item, "attempt").unwrap_or(0),
            template_id: opt("template_id"),
            pool: opt("pool"),
            destination: opt("destination"),
            source_bucket: opt("source_bucket"),
            source_endpoint: opt("source_endpoint"),
            origin: opt("origin"),
            origin_rule: opt("origin_rule"),
            origin_why: opt("origin_why"),
            first_key: opt("key_sk"),
            file_count: get_n(item, "file_count").unwrap_or(files.len() as u64),
            files,
            total_bytes: get_n(item, "total_bytes").unwrap_or(0),
            executor_id: opt("executor_id"),
            created_at: opt("created_at"),
            updated_at: opt("updated_at"),
            started_at: opt("started_at"),
            result,
            error_class: opt("error_class"),
            error: opt("error"),
            note: opt("note"),
            progress: get_n::<u64>(item, "progress_bytes").map(|bytes| ProgressView {
                bytes,
                total_bytes: get_n(item, "progress_total_bytes").unwrap_or(0),
                files_done: get_n(item, "progress_files_done").unwrap_or(0),
                files_total: get_n(item, "progress_files_total").unwrap_or(0),
                bytes_per_second: get_n(item, "progress_rate").unwrap_or(0),
                eta_seconds: get_n(item, "progress_eta_seconds"),
                at: opt("progress_at").unwrap_or_default(),
            }),
            log_key: opt("log_key"),
            report_key: opt("report_key"),
            cancel_requested_at: opt("cancel_requested_at"),
            cancel_requested_by: opt("cancel_requested_by"),
            transfer: get_s(item, "transfer_json").and_then(|j| serde_json::from_str(j).ok()),
            relay: get_s(item, "relay_json").and_then(|j| serde_json::from_str(j).ok()),
            created_by: opt("created_by"),
            retry_of: opt("retry_of"),
            parent_job: opt("parent_job"),
            next_job: opt("next_job"),
            chain_error: opt("chain_error"),
            notifications: {
                let mut all: Vec<NotificationView> = item
                    .iter()
                    .filter(|(k, _)| k.starts_with("notify_"))
                    .filter_map(|(_, v)| v.as_s().ok())
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect();
                all.sort_by_key(|n| n.index);
                all
            },
            followed_up: get_bool(item, "followed_up").unwrap_or(false),
        }
    }
}

/// A job made on the executor (watch, schedule) is first heard of in its reports: what its
/// summary tells is recorded unless known.
fn with_summary(mut update: Update, st: &JobStatus) -> Update {
    if let Some(job) = &st.job {
        update = update
            .set_if_absent("template_id", s(job.template_id.as_str()))
            .set_if_absent("destination", s(job.destination.as_str()))
            .set_if_absent("origin", s(job.origin.kind.as_str()))
            .set_if_absent("origin_rule", s(&job.origin.rule))
            .set_if_absent("file_count", n(job.file_count))
            .set_if_absent("total_bytes", n(job.total_bytes));
        update = match &job.source {
            pbs_shared::JobSource::S3 { bucket } => {
                update.set_if_absent("source_bucket", s(bucket))
            }
            pbs_shared::JobSource::Endpoint { endpoint } => {
                update.set_if_absent("source_endpoint", s(endpoint.as_str()))
            }
        };
        if let Some(why) = &job.origin.why {
            update = update.set("origin_why", s(why));
        }
        if let Some(key) = &job.first_key {
            update = update.set_if_absent("key_sk", s(key));
        }
    }
    update
}

/// When the attempt started, and the outcome of a report that carries one.
fn with_result(mut update: Update, st: &JobStatus, at: &str) -> Update {
    if st.state == JobState::Running {
        // When the current attempt started (PUT → start latency, progress views).
        update = update.set("started_at", s(at));
    } else if let Some(r) = &st.result {
        // Reports may be applied in any order: an outcome that arrives before its `running`
        // report (which is then stale) still tells when the attempt started.
        let began = st.at - chrono::Duration::milliseconds(r.duration_ms as i64);
        update = update.set_if_absent(
            "started_at",
            s(began.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
    if let Some(r) = &st.result {
        update = update
            .set("result_files", n(r.files))
            .set("result_bytes", n(r.bytes))
            .set("duration_ms", n(r.duration_ms));
        if let Some(class) = r.error_class {
            update = update.set("error_class", s(class.as_str()));
        }
        if let Some(err) = &r.error {
            update = update.set("error", s(err));
        }
        if let Some(note) = &r.note {
            update = update.set("note", s(note));
        }
        if let Some(key) = &r.log_key {
            update = update.set("log_key", s(key));
        }
        if let Some(key) = &r.report_key {
            update = update.set("report_key", s(key));
        }
        // Per-file outcomes and hashes, unless they would crowd the item's 400 KB limit (the
        // delivery report in S3 holds every file).
        if !r.delivered.is_empty() {
            let json = serde_json::to_string(&r.delivered).expect("results serialise");
            if json.len() <= MAX_DELIVERED_JSON {
                update = update.set("delivered_json", s(json));
            }
        }
    }
    update
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coalesced_job_s_message_is_kept_once_without_its_files_and_read_back_whole() {
        let job: JobMessage =
            serde_json::from_str(include_str!("../../../tests/fixtures/job-message.v1.json"))
                .unwrap();
        assert!(!job.files.is_empty());
        let files = serde_json::to_string(&job.files).unwrap();
        let bare = serde_json::to_string(&JobMessage {
            files: Vec::new(),
            ..job.clone()
        })
        .unwrap();
        assert!(!bare.contains(job.files[0].key.as_str()), "{bare}");
        let back = recorded_message(&bare, Some(&files)).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&job).unwrap()
        );
        // An item recorded with the whole message reads as it did.
        let whole = serde_json::to_string(&job).unwrap();
        let back = recorded_message(&whole, Some("[]")).unwrap();
        assert_eq!(back.files.len(), job.files.len());
        assert!(recorded_message(&bare, Some("not json")).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_bad_ones_are_refused() {
        let key = Item::from([
            ("job_id".into(), s("ev-1")),
            ("list_pk".into(), s("job")),
            ("created_sk".into(), s("2026-01-01T00:00:00.000Z#ev-1")),
        ]);
        let token = encode_page_token(&key);
        assert_eq!(decode_page_token(&token).unwrap(), key);
        assert!(matches!(
            decode_page_token("!!"),
            Err(JobTableError::BadPageToken)
        ));
        let partial = URL_SAFE_NO_PAD.encode(r#"{"job_id":"x"}"#);
        assert!(matches!(
            decode_page_token(&partial),
            Err(JobTableError::BadPageToken)
        ));
    }
}
