//! status: executors' reports from the StatusQueue move jobs forward.
#![recursion_limit = "256"]

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use pbs_lambdas::env::StatusEnv;
use pbs_lambdas::status::Status;
use pbs_lambdas::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let env = StatusEnv::from_env()?;
    let config = telemetry::aws_config().await;
    let status = Arc::new(Status::new(
        env,
        aws_sdk_dynamodb::Client::new(&config),
        aws_sdk_sqs::Client::new(&config),
        telemetry::s3_client(&config),
    ));
    run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let status = status.clone();
        async move { Ok::<_, Error>(status.handle(event.payload).await) }
    }))
    .await
}
