//! api: the HTTP API behind API Gateway.
//!
//! With `PBS_API_LISTEN=127.0.0.1:PORT` set it serves the same router over plain HTTP instead,
//! for local use where no API Gateway is in front.

use lambda_http::Error;
use pbs_lambdas::api::{ApiState, router};
use pbs_lambdas::env::ApiEnv;
use pbs_lambdas::job_table::JobTable;
use pbs_lambdas::pool_rules::RulesPublisher;
use pbs_lambdas::telemetry;
use pbs_lambdas::template_table::TemplateTable;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let env = ApiEnv::from_env()?;
    let config = telemetry::aws_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let rules = env
        .config_bucket
        .as_ref()
        .map(|bucket| RulesPublisher::new(telemetry::s3_client(&config), bucket));
    let app = router(ApiState {
        jobs: JobTable::new(dynamo.clone(), &env.jobs_table, env.job_ttl_days),
        templates: TemplateTable::new(dynamo, &env.templates_table),
        rules,
    });
    match std::env::var("PBS_API_LISTEN") {
        Ok(addr) => {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            tracing::info!(addr = %addr, "serving the API over plain HTTP");
            axum::serve(listener, app).await?;
            Ok(())
        }
        Err(_) => lambda_http::run(app).await,
    }
}
