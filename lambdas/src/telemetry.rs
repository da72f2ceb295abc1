//! Tracing set-up shared by the functions: JSON lines to stdout (CloudWatch), level from
//! `RUST_LOG` (default `info`), each with its span's fields.

use tracing_subscriber::EnvFilter;

pub fn init() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Each line carries the fields of the span it was written in (the SQS record, the job:
        // `job_id`, `template`, `pool`; the API request).
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .init();
}

/// AWS clients from the standard provider chain; `AWS_ENDPOINT_URL` (local emulator) is honoured,
/// with path-style S3 addressing where that matters.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// An S3 client; path-style addressing when an endpoint override (a local emulator, an
/// S3-compatible store) is configured.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let overridden = std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let conf = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(overridden)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
