//! The notify function: delivers the notifications the status function queued when a job ended.
//!
//! A webhook gets the job's JSON summary, signed with HMAC-SHA256 under a secret read from SSM
//! over `<timestamp>.<delivery id>.<body>` (`X-PBS-Signature: sha256=<hex>`, `X-PBS-Timestamp`),
//! so a captured delivery cannot be replayed; it goes only to public addresses unless the stack
//! allows private ones ([`crate::webhook_guard`]). An e-mail notification is published to an SNS
//! topic. A
//! receiver that times out, refuses the connection or answers 408, 429 or 5xx is tried again
//! later: the message stays on the queue, hidden for a backoff that doubles with each attempt,
//! up to `NOTIFY_MAX_ATTEMPTS`. Every attempt's outcome is recorded on the job. Notifications run
//! apart from transfers, so a receiver that is down never holds up or fails a job.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use pbs_shared::notify::{
    self, DELIVERY_HEADER, EVENT_HEADER, JobEvent, NotifyMessage, SIGNATURE_HEADER,
    TIMESTAMP_HEADER, Target,
};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::dead_letter::dead_letter;
use crate::env::NotifyEnv;
use crate::store::jobs::{JobTable, NotificationView};

/// How long a secret read from SSM is reused before it is read again (a rotated secret is
/// picked up within this time).
const SECRET_TTL: Duration = Duration::from_secs(300);
/// Longest wait between two attempts.
const MAX_BACKOFF_SECONDS: u64 = 900;

/// How one attempt went.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered {
        http_status: Option<u16>,
    },
    /// Worth trying again later.
    Transient {
        http_status: Option<u16>,
        error: String,
    },
    /// Trying again cannot help (e.g. the receiver answered 404, or its address is refused).
    Refused {
        http_status: Option<u16>,
        error: String,
    },
}

/// What an HTTP status means for a webhook delivery.
pub fn classify(status: u16) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered {
            http_status: Some(status),
        },
        408 | 429 | 500..=599 => Attempt::Transient {
            http_status: Some(status),
            error: format!("the receiver answered {status}"),
        },
        _ => Attempt::Refused {
            http_status: Some(status),
            error: format!("the receiver answered {status}"),
        },
    }
}

/// Seconds to wait after attempt `attempts` (1-based) failed: `base`, doubling, capped.
pub fn backoff_seconds(base: u64, attempts: u32) -> u64 {
    pbs_shared::retry::doubling(
        Duration::from_secs(base),
        attempts.max(1),
        Duration::from_secs(MAX_BACKOFF_SECONDS),
    )
    .as_secs()
}

pub struct Notifier {
    env: NotifyEnv,
    ssm: aws_sdk_ssm::Client,
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    jobs: JobTable,
    secrets: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl Notifier {
    pub fn new(
        env: NotifyEnv,
        dynamo: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        ssm: aws_sdk_ssm::Client,
        sns: aws_sdk_sns::Client,
    ) -> Self {
        Self {
            jobs: JobTable::new(dynamo, &env.jobs_table, env.job_ttl_days),
            env,
            ssm,
            sns,
            sqs,
            secrets: Mutex::new(HashMap::new()),
        }
    }

    /// The HTTP client of one delivery (pinned to its checked addresses by the caller).
    fn client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(self.env.timeout_seconds))
            // A signed delivery goes where the template says, not where a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pbs-rclone-notify/", env!("CARGO_PKG_VERSION")))
    }

    /// Handles one batch; a notification to try again later is reported as a batch item failure
    /// after its message was hidden for the backoff.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let outcomes =
            crate::sqs_batch::map_records(event, |record| self.handle_record(record)).await;
        crate::sqs_batch::retry_only(outcomes.into_iter().filter_map(|(id, outcome)| {
            let e = outcome.err()?;
            info!(message_id = %id, reason = %e, "notification will be tried again");
            Some(id)
        }))
    }

    async fn handle_record(&self, record: SqsMessage) -> Result<(), String> {
        let body = record.body.clone().unwrap_or_default();
        let message = match NotifyMessage::parse(&body) {
            Ok(m) => m,
            Err(e) => {
                let reason = e.to_string();
                warn!(reason = %reason, "unreadable notification sent to the dead-letter queue");
                return dead_letter(&self.sqs, &self.env.dead_letter_queue_url, &body, &reason)
                    .await;
            }
        };
        let attempts: u32 = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let attempt = self.deliver(&message).await;
        let again =
            matches!(attempt, Attempt::Transient { .. }) && attempts < self.env.max_attempts;
        let (state, http_status, error) = match attempt {
            Attempt::Delivered { http_status } => ("delivered", http_status, None),
            Attempt::Transient { http_status, error } if again => {
                ("retrying", http_status, Some(error))
            }
            Attempt::Transient { http_status, error } => (
                "failed",
                http_status,
                Some(format!("{error}; gave up after {attempts} attempts")),
            ),
            Attempt::Refused { http_status, error } => ("failed", http_status, Some(error)),
        };
        let view = NotificationView {
            index: message.index,
            target: message.target.describe(),
            state: state.to_owned(),
            attempts,
            http_status,
            error: error.clone(),
            at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        self.jobs
            .record_notification(&message.job_id, message.index, &view)
            .await
            .map_err(|e| e.to_string())?;
        info!(job_id = %message.job_id, delivery = %message.delivery_id(), target = %view.target, state, attempts, http_status, error = error.as_deref().unwrap_or(""), "notification attempt");
        if !again {
            return Ok(());
        }
        let wait = backoff_seconds(self.env.backoff_base_seconds, attempts);
        if let Some(receipt) = &record.receipt_handle
            && let Err(e) = self
                .sqs
                .change_message_visibility()
                .queue_url(&self.env.queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(wait as i32)
                .send()
                .await
        {
            // The queue's own visibility timeout then spaces the attempts.
            warn!(error = %crate::store::items::describe_error(&e), "could not set the notification's backoff");
        }
        Err(format!(
            "{}: attempt {attempts} failed ({}), next in {wait} s",
            message.delivery_id(),
            error.unwrap_or_default()
        ))
    }

    async fn deliver(&self, m: &NotifyMessage) -> Attempt {
        match &m.target {
            Target::Webhook { url, secret } => self.post(m, url, secret).await,
            Target::Email { topic_arn } => self.publish(m, topic_arn).await,
        }
    }

    async fn post(&self, m: &NotifyMessage, url: &str, secret_ref: &str) -> Attempt {
        let secret = match self.secret(secret_ref).await {
            Ok(s) => s,
            Err(error) => {
                return Attempt::Transient {
                    http_status: None,
                    error,
                };
            }
        };
        let url: reqwest::Url = match url.parse() {
            Ok(u) => u,
            Err(e) => {
                return Attempt::Refused {
                    http_status: None,
                    error: format!("the webhook URL is not valid: {e}"),
                };
            }
        };
        use crate::webhook_guard::{Unsendable, resolve};
        let addrs = match resolve(&url, self.env.allow_private_targets).await {
            Ok(a) => a,
            Err(Unsendable::Unresolved(error)) => {
                return Attempt::Transient {
                    http_status: None,
                    error,
                };
            }
            Err(Unsendable::Refused(error)) => {
                warn!(delivery = %m.delivery_id(), reason = %error, "webhook refused");
                return Attempt::Refused {
                    http_status: None,
                    error,
                };
            }
        };
        // The connection goes to the addresses just checked, not to a second lookup's answer.
        let host = url.host_str().unwrap_or_default().to_owned();
        let http = match self.client().resolve_to_addrs(&host, &addrs).build() {
            Ok(c) => c,
            Err(e) => {
                return Attempt::Transient {
                    http_status: None,
                    error: format!("HTTP client: {e}"),
                };
            }
        };
        let timestamp = Utc::now().timestamp();
        let delivery = m.delivery_id();
        let signature = notify::sign(&secret, timestamp, &delivery, m.body.as_bytes());
        let res = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(DELIVERY_HEADER, delivery)
            .header(EVENT_HEADER, JobEvent::event_name(m.state))
            .body(m.body.clone())
            .send()
            .await;
        match res {
            Ok(r) => classify(r.status().as_u16()),
            // Never the URL: its query may carry a token.
            Err(e) => Attempt::Transient {
                http_status: None,
                error: format!(
                    "{}: {}",
                    if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "cannot connect"
                    } else {
                        "request failed"
                    },
                    error_chain(&e.without_url())
                ),
            },
        }
    }

    async fn publish(&self, m: &NotifyMessage, topic_arn: &str) -> Attempt {
        let event: Option<JobEvent> = serde_json::from_str(&m.body).ok();
        let subject = format!("PBS Rclone: job {} {}", m.job_id, m.state);
        let text = match &event {
            Some(e) => {
                let mut t = format!(
                    "Job {} of template {} (pool {}) {} after attempt {}: {} files, {} bytes.\n",
                    e.job_id, e.template_id, e.pool, e.state, e.attempt, e.files, e.bytes
                );
                if let Some(err) = &e.error {
                    t.push_str(&format!("Error: {err}\n"));
                }
                if let Some(r) = &e.report_key {
                    t.push_str(&format!("Delivery report: {r}\n"));
                }
                if let Some(n) = &e.next_job {
                    t.push_str(&format!("Next step: job {n}\n"));
                }
                t.push_str(&format!("\n{}\n", m.body));
                t
            }
            None => m.body.clone(),
        };
        match self
            .sns
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(text)
            .send()
            .await
        {
            Ok(_) => Attempt::Delivered { http_status: None },
            Err(e) => Attempt::Transient {
                http_status: None,
                error: format!(
                    "publishing to {topic_arn}: {}",
                    crate::store::items::describe_error(&e)
                ),
            },
        }
    }

    /// The signing secret named by `reference` (`ssm:<parameter>`), cached for [`SECRET_TTL`].
    async fn secret(&self, reference: &str) -> Result<Vec<u8>, String> {
        if let Some((at, value)) = self.secrets.lock().await.get(reference)
            && at.elapsed() < SECRET_TTL
        {
            return Ok(value.clone());
        }
        let name = notify::secret_parameter(reference)?;
        let out = self
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the webhook secret {reference} cannot be read: {}",
                    crate::store::items::describe_error(&e)
                )
            })?;
        let value = out
            .parameter()
            .and_then(|p| p.value())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the webhook secret {reference} is empty"))?
            .as_bytes()
            .to_vec();
        self.secrets
            .lock()
            .await
            .insert(reference.to_owned(), (Instant::now(), value.clone()));
        Ok(value)
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decide_between_done_again_and_give_up() {
        assert!(matches!(classify(200), Attempt::Delivered { .. }));
        assert!(matches!(classify(204), Attempt::Delivered { .. }));
        for again in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(again), Attempt::Transient { .. }),
                "{again}"
            );
        }
        for refused in [301, 400, 401, 404, 410] {
            assert!(
                matches!(classify(refused), Attempt::Refused { .. }),
                "{refused}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(
            (1..=5).map(|a| backoff_seconds(10, a)).collect::<Vec<_>>(),
            [10, 20, 40, 80, 160]
        );
        assert_eq!(backoff_seconds(10, 8), 900);
        assert_eq!(backoff_seconds(10, 60), 900);
        assert_eq!(backoff_seconds(1, 0), 1);
    }
}
