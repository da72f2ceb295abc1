//! Uploads a job attempt's rclone log, secrets redacted, to `logs/<pool>/<job id>/attempt-<n>.log`
//! in the logs bucket, where the API's log viewer reads it.

use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use pbs_shared::{JobId, PoolName};
use tracing::warn;

use crate::rclone;

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

/// The log as uploaded: redacted, and at most `MAX_BYTES` (its end).
pub fn prepare(raw: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = if text.len() > MAX_BYTES {
        let mut cut = text.len() - MAX_BYTES;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        format!("[… the first {cut} bytes are left out …]\n{}", &text[cut..])
    } else {
        text.into_owned()
    };
    rclone::redact(&text, secrets)
}

impl LogUploader {
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
        match self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("text/plain; charset=utf-8")
            .body(ByteStream::from(body.into_bytes()))
            .send()
            .await
        {
            Ok(_) => Some(key),
            Err(e) => {
                warn!(bucket = %self.bucket, key = %key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "job log not uploaded");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
