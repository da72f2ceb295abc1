//! Running rclone: remotes as environment variables, a clean environment, and errors classified.
//!
//! Remotes are passed as `RCLONE_CONFIG_<NAME>_<OPTION>` variables, so no credential ever appears
//! in a process's argv; the environment is cleared first so nothing of the executor's own
//! (proxies, CA bundles, unrelated AWS settings) changes rclone's behaviour.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pbs_shared::ErrorClass;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// A value that must not be logged: its `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(v: impl Into<String>) -> Self {
        Self(v.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

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
}

/// Options common to every transfer: JSON log to a file, retries inside rclone, and checksums
/// compared after the transfer wherever both sides have one.
fn common_args(log_file: &Path) -> Vec<String> {
    [
        "--use-json-log",
        "--log-level",
        "INFO",
        "--log-file",
        &log_file.to_string_lossy(),
        "--stats",
        "0",
        // The executor retries whole attempts by the template's policy; inside one attempt rclone
        // retries each request a few times only, so an unreachable endpoint fails in seconds.
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
    .map(|s| s.to_string())
    .collect()
}

/// `rclone copyto SRC:src_path DST:dst_path` for one file.
pub fn copy_file(
    source: Remote,
    source_path: &str,
    dest: Remote,
    dest_path: &str,
    log_file: &Path,
    bandwidth_limit: Option<&str>,
) -> Invocation {
    let mut args = vec![
        "copyto".to_owned(),
        format!("{}:{}", source.name, source_path),
        format!("{}:{}", dest.name, dest_path),
    ];
    args.extend(common_args(log_file));
    if let Some(limit) = bandwidth_limit {
        args.extend(["--bwlimit".to_owned(), limit.to_owned()]);
    }
    Invocation {
        args,
        remotes: vec![source, dest],
    }
}

/// How an rclone run ended.
#[derive(Debug)]
pub enum RunEnd {
    Exited {
        code: Option<i32>,
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
    let mut cmd = Command::new(rclone);
    cmd.args(&inv.args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("RCLONE_CONFIG", home.join("rclone.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
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
    tokio::select! {
        status = child.wait() => Ok(RunEnd::Exited { code: status?.code() }),
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

/// The last error rclone logged, redacted, from its JSON log file.
pub fn last_error(log_file: &Path, secrets: &[&str]) -> Option<String> {
    let text = std::fs::read_to_string(log_file).ok()?;
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

/// Replaces every secret value in `text` with `***`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "***");
    }
    out
}

/// Classifies a failed run from rclone's exit code and last error message.
///
/// Exit codes (rclone docs): 3 directory not found, 4 file not found, 5 temporary error,
/// 6 less serious error, 7 fatal error, 8 transfer limit, 1 usage error, 2 other.
pub fn classify(code: Option<i32>, message: &str) -> ErrorClass {
    let m = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if any(&[
        "accessdenied",
        "access denied",
        "invalidaccesskeyid",
        "signaturedoesnotmatch",
        "forbidden",
        "permission denied",
        "authentication failed",
        "unable to authenticate",
        "logon failure",
        "status code: 403",
        "status code 403",
    ]) {
        return ErrorClass::Auth;
    }
    if any(&[
        "nosuchkey",
        "nosuchbucket",
        "not found",
        "no such file",
        "status code: 404",
    ]) {
        return ErrorClass::NotFound;
    }
    if any(&["no space left", "quota exceeded", "disk full"]) {
        return ErrorClass::Retryable;
    }
    match code {
        Some(3 | 4) => ErrorClass::NotFound,
        Some(1) => ErrorClass::BadRequest,
        Some(7) => ErrorClass::Auth,
        Some(5 | 8) => ErrorClass::Retryable,
        None => ErrorClass::Retryable,
        _ => ErrorClass::Retryable,
    }
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
            s3_source(),
            "bucket/a b+c%.txt",
            Remote::new("DST", "local"),
            "/srv/in/a b+c%.txt",
            Path::new("/tmp/x.log"),
            Some("10M"),
        );
        assert!(inv.args.windows(2).any(|w| w == ["--bwlimit", "10M"]));
        assert_eq!(inv.args[0], "copyto");
        assert_eq!(inv.args[1], "SRC:bucket/a b+c%.txt");
        assert_eq!(inv.args[2], "DST:/srv/in/a b+c%.txt");
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
        let e = last_error(&log, &["s3cr3t-value"]).unwrap();
        assert_eq!(e, "a.txt: Failed to copy: key *** refused");
        assert_eq!(last_error(&dir.path().join("none.log"), &[]), None);

        // A failed copyto is logged as a notice.
        std::fs::write(
            &log,
            "{\"level\":\"notice\",\"msg\":\"Failed to copyto: connection refused\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_error(&log, &[]).unwrap(),
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
