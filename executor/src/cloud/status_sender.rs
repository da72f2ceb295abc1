//! The status sender: reports committed to the ledger's outbox (by [`crate::ledger::Journal`],
//! with each job transition) are sent to the StatusQueue by this one background sender, oldest
//! first, retrying with backoff while the cloud is unreachable; heartbeats go straight to the
//! queue. Nothing is dropped across outages or restarts, and no job waits for the cloud.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chrono::Utc;
use pbs_shared::message::{Heartbeat, OfferedEndpoint, V1};
use pbs_shared::{ExecutorId, PoolName, StatusMessage};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::cloud::lease::PoolLease;
use crate::ledger::Ledger;
use crate::worker::{Next, Worker};

/// Reports sent per SQS request (the SendMessageBatch maximum).
const BATCH: u32 = 10;
/// Even without a wake-up, the outbox is looked at this often.
const IDLE_CHECK: Duration = Duration::from_secs(5);

pub struct StatusOutbox {
    /// The StatusQueue; `None` when the executor runs standalone (nothing is reported).
    sink: Option<(aws_sdk_sqs::Client, String)>,
    executor_id: ExecutorId,
    pool: PoolName,
    /// Published with each heartbeat.
    endpoints: Vec<OfferedEndpoint>,
    ledger: Arc<Ledger>,
    /// Notified when a report joins the outbox ([`crate::ledger::Journal`]).
    wake: Arc<Notify>,
    /// The pool's rule lease, asked for with each heartbeat when the executor runs the pool's
    /// cloud rules.
    lease: Option<Arc<PoolLease>>,
}

impl StatusOutbox {
    pub fn new(
        sink: Option<(aws_sdk_sqs::Client, String)>,
        (executor_id, pool, endpoints): (ExecutorId, PoolName, Vec<OfferedEndpoint>),
        ledger: Arc<Ledger>,
        wake: Arc<Notify>,
        lease: Option<Arc<PoolLease>>,
    ) -> Self {
        Self {
            sink,
            executor_id,
            pool,
            endpoints,
            ledger,
            wake,
            lease,
        }
    }

    /// Sends one heartbeat. Heartbeats skip the outbox: one that cannot be sent is replaced by
    /// the next, and a backlog of them would say nothing.
    async fn heartbeat(&self, sqs: &aws_sdk_sqs::Client, queue_url: &str, interval: Duration) {
        let running_jobs = self
            .ledger
            .unfinished()
            .map(|j| j.len() as u32)
            .unwrap_or(0);
        let at = Utc::now();
        let beat = StatusMessage::Heartbeat(Heartbeat {
            v: V1,
            executor_id: self.executor_id.clone(),
            pool: self.pool.clone(),
            executor_version: env!("CARGO_PKG_VERSION").to_owned(),
            at,
            interval_seconds: interval.as_secs() as u32,
            running_jobs,
            endpoints: self.endpoints.clone(),
            runs_rules: self.lease.is_some(),
        });
        if let Some(lease) = &self.lease {
            lease.sending(at);
        }
        let body = serde_json::to_string(&beat).expect("status messages serialise");
        match sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
        {
            Ok(_) => debug!(running_jobs, "heartbeat sent"),
            Err(e) => {
                warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "heartbeat not sent")
            }
        }
    }

    /// Sends what is left, for up to `limit` (at shutdown).
    pub async fn flush(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            while let Ok(n) = self.send_batch().await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Sends the oldest reports; returns how many were delivered.
    async fn send_batch(&self) -> Result<usize, String> {
        let Some((sqs, queue_url)) = &self.sink else {
            return Ok(0);
        };
        let head = self.ledger.outbox_head(BATCH).map_err(|e| e.to_string())?;
        if head.is_empty() {
            return Ok(0);
        }
        let entries = head
            .iter()
            .map(|(seq, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("s{seq}"))
                    .message_body(body)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) => format!("{se}"),
                None => aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            })?;
        let sent: Vec<i64> = out
            .successful()
            .iter()
            .filter_map(|ok| ok.id().strip_prefix('s').and_then(|n| n.parse().ok()))
            .collect();
        self.ledger
            .outbox_remove(&sent)
            .map_err(|e| e.to_string())?;
        debug!(sent = sent.len(), "status reports sent");
        if let Some(failed) = out.failed().first() {
            return Err(format!(
                "{} report(s) refused: {} {}",
                out.failed().len(),
                failed.code(),
                failed.message().unwrap_or_default()
            ));
        }
        Ok(sent.len())
    }
}

/// Sends the outbox's reports, oldest first, as they are committed (a [`Worker`]).
pub struct ReportSender(pub Arc<StatusOutbox>);

impl Worker for ReportSender {
    fn name(&self) -> &'static str {
        "status sender"
    }

    async fn step(&mut self, _stop: &CancellationToken) -> Next {
        if self.0.sink.is_none() {
            return Next::Done;
        }
        match self.0.send_batch().await {
            Ok(0) => Next::Idle(IDLE_CHECK),
            Ok(_) => Next::Busy,
            Err(e) => {
                let depth = self.0.ledger.outbox_depth().unwrap_or(0);
                warn!(error = %e, outbox_depth = depth, "status reports not sent; will retry");
                Next::Failed
            }
        }
    }

    async fn wait_for_work(&mut self, idle: Duration) {
        tokio::select! {
            _ = self.0.wake.notified() => {}
            _ = tokio::time::sleep(idle) => {}
        }
    }
}

/// Sends a heartbeat every `interval` (a [`Worker`]).
pub struct HeartbeatSender {
    pub outbox: Arc<StatusOutbox>,
    pub interval: Duration,
}

impl Worker for HeartbeatSender {
    fn name(&self) -> &'static str {
        "heartbeats"
    }

    async fn step(&mut self, _stop: &CancellationToken) -> Next {
        let Some((sqs, queue_url)) = &self.outbox.sink else {
            return Next::Done;
        };
        self.outbox.heartbeat(sqs, queue_url, self.interval).await;
        Next::Idle(self.interval)
    }
}
