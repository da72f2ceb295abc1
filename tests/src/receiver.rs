//! A real HTTP receiver for webhook tests, on its own 127.0.0.1 port: it answers each POST with
//! the next status of a script (then 200) and keeps every request it got, headers and body.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the delivery verifies as docs/flows.md tells receivers to check it: its signature
    /// over timestamp, delivery id and body under `secret`, and its timestamp within the replay
    /// window of now.
    pub fn verifies(&self, secret: &[u8]) -> bool {
        use pbs_shared::notify;
        let (Some(signature), Some(timestamp), Some(delivery)) = (
            self.header(notify::SIGNATURE_HEADER),
            self.header(notify::TIMESTAMP_HEADER)
                .and_then(|t| t.parse().ok()),
            self.header(notify::DELIVERY_HEADER),
        ) else {
            return false;
        };
        let now = chrono::Utc::now().timestamp();
        notify::verify(
            secret,
            (timestamp, delivery, &self.body),
            signature,
            (now, notify::REPLAY_WINDOW_SECONDS),
        )
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<u16>,
    got: Vec<Received>,
}

pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that answers the first requests with `script`, then 200.
    pub async fn start(script: &[u16]) -> Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.iter().copied().collect(),
            got: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks/pbs", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inner, task })
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("receiver lock").got.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut inner = inner.lock().expect("receiver lock");
    inner.got.push(Received { headers, body });
    let code = inner.script.pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
