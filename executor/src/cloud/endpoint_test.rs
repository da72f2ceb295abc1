//! An admin's endpoint test, taken from the pool's work queue: the same probe as `pbs-executor
//! endpoints test` (write, list, read and delete a probe file), its outcome with the fix sent on
//! this executor's status queue. An endpoint the site keeps from the cloud (`cloud = "none"`) is
//! not probed: the answer says so.

use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use chrono::Utc;
use pbs_shared::StatusMessage;
use pbs_shared::message::{EndpointTestRequest, EndpointTestResult, V1};
use tracing::{info, warn};

use crate::config::{CloudAccess, EndpointConfig};
use crate::jobs::context::JobContext;
use crate::jobs::runner::Disposition;
use crate::transfer::probe;

/// How long one test may take.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `request` and reports its outcome; what to do with its message.
pub async fn run(
    ctx: &JobContext,
    sqs: &aws_sdk_sqs::Client,
    request: &EndpointTestRequest,
) -> Disposition {
    let config = &ctx.config;
    if request.pool != config.pool {
        warn!(test_id = %request.test_id, pool = %request.pool, "endpoint test for another pool dropped");
        return Disposition::Delete;
    }
    let Some(status_url) = config.cloud.as_ref().map(|c| c.status_queue_url.clone()) else {
        return Disposition::Delete;
    };
    let result = outcome(ctx, request).await;
    info!(test_id = %request.test_id, endpoint = %request.endpoint, ok = result.ok, problem = result.problem.as_deref().unwrap_or(""), "endpoint test");
    let body = serde_json::to_string(&StatusMessage::EndpointTest(result))
        .expect("status messages serialise");
    match sqs
        .send_message()
        .queue_url(status_url)
        .message_body(body)
        .send()
        .await
    {
        Ok(_) => Disposition::Delete,
        Err(e) => {
            warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "endpoint test outcome not sent; the test runs again");
            Disposition::Release(Duration::from_secs(5))
        }
    }
}

/// The probe's outcome, or why the endpoint was not probed.
async fn outcome(ctx: &JobContext, request: &EndpointTestRequest) -> EndpointTestResult {
    let config = &ctx.config;
    let mut result = EndpointTestResult {
        v: V1,
        test_id: request.test_id.clone(),
        executor_id: config.executor_id(),
        pool: config.pool.clone(),
        endpoint: request.endpoint.clone(),
        ok: false,
        location: String::new(),
        step: Some("setup".into()),
        problem: None,
        message: None,
        hint: None,
        elapsed_ms: 0,
        at: Utc::now(),
    };
    let endpoint = match ctx.endpoints.get(&request.endpoint) {
        Ok(e) => e,
        Err(e) => {
            result.problem = Some("not_found".into());
            result.message = Some(format!("{e} on executor {}", result.executor_id));
            result.hint = Some(
                "define it in this executor's configuration, or ask a pool that has it".into(),
            );
            return result;
        }
    };
    result.location = probe::location(&endpoint.config);
    if endpoint.config.cloud() == CloudAccess::None {
        result.problem = Some("forbidden".into());
        result.message = Some(format!(
            "the site keeps endpoint {} from the cloud (cloud = \"none\")",
            request.endpoint
        ));
        result.hint = Some(format!(
            "set cloud = \"read\", \"write\" or \"read-write\" in [endpoints.{}] to let the cloud use and test it",
            request.endpoint
        ));
        return result;
    }
    let creds = match endpoint.config {
        EndpointConfig::S3(_) => ctx.credentials.provide_credentials().await.ok(),
        _ => None,
    };
    let side = match endpoint.side("DST", config.cloud.as_ref(), creds.as_ref()) {
        Ok(side) => side,
        Err(e) => {
            result.problem = Some("auth".into());
            result.message = Some(e.to_string());
            result.hint = Some(probe::hint(Some("auth")).into());
            return result;
        }
    };
    let report = probe::probe(endpoint, &side, &config.rclone, &config.state_dir, LIMIT).await;
    result.ok = report.ok;
    result.step = report.step.map(str::to_owned);
    result.problem = report.problem.map(str::to_owned);
    result.message = report.message;
    result.hint = (!report.ok).then(|| probe::hint(report.problem).to_owned());
    result.elapsed_ms = report.elapsed_ms;
    result.at = Utc::now();
    result
}
