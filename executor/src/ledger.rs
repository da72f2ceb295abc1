//! The executor's ledger: a SQLite database (WAL) recording every job it received, each attempt
//! and its outcome.
//!
//! It is what makes effects exactly-once on an at-least-once queue: a redelivered job that already
//! succeeded here for the same source version is acknowledged without copying again, and an SQS
//! message is deleted only after its outcome is committed here.

use std::path::Path;
use std::sync::Mutex;

use chrono::Utc;
use pbs_shared::{ErrorClass, JobId, JobMessage, JobState};
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, thiserror::Error)]
#[error("ledger: {0}")]
pub struct LedgerError(#[from] rusqlite::Error);

/// What the ledger knew about a job when it was delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Times this executor received the job, this delivery included.
    pub deliveries: u32,
    /// The job's last recorded state here, if it was seen before.
    pub previous: Option<PreviousRun>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousRun {
    pub state: JobState,
    pub source_version: String,
    pub files: u64,
    pub bytes: u64,
    pub duration_ms: u64,
}

/// A recorded outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: JobState,
    pub files: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn succeeded(files: u64, bytes: u64, duration_ms: u64) -> Self {
        Self {
            state: JobState::Succeeded,
            files,
            bytes,
            duration_ms,
            error_class: None,
            error: None,
        }
    }

    pub fn failed(class: ErrorClass, error: String, duration_ms: u64) -> Self {
        Self {
            state: JobState::Failed,
            files: 0,
            bytes: 0,
            duration_ms,
            error_class: Some(class),
            error: Some(error),
        }
    }

    /// An attempt that ended without an outcome; the job waits for its next delivery.
    pub fn requeued(class: Option<ErrorClass>, error: String, duration_ms: u64) -> Self {
        Self {
            state: JobState::Queued,
            files: 0,
            bytes: 0,
            duration_ms,
            error_class: class,
            error: Some(error),
        }
    }
}

/// A row of the ledger, for `pbs-executor jobs`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRow {
    pub job_id: String,
    pub template_id: Option<String>,
    pub state: String,
    pub deliveries: u32,
    pub attempts: u32,
    pub files: Option<i64>,
    pub bytes: Option<i64>,
    pub error: Option<String>,
    pub received_at: String,
    pub finished_at: Option<String>,
}

pub struct Ledger {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    job_id         TEXT PRIMARY KEY,
    template_id    TEXT,
    source_version TEXT NOT NULL,
    state          TEXT NOT NULL,
    deliveries     INTEGER NOT NULL DEFAULT 0,
    attempts       INTEGER NOT NULL DEFAULT 0,
    message        TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    files          INTEGER,
    bytes          INTEGER,
    duration_ms    INTEGER,
    error_class    TEXT,
    error          TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    state       TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (job_id, attempt)
);
";

/// The version of the source a job copies: every file's version id or ETag, in order.
pub fn source_version(job: &JobMessage) -> String {
    job.files
        .iter()
        .map(|f| {
            f.version_id
                .clone()
                .or_else(|| f.etag.clone())
                .unwrap_or_else(|| format!("size:{}", f.size))
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Ledger {
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `job` was delivered, returning what was known before.
    pub fn record_delivery(&self, job: &JobMessage, body: &str) -> Result<Delivery, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let version = source_version(job);
        let previous = tx
            .query_row(
                "SELECT state, source_version, COALESCE(files,0), COALESCE(bytes,0), COALESCE(duration_ms,0) FROM jobs WHERE job_id = ?1",
                params![job.job_id.as_str()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, i64>(3)? as u64,
                        r.get::<_, i64>(4)? as u64,
                    ))
                },
            )
            .optional()?
            .map(|(state, source_version, files, bytes, duration_ms)| PreviousRun {
                state: JobState::parse(&state).unwrap_or(JobState::Queued),
                source_version,
                files,
                bytes,
                duration_ms,
            });
        tx.execute(
            "INSERT INTO jobs (job_id, template_id, source_version, state, deliveries, message, received_at)
             VALUES (?1, ?2, ?3, 'queued', 1, ?4, ?5)
             ON CONFLICT(job_id) DO UPDATE SET deliveries = deliveries + 1",
            params![
                job.job_id.as_str(),
                job.template_id.as_str(),
                version,
                body,
                Utc::now().to_rfc3339()
            ],
        )?;
        let deliveries: u32 = tx.query_row(
            "SELECT deliveries FROM jobs WHERE job_id = ?1",
            params![job.job_id.as_str()],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(Delivery {
            deliveries,
            previous,
        })
    }

    /// Records the start of an attempt.
    pub fn start_attempt(&self, job_id: &JobId, attempt: u32) -> Result<(), LedgerError> {
        let now = Utc::now().to_rfc3339();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?2 WHERE job_id = ?1",
            params![job_id.as_str(), now],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO attempts (job_id, attempt, started_at, state) VALUES (?1, ?2, ?3, 'running')",
            params![job_id.as_str(), attempt, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Commits an attempt's outcome; called before the SQS message is deleted.
    pub fn finish(
        &self,
        job_id: &JobId,
        attempt: u32,
        outcome: &Outcome,
    ) -> Result<(), LedgerError> {
        let now = Utc::now().to_rfc3339();
        let class = outcome.error_class.map(ErrorClass::as_str);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET state = ?2, finished_at = ?3, files = ?4, bytes = ?5, duration_ms = ?6,
                 error_class = ?7, error = ?8 WHERE job_id = ?1",
            params![
                job_id.as_str(),
                outcome.state.as_str(),
                now,
                outcome.files as i64,
                outcome.bytes as i64,
                outcome.duration_ms as i64,
                class,
                outcome.error
            ],
        )?;
        tx.execute(
            "UPDATE attempts SET finished_at = ?3, state = ?4, error = ?5 WHERE job_id = ?1 AND attempt = ?2",
            params![job_id.as_str(), attempt, now, outcome.state.as_str(), outcome.error],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The most recent jobs, newest first.
    pub fn recent(&self, limit: u32) -> Result<Vec<JobRow>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT job_id, template_id, state, deliveries, attempts, files, bytes, error, received_at, finished_at
             FROM jobs ORDER BY received_at DESC, job_id LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![limit], |r| {
                Ok(JobRow {
                    job_id: r.get(0)?,
                    template_id: r.get(1)?,
                    state: r.get(2)?,
                    deliveries: r.get(3)?,
                    attempts: r.get(4)?,
                    files: r.get(5)?,
                    bytes: r.get(6)?,
                    error: r.get(7)?,
                    received_at: r.get(8)?,
                    finished_at: r.get(9)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobMessage {
        JobMessage::parse(include_str!("../../tests/fixtures/job-message.v1.json")).unwrap()
    }

    #[test]
    fn deliveries_are_counted_and_outcomes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let job = job();
        {
            let ledger = Ledger::open(&path).unwrap();
            let first = ledger.record_delivery(&job, "{}").unwrap();
            assert_eq!(
                first,
                Delivery {
                    deliveries: 1,
                    previous: None
                }
            );
            ledger.start_attempt(&job.job_id, 1).unwrap();
            let outcome = Outcome::succeeded(1, 1048576, 5);
            ledger.finish(&job.job_id, 1, &outcome).unwrap();
        }
        let ledger = Ledger::open(&path).unwrap();
        let again = ledger.record_delivery(&job, "{}").unwrap();
        assert_eq!(again.deliveries, 2);
        let prev = again.previous.unwrap();
        assert_eq!(prev.state, JobState::Succeeded);
        assert_eq!(prev.source_version, source_version(&job));
        assert_eq!(prev.bytes, 1048576);
        let rows = ledger.recent(10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].attempts, 1);
        assert_eq!(rows[0].deliveries, 2);
    }

    #[test]
    fn source_version_prefers_version_id_then_etag() {
        let mut job = job();
        assert_eq!(source_version(&job), "\"9e107d9d372bb6826bd81d3542a419d6\"");
        job.files[0].version_id = Some("v7".into());
        assert_eq!(source_version(&job), "v7");
    }
}
