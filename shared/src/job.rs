//! Job states, their forward-only transitions, error classes and deterministic job ids.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::names::{JobId, TemplateId};

/// Where a job is in its life: `queued → running → succeeded | failed | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Order of progress; a job's rank never decreases. Terminal states share the top rank, so
    /// none of them can replace another.
    pub fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Running => 1,
            Self::Succeeded | Self::Failed | Self::Cancelled => 2,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 2
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a report of `(next, next_attempt)` may replace the recorded `(self, attempt)`.
    ///
    /// State moves forward; a new attempt may restart `running` (a retry after a crash), but
    /// nothing replaces a terminal state, and a late report of an older attempt changes nothing.
    /// The status Lambda's DynamoDB condition expression encodes exactly this rule.
    pub fn may_become(self, attempt: u32, next: JobState, next_attempt: u32) -> bool {
        if self.is_terminal() {
            return false;
        }
        match next_attempt.cmp(&attempt) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => next.rank() > self.rank(),
            std::cmp::Ordering::Greater => next.rank() >= JobState::Running.rank(),
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job failed, which decides whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Network, throttling or a transient server error: retrying may succeed.
    Retryable,
    /// Credentials refused or permission denied.
    Auth,
    /// The source object, share or path does not exist.
    NotFound,
    /// The destination holds something that may not be replaced.
    Conflict,
    /// The delivered file does not match its source (hash or size) after the copy.
    Integrity,
    /// The job itself is invalid (unsafe path, unknown endpoint, malformed message).
    BadRequest,
    /// The site does not allow it: another pool's job, or an endpoint its `cloud` setting closes.
    Forbidden,
    /// A fault in the executor or the Lambdas.
    Internal,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Integrity => "integrity",
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Retryable,
            Self::Auth,
            Self::NotFound,
            Self::Conflict,
            Self::Integrity,
            Self::BadRequest,
            Self::Forbidden,
            Self::Internal,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Retryable | Self::Integrity | Self::Internal)
    }
}

/// The id of the job a template makes for one S3 object event.
///
/// Deterministic, so a duplicate delivery of the same event maps to the same job: it hashes the
/// template, bucket, key and what tells one write of the key from another (the version id on a
/// versioned bucket, else the event sequencer, else the ETag).
pub fn event_job_id(
    template: &TemplateId,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    sequencer: Option<&str>,
    etag: Option<&str>,
) -> JobId {
    let (kind, discriminator) = match (version_id, sequencer, etag) {
        (Some(v), _, _) if !v.is_empty() && v != "null" => ("v", v),
        (_, Some(s), _) if !s.is_empty() => ("s", s),
        (_, _, Some(e)) => ("e", e),
        _ => ("n", ""),
    };
    let mut h = Sha256::new();
    for part in [template.as_str(), bucket, key, kind, discriminator] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    JobId::parse(format!("ev-{}", &digest[..40])).expect("hex digest is a valid job id")
}

/// The id of a job that coalesces the events whose own ids are `members` (the jobs each would
/// have been alone): the same for the same events in any order.
pub fn coalesced_job_id(members: &[&JobId]) -> JobId {
    let mut ids: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update((id.len() as u64).to_be_bytes());
        h.update(id.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    JobId::parse(format!("co-{}", &digest[..40])).expect("hex digest is a valid job id")
}

/// The id of the chain step made from template `next` after job `parent`: the same for a
/// repeated report, so the step is started once.
pub fn chain_job_id(parent: &str, next: &TemplateId) -> JobId {
    let mut h = Sha256::new();
    for part in [parent, next.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    JobId::parse(format!("ch-{}", &digest[..40])).expect("hex digest is a valid job id")
}

/// The id prefix of jobs an executor makes for a watched file (`wt-…`).
pub const WATCH_JOB_PREFIX: &str = "wt";
/// The id prefix of jobs an executor makes for a scheduled run (`sc-…`).
pub const SCHEDULE_JOB_PREFIX: &str = "sc";

fn rule_job_id(prefix: &str, parts: &[&str]) -> JobId {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let hex = hex::encode(h.finalize());
    JobId::parse(format!("{prefix}-{}", &hex[..40])).expect("valid job id")
}

/// A watched file's job id: the same file in the same state is the same job, whichever executor
/// of the pool sees it.
pub fn watch_job_id(rule: &TemplateId, rel: &str, size: u64, mtime_ns: i128) -> JobId {
    rule_job_id(
        WATCH_JOB_PREFIX,
        &[rule.as_str(), rel, &size.to_string(), &mtime_ns.to_string()],
    )
}

/// A scheduled run's job id: one job per rule and scheduled time.
pub fn schedule_job_id(rule: &TemplateId, scheduled_for: DateTime<Utc>) -> JobId {
    rule_job_id(
        SCHEDULE_JOB_PREFIX,
        &[rule.as_str(), &scheduled_for.to_rfc3339()],
    )
}

/// The id of a retry, asked at `at`, of job `of` made by an executor's rule: the same kind of
/// id (`wt-`, `sc-`), so the executor's reports create it in the cloud like its other jobs.
pub fn rule_retry_job_id(of: &JobId, at: DateTime<Utc>) -> JobId {
    let prefix = if is_watch_job(of) {
        WATCH_JOB_PREFIX
    } else {
        SCHEDULE_JOB_PREFIX
    };
    rule_job_id(prefix, &[of.as_str(), "retry", &at.to_rfc3339()])
}

/// Whether `id` is a watched file's job.
pub fn is_watch_job(id: &JobId) -> bool {
    id.as_str()
        .strip_prefix(WATCH_JOB_PREFIX)
        .is_some_and(|rest| rest.starts_with('-'))
}

/// Whether `id` is one an executor makes itself (watch, schedule): the only jobs a status report
/// may create in the cloud. Every other job is made in the cloud before any executor sees it.
pub fn made_on_executor(id: &JobId) -> bool {
    [WATCH_JOB_PREFIX, SCHEDULE_JOB_PREFIX].iter().any(|p| {
        id.as_str()
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn only_watch_and_schedule_ids_are_made_on_executors() {
        for (id, local) in [
            ("wt-0a1b", true),
            ("sc-0a1b", true),
            ("ev-0a1b", false),
            ("manual-0a1b", false),
            ("ch-0a1b", false),
            ("wtx-0a1b", false),
            ("sc", false),
        ] {
            assert_eq!(made_on_executor(&JobId::parse(id).unwrap()), local, "{id}");
        }
    }

    #[test]
    fn state_only_moves_forward_within_an_attempt() {
        assert!(Queued.may_become(0, Running, 1));
        assert!(Queued.may_become(1, Running, 1));
        assert!(Running.may_become(1, Succeeded, 1));
        assert!(Running.may_become(1, Failed, 1));
        assert!(Queued.may_become(1, Succeeded, 1));
        assert!(!Running.may_become(1, Running, 1));
        assert!(!Running.may_become(1, Queued, 1));
    }

    #[test]
    fn coalesced_ids_depend_on_the_members_not_their_order() {
        let t = TemplateId::parse("t").unwrap();
        let a = event_job_id(&t, "b", "k/1", None, Some("01"), None);
        let b = event_job_id(&t, "b", "k/2", None, Some("02"), None);
        let c = event_job_id(&t, "b", "k/3", None, Some("03"), None);
        let ab = coalesced_job_id(&[&a, &b]);
        assert!(ab.as_str().starts_with("co-"), "{ab}");
        assert_eq!(ab, coalesced_job_id(&[&b, &a]));
        assert_ne!(ab, coalesced_job_id(&[&a, &b, &c]));
        assert_ne!(ab, coalesced_job_id(&[&a]));
    }

    #[test]
    fn terminal_states_are_final() {
        for terminal in [Succeeded, Failed, Cancelled] {
            for next in JobState::ALL {
                assert!(!terminal.may_become(1, next, 1), "{terminal} -> {next}");
                assert!(
                    !terminal.may_become(1, next, 2),
                    "{terminal} -> {next} (attempt 2)"
                );
            }
        }
    }

    #[test]
    fn late_running_after_succeeded_changes_nothing() {
        assert!(!Succeeded.may_become(1, Running, 1));
    }

    #[test]
    fn a_new_attempt_may_restart_running_but_an_old_one_may_not() {
        assert!(Running.may_become(1, Running, 2));
        assert!(!Running.may_become(2, Running, 1));
        assert!(!Running.may_become(2, Succeeded, 1));
        assert!(!Running.may_become(1, Queued, 2));
    }

    #[test]
    fn error_class_names_match_serde() {
        for c in [
            ErrorClass::Retryable,
            ErrorClass::Auth,
            ErrorClass::NotFound,
            ErrorClass::Conflict,
            ErrorClass::BadRequest,
            ErrorClass::Internal,
        ] {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
    }

    #[test]
    fn state_names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(JobState::parse("done"), None);
    }

    #[test]
    fn event_job_ids_are_deterministic_and_discriminating() {
        let t = TemplateId::parse("t1").unwrap();
        let a = event_job_id(&t, "b", "k", None, Some("0A1"), Some("e1"));
        assert_eq!(a, event_job_id(&t, "b", "k", None, Some("0A1"), Some("e1")));
        assert_ne!(a, event_job_id(&t, "b", "k", None, Some("0A2"), Some("e1")));
        assert_ne!(
            a,
            event_job_id(&t, "b", "k2", None, Some("0A1"), Some("e1"))
        );
        assert_ne!(
            a,
            event_job_id(
                &TemplateId::parse("t2").unwrap(),
                "b",
                "k",
                None,
                Some("0A1"),
                None
            )
        );
        // A version id wins over the sequencer; "null" (unversioned bucket) does not count.
        assert_eq!(
            event_job_id(&t, "b", "k", Some("v1"), Some("x"), None),
            event_job_id(&t, "b", "k", Some("v1"), Some("y"), None)
        );
        assert_eq!(
            event_job_id(&t, "b", "k", Some("null"), Some("0A1"), Some("e1")),
            a
        );
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(
            event_job_id(&t, "ab", "c", None, None, None),
            event_job_id(&t, "a", "bc", None, None, None)
        );
        assert!(a.as_str().starts_with("ev-") && a.as_str().len() == 43);
    }
}
