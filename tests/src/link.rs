//! Fault injection: a TCP proxy between an executor and the emulator that a test can cut and
//! restore, to simulate the site's link to AWS dropping. While cut, new connections are reset and
//! open ones are closed.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Link {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Link {
    /// Proxies 127.0.0.1:<random port> to `upstream` (e.g. `127.0.0.1:4577`).
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (up, _) = watch::channel(true);
        let state = up.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                let mut down = state.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Self { addr, up })
    }

    /// The URL to give the executor instead of the emulator's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops the link: open connections close, new ones are refused.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}
