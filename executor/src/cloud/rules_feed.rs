//! The pool's watch and schedule rules from the cloud: `pools/<pool>/rules.json` in the
//! configuration bucket, fetched with a conditional GET (If-None-Match on the last ETag) every
//! `rules_poll_seconds`. Outbound only, like everything the executor does. Each new copy is kept
//! in the ledger, so the rules keep running across restarts while the cloud is unreachable.

use std::sync::Arc;
use std::time::Duration;

use pbs_shared::pool_rules::{PoolRules, pool_rules_key};
use pbs_shared::{PoolName, Template};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ledger::Ledger;
use crate::worker::{Next, Worker};

pub struct CloudRules {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub pool: PoolName,
    pub ledger: Arc<Ledger>,
    pub every: Duration,
}

/// Reads a rule document; a document for another pool or of another version is refused.
pub fn parse(pool: &PoolName, body: &str) -> Result<Vec<Template>, String> {
    let doc: PoolRules = serde_json::from_str(body).map_err(|e| e.to_string())?;
    if &doc.pool != pool {
        return Err(format!("the document is for pool {}, not {pool}", doc.pool));
    }
    Ok(doc.templates)
}

impl CloudRules {
    /// The rules last received, from the ledger (empty if none yet).
    pub fn cached(&self) -> (Option<String>, Vec<Template>) {
        match self.ledger.cloud_rules(self.pool.as_str()) {
            Ok(Some((etag, body))) => match parse(&self.pool, &body) {
                Ok(t) => (Some(etag), t),
                Err(e) => {
                    warn!(error = %e, "cached cloud rules unreadable; waiting for a fresh copy");
                    (None, Vec::new())
                }
            },
            Ok(None) => (None, Vec::new()),
            Err(e) => {
                warn!(error = %e, "cannot read cached cloud rules");
                (None, Vec::new())
            }
        }
    }

    /// Fetches the pool's rules once (a conditional GET); sends them on `tx` when they changed.
    async fn fetch(&self, etag: &mut Option<String>, tx: &mpsc::UnboundedSender<Vec<Template>>) {
        let key = pool_rules_key(&self.pool);
        let mut get = self.s3.get_object().bucket(&self.bucket).key(&key);
        if let Some(e) = etag.as_ref().filter(|e| !e.is_empty()) {
            get = get.if_none_match(e);
        }
        let out = match get.send().await {
            Ok(out) => out,
            Err(e) => return self.not_fetched(e, etag, tx),
        };
        let new_etag = out.e_tag().unwrap_or_default().to_owned();
        let bytes = match out.body.collect().await {
            Ok(bytes) => bytes,
            Err(e) => return warn!(error = %e, "reading the cloud rules failed"),
        };
        let body = String::from_utf8_lossy(&bytes.into_bytes()).into_owned();
        match parse(&self.pool, &body) {
            Ok(templates) => {
                if let Err(e) = self
                    .ledger
                    .set_cloud_rules(self.pool.as_str(), &new_etag, &body)
                {
                    warn!(error = %e, "cannot cache the cloud rules");
                }
                info!(rules = templates.len(), "cloud rules received");
                *etag = Some(new_etag);
                let _ = tx.send(templates);
            }
            Err(e) => {
                warn!(error = %e, bucket = %self.bucket, key = %key, "cloud rules refused; the rules in force stay")
            }
        }
    }

    /// A GET that brought no rules: unchanged, none published for the pool, or a failure.
    fn not_fetched(
        &self,
        e: aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>,
        etag: &mut Option<String>,
        tx: &mpsc::UnboundedSender<Vec<Template>>,
    ) {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key());
        if status == Some(304) {
            debug!("cloud rules unchanged");
        } else if missing {
            if etag.as_deref() != Some("") {
                debug!("no cloud rules for this pool");
                let none = serde_json::json!({"v": 1, "pool": self.pool, "generated_at": chrono::Utc::now(), "templates": []});
                let _ = self
                    .ledger
                    .set_cloud_rules(self.pool.as_str(), "", &none.to_string());
                *etag = Some(String::new());
                let _ = tx.send(Vec::new());
            }
        } else {
            warn!(error = %aws_sdk_s3::error::DisplayErrorContext(&e), "cannot fetch the cloud rules; the rules in force stay");
        }
    }
}

/// Polls the pool's rules every `every` and sends each new set (a [`Worker`]).
pub struct RulesFeed {
    pub rules: CloudRules,
    /// The ETag of the rules in force (`Some("")`: none published).
    pub etag: Option<String>,
    pub tx: mpsc::UnboundedSender<Vec<Template>>,
}

impl Worker for RulesFeed {
    fn name(&self) -> &'static str {
        "rules feed"
    }

    async fn step(&mut self, _stop: &CancellationToken) -> Next {
        self.rules.fetch(&mut self.etag, &self.tx).await;
        Next::Idle(self.rules.every)
    }
}
