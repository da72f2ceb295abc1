//! The executor's ledger: a SQLite database (WAL) recording every job it received, each attempt
//! and its outcome.
//!
//! It is what makes effects exactly-once on an at-least-once queue: a redelivered job that already
//! succeeded here for the same source version is acknowledged without copying again, and an SQS
//! message is deleted only after its outcome is committed here.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use pbs_shared::message::sequencer_cmp;
use pbs_shared::{ErrorClass, JobId, JobMessage, JobState};
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A write handed to the blocking pool did not come back (the runtime is shutting down).
    #[error("ledger: the write did not finish: {0}")]
    Unfinished(String),
}

mod journal;
pub use journal::{Journal, Reporter};

/// What a delivery of a job may do, decided atomically when it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This delivery runs the job; the ledger now shows it running.
    Run { deliveries: u32 },
    /// The job already ended here (succeeded, or failed for good) for the same source version.
    Done(PreviousRun),
    /// Another delivery of the same job is running here right now.
    InFlight,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousRun {
    pub state: JobState,
    /// The attempt that reached `state` (0 if none finished).
    pub attempt: u32,
    pub source_version: String,
    pub files: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
}

/// A recorded outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: JobState,
    /// For a success: what an operator should know (files skipped as superseded).
    pub note: Option<String>,
    pub files: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn succeeded(files: u64, bytes: u64, duration_ms: u64, note: Option<String>) -> Self {
        Self {
            state: JobState::Succeeded,
            note,
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
            note: None,
            files: 0,
            bytes: 0,
            duration_ms,
            error_class: Some(class),
            error: Some(error),
        }
    }

    /// Stopped at an operator's request (`by`).
    pub fn cancelled(by: &str, duration_ms: u64) -> Self {
        Self {
            state: JobState::Cancelled,
            note: None,
            files: 0,
            bytes: 0,
            duration_ms,
            error_class: None,
            error: Some(format!("cancelled by {by}")),
        }
    }

    /// An attempt that ended without an outcome; the job waits for its next delivery.
    pub fn requeued(class: Option<ErrorClass>, error: String, duration_ms: u64) -> Self {
        Self {
            state: JobState::Queued,
            note: None,
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
    pub error_class: Option<String>,
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
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS paths (
    endpoint  TEXT NOT NULL,
    dest_path TEXT NOT NULL,
    sequencer TEXT NOT NULL,
    job_id    TEXT NOT NULL,
    PRIMARY KEY (endpoint, dest_path)
);
CREATE TABLE IF NOT EXISTS cloud_rules (
    pool TEXT PRIMARY KEY,
    etag TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    rule     TEXT PRIMARY KEY,
    last_run TEXT NOT NULL
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

fn insert_outbox(conn: &Connection, job_id: &JobId, body: &str) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO outbox (job_id, body, created_at) VALUES (?1, ?2, ?3)",
        params![job_id.as_str(), body, Utc::now().to_rfc3339()],
    )?;
    Ok(())
}

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
        // Another process opening the ledger at the same moment (the CLI beside a starting
        // daemon) can find it locked where SQLite's busy wait does not apply (the switch to WAL
        // and the schema of a new ledger): try again for a few seconds before giving up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Self::open_once(path) {
                Err(LedgerError::Sqlite(e))
                    if matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => return opened,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Self, LedgerError> {
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

    /// Records that `job` was delivered and decides, in one transaction, whether this delivery
    /// runs it. Two deliveries of one job can never both be told to run.
    pub fn claim(&self, job: &JobMessage, body: &str) -> Result<Claim, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let version = source_version(job);
        let previous = tx
            .query_row(
                "SELECT state, source_version, COALESCE(files,0), COALESCE(bytes,0), COALESCE(duration_ms,0),
                        (SELECT COALESCE(MAX(attempt), 0) FROM attempts a WHERE a.job_id = jobs.job_id AND a.state = jobs.state),
                        error_class, error
                 FROM jobs WHERE job_id = ?1",
                params![job.job_id.as_str()],
                |r| {
                    Ok(PreviousRun {
                        state: JobState::parse(&r.get::<_, String>(0)?).unwrap_or(JobState::Queued),
                        source_version: r.get(1)?,
                        files: r.get::<_, i64>(2)? as u64,
                        bytes: r.get::<_, i64>(3)? as u64,
                        duration_ms: r.get::<_, i64>(4)? as u64,
                        attempt: r.get(5)?,
                        error_class: r
                            .get::<_, Option<String>>(6)?
                            .and_then(|c| ErrorClass::parse(&c)),
                        error: r.get(7)?,
                    })
                },
            )
            .optional()?;
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
        let claim = match previous {
            Some(p)
                if matches!(
                    p.state,
                    JobState::Succeeded | JobState::Failed | JobState::Cancelled
                ) && p.source_version == version =>
            {
                Claim::Done(p)
            }
            Some(p) if p.state == JobState::Running => Claim::InFlight,
            _ => {
                tx.execute(
                    "UPDATE jobs SET state = 'running', source_version = ?2, message = ?3 WHERE job_id = ?1",
                    params![job.job_id.as_str(), version, body],
                )?;
                let deliveries = tx.query_row(
                    "SELECT deliveries FROM jobs WHERE job_id = ?1",
                    params![job.job_id.as_str()],
                    |r| r.get(0),
                )?;
                Claim::Run { deliveries }
            }
        };
        tx.commit()?;
        Ok(claim)
    }

    /// Records the start of an attempt; with `report` (its `running` report), the status message
    /// joins the outbox in the same transaction.
    pub fn start_attempt(
        &self,
        job_id: &JobId,
        attempt: u32,
        report: Option<&str>,
    ) -> Result<(), LedgerError> {
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
        if let Some(body) = report {
            insert_outbox(&tx, job_id, body)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Commits an attempt's outcome; called before the SQS message is deleted. With `report` (a
    /// final outcome's), the status message joins the outbox in the same transaction, so an
    /// outcome is never recorded without its report or reported without being recorded; reports
    /// of the job still waiting in the outbox (its `running`) are dropped, since the final report
    /// says all they would (the cloud accepts a job going from queued straight to its end).
    /// During a backlog this halves the reports the cloud has to apply.
    pub fn finish(
        &self,
        job_id: &JobId,
        attempt: u32,
        outcome: &Outcome,
        report: Option<&str>,
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
        if let Some(body) = report {
            tx.execute(
                "DELETE FROM outbox WHERE job_id = ?1",
                params![job_id.as_str()],
            )?;
            insert_outbox(&tx, job_id, body)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The sequencer of the newest write delivered to `dest_path` on `endpoint`, if known.
    pub fn delivered_sequencer(
        &self,
        endpoint: &str,
        dest_path: &str,
    ) -> Result<Option<String>, LedgerError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT sequencer FROM paths WHERE endpoint = ?1 AND dest_path = ?2",
                params![endpoint, dest_path],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// [`Ledger::record_delivered`] for the files of one copy `(dest_path, sequencer, job)`, in
    /// one transaction: one disk sync for a batch, not one per file.
    pub fn record_delivered_all(
        &self,
        endpoint: &str,
        writes: &[(&str, &str, &JobId)],
    ) -> Result<(), LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (dest_path, sequencer, job_id) in writes {
            let known: Option<String> = tx
                .query_row(
                    "SELECT sequencer FROM paths WHERE endpoint = ?1 AND dest_path = ?2",
                    params![endpoint, dest_path],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_some_and(|k| sequencer_cmp(&k, sequencer).is_gt()) {
                continue;
            }
            tx.execute(
                "INSERT INTO paths (endpoint, dest_path, sequencer, job_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(endpoint, dest_path) DO UPDATE SET sequencer = ?3, job_id = ?4",
                params![endpoint, dest_path, sequencer, job_id.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds a status report to the outbox.
    pub fn enqueue_report(&self, job_id: &JobId, body: &str) -> Result<(), LedgerError> {
        insert_outbox(&self.conn(), job_id, body)?;
        Ok(())
    }

    /// The oldest `limit` reports not yet sent, oldest first.
    pub fn outbox_head(&self, limit: u32) -> Result<Vec<(i64, String)>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT seq, body FROM outbox ORDER BY seq LIMIT ?1")?;
        let rows = stmt
            .query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Removes reports that were delivered.
    pub fn outbox_remove(&self, seqs: &[i64]) -> Result<(), LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for seq in seqs {
            tx.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Reports waiting to be sent.
    pub fn outbox_depth(&self) -> Result<u64, LedgerError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Jobs whose last attempt was still running when the executor stopped without settling them
    /// (a crash or `kill -9`): `(job_id, attempt, job message body)`.
    pub fn unfinished(&self) -> Result<Vec<(String, u32, String)>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT j.job_id, COALESCE(MAX(a.attempt), 0), j.message FROM jobs j
             LEFT JOIN attempts a ON a.job_id = j.job_id
             WHERE j.state = 'running' GROUP BY j.job_id",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Marks an attempt that a crash interrupted; the job waits for its next delivery.
    pub fn mark_interrupted(&self, job_id: &str, attempt: u32) -> Result<(), LedgerError> {
        let now = Utc::now().to_rfc3339();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET state = 'queued', error = 'interrupted: the executor stopped during the copy' WHERE job_id = ?1 AND state = 'running'",
            params![job_id],
        )?;
        tx.execute(
            "UPDATE attempts SET state = 'interrupted', finished_at = ?3 WHERE job_id = ?1 AND attempt = ?2",
            params![job_id, attempt, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Proves the ledger takes writes (for the health check): a write transaction, rolled back.
    pub fn check_writable(&self) -> Result<(), LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO schedules (rule, last_run) VALUES ('.healthz', '')",
            [],
        )?;
        tx.rollback()?;
        Ok(())
    }

    /// A job's current state, if the ledger has it.
    pub fn job_state(&self, job_id: &JobId) -> Result<Option<JobState>, LedgerError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT state FROM jobs WHERE job_id = ?1",
                params![job_id.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|s| JobState::parse(&s)))
    }

    /// The job message a job was recorded with, if the ledger has the job.
    pub fn job_message(&self, job_id: &JobId) -> Result<Option<String>, LedgerError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT message FROM jobs WHERE job_id = ?1",
                params![job_id.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()?)
    }

    /// Attempts recorded for a job (so a job made again after a restart numbers on).
    pub fn attempt_count(&self, job_id: &JobId) -> Result<u32, LedgerError> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(MAX(attempt), 0) FROM attempts WHERE job_id = ?1",
            params![job_id.as_str()],
            |r| r.get(0),
        )?)
    }

    /// The last copy of the pool's rule document from the cloud: (ETag, body).
    pub fn cloud_rules(&self, pool: &str) -> Result<Option<(String, String)>, LedgerError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT etag, body FROM cloud_rules WHERE pool = ?1",
                params![pool],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn set_cloud_rules(&self, pool: &str, etag: &str, body: &str) -> Result<(), LedgerError> {
        self.conn().execute(
            "INSERT INTO cloud_rules (pool, etag, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(pool) DO UPDATE SET etag = excluded.etag, body = excluded.body",
            params![pool, etag, body],
        )?;
        Ok(())
    }

    /// The last scheduled time a schedule ran or skipped.
    pub fn schedule_last(&self, rule: &str) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT last_run FROM schedules WHERE rule = ?1",
                params![rule],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    pub fn set_schedule_last(&self, rule: &str, at: DateTime<Utc>) -> Result<(), LedgerError> {
        self.conn().execute(
            "INSERT INTO schedules (rule, last_run) VALUES (?1, ?2)
             ON CONFLICT(rule) DO UPDATE SET last_run = excluded.last_run",
            params![rule, at.to_rfc3339()],
        )?;
        Ok(())
    }

    /// Everything the ledger knows of one job: its row, message and attempts.
    pub fn job_detail(&self, job_id: &str) -> Result<Option<serde_json::Value>, LedgerError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT job_id, template_id, state, deliveries, attempts, files, bytes, duration_ms,
                        error_class, error, received_at, started_at, finished_at, message
                 FROM jobs WHERE job_id = ?1",
                params![job_id],
                |r| {
                    let message: String = r.get(13)?;
                    Ok(serde_json::json!({
                        "job_id": r.get::<_, String>(0)?,
                        "template_id": r.get::<_, Option<String>>(1)?,
                        "state": r.get::<_, String>(2)?,
                        "deliveries": r.get::<_, u32>(3)?,
                        "attempts": r.get::<_, u32>(4)?,
                        "files": r.get::<_, Option<i64>>(5)?,
                        "bytes": r.get::<_, Option<i64>>(6)?,
                        "duration_ms": r.get::<_, Option<i64>>(7)?,
                        "error_class": r.get::<_, Option<String>>(8)?,
                        "error": r.get::<_, Option<String>>(9)?,
                        "received_at": r.get::<_, String>(10)?,
                        "started_at": r.get::<_, Option<String>>(11)?,
                        "finished_at": r.get::<_, Option<String>>(12)?,
                        "job": serde_json::from_str::<serde_json::Value>(&message)
                            .unwrap_or(serde_json::Value::String(message)),
                    }))
                },
            )
            .optional()?;
        let Some(mut row) = row else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT attempt, started_at, finished_at, state, error FROM attempts
             WHERE job_id = ?1 ORDER BY attempt",
        )?;
        let attempts = stmt
            .query_map(params![job_id], |r| {
                Ok(serde_json::json!({
                    "attempt": r.get::<_, u32>(0)?,
                    "started_at": r.get::<_, String>(1)?,
                    "finished_at": r.get::<_, Option<String>>(2)?,
                    "state": r.get::<_, String>(3)?,
                    "error": r.get::<_, Option<String>>(4)?,
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        row["attempt_history"] = serde_json::Value::Array(attempts);
        Ok(Some(row))
    }

    /// The most recent jobs, newest first.
    pub fn recent(&self, limit: u32) -> Result<Vec<JobRow>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT job_id, template_id, state, deliveries, attempts, files, bytes, error, received_at, finished_at, error_class
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
                    error_class: r.get(10)?,
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
        JobMessage::parse(include_str!("../../../tests/fixtures/job-message.v1.json")).unwrap()
    }

    #[test]
    fn two_openers_of_a_new_ledger_at_once_both_succeed() {
        let mut failures = Vec::new();
        for _ in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ledger.sqlite");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let (p, b) = (path.clone(), barrier.clone());
            let other = std::thread::spawn(move || {
                b.wait();
                Ledger::open(&p).err().map(|e| e.to_string())
            });
            barrier.wait();
            let mine = Ledger::open(&path).err().map(|e| e.to_string());
            failures.extend(mine.into_iter().chain(other.join().unwrap()));
        }
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn deliveries_are_counted_and_outcomes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let job = job();
        {
            let ledger = Ledger::open(&path).unwrap();
            let first = ledger.claim(&job, "{}").unwrap();
            assert_eq!(first, Claim::Run { deliveries: 1 });
            // A concurrent duplicate is not allowed to run too.
            assert_eq!(ledger.claim(&job, "{}").unwrap(), Claim::InFlight);
            ledger.start_attempt(&job.job_id, 1, None).unwrap();
            let outcome = Outcome::succeeded(1, 1048576, 5, None);
            ledger
                .finish(&job.job_id, 1, &outcome, Some("{\"report\":1}"))
                .unwrap();
        }
        let ledger = Ledger::open(&path).unwrap();
        let Claim::Done(prev) = ledger.claim(&job, "{}").unwrap() else {
            panic!("a succeeded job was claimed again")
        };
        assert_eq!(prev.state, JobState::Succeeded);
        assert_eq!(prev.source_version, source_version(&job));
        assert_eq!(prev.bytes, 1048576);
        assert_eq!(prev.attempt, 1);
        let rows = ledger.recent(10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].attempts, 1);
        assert_eq!(rows[0].deliveries, 3);
    }

    #[test]
    fn interrupted_and_changed_jobs_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
        let mut job = job();
        assert_eq!(
            ledger.claim(&job, "{}").unwrap(),
            Claim::Run { deliveries: 1 }
        );
        ledger.start_attempt(&job.job_id, 1, None).unwrap();
        // A crash: recovery finds the running job and marks it interrupted.
        let unfinished = ledger.unfinished().unwrap();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].1, 1);
        ledger.mark_interrupted(job.job_id.as_str(), 1).unwrap();
        assert!(ledger.unfinished().unwrap().is_empty());
        assert_eq!(
            ledger.claim(&job, "{}").unwrap(),
            Claim::Run { deliveries: 2 }
        );
        ledger.start_attempt(&job.job_id, 2, None).unwrap();
        ledger
            .finish(&job.job_id, 2, &Outcome::succeeded(1, 10, 1, None), None)
            .unwrap();
        // A final failure is final for later deliveries too.
        let other = JobId::parse("ev-failed").unwrap();
        let mut failed_job = job.clone();
        failed_job.job_id = other.clone();
        assert_eq!(
            ledger.claim(&failed_job, "{}").unwrap(),
            Claim::Run { deliveries: 1 }
        );
        ledger.start_attempt(&other, 1, None).unwrap();
        let failure = Outcome::failed(ErrorClass::NotFound, "gone".into(), 1);
        ledger.finish(&other, 1, &failure, None).unwrap();
        let Claim::Done(prev) = ledger.claim(&failed_job, "{}").unwrap() else {
            panic!("a finally failed job was run again")
        };
        assert_eq!((prev.state, prev.attempt), (JobState::Failed, 1));
        assert_eq!(prev.error_class, Some(ErrorClass::NotFound));
        assert_eq!(prev.error.as_deref(), Some("gone"));
        // A new version of the source under the same job id is copied again.
        job.files[0].etag = Some("\"other\"".into());
        assert_eq!(
            ledger.claim(&job, "{}").unwrap(),
            Claim::Run { deliveries: 3 }
        );
    }

    #[test]
    fn only_newer_writes_replace_the_delivered_sequencer() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
        let id = JobId::parse("ev-1").unwrap();
        assert_eq!(ledger.delivered_sequencer("disk", "a.mov").unwrap(), None);
        ledger
            .record_delivered_all("disk", &[("a.mov", "00A2", &id)])
            .unwrap();
        ledger
            .record_delivered_all("disk", &[("a.mov", "00A1", &id)])
            .unwrap();
        assert_eq!(
            ledger
                .delivered_sequencer("disk", "a.mov")
                .unwrap()
                .as_deref(),
            Some("00A2")
        );
        ledger
            .record_delivered_all("disk", &[("a.mov", "00B0", &id)])
            .unwrap();
        assert_eq!(
            ledger
                .delivered_sequencer("disk", "a.mov")
                .unwrap()
                .as_deref(),
            Some("00B0")
        );
        assert_eq!(ledger.delivered_sequencer("share", "a.mov").unwrap(), None);
    }

    #[test]
    fn a_copy_records_its_files_together_and_never_over_a_newer_write() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
        let id = job().job_id;
        ledger
            .record_delivered_all("disk", &[("b.mov", "00C0", &id)])
            .unwrap();
        ledger
            .record_delivered_all(
                "disk",
                &[
                    ("a.mov", "00A1", &id),
                    ("b.mov", "00B0", &id),
                    ("c.mov", "0001", &id),
                ],
            )
            .unwrap();
        let known = |p| ledger.delivered_sequencer("disk", p).unwrap();
        assert_eq!(known("a.mov").as_deref(), Some("00A1"));
        assert_eq!(
            known("b.mov").as_deref(),
            Some("00C0"),
            "the newer write stays"
        );
        assert_eq!(known("c.mov").as_deref(), Some("0001"));
        ledger.record_delivered_all("disk", &[]).unwrap();
    }

    #[test]
    fn the_outbox_keeps_reports_in_order_across_reopen_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let job = job();
        {
            let ledger = Ledger::open(&path).unwrap();
            for i in 0..3 {
                ledger
                    .enqueue_report(&job.job_id, &format!("r{i}"))
                    .unwrap();
            }
        }
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.outbox_depth().unwrap(), 3);
        let head = ledger.outbox_head(2).unwrap();
        assert_eq!(
            head.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
            ["r0", "r1"]
        );
        ledger.outbox_remove(&[head[0].0]).unwrap();
        let head = ledger.outbox_head(10).unwrap();
        assert_eq!(
            head.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
            ["r1", "r2"]
        );
    }

    #[test]
    fn a_final_report_replaces_the_jobs_reports_still_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
        let job = job();
        let other = JobId::parse("ev-other").unwrap();
        ledger.claim(&job, "{}").unwrap();
        ledger.start_attempt(&job.job_id, 1, None).unwrap();
        ledger.enqueue_report(&job.job_id, "running").unwrap();
        ledger.enqueue_report(&other, "other running").unwrap();
        ledger
            .finish(
                &job.job_id,
                1,
                &Outcome::succeeded(1, 1, 1, None),
                Some("succeeded"),
            )
            .unwrap();
        let head = ledger.outbox_head(10).unwrap();
        assert_eq!(
            head.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
            ["other running", "succeeded"],
            "the job's running report is dropped, the other job's kept"
        );
    }

    #[test]
    fn source_version_prefers_version_id_then_etag() {
        let mut job = job();
        assert_eq!(source_version(&job), "\"9e107d9d372bb6826bd81d3542a419d6\"");
        job.files[0].version_id = Some("v7".into());
        assert_eq!(source_version(&job), "v7");
    }
}
