//! End-to-end: the API through the emulated API Gateway with dev-issuer tokens. Every documented
//! route refuses a missing, forged or expired token (401) and a role too low (403); bad bodies get
//! a 400 naming the field; manual jobs, cancel and retry work on queued jobs; every mutation is in
//! the audit log with its principal.

use pbs_e2e::{Stack, template_json, unique, workspace_root};
use serde_json::{Value, json};

fn documented_routes() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(workspace_root().join("lambdas/src/api/openapi.json"))
        .expect("openapi.json");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            routes.push((
                method.to_uppercase(),
                path.replace("{id}", "no-such-thing"),
                op["x-pbs-role"].as_str().unwrap().to_owned(),
            ));
        }
    }
    routes
}

fn below(role: &str) -> Option<&'static str> {
    match role {
        "admin" => Some("operator"),
        "operator" => Some("viewer"),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_refuses_bad_tokens_and_low_roles() {
    let stack = Stack::connect().await.unwrap();
    let routes = documented_routes();
    assert!(routes.len() >= 15, "{routes:?}");
    let expired = stack.mint_token("admin", "late", -120).unwrap();
    let no_group = stack.token("none").unwrap();
    let forged = {
        // A valid token with its payload swapped for one claiming admin: the signature fails.
        let viewer = stack.token("viewer").unwrap();
        let admin = stack.token("admin").unwrap();
        let v: Vec<&str> = viewer.split('.').collect();
        let a: Vec<&str> = admin.split('.').collect();
        format!("{}.{}.{}", v[0], a[1], v[2])
    };
    let body = json!({});
    for (method, path, role) in &routes {
        let send_body = (method != "GET").then_some(&body);
        for (what, token) in [
            ("no token", None),
            ("garbage", Some("not-a-jwt")),
            ("forged", Some(forged.as_str())),
            ("expired", Some(expired.as_str())),
        ] {
            let (status, answer) = stack
                .call_with(token, method, path, send_body)
                .await
                .unwrap();
            assert_eq!(status, 401, "{method} {path} with {what}: {answer}");
            assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
        }
        let (status, answer) = stack
            .call_with(Some(&no_group), method, path, send_body)
            .await
            .unwrap();
        assert_eq!(status, 403, "{method} {path} in no group: {answer}");
        if let Some(low) = below(role) {
            let token = stack.token(low).unwrap();
            let (status, answer) = stack
                .call_with(Some(&token), method, path, send_body)
                .await
                .unwrap();
            assert_eq!(status, 403, "{method} {path} as {low}: {answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("needs the {role} role")),
                "{answer}"
            );
        }
        let token = stack.token(role).unwrap();
        let (status, answer) = stack
            .call_with(Some(&token), method, path, send_body)
            .await
            .unwrap();
        assert!(
            status != 401 && status != 403 && status != 405,
            "{method} {path} as {role}: {status} {answer}"
        );
        assert!(
            !answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("no route"),
            "{method} {path} is documented but not routed: {answer}"
        );
    }
    // The document itself is served and is the one in the tree.
    let (status, served) = stack
        .call("GET", "/api/v1/openapi.json", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(served["paths"].as_object().unwrap().len(), {
        let text =
            std::fs::read_to_string(workspace_root().join("lambdas/src/api/openapi.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()["paths"]
            .as_object()
            .unwrap()
            .len()
    });
    let (status, me) = stack.call("GET", "/api/v1/me", None).await.unwrap();
    assert_eq!((status, me["role"].as_str()), (200, Some("admin")), "{me}");
}

async fn expect_400(
    stack: &Stack,
    method: &str,
    path: &str,
    body: Value,
    field: &str,
    words: &str,
) {
    let (status, answer) = stack.call(method, path, Some(&body)).await.unwrap();
    assert_eq!(status, 400, "{method} {path} {body}: {answer}");
    assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(words),
        "{body}: {message:?} lacks {words:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_jobs_cancel_retry_dry_run_and_the_audit_log() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("api");
    let queues = stack.create_pool(&pool).await.unwrap();
    let bucket = unique("quiet");
    stack.create_quiet_bucket(&bucket).await.unwrap();
    let prefix = unique("m");
    let template = unique("tpl");
    stack
        .create_template(&template_json(
            &template,
            &bucket,
            &format!("{prefix}/**"),
            &pool,
            "in/{key}",
        ))
        .await
        .unwrap();
    for name in ["a.txt", "b.txt"] {
        stack
            .put_object(&bucket, &format!("{prefix}/{name}"), b"manual".to_vec())
            .await
            .unwrap();
    }

    // Bad bodies: each answer names the field and says what is wrong.
    let jobs = "/api/v1/jobs";
    expect_400(
        &stack,
        "POST",
        jobs,
        json!({"keys": ["x"]}),
        "body",
        "template_id",
    )
    .await;
    expect_400(
        &stack,
        "POST",
        jobs,
        json!({"template_id": template, "keys": ["x"], "colour": 1}),
        "colour",
        "unknown field",
    )
    .await;
    expect_400(
        &stack,
        "POST",
        jobs,
        json!({"template_id": template, "keys": []}),
        "keys",
        "1 to 1000",
    )
    .await;
    expect_400(
        &stack,
        "POST",
        jobs,
        json!({"template_id": template, "keys": "a"}),
        "keys",
        "sequence",
    )
    .await;
    expect_400(
        &stack,
        "POST",
        jobs,
        json!({"template_id": "nope-x", "keys": ["a"]}),
        "template_id",
        "not found",
    )
    .await;
    expect_400(&stack, "POST", jobs, json!({"template_id": template, "keys": [format!("{prefix}/a.txt"), format!("{prefix}/zz.txt")]}), "keys[1]", "no object").await;
    expect_400(
        &stack,
        "POST",
        jobs,
        json!({"template_id": "Bad Id", "keys": ["a"]}),
        "template_id",
        "",
    )
    .await;
    let bad_glob = json!({"id": unique("bad"), "trigger": {"type": "s3", "bucket": bucket, "key_glob": "a/[b"},
                          "destination": {"pool": pool, "endpoint": "disk", "path": "{key}"}});
    expect_400(
        &stack,
        "POST",
        "/api/v1/templates",
        bad_glob,
        "trigger.key_glob",
        "",
    )
    .await;
    expect_400(
        &stack,
        "POST",
        "/api/v1/templates/dry-run",
        json!({"bucket": bucket}),
        "body",
        "key",
    )
    .await;
    expect_400(
        &stack,
        "GET",
        "/api/v1/jobs?state=done",
        json!(null),
        "state",
        "queued, running",
    )
    .await;
    expect_400(
        &stack,
        "GET",
        "/api/v1/jobs?since=yesterday",
        json!(null),
        "since",
        "RFC 3339",
    )
    .await;

    // Dry run: where an object would go.
    let (status, dry) = stack
        .call(
            "POST",
            "/api/v1/templates/dry-run",
            Some(&json!({"bucket": bucket, "key": format!("{prefix}/x/y.mov")})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{dry}");
    let matches = dry["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "{dry}");
    assert_eq!(matches[0]["template_id"], template.as_str());
    assert_eq!(matches[0]["dest_path"], format!("in/{prefix}/x/y.mov"));

    // A manual job of two files, as an operator: queued on the pool (no executor serves it).
    let operator = stack.token("operator").unwrap();
    let keys = [format!("{prefix}/a.txt"), format!("{prefix}/b.txt")];
    let (status, job) = stack
        .call_with(
            Some(&operator),
            "POST",
            jobs,
            Some(&json!({"template_id": template, "keys": keys})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job["state"], "queued");
    assert_eq!(job["origin"], "manual");
    assert_eq!(job["created_by"], "dev-operator");
    assert_eq!(job["file_count"], 2);
    let queued = stack.peek(&queues.url).await.unwrap();
    assert!(
        queued
            .iter()
            .any(|m| m.body().unwrap_or_default().contains(&id)),
        "the job message is on the pool's queue"
    );

    // Filters: by template and state.
    let (_, listed) = stack
        .call(
            "GET",
            &format!("/api/v1/jobs?template={template}&state=queued"),
            None,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{listed}");

    // Retry is for failed or cancelled jobs; cancel takes a queued job at once.
    let (status, answer) = stack
        .call_with(Some(&operator), "POST", &format!("{jobs}/{id}/retry"), None)
        .await
        .unwrap();
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = stack
        .call_with(
            Some(&operator),
            "POST",
            &format!("{jobs}/{id}/cancel"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (status, answer["state"].as_str()),
        (200, Some("cancelled")),
        "{answer}"
    );
    let (status, answer) = stack
        .call_with(
            Some(&operator),
            "POST",
            &format!("{jobs}/{id}/cancel"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        status, 409,
        "a finished job is not cancelled twice: {answer}"
    );
    let (_, shown) = stack
        .call("GET", &format!("{jobs}/{id}"), None)
        .await
        .unwrap();
    assert_eq!(shown["state"], "cancelled");
    assert_eq!(shown["cancel_requested_by"], "dev-operator");
    let (status, retried) = stack
        .call_with(Some(&operator), "POST", &format!("{jobs}/{id}/retry"), None)
        .await
        .unwrap();
    assert_eq!(status, 201, "{retried}");
    assert_eq!(retried["retry_of"], id.as_str());
    assert_eq!(retried["file_count"], 2);
    let retry_id = retried["job_id"].as_str().unwrap().to_owned();
    assert_ne!(retry_id, id);

    // A viewer may not cancel; the refusal is audited too.
    let viewer = stack.token("viewer").unwrap();
    let (status, _) = stack
        .call_with(
            Some(&viewer),
            "POST",
            &format!("{jobs}/{retry_id}/cancel"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 403);

    let (status, audit) = stack
        .call("GET", "/api/v1/audit?limit=500", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let has = |principal: &str, path: &str, status: u64| {
        entries.iter().any(|e| {
            e["principal"] == principal
                && e["path"] == path
                && e["status"] == status
                && e["method"] == "POST"
        })
    };
    assert!(
        entries.iter().any(|e| e["principal"] == "dev-operator"
            && e["path"] == jobs
            && e["status"] == 201
            && e["target"] == id.as_str()),
        "manual job audited: {audit}"
    );
    for (who, path, status) in [
        ("dev-operator", format!("{jobs}/{id}/cancel"), 200),
        ("dev-operator", format!("{jobs}/{id}/cancel"), 409),
        ("dev-operator", format!("{jobs}/{id}/retry"), 201),
        ("dev-viewer", format!("{jobs}/{retry_id}/cancel"), 403),
        ("dev-admin", "/api/v1/templates".to_owned(), 201),
    ] {
        assert!(
            has(who, &path, status),
            "POST {path} by {who} answered {status} is not audited: {audit}"
        );
    }
    assert!(
        entries.iter().all(|e| e["method"] != "GET"),
        "reads are not audited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_copy_cancelled_through_the_api_stops_leaves_no_partial_and_ends_cancelled() {
    use std::time::{Duration, Instant};

    let stack = Stack::connect().await.unwrap();
    let opts = pbs_e2e::ExecutorOptions {
        // 1 GiB at 40 MB/s: about 27 s, long enough to cancel in the middle.
        bandwidth_limit: Some("40M".into()),
        heartbeat_seconds: Some(1),
        ..Default::default()
    };
    let sc = pbs_e2e::Scenario::with(&stack, "cancel", None, "big/**", "out/{key}", opts)
        .await
        .unwrap();
    let size = 1usize << 30;
    stack
        .put_object(&sc.bucket, "big/one.bin", pbs_e2e::body(size, 7))
        .await
        .unwrap();
    let operator = stack.token("operator").unwrap();
    let id = stack
        .manual_job(&sc.template, &["big/one.bin"])
        .await
        .unwrap();
    let path = format!("/api/v1/jobs/{id}");

    // Progress reaches the API while it runs.
    let running = stack
        .job_when(
            &id,
            Duration::from_secs(120),
            "progress of the running copy",
            |j| j["state"] == "running" && j["progress"]["bytes"].as_u64().unwrap_or(0) > 0,
        )
        .await
        .unwrap();
    assert_eq!(running["progress"]["total_bytes"], size as u64, "{running}");
    assert!(running["progress"]["bytes"].as_u64().unwrap() < size as u64);
    let partials = |landing: &std::path::Path| -> Vec<String> {
        pbs_e2e::files_under(landing)
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        partials(&sc.executor.landing)
            .iter()
            .any(|p| p.contains(".partial")),
        "a partial file is being written: {:?}",
        partials(&sc.executor.landing)
    );

    let asked = Instant::now();
    let (status, answer) = stack
        .call_with(Some(&operator), "POST", &format!("{path}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["executor_id"], sc.executor.id.as_str());
    let ended = stack
        .job_when(
            &id,
            Duration::from_secs(60),
            "the job to end cancelled",
            |j| j["state"] != "running",
        )
        .await
        .unwrap();
    println!(
        "cancel → cancelled in the API: {:.2} s",
        asked.elapsed().as_secs_f64()
    );
    assert_eq!(ended["state"], "cancelled", "{ended}");
    assert_eq!(ended["error"], "cancelled by dev-operator", "{ended}");
    // Nothing at the final name, no partial left.
    assert_eq!(partials(&sc.executor.landing), Vec::<String>::new());
    assert!(
        sc.executor.log().contains("job cancelled"),
        "{}",
        sc.executor.log()
    );
    // The executor counts the attempt as cancelled.
    let page = sc.executor.metrics().await.unwrap();
    assert!(
        page.lines()
            .any(|l| l == "pbs_jobs_total{outcome=\"cancelled\"} 1"),
        "{page}"
    );

    // The attempt's log was uploaded and the API serves it.
    let log_key = ended["log_key"].as_str().expect("log key").to_owned();
    assert_eq!(log_key, format!("logs/{}/{id}/attempt-1.log", sc.pool));
    let res = stack
        .http
        .get(format!("{}{path}/log", stack.output("LocalApiUrl")))
        .bearer_auth(stack.token("viewer").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let text = res.text().await.unwrap();
    assert!(
        text.contains("\"stats\""),
        "rclone's statistics are in the log: {text}"
    );

    // A second delivery of the job's message is not run again: the ledger has it cancelled.
    let ledger = sc.executor.ledger().unwrap();
    let row = ledger
        .iter()
        .find(|r| r["job_id"] == id.as_str())
        .expect("ledger row");
    assert_eq!(row["state"], "cancelled", "{row}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_report_lists_each_of_100_files_with_the_hash_of_what_landed() {
    use std::time::Duration;

    let stack = Stack::connect().await.unwrap();
    let sc = pbs_e2e::Scenario::new(&stack, "report", None, "batch/**", "r/{key}")
        .await
        .unwrap();
    // Hash verification, so each delivered file's MD5 is read back from the destination.
    sc.with_options(&stack, json!({"delivery": {"verify": "hash"}}))
        .await
        .unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("batch/f,{i:03}.bin")).collect();
    for (i, key) in keys.iter().enumerate() {
        stack
            .put_object(&sc.bucket, key, pbs_e2e::body(1000 + i * 37, i as u32))
            .await
            .unwrap();
    }
    let (status, job) = stack
        .call(
            "POST",
            "/api/v1/jobs",
            Some(&json!({"template_id": sc.template, "keys": keys})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = stack
        .job_when(
            &id,
            Duration::from_secs(120),
            "the 100-file job to end",
            |j| ["succeeded", "failed"].contains(&j["state"].as_str().unwrap_or("")),
        )
        .await
        .unwrap();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["report_key"],
        format!("reports/{}/{id}/attempt-1.json", sc.pool)
    );

    let report = stack.report(&id).await.unwrap();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 100);
    // The hashes of what actually landed, by md5sum.
    let landed: Vec<String> = keys
        .iter()
        .map(|k| {
            sc.executor
                .landing
                .join("r")
                .join(k)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let out = std::process::Command::new("md5sum")
        .args(&landed)
        .output()
        .unwrap();
    assert!(out.status.success());
    let sums: std::collections::HashMap<String, String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (sum, path) = l.split_once("  ").unwrap();
            (path.to_owned(), sum.to_owned())
        })
        .collect();
    for (row, (key, path)) in files.iter().zip(keys.iter().zip(&landed)) {
        assert_eq!(row["key"], key.as_str());
        assert_eq!(row["dest_path"], format!("r/{key}"));
        assert_eq!(row["outcome"], "copied", "{row}");
        assert_eq!(row["size"], std::fs::metadata(path).unwrap().len());
        assert_eq!(
            row["md5"],
            sums[path].as_str(),
            "{key}: the report's hash is the landed file's"
        );
        assert!(row["source_version"].is_string(), "{row}");
    }
    // The same for people, as CSV: a header and one line per file, keys with commas quoted.
    let res = stack
        .http
        .get(format!(
            "{}/api/v1/jobs/{id}/report?format=csv",
            stack.output("LocalApiUrl")
        ))
        .bearer_auth(stack.token("viewer").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 101, "{csv}");
    assert!(lines[0].starts_with("job_id,key,source_version,size,dest_path,md5,outcome"));
    assert!(
        lines[1].starts_with(&format!("{id},\"batch/f,000.bin\",")),
        "{}",
        lines[1]
    );
    let (status, answer) = stack
        .call("GET", &format!("/api/v1/jobs/{id}/report?format=xml"), None)
        .await
        .unwrap();
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("format")),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hourly_figures_count_each_ended_job_once_and_match_the_job_list() {
    let stack = Stack::connect().await.unwrap();
    let sc = pbs_e2e::Scenario::new(&stack, "stats", None, "s/**", "{key}")
        .await
        .unwrap();
    // One attempt per job, so the failing one ends at once.
    sc.with_options(&stack, json!({"retry": {"max_attempts": 1}}))
        .await
        .unwrap();
    let sizes = [1000usize, 2345, 10];
    for (i, size) in sizes.iter().enumerate() {
        stack
            .put_object(
                &sc.bucket,
                &format!("s/{i}.bin"),
                pbs_e2e::body(*size, i as u32),
            )
            .await
            .unwrap();
    }
    // A folder where the third file must land: its job fails.
    std::fs::create_dir_all(sc.executor.landing.join("s/2.bin/in-the-way")).unwrap();
    sc.ended_jobs(&stack, &["s/0.bin", "s/1.bin", "s/2.bin"])
        .await
        .unwrap();
    // The jobs may straddle an hour: two hours cover them.
    let path = format!("/api/v1/stats?hours=2&pool={}", sc.pool);
    let stats = pbs_e2e::eventually(
        std::time::Duration::from_secs(30),
        "the ends counted",
        || async {
            let (status, stats) = stack.call("GET", &path, None).await?;
            anyhow::ensure!(status == 200, "{stats}");
            let ended = stats["total"]["succeeded"].as_u64().unwrap_or(0)
                + stats["total"]["failed"].as_u64().unwrap_or(0);
            Ok((ended >= 3).then_some(stats))
        },
    )
    .await
    .unwrap();
    let jobs = stack.jobs_of_template(&sc.template).await.unwrap();
    let count = |state: &str| jobs.iter().filter(|j| j["state"] == state).count() as u64;
    assert_eq!(stats["total"]["succeeded"], count("succeeded"), "{stats:#}");
    assert_eq!(stats["total"]["failed"], count("failed"), "{stats:#}");
    assert_eq!((count("succeeded"), count("failed")), (2, 1));
    assert_eq!(stats["total"]["files"], 2, "{stats:#}");
    assert_eq!(
        stats["total"]["bytes"],
        (sizes[0] + sizes[1]) as u64,
        "{stats:#}"
    );
    let hours = stats["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 2, "{stats:#}");
    // The failure is counted under its error class, as the job list reports it.
    let failed = jobs.iter().find(|j| j["state"] == "failed").unwrap();
    let class = failed["error_class"].as_str().unwrap();
    let by_class: u64 = hours
        .iter()
        .map(|h| h["failed_by_class"][class].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(by_class, 1, "{class}: {stats:#}");
    // Bad parameters are named.
    for (query, field) in [
        ("hours=0", "hours"),
        ("hours=169", "hours"),
        ("pool=no%20pool", "pool"),
    ] {
        let (status, answer) = stack
            .call("GET", &format!("/api/v1/stats?{query}"), None)
            .await
            .unwrap();
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{query}: {answer}");
    }
}
