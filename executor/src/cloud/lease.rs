//! The pool's rule lease as this executor knows it (see `pbs_shared::pool_lease`): each heartbeat
//! asks for it, the status function answers each one on the control queue, and the executor
//! holds the lease until the answered heartbeat's send time plus the lease, by its own clock,
//! never from when the answer arrived. So a holder cut off from the cloud stops before the cloud
//! lets anyone else take over, and a holder killed is replaced within three heartbeat intervals.
//!
//! Watch rules from the cloud run on every executor of the pool; only the holder starts jobs. The
//! answers also carry the watch jobs the pool delivered lately, so a new holder does not take a
//! file again that the previous one delivered.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pbs_shared::message::LeaseView;
use pbs_shared::{ExecutorId, JobId, PoolName};
use tracing::info;

/// Heartbeats remembered to date the answers by.
const SENT_KEPT: usize = 32;
/// How long a delivered watch job of the pool is remembered.
const DELIVERED_KEPT: Duration = Duration::from_secs(6 * 3600);
/// How long after a heartbeat its answer is waited for on the control queue.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(30);

pub struct PoolLease {
    executor: ExecutorId,
    pool: PoolName,
    state: Mutex<State>,
    /// Wakes the control queue's reader when a heartbeat goes out.
    sent_signal: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Heartbeats sent lately: their `at`, and when they were sent.
    sent: VecDeque<(DateTime<Utc>, Instant)>,
    /// The `at` of the last heartbeat answered.
    answered: Option<DateTime<Utc>>,
    /// Until when this executor holds the lease.
    held_until: Option<Instant>,
    /// The holder as last answered, and since when it holds.
    holder: Option<(ExecutorId, Option<DateTime<Utc>>)>,
    delivered: HashMap<JobId, Instant>,
}

impl PoolLease {
    pub fn new(executor: ExecutorId, pool: PoolName) -> Self {
        Self {
            executor,
            pool,
            state: Mutex::new(State::default()),
            sent_signal: tokio::sync::Notify::new(),
        }
    }

    /// Whether the answer to the last heartbeat may still come: it went out less than
    /// [`ANSWER_WINDOW`] ago and is not answered yet.
    pub fn awaiting_answer(&self) -> bool {
        let s = self.state();
        s.sent
            .back()
            .is_some_and(|(at, sent)| s.answered != Some(*at) && sent.elapsed() < ANSWER_WINDOW)
    }

    /// Waits until a heartbeat goes out (at once if one went out since the last wait).
    pub async fn heartbeat_sent(&self) {
        self.sent_signal.notified().await;
    }

    pub fn pool(&self) -> &PoolName {
        &self.pool
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A heartbeat dated `at` is being sent now.
    pub fn sending(&self, at: DateTime<Utc>) {
        let mut s = self.state();
        s.sent.push_back((at, Instant::now()));
        while s.sent.len() > SENT_KEPT {
            s.sent.pop_front();
        }
        drop(s);
        self.sent_signal.notify_one();
    }

    /// Applies the cloud's answer to one of this executor's heartbeats.
    pub fn apply(&self, view: &LeaseView) {
        let mut s = self.state();
        let now = Instant::now();
        s.answered = Some(view.heartbeat_at);
        s.delivered
            .retain(|_, at| now.duration_since(*at) < DELIVERED_KEPT);
        for job in &view.delivered {
            s.delivered.insert(job.clone(), now);
        }
        let sent = s
            .sent
            .iter()
            .find(|(at, _)| *at == view.heartbeat_at)
            .map(|(_, i)| *i);
        let mine = view.holder.as_ref() == Some(&self.executor);
        let was = s.held_until.is_some_and(|u| u > now);
        match (mine, sent) {
            (true, Some(sent)) => {
                let until = sent + Duration::from_secs(u64::from(view.lease_seconds));
                s.held_until = Some(s.held_until.map_or(until, |u| u.max(until)));
            }
            // An answer to a heartbeat this run did not send (before a restart): it cannot be
            // dated, so it grants nothing.
            (true, None) => {}
            (false, _) => s.held_until = None,
        }
        s.holder = view.holder.clone().map(|h| (h, view.since));
        let is = s.held_until.is_some_and(|u| u > now);
        if is != was {
            match &view.holder {
                Some(h) if is => {
                    info!(holder = %h, "this executor holds the pool's rule lease: it runs the pool's cloud watch rules")
                }
                Some(h) => {
                    info!(holder = %h, "the pool's rule lease is held by another executor")
                }
                None => info!("the pool's rule lease is free"),
            }
        }
    }

    /// Whether this executor holds the lease now.
    pub fn held(&self) -> bool {
        self.state().held_until.is_some_and(|u| u > Instant::now())
    }

    /// Since when this executor holds the lease, when it does (for a job's story).
    pub fn held_since(&self) -> Option<DateTime<Utc>> {
        let s = self.state();
        let held = s.held_until.is_some_and(|u| u > Instant::now());
        held.then(|| s.holder.as_ref().and_then(|(_, since)| *since))
            .flatten()
    }

    /// Whether the pool delivered watch job `job` lately (on any executor).
    pub fn delivered(&self, job: &JobId) -> bool {
        self.state().delivered.contains_key(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbs_shared::message::V1;

    fn view(at: DateTime<Utc>, holder: &str, delivered: &[&str]) -> LeaseView {
        LeaseView {
            v: V1,
            pool: PoolName::parse("p").unwrap(),
            heartbeat_at: at,
            holder: Some(ExecutorId::parse(holder).unwrap()),
            since: Some(at),
            lease_seconds: 60,
            delivered: delivered
                .iter()
                .map(|j| JobId::parse(*j).unwrap())
                .collect(),
        }
    }

    #[test]
    fn the_lease_counts_from_the_answered_heartbeat_and_is_lost_when_another_holds_it() {
        let lease = PoolLease::new(
            ExecutorId::parse("a").unwrap(),
            PoolName::parse("p").unwrap(),
        );
        let at = Utc::now();
        // An answer to a heartbeat this run never sent grants nothing.
        lease.apply(&view(at, "a", &[]));
        assert!(!lease.held());
        lease.sending(at);
        lease.apply(&view(at, "a", &["wt-1"]));
        assert!(lease.held());
        assert!(lease.held_since().is_some());
        assert!(lease.delivered(&JobId::parse("wt-1").unwrap()));
        assert!(!lease.delivered(&JobId::parse("wt-2").unwrap()));
        lease.apply(&view(at, "b", &[]));
        assert!(!lease.held());
        assert_eq!(lease.held_since(), None);
    }

    #[test]
    fn a_lease_runs_out_without_answers() {
        let lease = PoolLease::new(
            ExecutorId::parse("a").unwrap(),
            PoolName::parse("p").unwrap(),
        );
        let at = Utc::now();
        lease.sending(at);
        let mut v = view(at, "a", &[]);
        v.lease_seconds = 0;
        lease.apply(&v);
        assert!(!lease.held());
    }

    #[tokio::test]
    async fn the_control_queue_is_read_after_a_heartbeat_until_its_answer_comes() {
        let lease = PoolLease::new(
            ExecutorId::parse("a").unwrap(),
            PoolName::parse("p").unwrap(),
        );
        assert!(!lease.awaiting_answer(), "no heartbeat yet");
        let at = Utc::now();
        lease.sending(at);
        assert!(lease.awaiting_answer());
        // The reader waiting for a heartbeat is woken by one sent before it waited.
        tokio::time::timeout(Duration::from_secs(1), lease.heartbeat_sent())
            .await
            .expect("woken by the heartbeat");
        // An answer to an older heartbeat leaves the newest one awaited.
        lease.sending(at + chrono::Duration::seconds(1));
        lease.apply(&view(at, "a", &[]));
        assert!(lease.awaiting_answer());
        lease.apply(&view(at + chrono::Duration::seconds(1), "a", &[]));
        assert!(!lease.awaiting_answer());
    }
}
