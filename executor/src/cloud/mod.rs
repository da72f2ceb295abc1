//! The executor's side of the cloud, all outbound: the work-queue poller, the control queue
//! (cancel requests, lease answers), the status sender (reports from the ledger's outbox,
//! heartbeats), live progress, uploads of logs and delivery reports, the feed of the pool's
//! rules and the pool's rule lease.
//!
//! May depend on `jobs` (the poller hands messages to the runner), `ledger`, `config` and
//! `metrics`; `daemon.rs` wires it. Nothing here runs rclone or touches an endpoint.

pub mod artifacts;
pub mod control;
pub mod endpoint_test;
pub mod lease;
pub mod poller;
pub mod progress;
pub mod rules_feed;
pub mod status_sender;

use crate::config::CloudConfig;

/// An S3 client for the stack's own buckets (rules, logs), path-style against an emulator or
/// an S3-compatible endpoint.
pub fn s3_client(cloud: &CloudConfig, sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut s3 = aws_sdk_s3::config::Builder::from(sdk);
    if let Some(url) = cloud
        .s3_endpoint_url
        .as_ref()
        .or(cloud.endpoint_url.as_ref())
    {
        s3 = s3.endpoint_url(url).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(s3.build())
}
