//! One shape for the executor's background loops that poll or send: a [`Worker`] does one step
//! of work at a time and says what comes next, and [`run`] drives it until shutdown, with one
//! backoff for failures ([`pbs_shared::retry::Backoff`]: doubling from 1 s to 30 s, reset by a
//! success). A step is never cut short by shutdown: a worker whose step waits long (a long poll)
//! watches the token it is given, so nothing is left half-sent.
//!
//! Workers: the status sender, heartbeats, the control queue's follower, the rules feed.

use std::future::Future;
use std::time::Duration;

use pbs_shared::retry::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// What a worker's step says comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// More work is waiting: step again at once.
    Busy,
    /// Nothing to do now: wait (see [`Worker::wait_for_work`]) up to this long, then step again.
    Idle(Duration),
    /// The step failed (the worker said why): step again after the backoff.
    Failed,
    /// The worker has finished.
    Done,
}

pub trait Worker: Send {
    /// The worker's name, for logs.
    fn name(&self) -> &'static str;

    /// Does one unit of work; `stop` is the shutdown token, for steps that wait long.
    fn step(&mut self, stop: &CancellationToken) -> impl Future<Output = Next> + Send;

    /// After an idle step: waits up to `idle` for more work (by default, the whole time).
    fn wait_for_work(&mut self, idle: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(idle)
    }
}

/// Runs `worker` until it is done or `stop` fires.
pub async fn run<W: Worker>(worker: W, stop: CancellationToken) {
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    run_with(worker, stop, backoff).await
}

async fn run_with<W: Worker>(mut worker: W, stop: CancellationToken, mut backoff: Backoff) {
    while !stop.is_cancelled() {
        match worker.step(&stop).await {
            Next::Busy => backoff.succeeded(),
            Next::Idle(idle) => {
                backoff.succeeded();
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = worker.wait_for_work(idle) => {}
                }
            }
            Next::Failed => {
                let wait = backoff.failed();
                debug!(
                    worker = worker.name(),
                    retry_in_s = wait.as_secs(),
                    "step failed"
                );
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Next::Done => break,
        }
    }
    debug!(worker = worker.name(), "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays its steps in order and records them.
    struct Script {
        steps: Vec<Next>,
        taken: Vec<Next>,
    }

    impl Worker for &mut Script {
        fn name(&self) -> &'static str {
            "script"
        }

        async fn step(&mut self, _stop: &CancellationToken) -> Next {
            let next = if self.steps.is_empty() {
                Next::Idle(Duration::from_secs(3600))
            } else {
                self.steps.remove(0)
            };
            self.taken.push(next);
            next
        }
    }

    fn quick() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(4))
    }

    #[tokio::test]
    async fn a_worker_steps_through_failures_work_and_idle_until_done() {
        let steps = vec![
            Next::Failed,
            Next::Failed,
            Next::Busy,
            Next::Idle(Duration::from_millis(1)),
            Next::Done,
            Next::Busy,
        ];
        let mut script = Script {
            steps: steps.clone(),
            taken: Vec::new(),
        };
        run_with(&mut script, CancellationToken::new(), quick()).await;
        // Every step up to `Done` was taken, and none after it.
        assert_eq!(script.taken, steps[..5]);
    }

    #[tokio::test]
    async fn shutdown_ends_an_idle_wait_and_no_step_follows() {
        let mut script = Script {
            steps: vec![Next::Idle(Duration::from_secs(3600)), Next::Busy],
            taken: Vec::new(),
        };
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stopper.cancel();
        });
        run_with(&mut script, stop, quick()).await;
        assert_eq!(script.taken, [Next::Idle(Duration::from_secs(3600))]);
    }

    #[tokio::test]
    async fn a_stopped_worker_takes_no_step() {
        let mut script = Script {
            steps: vec![Next::Busy],
            taken: Vec::new(),
        };
        let stop = CancellationToken::new();
        stop.cancel();
        run_with(&mut script, stop, quick()).await;
        assert!(script.taken.is_empty());
    }
}
