//! Resolving a job's source and destination into rclone remotes.
//!
//! Templates in the cloud only name an endpoint; its definition (and any credential) lives in this
//! executor's configuration. The destination root is joined with the job's already-validated
//! relative path, so a file can only land under the root.

use std::path::PathBuf;

use aws_credential_types::Credentials;
use pbs_shared::{DestPath, EndpointName};

use crate::config::{CloudConfig, EndpointConfig};
use crate::rclone::{Remote, Secret};

/// Why an endpoint could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0:?} is not defined in this executor's configuration")]
    Unknown(String),
    #[error("S3 sources need a [cloud] section with a region")]
    NoCloud,
}

/// A resolved destination: the rclone remote and the path to write.
#[derive(Debug)]
pub struct Target {
    pub remote: Remote,
    pub path: String,
    /// For local endpoints, the final file on disk (verified after the copy).
    pub local_file: Option<PathBuf>,
    /// Human-readable location for messages, without secrets.
    pub display: String,
}

pub fn destination(
    endpoints: &std::collections::BTreeMap<EndpointName, EndpointConfig>,
    name: &EndpointName,
    path: &DestPath,
) -> Result<Target, EndpointError> {
    let config = endpoints
        .get(name)
        .ok_or_else(|| EndpointError::Unknown(name.to_string()))?;
    match config {
        EndpointConfig::Local { root } => {
            let file = path.segments().fold(root.clone(), |p, s| p.join(s));
            Ok(Target {
                remote: Remote::new("DST", "local"),
                path: file.to_string_lossy().into_owned(),
                display: format!("{name}:{path}"),
                local_file: Some(file),
            })
        }
    }
}

/// The S3 source remote, with the executor's own AWS credentials.
pub fn s3_source(
    cloud: Option<&CloudConfig>,
    creds: &Credentials,
) -> Result<Remote, EndpointError> {
    let cloud = cloud.ok_or(EndpointError::NoCloud)?;
    let mut remote = Remote::new("SRC", "s3")
        .plain(
            "PROVIDER",
            if cloud.endpoint_url.is_some() || cloud.s3_endpoint_url.is_some() {
                "Other"
            } else {
                "AWS"
            },
        )
        .plain("ENV_AUTH", "false")
        .plain("REGION", &cloud.region)
        .secret("ACCESS_KEY_ID", Secret::new(creds.access_key_id()))
        .secret("SECRET_ACCESS_KEY", Secret::new(creds.secret_access_key()));
    if let Some(token) = creds.session_token() {
        remote = remote.secret("SESSION_TOKEN", Secret::new(token));
    }
    if let Some(url) = cloud
        .s3_endpoint_url
        .as_ref()
        .or(cloud.endpoint_url.as_ref())
    {
        remote = remote
            .plain("ENDPOINT", url)
            .plain("FORCE_PATH_STYLE", "true");
    }
    Ok(remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn local_destination_stays_under_root() {
        let mut eps = BTreeMap::new();
        let name = EndpointName::parse("disk").unwrap();
        eps.insert(
            name.clone(),
            EndpointConfig::Local {
                root: "/srv/in".into(),
            },
        );
        let t = destination(&eps, &name, &DestPath::parse("a/b c.txt").unwrap()).unwrap();
        assert_eq!(t.path, "/srv/in/a/b c.txt");
        assert_eq!(t.local_file.unwrap(), PathBuf::from("/srv/in/a/b c.txt"));
        let other = EndpointName::parse("nope").unwrap();
        let e = destination(&eps, &other, &DestPath::parse("x").unwrap()).unwrap_err();
        assert!(e.to_string().contains("\"nope\" is not defined"));
    }
}
