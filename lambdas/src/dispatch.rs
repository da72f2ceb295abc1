//! Sends a recorded job to its pool's work queue: the trigger's event jobs and the API's manual
//! jobs and retries take the same path.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures_util::StreamExt;

use pbs_shared::{ErrorClass, JobMessage, PoolName};
use tokio::sync::Mutex;
use tracing::{error, info};

use crate::store::items::describe_error;
use crate::store::jobs::JobTable;

/// How a dispatch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// On the pool's queue and marked dispatched.
    Sent,
    /// The pool has no queue: the job was recorded `failed` with this reason.
    NoQueue(String),
}

pub struct Dispatcher {
    sqs: aws_sdk_sqs::Client,
    jobs: JobTable,
    pool_queue_prefix: String,
    queue_urls: Mutex<HashMap<PoolName, String>>,
}

impl Dispatcher {
    pub fn new(sqs: aws_sdk_sqs::Client, jobs: JobTable, pool_queue_prefix: &str) -> Self {
        Self {
            sqs,
            jobs,
            pool_queue_prefix: pool_queue_prefix.to_owned(),
            queue_urls: Mutex::new(HashMap::new()),
        }
    }

    pub fn pool_queue_prefix(&self) -> &str {
        &self.pool_queue_prefix
    }

    /// Sends `message` (already recorded `queued`) to its pool's queue. `Err` is transient
    /// (SQS or DynamoDB unavailable): the caller retries.
    pub async fn send(&self, message: &JobMessage) -> Result<Dispatched, String> {
        self.send_all(&[message])
            .await
            .pop()
            .expect("one answer per message")
    }

    /// Sends recorded jobs to their pools' queues, ten to a request, and marks each one
    /// dispatched: the answer for each job, in order (`Err` is transient, for that job only).
    pub async fn send_all(&self, messages: &[&JobMessage]) -> Vec<Result<Dispatched, String>> {
        let mut answers: Vec<Option<Result<Dispatched, String>>> = vec![None; messages.len()];
        let mut by_pool: BTreeMap<&PoolName, Vec<usize>> = BTreeMap::new();
        for (i, m) in messages.iter().enumerate() {
            by_pool.entry(&m.pool).or_default().push(i);
        }
        let mut sent = Vec::new();
        for (pool, indexes) in by_pool {
            let queue_url = match self.queue_url(pool).await {
                Ok(Some(url)) => url,
                Ok(None) => {
                    for i in indexes {
                        answers[i] = Some(self.no_queue(messages[i]).await);
                    }
                    continue;
                }
                Err(e) => {
                    for i in indexes {
                        answers[i] = Some(Err(e.clone()));
                    }
                    continue;
                }
            };
            let bodies: Vec<(usize, String)> = indexes
                .iter()
                .map(|&i| {
                    let body = serde_json::to_string(messages[i]).expect("job messages serialise");
                    (i, body)
                })
                .collect();
            for request in requests(&bodies) {
                let failed = self.send_batch(&queue_url, request, &mut sent).await;
                for (i, e) in failed {
                    answers[i] = Some(Err(format!(
                        "sending job {} to pool {pool}: {e}",
                        messages[i].job_id
                    )));
                }
            }
        }
        for (i, r) in self.mark_dispatched(messages, sent).await {
            answers[i] = Some(r.map(|()| Dispatched::Sent));
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err("the job was not sent".into())))
            .collect()
    }

    /// One SendMessageBatch of `(index, body)` entries: the indexes sent go to `sent`; the
    /// others are returned with why.
    async fn send_batch(
        &self,
        queue_url: &str,
        request: &[(usize, String)],
        sent: &mut Vec<usize>,
    ) -> Vec<(usize, String)> {
        let chunk: Vec<usize> = request.iter().map(|(i, _)| *i).collect();
        let entries = request
            .iter()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body.as_str())
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let out = match self
            .sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let e = describe_error(&e);
                return chunk.into_iter().map(|i| (i, e.clone())).collect();
            }
        };
        let index = |id: &str| id.parse::<usize>().ok().filter(|i| chunk.contains(i));
        sent.extend(out.successful().iter().filter_map(|ok| index(ok.id())));
        out.failed()
            .iter()
            .filter_map(|f| {
                let why = format!("{} {}", f.code(), f.message().unwrap_or_default());
                Some((index(f.id())?, why))
            })
            .collect()
    }

    /// Marks the jobs sent (indexes into `messages`) dispatched; each one's answer.
    async fn mark_dispatched(
        &self,
        messages: &[&JobMessage],
        sent: Vec<usize>,
    ) -> Vec<(usize, Result<(), String>)> {
        futures_util::stream::iter(sent)
            .map(|i| async move {
                let m = messages[i];
                let r = self.jobs.mark_dispatched(&m.job_id).await;
                if r.is_ok() {
                    info!(job_id = %m.job_id, pool = %m.pool, template = %m.template_id, "job dispatched");
                }
                (i, r.map_err(|e| e.to_string()))
            })
            .buffer_unordered(16)
            .collect()
            .await
    }

    /// Records a job whose pool has no queue as failed.
    async fn no_queue(&self, message: &JobMessage) -> Result<Dispatched, String> {
        let reason = format!(
            "pool {:?} has no work queue (expected an SQS queue named {:?})",
            message.pool.as_str(),
            format!("{}{}", self.pool_queue_prefix, message.pool)
        );
        error!(job_id = %message.job_id, reason = %reason, "job cannot be dispatched");
        self.jobs
            .fail_undispatchable(&message.job_id, ErrorClass::BadRequest, &reason)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Dispatched::NoQueue(reason))
    }

    /// The pool's queue URL, or `None` when the pool has no queue. Found URLs are cached for the
    /// life of the function instance; a missing queue is asked again next time.
    pub async fn queue_url(&self, pool: &PoolName) -> Result<Option<String>, String> {
        if let Some(url) = self.queue_urls.lock().await.get(pool) {
            return Ok(Some(url.clone()));
        }
        let name = format!("{}{}", self.pool_queue_prefix, pool);
        match self.sqs.get_queue_url().queue_name(&name).send().await {
            Ok(out) => {
                let url = out.queue_url().map(str::to_owned);
                if let Some(url) = &url {
                    self.queue_urls
                        .lock()
                        .await
                        .insert(pool.clone(), url.clone());
                }
                Ok(url)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_queue_does_not_exist()) =>
            {
                Ok(None)
            }
            Err(e) => Err(describe_error(&e)),
        }
    }
}
/// Most bytes of message bodies in one `SendMessageBatch` (SQS allows 256 KiB in all).
const BATCH_BODY_BYTES: usize = 240 * 1024;

/// Splits bodies into `SendMessageBatch` requests: at most ten each, and at most
/// [`BATCH_BODY_BYTES`] together (a body bigger than that goes alone).
fn requests(bodies: &[(usize, String)]) -> Vec<&[(usize, String)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (at, (_, body)) in bodies.iter().enumerate() {
        if at > start && (at - start == 10 || bytes + body.len() > BATCH_BODY_BYTES) {
            out.push(&bodies[start..at]);
            (start, bytes) = (at, 0);
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_hold_ten_bodies_and_stay_under_the_size_limit() {
        let small: Vec<(usize, String)> = (0..23).map(|i| (i, "x".repeat(100))).collect();
        let sizes: Vec<usize> = requests(&small).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [10, 10, 3]);

        let big: Vec<(usize, String)> = (0..5).map(|i| (i, "x".repeat(100 * 1024))).collect();
        let sizes: Vec<usize> = requests(&big).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        for r in requests(&big) {
            assert!(r.iter().map(|(_, b)| b.len()).sum::<usize>() <= BATCH_BODY_BYTES);
        }
        let huge = vec![(0, "x".repeat(300 * 1024)), (1, "y".into())];
        let sizes: Vec<usize> = requests(&huge).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [1, 1]);
        assert!(requests(&[]).is_empty());
    }
}
