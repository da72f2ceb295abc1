//! Retry policy of a template's jobs: how many attempts, and how long to wait between them
//! (exponential backoff with jitter, capped); and the one doubling backoff every retrying loop
//! shares ([`Backoff`]: the executor's poller and status sender, the webhook notifier).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most attempts a policy may ask for: the pool queue's redrive `maxReceiveCount` (template
/// parameter `PoolMaxReceiveCount`, default 10) must be at least this, or SQS dead-letters the job
/// before its last attempt.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;
/// SQS's longest visibility timeout (12 hours), the longest wait between attempts.
pub const MAX_BACKOFF_LIMIT: u32 = 43_200;

/// The wait after the `n`th failure in a row (1-based): `first`, doubling, at most `max`.
pub fn doubling(first: Duration, n: u32, max: Duration) -> Duration {
    first
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(max)
}

/// The waits of a loop that retries what failed: [`doubling`] from `first` up to `max`, and
/// back to `first` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            failures: 0,
        }
    }

    /// One more failure: how long to wait before trying again.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        doubling(self.first, self.failures, self.max)
    }

    /// A success: the next failure waits `first` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt, in seconds; doubled for each further attempt.
    #[serde(default = "default_backoff")]
    pub backoff_seconds: u32,
    /// Longest wait between attempts, in seconds.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u32,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> u32 {
    10
}
fn default_max_backoff() -> u32 {
    300
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            backoff_seconds: default_backoff(),
            max_backoff_seconds: default_max_backoff(),
        }
    }
}

impl RetryPolicy {
    /// The rule a policy must follow, as `(field, message)` on failure.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err((
                "max_attempts",
                format!(
                    "must be 1 to {MAX_ATTEMPTS_LIMIT}, got {}",
                    self.max_attempts
                ),
            ));
        }
        if !(1..=MAX_BACKOFF_LIMIT).contains(&self.backoff_seconds) {
            return Err((
                "backoff_seconds",
                format!(
                    "must be 1 to {MAX_BACKOFF_LIMIT}, got {}",
                    self.backoff_seconds
                ),
            ));
        }
        if self.max_backoff_seconds < self.backoff_seconds
            || self.max_backoff_seconds > MAX_BACKOFF_LIMIT
        {
            return Err((
                "max_backoff_seconds",
                format!(
                    "must be from backoff_seconds ({}) to {MAX_BACKOFF_LIMIT}, got {}",
                    self.backoff_seconds, self.max_backoff_seconds
                ),
            ));
        }
        Ok(())
    }

    /// Whether attempt `attempt` (1-based) may be followed by another.
    pub fn may_retry_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait after failed attempt `attempt`: `backoff · 2^(attempt-1)`, capped, then scaled by
    /// `jitter` in `[0, 1]` into the upper half ("equal jitter"), so executors that failed
    /// together do not retry together.
    pub fn delay_after(&self, attempt: u32, jitter: f64) -> Duration {
        let capped = doubling(
            Duration::from_secs(self.backoff_seconds.into()),
            attempt,
            Duration::from_secs(self.max_backoff_seconds.into()),
        )
        .as_secs_f64();
        let jitter = jitter.clamp(0.0, 1.0);
        Duration::from_secs_f64(capped / 2.0 + capped / 2.0 * jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_doubles_to_its_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let waits: Vec<u64> = (0..7).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_secs(1));
        assert_eq!(
            doubling(Duration::from_secs(10), 60, Duration::from_secs(900)),
            Duration::from_secs(900)
        );
    }

    #[test]
    fn delays_double_up_to_the_cap_within_the_jitter_band() {
        let p = RetryPolicy {
            max_attempts: 6,
            backoff_seconds: 10,
            max_backoff_seconds: 60,
        };
        assert_eq!(p.delay_after(1, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay_after(2, 1.0), Duration::from_secs(20));
        assert_eq!(p.delay_after(3, 1.0), Duration::from_secs(40));
        assert_eq!(p.delay_after(4, 1.0), Duration::from_secs(60));
        assert_eq!(p.delay_after(9, 1.0), Duration::from_secs(60));
        assert_eq!(p.delay_after(2, 0.0), Duration::from_secs(10));
        assert_eq!(p.delay_after(200, 0.5), Duration::from_secs(45));
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy::default();
        assert!(p.may_retry_after(1) && p.may_retry_after(2) && !p.may_retry_after(3));
        let once = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert!(!once.may_retry_after(1));
    }

    #[test]
    fn bad_policies_name_the_field() {
        let p = RetryPolicy::default();
        assert_eq!(
            RetryPolicy {
                max_attempts: 0,
                ..p
            }
            .check()
            .unwrap_err()
            .0,
            "max_attempts"
        );
        assert_eq!(
            RetryPolicy {
                max_attempts: 11,
                ..p
            }
            .check()
            .unwrap_err()
            .0,
            "max_attempts"
        );
        assert_eq!(
            RetryPolicy {
                backoff_seconds: 0,
                ..p
            }
            .check()
            .unwrap_err()
            .0,
            "backoff_seconds"
        );
        let inverted = RetryPolicy {
            backoff_seconds: 100,
            max_backoff_seconds: 50,
            ..p
        };
        assert_eq!(inverted.check().unwrap_err().0, "max_backoff_seconds");
        assert!(p.check().is_ok());
    }
}
