//! The audit log: one item per mutating API call (who, what, on which path, with what outcome),
//! newest first. Items share one partition (`log` = `"audit"`) sorted by `at_id` =
//! `<time>#<random>`; operators' calls are few, so one partition holds them comfortably. Items
//! expire after `AUDIT_TTL_DAYS` through DynamoDB's TTL.

use aws_sdk_dynamodb::Client;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::items::{Item, describe_error, get_n, get_s, n, s};

const PARTITION: &str = "audit";
/// Days an audit entry is kept.
pub const AUDIT_TTL_DAYS: i64 = 400;

/// Who made a call, as the API authenticated them.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// `sub`, or the user name when the token has one.
    pub name: &'a str,
    pub subject: &'a str,
    /// `viewer`, `operator` or `admin`.
    pub role: &'a str,
}

/// One audited call.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: String,
    pub principal: String,
    pub subject: String,
    pub role: String,
    pub method: String,
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
    /// What the call made or touched when the path does not say (a new job's id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Clone)]
pub struct AuditLog {
    client: Client,
    table: String,
}

impl AuditLog {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Records one call made by `who` at `at`.
    pub async fn record(
        &self,
        who: Caller<'_>,
        at: DateTime<Utc>,
        method: &str,
        path: &str,
        status: u16,
        target: Option<&str>,
    ) -> Result<(), String> {
        let when = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut item = Item::from([
            ("log".into(), s(PARTITION)),
            (
                "at_id".into(),
                s(format!("{when}#{}", uuid::Uuid::new_v4().simple())),
            ),
            ("at".into(), s(&when)),
            ("principal".into(), s(who.name)),
            ("subject".into(), s(who.subject)),
            ("role".into(), s(who.role)),
            ("method".into(), s(method)),
            ("path".into(), s(path)),
            ("status".into(), n(status)),
            (
                "expires_at".into(),
                n((at + chrono::Duration::days(AUDIT_TTL_DAYS)).timestamp()),
            ),
        ]);
        if let Some(t) = target {
            item.insert("target".into(), s(t));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        Ok(())
    }

    /// One page of entries, newest first, and the token of the next page.
    pub async fn list(
        &self,
        limit: i32,
        page_token: Option<&str>,
    ) -> Result<(Vec<AuditEntry>, Option<String>), AuditError> {
        let start = match page_token {
            None => None,
            Some(t) => {
                let raw = URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or(AuditError::BadPageToken)?;
                Some(Item::from([
                    ("log".into(), s(PARTITION)),
                    ("at_id".into(), s(raw)),
                ]))
            }
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#log = :p")
            .expression_attribute_names("#log", "log")
            .expression_attribute_values(":p", s(PARTITION))
            .scan_index_forward(false)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| AuditError::Dynamo(describe_error(&e)))?;
        let entries = out
            .items()
            .iter()
            .map(|item| AuditEntry {
                at: get_s(item, "at").unwrap_or_default().into(),
                principal: get_s(item, "principal").unwrap_or_default().into(),
                subject: get_s(item, "subject").unwrap_or_default().into(),
                role: get_s(item, "role").unwrap_or_default().into(),
                method: get_s(item, "method").unwrap_or_default().into(),
                path: get_s(item, "path").unwrap_or_default().into(),
                status: get_n(item, "status").unwrap_or(0),
                target: get_s(item, "target").map(Into::into),
            })
            .collect();
        let next = out
            .last_evaluated_key()
            .and_then(|k| get_s(k, "at_id"))
            .map(|id| URL_SAFE_NO_PAD.encode(id));
        Ok((entries, next))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {0}")]
    Dynamo(String),
    #[error("invalid page token")]
    BadPageToken,
}
