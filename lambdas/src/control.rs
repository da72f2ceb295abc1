//! Executors' control queues: one per executor, named after its pool's work queue
//! (`<pool queue>-ctl-<executor id>`, see `control_queue_name`). The status function creates one
//! when it first hears an executor's heartbeat; the API sends cancel requests to it; the executor
//! polls it, outbound, while it runs jobs.

use aws_sdk_sqs::types::QueueAttributeName;
use pbs_shared::message::{ControlMessage, control_queue_name};
use pbs_shared::{ExecutorId, PoolName};

use crate::dispatch::Dispatcher;
use crate::store::items::describe_error;

/// A cancel request not taken within this long is dropped by SQS: the job has ended by then.
const RETENTION_SECONDS: &str = "3600";

/// The control queue name of `executor` in `pool`.
pub fn queue_name(pool_queue_prefix: &str, pool: &PoolName, executor: &ExecutorId) -> String {
    control_queue_name(&format!("{pool_queue_prefix}{pool}"), executor)
}

/// Creates the executor's control queue if it does not exist; returns its URL.
pub async fn ensure(
    sqs: &aws_sdk_sqs::Client,
    pool_queue_prefix: &str,
    pool: &PoolName,
    executor: &ExecutorId,
) -> Result<String, String> {
    let name = queue_name(pool_queue_prefix, pool, executor);
    let out = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            RETENTION_SECONDS,
        )
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .send()
        .await
        .map_err(|e| format!("creating control queue {name}: {}", describe_error(&e)))?;
    out.queue_url()
        .map(str::to_owned)
        .ok_or_else(|| format!("creating control queue {name}: no URL in the answer"))
}

/// Sends `message` to the control queue of `executor` in `pool`.
pub async fn send(
    sqs: &aws_sdk_sqs::Client,
    dispatcher: &Dispatcher,
    pool: &PoolName,
    executor: &ExecutorId,
    message: &ControlMessage,
) -> Result<(), String> {
    let name = queue_name(dispatcher.pool_queue_prefix(), pool, executor);
    let url = match sqs.get_queue_url().queue_name(&name).send().await {
        Ok(out) => out.queue_url().unwrap_or_default().to_owned(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_queue_does_not_exist()) =>
        {
            return Err(format!(
                "its control queue {name} does not exist yet (it is made on the executor's first heartbeat)"
            ));
        }
        Err(e) => return Err(describe_error(&e)),
    };
    post(sqs, &url, message).await
}

/// Puts `message` on the control queue at `url`.
pub async fn post(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    message: &ControlMessage,
) -> Result<(), String> {
    sqs.send_message()
        .queue_url(url)
        .message_body(serde_json::to_string(message).expect("control messages serialise"))
        .send()
        .await
        .map_err(|e| describe_error(&e))?;
    Ok(())
}
