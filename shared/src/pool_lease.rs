//! A pool acts once: the messages that make each cloud watch and schedule rule run on exactly one
//! executor of its pool.
//!
//! - **Watch rules** are held through the pool's *rule lease*. Every executor that runs the
//!   pool's cloud rules says so in its heartbeats; the status function grants the lease to one of
//!   them (the holder renews it with each heartbeat, another takes it once the holder's last
//!   heartbeat is older than the lease) and answers each such heartbeat on the sender's control
//!   queue with a `message::LeaseView`. Every executor watches; only the holder starts jobs.
//! - **Schedule rules** tick in the cloud: on the pool's heartbeats the status function sends a
//!   [`ScheduleRun`] through the pool's work queue for each scheduled time that came, so exactly
//!   one executor takes each run, and a run whose executor died is taken again by another.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::message::{MessageError, V1, recognise_kind};
use crate::names::{PoolName, TemplateId};

/// How many heartbeat intervals a lease lasts from the heartbeat that granted or renewed it. The
/// holder renews it every interval, so one late heartbeat does not lose it; another executor
/// takes it on its first heartbeat after the holder's last one plus this, i.e. within three
/// intervals of the holder's last heartbeat.
pub const LEASE_INTERVALS: u32 = 2;

/// One run of a cloud schedule rule, sent by the status function through the pool's work queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRun {
    pub v: V1,
    /// Always `schedule_run`: what tells it from a job on the same queue.
    pub kind: ScheduleRunKind,
    pub pool: PoolName,
    /// The schedule rule (a template with a `schedule` trigger).
    pub template_id: TemplateId,
    /// The scheduled time this run is for (one job per rule and time).
    pub scheduled_for: DateTime<Utc>,
    /// Scheduled times before this one that came together with it and make no run of their own
    /// (the pool had no executor, or the previous run was still going).
    #[serde(default)]
    pub folded: u32,
    pub at: DateTime<Utc>,
}

/// The `kind` of a [`ScheduleRun`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleRunKind {
    ScheduleRun,
}

impl ScheduleRun {
    /// `Some` when `body` is a schedule run (`"kind": "schedule_run"`), with the run or why it
    /// cannot be read; `None` for anything else.
    pub fn recognise(body: &str) -> Option<Result<Self, MessageError>> {
        recognise_kind(body, "schedule_run")
    }
}

/// What the status function decides for one schedule at a heartbeat of its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// First sight of the schedule: it counts from `now` (nothing runs).
    Start(DateTime<Utc>),
    /// Run for `latest`; `folded` earlier times came with it.
    Run { latest: DateTime<Utc>, folded: u32 },
    /// Times that came while the pool had no executor, skipped (`missed = "skip"`).
    SkipMissed { latest: DateTime<Utc>, count: u32 },
    /// The run for `latest` is skipped: the previous run is still going.
    SkipOverlap(DateTime<Utc>),
}

/// The tick of a schedule last handled at `last` (`None`: never seen), at `now`. A scheduled time
/// older than `late` counts as missed (the pool had nobody to run it) and follows the rule's
/// `missed` policy (`run_once`: one run for the latest); `previous_running` says the run of
/// `last` has not ended. `None`: nothing came since `last`.
pub fn tick(
    cron: &crate::rule_spec::Cron,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    late: chrono::Duration,
    run_once: bool,
    previous_running: bool,
) -> Option<Tick> {
    let Some(last) = last else {
        return Some(Tick::Start(now));
    };
    let (latest, count) = cron.due_since(last, now)?;
    if now - latest > late && !run_once {
        return Some(Tick::SkipMissed { latest, count });
    }
    if previous_running {
        return Some(Tick::SkipOverlap(latest));
    }
    Some(Tick::Run {
        latest,
        folded: count - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule_spec::Cron;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_tick_runs_the_latest_time_once_and_follows_the_missed_policy() {
        let cron = Cron::parse("*/5 * * * *", "UTC").unwrap();
        let late = chrono::Duration::seconds(120);
        let now = at("2026-11-30T12:01:00Z");
        assert_eq!(
            tick(&cron, None, now, late, false, false),
            Some(Tick::Start(now))
        );
        let last = at("2026-11-30T11:55:00Z");
        assert_eq!(
            tick(&cron, Some(last), now, late, false, false),
            Some(Tick::Run {
                latest: at("2026-11-30T12:00:00Z"),
                folded: 0
            })
        );
        assert_eq!(
            tick(
                &cron,
                Some(at("2026-11-30T12:00:00Z")),
                now,
                late,
                false,
                false
            ),
            None
        );
        assert_eq!(
            tick(&cron, Some(last), now, late, false, true),
            Some(Tick::SkipOverlap(at("2026-11-30T12:00:00Z")))
        );
        // An hour without executors: skipped, or one run for the latest time.
        let later = at("2026-11-30T12:58:00Z");
        assert_eq!(
            tick(&cron, Some(last), later, late, false, false),
            Some(Tick::SkipMissed {
                latest: at("2026-11-30T12:55:00Z"),
                count: 12
            })
        );
        assert_eq!(
            tick(&cron, Some(last), later, late, true, false),
            Some(Tick::Run {
                latest: at("2026-11-30T12:55:00Z"),
                folded: 11
            })
        );
    }

    #[test]
    fn a_schedule_run_is_told_from_jobs_and_read_strictly() {
        let body = r#"{"v":1,"kind":"schedule_run","pool":"p","template_id":"nightly","scheduled_for":"2026-11-30T12:00:00Z","at":"2026-11-30T12:00:02Z"}"#;
        let run = ScheduleRun::recognise(body).unwrap().unwrap();
        assert_eq!(run.template_id.as_str(), "nightly");
        assert!(ScheduleRun::recognise(r#"{"v":1,"job_id":"x"}"#).is_none());
        let forged = body.replace("\"pool\":\"p\"", "\"pool\":\"p\",\"files\":[]");
        assert!(ScheduleRun::recognise(&forged).unwrap().is_err());
    }
}
