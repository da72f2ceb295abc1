//! Sends a message that can never be processed to a dead-letter queue, with the reason attached
//! as the `pbs-error` message attribute, so an operator sees why and nothing blocks the queue.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;

/// Message attribute that carries the reason a message was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "pbs-error";

/// SQS attribute values are limited to 256 KiB with the body; reasons are kept short.
const MAX_REASON: usize = 1000;

pub async fn dead_letter(
    sqs: &Client,
    queue_url: &str,
    body: &str,
    reason: &str,
) -> Result<(), String> {
    let mut reason = reason.to_owned();
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    let attr = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(reason)
        .build()
        .map_err(|e| e.to_string())?;
    // An empty body is not allowed by SQS; keep the evidence readable.
    let body = if body.is_empty() {
        "<empty body>"
    } else {
        body
    };
    sqs.send_message()
        .queue_url(queue_url)
        .message_body(body)
        .message_attributes(REASON_ATTRIBUTE, attr)
        .send()
        .await
        .map_err(|e| crate::store::items::describe_error(&e))?;
    Ok(())
}
