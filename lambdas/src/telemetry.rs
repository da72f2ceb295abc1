//! Tracing set-up shared by the functions: JSON lines to stdout (CloudWatch), level from
//! `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .init();
}

/// AWS clients from the standard provider chain; `AWS_ENDPOINT_URL` (local emulator) is honoured,
/// with path-style S3 addressing where that matters.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
