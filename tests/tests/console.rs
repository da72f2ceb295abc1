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
    // By template: the job is listed, and every job listed is of that template.
    browser.goto(&format!("{console}#/jobs")).await.unwrap();
    browser
        .wait_for(
            &format!("#template-filter option[value='{}']", sc.template),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    browser
        .fill("#template-filter", &sc.template)
        .await
        .unwrap();
    browser
        .wait_state(
            &format!("tr[data-job='{job_id}']"),
            "succeeded",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let templates = browser
        .execute(
            "return [...document.querySelectorAll('#jobs tbody tr')].map((r) => r.cells[2].textContent);",
            json!([]),
        )
        .await
        .unwrap();
    let listed = templates.as_array().unwrap();
    assert!(!listed.is_empty());
    assert!(
        listed.iter().all(|t| t == sc.template.as_str()),
        "{templates}"
    );

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

/// The dashboard's figures as the page holds them (`data-value` of each tile).
async fn tiles(browser: &Browser) -> serde_json::Value {
    browser
        .execute(
            "const out = {}; for (const id of ['files', 'bytes', 'succeeded', 'failed', 'cancelled']) { \
               const e = document.getElementById('dash-' + id); out[id] = e ? Number(e.dataset.value) : null; } \
             return out;",
            json!([]),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_what_the_api_counts_with_failures_a_backlog_and_a_running_job() {
    let stack = Stack::connect().await.unwrap();
    let opts = ExecutorOptions {
        // Slow enough that the big file is seen running.
        bandwidth_limit: Some("20M".into()),
        heartbeat_seconds: Some(2),
        ..Default::default()
    };
    let sc = Scenario::with(&stack, "dash", None, "d/**", "{key}", opts)
        .await
        .unwrap();
    // One attempt per job, so the failing one ends at once.
    sc.with_options(&stack, json!({"retry": {"max_attempts": 1}}))
        .await
        .unwrap();
    let sizes = [3000usize, 1500, 10];
    for (i, size) in sizes.iter().enumerate() {
        stack
            .put_object(&sc.bucket, &format!("d/{i}.bin"), body(*size, i as u32))
            .await
            .unwrap();
    }
    let big_size = 300usize << 20;
    stack
        .put_object(&sc.bucket, "d/big.bin", body(big_size, 9))
        .await
        .unwrap();
    // A folder where d/2.bin must land: its job fails.
    std::fs::create_dir_all(sc.executor.landing.join("d/2.bin/in-the-way")).unwrap();
    let ended = sc
        .ended_jobs(&stack, &["d/0.bin", "d/1.bin", "d/2.bin"])
        .await
        .unwrap();
    // A pool with a queue and no executor: its job waits there.
    let idle = pbs_e2e::unique("dash-idle");
    stack.create_pool(&idle).await.unwrap();
    let idle_template = format!("{idle}-t");
    stack
        .create_template(&pbs_e2e::template_json(
            &idle_template,
            &sc.bucket,
            "d/**",
            &idle,
            "{key}",
        ))
        .await
        .unwrap();
    let waiting = stack
        .manual_job(&idle_template, &["d/0.bin"])
        .await
        .unwrap();
    let big = stack
        .manual_job(&sc.template, &["d/big.bin"])
        .await
        .unwrap();

    let console = format!("{}/console", stack.output("LocalApiUrl"));
    let browser = Browser::signed_in(&console, &stack.token("viewer").unwrap())
        .await
        .unwrap();
    browser.resize(1280, 2200).await.unwrap();
    browser
        .goto(&format!("{console}#/dashboard?pool={}", sc.pool))
        .await
        .unwrap();
    // The running job, with its progress.
    browser
        .wait_for(
            &format!("#dash-running tr[data-job='{big}'] .progress"),
            Duration::from_secs(90),
        )
        .await
        .unwrap();
    let row = browser
        .text(&format!("#dash-running tr[data-job='{big}']"))
        .await
        .unwrap();
    assert!(row.contains("d/big.bin"), "{row}");
    assert!(row.contains(&sc.executor.id), "{row}");
    browser
        .screenshot(&shot("dashboard-running"))
        .await
        .unwrap();
    let chosen = browser
        .execute(
            "return document.getElementById('dash-pool').value;",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(chosen, sc.pool.as_str(), "the pool shown is the one chosen");
    stack
        .job_when(
            &big,
            Duration::from_secs(120),
            "the big job to succeed",
            |j| j["state"] == "succeeded",
        )
        .await
        .unwrap();

    // Every figure is the API's for the pool, and what the jobs did.
    let api_total = |hours: u32| {
        let path = format!("/api/v1/stats?hours={hours}&pool={}", sc.pool);
        let stack = &stack;
        async move {
            let (status, stats) = stack.call("GET", &path, None).await.unwrap();
            assert_eq!(status, 200, "{stats}");
            stats
        }
    };
    let shown = pbs_e2e::eventually(
        Duration::from_secs(30),
        "the dashboard's figures",
        || async {
            let shown = tiles(&browser).await;
            Ok((shown["succeeded"] == 3).then_some(shown))
        },
    )
    .await
    .unwrap();
    let stats = api_total(24).await;
    let expected_bytes = (sizes[0] + sizes[1] + big_size) as u64;
    assert_eq!(
        shown,
        json!({"files": 3, "bytes": expected_bytes, "succeeded": 3, "failed": 1, "cancelled": 0}),
        "{stats:#}"
    );
    for field in ["files", "bytes", "succeeded", "failed", "cancelled"] {
        assert_eq!(shown[field], stats["total"][field], "{field}: {stats:#}");
    }
    // The failure is under its class, as the job reports it.
    let failed = stack.job(&ended[2]).await.unwrap();
    let class = failed["error_class"].as_str().unwrap().to_owned();
    let count = browser
        .execute(
            "const r = document.querySelector(`#failures-by-class tr[data-class='${arguments[0]}']`); \
             return r ? Number(r.dataset.count) : null;",
            json!([class]),
        )
        .await
        .unwrap();
    assert_eq!(count, 1, "class {class}");
    // The charts are drawn, described in words, and their numbers listed.
    let charts = browser
        .execute(
            "return ['chart-files', 'chart-bytes', 'chart-failures'].map((id) => { \
               const f = document.getElementById(id); \
               const cells = [...f.querySelectorAll('table.numbers tbody tr')].map((r) => r.cells[1].textContent); \
               return { canvas: f.querySelectorAll('canvas').length, label: f.querySelector('.chart').getAttribute('aria-label'), cells }; });",
            json!([]),
        )
        .await
        .unwrap();
    for chart in charts.as_array().unwrap() {
        assert!(chart["canvas"].as_u64().unwrap() >= 1, "{charts:#}");
    }
    assert!(
        charts[0]["label"].as_str().unwrap().contains("3 in all"),
        "{charts:#}"
    );
    let listed: u64 = charts[0]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_str()
                .unwrap()
                .replace([',', '.', ' '], "")
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(listed, 3, "{charts:#}");
    assert!(
        charts[2]["label"]
            .as_str()
            .unwrap()
            .contains(&format!("{class} 1")),
        "{charts:#}"
    );
    // The pool's executor is online.
    let online = browser
        .execute(
            "const r = document.querySelector(`#dash-executors tr[data-executor='${arguments[0]}']`); \
             return r ? r.dataset.online : null;",
            json!([sc.executor.id]),
        )
        .await
        .unwrap();
    assert_eq!(online, "true");
    browser.screenshot(&shot("dashboard")).await.unwrap();

    // Seven days: the same figures as the API's for 168 hours.
    browser.click("#range-7d").await.unwrap();
    browser
        .wait_for("#range-7d[aria-pressed='true']", Duration::from_secs(20))
        .await
        .unwrap();
    let week = api_total(168).await;
    let shown = pbs_e2e::eventually(Duration::from_secs(20), "the week's figures", || async {
        let shown = tiles(&browser).await;
        Ok((shown["succeeded"] == week["total"]["succeeded"]).then_some(shown))
    })
    .await
    .unwrap();
    for field in ["files", "bytes", "succeeded", "failed", "cancelled"] {
        assert_eq!(shown[field], week["total"][field], "{field}: {week:#}");
    }

    // All pools: the idle pool's queue holds its job, the oldest not started; the busy pool has
    // none waiting.
    browser
        .goto(&format!("{console}#/dashboard"))
        .await
        .unwrap();
    let queues = "const row = (p) => document.querySelector(`#dash-pools tr[data-pool='${p}']`); \
                  const look = (p) => { const r = row(p); if (!r) return null; \
                    const a = r.querySelector('td.oldest a'); \
                    return { waiting: r.dataset.waiting, oldest: a ? a.dataset.job : null }; }; \
                  return [look(arguments[0]), look(arguments[1])];";
    let found = pbs_e2e::eventually(Duration::from_secs(30), "the queues", || async {
        let found = browser.execute(queues, json!([idle, sc.pool])).await?;
        Ok((found[0]["oldest"] == waiting.as_str()).then_some(found))
    })
    .await
    .unwrap();
    assert_eq!(found[0]["waiting"], "1", "{found}");
    assert_eq!(found[1], json!({"waiting": "0", "oldest": null}), "{found}");
    // Cancelled, the job waits no more.
    let (status, answer) = stack
        .call("POST", &format!("/api/v1/jobs/{waiting}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    pbs_e2e::eventually(
        Duration::from_secs(30),
        "the idle pool's oldest job gone",
        || async {
            let found = browser.execute(queues, json!([idle, sc.pool])).await?;
            Ok(found[0]["oldest"].is_null().then_some(()))
        },
    )
    .await
    .unwrap();

    // On a phone: nothing wider than the screen but the tables' own scrolling.
    browser.resize(390, 844).await.unwrap();
    browser
        .goto(&format!("{console}#/dashboard?pool={}", sc.pool))
        .await
        .unwrap();
    browser
        .wait_for("#dash-totals .tile", Duration::from_secs(20))
        .await
        .unwrap();
    pbs_e2e::eventually(Duration::from_secs(10), "the page to fit", || async {
        let w = browser
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                json!([]),
            )
            .await?;
        Ok((w[0].as_u64() <= w[1].as_u64()).then_some(()))
    })
    .await
    .unwrap();
    browser.screenshot(&shot("dashboard-phone")).await.unwrap();
}
