//! The executor's configuration: one TOML file, every field documented, unknown fields refused.
//!
//! Secrets never appear here in clear text in a way that could leak: AWS credentials come from
//! the standard provider chain (environment, profile, instance role), not from this file.

mod check;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use check::{check_schedule_rule, check_watch_rule};
pub use pbs_shared::rule_spec::{AfterAction, ExistingFiles, MissedRuns};
use pbs_shared::rule_spec::{
    ScheduleTrigger, WatchTrigger, default_poll, default_reconcile, default_stable, default_tz, yes,
};
use pbs_shared::{
    Bandwidth, Delivery, EndpointName, ExecutorId, PathTemplate, PoolName, RetryPolicy, Template,
    TemplateId,
};
use serde::Deserialize;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This executor's id, unique within its pool. Default: the host name.
    #[serde(default)]
    pub executor_id: Option<ExecutorId>,
    /// The pool this executor serves.
    pub pool: PoolName,
    /// Folder for the ledger (SQLite), job logs and rclone's empty config file.
    pub state_dir: PathBuf,
    /// Jobs run at the same time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Most files one rclone run copies for compatible jobs received together (an event storm);
    /// 1 runs every job on its own. 1 to 10000.
    #[serde(default = "default_batch_max_files")]
    pub batch_max_files: usize,
    /// Path of the rclone binary (1.63 or newer: it writes `.partial` files and renames them).
    #[serde(default = "default_rclone")]
    pub rclone: PathBuf,
    /// Bandwidth limit for each transfer, in rclone's `--bwlimit` syntax: a rate (`10M` = 10
    /// MiB/s, `512k`) or a weekly timetable (`"Mon-08:00,10M Mon-18:00,off"`, or daily
    /// `"08:00,10M 18:00,off"`), switched live by rclone. With a template's own limit, the lower
    /// applies at every minute. Default: unlimited.
    #[serde(default, deserialize_with = "bandwidth_limit")]
    pub bandwidth_limit: Option<Bandwidth>,
    /// Seconds a running job may take to finish after SIGTERM/SIGINT before rclone is stopped and
    /// its message released to another executor.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
    /// Where `/metrics` and `/healthz` are served (`"127.0.0.1:9464"`); loopback by default,
    /// `"off"` for none.
    #[serde(default = "default_http_listen", deserialize_with = "http_listen")]
    pub http_listen: Option<SocketAddr>,
    /// The cloud connection. Without it the executor runs standalone.
    #[serde(default)]
    pub cloud: Option<CloudConfig>,
    /// Named endpoints that templates and rules refer to.
    #[serde(default)]
    pub endpoints: BTreeMap<EndpointName, EndpointConfig>,
    /// Watch-folder rules (`[[watch]]`).
    #[serde(default)]
    pub watch: Vec<WatchRule>,
    /// Cron schedules (`[[schedule]]`).
    #[serde(default)]
    pub schedule: Vec<ScheduleRule>,
}

/// Copy files from a local folder as they settle.
///
/// The fields mirror a template's `watch` trigger ([`WatchTrigger`]) plus the template's
/// destination and options, flat as an operator writes them in TOML (serde's `flatten` cannot be
/// combined with `deny_unknown_fields`, which catches misspelt keys).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRule {
    /// Unique rule name; jobs carry it as their template id.
    pub name: TemplateId,
    /// The endpoint holding the watched folder (local: file events; SFTP, SMB, S3: polled).
    pub source: EndpointName,
    /// Folder under the source endpoint's root. Default: the root.
    #[serde(default)]
    pub folder: String,
    /// Watch subfolders too.
    #[serde(default = "yes")]
    pub recursive: bool,
    /// Globs on the path relative to the watched folder; default every file.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs on the same path that are never taken.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where files go.
    pub destination: EndpointName,
    /// Destination path template; `{key}` is the path relative to the watched folder.
    #[serde(default = "default_path")]
    pub path: PathTemplate,
    /// A file is taken once its size and modification time have not changed for this long.
    #[serde(default = "default_stable")]
    pub stable_seconds: u64,
    /// What happens to the source file after a verified delivery.
    #[serde(default)]
    pub after: AfterAction,
    /// For `after = "move-to"`: folder under the source endpoint's root that delivered files
    /// move to, keeping their relative path.
    #[serde(default)]
    pub archive_folder: Option<String>,
    /// Files already in the folder when the executor starts: `process` or `ignore`.
    #[serde(default)]
    pub existing: ExistingFiles,
    /// A full scan of the folder this often catches events lost to overflow or restarts.
    #[serde(default = "default_reconcile")]
    pub reconcile_seconds: u64,
    /// An SFTP, SMB or S3 folder is listed this often (one listing per poll).
    #[serde(default = "default_poll")]
    pub poll_seconds: u64,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Bandwidth limit or weekly timetable of the rule's transfers (with `bandwidth_limit`, the
    /// lower applies).
    #[serde(default)]
    pub bandwidth: Option<pbs_shared::Bandwidth>,
}

/// Copy a folder (or prefix) on a cron schedule.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRule {
    pub name: TemplateId,
    /// `min hour day-of-month month day-of-week` (five fields), or six with seconds first.
    pub cron: String,
    /// IANA time zone the expression is read in, e.g. `Europe/Paris`.
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// Any endpoint: local, SMB, SFTP or S3.
    pub source: EndpointName,
    #[serde(default)]
    pub folder: String,
    #[serde(default = "yes")]
    pub recursive: bool,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub destination: EndpointName,
    #[serde(default = "default_path")]
    pub path: PathTemplate,
    /// After downtime: `skip` the runs missed, or `run-once` to catch up with one run.
    #[serde(default)]
    pub missed: MissedRuns,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Bandwidth limit or weekly timetable of the rule's transfers (with `bandwidth_limit`, the
    /// lower applies).
    #[serde(default)]
    pub bandwidth: Option<pbs_shared::Bandwidth>,
}

fn default_path() -> PathTemplate {
    PathTemplate::parse("{key}").expect("valid template")
}

impl WatchRule {
    /// The rule's trigger part, as a template would carry it.
    pub fn trigger(&self) -> WatchTrigger {
        WatchTrigger {
            source: self.source.clone(),
            folder: self.folder.clone(),
            recursive: self.recursive,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            stable_seconds: self.stable_seconds,
            after: self.after,
            archive_folder: self.archive_folder.clone(),
            existing: self.existing,
            reconcile_seconds: self.reconcile_seconds,
            poll_seconds: self.poll_seconds,
        }
    }

    /// The rule a `watch` template makes.
    pub fn from_template(t: &Template, w: &WatchTrigger) -> Self {
        Self {
            name: t.id.clone(),
            source: w.source.clone(),
            folder: w.folder.clone(),
            recursive: w.recursive,
            include: w.include.clone(),
            exclude: w.exclude.clone(),
            destination: t.destination.endpoint.clone(),
            path: t.destination.path.clone(),
            stable_seconds: w.stable_seconds,
            after: w.after,
            archive_folder: w.archive_folder.clone(),
            existing: w.existing,
            reconcile_seconds: w.reconcile_seconds,
            poll_seconds: w.poll_seconds,
            delivery: t.options.delivery,
            retry: t.options.retry,
            bandwidth: t.options.bandwidth.clone(),
        }
    }
}

impl ScheduleRule {
    pub fn trigger(&self) -> ScheduleTrigger {
        ScheduleTrigger {
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            source: self.source.clone(),
            folder: self.folder.clone(),
            recursive: self.recursive,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            missed: self.missed,
        }
    }

    /// The rule a `schedule` template makes.
    pub fn from_template(t: &Template, s: &ScheduleTrigger) -> Self {
        Self {
            name: t.id.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            source: s.source.clone(),
            folder: s.folder.clone(),
            recursive: s.recursive,
            include: s.include.clone(),
            exclude: s.exclude.clone(),
            destination: t.destination.endpoint.clone(),
            path: t.destination.path.clone(),
            missed: s.missed,
            delivery: t.options.delivery,
            retry: t.options.retry,
            bandwidth: t.options.bandwidth.clone(),
        }
    }
}

/// How the executor reaches its pool's queues (outbound HTTPS only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// AWS region of the stack.
    pub region: String,
    /// Endpoint URL override, e.g. a local emulator. Default: AWS.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Endpoint URL for reading source objects from S3, if it differs from `endpoint_url`
    /// (e.g. an S3 VPC endpoint or gateway). Default: `endpoint_url`.
    #[serde(default)]
    pub s3_endpoint_url: Option<String>,
    /// The pool's work queue URL (stack output `DefaultPoolQueueUrl` for the default pool).
    pub work_queue_url: String,
    /// The pool's status queue URL (stack output `DefaultPoolStatusQueueUrl`, or `StatusQueueUrl`
    /// of the pool's stack); the cloud believes only reports for this pool from it.
    pub status_queue_url: String,
    /// Long-poll wait, 1 to 20 seconds.
    #[serde(default = "default_wait")]
    pub wait_seconds: i32,
    /// The configuration bucket (stack output `ConfigBucketName`): the pool's watch and schedule
    /// templates are read from `pools/<pool>/rules.json` there. Unset: TOML rules only.
    #[serde(default)]
    pub rules_bucket: Option<String>,
    /// How often the pool's rules are checked (a conditional GET), 1 to 3600 seconds.
    #[serde(default = "default_rules_poll")]
    pub rules_poll_seconds: u64,
    /// Whether watch rules from the cloud may delete or move source files on this machine
    /// (`after = "delete"` or `"move-to"`). Off by default: the cloud can then only copy.
    #[serde(default)]
    pub allow_source_removal: bool,
    /// How long a received job stays invisible to other executors; renewed while it runs.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_seconds: i32,
    /// How often the executor tells the cloud it is alive, 1 to 3600 seconds. The cloud shows
    /// it offline after three intervals of silence.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u32,
    /// Where each job's rclone log is uploaded (secrets redacted), under `logs/<pool>/`: the stack
    /// output `ConfigBucketName`. Unset: logs stay in the state folder only.
    #[serde(default)]
    pub logs_bucket: Option<String>,
    /// This executor's control queue (cancel requests). Default: derived from `work_queue_url`,
    /// `<work queue name>-ctl-<executor id>`, which the cloud creates on the first heartbeat.
    #[serde(default)]
    pub control_queue_url: Option<String>,
    /// How often a running job's progress is sent, 1 to 300 seconds.
    #[serde(default = "default_progress")]
    pub progress_seconds: u64,
    /// The stack's relay staging area (the stack output `ConfigBucketName`): the endpoint named
    /// `staging` writes under `staging/<pool>/<job id>/` and reads under `staging/`. Unset: jobs
    /// that use `staging` fail with a clear error.
    #[serde(default)]
    pub staging_bucket: Option<String>,
}

fn default_progress() -> u64 {
    3
}

/// What jobs from the cloud (the pool's queue, cloud watch and schedule rules, chain steps) may
/// do with an endpoint. Jobs of the executor's own rules (its TOML) are not limited by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloudAccess {
    /// Nothing: the endpoint serves only this executor's own rules.
    None,
    /// Read (a source of transfers), never written.
    Read,
    /// Written (a destination of deliveries), never read: the default.
    #[default]
    Write,
    /// Both: a source and a destination, and files may be removed: a watch rule's `after`, a
    /// `move` transfer from it, a `sync` transfer to it.
    ReadWrite,
}

impl CloudAccess {
    pub fn may_read(self) -> bool {
        matches!(self, Self::Read | Self::ReadWrite)
    }

    pub fn may_write(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Read => "read",
            Self::Write => "write",
            Self::ReadWrite => "read-write",
        }
    }
}

/// What a job from the cloud does with an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudUse {
    Read,
    Write,
    /// Remove files (a `move` from it, a `sync` to it).
    Delete,
}

/// A place the executor reads from or writes to, named in templates and jobs.
///
/// Passwords are never written here: a field names the environment variable or the file that
/// holds it, read once at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EndpointConfig {
    /// A folder on this machine.
    Local(LocalEndpoint),
    /// A share on an SMB (Windows, Samba, NAS) server.
    Smb(SmbEndpoint),
    /// A folder on an SFTP server.
    Sftp(SftpEndpoint),
    /// A bucket (and optional prefix) in S3 or an S3-compatible store.
    S3(S3Endpoint),
}

impl EndpointConfig {
    /// The endpoint's type as the configuration spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Smb(_) => "smb",
            Self::Sftp(_) => "sftp",
            Self::S3(_) => "s3",
        }
    }

    /// What jobs from the cloud may do with the endpoint.
    pub fn cloud(&self) -> CloudAccess {
        match self {
            Self::Local(e) => e.cloud,
            Self::Smb(e) => e.cloud,
            Self::Sftp(e) => e.cloud,
            Self::S3(e) => e.cloud,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalEndpoint {
    /// What jobs from the cloud may do here (`none`, `read`, `write`, `read-write`); default
    /// `write`: a destination only.
    #[serde(default)]
    pub cloud: CloudAccess,
    /// Absolute path of the endpoint's root folder; files never land outside it.
    pub root: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmbEndpoint {
    /// What jobs from the cloud may do here (`none`, `read`, `write`, `read-write`); default
    /// `write`: a destination only.
    #[serde(default)]
    pub cloud: CloudAccess,
    /// Server host name or address.
    pub host: String,
    #[serde(default = "default_smb_port")]
    pub port: u16,
    /// Share name, e.g. `media`.
    pub share: String,
    /// Folder inside the share that is the endpoint's root. Default: the share's top.
    #[serde(default)]
    pub root: String,
    pub user: String,
    /// Windows domain or workgroup. Default: `WORKGROUP`.
    #[serde(default)]
    pub domain: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (its first line), readable only by the executor's user.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A systemd credential holding the password, sealed on this host (`pbs-executor secrets
    /// seal`) and given to the unit with `LoadCredentialEncrypted=`: read from
    /// `$CREDENTIALS_DIRECTORY/<name>`.
    #[serde(default)]
    pub password_credential: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpEndpoint {
    /// What jobs from the cloud may do here (`none`, `read`, `write`, `read-write`); default
    /// `write`: a destination only.
    #[serde(default)]
    pub cloud: CloudAccess,
    pub host: String,
    #[serde(default = "default_sftp_port")]
    pub port: u16,
    pub user: String,
    /// Folder that is the endpoint's root: absolute, or relative to the user's home folder.
    #[serde(default)]
    pub root: String,
    /// Private key file (OpenSSH or PEM format).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the password (or the key's passphrase with `key_file`).
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (or the key's passphrase with `key_file`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A systemd credential holding the password (or the key's passphrase), read from
    /// `$CREDENTIALS_DIRECTORY/<name>` (see [`SmbEndpoint::password_credential`]).
    #[serde(default)]
    pub password_credential: Option<String>,
    /// known_hosts file that pins the server's host key. Required: an unknown or changed host
    /// key fails the connection.
    pub known_hosts_file: PathBuf,
    /// How MD5 hashes are taken on the server: `shell` runs `md5sum` there (needs a shell
    /// account); `none` for SFTP-only accounts, where hashes are taken by reading the file back.
    #[serde(default)]
    pub hash: SftpHash,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SftpHash {
    #[default]
    Shell,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Endpoint {
    /// What jobs from the cloud may do here (`none`, `read`, `write`, `read-write`); default
    /// `write`: a destination only.
    #[serde(default)]
    pub cloud: CloudAccess,
    pub bucket: String,
    /// Key prefix that is the endpoint's root. Default: the whole bucket.
    #[serde(default)]
    pub root: String,
    /// Default: the `[cloud]` region, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// For S3-compatible stores (MinIO, Ceph, a VPC endpoint). Default: AWS.
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

fn default_smb_port() -> u16 {
    445
}
fn default_sftp_port() -> u16 {
    22
}

fn default_http_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
}

/// `http_listen`: an address, or `"off"`.
fn http_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "http_listen {text:?} is not an address such as \"127.0.0.1:9464\" (or \"off\")"
        ))
    })
}

/// `bandwidth_limit`: a rate or a weekly timetable, parsed once.
fn bandwidth_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Bandwidth>, D::Error> {
    let text = String::deserialize(d)?;
    Bandwidth::parse(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("bandwidth_limit {text:?}: {e}")))
}
fn default_batch_max_files() -> usize {
    500
}

fn default_concurrency() -> usize {
    4
}
fn default_rclone() -> PathBuf {
    PathBuf::from("rclone")
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_wait() -> i32 {
    20
}
fn default_heartbeat() -> u32 {
    60
}

fn default_rules_poll() -> u64 {
    30
}
fn default_visibility() -> i32 {
    300
}

impl EndpointConfig {
    /// Checks what the types cannot: returns the failing field and why.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let host = |h: &str| {
            if h.is_empty() || h.contains(['/', ' ', ':']) && !h.starts_with('[') {
                Err(("host", format!("{h:?} is not a host name or address")))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Local(l) if !l.root.is_absolute() => Err((
                "root",
                format!("must be an absolute path, got {}", l.root.display()),
            )),
            Self::Local(_) => Ok(()),
            Self::Smb(e) => {
                host(&e.host)?;
                if e.share.is_empty() || e.share.contains(['/', '\\']) {
                    return Err(("share", format!("{:?} is not a share name", e.share)));
                }
                check_relative_root(&e.root)?;
                if e.user.is_empty() {
                    return Err(("user", "must not be empty".into()));
                }
                one_password(e.password_source(), true)
            }
            Self::Sftp(e) => {
                host(&e.host)?;
                if e.user.is_empty() {
                    return Err(("user", "must not be empty".into()));
                }
                if e.root.split('/').any(|s| s == "..") {
                    return Err(("root", format!("{:?} must not contain '..'", e.root)));
                }
                one_password(e.password_source(), e.key_file.is_none())?;
                if let Some(k) = &e.key_file
                    && !k.is_absolute()
                {
                    return Err((
                        "key_file",
                        format!("must be an absolute path, got {}", k.display()),
                    ));
                }
                if !e.known_hosts_file.is_absolute() {
                    return Err((
                        "known_hosts_file",
                        format!(
                            "must be an absolute path, got {}",
                            e.known_hosts_file.display()
                        ),
                    ));
                }
                Ok(())
            }
            Self::S3(e) => {
                if !(3..=63).contains(&e.bucket.len())
                    || !e.bucket.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    })
                {
                    return Err((
                        "bucket",
                        format!("{:?} is not a valid bucket name", e.bucket),
                    ));
                }
                check_relative_root(&e.root)?;
                if let Some(url) = &e.endpoint_url
                    && !(url.starts_with("https://") || url.starts_with("http://"))
                {
                    return Err(("endpoint_url", format!("{url:?} is not an http(s) URL")));
                }
                Ok(())
            }
        }
    }
}

/// A root inside a share or bucket: relative, no `..`.
fn check_relative_root(root: &str) -> Result<(), (&'static str, String)> {
    if root.starts_with('/') || root.split('/').any(|s| s == "..") {
        return Err((
            "root",
            format!("{root:?} must be a relative folder without '..'"),
        ));
    }
    Ok(())
}

/// Where an endpoint's password comes from, as its configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource<'a> {
    Env(&'a str),
    File(&'a Path),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(&'a str),
}

impl PasswordSource<'_> {
    /// The configuration field that names it.
    pub fn field(self) -> &'static str {
        match self {
            Self::Env(_) => "password_env",
            Self::File(_) => "password_file",
            Self::Credential(_) => "password_credential",
        }
    }
}

/// The sources set among `password_env`, `password_file` and `password_credential`.
fn sources<'a>(
    env: &'a Option<String>,
    file: &'a Option<PathBuf>,
    credential: &'a Option<String>,
) -> Vec<PasswordSource<'a>> {
    let env = env.as_deref().map(PasswordSource::Env);
    let file = file.as_deref().map(PasswordSource::File);
    let credential = credential.as_deref().map(PasswordSource::Credential);
    [env, file, credential].into_iter().flatten().collect()
}

impl SmbEndpoint {
    pub fn password_source(&self) -> Vec<PasswordSource<'_>> {
        sources(
            &self.password_env,
            &self.password_file,
            &self.password_credential,
        )
    }
}

impl SftpEndpoint {
    pub fn password_source(&self) -> Vec<PasswordSource<'_>> {
        sources(
            &self.password_env,
            &self.password_file,
            &self.password_credential,
        )
    }
}

/// At most one password source; exactly one when `required`.
fn one_password(
    set: Vec<PasswordSource<'_>>,
    required: bool,
) -> Result<(), (&'static str, String)> {
    match set.as_slice() {
        [first, _, ..] => Err((
            first.field(),
            "set one of password_env, password_file and password_credential, not several".into(),
        )),
        [] if required => Err((
            "password_env",
            "a password is required: set password_env (an environment variable), password_file or password_credential (a systemd credential)"
                .into(),
        )),
        [PasswordSource::Env("")] => Err(("password_env", "must not be empty".into())),
        [PasswordSource::File(f)] if !f.is_absolute() => Err((
            "password_file",
            format!("must be an absolute path, got {}", f.display()),
        )),
        [PasswordSource::Credential(name)]
            if name.is_empty() || name.contains('/') || *name == "." || *name == ".." =>
        {
            Err((
                "password_credential",
                format!("{name:?} must be a credential name (a file name, as in LoadCredentialEncrypted=<name>:...)"),
            ))
        }
        _ => Ok(()),
    }
}

impl Config {
    /// Why jobs from the cloud (queued jobs, the cloud's watch and schedule rules) may not `how`
    /// `endpoint`, naming the setting to change; `None` when they may. The staging area is always
    /// open, and an endpoint this executor does not have is left for the copy to report.
    pub fn cloud_refusal(&self, endpoint: &EndpointName, how: CloudUse) -> Option<String> {
        if endpoint.as_str() == pbs_shared::message::STAGING_ENDPOINT {
            return None;
        }
        let access = self.endpoints.get(endpoint)?.cloud();
        let (allowed, done, needs) = match how {
            CloudUse::Read => (
                access.may_read(),
                "read",
                "set cloud = \"read\" or \"read-write\"",
            ),
            CloudUse::Write => (
                access.may_write(),
                "written",
                "set cloud = \"write\" or \"read-write\"",
            ),
            CloudUse::Delete => (
                access == CloudAccess::ReadWrite,
                "deleted from",
                "set cloud = \"read-write\"",
            ),
        };
        (!allowed).then(|| {
            format!(
                "endpoint {endpoint} may not be {done} by jobs from the cloud (its cloud = \"{}\"; {needs} in [endpoints.{endpoint}] to allow it)",
                access.as_str()
            )
        })
    }

    /// The endpoints as heartbeats publish them: name, type and `cloud` setting, nothing else.
    pub fn offered_endpoints(&self) -> Vec<pbs_shared::message::OfferedEndpoint> {
        self.endpoints
            .iter()
            .map(|(name, e)| pbs_shared::message::OfferedEndpoint {
                name: name.clone(),
                kind: e.kind().to_owned(),
                cloud: e.cloud().as_str().to_owned(),
            })
            .collect()
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.concurrency > 256 {
            return Err(format!(
                "concurrency must be 1 to 256, got {}",
                self.concurrency
            ));
        }
        if !(1..=10_000).contains(&self.batch_max_files) {
            return Err(format!(
                "batch_max_files must be 1 to 10000, got {}",
                self.batch_max_files
            ));
        }
        if let Some(cloud) = &self.cloud {
            if !(1..=20).contains(&cloud.wait_seconds) {
                return Err(format!(
                    "cloud.wait_seconds must be 1 to 20, got {}",
                    cloud.wait_seconds
                ));
            }
            if !(1..=3600).contains(&cloud.rules_poll_seconds) {
                return Err(format!(
                    "cloud.rules_poll_seconds must be 1 to 3600, got {}",
                    cloud.rules_poll_seconds
                ));
            }
            if !(1..=300).contains(&cloud.progress_seconds) {
                return Err(format!(
                    "cloud.progress_seconds must be 1 to 300, got {}",
                    cloud.progress_seconds
                ));
            }
            if !(1..=3600).contains(&cloud.heartbeat_seconds) {
                return Err(format!(
                    "cloud.heartbeat_seconds must be 1 to 3600, got {}",
                    cloud.heartbeat_seconds
                ));
            }
            if !(10..=43_200).contains(&cloud.visibility_timeout_seconds) {
                return Err(format!(
                    "cloud.visibility_timeout_seconds must be 10 to 43200, got {}",
                    cloud.visibility_timeout_seconds
                ));
            }
        }
        for (name, endpoint) in &self.endpoints {
            if name.as_str() == pbs_shared::message::STAGING_ENDPOINT {
                return Err(format!(
                    "endpoints.{name}: the name {name:?} is reserved for the stack's relay staging area (cloud.staging_bucket)"
                ));
            }
            endpoint
                .validate()
                .map_err(|(field, message)| format!("endpoints.{name}.{field}: {message}"))?;
        }
        check::check(self)?;
        Ok(())
    }

    /// The AWS SDK settings for this executor: the `[cloud]` region and endpoint override
    /// (`us-east-1` without a cloud, for S3 endpoints), credentials from the standard chain.
    pub async fn aws_sdk_config(&self) -> aws_config::SdkConfig {
        let region = self
            .cloud
            .as_ref()
            .map_or("us-east-1".to_owned(), |c| c.region.clone());
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region));
        if let Some(url) = self.cloud.as_ref().and_then(|c| c.endpoint_url.as_ref()) {
            loader = loader.endpoint_url(url);
        }
        loader.load().await
    }

    /// The executor id, defaulting to the host name (made safe as an id).
    pub fn executor_id(&self) -> ExecutorId {
        if let Some(id) = &self.executor_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let slug: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(63)
            .collect();
        ExecutorId::parse(slug.trim_start_matches('-'))
            .unwrap_or_else(|_| ExecutorId::parse("executor").expect("valid id"))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../infra/executor.example.toml");

    #[test]
    fn the_shipped_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.pool.as_str(), "default");
        assert!(c.cloud.is_some());
        assert!(!c.endpoints.is_empty());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let e =
            Config::parse("pool = \"default\"\nstate_dir = \"/tmp\"\ncolour = 1\n").unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = Config::parse("pool = \"Default\"\nstate_dir = \"/tmp\"\n").unwrap_err();
        assert!(e.contains("invalid pool name"), "{e}");
        let e = Config::parse(
            "pool = \"p\"\nstate_dir = \"/tmp\"\n[endpoints.disk]\ntype = \"local\"\nroot = \"rel\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("endpoints.disk.root: must be an absolute path"),
            "{e}"
        );
        let e = Config::parse("pool = \"p\"\nstate_dir = \"/tmp\"\nbandwidth_limit = \"fast\"\n")
            .unwrap_err();
        assert!(e.contains("bandwidth_limit \"fast\""), "{e}");
        assert!(
            Config::parse("pool = \"p\"\nstate_dir = \"/tmp\"\nbandwidth_limit = \"2.5M\"\n")
                .is_ok()
        );
        assert!(
            Config::parse(
                "pool = \"p\"\nstate_dir = \"/tmp\"\nbandwidth_limit = \"Mon-08:00,10M Fri-18:00,off\"\n"
            )
            .is_ok()
        );
        let e = Config::parse(
            "pool = \"p\"\nstate_dir = \"/tmp\"\n[endpoints.staging]\ntype = \"local\"\nroot = \"/srv\"\n",
        )
        .unwrap_err();
        assert!(e.contains("reserved"), "{e}");
        let e = Config::parse("pool = \"p\"\nstate_dir = \"/tmp\"\nconcurrency = 0\n").unwrap_err();
        assert!(e.contains("concurrency"), "{e}");
        let e = Config::parse(
            "pool = \"p\"\nstate_dir = \"/tmp\"\n[endpoints.x]\ntype = \"ftp\"\nroot = \"/\"\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown variant `ftp`"), "{e}");
    }

    fn endpoint(body: &str) -> Result<Config, String> {
        Config::parse(&format!(
            "pool = \"p\"\nstate_dir = \"/tmp\"\n[endpoints.nas]\n{body}"
        ))
    }

    #[test]
    fn every_endpoint_type_parses_and_bad_fields_are_named() {
        let c = endpoint(
            "type = \"smb\"\nhost = \"nas.local\"\nshare = \"media\"\nuser = \"svc\"\npassword_env = \"NAS_PW\"\n",
        )
        .unwrap();
        let EndpointConfig::Smb(smb) = &c.endpoints[&EndpointName::parse("nas").unwrap()] else {
            panic!("not smb")
        };
        assert_eq!(smb.port, 445);
        let c = endpoint(
            "type = \"sftp\"\nhost = \"10.0.0.5\"\nuser = \"drop\"\nkey_file = \"/etc/pbs/id\"\nknown_hosts_file = \"/etc/pbs/kh\"\nhash = \"none\"\n",
        )
        .unwrap();
        let EndpointConfig::Sftp(sftp) = &c.endpoints[&EndpointName::parse("nas").unwrap()] else {
            panic!("not sftp")
        };
        assert_eq!((sftp.port, sftp.hash), (22, SftpHash::None));
        endpoint("type = \"s3\"\nbucket = \"archive-1\"\nroot = \"backups\"\n").unwrap();

        let cases = [
            (
                "type = \"smb\"\nhost = \"nas\"\nshare = \"media\"\nuser = \"svc\"\n",
                "endpoints.nas.password_env: a password is required",
            ),
            (
                "type = \"smb\"\nhost = \"nas\"\nshare = \"a/b\"\nuser = \"svc\"\npassword_env = \"X\"\n",
                "endpoints.nas.share: \"a/b\" is not a share name",
            ),
            (
                "type = \"smb\"\nhost = \"nas\"\nshare = \"m\"\nuser = \"u\"\npassword = \"hunter2\"\n",
                "unknown field `password`",
            ),
            (
                "type = \"sftp\"\nhost = \"h\"\nuser = \"u\"\npassword_env = \"X\"\n",
                "missing field `known_hosts_file`",
            ),
            (
                "type = \"sftp\"\nhost = \"h\"\nuser = \"u\"\nknown_hosts_file = \"/k\"\n",
                "endpoints.nas.password_env: a password is required",
            ),
            (
                "type = \"sftp\"\nhost = \"h\"\nuser = \"u\"\nroot = \"../x\"\nkey_file = \"/k\"\nknown_hosts_file = \"/k\"\n",
                "endpoints.nas.root",
            ),
            (
                "type = \"s3\"\nbucket = \"Bad_Bucket\"\n",
                "endpoints.nas.bucket: \"Bad_Bucket\" is not a valid bucket name",
            ),
            (
                "type = \"s3\"\nbucket = \"ok-bucket\"\nendpoint_url = \"minio:9000\"\n",
                "endpoints.nas.endpoint_url",
            ),
            (
                "type = \"local\"\nroot = \"rel\"\n",
                "endpoints.nas.root: must be an absolute path",
            ),
        ];
        for (body, expected) in cases {
            let e = endpoint(body).unwrap_err();
            assert!(e.contains(expected), "{body}: {e}");
        }
    }
}
