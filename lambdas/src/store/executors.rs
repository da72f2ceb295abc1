//! Executors as the cloud sees them: the executors table, one item per executor, kept by the
//! status function from job reports and heartbeats; and the rule that says which are offline.

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::store::items::{describe_error, get_n, get_s};

/// The heartbeat interval assumed for an executor that has not sent one (older versions).
pub const DEFAULT_HEARTBEAT_SECONDS: i64 = 60;
/// Intervals of silence after which an executor is offline.
pub const MISSED_HEARTBEATS: i64 = 3;

/// One executor's record and whether it is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutorView {
    pub executor_id: String,
    pub pool: Option<String>,
    pub version: Option<String>,
    pub last_seen: Option<String>,
    pub heartbeat_seconds: i64,
    pub running_jobs: Option<i64>,
    /// Seconds since the executor was last heard from.
    pub silent_seconds: Option<i64>,
    pub online: bool,
    /// What its last heartbeat published: endpoint names, types and `cloud` settings.
    pub endpoints: Vec<pbs_shared::message::OfferedEndpoint>,
}

impl ExecutorView {
    /// The view of an executors-table item at `now_ms` (Unix milliseconds).
    pub fn from_item(
        item: &std::collections::HashMap<String, AttributeValue>,
        now_ms: i64,
    ) -> Self {
        let heartbeat_seconds = get_n::<i64>(item, "heartbeat_seconds")
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_HEARTBEAT_SECONDS);
        let silent_ms = get_n::<i64>(item, "last_seen_epoch_ms").map(|seen| (now_ms - seen).max(0));
        Self {
            executor_id: get_s(item, "executor_id").unwrap_or_default().to_owned(),
            pool: get_s(item, "pool").map(str::to_owned),
            version: get_s(item, "version").map(str::to_owned),
            last_seen: get_s(item, "last_seen").map(str::to_owned),
            heartbeat_seconds,
            running_jobs: get_n(item, "running_jobs"),
            silent_seconds: silent_ms.map(|ms| ms / 1000),
            online: silent_ms.is_some_and(|ms| ms <= MISSED_HEARTBEATS * heartbeat_seconds * 1000),
            endpoints: get_s(item, "endpoints")
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default(),
        }
    }
}

/// Every executor in the table, as seen at `now_ms`.
pub async fn list(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    now_ms: i64,
) -> Result<Vec<ExecutorView>, String> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = dynamo
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        out.extend(
            page.items()
                .iter()
                .map(|i| ExecutorView::from_item(i, now_ms)),
        );
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    out.sort_by(|a, b| a.executor_id.cmp(&b.executor_id));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::items::{n, s};

    fn item(
        seen_ms: Option<i64>,
        beat: Option<i64>,
    ) -> std::collections::HashMap<String, AttributeValue> {
        let mut i = std::collections::HashMap::from([("executor_id".to_owned(), s("bay-1"))]);
        if let Some(ms) = seen_ms {
            i.insert("last_seen_epoch_ms".into(), n(ms));
        }
        if let Some(b) = beat {
            i.insert("heartbeat_seconds".into(), n(b));
        }
        i
    }

    #[test]
    fn offline_after_three_silent_intervals() {
        let now = 1_000_000_000;
        let at = |silent_s: i64, beat| {
            ExecutorView::from_item(&item(Some(now - silent_s * 1000), beat), now)
        };
        assert!(at(30, Some(10)).online);
        assert!(!at(31, Some(10)).online);
        assert_eq!(at(31, Some(10)).silent_seconds, Some(31));
        // No heartbeat recorded: the default interval applies.
        assert!(at(180, None).online);
        assert!(!at(181, None).online);
        // Never seen at all: offline.
        assert!(!ExecutorView::from_item(&item(None, Some(10)), now).online);
    }
}
