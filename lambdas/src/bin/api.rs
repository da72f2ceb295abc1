//! api: the HTTP API and the operator console behind API Gateway.
//!
//! With `PBS_API_LISTEN=127.0.0.1:PORT` set it serves the same router over plain HTTP instead,
//! for local use where no API Gateway is in front.

use std::sync::Arc;

use lambda_http::Error;
use pbs_lambdas::api::auth::Verifier;
use pbs_lambdas::api::{ApiState, router};
use pbs_lambdas::dispatch::Dispatcher;
use pbs_lambdas::env::ApiEnv;
use pbs_lambdas::flow::FollowUp;
use pbs_lambdas::pool_rules::RulesPublisher;
use pbs_lambdas::store::audit::AuditLog;
use pbs_lambdas::store::jobs::JobTable;
use pbs_lambdas::store::templates::TemplateTable;
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
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let s3 = telemetry::s3_client(&config);
    let rules = env
        .config_bucket
        .as_ref()
        .map(|bucket| RulesPublisher::new(s3.clone(), bucket));
    let jobs = JobTable::new(dynamo.clone(), &env.jobs_table, env.job_ttl_days);
    let follow_up = Arc::new(FollowUp {
        jobs: jobs.clone(),
        templates: TemplateTable::new(dynamo.clone(), &env.templates_table),
        dispatcher: Dispatcher::new(sqs.clone(), jobs.clone(), &env.pool_queue_prefix),
        sqs: sqs.clone(),
        s3: s3.clone(),
        notify_queue_url: env.notify_queue_url.clone(),
        // A cancelled job delivered nothing: no staged object is removed from here.
        staging_bucket: None,
        cache: Default::default(),
    });
    let app = router(ApiState {
        dispatcher: Arc::new(Dispatcher::new(
            sqs.clone(),
            jobs.clone(),
            &env.pool_queue_prefix,
        )),
        jobs,
        templates: TemplateTable::new(dynamo.clone(), &env.templates_table),
        rules,
        auth,
        audit: AuditLog::new(dynamo.clone(), &env.audit_table),
        dynamo,
        executors_table: env.executors_table,
        sqs,
        s3,
        logs_bucket: env.logs_bucket,
        follow_up,
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
