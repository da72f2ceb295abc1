//! Crashes, duplicates, outages and bad messages: the executor's exactly-once effect on an
//! at-least-once cloud, with the real stack on the emulator, a real executor and real rclone.

use std::time::Duration;

use pbs_e2e::link::Link;
use pbs_e2e::{ExecutorOptions, Scenario, Stack, body, eventually, s3_event, unique};
use serde_json::{Value, json};

fn partials(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".partial"))
                .collect()
        })
        .unwrap_or_default()
}

fn job_message(sc: &Scenario, job_id: &str, key: &str, size: usize, etag: &str) -> String {
    json!({
        "v": 1, "job_id": job_id, "template_id": sc.template, "pool": sc.pool,
        "source": {"type": "s3", "bucket": sc.bucket},
        "files": [{"key": key, "size": size, "etag": etag, "dest_path": key}],
        "destination": "disk", "created_at": "2026-11-25T00:00:00Z"
    })
    .to_string()
}

fn ledger_row(sc: &Scenario, job_id: &str) -> Option<Value> {
    sc.executor
        .ledger()
        .ok()?
        .into_iter()
        .find(|r| r["job_id"] == job_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_copy_then_restart_delivers_exactly_the_right_bytes() {
    let stack = Stack::connect().await.unwrap();
    let opts = ExecutorOptions {
        bandwidth_limit: Some("4M".into()),
        visibility_timeout: Some(10),
        ..Default::default()
    };
    let mut sc = Scenario::with(&stack, "crash", None, "**", "{key}", opts)
        .await
        .unwrap();
    let data = body(24 * 1024 * 1024, 1);
    stack
        .put_and_announce(&sc.bucket, "big take.mov", data.clone(), "00000000000000C1")
        .await
        .unwrap();

    // Kill the executor while rclone is writing its partial file.
    let landing = sc.executor.landing.clone();
    eventually(
        Duration::from_secs(60),
        "a partial file during the copy",
        || async { Ok((!partials(&landing).is_empty()).then_some(())) },
    )
    .await
    .unwrap();
    sc.executor.kill9();
    // rclone may outlive its parent for a moment; wait for it to be gone too.
    eventually(
        Duration::from_secs(20),
        "the orphaned rclone to stop",
        || async {
            let out = std::process::Command::new("pgrep")
                .args(["-f", landing.to_str().unwrap()])
                .output()?;
            Ok(out.stdout.is_empty().then_some(()))
        },
    )
    .await
    .ok();
    assert!(
        !landing.join("big take.mov").exists(),
        "final name visible after a crash"
    );

    sc.executor.restart().unwrap();
    let got = sc.executor.landed("big take.mov").await.unwrap();
    assert!(
        got == data,
        "delivered {} bytes, expected {}",
        got.len(),
        data.len()
    );
    assert!(
        partials(&landing).is_empty(),
        "stale partials: {:?}",
        partials(&landing)
    );

    let jobs = stack.finished_jobs(&sc.template, 1).await.unwrap();
    assert_eq!(jobs[0]["state"], "succeeded", "{:#}", jobs[0]);
    assert_eq!(jobs[0]["attempt"], 2, "{:#}", jobs[0]);
    assert_eq!(jobs[0]["result"]["bytes"], data.len() as u64);
    let row = ledger_row(&sc, jobs[0]["job_id"].as_str().unwrap()).unwrap();
    assert_eq!(row["attempts"], 2, "{row}");
    assert!(
        sc.executor.log().contains("removed a stale partial file"),
        "{}",
        sc.executor.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_job_message_three_times_is_one_copy_and_one_success() {
    let stack = Stack::connect().await.unwrap();
    let sc = Scenario::new(&stack, "thrice", None, "**", "{key}")
        .await
        .unwrap();
    let data = body(300_000, 2);
    let etag = stack
        .put_object(&sc.bucket, "once.bin", data.clone())
        .await
        .unwrap();
    let job_id = unique("ev-thrice");
    let message = job_message(&sc, &job_id, "once.bin", data.len(), &etag);
    // Recorded in the cloud once, as the trigger records a job; delivered three times.
    let recorded: serde_json::Value = serde_json::from_str(&message).unwrap();
    stack.enqueue_job(&sc.queue.url, &recorded).await.unwrap();
    for _ in 0..2 {
        stack
            .sqs
            .send_message()
            .queue_url(&sc.queue.url)
            .message_body(&message)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(sc.executor.landed("once.bin").await.unwrap(), data);
    let row = eventually(
        Duration::from_secs(60),
        "three deliveries in the ledger",
        || async { Ok(ledger_row(&sc, &job_id).filter(|r| r["deliveries"] == 3)) },
    )
    .await
    .unwrap();
    assert_eq!(row["attempts"], 1, "copied more than once: {row}");
    // The reports reach the API through the outbox, the StatusQueue and the status λ.
    let job = stack
        .job_when(
            &job_id,
            Duration::from_secs(60),
            "the job to show succeeded",
            |j| j["state"] == "succeeded",
        )
        .await
        .unwrap();
    assert_eq!(job["attempt"], 1, "{job:#}");
    assert_eq!(job["result"]["bytes"], data.len() as u64, "{job:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_messages_and_missing_sources_end_clearly_and_the_queue_keeps_flowing() {
    let stack = Stack::connect().await.unwrap();
    let sc = Scenario::new(&stack, "poison", None, "**", "{key}")
        .await
        .unwrap();
    let marker = unique("poison");
    let poison = format!("{{\"v\": 1, \"garbage\": \"{marker}\"}}");
    stack
        .sqs
        .send_message()
        .queue_url(&sc.queue.url)
        .message_body(&poison)
        .send()
        .await
        .unwrap();

    // A job whose source object is deleted before it runs.
    let etag = stack
        .put_object(&sc.bucket, "gone.txt", b"soon gone".to_vec())
        .await
        .unwrap();
    stack
        .s3
        .delete_object()
        .bucket(&sc.bucket)
        .key("gone.txt")
        .send()
        .await
        .unwrap();
    stack
        .send_events(&[s3_event(
            &sc.bucket,
            "gone.txt",
            9,
            &etag,
            "00000000000000D1",
        )])
        .await
        .unwrap();
    // And a good one after both.
    let good = body(1000, 3);
    stack
        .put_and_announce(&sc.bucket, "good.bin", good.clone(), "00000000000000D2")
        .await
        .unwrap();

    assert_eq!(sc.executor.landed("good.bin").await.unwrap(), good);
    // (Whether the two events share a job depends on how they were batched.)
    let gone = eventually(
        Duration::from_secs(90),
        "the job of gone.txt to end",
        || async {
            let jobs = stack.jobs_of_template(&sc.template).await?;
            Ok(jobs.into_iter().find(|j| {
                let files = j["files"].as_array().cloned().unwrap_or_default();
                files.iter().any(|f| f["key"] == "gone.txt")
                    && matches!(j["state"].as_str(), Some("succeeded" | "failed"))
            }))
        },
    )
    .await
    .unwrap();
    assert_eq!(gone["state"], "failed", "{gone:#}");
    assert_eq!(gone["error_class"], "not_found", "{gone:#}");
    let error = gone["error"].as_str().unwrap();
    assert!(
        error.contains("gone.txt") && error.contains("disk:gone.txt"),
        "{error}"
    );
    assert_eq!(
        gone["attempt"], 1,
        "a not-found source must not be retried: {gone:#}"
    );

    // The poison message ends in the pool's DLQ (redrive after 3 receives).
    let dlq = sc.queue.dlq_url.clone();
    eventually(
        Duration::from_secs(90),
        "the poison message in the pool DLQ",
        || async {
            let messages = stack.peek(&dlq).await?;
            Ok(messages
                .iter()
                .any(|m| m.body() == Some(poison.as_str()))
                .then_some(()))
        },
    )
    .await
    .unwrap();
    assert!(sc.executor.log().contains("unprocessable job message"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_60_second_outage_loses_no_report_and_copies_nothing_twice() {
    let stack = Stack::connect().await.unwrap();
    let emulator: std::net::SocketAddr = stack
        .output("EmulatorUrl")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let link = Link::start(emulator).await.unwrap();
    let opts = ExecutorOptions {
        sqs_endpoint: Some(link.url()),
        bandwidth_limit: Some("2M".into()),
        visibility_timeout: Some(20),
        ..Default::default()
    };
    let mut sc = Scenario::with(&stack, "outage", None, "**", "{key}", opts)
        .await
        .unwrap();
    // Three jobs running at once when the link goes (not one job of three files).
    sc.per_object_jobs(&stack).await.unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("take {i}.mov"), body(3 * 1024 * 1024, 10 + i)))
        .collect();
    let mut events = Vec::new();
    for (i, (key, data)) in files.iter().enumerate() {
        let etag = stack
            .put_object(&sc.bucket, key, data.clone())
            .await
            .unwrap();
        events.push(s3_event(
            &sc.bucket,
            key,
            data.len() as u64,
            &etag,
            &format!("00000000000000E{i}"),
        ));
    }
    stack.send_events(&events).await.unwrap();

    // Cut the link once every job is running on the executor.
    eventually(Duration::from_secs(60), "all jobs running", || async {
        let rows = sc.executor.ledger()?;
        Ok(
            (rows.len() == files.len() && rows.iter().all(|r| r["state"] == "running"))
                .then_some(()),
        )
    })
    .await
    .unwrap();
    link.cut();
    let cut_at = std::time::Instant::now();

    // The copies finish while the cloud is away.
    for (key, data) in &files {
        assert_eq!(&sc.executor.landed(key).await.unwrap(), data);
    }
    eventually(
        Duration::from_secs(60),
        "outcomes in the ledger",
        || async {
            let rows = sc.executor.ledger()?;
            Ok(rows.iter().all(|r| r["state"] == "succeeded").then_some(()))
        },
    )
    .await
    .unwrap();
    let (_, listed) = stack
        .call("GET", "/api/v1/jobs?limit=500", None)
        .await
        .unwrap();
    let mine: Vec<&Value> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["template_id"] == sc.template.as_str())
        .collect();
    assert!(
        mine.iter().all(|j| j["state"] != "succeeded"),
        "reports crossed a cut link: {mine:#?}"
    );
    // Hold the outage for a full minute.
    let remaining = Duration::from_secs(60).saturating_sub(cut_at.elapsed());
    tokio::time::sleep(remaining).await;
    assert!(
        sc.executor.is_running(),
        "the executor died during the outage:\n{}",
        sc.executor.log()
    );
    link.restore();

    let jobs = stack
        .finished_jobs(&sc.template, files.len())
        .await
        .unwrap();
    for job in &jobs {
        assert_eq!(job["state"], "succeeded", "{job:#}");
        assert_eq!(job["attempt"], 1, "{job:#}");
    }
    // Messages the executor could not delete during the outage came back; none was copied again.
    for row in sc.executor.ledger().unwrap() {
        assert_eq!(row["attempts"], 1, "{row}");
    }
    sc.executor.terminate().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_executors_share_a_pool_and_do_each_of_200_jobs_once() {
    let stack = Stack::connect().await.unwrap();
    let sc = Scenario::new(&stack, "pair", None, "**", "{key}")
        .await
        .unwrap();
    // 200 jobs for two competing executors (not a few coalesced ones).
    sc.per_object_jobs(&stack).await.unwrap();
    let second = pbs_e2e::Executor::start_with(
        &stack,
        &sc.pool,
        &sc.queue.url,
        ExecutorOptions {
            name: Some("second".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let count = 200;
    let mut events = Vec::new();
    for i in 0..count {
        let key = format!("batch/{i:03}.dat");
        let etag = stack
            .put_object(&sc.bucket, &key, body(4096, 100 + i))
            .await
            .unwrap();
        events.push(s3_event(
            &sc.bucket,
            &key,
            4096,
            &etag,
            &format!("{i:016X}"),
        ));
    }
    for chunk in events.chunks(10) {
        stack.send_events(chunk).await.unwrap();
    }
    let jobs = stack
        .finished_jobs(&sc.template, count as usize)
        .await
        .unwrap();
    assert_eq!(jobs.len(), count as usize);
    assert!(
        jobs.iter()
            .all(|j| j["state"] == "succeeded" && j["attempt"] == 1),
        "{jobs:#?}"
    );

    let first_rows = sc.executor.ledger().unwrap();
    let second_rows = second.ledger().unwrap();
    assert!(
        !first_rows.is_empty() && !second_rows.is_empty(),
        "work was not shared"
    );
    let mut runs = std::collections::HashMap::<String, i64>::new();
    for row in first_rows.iter().chain(&second_rows) {
        *runs
            .entry(row["job_id"].as_str().unwrap().to_owned())
            .or_default() += row["attempts"].as_i64().unwrap();
    }
    assert_eq!(runs.len(), count as usize);
    assert!(
        runs.values().all(|&n| n == 1),
        "a job ran more than once: {runs:?}"
    );
    for i in 0..count {
        let key = format!("batch/{i:03}.dat");
        let in_first = sc.executor.landing.join(&key).exists();
        let in_second = second.landing.join(&key).exists();
        assert!(
            in_first ^ in_second,
            "{key}: first={in_first} second={in_second}"
        );
        let landed = if in_first {
            &sc.executor.landing
        } else {
            &second.landing
        };
        assert_eq!(
            std::fs::read(landed.join(&key)).unwrap(),
            body(4096, 100 + i)
        );
    }
    eprintln!(
        "jobs per executor: {} and {}",
        first_rows.len(),
        second_rows.len()
    );
}

/// A scenario whose executor reads S3 through a link the test can cut, with a retry policy.
async fn scenario_behind_a_cut_link(stack: &Stack, name: &str, retry: Value) -> (Scenario, Link) {
    let emulator: std::net::SocketAddr = stack
        .output("EmulatorUrl")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let link = Link::start(emulator).await.unwrap();
    link.cut();
    let opts = ExecutorOptions {
        s3_endpoint: Some(link.url()),
        ..Default::default()
    };
    let sc = Scenario::with(stack, name, None, "**", "{key}", opts)
        .await
        .unwrap();
    sc.with_options(stack, json!({ "retry": retry }))
        .await
        .unwrap();
    (sc, link)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retryable_failure_is_retried_by_the_template_policy_and_then_succeeds() {
    let stack = Stack::connect().await.unwrap();
    let retry = json!({"max_attempts": 4, "backoff_seconds": 1, "max_backoff_seconds": 2});
    let (sc, link) = scenario_behind_a_cut_link(&stack, "retry", retry).await;
    let data = body(50_000, 4);
    stack
        .put_and_announce(&sc.bucket, "flaky.bin", data.clone(), "00000000000000F1")
        .await
        .unwrap();
    // The first attempt fails on the cut link and waits for its retry.
    eventually(
        Duration::from_secs(60),
        "a failed first attempt",
        || async {
            Ok(sc.executor.ledger()?.into_iter().find(|r| {
                // The error of a failed attempt stays on the row while the next one runs.
                r["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("flaky.bin") && e.contains("Failed to copyto"))
            }))
        },
    )
    .await
    .unwrap();
    link.restore();
    assert_eq!(sc.executor.landed("flaky.bin").await.unwrap(), data);
    let jobs = stack.finished_jobs(&sc.template, 1).await.unwrap();
    assert_eq!(jobs[0]["state"], "succeeded", "{:#}", jobs[0]);
    let attempt = jobs[0]["attempt"].as_i64().unwrap();
    assert!(attempt >= 2, "{:#}", jobs[0]);
    let row = ledger_row(&sc, jobs[0]["job_id"].as_str().unwrap()).unwrap();
    assert_eq!(row["attempts"].as_i64().unwrap(), attempt, "{row}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_out_of_attempts_fails_with_its_last_error() {
    let stack = Stack::connect().await.unwrap();
    let retry = json!({"max_attempts": 2, "backoff_seconds": 1, "max_backoff_seconds": 1});
    let (sc, _link) = scenario_behind_a_cut_link(&stack, "exhaust", retry).await;
    stack
        .put_and_announce(
            &sc.bucket,
            "never.bin",
            b"never".to_vec(),
            "00000000000000F2",
        )
        .await
        .unwrap();
    let jobs = stack.finished_jobs(&sc.template, 1).await.unwrap();
    let job = &jobs[0];
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["attempt"], 2, "{job:#}");
    assert_eq!(job["error_class"], "retryable", "{job:#}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("never.bin") && error.contains("Failed to copyto"),
        "{error}"
    );
    assert!(!sc.executor.landing.join("never.bin").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_overwritten_during_its_copy_ends_with_the_newer_content() {
    let stack = Stack::connect().await.unwrap();
    let prefix = unique("over");
    let opts = ExecutorOptions {
        bandwidth_limit: Some("4M".into()),
        ..Default::default()
    };
    let source = stack.source_bucket().to_owned();
    let sc = Scenario::with(
        &stack,
        "order",
        Some(&source),
        &format!("{prefix}/**"),
        "{key}",
        opts,
    )
    .await
    .unwrap();
    let key = format!("{prefix}/shot.mov");
    let older = body(12 * 1024 * 1024, 21);
    let newer = body(100_000, 22);
    // Real S3 notifications carry the sequencers that order the two writes.
    stack.put_object(&source, &key, older).await.unwrap();
    let folder = sc.executor.landing.join(&prefix);
    eventually(
        Duration::from_secs(60),
        "the older write being copied",
        || async { Ok((!partials(&folder).is_empty()).then_some(())) },
    )
    .await
    .unwrap();
    stack
        .put_object(&source, &key, newer.clone())
        .await
        .unwrap();

    let jobs = stack.finished_jobs(&sc.template, 2).await.unwrap();
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:#?}");
    let landed = std::fs::read(sc.executor.landing.join(&key)).unwrap();
    assert!(
        landed == newer,
        "the destination holds {} bytes, not the newer write",
        landed.len()
    );
    assert!(partials(&folder).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_a_running_job_to_another_executor_at_once() {
    let stack = Stack::connect().await.unwrap();
    let slow = ExecutorOptions {
        bandwidth_limit: Some("2M".into()),
        // Long enough that only an explicit release can hand the job over in time.
        visibility_timeout: Some(600),
        ..Default::default()
    };
    let mut sc = Scenario::with(&stack, "term", None, "**", "{key}", slow)
        .await
        .unwrap();
    let data = body(30 * 1024 * 1024, 31);
    stack
        .put_and_announce(&sc.bucket, "long.mov", data.clone(), "00000000000000A7")
        .await
        .unwrap();
    let first_landing = sc.executor.landing.clone();
    eventually(Duration::from_secs(60), "the copy to start", || async {
        Ok((!partials(&first_landing).is_empty()).then_some(()))
    })
    .await
    .unwrap();

    // SIGTERM: the copy cannot finish within the 5 s grace, so rclone is stopped (it removes its
    // partial) and the message is released.
    sc.executor.terminate().unwrap();
    assert!(
        partials(&first_landing).is_empty(),
        "{:?}",
        partials(&first_landing)
    );
    assert!(!first_landing.join("long.mov").exists());
    assert!(
        sc.executor.log().contains("releasing"),
        "{}",
        sc.executor.log()
    );

    let second = pbs_e2e::Executor::start_with(
        &stack,
        &sc.pool,
        &sc.queue.url,
        ExecutorOptions {
            name: Some("second".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(second.landed("long.mov").await.unwrap(), data);
    let jobs = stack.finished_jobs(&sc.template, 1).await.unwrap();
    assert_eq!(jobs[0]["state"], "succeeded", "{:#}", jobs[0]);
    assert_eq!(jobs[0]["attempt"], 2, "{:#}", jobs[0]);
    assert_eq!(jobs[0]["executor_id"], second.id.as_str());
}
