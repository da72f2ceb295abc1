//! Running rclone: remotes as environment variables, a clean environment, and errors classified.
//!
//! Remotes are passed as `RCLONE_CONFIG_<NAME>_<OPTION>` variables, so no credential ever appears
//! in a process's argv; the environment is cleared first so nothing of the executor's own
//! (proxies, CA bundles, unrelated AWS settings) changes rclone's behaviour.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pbs_shared::ErrorClass;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// A value that must not be logged: its `Debug` prints `***`, and its memory is wiped when the
/// last copy is dropped (`secrecy`).
#[derive(Clone)]
pub struct Secret(std::sync::Arc<SecretString>);

impl Secret {
    pub fn new(v: impl Into<String>) -> Self {
        Self(std::sync::Arc::new(SecretString::from(v.into())))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One option of a remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionValue {
    Plain(String),
    Secret(Secret),
}

/// An rclone remote defined only through environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Upper-case remote name, e.g. `SRC`.
    pub name: &'static str,
    pub options: Vec<(&'static str, OptionValue)>,
}

impl Remote {
    pub fn new(name: &'static str, kind: &str) -> Self {
        Self {
            name,
            options: vec![("TYPE", OptionValue::Plain(kind.to_owned()))],
        }
    }

    pub fn plain(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.options.push((key, OptionValue::Plain(value.into())));
        self
    }

    pub fn secret(mut self, key: &'static str, value: Secret) -> Self {
        self.options.push((key, OptionValue::Secret(value)));
        self
    }

    /// `RCLONE_CONFIG_<NAME>_<KEY>=value` pairs.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    OptionValue::Plain(p) => p.clone(),
                    OptionValue::Secret(s) => s.expose().to_owned(),
                };
                (format!("RCLONE_CONFIG_{}_{}", self.name, k), value)
            })
            .collect()
    }

    /// Secret values, for redaction of anything rclone prints.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.options.iter().filter_map(|(_, v)| match v {
            OptionValue::Secret(s) => Some(s.expose()),
            OptionValue::Plain(_) => None,
        })
    }
}

/// A fully built rclone invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub args: Vec<String>,
    pub remotes: Vec<Remote>,
    /// Bytes written to rclone's standard input (`rcat`, `obscure -`).
    pub stdin: Option<Vec<u8>>,
    /// Standard output goes to this file (created, owner-only) instead of memory: a listing of a
    /// million files is read back from it in a stream.
    pub stdout_to: Option<PathBuf>,
}

impl Invocation {
    /// `rclone VERB` with the options every run shares: JSON log appended to `log_file`, and
    /// requests retried a few times only, so that an unreachable endpoint fails in seconds. The
    /// executor retries whole attempts by the template's policy.
    pub fn new(verb: &str, log_file: &Path) -> Self {
        let mut args = vec![verb.to_owned()];
        args.extend(
            [
                "--use-json-log",
                "--log-level",
                "INFO",
                "--log-file",
                &log_file.to_string_lossy(),
                // One JSON `stats` line a second: the job's progress (progress.rs).
                "--stats",
                "1s",
                "--retries",
                "1",
                "--low-level-retries",
                "3",
                "--contimeout",
                "10s",
                "--timeout",
                "60s",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        Self {
            args,
            remotes: Vec::new(),
            stdin: None,
            stdout_to: None,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Makes `remote` known to this run (through the environment).
    pub fn remote(mut self, remote: &Remote) -> Self {
        if !self.remotes.iter().any(|r| r.name == remote.name) {
            self.remotes.push(remote.clone());
        }
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// Logs at debug level: rclone's own checks after a copy appear ([`take_md5_checks`]).
    pub fn debug_log(mut self) -> Self {
        if let Some(level) = self.args.iter().position(|a| a == "--log-level") {
            self.args[level + 1] = "DEBUG".into();
        }
        self
    }

    pub fn stdout_to(mut self, file: &Path) -> Self {
        self.stdout_to = Some(file.to_owned());
        self
    }
}

/// `rclone copyto SRC:src_path DST:dst_path` for one file.
pub fn copy_file(
    source: &Remote,
    source_path: &str,
    dest: &Remote,
    dest_path: &str,
    log_file: &Path,
    bandwidth_limit: Option<&str>,
) -> Invocation {
    let mut inv = Invocation::new("copyto", log_file)
        .arg(format!("{}:{}", source.name, source_path))
        .arg(format!("{}:{}", dest.name, dest_path))
        .remote(source)
        .remote(dest);
    if let Some(limit) = bandwidth_limit {
        inv = inv.args(["--bwlimit", limit]);
    }
    inv
}

/// How an rclone run ended.
#[derive(Debug)]
pub enum RunEnd {
    Exited {
        code: Option<i32>,
        /// What rclone printed on standard output (listings, hashes, file contents); empty when
        /// it went to [`Invocation::stdout_to`].
        stdout: Vec<u8>,
    },
    /// Stopped by cancellation (SIGTERM, so rclone removes its partial files).
    Cancelled,
}

/// Runs rclone with a clean environment; on `cancel`, stops it with SIGTERM (then SIGKILL after
/// `kill_after`).
pub async fn run(
    rclone: &Path,
    home: &Path,
    inv: &Invocation,
    cancel: &CancellationToken,
    kill_after: Duration,
) -> std::io::Result<RunEnd> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stdout_file = match &inv.stdout_to {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)?,
        ),
        None => None,
    };
    let mut cmd = Command::new(rclone);
    cmd.args(&inv.args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("RCLONE_CONFIG", home.join("rclone.conf"))
        .stdin(if inv.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(stdout_file.map_or_else(Stdio::piped, Stdio::from))
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for remote in &inv.remotes {
        cmd.envs(remote.env());
    }
    // If the executor dies (crash, kill -9), rclone must not go on writing behind a restarted
    // executor's back: the kernel kills it with its parent. Its partial file stays, and the
    // start-up recovery removes it.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    if let (Some(bytes), Some(mut stdin)) = (inv.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let stdout = child.stdout.take();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_end(&mut buf).await;
        }
        buf
    });
    tokio::select! {
        status = child.wait() => {
            let code = status?.code();
            crate::metrics::METRICS.rclone_exit(code);
            let stdout = reader.await.unwrap_or_default();
            Ok(RunEnd::Exited { code, stdout })
        }
        _ = cancel.cancelled() => {
            if let Some(pid) = child.id() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(kill_after, child.wait()).await.is_err() {
                child.kill().await?;
            }
            Ok(RunEnd::Cancelled)
        }
    }
}

/// How a checked run ([`run_checked`]) failed.
#[derive(Debug)]
pub enum RunError {
    /// rclone could not be started.
    Spawn(String),
    /// Stopped by cancellation.
    Cancelled,
    /// It exited with a code not tolerated; `message` is its last logged error, redacted.
    Exit { code: Option<i32>, message: String },
}

/// Where and how a checked run happens.
pub struct Runtime<'a> {
    pub rclone: &'a Path,
    pub home: &'a Path,
    /// rclone's JSON log, read back for the last error.
    pub log: &'a Path,
    /// Redacted from that error.
    pub secrets: &'a [String],
    pub cancel: &'a CancellationToken,
    /// After SIGTERM on cancellation, how long before SIGKILL.
    pub kill_after: Duration,
}

/// Runs `inv` as [`run`] does and reads the outcome: the exit code and standard output when the
/// code is 0 or in `tolerate`, else the last error rclone logged during this run, redacted.
pub async fn run_checked(
    rt: &Runtime<'_>,
    inv: &Invocation,
    tolerate: &[i32],
) -> Result<(i32, Vec<u8>), RunError> {
    let (rclone, log) = (rt.rclone, rt.log);
    let offset = log_offset(log);
    let end = run(rclone, rt.home, inv, rt.cancel, rt.kill_after)
        .await
        .map_err(|e| {
            RunError::Spawn(format!("cannot start rclone at {}: {e}", rclone.display()))
        })?;
    match end {
        RunEnd::Cancelled => Err(RunError::Cancelled),
        RunEnd::Exited {
            code: Some(code),
            stdout,
        } if code == 0 || tolerate.contains(&code) => Ok((code, stdout)),
        RunEnd::Exited { code, .. } => {
            let secrets: Vec<&str> = rt.secrets.iter().map(String::as_str).collect();
            let message = last_error_since(log, offset, &secrets)
                .unwrap_or_else(|| format!("rclone exited with {code:?}"));
            Err(RunError::Exit { code, message })
        }
    }
}

/// Obscures a password the way rclone expects it in `RCLONE_CONFIG_*_PASS`, passing it on
/// standard input (never in argv).
pub async fn obscure(rclone: &Path, secret: &Secret) -> Result<Secret, String> {
    let mut child = Command::new(rclone)
        .args(["obscure", "-"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", rclone.display()))?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(format!("{}\n", secret.expose()).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || text.is_empty() {
        return Err(format!("rclone obscure exited with {}", out.status));
    }
    Ok(Secret::new(text))
}

/// The size of a log file now, to read only what a later run appends.
pub fn log_offset(log_file: &Path) -> u64 {
    std::fs::metadata(log_file).map(|m| m.len()).unwrap_or(0)
}

/// The last error rclone logged after byte `offset` of its JSON log file, redacted.
pub fn last_error_since(log_file: &Path, offset: u64, secrets: &[&str]) -> Option<String> {
    let bytes = std::fs::read(log_file).ok()?;
    let text = String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default());
    let msg = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        // rclone logs a failed copy as an error, or as a notice starting "Failed to".
        .filter(|v| match v["level"].as_str() {
            Some("error" | "critical" | "fatal") => true,
            Some("notice") => v["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("Failed to")),
            _ => false,
        })
        .filter_map(|v| {
            let msg = v["msg"].as_str()?.trim().to_owned();
            Some(match v["object"].as_str() {
                Some(o) if !o.is_empty() && !msg.contains(o) => format!("{o}: {msg}"),
                _ => msg,
            })
        })
        .next_back()?;
    Some(redact(&msg, secrets))
}

/// The MD5s rclone reported checked after byte `offset` of its JSON log, by object (its path
/// under the copy's source folder), written at debug level ([`Invocation::debug_log`]) by a run
/// that has ended. After a copy, `md5 = <hex> OK` says the source's MD5 equals the one the
/// destination has for what it took (the local backend hashes the bytes as it writes them), so
/// the file need not be read again to know it. The run's debug lines are then dropped from the
/// log, which keeps what an info-level run writes (the log may leave the site; debug lines name
/// hosts and users).
pub fn take_md5_checks(log_file: &Path, offset: u64) -> HashMap<String, String> {
    let mut checks = HashMap::new();
    let Some(bytes) = std::fs::read(log_file).ok() else {
        return checks;
    };
    let Some(tail) = bytes.get(offset as usize..) else {
        return checks;
    };
    let tail = String::from_utf8_lossy(tail);
    let mut kept = String::new();
    for line in tail.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            kept.push_str(line);
            kept.push('\n');
            continue;
        };
        if v["level"] != "debug" {
            kept.push_str(line);
            kept.push('\n');
        } else if let Some(object) = v["object"].as_str()
            && let Some(hex) = v["msg"]
                .as_str()
                .and_then(|m| m.strip_prefix("md5 = ")?.strip_suffix(" OK"))
            && hex.len() == 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            checks.insert(object.to_owned(), hex.to_ascii_lowercase());
        }
    }
    let rewrite = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(log_file)?;
        file.set_len(offset)?;
        file.write_all(kept.as_bytes())
    };
    let _ = rewrite();
    checks
}

/// Replaces every secret value in `text` with `***`: as it is, and as it reads inside JSON (a
/// quote or backslash escaped) or a URL (percent-encoded, either case).
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        for form in escaped_forms(s) {
            out = out.replace(&form, "***");
        }
    }
    out
}

/// `secret` as it is, JSON-escaped, and percent-encoded (upper- and lower-case hex), longest
/// first so that no form leaves part of a longer one behind.
fn escaped_forms(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).expect("strings serialise");
    let json = json[1..json.len() - 1].to_owned();
    let percent = |lower: bool| {
        secret
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ if lower => format!("%{b:02x}"),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let mut forms = vec![secret.to_owned(), json, percent(false), percent(true)];
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    forms
}

/// What an rclone error message says went wrong, in an operator's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The host name does not resolve.
    Dns,
    /// Nothing answers, or the connection broke.
    Connect,
    /// The SSH host key is unknown or changed.
    HostKey,
    /// The TLS certificate is not trusted.
    Tls,
    /// The credentials were refused.
    Auth,
    /// Logged in, but not allowed to do this.
    Permission,
    /// The share, bucket, folder or file does not exist.
    NotFound,
    /// The server asks us to slow down.
    Throttled,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::HostKey => "host_key",
            Self::Tls => "tls",
            Self::Auth => "auth",
            Self::Permission => "permission",
            Self::NotFound => "not_found",
            Self::Throttled => "throttled",
        }
    }

    /// Auth, permission, trust and not-found are final; the network and throttling may pass.
    pub fn class(self) -> ErrorClass {
        match self {
            Self::HostKey | Self::Tls | Self::Auth | Self::Permission => ErrorClass::Auth,
            Self::NotFound => ErrorClass::NotFound,
            Self::Dns | Self::Connect | Self::Throttled => ErrorClass::Retryable,
        }
    }
}

/// The words each kind of failure shows in rclone's messages (S3, SMB, SFTP and local wording),
/// lower-case, tried in this order.
const DIAGNOSES: [(Problem, &[&str]); 8] = [
    (
        Problem::HostKey,
        &["knownhosts", "host key mismatch", "host key verification"],
    ),
    (
        Problem::Tls,
        &["x509:", "tls: ", "certificate signed by unknown"],
    ),
    (
        Problem::Auth,
        &[
            "logon is invalid",
            "logon failure",
            "unable to authenticate",
            "authentication failed",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "invalid credentials",
            "expiredtoken",
        ],
    ),
    (
        Problem::Permission,
        &[
            "accessdenied",
            "access denied",
            "access is denied",
            "permission denied",
            "forbidden",
            "status code: 403",
            "operation not permitted",
            "read-only file system",
        ],
    ),
    (
        Problem::NotFound,
        &[
            "network name not found",
            "bad network name",
            "nosuchbucket",
            "nosuchkey",
            "not found",
            "no such file",
            "doesn't exist",
            "does not exist",
            "status code: 404",
        ],
    ),
    (
        Problem::Dns,
        &["no such host", "server misbehaving", "name resolution"],
    ),
    (
        Problem::Throttled,
        &[
            "slowdown",
            "slow down",
            "too many requests",
            "status code: 429",
            "throttl",
        ],
    ),
    (
        Problem::Connect,
        &[
            "connection refused",
            "i/o timeout",
            "no route to host",
            "network is unreachable",
            "connection reset",
            "broken pipe",
            "dial tcp",
            "unexpected eof",
        ],
    ),
];

/// Reads the kind of failure from an rclone error message.
pub fn diagnose(message: &str) -> Option<Problem> {
    let m = message.to_ascii_lowercase();
    DIAGNOSES
        .into_iter()
        .find(|(_, needles)| needles.iter().any(|n| m.contains(n)))
        .map(|(p, _)| p)
}

/// Classifies a failed run from rclone's exit code and last error message.
///
/// Exit codes (rclone docs): 3 directory not found, 4 file not found, 5 temporary error,
/// 6 less serious error, 7 fatal error, 8 transfer limit, 1 usage error, 2 other.
pub fn classify(code: Option<i32>, message: &str) -> ErrorClass {
    if let Some(p) = diagnose(message) {
        return p.class();
    }
    let m = message.to_ascii_lowercase();
    if ["no space left", "quota exceeded", "disk full"]
        .iter()
        .any(|n| m.contains(n))
    {
        return ErrorClass::Retryable;
    }
    match code {
        Some(3 | 4) => ErrorClass::NotFound,
        Some(1) => ErrorClass::BadRequest,
        Some(7) => ErrorClass::Auth,
        _ => ErrorClass::Retryable,
    }
}

/// The rclone the project's install script provides, for tests that run it.
#[cfg(test)]
pub fn test_binary() -> PathBuf {
    std::env::var_os("PBS_RCLONE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/rclone"))
}

/// Where a job's rclone log is kept.
pub fn log_path(state_dir: &Path, job_id: &str, attempt: u32) -> PathBuf {
    state_dir
        .join("logs")
        .join(format!("{job_id}.{attempt}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_source() -> Remote {
        Remote::new("SRC", "s3")
            .plain("PROVIDER", "AWS")
            .secret("ACCESS_KEY_ID", Secret::new("AKIAEXAMPLE"))
            .secret("SECRET_ACCESS_KEY", Secret::new("s3cr3t-value"))
    }

    #[test]
    fn secrets_go_to_the_environment_never_to_argv() {
        let inv = copy_file(
            &s3_source(),
            "bucket/a b+c%.txt",
            &Remote::new("DST", "local"),
            "/srv/in/a b+c%.txt",
            Path::new("/tmp/x.log"),
            Some("10M"),
        );
        assert!(inv.args.windows(2).any(|w| w == ["--bwlimit", "10M"]));
        assert_eq!(inv.args[0], "copyto");
        let at = |a: &str| inv.args.iter().position(|x| x == a);
        let (src, dst) = (at("SRC:bucket/a b+c%.txt"), at("DST:/srv/in/a b+c%.txt"));
        assert!(src.is_some() && src < dst, "{:?}", inv.args);
        let argv = inv.args.join(" ");
        assert!(!argv.contains("s3cr3t-value") && !argv.contains("AKIAEXAMPLE"));
        let env = inv.remotes[0].env();
        assert!(env.contains(&("RCLONE_CONFIG_SRC_TYPE".into(), "s3".into())));
        assert!(env.contains(&(
            "RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY".into(),
            "s3cr3t-value".into()
        )));
        assert!(
            !format!("{inv:?}").contains("s3cr3t-value"),
            "Debug leaks a secret"
        );
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(
            classify(Some(1), "AccessDenied: Access Denied"),
            ErrorClass::Auth
        );
        assert_eq!(
            classify(Some(3), "directory not found"),
            ErrorClass::NotFound
        );
        assert_eq!(classify(Some(4), "object not found"), ErrorClass::NotFound);
        assert_eq!(classify(Some(5), "connection reset"), ErrorClass::Retryable);
        assert_eq!(classify(Some(1), "unknown flag"), ErrorClass::BadRequest);
        assert_eq!(classify(None, ""), ErrorClass::Retryable);
    }

    #[test]
    fn smb_sftp_and_network_messages_are_diagnosed() {
        let cases = [
            (
                "couldn't connect SMB: response error: The attempted logon is invalid. This is either due to a bad username or authentication information.",
                Problem::Auth,
            ),
            (
                "couldn't initialize SMB: response error: {Network Name Not Found} The specified share name cannot be found on the remote server.",
                Problem::NotFound,
            ),
            (
                "couldn't connect SMB: dial tcp 127.0.0.1:4451: connect: connection refused",
                Problem::Connect,
            ),
            (
                "NewFs: couldn't connect SSH: ssh: handshake failed: ssh: unable to authenticate, attempted methods [none password]",
                Problem::Auth,
            ),
            (
                "couldn't connect SSH: ssh: handshake failed: knownhosts: key is unknown",
                Problem::HostKey,
            ),
            (
                "dial tcp: lookup nas.invalid on 127.0.0.53:53: no such host",
                Problem::Dns,
            ),
            (
                "SlowDown: Please reduce your request rate",
                Problem::Throttled,
            ),
            ("open /srv/in/a.txt: permission denied", Problem::Permission),
        ];
        for (msg, expected) in cases {
            assert_eq!(diagnose(msg), Some(expected), "{msg}");
        }
        assert_eq!(diagnose("something odd"), None);
        assert_eq!(Problem::Connect.class(), ErrorClass::Retryable);
        assert_eq!(Problem::HostKey.class(), ErrorClass::Auth);
    }

    #[test]
    fn secrets_are_redacted_in_json_and_url_escaped_forms() {
        let secret = "p@ss/wo\"rd";
        let text = format!(
            "plain {secret} json {} url {} lower {}",
            r#"p@ss/wo\"rd"#, "p%40ss%2Fwo%22rd", "p%40ss%2fwo%22rd"
        );
        let out = redact(&text, &[secret]);
        assert_eq!(out, "plain *** json *** url *** lower ***");
    }

    #[test]
    fn the_copy_s_md5_checks_are_read_from_its_debug_lines_which_then_leave_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("j.log");
        let before = "{\"level\":\"debug\",\"msg\":\"md5 = 00000000000000000000000000000000 OK\",\"object\":\"a.bin\"}\n";
        let run = concat!(
            "{\"level\":\"debug\",\"msg\":\"Setting host=\\\"nas\\\" for \\\"DST\\\"\"}\n",
            "{\"level\":\"debug\",\"msg\":\"md5 = FF322C2FC18B519700F0B6FB3E9C1673 OK\",\"object\":\"a.bin\"}\n",
            "{\"level\":\"debug\",\"msg\":\"md5 = 11111111111111111111111111111111 OK\",\"object\":\"other.bin\"}\n",
            "{\"level\":\"info\",\"msg\":\"Copied (new) to: b.bin\",\"object\":\"a.bin\"}\n",
        );
        std::fs::write(&log, format!("{before}{run}")).unwrap();
        let offset = before.len() as u64;
        let checks = take_md5_checks(&log, offset);
        assert_eq!(
            checks.get("a.bin").map(String::as_str),
            Some("ff322c2fc18b519700f0b6fb3e9c1673"),
            "the run's own line, not one before it"
        );
        assert_eq!(
            checks.get("other.bin").map(String::as_str),
            Some("11111111111111111111111111111111")
        );
        assert_eq!(checks.len(), 2, "{checks:?}");
        // What the run logged at info level stays; its debug lines go; what came before stays.
        let left = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            left,
            format!(
                "{before}{{\"level\":\"info\",\"msg\":\"Copied (new) to: b.bin\",\"object\":\"a.bin\"}}\n"
            )
        );
        // No check logged (a side without MD5s): nothing is taken as checked.
        assert!(take_md5_checks(&log, offset).is_empty());
        assert!(take_md5_checks(&dir.path().join("none.log"), 0).is_empty());
    }

    #[test]
    fn last_error_reads_the_json_log_and_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("j.log");
        std::fs::write(
            &log,
            concat!(
                "{\"level\":\"info\",\"msg\":\"starting\"}\n",
                "{\"level\":\"notice\",\"msg\":\"Config file not found\"}\n",
                "not json\n",
                "{\"level\":\"error\",\"msg\":\"Failed to copy: key s3cr3t-value refused\",\"object\":\"a.txt\"}\n",
            ),
        )
        .unwrap();
        let e = last_error_since(&log, 0, &["s3cr3t-value"]).unwrap();
        assert_eq!(e, "a.txt: Failed to copy: key *** refused");
        assert_eq!(last_error_since(&dir.path().join("none.log"), 0, &[]), None);

        // A failed copyto is logged as a notice.
        std::fs::write(
            &log,
            "{\"level\":\"notice\",\"msg\":\"Failed to copyto: connection refused\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_error_since(&log, 0, &[]).unwrap(),
            "Failed to copyto: connection refused"
        );
    }
}

/// The oldest rclone that writes `.partial` files and renames them when complete.
pub const MIN_VERSION: (u32, u32) = (1, 63);

/// Why the configured rclone cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("cannot run {path}: {source}")]
    Missing {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read a version from `{path} version`: {output:?}")]
    Unreadable { path: String, output: String },
    #[error(
        "{path} is rclone {major}.{minor}; 1.63 or newer is needed (older versions write straight to the final name, exposing partial files)"
    )]
    TooOld {
        path: String,
        major: u32,
        minor: u32,
    },
}

/// `(major, minor)` from the first line of `rclone version` (`rclone v1.75.2`).
pub fn parse_version(output: &str) -> Option<(u32, u32)> {
    let first = output.lines().next()?;
    let v = first.trim().strip_prefix("rclone v")?;
    let mut parts = v.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Checks that the configured rclone runs and is new enough; returns its version line.
pub async fn check_version(rclone: &Path) -> Result<String, VersionError> {
    let path = rclone.display().to_string();
    let out = Command::new(rclone)
        .arg("version")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .await
        .map_err(|source| VersionError::Missing {
            path: path.clone(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some((major, minor)) = parse_version(&text) else {
        return Err(VersionError::Unreadable { path, output: text });
    };
    if (major, minor) < MIN_VERSION {
        return Err(VersionError::TooOld { path, major, minor });
    }
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn versions_are_read_and_compared() {
        assert_eq!(
            parse_version("rclone v1.75.2\n- os/version: debian"),
            Some((1, 75))
        );
        assert_eq!(parse_version("rclone v1.60.1-DEV\n"), Some((1, 60)));
        assert_eq!(parse_version("something else"), None);
        assert!((1, 60) < MIN_VERSION && (1, 63) >= MIN_VERSION && (2, 0) > MIN_VERSION);
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_clear_error() {
        let e = check_version(Path::new("/nonexistent/rclone"))
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("cannot run /nonexistent/rclone"),
            "{e}"
        );
    }
}
