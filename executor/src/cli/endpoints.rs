//! `pbs-executor endpoints test`: writes, lists, reads and deletes a probe file on each endpoint
//! (or the one named) and prints what is wrong, one line or JSON object per endpoint.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::transfer::endpoints::Endpoints;
use crate::transfer::{probe, rclone};

/// AWS credentials from the standard chain, for S3 endpoints outside a `[cloud]` section.
async fn aws_credentials(config: &Config) -> Option<aws_credential_types::Credentials> {
    use aws_credential_types::provider::ProvideCredentials;
    let sdk = config.aws_sdk_config().await;
    sdk.credentials_provider()?.provide_credentials().await.ok()
}

/// Tests the endpoints (`only` one of them), each within `limit`; fails when any fails.
pub async fn test(config: Config, only: Option<String>, json: bool, limit: Duration) -> Result<()> {
    std::fs::create_dir_all(config.state_dir.join("logs"))
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    std::fs::write(config.state_dir.join("rclone.conf"), "").context("writing rclone.conf")?;
    rclone::check_version(&config.rclone).await?;
    let endpoints = Endpoints::resolve(&config).await?;
    let selected: Vec<_> = endpoints
        .iter()
        .filter(|e| only.as_deref().is_none_or(|n| e.name.as_str() == n))
        .collect();
    if let Some(n) = &only
        && selected.is_empty()
    {
        anyhow::bail!("endpoint {n:?} is not defined in the configuration");
    }
    let creds = if endpoints.uses_s3() {
        aws_credentials(&config).await
    } else {
        None
    };
    let mut failed = 0;
    for ep in selected {
        let report = match ep.side("DST", config.cloud.as_ref(), creds.as_ref()) {
            Ok(side) => probe::probe(ep, &side, &config.rclone, &config.state_dir, limit).await,
            Err(e) => probe::ProbeReport {
                endpoint: ep.name.to_string(),
                location: probe::location(&ep.config),
                ok: false,
                step: Some("setup"),
                problem: Some("auth"),
                message: Some(e.to_string()),
                elapsed_ms: 0,
            },
        };
        if !report.ok {
            failed += 1;
        }
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", report.line());
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} endpoint(s) failed the test");
    }
    Ok(())
}
