//! A real headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
//! for the console's browser tests. The WebDriver protocol is plain JSON over HTTP, spoken here
//! with the tests' own HTTP client.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};

use crate::{eventually, servers};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session.
    pub async fn start(width: u32, height: u32) -> Result<Self> {
        let port = servers::free_port()?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (Debian package chromium-driver)")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let root = format!("http://127.0.0.1:{port}");
        eventually(
            Duration::from_secs(20),
            "chromedriver to answer",
            || async {
                Ok(http
                    .get(format!("{root}/status"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            },
        )
        .await?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}")]
            }
        }}});
        let res: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let Some(session) = res["value"]["sessionId"].as_str() else {
            bail!("no WebDriver session: {res}");
        };
        Ok(Self {
            base: format!("{root}/session/{session}"),
            driver,
            http,
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req.send().await?.json().await?;
        if let Some(err) = res["value"]["error"].as_str() {
            bail!("WebDriver {path}: {err}: {}", res["value"]["message"]);
        }
        Ok(res["value"].clone())
    }

    /// A browser on the console at `console` (`<api>/console`), signed in with `token` as a
    /// user pool's hosted sign-in returns a user (`#id_token=`), once the dashboard shows.
    pub async fn signed_in(console: &str, token: &str) -> Result<Self> {
        let browser = Self::start(1280, 1000).await?;
        browser.goto(&format!("{console}#id_token={token}")).await?;
        browser
            .wait_for("#dash-totals", Duration::from_secs(20))
            .await?;
        Ok(browser)
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    async fn element(&self, css: &str) -> Result<String> {
        let v = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(v[ELEMENT].as_str().context("no element id")?.to_owned())
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<()> {
        eventually(timeout, &format!("element {css}"), || async {
            Ok(self.element(css).await.ok().map(|_| ()))
        })
        .await
    }

    /// Waits (up to `timeout`) until the element at `css` carries `data-state` = `state`.
    pub async fn wait_state(&self, css: &str, state: &str, timeout: Duration) -> Result<()> {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.dataset.state : null;";
        eventually(timeout, &format!("{css} to be {state}"), || async {
            let now = self.execute(script, json!([css])).await?;
            Ok((now.as_str() == Some(state)).then_some(()))
        })
        .await
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.wait_for(css, Duration::from_secs(20)).await?;
        let id = self.element(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    /// The text of the first element matching `css` (waiting up to 20 s for it).
    pub async fn text(&self, css: &str) -> Result<String> {
        self.wait_for(css, Duration::from_secs(20)).await?;
        let id = self.element(css).await?;
        let v = self
            .command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Sets a form field's value as if typed (the script sets it; `input` fires).
    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        self.wait_for(css, Duration::from_secs(20)).await?;
        self.execute(
            "const e = document.querySelector(arguments[0]); e.value = arguments[1]; \
             e.dispatchEvent(new Event('input', {bubbles: true})); \
             e.dispatchEvent(new Event('change', {bubbles: true}));",
            json!([css, value]),
        )
        .await?;
        Ok(())
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("no screenshot")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // DELETE the session (Chromium exits), then stop the driver. Plain HTTP/1.1 by hand: no
        // async runtime is at hand in a destructor.
        use std::io::{Read, Write};
        if let Some((host, path)) = self
            .base
            .strip_prefix("http://")
            .and_then(|r| r.split_once('/'))
            && let Ok(mut conn) = std::net::TcpStream::connect(host)
        {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                conn,
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
