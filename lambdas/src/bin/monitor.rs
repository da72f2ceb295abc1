//! monitor: on a schedule, counts executors that have gone silent (CloudWatch metrics).

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use pbs_lambdas::env::MonitorEnv;
use pbs_lambdas::monitor::Monitor;
use pbs_lambdas::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let env = MonitorEnv::from_env()?;
    let config = telemetry::aws_config().await;
    let monitor = Arc::new(Monitor::new(env, aws_sdk_dynamodb::Client::new(&config)));
    run(service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let monitor = monitor.clone();
        async move { monitor.check().await.map_err(Error::from) }
    }))
    .await
}
