//! api: the HTTP API and the operator console behind API Gateway.
//!
//! With `PBS_API_LISTEN=127.0.0.1:PORT` set it serves the same router over plain HTTP instead,
//! for local use where no API Gateway is in front.

use lambda_http::Error;
use pbs_lambdas::api::auth::Verifier;
use pbs_lambdas::api::{ApiState, StackStore, router};
use pbs_lambdas::env::ApiEnv;
use pbs_lambdas::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let env = ApiEnv::from_env()?;
    let auth = Verifier::new(
        &env.auth_issuer,
        env.auth_audience.as_deref(),
        &env.auth_jwks,
    )
    .map_err(|e| format!("token verification is misconfigured: {e}"))?;
    let config = telemetry::aws_config().await;
    let store = StackStore::new(
        env,
        aws_sdk_dynamodb::Client::new(&config),
        aws_sdk_sqs::Client::new(&config),
        telemetry::s3_client(&config),
    );
    let app = router(ApiState::new(store, auth));
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
