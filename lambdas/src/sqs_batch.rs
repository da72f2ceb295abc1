//! The partial-batch-failure loop shared by the SQS-driven functions.

use std::future::Future;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures_util::StreamExt;
use tracing::warn;

/// Records handled at once: each is a few DynamoDB and SQS requests, mostly waiting.
pub const CONCURRENCY: usize = 16;

/// Handles the records' bodies, up to [`CONCURRENCY`] at once (each handler's writes are
/// conditional, so their order does not matter); a record whose handler fails is reported as a
/// batch item failure, so SQS retries that record alone and the others are deleted.
pub async fn for_each_body<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let handle = &handle;
    let mut outcomes = futures_util::stream::iter(event.records)
        .map(|record| async move {
            let id = record.message_id.unwrap_or_default();
            (id, handle(record.body.unwrap_or_default()).await)
        })
        .buffer_unordered(CONCURRENCY);
    let mut response = SqsBatchResponse::default();
    while let Some((id, outcome)) = outcomes.next().await {
        if let Err(e) = outcome {
            warn!(message_id = %id, error = %e, "record will be retried");
            response.add_failure(id);
        }
    }
    response
}
