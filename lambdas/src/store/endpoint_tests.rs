//! The endpoint tests table: one item per test an admin asked for (`POST
//! /api/v1/pools/{pool}/endpoints/{endpoint}/test`), written `queued` by the api function and
//! completed by the status function with what the executor that ran it reported. Items expire a
//! day after the request (DynamoDB TTL on `expires_at`).

use chrono::{DateTime, Utc};
use pbs_shared::message::{EndpointTestRequest, EndpointTestResult};
use serde_json::{Value, json};

use crate::store::items::{Item, Update, describe_error, get_n, get_s, is_condition_failure, n, s};

/// How long a test's item is kept.
const KEEP_SECONDS: i64 = 86_400;

#[derive(Clone)]
pub struct EndpointTests {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl EndpointTests {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Records `request` as `queued`.
    pub async fn create(&self, request: &EndpointTestRequest) -> Result<(), String> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(queued_item(request)))
            .condition_expression("attribute_not_exists(test_id)")
            .send()
            .await
            .map(drop)
            .map_err(|e| describe_error(&e))
    }

    /// The test `id` as the API shows it, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<Value>, String> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("test_id", s(id))
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        Ok(out.item().map(view))
    }

    /// Completes the queued test `result` names, when it was asked of the reporting pool for
    /// that endpoint; `false` when there is no such queued test (already completed, another
    /// pool's, unknown).
    pub async fn complete(&self, result: &EndpointTestResult) -> Result<bool, String> {
        let update = completion(result)
            .name("pool")
            .name("endpoint")
            .name("state")
            .value("pool", s(result.pool.as_str()))
            .value("endpoint", s(result.endpoint.as_str()))
            .value("queued", s("queued"));
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("test_id", s(&result.test_id));
        let condition = "attribute_exists(test_id) AND #pool = :pool AND #endpoint = :endpoint AND #state = :queued";
        match update.apply(req, Some(condition)).send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(describe_error(&e)),
        }
    }
}

/// The item of a new test.
pub fn queued_item(request: &EndpointTestRequest) -> Item {
    Item::from([
        ("test_id".into(), s(&request.test_id)),
        ("pool".into(), s(request.pool.as_str())),
        ("endpoint".into(), s(request.endpoint.as_str())),
        ("requested_by".into(), s(&request.requested_by)),
        ("requested_at".into(), s(rfc3339(request.at))),
        ("state".into(), s("queued")),
        (
            "expires_at".into(),
            n(request.at.timestamp() + KEEP_SECONDS),
        ),
    ])
}

/// The update that records `result`.
pub fn completion(result: &EndpointTestResult) -> Update {
    let mut update = Update::new()
        .set("state", s(if result.ok { "passed" } else { "failed" }))
        .set("executor_id", s(result.executor_id.as_str()))
        .set("location", s(&result.location))
        .set("elapsed_ms", n(result.elapsed_ms))
        .set("tested_at", s(rfc3339(result.at)));
    for (attr, value) in [
        ("step", &result.step),
        ("problem", &result.problem),
        ("message", &result.message),
        ("hint", &result.hint),
    ] {
        if let Some(v) = value {
            update = update.set(attr, s(v));
        }
    }
    update
}

/// An item as the API shows it.
pub fn view(item: &Item) -> Value {
    let text = |k: &str| get_s(item, k).map(str::to_owned);
    json!({
        "test_id": text("test_id"),
        "pool": text("pool"),
        "endpoint": text("endpoint"),
        "state": text("state"),
        "requested_by": text("requested_by"),
        "requested_at": text("requested_at"),
        "executor_id": text("executor_id"),
        "location": text("location"),
        "step": text("step"),
        "problem": text("problem"),
        "message": text("message"),
        "hint": text("hint"),
        "elapsed_ms": get_n::<u64>(item, "elapsed_ms"),
        "tested_at": text("tested_at"),
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
