//! The partial-batch-failure loop shared by the SQS-driven functions.

use std::future::Future;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use tracing::warn;

/// Handles each record's body in turn; a record whose handler fails is reported as a batch item
/// failure, so SQS retries that record alone and the others are deleted.
pub async fn for_each_body<F, Fut>(event: SqsEvent, mut handle: F) -> SqsBatchResponse
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.unwrap_or_default();
        if let Err(e) = handle(record.body.unwrap_or_default()).await {
            warn!(message_id = %id, error = %e, "record will be retried");
            response.add_failure(id);
        }
    }
    response
}
