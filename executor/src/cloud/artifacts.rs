//! Uploads a job attempt's rclone log, secrets redacted, to `logs/<pool>/<job id>/attempt-<n>.log`
//! in the logs bucket, where the API's log viewer reads it, and the delivery report of finished
//! jobs to `reports/<pool>/<job id>/attempt-<n>.json` and `.csv`.

use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use pbs_shared::report::{ReportRow, to_csv};
use pbs_shared::{JobId, PoolName};
use tracing::warn;

use crate::jobs::ports::{ArtifactStore, Boxed};
use crate::transfer::rclone;

/// Longest an upload may take.
const PUT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest log uploaded; a longer one keeps its end, where the outcome is.
const MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct LogUploader {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub pool: PoolName,
}

/// The key of an attempt's log.
pub fn key(pool: &PoolName, job: &JobId, attempt: u32) -> String {
    format!("logs/{pool}/{job}/attempt-{attempt}.log")
}

/// The log as uploaded: redacted (before it is cut, so no part of a secret is left at the cut),
/// and at most `MAX_BYTES` (its end).
pub fn prepare(raw: &[u8], secrets: &[&str]) -> String {
    let text = rclone::redact(&String::from_utf8_lossy(raw), secrets);
    if text.len() > MAX_BYTES {
        let mut cut = text.len() - MAX_BYTES;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        format!("[… the first {cut} bytes are left out …]\n{}", &text[cut..])
    } else {
        text
    }
}

/// The key of an attempt's delivery report (JSON; the CSV is the same with `.csv`).
pub fn report_key(pool: &PoolName, job: &JobId, attempt: u32) -> String {
    format!("reports/{pool}/{job}/attempt-{attempt}.json")
}

impl LogUploader {
    /// PUTs one object; a cloud that does not answer holds the job's outcome back at most
    /// `PUT_TIMEOUT`.
    async fn put(&self, key: &str, content_type: &str, body: Vec<u8>) -> bool {
        let put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send();
        match tokio::time::timeout(PUT_TIMEOUT, put).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                warn!(bucket = %self.bucket, key = %key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "not uploaded");
                false
            }
            Err(_) => {
                warn!(bucket = %self.bucket, key = %key, timeout_s = PUT_TIMEOUT.as_secs(), "not uploaded: no answer in time");
                false
            }
        }
    }

    /// Uploads a delivery report as JSON and CSV; the JSON's key, or `None` when it could not be
    /// (logged: a report that cannot be uploaded never fails the job).
    pub async fn upload_report(
        &self,
        job: &JobId,
        attempt: u32,
        rows: &[ReportRow],
    ) -> Option<String> {
        let key = report_key(&self.pool, job, attempt);
        let json = serde_json::to_vec(&serde_json::json!({"v": 1, "files": rows}))
            .expect("reports serialise");
        let csv_key = format!("{}.csv", key.trim_end_matches(".json"));
        let csv = to_csv(rows).into_bytes();
        (self.put(&key, "application/json", json).await
            && self.put(&csv_key, "text/csv; charset=utf-8", csv).await)
            .then_some(key)
    }

    /// Uploads `log` as `job`'s attempt; the key, or `None` when it could not be (logged: a log
    /// that cannot be uploaded never fails the job).
    pub async fn upload(
        &self,
        job: &JobId,
        attempt: u32,
        log: &Path,
        secrets: &[String],
    ) -> Option<String> {
        let raw = match std::fs::read(log) {
            Ok(raw) => raw,
            Err(e) => {
                warn!(log = %log.display(), error = %e, "job log not readable; not uploaded");
                return None;
            }
        };
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let body = prepare(&raw, &secrets);
        let key = key(&self.pool, job, attempt);
        self.put(&key, "text/plain; charset=utf-8", body.into_bytes())
            .await
            .then_some(key)
    }
}

impl ArtifactStore for LogUploader {
    fn upload_log<'a>(
        &'a self,
        job: &'a JobId,
        attempt: u32,
        log: &'a Path,
        secrets: &'a [String],
    ) -> Boxed<'a, Option<String>> {
        Box::pin(self.upload(job, attempt, log, secrets))
    }

    fn upload_report<'a>(
        &'a self,
        job: &'a JobId,
        attempt: u32,
        rows: &'a [ReportRow],
    ) -> Boxed<'a, Option<String>> {
        Box::pin(LogUploader::upload_report(self, job, attempt, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_across_the_cut_leaves_no_part_behind() {
        // The cut falls inside the secret: redacted first, nothing of it survives the cut.
        let secret = "correct-horse-battery";
        let raw = format!("{}{secret}{}", "x".repeat(10), "y".repeat(MAX_BYTES - 5));
        let out = prepare(raw.as_bytes(), &[secret]);
        assert!(
            !out.contains("ttery"),
            "the secret's end survived the cut: {}",
            &out[..80]
        );
    }

    #[test]
    fn logs_are_redacted_and_capped_at_their_end() {
        let raw = b"{\"msg\":\"auth failed for hunter2\"}\n";
        let out = prepare(raw, &["hunter2"]);
        assert!(!out.contains("hunter2"), "{out}");
        let big = format!("{}THE END\n", "x".repeat(MAX_BYTES + 10));
        let out = prepare(big.as_bytes(), &[]);
        assert!(out.ends_with("THE END\n"));
        assert!(
            out.starts_with("[… the first 18 bytes are left out …]"),
            "{}",
            &out[..60]
        );
        assert_eq!(
            key(
                &PoolName::parse("site-b").unwrap(),
                &JobId::parse("ev-1").unwrap(),
                2
            ),
            "logs/site-b/ev-1/attempt-2.log"
        );
    }
}
