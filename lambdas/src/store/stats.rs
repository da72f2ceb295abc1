//! The stats table: files and bytes delivered, and jobs ended by outcome and error class, per
//! hour, for the whole stack (`scope` = `all`) and for each pool (`scope` = `pool#<pool>`). The
//! status function adds each job's end to both as it records it (one `UpdateItem` with `ADD` per
//! scope); the API reads an hour range with one `Query`, so a dashboard never scans the jobs.
//! Hours are kept eight days (TTL `expires_at`).

use chrono::{DateTime, Duration, DurationRound, Utc};
use pbs_shared::{ErrorClass, JobState, PoolName};
use serde_json::{Map, Value, json};

use crate::store::items::{Item, describe_error, get_n, get_s, n, s};

/// How long an hour is kept: the longest view (7 days) and a day more.
const KEEP_SECONDS: i64 = 8 * 86_400;
/// The scope of the whole stack's counts.
pub const ALL: &str = "all";

/// The scope of one pool's counts.
pub fn pool_scope(pool: &PoolName) -> String {
    format!("pool#{pool}")
}

/// The hour `at` falls in, as its key (`2026-11-30T14`).
pub fn hour_of(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H").to_string()
}

/// One job's end, as counted.
#[derive(Debug, Clone)]
pub struct Ended<'a> {
    pub pool: &'a PoolName,
    pub state: JobState,
    pub class: Option<ErrorClass>,
    pub files: u64,
    pub bytes: u64,
    pub at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct StatsTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl StatsTable {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Adds `e` to its hour, for the stack and for its pool.
    pub async fn add(&self, e: &Ended<'_>) -> Result<(), String> {
        let outcome = e.state.as_str();
        let class = match (e.state, e.class) {
            (JobState::Failed, Some(c)) => format!("failed_{}", c.as_str()),
            (JobState::Failed, None) => "failed_other".to_owned(),
            _ => String::new(),
        };
        for scope in [ALL.to_owned(), pool_scope(e.pool)] {
            let mut expr = "SET expires_at = :exp ADD files :f, bytes :b, #o :one".to_owned();
            let mut req = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("scope", s(&scope))
                .key("hour", s(hour_of(e.at)))
                .expression_attribute_names("#o", outcome)
                .expression_attribute_values(":exp", n(e.at.timestamp() + KEEP_SECONDS))
                .expression_attribute_values(":f", n(e.files))
                .expression_attribute_values(":b", n(e.bytes))
                .expression_attribute_values(":one", n(1));
            if !class.is_empty() {
                expr.push_str(", #c :one");
                req = req.expression_attribute_names("#c", &class);
            }
            req.update_expression(expr)
                .send()
                .await
                .map_err(|e| describe_error(&e))?;
        }
        Ok(())
    }

    /// Every hour of `scope` from `from` to `to` (inclusive), oldest first, hours without a job
    /// included as zeros.
    pub async fn hours(
        &self,
        scope: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Value>, String> {
        let mut items: Vec<Item> = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#s = :s AND #h BETWEEN :from AND :to")
                .expression_attribute_names("#s", "scope")
                .expression_attribute_names("#h", "hour")
                .expression_attribute_values(":s", s(scope))
                .expression_attribute_values(":from", s(hour_of(from)))
                .expression_attribute_values(":to", s(hour_of(to)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| describe_error(&e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(fill(&items, from, to))
    }
}

/// One view per hour from `from` to `to`, from the items found (zeros where none).
pub fn fill(items: &[Item], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Value> {
    let first = from.duration_trunc(Duration::hours(1)).unwrap_or(from);
    let mut out = Vec::new();
    let mut hour = first;
    while hour <= to {
        let key = hour_of(hour);
        let item = items
            .iter()
            .find(|i| get_s(i, "hour") == Some(key.as_str()));
        out.push(view(&key, item));
        hour += Duration::hours(1);
    }
    out
}

fn view(hour: &str, item: Option<&Item>) -> Value {
    let count = |name: &str| item.and_then(|i| get_n::<u64>(i, name)).unwrap_or(0);
    let mut by_class = Map::new();
    if let Some(item) = item {
        for (k, _) in item.iter().filter(|(k, _)| k.starts_with("failed_")) {
            let class = k.trim_start_matches("failed_");
            by_class.insert(class.to_owned(), json!(count(k)));
        }
    }
    json!({
        "hour": hour,
        "files": count("files"),
        "bytes": count("bytes"),
        "succeeded": count("succeeded"),
        "failed": count("failed"),
        "cancelled": count("cancelled"),
        "failed_by_class": by_class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hour_of_the_range_is_shown_and_counts_come_from_their_hour() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let item = Item::from([
            ("scope".to_owned(), s(ALL)),
            ("hour".to_owned(), s("2026-11-30T13")),
            ("files".to_owned(), n(3)),
            ("bytes".to_owned(), n(300)),
            ("succeeded".to_owned(), n(2)),
            ("failed".to_owned(), n(1)),
            ("failed_not_found".to_owned(), n(1)),
        ]);
        let hours = fill(
            &[item],
            at("2026-11-30T11:40:00Z"),
            at("2026-11-30T14:05:00Z"),
        );
        let keys: Vec<&str> = hours.iter().filter_map(|h| h["hour"].as_str()).collect();
        assert_eq!(
            keys,
            [
                "2026-11-30T11",
                "2026-11-30T12",
                "2026-11-30T13",
                "2026-11-30T14"
            ]
        );
        assert_eq!(hours[2]["files"], 3);
        assert_eq!(hours[2]["failed_by_class"]["not_found"], 1);
        assert_eq!(hours[1]["files"], 0);
        assert_eq!(hours[1]["failed_by_class"], json!({}));
    }
}
