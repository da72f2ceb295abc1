//! What follows a transfer: signed webhooks and e-mail when a job ends, chains of steps, relays
//! between pools that share no endpoint, and bandwidth limits from templates. Real receivers:
//! an HTTP server on loopback, SNS delivering to an SQS queue, sshd for the archive step.

use std::time::{Duration, Instant};

use pbs_e2e::receiver::Receiver;
use pbs_e2e::servers::{SftpServer, free_port};
use pbs_e2e::{Executor, ExecutorOptions, Stack, body, eventually, unique};
use pbs_shared::notify;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

/// A pool with its own queue, a bucket without notifications and one executor.
async fn pool_with_executor(
    stack: &Stack,
    name: &str,
    opts: ExecutorOptions,
) -> (String, String, Executor) {
    let pool = unique(name);
    let queue = stack.create_pool(&pool).await.unwrap();
    let bucket = unique("quiet");
    stack.create_quiet_bucket(&bucket).await.unwrap();
    let executor = Executor::start_with(stack, &pool, &queue.url, opts).unwrap();
    (pool, bucket, executor)
}

/// A new webhook signing secret, stored as an SSM SecureString: `(secret, parameter name)`.
async fn webhook_secret(stack: &Stack) -> (String, String) {
    let secret = format!("whsec-{}", unique("s"));
    let parameter = format!("/pbs/{}", unique("hook-secret"));
    stack
        .ssm
        .put_parameter()
        .name(&parameter)
        .value(&secret)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    (secret, parameter)
}

/// The job of `template` once it has ended.
async fn ended_job(stack: &Stack, template: &str) -> Value {
    stack.finished_jobs(template, 1).await.unwrap().remove(0)
}

/// The job's record of its notification number `index` (its place in the template's list).
fn notification(job: &Value, index: u64) -> Value {
    job["notifications"]
        .as_array()
        .and_then(|all| all.iter().find(|n| n["index"] == index))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_retried_until_delivered_and_never_hold_up_the_transfer() {
    let stack = Stack::connect().await.unwrap();
    let (pool, bucket, executor) =
        pool_with_executor(&stack, "hook", ExecutorOptions::default()).await;

    // The signing secret lives in SSM; the template only names it.
    let (secret, parameter) = webhook_secret(&stack).await;
    // A receiver that fails twice, then accepts; and one that is down.
    let flaky = Receiver::start(&[500, 500]).await.unwrap();
    let down = format!("http://127.0.0.1:{}/hooks/pbs", free_port().unwrap());
    // E-mail goes to the stack's topic; an SQS subscription stands in for a mailbox.
    let topic = stack.output("NotifyTopicArn").to_owned();
    let mailbox = stack
        .sqs
        .create_queue()
        .queue_name(unique("mailbox"))
        .send()
        .await
        .unwrap();
    let mailbox_url = mailbox.queue_url().unwrap().to_owned();
    let mailbox_arn = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&mailbox_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    // As on AWS, the queue takes messages from the topic only when its policy says so.
    let policy = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": mailbox_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic}}
    }]});
    stack
        .sqs
        .set_queue_attributes()
        .queue_url(&mailbox_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::Policy,
            policy.to_string(),
        )
        .send()
        .await
        .unwrap();
    stack
        .sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&mailbox_arn)
        .send()
        .await
        .unwrap();

    let template = unique("tpl");
    let mut t = pbs_e2e::template_json(&template, &bucket, "**", &pool, "{key}");
    t["options"] = json!({"notify": [
        {"on": ["succeeded"], "webhook": {"url": flaky.url, "secret": format!("ssm:{parameter}")}},
        {"webhook": {"url": down, "secret": format!("ssm:{parameter}")}},
        {"on": ["succeeded", "failed"], "email": {"topic_arn": topic}},
        {"on": ["failed"], "webhook": {"url": flaky.url, "secret": format!("ssm:{parameter}")}}
    ]});
    stack.create_template(&t).await.unwrap();
    let content = body(64 * 1024, 7);
    stack
        .put_and_announce(&bucket, "episode/ep1.mxf", content.clone(), "0A01")
        .await
        .unwrap();

    // The transfer itself is not held up by any receiver.
    assert_eq!(executor.landed("episode/ep1.mxf").await.unwrap(), content);
    let job = ended_job(&stack, &template).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let job_id = job["job_id"].as_str().unwrap().to_owned();

    let job = stack
        .job_when(
            &job_id,
            WAIT,
            "the webhook delivered on its third attempt",
            |j| notification(j, 0)["state"] == "delivered",
        )
        .await
        .unwrap();
    let first = &notification(&job, 0);
    assert_eq!(first["attempts"], 3, "{job:#}");
    assert_eq!(first["http_status"], 200, "{job:#}");
    assert_eq!(first["target"], flaky.url.as_str());

    let got = flaky.received();
    assert_eq!(got.len(), 3, "500, 500, then 200: three deliveries");
    for r in &got {
        assert!(r.header(notify::SIGNATURE_HEADER).is_some(), "signed");
        assert!(r.verifies(secret.as_bytes()), "verifies with the secret");
        assert!(!r.verifies(b"another secret"), "fails with another");
        assert_eq!(r.body, got[0].body, "every retry sends the same bytes");
        assert_eq!(
            r.header(notify::DELIVERY_HEADER),
            Some(format!("{job_id}.0").as_str())
        );
        assert_eq!(r.header(notify::EVENT_HEADER), Some("job.succeeded"));
    }
    let event: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event["event"], "job.succeeded");
    assert_eq!(event["job_id"], job_id.as_str());
    assert_eq!(event["template_id"], template.as_str());
    assert_eq!(event["files"], 1);
    assert_eq!(event["bytes"], content.len());
    assert!(
        event["report_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("reports/")),
        "{event}"
    );

    // The receiver that is down: retried with backoff, recorded, the job untouched.
    let job = stack
        .job_when(
            &job_id,
            WAIT,
            "the unreachable webhook's attempts recorded",
            |j| notification(j, 1)["attempts"].as_u64() >= Some(2),
        )
        .await
        .unwrap();
    let second = &notification(&job, 1);
    assert!(
        matches!(second["state"].as_str(), Some("retrying" | "failed")),
        "{job:#}"
    );
    assert!(
        second["error"].as_str().unwrap().contains("cannot connect"),
        "{job:#}"
    );
    assert_eq!(job["state"], "succeeded");

    // The e-mail, published to the topic.
    let mail = eventually(
        WAIT,
        "the e-mail notification in the subscribed queue",
        || async {
            let out = stack
                .sqs
                .receive_message()
                .queue_url(&mailbox_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await?;
            Ok(out
                .messages()
                .iter()
                .filter_map(|m| serde_json::from_str::<Value>(m.body()?).ok())
                .find(|m| m["Subject"].as_str().is_some_and(|s| s.contains(&job_id))))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        mail["Subject"],
        format!("PBS Rclone: job {job_id} succeeded")
    );
    assert!(
        mail["Message"].as_str().unwrap().contains("1 files"),
        "{mail:#}"
    );
    let job = stack.job(&job_id).await.unwrap();
    assert_eq!(notification(&job, 2)["state"], "delivered", "{job:#}");
    assert_eq!(
        notification(&job, 3),
        Value::Null,
        "the on-failure webhook does not fire on success: {job:#}"
    );
    assert_eq!(job["notifications"].as_array().unwrap().len(), 3, "{job:#}");
}

/// An executor with the local `disk` endpoint and an SFTP `archive`.
fn with_archive(sftp: &SftpServer) -> ExecutorOptions {
    ExecutorOptions {
        extra_config: format!(
            "[endpoints.archive]\ntype = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
             root = \"{}\"\npassword_env = \"PBS_ARCHIVE_PASSWORD\"\nknown_hosts_file = \"{}\"\n",
            sftp.port,
            sftp.user,
            sftp.root.display(),
            sftp.known_hosts.display()
        ),
        env: vec![("PBS_ARCHIVE_PASSWORD".into(), sftp.password.clone())],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_lands_in_s3_then_local_then_sftp_and_shows_as_one_flow() {
    let stack = Stack::connect().await.unwrap();
    let sftp = SftpServer::start().unwrap();
    let (pool, bucket, executor) = pool_with_executor(&stack, "chain", with_archive(&sftp)).await;

    let archive = unique("archive");
    stack
        .create_template(&json!({
            "id": archive, "trigger": {"type": "chain"},
            "destination": {"pool": pool, "endpoint": "archive", "path": "vault/{key}"},
            "options": {"delivery": {"verify": "hash"}}
        }))
        .await
        .unwrap();
    let ingest = unique("ingest");
    let mut t = pbs_e2e::template_json(&ingest, &bucket, "cam-a/**", &pool, "in/{key}");
    t["options"] = json!({"next_template": archive});
    stack.create_template(&t).await.unwrap();

    let content = body(300 * 1024, 11);
    stack
        .put_and_announce(&bucket, "cam-a/clip 01.mov", content.clone(), "0B01")
        .await
        .unwrap();
    assert_eq!(
        executor.landed("in/cam-a/clip 01.mov").await.unwrap(),
        content
    );
    let first = ended_job(&stack, &ingest).await;
    assert_eq!(first["state"], "succeeded", "{first:#}");
    let second = ended_job(&stack, &archive).await;
    assert_eq!(second["state"], "succeeded", "{second:#}");
    assert_eq!(
        std::fs::read(sftp.root.join("vault/in/cam-a/clip 01.mov")).unwrap(),
        content,
        "the second step read what the first delivered"
    );
    assert_eq!(second["source_endpoint"], "disk");
    assert_eq!(second["parent_job"], first["job_id"]);
    let first = stack.job(first["job_id"].as_str().unwrap()).await.unwrap();
    assert_eq!(first["next_job"], second["job_id"]);

    for id in [&first["job_id"], &second["job_id"]] {
        let (status, flow) = stack
            .call(
                "GET",
                &format!("/api/v1/jobs/{}/flow", id.as_str().unwrap()),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{flow}");
        let steps: Vec<&Value> = flow["steps"].as_array().unwrap().iter().collect();
        assert_eq!(steps.len(), 2, "{flow:#}");
        assert_eq!(steps[0]["job_id"], first["job_id"]);
        assert_eq!(steps[1]["job_id"], second["job_id"]);
    }

    // A next step in another pool cannot read this pool's endpoint: the chain stops and says why.
    let elsewhere = unique("elsewhere");
    stack
        .create_template(&json!({
            "id": elsewhere, "trigger": {"type": "chain"},
            "destination": {"pool": unique("other-pool"), "endpoint": "disk", "path": "{key}"}
        }))
        .await
        .unwrap();
    let stray = unique("stray");
    let mut t = pbs_e2e::template_json(&stray, &bucket, "stray/**", &pool, "{key}");
    t["options"] = json!({"next_template": elsewhere});
    stack.create_template(&t).await.unwrap();
    stack
        .put_and_announce(&bucket, "stray/x.bin", body(1024, 3), "0B02")
        .await
        .unwrap();
    let job = ended_job(&stack, &stray).await;
    let job = stack
        .job_when(
            job["job_id"].as_str().unwrap(),
            WAIT,
            "the chain stop recorded",
            |j| j["chain_error"].is_string(),
        )
        .await
        .unwrap();
    assert!(
        job["chain_error"].as_str().unwrap().contains("staging"),
        "{job:#}"
    );
    assert!(job["next_job"].is_null(), "{job:#}");

    // Templates are checked when saved: the next step must exist and be a chain step.
    let mut bad = pbs_e2e::template_json(&unique("bad"), &bucket, "none/**", &pool, "{key}");
    bad["options"] = json!({"next_template": ingest});
    let (status, answer) = stack
        .call("POST", "/api/v1/templates", Some(&bad))
        .await
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["field"], "options.next_template",
        "{answer}"
    );
    drop(executor);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_carries_files_between_pools_that_share_no_endpoint() {
    let stack = Stack::connect().await.unwrap();
    // Site B watches a local outbox; site C has only its own disk. Neither sees the other.
    let outbox = tempfile::tempdir().unwrap();
    let (pool_b, _, site_b) = pool_with_executor(
        &stack,
        "site-b",
        ExecutorOptions {
            extra_config: format!(
                // The cloud's rules read this folder.
                "[endpoints.outbox]\ntype = \"local\"\nroot = \"{}\"\ncloud = \"read-write\"\n",
                outbox.path().display()
            ),
            name: Some("b".into()),
            ..Default::default()
        },
    )
    .await;
    let (pool_c, _, site_c) = pool_with_executor(
        &stack,
        "site-c",
        ExecutorOptions {
            name: Some("c".into()),
            ..Default::default()
        },
    )
    .await;
    let deliver = unique("relay-c");
    stack
        .create_template(&json!({
            "id": deliver, "trigger": {"type": "chain"},
            "destination": {"pool": pool_c, "endpoint": "disk", "path": "from-b/{key}"},
            "options": {"delivery": {"verify": "hash"}}
        }))
        .await
        .unwrap();
    let send = unique("relay-b");
    stack
        .create_template(&json!({
            "id": send,
            "trigger": {"type": "watch", "source": "outbox", "stable_seconds": 1},
            "destination": {"pool": pool_b, "endpoint": "staging", "path": "{key}"},
            "options": {"next_template": deliver, "delivery": {"verify": "hash"}}
        }))
        .await
        .unwrap();

    // The watch rule reaches site B through its rules document; then a file is dropped.
    eventually(WAIT, "site B running the relay's watch rule", || async {
        Ok(site_b
            .log()
            .lines()
            .any(|l| l.contains(&send) && l.contains("watching"))
            .then_some(()))
    })
    .await
    .unwrap();
    let content = body(200 * 1024, 5);
    std::fs::create_dir_all(outbox.path().join("reel")).unwrap();
    std::fs::write(outbox.path().join("reel/r1.dpx"), &content).unwrap();

    assert_eq!(site_c.landed("from-b/reel/r1.dpx").await.unwrap(), content);
    assert!(
        pbs_e2e::files_under(&site_b.landing).is_empty(),
        "site B wrote nothing to its own disk"
    );
    let leg_b = ended_job(&stack, &send).await;
    let leg_c = ended_job(&stack, &deliver).await;
    assert_eq!(leg_b["state"], "succeeded", "{leg_b:#}");
    assert_eq!(leg_c["state"], "succeeded", "{leg_c:#}");
    assert_eq!(leg_b["pool"], pool_b.as_str());
    assert_eq!(leg_c["pool"], pool_c.as_str());
    assert_eq!(leg_c["source_endpoint"], "staging");
    assert_eq!(leg_c["parent_job"], leg_b["job_id"]);

    // The staged copy is removed once site C's delivery is verified.
    stack
        .staged_removed(&pool_b, leg_b["job_id"].as_str().unwrap())
        .await
        .unwrap();
}

/// Bytes per second of one copy of `len` bytes through a template with `bandwidth` (or none).
async fn copy_rate(stack: &Stack, bandwidth: Option<&str>, len: usize) -> f64 {
    let (pool, bucket, executor) =
        pool_with_executor(stack, "bw", ExecutorOptions::default()).await;
    let template = unique("tpl");
    let mut t = pbs_e2e::template_json(&template, &bucket, "**", &pool, "{key}");
    if let Some(b) = bandwidth {
        t["options"] = json!({ "bandwidth": b });
    }
    stack.create_template(&t).await.unwrap();
    let content = body(len, 9);
    stack
        .put_and_announce(&bucket, "big.bin", content.clone(), "0C01")
        .await
        .unwrap();
    let job = ended_job(stack, &template).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(executor.landed("big.bin").await.unwrap(), content);
    let ms = job["result"]["duration_ms"].as_u64().unwrap().max(1);
    len as f64 / (ms as f64 / 1000.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_bandwidth_timetable_is_applied_to_its_transfers() {
    let stack = Stack::connect().await.unwrap();
    // A weekly timetable limiting to 2 MiB/s from the start of this hour (the executor's clock)
    // for two hours, unlimited the rest of the week.
    let now = chrono::Local::now();
    let at = |t: chrono::DateTime<chrono::Local>| t.format("%a-%H:00").to_string();
    let timetable = format!(
        "{},2M {},off",
        at(now),
        at(now + chrono::Duration::hours(2))
    );
    let len = 16 << 20;
    let started = Instant::now();
    let limited = copy_rate(&stack, Some(&timetable), len).await;
    let unlimited = copy_rate(&stack, None, len).await;
    println!(
        "bandwidth: limited {:.2} MiB/s, unlimited {:.2} MiB/s, ratio {:.3} ({:?} for both)",
        limited / (1 << 20) as f64,
        unlimited / (1 << 20) as f64,
        limited / unlimited,
        started.elapsed()
    );
    // A limiter can only slow a copy down: the limited copy is no faster than its limit (plus the
    // limiter's first burst), whatever the machine's speed.
    assert!(
        limited <= 2.0 * (1 << 20) as f64 * 1.25,
        "the limited copy ran at {limited:.0} B/s, above its 2 MiB/s limit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_job_cancelled_through_the_api_notifies_too() {
    let stack = Stack::connect().await.unwrap();
    // A pool with a queue but no executor: its jobs stay queued.
    let pool = unique("idle");
    stack.create_pool(&pool).await.unwrap();
    let bucket = unique("quiet");
    stack.create_quiet_bucket(&bucket).await.unwrap();
    stack
        .put_object(&bucket, "a.bin", body(10, 1))
        .await
        .unwrap();
    let (secret, parameter) = webhook_secret(&stack).await;
    let receiver = Receiver::start(&[]).await.unwrap();
    let template = unique("tpl");
    let mut t = pbs_e2e::template_json(&template, &bucket, "**", &pool, "{key}");
    t["options"] = json!({"notify": [
        {"on": ["cancelled"], "webhook": {"url": receiver.url, "secret": format!("ssm:{parameter}")}}
    ]});
    stack.create_template(&t).await.unwrap();
    let (status, job) = stack
        .call(
            "POST",
            "/api/v1/jobs",
            Some(&json!({"template_id": template, "keys": ["a.bin"]})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    let (status, answer) = stack
        .call("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let job = stack
        .job_when(&id, WAIT, "the cancel notification delivered", |j| {
            notification(j, 0)["state"] == "delivered"
        })
        .await
        .unwrap();
    assert_eq!(job["state"], "cancelled");
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header(notify::EVENT_HEADER), Some("job.cancelled"));
    assert!(got[0].verifies(secret.as_bytes()));
}
