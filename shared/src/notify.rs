//! Notifications a template asks for when its jobs end: signed webhooks and e-mail through SNS.
//!
//! A webhook's secret is never stored with the template: the template names an SSM parameter
//! (`ssm:/pbs/hooks/editors`, a SecureString) that the notify function reads when it signs.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::job::{ErrorClass, JobState};
use crate::message::{MessageError, V1, parse_versioned};
use crate::names::{JobId, PoolName, TemplateId};

/// The header that carries a webhook's signature: `sha256=<hex HMAC-SHA256>` of
/// `<timestamp>.<delivery id>.<body>` (see [`signed_content`]).
pub const SIGNATURE_HEADER: &str = "X-PBS-Signature";
/// The header carrying when the delivery was signed, in Unix seconds: receivers refuse one
/// outside their replay window ([`REPLAY_WINDOW_SECONDS`] is what the documentation suggests).
pub const TIMESTAMP_HEADER: &str = "X-PBS-Timestamp";
/// The replay window receivers are advised to keep (as Stripe's and Slack's five minutes).
pub const REPLAY_WINDOW_SECONDS: i64 = 300;
/// The header naming the delivery (`<job id>.<notification index>`), the same on every retry.
pub const DELIVERY_HEADER: &str = "X-PBS-Delivery";
/// The header naming the event (`job.succeeded`, `job.failed`, `job.cancelled`).
pub const EVENT_HEADER: &str = "X-PBS-Event";

/// One notification of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// The end states that fire it (default: all three).
    #[serde(default = "all_ends")]
    pub on: Vec<JobState>,
    /// POST a signed JSON summary to a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// Publish a summary to an SNS topic (subscribe e-mail addresses to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
}

fn all_ends() -> Vec<JobState> {
    vec![JobState::Succeeded, JobState::Failed, JobState::Cancelled]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `https://…` (or `http://` on a private network).
    pub url: String,
    /// Where the signing secret is kept: `ssm:<parameter name>`.
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// The SNS topic the summary is published to.
    pub topic_arn: String,
}

/// Where one notification goes (the message form of a [`Notification`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    Webhook { url: String, secret: String },
    Email { topic_arn: String },
}

impl Notification {
    /// Checks the notification; returns the failing field (relative to it) and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.on.is_empty() {
            return Err((
                "on",
                "name at least one of succeeded, failed, cancelled".into(),
            ));
        }
        if let Some(s) = self.on.iter().find(|s| !s.is_terminal()) {
            return Err((
                "on",
                format!(
                    "{s} is not an end state; notifications fire on succeeded, failed or cancelled"
                ),
            ));
        }
        match (&self.webhook, &self.email) {
            (Some(w), None) => {
                check_url(&w.url).map_err(|m| ("webhook.url", m))?;
                secret_parameter(&w.secret).map_err(|m| ("webhook.secret", m))?;
            }
            (None, Some(e)) => check_topic_arn(&e.topic_arn).map_err(|m| ("email.topic_arn", m))?,
            _ => {
                return Err((
                    "webhook",
                    "give exactly one of \"webhook\" or \"email\"".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether a job ending in `state` fires it.
    pub fn fires_on(&self, state: JobState) -> bool {
        self.on.contains(&state)
    }

    pub fn target(&self) -> Option<Target> {
        match (&self.webhook, &self.email) {
            (Some(w), _) => Some(Target::Webhook {
                url: w.url.clone(),
                secret: w.secret.clone(),
            }),
            (None, Some(e)) => Some(Target::Email {
                topic_arn: e.topic_arn.clone(),
            }),
            (None, None) => None,
        }
    }
}

impl Target {
    /// How the target reads in the job's record: the URL without its query, or the topic.
    pub fn describe(&self) -> String {
        match self {
            Self::Webhook { url, .. } => url.split(['?', '#']).next().unwrap_or(url).to_owned(),
            Self::Email { topic_arn } => format!("sns:{topic_arn}"),
        }
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(format!(
            "{url:?} has no host, or carries credentials (sign with the secret instead)"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains whitespace"));
    }
    Ok(())
}

/// The SSM parameter named by a secret reference `ssm:<name>`.
pub fn secret_parameter(reference: &str) -> Result<&str, String> {
    let name = reference.strip_prefix("ssm:").ok_or_else(|| {
        "give the secret as a reference to an SSM SecureString parameter, \"ssm:/path/name\", never the secret itself".to_owned()
    })?;
    let ok = !name.is_empty()
        && name.len() <= 1011
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not an SSM parameter name (letters, digits, / _ . -)"
        ))
    }
}

fn check_topic_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() == 6 && parts[0] == "arn" && parts[2] == "sns" && !parts[5].is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{arn:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
        ))
    }
}

/// What a notification says: the job's end, as JSON (the webhook body, signed as sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEvent {
    pub v: V1,
    /// `job.succeeded`, `job.failed` or `job.cancelled`.
    pub event: String,
    pub job_id: JobId,
    pub template_id: TemplateId,
    pub pool: PoolName,
    pub state: JobState,
    pub attempt: u32,
    pub files: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The delivery report (a key in the stack's config bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_key: Option<String>,
    /// For a step of a chain: the job before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job: Option<JobId>,
    /// For a chain step that succeeded: the job started after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_job: Option<JobId>,
    pub at: DateTime<Utc>,
}

impl JobEvent {
    pub fn event_name(state: JobState) -> String {
        format!("job.{state}")
    }
}

/// A message on the NotifyQueue: one notification of one job's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyMessage {
    pub v: V1,
    pub job_id: JobId,
    /// Which of the template's notifications (its place in `options.notify`).
    pub index: usize,
    pub state: JobState,
    pub target: Target,
    /// The JSON [`JobEvent`], kept as text so every retry sends (and signs) the same bytes.
    pub body: String,
}

impl NotifyMessage {
    pub fn parse(body: &str) -> Result<Self, MessageError> {
        parse_versioned(body)
    }

    /// The id receivers see in [`DELIVERY_HEADER`], to drop a repeated delivery.
    pub fn delivery_id(&self) -> String {
        format!("{}.{}", self.job_id, self.index)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `body` under `secret`.
fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac
}

/// What is signed: the timestamp, the delivery id and the body, joined by `.`, so a captured
/// delivery cannot be replayed later or as another delivery.
pub fn signed_content(timestamp: i64, delivery_id: &str, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{timestamp}.{delivery_id}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// `sha256=<hex>`: HMAC-SHA256 of [`signed_content`] under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, delivery_id: &str, body: &[u8]) -> String {
    let content = signed_content(timestamp, delivery_id, body);
    format!(
        "sha256={}",
        hex::encode(mac(secret, &content).finalize().into_bytes())
    )
}

/// Whether a delivery is genuine and fresh: `signature` (a [`SIGNATURE_HEADER`] value) signs
/// `timestamp`, `delivery_id` and `body` under `secret` (compared in constant time), and
/// `timestamp` is within `window_seconds` of `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    (timestamp, delivery_id, body): (i64, &str, &[u8]),
    signature: &str,
    (now, window_seconds): (i64, i64),
) -> bool {
    (now - timestamp).abs() <= window_seconds
        && signature
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
            .is_some_and(|given| {
                mac(secret, &signed_content(timestamp, delivery_id, body))
                    .verify_slice(&given)
                    .is_ok()
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Notification {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn signatures_verify_with_the_secret_only_for_that_delivery_and_time() {
        let body = br#"{"event":"job.succeeded"}"#;
        let (t, id) = (1_795_624_260, "ev-1.0");
        let sig = sign(b"s3cret", t, id, body);
        let now = (t + 10, REPLAY_WINDOW_SECONDS);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
        assert!(verify(b"s3cret", (t, id, body), &sig, now));
        assert!(!verify(b"other", (t, id, body), &sig, now));
        assert!(!verify(b"s3cret", (t, id, b"{}"), &sig, now));
        assert!(
            !verify(b"s3cret", (t, "ev-1.1", body), &sig, now),
            "another delivery"
        );
        assert!(
            !verify(b"s3cret", (t + 1, id, body), &sig, now),
            "another time"
        );
        let later = (t + REPLAY_WINDOW_SECONDS + 1, REPLAY_WINDOW_SECONDS);
        assert!(
            !verify(b"s3cret", (t, id, body), &sig, later),
            "replayed after the window"
        );
        assert!(!verify(b"s3cret", (t, id, body), "sha1=00", now));
        // RFC 4231 test cases 2 and 6 (a key longer than the block).
        let hex_mac = |k: &[u8], m: &[u8]| hex::encode(mac(k, m).finalize().into_bytes());
        assert_eq!(
            hex_mac(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(
            hex_mac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // What is signed, byte for byte, as receivers rebuild it.
        assert_eq!(signed_content(7, "ev-1.0", b"{}"), b"7.ev-1.0.{}");
    }

    #[test]
    fn notifications_are_checked_field_by_field() {
        let ok = parse(
            serde_json::json!({"webhook": {"url": "https://hooks.example/x?k=1", "secret": "ssm:/pbs/hooks/x"}}),
        );
        ok.check().unwrap();
        assert_eq!(ok.on.len(), 3);
        assert_eq!(ok.target().unwrap().describe(), "https://hooks.example/x");
        parse(serde_json::json!({"on": ["failed"], "email": {"topic_arn": "arn:aws:sns:eu-west-1:123456789012:ops"}}))
            .check()
            .unwrap();
        for (v, field, says) in [
            (
                serde_json::json!({"on": [], "email": {"topic_arn": "arn:aws:sns:r:1:t"}}),
                "on",
                "at least one",
            ),
            (
                serde_json::json!({"on": ["running"], "email": {"topic_arn": "arn:aws:sns:r:1:t"}}),
                "on",
                "not an end state",
            ),
            (
                serde_json::json!({"webhook": {"url": "ftp://x", "secret": "ssm:/a"}}),
                "webhook.url",
                "http",
            ),
            (
                serde_json::json!({"webhook": {"url": "https://u:p@x/", "secret": "ssm:/a"}}),
                "webhook.url",
                "credentials",
            ),
            (
                serde_json::json!({"webhook": {"url": "https://x/", "secret": "hunter2"}}),
                "webhook.secret",
                "never the secret itself",
            ),
            (
                serde_json::json!({"webhook": {"url": "https://x/", "secret": "ssm:a b"}}),
                "webhook.secret",
                "not an SSM parameter",
            ),
            (
                serde_json::json!({"email": {"topic_arn": "ops"}}),
                "email.topic_arn",
                "not an SNS topic ARN",
            ),
            (serde_json::json!({}), "webhook", "exactly one"),
        ] {
            let (f, m) = parse(v.clone()).check().unwrap_err();
            assert_eq!(f, field, "{v}");
            assert!(m.contains(says), "{v}: {m}");
        }
    }

    #[test]
    fn the_message_fixture_parses() {
        let m = NotifyMessage::parse(include_str!("../../tests/fixtures/notify-webhook.v1.json"))
            .unwrap();
        assert_eq!(m.delivery_id(), format!("{}.0", m.job_id));
        let event: JobEvent = serde_json::from_str(&m.body).unwrap();
        assert_eq!(event.event, "job.succeeded");
        assert_eq!(event.state, m.state);
    }
}
