//! End-to-end: the operator console in a real headless Chromium, served by the api function
//! through the emulated API Gateway, with a real executor behind it. Screenshots of the main pages
//! go to `artifacts/console/` (untracked) for a person to look at.

use std::path::PathBuf;
use std::time::Duration;

use pbs_e2e::browser::Browser;
use pbs_e2e::{ExecutorOptions, Scenario, Stack, body, files_under, workspace_root};
use serde_json::json;

fn shot(name: &str) -> PathBuf {
    workspace_root()
        .join("artifacts/console")
        .join(format!("{name}.png"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_signs_in_watches_a_job_reads_its_log_fixes_a_template_and_cancels() {
    let stack = Stack::connect().await.unwrap();
    let opts = ExecutorOptions {
        // Slow enough to watch progress and to cancel mid-copy.
        bandwidth_limit: Some("25M".into()),
        heartbeat_seconds: Some(2),
        ..Default::default()
    };
    let sc = Scenario::with(&stack, "console", None, "media/**", "out/{key}", opts)
        .await
        .unwrap();
    stack
        .put_object(&sc.bucket, "media/clip.mov", body(100 << 20, 1))
        .await
        .unwrap();
    stack
        .put_object(&sc.bucket, "media/long.mov", body(700 << 20, 2))
        .await
        .unwrap();
    let console = format!("{}/console", stack.output("LocalApiUrl"));
    let browser = Browser::start(1280, 900).await.unwrap();

    // Signed out, every page is the sign-in page.
    browser.goto(&format!("{console}#/jobs")).await.unwrap();
    browser
        .wait_for("#token", Duration::from_secs(20))
        .await
        .unwrap();
    browser.screenshot(&shot("sign-in")).await.unwrap();
    // A refused token stays signed out, with the reason.
    browser.fill("#token", "not-a-token").await.unwrap();
    browser.click("#sign-in").await.unwrap();
    let refused = browser.text("[role=alert]").await.unwrap();
    assert!(refused.contains("refused"), "{refused}");
    browser
        .fill("#token", &stack.token("admin").unwrap())
        .await
        .unwrap();
    browser.click("#sign-in").await.unwrap();
    browser
        .wait_for("#jobs", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(browser.text("#who").await.unwrap(), "dev-admin · admin");

    // A manual job from the console: queued, then running with progress, then succeeded.
    browser.goto(&format!("{console}#/jobs/new")).await.unwrap();
    browser.fill("#job-template", &sc.template).await.unwrap();
    browser.fill("#job-keys", "media/clip.mov").await.unwrap();
    browser.click("form button[type=submit]").await.unwrap();
    browser
        .wait_for("#job-state", Duration::from_secs(20))
        .await
        .unwrap();
    let job_url: String = browser
        .execute("return location.hash;", json!([]))
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let job_id = job_url.trim_start_matches("#/jobs/").to_owned();
    assert!(job_id.starts_with("manual-"), "{job_url}");
    browser
        .wait_state("#job-state", "running", Duration::from_secs(90))
        .await
        .unwrap();
    browser
        .wait_for("#progress", Duration::from_secs(60))
        .await
        .unwrap();
    let pct = browser
        .execute(
            "return Number(document.querySelector('#progress').dataset.pct);",
            json!([]),
        )
        .await
        .unwrap();
    assert!(
        pct.as_f64().unwrap() < 100.0,
        "progress shown mid-copy: {pct}"
    );
    browser.screenshot(&shot("job-running")).await.unwrap();
    browser
        .wait_state("#job-state", "succeeded", Duration::from_secs(120))
        .await
        .unwrap();
    // The log viewer shows the uploaded rclone log.
    pbs_e2e::eventually(Duration::from_secs(30), "the log in the viewer", || async {
        let text = browser.text("#log").await?;
        Ok(text.contains("\"stats\"").then_some(()))
    })
    .await
    .unwrap();
    // And its delivery report.
    let report = browser
        .text("#report tr[data-outcome='copied']")
        .await
        .unwrap();
    assert!(report.contains("media/clip.mov"), "{report}");
    browser
        .screenshot(&shot("job-succeeded-with-log"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(sc.executor.landing.join("out/media/clip.mov"))
            .unwrap()
            .len(),
        100 << 20
    );

    // The dashboard lists it as succeeded.
    browser.goto(&format!("{console}#/jobs")).await.unwrap();
    browser
        .wait_state(
            &format!("tr[data-job='{job_id}']"),
            "succeeded",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    browser.screenshot(&shot("jobs")).await.unwrap();

    // Jobs are named by their file, and found by the start of its key (an index, not a scan).
    let (status, found) = stack
        .call("GET", "/api/v1/jobs?key_prefix=media/cl", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{found}");
    assert!(
        pbs_e2e::job_ids(&found).contains(&job_id.as_str()),
        "{found}"
    );
    let ours = found["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == job_id.as_str())
        .unwrap();
    assert_eq!(ours["first_key"], "media/clip.mov", "{ours:#}");
    browser.fill("#key-search", "media/cl").await.unwrap();
    browser.click("#key-search-form button").await.unwrap();
    browser
        .wait_state(
            &format!("tr[data-job='{job_id}']"),
            "succeeded",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let row = browser
        .text(&format!("tr[data-job='{job_id}'] td.id"))
        .await
        .unwrap();
    assert_eq!(row, "media/clip.mov");
    browser.screenshot(&shot("jobs-by-file")).await.unwrap();
    browser
        .fill("#key-search", "no-such-folder/")
        .await
        .unwrap();
    browser.click("#key-search-form button").await.unwrap();
    pbs_e2e::eventually(
        Duration::from_secs(20),
        "no job for an unknown prefix",
        || async {
            let text = browser.text("#jobs tbody").await?;
            Ok(text
                .contains("No job has a file starting with no-such-folder/")
                .then_some(()))
        },
    )
    .await
    .unwrap();

    // A template with a bad glob: the editor shows the field and the problem, and nothing is saved.
    browser
        .goto(&format!("{console}#/templates/new"))
        .await
        .unwrap();
    let bad = json!({"id": "console-bad", "trigger": {"type": "s3", "bucket": sc.bucket, "key_glob": "media/[oops"},
                     "destination": {"pool": sc.pool, "endpoint": "disk", "path": "{key}"}});
    browser
        .fill("#template-json", &bad.to_string())
        .await
        .unwrap();
    browser.click("#save-template").await.unwrap();
    let error = browser.text("#template-error").await.unwrap();
    assert!(error.starts_with("trigger.key_glob:"), "{error}");
    browser.screenshot(&shot("template-error")).await.unwrap();
    let (status, _) = stack
        .call("GET", "/api/v1/templates/console-bad", None)
        .await
        .unwrap();
    assert_eq!(status, 404, "a refused template is not stored");

    // Cancel a running copy from its page.
    let (status, long) = stack
        .call(
            "POST",
            "/api/v1/jobs",
            Some(&json!({"template_id": sc.template, "keys": ["media/long.mov"]})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{long}");
    let long_id = long["job_id"].as_str().unwrap();
    browser
        .goto(&format!("{console}#/jobs/{long_id}"))
        .await
        .unwrap();
    browser
        .wait_state("#job-state", "running", Duration::from_secs(90))
        .await
        .unwrap();
    browser
        .wait_for("#progress", Duration::from_secs(60))
        .await
        .unwrap();
    browser
        .execute("window.confirm = () => true;", json!([]))
        .await
        .unwrap();
    browser.click("#cancel").await.unwrap();
    browser
        .wait_state("#job-state", "cancelled", Duration::from_secs(60))
        .await
        .unwrap();
    browser.screenshot(&shot("job-cancelled")).await.unwrap();
    let left: Vec<_> = files_under(&sc.executor.landing)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("long.mov"))
        .collect();
    assert!(
        left.is_empty(),
        "nothing of the cancelled copy is left: {left:?}"
    );

    // Executors: this one is online.
    browser
        .goto(&format!("{console}#/executors"))
        .await
        .unwrap();
    let row = format!("tr[data-executor='{}']", sc.executor.id);
    let online = browser.text(&format!("{row} .badge")).await.unwrap();
    assert_eq!(online, "online");
    browser.screenshot(&shot("executors")).await.unwrap();
    browser.goto(&format!("{console}#/audit")).await.unwrap();
    let audit = browser.text("#audit").await.unwrap();
    assert!(
        audit.contains(&format!("POST /api/v1/jobs/{long_id}/cancel")),
        "{audit}"
    );
    browser.screenshot(&shot("audit")).await.unwrap();

    // On a phone: the page itself does not scroll sideways (tables scroll in their own box).
    browser.resize(390, 844).await.unwrap();
    browser.goto(&format!("{console}#/jobs")).await.unwrap();
    browser
        .wait_for("#jobs tbody tr", Duration::from_secs(20))
        .await
        .unwrap();
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            json!([]),
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "page wider than the phone by {overflow}px"
    );
    browser.screenshot(&shot("jobs-phone")).await.unwrap();

    // Signing out leaves no token behind.
    browser.click("#sign-out").await.unwrap();
    browser
        .wait_for("#token", Duration::from_secs(20))
        .await
        .unwrap();
    let kept = browser
        .execute("return sessionStorage.getItem('pbs-token');", json!([]))
        .await
        .unwrap();
    assert!(kept.is_null(), "{kept}");
}
