//! The partial-batch-failure loop shared by the SQS-driven functions.

use std::future::Future;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;
use tracing::{Instrument, info_span, warn};

/// Records handled at once: each is a few DynamoDB and SQS requests, mostly waiting.
pub const CONCURRENCY: usize = 16;

/// Runs `handle` on the batch's records, up to [`CONCURRENCY`] at once (each handler's writes are
/// conditional, so their order does not matter); returns each record's message id and outcome,
/// in the order they finished.
pub async fn map_records<T, F, Fut>(event: SqsEvent, handle: F) -> Vec<(String, Result<T, String>)>
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let handle = &handle;
    futures_util::stream::iter(event.records)
        .map(|record| async move {
            let id = record.message_id.clone().unwrap_or_default();
            let span = info_span!("record", message_id = %id);
            (id, handle(record).instrument(span).await)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// The answer that has SQS retry the `failed` records alone and delete the others.
pub fn retry_only(failed: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in failed {
        response.add_failure(id);
    }
    response
}

/// Handles the records' bodies (see [`map_records`]); a record whose handler fails is reported
/// as a batch item failure, so SQS retries that record alone and the others are deleted.
pub async fn for_each_body<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    for_each_record(event, |record| handle(record.body.unwrap_or_default())).await
}

/// [`for_each_body`] for handlers that need the whole record (its queue, its SQS attributes).
pub async fn for_each_record<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let outcomes = map_records(event, handle).await;
    retry_only(outcomes.into_iter().filter_map(|(id, outcome)| {
        let e = outcome.err()?;
        warn!(message_id = %id, error = %e, "record will be retried");
        Some(id)
    }))
}

/// An SQS batch of `bodies` from the queue `queue`, message ids `m0`, `m1`, ... (as the event
/// source mapping delivers them), for the functions' unit tests.
#[cfg(test)]
pub fn test_event(queue: &str, bodies: &[&str]) -> SqsEvent {
    let records: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            serde_json::json!({
                "messageId": format!("m{i}"),
                "body": body,
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:000000000000:{queue}"),
                "attributes": {"SentTimestamp": "1795624260000"}, "messageAttributes": {}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

/// The message ids a batch answer has SQS retry.
#[cfg(test)]
pub fn retried(answer: &SqsBatchResponse) -> Vec<String> {
    answer
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}
