//! Endpoints resolved into rclone remotes.
//!
//! Templates in the cloud only name an endpoint; its definition and credentials live in this
//! executor's configuration. Passwords are read once at start-up from the environment variable or
//! file the configuration names, obscured for rclone, and only ever passed in the environment of
//! the rclone child. Paths are joined under the endpoint's root from already-validated relative
//! paths, so a file can only be read or written under that root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_credential_types::Credentials;
use pbs_shared::EndpointName;

use crate::config::{
    CloudConfig, Config, EndpointConfig, PasswordSource, S3Endpoint, SftpEndpoint, SftpHash,
    SmbEndpoint,
};
use crate::transfer::rclone::{self, Remote, Secret};

/// Why an endpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0:?} is not defined in this executor's configuration")]
    Unknown(String),
    #[error("S3 sources need a [cloud] section with a region")]
    NoCloud,
    #[error("the relay staging area is not configured on this executor (cloud.staging_bucket)")]
    NoStaging,
    #[error("endpoints.{endpoint}.{field}: {message}")]
    Config {
        endpoint: String,
        field: &'static str,
        message: String,
    },
}

/// How an endpoint yields MD5 hashes of its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashes {
    /// `rclone hashsum` answers without transferring the file: computed on this machine
    /// (local), on the server (SFTP `md5sum`), or stored (S3 ETag or rclone's MD5 metadata; may
    /// be missing for multipart uploads, then the file is read).
    Native,
    /// The backend has no hashes (SMB, SFTP without a shell): the file is read back.
    ReadBack,
}

/// One side of a transfer: an rclone remote with a root, and how to describe it without secrets.
#[derive(Debug, Clone)]
pub struct Side {
    pub remote: Remote,
    /// Root path on the remote; files are `base/rel`.
    base: String,
    /// The endpoint name, or `s3://bucket` for the cloud source bucket.
    pub label: String,
    pub hashes: Hashes,
    /// For local endpoints, the root folder on this machine.
    pub local_root: Option<PathBuf>,
    /// Values to redact from anything rclone prints (the clear-text password too).
    pub redact: Vec<Secret>,
}

impl Side {
    /// The rclone path of `rel` (a validated relative path) under this side's root.
    pub fn path(&self, rel: &str) -> String {
        join(&self.base, rel)
    }

    /// `remote:path` for rclone's argv.
    pub fn spec(&self, rel: &str) -> String {
        format!("{}:{}", self.remote.name, self.path(rel))
    }

    /// The root itself as `remote:path`.
    pub fn root_spec(&self) -> String {
        format!("{}:{}", self.remote.name, self.base)
    }

    /// `label:rel` for messages.
    pub fn display(&self, rel: &str) -> String {
        if self.label.starts_with("s3://") {
            format!("{}/{rel}", self.label)
        } else {
            format!("{}:{rel}", self.label)
        }
    }

    /// The local file of `rel`, for local endpoints.
    pub fn local_file(&self, rel: &str) -> Option<PathBuf> {
        self.local_root
            .as_ref()
            .map(|root| rel.split('/').fold(root.clone(), |p, s| p.join(s)))
    }

    /// Why `folder` may not be listed: a symbolic link on its path under a local root.
    pub fn folder_link(&self, folder: &str) -> Option<String> {
        let root = self.local_root.as_ref()?;
        super::links::refusal(root, folder).map(|why| format!("{}: {why}", self.label))
    }

    /// Every value to redact: remote secrets and the clear-text forms.
    pub fn secrets(&self) -> Vec<String> {
        self.remote
            .secrets()
            .map(str::to_owned)
            .chain(self.redact.iter().map(|s| s.expose().to_owned()))
            .collect()
    }
}

/// `base/rel`, or `rel` when `base` is empty (`/rel` when it is the filesystem root).
pub fn join(base: &str, rel: &str) -> String {
    match (base.trim_end_matches('/'), rel) {
        ("", r) if base.starts_with('/') => format!("/{r}"),
        ("", r) => r.to_owned(),
        (b, "") => b.to_owned(),
        (b, r) => format!("{b}/{r}"),
    }
}

/// A configured endpoint with its secret resolved.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: EndpointName,
    pub config: EndpointConfig,
    /// The password (or key passphrase), obscured for rclone.
    obscured: Option<Secret>,
    /// The same in clear text, kept only to redact it.
    clear: Option<Secret>,
}

/// Every endpoint of the executor, resolved at start-up.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    map: BTreeMap<EndpointName, Endpoint>,
}

impl Endpoints {
    /// Reads every endpoint's secret and checks its files, so that a bad configuration fails at
    /// start-up naming the endpoint and field, not at the first job.
    pub async fn resolve(config: &Config) -> Result<Self, EndpointError> {
        let mut map = BTreeMap::new();
        for (name, ep) in &config.endpoints {
            let err = |field: &'static str, message: String| EndpointError::Config {
                endpoint: name.to_string(),
                field,
                message,
            };
            let source = match ep {
                EndpointConfig::Smb(e) => e.password_source().first().copied(),
                EndpointConfig::Sftp(e) => {
                    if let Some(k) = &e.key_file {
                        readable(k)
                            .and_then(|()| private(k))
                            .map_err(|m| err("key_file", m))?;
                    }
                    readable(&e.known_hosts_file).map_err(|m| err("known_hosts_file", m))?;
                    e.password_source().first().copied()
                }
                EndpointConfig::Local(_) | EndpointConfig::S3(_) => None,
            };
            let clear = match source {
                Some(s) => Some(read_password(s).map_err(|m| err(s.field(), m))?),
                None => None,
            };
            let obscured = match (&clear, source) {
                (Some(c), Some(s)) => {
                    Some(rclone::obscure(&config.rclone, c).await.map_err(|e| {
                        err(
                            s.field(),
                            format!("cannot obscure the password with rclone: {e}"),
                        )
                    })?)
                }
                _ => None,
            };
            map.insert(
                name.clone(),
                Endpoint {
                    name: name.clone(),
                    config: ep.clone(),
                    obscured,
                    clear,
                },
            );
        }
        Ok(Self { map })
    }

    pub fn get(&self, name: &EndpointName) -> Result<&Endpoint, EndpointError> {
        self.map
            .get(name)
            .ok_or_else(|| EndpointError::Unknown(name.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.map.values()
    }

    /// Every endpoint secret, obscured and clear, to redact from logs that leave this machine.
    pub fn secrets(&self) -> Vec<String> {
        self.map
            .values()
            .flat_map(|e| e.obscured.iter().chain(e.clear.iter()))
            .map(|s| s.expose().to_owned())
            .collect()
    }

    /// Whether any endpoint reads or writes S3 (and so needs AWS credentials).
    pub fn uses_s3(&self) -> bool {
        self.map
            .values()
            .any(|e| matches!(e.config, EndpointConfig::S3(_)))
    }
}

fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A file holding a secret must be readable by its owner only.
fn private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} may be read by its group or others (mode {:o}): run chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

/// The first line of a secret file (readable by its owner only), without its line ending.
/// The password `source` names: an environment variable, a file, or a systemd credential.
fn read_password(source: PasswordSource<'_>) -> Result<Secret, String> {
    match source {
        PasswordSource::Env(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
            _ => Err(format!("environment variable {var} is not set or empty")),
        },
        PasswordSource::File(path) => read_secret_file(path),
        PasswordSource::Credential(name) => {
            let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                return Err(format!(
                    "credential {name}: $CREDENTIALS_DIRECTORY is not set, so the executor is not running under a unit that loads it (add LoadCredentialEncrypted={name}:<file>; `pbs-executor secrets seal {name}` writes the drop-in)"
                ));
            };
            read_secret_file(&Path::new(&dir).join(name))
                .map_err(|e| format!("credential {name}: {e}"))
        }
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, String> {
    private(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(line))
}

impl Endpoint {
    /// The endpoint as rclone remote `remote_name` (`SRC` or `DST`). S3 endpoints use `creds`,
    /// the executor's own AWS credentials.
    pub fn side(
        &self,
        remote_name: &'static str,
        cloud: Option<&CloudConfig>,
        creds: Option<&Credentials>,
    ) -> Result<Side, EndpointError> {
        let label = self.name.to_string();
        let redact: Vec<Secret> = self.clear.iter().cloned().collect();
        let side = match &self.config {
            EndpointConfig::Local(l) => Side {
                remote: Remote::new(remote_name, "local"),
                base: l.root.to_string_lossy().into_owned(),
                label,
                hashes: Hashes::Native,
                local_root: Some(l.root.clone()),
                redact,
            },
            EndpointConfig::Smb(e) => Side {
                remote: self.smb_remote(remote_name, e),
                base: join(&e.share, &e.root),
                label,
                hashes: Hashes::ReadBack,
                local_root: None,
                redact,
            },
            EndpointConfig::Sftp(e) => {
                let (remote, hashes) = self.sftp_remote(remote_name, e);
                Side {
                    remote,
                    base: e.root.clone(),
                    label,
                    hashes,
                    local_root: None,
                    redact,
                }
            }
            EndpointConfig::S3(e) => {
                let creds = creds.ok_or(EndpointError::Config {
                    endpoint: label.clone(),
                    field: "type",
                    message: "S3 endpoints need AWS credentials from the standard chain".into(),
                })?;
                s3_side(remote_name, e, cloud, creds, label)
            }
        };
        Ok(side)
    }

    fn smb_remote(&self, remote_name: &'static str, e: &SmbEndpoint) -> Remote {
        let mut remote = Remote::new(remote_name, "smb")
            .plain("HOST", &e.host)
            .plain("PORT", e.port.to_string())
            .plain("USER", &e.user);
        if let Some(d) = &e.domain {
            remote = remote.plain("DOMAIN", d);
        }
        if let Some(p) = &self.obscured {
            remote = remote.secret("PASS", p.clone());
        }
        remote
    }

    /// The SFTP remote, and whether the server can hash files itself (a shell) or they are
    /// read back.
    fn sftp_remote(&self, remote_name: &'static str, e: &SftpEndpoint) -> (Remote, Hashes) {
        let mut remote = Remote::new(remote_name, "sftp")
            .plain("HOST", &e.host)
            .plain("PORT", e.port.to_string())
            .plain("USER", &e.user)
            .plain(
                "KNOWN_HOSTS_FILE",
                e.known_hosts_file.to_string_lossy().into_owned(),
            );
        match (&e.key_file, &self.obscured) {
            (Some(key), pass) => {
                remote = remote.plain("KEY_FILE", key.to_string_lossy().into_owned());
                if let Some(p) = pass {
                    remote = remote.secret("KEY_FILE_PASS", p.clone());
                }
            }
            (None, Some(p)) => remote = remote.secret("PASS", p.clone()),
            (None, None) => {}
        }
        let hashes = match e.hash {
            SftpHash::Shell => Hashes::Native,
            SftpHash::None => {
                remote = remote
                    .plain("SHELL_TYPE", "none")
                    .plain("DISABLE_HASHCHECK", "true");
                Hashes::ReadBack
            }
        };
        (remote, hashes)
    }
}

fn s3_remote(
    remote_name: &'static str,
    region: &str,
    endpoint_url: Option<&str>,
    creds: &Credentials,
) -> Remote {
    let mut remote = Remote::new(remote_name, "s3")
        .plain(
            "PROVIDER",
            if endpoint_url.is_some() {
                "Other"
            } else {
                "AWS"
            },
        )
        .plain("ENV_AUTH", "false")
        .plain("REGION", region)
        .secret("ACCESS_KEY_ID", Secret::new(creds.access_key_id()))
        .secret("SECRET_ACCESS_KEY", Secret::new(creds.secret_access_key()));
    if let Some(token) = creds.session_token() {
        remote = remote.secret("SESSION_TOKEN", Secret::new(token));
    }
    if let Some(url) = endpoint_url {
        remote = remote
            .plain("ENDPOINT", url)
            .plain("FORCE_PATH_STYLE", "true");
    }
    remote
}

fn s3_side(
    remote_name: &'static str,
    e: &S3Endpoint,
    cloud: Option<&CloudConfig>,
    creds: &Credentials,
    label: String,
) -> Side {
    let region = e
        .region
        .as_deref()
        .or(cloud.map(|c| c.region.as_str()))
        .unwrap_or("us-east-1");
    Side {
        remote: s3_remote(remote_name, region, e.endpoint_url.as_deref(), creds),
        base: join(&e.bucket, &e.root),
        label,
        hashes: Hashes::Native,
        local_root: None,
        redact: Vec::new(),
    }
}

/// A bucket of the stack (`base` is `bucket[/prefix]`), reached with the executor's own AWS
/// credentials at the `[cloud]` S3 endpoint.
fn cloud_side(
    remote_name: &'static str,
    cloud: &CloudConfig,
    base: String,
    label: String,
    creds: &Credentials,
) -> Side {
    let url = cloud
        .s3_endpoint_url
        .as_deref()
        .or(cloud.endpoint_url.as_deref());
    Side {
        remote: s3_remote(remote_name, &cloud.region, url, creds),
        base,
        label,
        hashes: Hashes::Native,
        local_root: None,
        redact: Vec::new(),
    }
}

/// The stack's relay staging area, `staging/` in `cloud.staging_bucket`, with the executor's own
/// AWS credentials: `sub` is `<pool>/<job id>` where a relay's first leg writes, empty where its
/// second reads (file keys then start with `<pool>/<job id>/`).
pub fn staging_side(
    remote_name: &'static str,
    cloud: Option<&CloudConfig>,
    sub: &str,
    creds: &Credentials,
) -> Result<Side, EndpointError> {
    let cloud = cloud.ok_or(EndpointError::NoCloud)?;
    let bucket = cloud
        .staging_bucket
        .as_deref()
        .ok_or(EndpointError::NoStaging)?;
    Ok(cloud_side(
        remote_name,
        cloud,
        join(&join(bucket, "staging"), sub),
        pbs_shared::message::STAGING_ENDPOINT.to_owned(),
        creds,
    ))
}

/// The cloud's source bucket, read with the executor's own AWS credentials.
pub fn s3_source(
    cloud: Option<&CloudConfig>,
    bucket: &str,
    creds: &Credentials,
) -> Result<Side, EndpointError> {
    let cloud = cloud.ok_or(EndpointError::NoCloud)?;
    Ok(cloud_side(
        "SRC",
        cloud,
        bucket.to_owned(),
        format!("s3://{bucket}"),
        creds,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoints: &str) -> Config {
        Config::parse(&format!(
            "pool = \"p\"\nstate_dir = \"/tmp\"\nrclone = \"{}\"\n{endpoints}",
            crate::transfer::rclone::test_binary().display()
        ))
        .unwrap()
    }

    #[test]
    fn paths_stay_under_the_root() {
        assert_eq!(join("/srv/in", "a/b c.txt"), "/srv/in/a/b c.txt");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("media/", "x"), "media/x");
        assert_eq!(join("media", ""), "media");
    }

    #[tokio::test]
    async fn a_secret_file_others_may_read_is_refused_with_the_chmod_to_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-pass\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
        let c = config(&format!(
            "[endpoints.nas]\ntype = \"smb\"\nhost = \"h\"\nshare = \"s\"\nuser = \"u\"\npassword_file = \"{}\"\n",
            pw.display()
        ));
        let e = Endpoints::resolve(&c).await.unwrap_err().to_string();
        assert!(e.contains("endpoints.nas.password_file"), "{e}");
        assert!(
            e.contains("mode 640") && e.contains(&format!("chmod 600 {}", pw.display())),
            "{e}"
        );
    }

    #[tokio::test]
    async fn secrets_are_read_obscured_and_never_in_debug_output() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-pass\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, "").unwrap();
        let c = config(&format!(
            "[endpoints.nas]\ntype = \"smb\"\nhost = \"127.0.0.1\"\nport = 4450\nshare = \"files\"\nroot = \"in\"\nuser = \"u\"\npassword_file = \"{}\"\n\
             [endpoints.drop]\ntype = \"sftp\"\nhost = \"h\"\nuser = \"u\"\nroot = \"/srv\"\npassword_file = \"{}\"\nknown_hosts_file = \"{}\"\nhash = \"none\"\n\
             [endpoints.disk]\ntype = \"local\"\nroot = \"/data\"\n",
            pw.display(),
            pw.display(),
            kh.display()
        ));
        let eps = Endpoints::resolve(&c).await.unwrap();
        let nas = eps
            .get(&EndpointName::parse("nas").unwrap())
            .unwrap()
            .side("DST", None, None)
            .unwrap();
        assert_eq!(nas.spec("a/b.txt"), "DST:files/in/a/b.txt");
        assert_eq!(nas.display("a/b.txt"), "nas:a/b.txt");
        assert_eq!(nas.hashes, Hashes::ReadBack);
        let env = nas.remote.env();
        let pass = env
            .iter()
            .find(|(k, _)| k == "RCLONE_CONFIG_DST_PASS")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_ne!(pass, "s3cret-pass", "rclone gets the obscured form");
        assert!(nas.secrets().contains(&"s3cret-pass".to_owned()));
        assert!(nas.secrets().contains(&pass));
        let debug = format!("{eps:?} {nas:?}");
        assert!(!debug.contains("s3cret-pass") && !debug.contains(&pass));

        let drop = eps
            .get(&EndpointName::parse("drop").unwrap())
            .unwrap()
            .side("SRC", None, None)
            .unwrap();
        assert_eq!(drop.spec("x"), "SRC:/srv/x");
        assert_eq!(drop.hashes, Hashes::ReadBack);
        assert!(
            drop.remote
                .env()
                .contains(&("RCLONE_CONFIG_SRC_SHELL_TYPE".into(), "none".into()))
        );
        let disk = eps
            .get(&EndpointName::parse("disk").unwrap())
            .unwrap()
            .side("DST", None, None)
            .unwrap();
        assert_eq!(
            disk.local_file("a/b c.txt").unwrap(),
            PathBuf::from("/data/a/b c.txt")
        );
        let e = eps.get(&EndpointName::parse("nope").unwrap()).unwrap_err();
        assert!(e.to_string().contains("\"nope\" is not defined"));
    }

    #[tokio::test]
    async fn missing_secrets_fail_at_start_naming_endpoint_and_field() {
        let c = config(
            "[endpoints.nas]\ntype = \"smb\"\nhost = \"h\"\nshare = \"s\"\nuser = \"u\"\npassword_env = \"PBS_TEST_UNSET_PASSWORD_VAR\"\n",
        );
        let e = Endpoints::resolve(&c).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "endpoints.nas.password_env: environment variable PBS_TEST_UNSET_PASSWORD_VAR is not set or empty"
        );
        let c = config(
            "[endpoints.nas]\ntype = \"smb\"\nhost = \"h\"\nshare = \"s\"\nuser = \"u\"\npassword_file = \"/nonexistent/pw\"\n",
        );
        let e = Endpoints::resolve(&c).await.unwrap_err().to_string();
        assert!(
            e.starts_with("endpoints.nas.password_file: cannot read /nonexistent/pw"),
            "{e}"
        );
        let c = config(
            "[endpoints.drop]\ntype = \"sftp\"\nhost = \"h\"\nuser = \"u\"\nkey_file = \"/nonexistent/id\"\nknown_hosts_file = \"/nonexistent/kh\"\n",
        );
        let e = Endpoints::resolve(&c).await.unwrap_err().to_string();
        assert!(
            e.starts_with("endpoints.drop.key_file: cannot read /nonexistent/id"),
            "{e}"
        );
    }
}
