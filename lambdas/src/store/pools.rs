//! The pools table: what makes a pool act once (see `pbs_shared::pool_lease`), one partition per
//! pool (`pool`), one item per thing (`item`):
//!
//! - `lease`: the executor holding the pool's rule lease (`holder`), since when (`since`), the
//!   SQS time of its last heartbeat (`holder_sent`, ms) and until when it holds (`holder_until`,
//!   ms), written by the status function only, with conditions, so two heartbeats handled at once
//!   never both take it;
//! - `tick#<template>`: the last scheduled time of a schedule rule that was run or skipped
//!   (`last`), moved forward with a condition so each time ticks once;
//! - `delivered#<ms>#<job>`: a watch job the pool delivered, kept a day (TTL `expires_at`), so an
//!   executor that takes the lease over does not take the same file again.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use pbs_shared::{ExecutorId, JobId, PoolName, TemplateId};

use crate::store::items::{Item, describe_error, get_n, get_s, is_condition_failure, n, s};

const LEASE: &str = "lease";
const TICK: &str = "tick#";
const DELIVERED: &str = "delivered#";
/// How long a delivered watch job is remembered.
const DELIVERED_KEEP_SECONDS: i64 = 86_400;
/// Most delivered jobs one lease answer carries (an SQS message holds 256 KiB).
pub const DELIVERED_MAX: i32 = 2_000;

/// The lease as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: ExecutorId,
    pub since: DateTime<Utc>,
    /// SQS time of the holder's last heartbeat, ms.
    pub sent_ms: i64,
    pub until_ms: i64,
}

#[derive(Clone)]
pub struct PoolTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn key(pool: &PoolName, item: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pool".to_owned(), s(pool.as_str())),
        ("item".to_owned(), s(item)),
    ])
}

fn lease_of(item: &Item) -> Option<Lease> {
    Some(Lease {
        holder: ExecutorId::parse(get_s(item, "holder")?).ok()?,
        since: get_s(item, "since")?.parse().ok()?,
        sent_ms: get_n(item, "holder_sent")?,
        until_ms: get_n(item, "holder_until")?,
    })
}

impl PoolTable {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The pool's lease as recorded (`None`: never taken).
    pub async fn lease(&self, pool: &PoolName) -> Result<Option<Lease>, String> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pool, LEASE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        Ok(out.item().and_then(lease_of))
    }

    /// `executor`'s heartbeat taken by SQS at `sent_ms` asks for the lease for `lease_ms`: the
    /// holder renews it (a heartbeat older than its last changes nothing), anyone takes it when
    /// nobody holds it or the holder's lease ran out before this heartbeat was sent. The lease
    /// as it stands afterwards.
    pub async fn claim(
        &self,
        pool: &PoolName,
        executor: &ExecutorId,
        sent_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, String> {
        let current = self.lease(pool).await?;
        let until = n(sent_ms + lease_ms);
        let renew = match &current {
            Some(l) if &l.holder == executor => true,
            Some(l) if l.until_ms >= sent_ms => return Ok(current),
            _ => false,
        };
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pool, LEASE)))
            .expression_attribute_values(":me", s(executor.as_str()))
            .expression_attribute_values(":sent", n(sent_ms))
            .expression_attribute_values(":until", until)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        let req = if renew {
            req.update_expression("SET holder_sent = :sent, holder_until = :until")
                .condition_expression("holder = :me AND holder_sent <= :sent")
        } else {
            let since = DateTime::from_timestamp_millis(sent_ms).unwrap_or_else(Utc::now);
            req.update_expression(
                "SET holder = :me, holder_sent = :sent, holder_until = :until, since = :since",
            )
            .condition_expression("attribute_not_exists(holder) OR holder_until < :sent")
            .expression_attribute_values(":since", s(since.to_rfc3339()))
        };
        let out = req.send().await;
        match out {
            Ok(out) => Ok(out.attributes().and_then(lease_of)),
            // Another heartbeat moved the lease meanwhile: it stands as that one left it.
            Err(e) if is_condition_failure(&e) => self.lease(pool).await,
            Err(e) => Err(describe_error(&e)),
        }
    }

    /// Remembers that the pool delivered watch job `job` at `at`.
    pub async fn record_delivered(
        &self,
        pool: &PoolName,
        job: &JobId,
        at: DateTime<Utc>,
    ) -> Result<(), String> {
        let item = format!("{DELIVERED}{:013}#{job}", at.timestamp_millis().max(0));
        let mut fields = key(pool, &item);
        fields.insert("job_id".into(), s(job.as_str()));
        fields.insert(
            "expires_at".into(),
            n(at.timestamp() + DELIVERED_KEEP_SECONDS),
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(fields))
            .send()
            .await
            .map(drop)
            .map_err(|e| describe_error(&e))
    }

    /// Watch jobs the pool delivered since `since`, oldest first, at most [`DELIVERED_MAX`].
    pub async fn delivered_since(
        &self,
        pool: &PoolName,
        since: DateTime<Utc>,
    ) -> Result<Vec<JobId>, String> {
        let from = format!("{DELIVERED}{:013}", since.timestamp_millis().max(0));
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pool = :pool AND #item BETWEEN :from AND :to")
            .expression_attribute_names("#pool", "pool")
            .expression_attribute_names("#item", "item")
            .expression_attribute_values(":pool", s(pool.as_str()))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(format!("{DELIVERED}~")))
            .limit(DELIVERED_MAX)
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| JobId::parse(get_s(i, "job_id")?).ok())
            .collect())
    }

    /// The last scheduled time handled of each of the pool's schedules.
    pub async fn ticks(
        &self,
        pool: &PoolName,
    ) -> Result<HashMap<TemplateId, DateTime<Utc>>, String> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pool = :pool AND begins_with(#item, :tick)")
            .expression_attribute_names("#pool", "pool")
            .expression_attribute_names("#item", "item")
            .expression_attribute_values(":pool", s(pool.as_str()))
            .expression_attribute_values(":tick", s(TICK))
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| {
                let id = get_s(i, "item")?.strip_prefix(TICK)?;
                Some((TemplateId::parse(id).ok()?, get_s(i, "last")?.parse().ok()?))
            })
            .collect())
    }

    /// Moves a schedule's last handled time from `old` (`None`: never ticked) to `new`; `false`
    /// when another heartbeat moved it first (that one runs the time).
    pub async fn move_tick(
        &self,
        pool: &PoolName,
        template: &TemplateId,
        old: Option<DateTime<Utc>>,
        new: DateTime<Utc>,
    ) -> Result<bool, String> {
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pool, &format!("{TICK}{template}"))))
            .update_expression("SET #last = :new")
            .expression_attribute_names("#last", "last")
            .expression_attribute_values(":new", s(new.to_rfc3339()));
        let req = match old {
            Some(old) => req
                .condition_expression("#last = :old")
                .expression_attribute_values(":old", s(old.to_rfc3339())),
            None => req.condition_expression("attribute_not_exists(#last)"),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(describe_error(&e)),
        }
    }
}
