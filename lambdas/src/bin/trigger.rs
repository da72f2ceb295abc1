//! trigger: S3 object events from the EventsQueue become jobs on the pools' work queues.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use pbs_lambdas::env::TriggerEnv;
use pbs_lambdas::telemetry;
use pbs_lambdas::trigger::Trigger;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let env = TriggerEnv::from_env()?;
    let config = telemetry::aws_config().await;
    let trigger = Arc::new(Trigger::new(
        env,
        aws_sdk_dynamodb::Client::new(&config),
        aws_sdk_sqs::Client::new(&config),
    ));
    run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let trigger = trigger.clone();
        async move { Ok::<_, Error>(trigger.handle(event.payload).await) }
    }))
    .await
}
