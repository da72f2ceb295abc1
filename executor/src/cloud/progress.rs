//! A running job's progress, read from rclone's JSON statistics (one `stats` line a second in the
//! job's log) and sent to the StatusQueue every `cloud.progress_seconds` while it changes. Progress
//! skips the outbox: a lost figure is replaced by the next one.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use pbs_shared::message::{JobProgress, V1};
use pbs_shared::{ExecutorId, JobMessage, PoolName, StatusMessage};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::jobs::ports::{Boxed, ProgressWatch};

/// Where progress goes.
#[derive(Clone)]
pub struct ProgressSink {
    pub sqs: aws_sdk_sqs::Client,
    pub status_queue_url: String,
    pub executor_id: ExecutorId,
    pub pool: PoolName,
    pub every: Duration,
}

/// rclone's figures from its latest `stats` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub bytes: u64,
    pub total_bytes: u64,
    pub transfers: u64,
    pub total_transfers: u64,
    pub speed: u64,
    pub eta: Option<u64>,
}

/// The last `stats` of the complete lines in `text`.
pub fn last_stats(text: &str) -> Option<Stats> {
    text.lines()
        .rev()
        .filter(|l| l.contains("\"stats\""))
        .find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let s = v.get("stats")?;
            let n = |k: &str| {
                s.get(k)
                    .and_then(serde_json::Value::as_f64)
                    .map(|f| f.max(0.0) as u64)
            };
            Some(Stats {
                bytes: n("bytes")?,
                total_bytes: n("totalBytes").unwrap_or(0),
                transfers: n("transfers").unwrap_or(0),
                total_transfers: n("totalTransfers").unwrap_or(0),
                speed: n("speed").unwrap_or(0),
                eta: n("eta"),
            })
        })
}

/// Reads what was appended to a log since the last call, a whole line at a time.
struct Tail {
    path: PathBuf,
    offset: u64,
}

impl Tail {
    fn new(path: &Path) -> Self {
        Self {
            offset: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            path: path.to_owned(),
        }
    }

    fn read(&mut self) -> String {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return String::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return String::new();
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return String::new();
        }
        // Only whole lines; a line being written is read next time.
        let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.offset += end as u64;
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }
}

impl ProgressSink {
    /// Sends `job`'s progress from its log until `stop`.
    pub async fn watch(&self, job: &JobMessage, attempt: u32, log: &Path, stop: CancellationToken) {
        let mut tail = Tail::new(log);
        let planned_bytes = job.total_bytes();
        let planned_files = job.files.len() as u64;
        let mut last_sent = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            let Some(stats) = last_stats(&tail.read()) else {
                continue;
            };
            if last_sent == Some(stats) {
                continue;
            }
            last_sent = Some(stats);
            let message = StatusMessage::Progress(JobProgress {
                v: V1,
                job_id: job.job_id.clone(),
                executor_id: self.executor_id.clone(),
                pool: self.pool.clone(),
                attempt,
                at: Utc::now(),
                bytes: stats.bytes,
                total_bytes: stats.total_bytes.max(planned_bytes),
                files_done: stats.transfers,
                files_total: stats.total_transfers.max(planned_files),
                bytes_per_second: stats.speed,
                eta_seconds: stats.eta,
            });
            let body = serde_json::to_string(&message).expect("status messages serialise");
            if let Err(e) = self
                .sqs
                .send_message()
                .queue_url(&self.status_queue_url)
                .message_body(body)
                .send()
                .await
            {
                debug!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "progress not sent");
            }
        }
    }
}

impl ProgressWatch for ProgressSink {
    fn watch(
        &self,
        job: JobMessage,
        attempt: u32,
        log: PathBuf,
        stop: CancellationToken,
    ) -> Boxed<'static, ()> {
        let sink = self.clone();
        Box::pin(async move { ProgressSink::watch(&sink, &job, attempt, &log, stop).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_complete_stats_line_wins() {
        let log = concat!(
            r#"{"level":"info","msg":"x","stats":{"bytes":10,"totalBytes":100,"speed":5.5,"eta":18,"transfers":0,"totalTransfers":1}}"#,
            "\n",
            r#"{"level":"error","msg":"something else"}"#,
            "\n",
            r#"{"level":"info","msg":"y","stats":{"bytes":60,"totalBytes":100,"speed":25.0,"eta":null,"transfers":0,"totalTransfers":1}}"#,
            "\n"
        );
        assert_eq!(
            last_stats(log),
            Some(Stats {
                bytes: 60,
                total_bytes: 100,
                transfers: 0,
                total_transfers: 1,
                speed: 25,
                eta: None
            })
        );
        assert_eq!(last_stats(r#"{"level":"info","msg":"no stats"}"#), None);
        assert_eq!(last_stats("not json \"stats\""), None);
    }

    #[test]
    fn a_tail_reads_only_whole_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "old\n").unwrap();
        let mut tail = Tail::new(&path);
        assert_eq!(tail.read(), "");
        std::fs::write(&path, "old\nnew\npart").unwrap();
        assert_eq!(tail.read(), "new\n");
        std::fs::write(&path, "old\nnew\npartial done\n").unwrap();
        assert_eq!(tail.read(), "partial done\n");
    }
}
