//! notify: delivers job-end notifications from the NotifyQueue (signed webhooks, SNS e-mail).
#![recursion_limit = "256"]

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use pbs_lambdas::env::NotifyEnv;
use pbs_lambdas::notify::Notifier;
use pbs_lambdas::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let env = NotifyEnv::from_env()?;
    let config = telemetry::aws_config().await;
    let notifier = Arc::new(Notifier::new(
        env,
        aws_sdk_dynamodb::Client::new(&config),
        aws_sdk_sqs::Client::new(&config),
        aws_sdk_ssm::Client::new(&config),
        aws_sdk_sns::Client::new(&config),
    ));
    run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let notifier = notifier.clone();
        async move { Ok::<_, Error>(notifier.handle(event.payload).await) }
    }))
    .await
}
