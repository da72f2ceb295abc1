//! End-to-end: S3 PUT → EventsQueue → trigger λ → pool queue → executor → rclone → local disk,
//! with status through the StatusQueue and the status λ, read back through the API Gateway.
//! Run by `./dev test` against `template.yaml` deployed to the local emulator.

use std::time::Duration;

use pbs_e2e::{Scenario, Stack, body, eventually, s3_event, template_json, unique};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn awkward_keys_land_byte_identical_and_the_api_reports_success() {
    let stack = Stack::connect().await.unwrap();
    let prefix = unique("in");
    let sc = Scenario::new(
        &stack,
        "spine",
        Some(stack.source_bucket()),
        &format!("{prefix}/**"),
        "out/{key}",
    )
    .await
    .unwrap();
    // One job per object, each checked through the API below.
    sc.per_object_jobs(&stack).await.unwrap();
    let (pool, tpl, executor) = (&sc.pool, &sc.template, &sc.executor);

    let files: Vec<(String, Vec<u8>)> = vec![
        (
            format!("{prefix}/a b+c%.txt"),
            b"plus, space and percent".to_vec(),
        ),
        (format!("{prefix}/été/🎬 clip ünï.mov"), body(70_000, 1)),
        (format!("{prefix}/deep/x/y/z/file.bin"), body(4096, 2)),
        (format!("{prefix}/empty.dat"), Vec::new()),
        (format!("{prefix}/big.bin"), body(50 * 1024 * 1024, 3)),
    ];
    for (key, data) in &files {
        stack
            .put_object(stack.source_bucket(), key, data.clone())
            .await
            .unwrap();
    }

    for (key, data) in &files {
        let got = executor.landed(&format!("out/{key}")).await.unwrap();
        assert!(
            got == *data,
            "{key}: landed {} bytes, expected {}",
            got.len(),
            data.len()
        );
    }
    // No partial file was left beside the delivered ones.
    let leftovers: Vec<_> = pbs_e2e::files_under(&executor.landing)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "partials left: {leftovers:?}");

    let jobs = stack.finished_jobs(tpl, files.len()).await.unwrap();
    assert_eq!(jobs.len(), files.len(), "{jobs:#?}");
    for (key, data) in &files {
        let job = jobs
            .iter()
            .find(|j| j["files"][0]["key"] == key.as_str())
            .unwrap_or_else(|| panic!("no job for {key}: {jobs:#?}"));
        assert_eq!(job["state"], "succeeded", "{job:#}");
        assert_eq!(job["result"]["bytes"], data.len() as u64, "{job:#}");
        assert_eq!(job["result"]["files"], 1, "{job:#}");
        assert_eq!(job["attempt"], 1, "{job:#}");
        assert_eq!(job["executor_id"], format!("{pool}-exec"));
        // The detail route agrees with the list.
        let id = job["job_id"].as_str().unwrap();
        let (status, detail) = stack
            .call("GET", &format!("/api/v1/jobs/{id}"), None)
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(detail["state"], "succeeded");
        assert_eq!(detail["files"][0]["dest_path"], format!("out/{key}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicated_event_makes_one_job_and_one_copy() {
    let stack = Stack::connect().await.unwrap();
    let sc = Scenario::new(&stack, "dup", None, "**", "{key}")
        .await
        .unwrap();
    let (pool, queue, bucket, tpl, executor) =
        (&sc.pool, &sc.queue, &sc.bucket, &sc.template, &sc.executor);

    let data = body(100_000, 7);
    let etag = stack
        .put_object(bucket, "clip one.mov", data.clone())
        .await
        .unwrap();
    let event = s3_event(
        bucket,
        "clip one.mov",
        data.len() as u64,
        &etag,
        "0000000000000001AA",
    );

    // Two deliveries of the same event, in separate batches.
    stack
        .send_events(std::slice::from_ref(&event))
        .await
        .unwrap();
    assert_eq!(executor.landed("clip one.mov").await.unwrap(), data);
    stack.finished_jobs(tpl, 1).await.unwrap();
    let sentinel = body(10, 8);
    let sentinel_etag = stack
        .put_object(bucket, "sentinel", sentinel.clone())
        .await
        .unwrap();
    stack
        .send_events(&[
            event.clone(),
            s3_event(bucket, "sentinel", 10, &sentinel_etag, "0000000000000002BB"),
        ])
        .await
        .unwrap();
    executor.landed("sentinel").await.unwrap();
    let jobs = stack.finished_jobs(tpl, 2).await.unwrap();
    let clip_jobs: Vec<_> = jobs
        .iter()
        .filter(|j| j["files"][0]["key"] == "clip one.mov")
        .collect();
    assert_eq!(clip_jobs.len(), 1, "{jobs:#?}");
    let clip_id = clip_jobs[0]["job_id"].as_str().unwrap().to_owned();

    let ledger = executor.ledger().unwrap();
    let row = ledger
        .iter()
        .find(|r| r["job_id"] == clip_id.as_str())
        .unwrap();
    assert_eq!(
        row["deliveries"], 1,
        "the trigger dispatched the duplicate: {ledger:#?}"
    );
    assert_eq!(row["attempts"], 1);

    // A duplicate delivery of the job message itself (SQS at-least-once) is acknowledged from the
    // ledger without copying again.
    let landed = executor.landing.join("clip one.mov");
    let before = std::fs::metadata(&landed).unwrap().modified().unwrap();
    let message = json!({
        "v": 1, "job_id": clip_id, "template_id": tpl, "pool": pool,
        "source": {"type": "s3", "bucket": bucket},
        "files": [{"key": "clip one.mov", "size": data.len(), "etag": etag, "dest_path": "clip one.mov"}],
        "destination": "disk", "created_at": "2026-11-25T00:00:00Z"
    });
    stack
        .sqs
        .send_message()
        .queue_url(&queue.url)
        .message_body(message.to_string())
        .send()
        .await
        .unwrap();
    let row = eventually(
        Duration::from_secs(60),
        "the redelivery to reach the ledger",
        || async {
            let ledger = executor.ledger()?;
            Ok(ledger
                .into_iter()
                .find(|r| r["job_id"] == clip_id.as_str() && r["deliveries"] == 2))
        },
    )
    .await
    .unwrap();
    assert_eq!(row["attempts"], 1, "the redelivered job was copied again");
    assert_eq!(row["state"], "succeeded");
    assert_eq!(
        std::fs::metadata(&landed).unwrap().modified().unwrap(),
        before
    );

    // A late `running` report after `succeeded` changes nothing. The report comes from a new
    // executor id, whose appearance in the executors table shows the status λ processed it.
    let late_executor = unique("late");
    let late = json!({
        "v": 1, "kind": "job", "job_id": clip_id, "executor_id": late_executor, "pool": pool,
        "attempt": 1, "state": "running", "at": chrono::Utc::now().to_rfc3339()
    });
    stack
        .sqs
        .send_message()
        .queue_url(stack.status_queue_url(pool))
        .message_body(late.to_string())
        .send()
        .await
        .unwrap();
    let executors = stack.output("ExecutorsTableName").to_owned();
    eventually(
        Duration::from_secs(60),
        "the late report to be processed",
        || async {
            let out = stack
                .dynamo
                .get_item()
                .table_name(&executors)
                .key(
                    "executor_id",
                    aws_sdk_dynamodb::types::AttributeValue::S(late_executor.clone()),
                )
                .send()
                .await?;
            Ok(out.item().map(|_| ()))
        },
    )
    .await
    .unwrap();
    let (_, job) = stack
        .call("GET", &format!("/api/v1/jobs/{clip_id}"), None)
        .await
        .unwrap();
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["executor_id"], format!("{pool}-exec"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_naming_a_pool_without_a_queue_fails_its_jobs_clearly() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("nopool");
    let bucket = unique("quiet");
    stack.create_quiet_bucket(&bucket).await.unwrap();
    let tpl = unique("tpl");
    stack
        .create_template(&template_json(&tpl, &bucket, "**", &pool, "{key}"))
        .await
        .unwrap();
    stack
        .put_and_announce(&bucket, "orphan.txt", b"x".to_vec(), "0000000000000005EE")
        .await
        .unwrap();
    let jobs = stack.finished_jobs(&tpl, 1).await.unwrap();
    assert_eq!(jobs[0]["state"], "failed");
    assert_eq!(jobs[0]["error_class"], "bad_request");
    let error = jobs[0]["error"].as_str().unwrap();
    assert!(
        error.contains("has no work queue") && error.contains(&pool),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_are_reported_while_the_rest_of_the_batch_succeeds() {
    let stack = Stack::connect().await.unwrap();
    let sc = Scenario::new(&stack, "bad", None, "**", "in/{key}")
        .await
        .unwrap();
    let (bucket, tpl, executor) = (&sc.bucket, &sc.template, &sc.executor);
    let marker = unique("marker");

    let good = b"good bytes".to_vec();
    let etag = stack
        .put_object(bucket, "good.txt", good.clone())
        .await
        .unwrap();
    let malformed = format!("not json {{ {marker}");
    let not_s3 = json!({"hello": "world", "marker": marker}).to_string();
    let escaping = s3_event(
        bucket,
        "x/../../../etc/passwd",
        3,
        "abc",
        "0000000000000003CC",
    );
    let valid = s3_event(
        bucket,
        "good.txt",
        good.len() as u64,
        &etag,
        "0000000000000004DD",
    );
    stack
        .send_events(&[malformed.clone(), not_s3.clone(), escaping, valid])
        .await
        .unwrap();

    assert_eq!(executor.landed("in/good.txt").await.unwrap(), good);
    let jobs = stack.finished_jobs(tpl, 2).await.unwrap();
    let escaped = jobs
        .iter()
        .find(|j| j["files"][0]["key"] == "x/../../../etc/passwd")
        .unwrap_or_else(|| panic!("no job for the escaping key: {jobs:#?}"));
    assert_eq!(escaped["state"], "failed");
    assert_eq!(escaped["error_class"], "bad_request");
    let reason = escaped["error"].as_str().unwrap();
    assert!(
        reason.contains("'..'") && reason.contains("escape"),
        "{reason}"
    );
    let good_job = jobs
        .iter()
        .find(|j| j["files"][0]["key"] == "good.txt")
        .unwrap();
    assert_eq!(good_job["state"], "succeeded");
    // Nothing was written outside the landing folder's tree.
    assert!(!executor.dir.path().join("etc").exists());

    // Both unprocessable bodies are in the events DLQ, each with the reason.
    let dlq = stack.output("EventsDeadLetterQueueUrl").to_owned();
    let found = eventually(
        Duration::from_secs(60),
        "both bad bodies in the DLQ",
        || async {
            let messages = stack.peek(&dlq).await?;
            let mine: Vec<(String, String)> = messages
                .iter()
                .filter(|m| m.body().is_some_and(|b| b.contains(&marker)))
                .map(|m| {
                    let reason = m
                        .message_attributes()
                        .and_then(|a| a.get("pbs-error"))
                        .and_then(|v| v.string_value())
                        .unwrap_or_default()
                        .to_owned();
                    (m.body().unwrap().to_owned(), reason)
                })
                .collect();
            let has = |body: &str| mine.iter().find(|(b, _)| b == body).cloned();
            Ok(match (has(&malformed), has(&not_s3)) {
                (Some(a), Some(b)) => Some((a.1, b.1)),
                _ => None,
            })
        },
    )
    .await
    .unwrap();
    assert!(found.0.contains("not JSON"), "{}", found.0);
    assert!(
        found.1.contains("not an S3 event notification"),
        "{}",
        found.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_template_api_validates_and_names_the_field() {
    let stack = Stack::connect().await.unwrap();
    let id = unique("tpl");
    let ok = template_json(&id, "pbs-some-bucket", "in/**", "default", "{yyyy}/{key}");

    let mut bad_glob = ok.clone();
    bad_glob["trigger"]["key_glob"] = "in/[unclosed".into();
    let (status, body) = stack
        .call("POST", "/api/v1/templates", Some(&bad_glob))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "trigger.key_glob");

    let mut escaping = ok.clone();
    escaping["destination"]["path"] = "../../{key}".into();
    let (status, body) = stack
        .call("POST", "/api/v1/templates", Some(&escaping))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "destination.path");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("escape")
    );

    let (status, _) = stack
        .call("POST", "/api/v1/templates", Some(&ok))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let (status, _) = stack
        .call("POST", "/api/v1/templates", Some(&ok))
        .await
        .unwrap();
    assert_eq!(status, 409);
    let (status, body) = stack
        .call("GET", &format!("/api/v1/templates/{id}"), None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["destination"]["path"].clone()),
        (200, json!("{yyyy}/{key}"))
    );

    let mut changed = ok.clone();
    changed["destination"]["path"] = "archive/{basename}".into();
    let (status, _) = stack
        .call("PUT", &format!("/api/v1/templates/{id}"), Some(&changed))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (_, body) = stack
        .call("GET", &format!("/api/v1/templates/{id}"), None)
        .await
        .unwrap();
    assert_eq!(body["destination"]["path"], "archive/{basename}");

    let (status, body) = stack
        .call("PUT", "/api/v1/templates/other-id", Some(&changed))
        .await
        .unwrap();
    assert_eq!((status, body["error"]["field"].clone()), (400, json!("id")));

    let (status, body) = stack
        .call("GET", "/api/v1/jobs?limit=0", None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (400, json!("limit"))
    );
    let (status, _) = stack
        .call("GET", "/api/v1/jobs/ev-doesnotexist", None)
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, body) = stack.call("GET", "/healthz", None).await.unwrap();
    assert_eq!((status, body["status"].clone()), (200, json!("ok")));

    let (status, _) = stack
        .call("DELETE", &format!("/api/v1/templates/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (status, _) = stack
        .call("DELETE", &format!("/api/v1/templates/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_happened_and_healthz_reports_an_unwritable_state_folder() {
    let stack = Stack::connect().await.unwrap();
    let prefix = unique("metrics");
    let sc = Scenario::new(
        &stack,
        "metrics",
        Some(stack.source_bucket()),
        &format!("{prefix}/**"),
        "{key}",
    )
    .await
    .unwrap();
    let sizes = [1_000usize, 20_000, 300_000];
    for (i, size) in sizes.iter().enumerate() {
        stack
            .put_object(
                stack.source_bucket(),
                &format!("{prefix}/f{i}.bin"),
                body(*size, i as u32),
            )
            .await
            .unwrap();
    }
    stack
        .finished_jobs(&sc.template, sizes.len())
        .await
        .unwrap();
    let get = |path: &'static str| {
        let url = format!("{}{path}", sc.executor.http);
        let http = stack.http.clone();
        async move {
            let r = http.get(url).send().await?;
            anyhow::Ok((r.status().as_u16(), r.text().await?))
        }
    };
    // Counters are updated when the outcome is recorded, before the report reaches the cloud.
    let (status, text) = get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    assert_eq!(value("pbs_jobs_total{outcome=\"succeeded\"}"), 3.0);
    assert_eq!(value("pbs_jobs_total{outcome=\"failed\"}"), 0.0);
    assert_eq!(value("pbs_files_transferred_total"), 3.0);
    assert_eq!(
        value("pbs_bytes_transferred_total"),
        sizes.iter().sum::<usize>() as f64
    );
    assert_eq!(value("pbs_transfer_duration_seconds_count"), 3.0);
    // Jobs received together may share one rclone run.
    assert!(value("pbs_rclone_exits_total{code=\"0\"}") >= 1.0);
    assert!(text.contains("pbs_status_outbox_depth"), "{text}");

    assert_eq!(get("/healthz").await.unwrap(), (200, "ok\n".to_owned()));
    // Outbound only: the one socket the executor listens on is its metrics address on loopback.
    let listening = sc.executor.listening().unwrap();
    let metrics = sc.executor.http.trim_start_matches("http://").to_owned();
    assert_eq!(listening, vec![metrics], "the executor listens on");
    // Its log goes to a file here: plain text, no terminal colour codes.
    let log = sc.executor.log();
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    // The state folder goes away (a lost mount, say): unhealthy, with the reason.
    let moved = sc.executor.state.with_extension("moved");
    std::fs::rename(&sc.executor.state, &moved).unwrap();
    let (status, text) = get("/healthz").await.unwrap();
    std::fs::rename(&moved, &sc.executor.state).unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("state folder") && text.contains("is not writable"),
        "{text}"
    );
    assert_eq!(get("/healthz").await.unwrap().0, 200);
}
