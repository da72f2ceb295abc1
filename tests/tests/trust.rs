//! End-to-end: what crosses a trust boundary is believed by where it came from. A status report
//! speaks only for the pool whose status queue it came through, only for that pool's jobs, and an
//! attempt's end only from the executor holding it; a heartbeat cannot date itself ahead. Every
//! refused report is in the status dead-letter queue with its reason, and no job changed.

use std::time::Duration;

use pbs_e2e::{Executor, ExecutorOptions, Stack, eventually, template_json, unique};
use serde_json::{Value, json};

/// Sends `body` to `pool`'s status queue.
async fn report(stack: &Stack, pool: &str, body: &Value) {
    stack
        .sqs
        .send_message()
        .queue_url(stack.status_queue_url(pool))
        .message_body(body.to_string())
        .send()
        .await
        .unwrap();
}

fn job_report(job_id: &str, pool: &str, executor: &str, state: &str) -> Value {
    json!({
        "v": 1, "kind": "job", "job_id": job_id, "executor_id": executor, "pool": pool,
        "attempt": 1, "state": state, "at": chrono::Utc::now().to_rfc3339(),
        "result": {"files": 1, "bytes": 1, "duration_ms": 1}
    })
}

/// The reasons the status DLQ holds for bodies containing `marker`, once there are `count`. The
/// DLQ also holds other tests' refused reports: messages read are hidden for a while, so each
/// read brings new ones, and kept.
async fn refused(stack: &Stack, marker: &str, count: usize) -> Vec<(String, String)> {
    let dlq = stack.output("StatusDeadLetterQueueUrl").to_owned();
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::new());
    eventually(
        Duration::from_secs(90),
        "the refused reports in the status DLQ",
        || async {
            let out = stack
                .sqs
                .receive_message()
                .queue_url(&dlq)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .message_attribute_names("All")
                .send()
                .await?;
            let mut seen = seen.lock().unwrap();
            for m in out.messages() {
                let reason = m
                    .message_attributes()
                    .and_then(|a| a.get("pbs-error"))
                    .and_then(|v| v.string_value())
                    .unwrap_or_default();
                let body = m.body().unwrap_or_default().to_owned();
                seen.insert(
                    m.message_id().unwrap_or_default().to_owned(),
                    (body, reason.to_owned()),
                );
            }
            let mine: Vec<(String, String)> = seen
                .values()
                .filter(|(b, _)| b.contains(marker))
                .cloned()
                .collect();
            Ok((mine.len() >= count).then_some(mine))
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_status_reports_change_no_job_and_land_in_the_dlq_with_their_reason() {
    let stack = Stack::connect().await.unwrap();
    let (a, b) = (unique("trust-a"), unique("trust-b"));
    stack.create_pool(&a).await.unwrap();
    stack.create_pool(&b).await.unwrap();
    // A job of pool A that no executor takes: it stays queued unless a report moves it.
    let tpl = unique("trust");
    let prefix = unique("trusted");
    stack
        .create_template(&template_json(
            &tpl,
            stack.source_bucket(),
            &format!("{prefix}/**"),
            &a,
            "{key}",
        ))
        .await
        .unwrap();
    stack
        .put_object(
            stack.source_bucket(),
            &format!("{prefix}/a.txt"),
            b"a".to_vec(),
        )
        .await
        .unwrap();
    let job = eventually(Duration::from_secs(60), "the queued job", || async {
        Ok(stack.jobs_of_template(&tpl).await?.into_iter().next())
    })
    .await
    .unwrap();
    let id = job["job_id"].as_str().unwrap().to_owned();
    let peer = format!("{a}-peer");

    // Through pool B's queue, claiming pool A; then claiming B for A's job.
    report(&stack, &b, &job_report(&id, &a, "intruder", "succeeded")).await;
    report(&stack, &b, &job_report(&id, &b, "intruder", "succeeded")).await;
    // Through A's queue: a cloud job nobody made; a running report from a peer of pool A (it
    // may: pool A's executors are one another's peers); then an end by another executor.
    let ghost = format!("{id}-ghost");
    report(&stack, &a, &job_report(&ghost, &a, &peer, "succeeded")).await;
    report(&stack, &a, &job_report(&id, &a, &peer, "running")).await;
    stack
        .job_when(
            &id,
            Duration::from_secs(60),
            "the peer's running report",
            |j| j["state"] == "running",
        )
        .await
        .unwrap();
    report(&stack, &a, &job_report(&id, &a, "intruder", "succeeded")).await;
    // A heartbeat dated a year ahead.
    let ghost_executor = unique("ghost-exec");
    let ahead = chrono::Utc::now() + chrono::Duration::days(365);
    let beat = json!({
        "v": 1, "kind": "heartbeat", "executor_id": ghost_executor, "pool": a,
        "executor_version": "0.0.0", "at": ahead.to_rfc3339(), "interval_seconds": 60,
        "running_jobs": 0
    });
    report(&stack, &a, &beat).await;

    // The ghost job's id holds the job's id, so one read of the DLQ finds all four.
    let mine = refused(&stack, &id, 4).await;
    let reason_of = |needle: &str| {
        mine.iter()
            .find(|(_, reason)| reason.contains(needle))
            .unwrap_or_else(|| panic!("no refusal naming {needle:?}: {mine:?}"))
            .clone()
    };
    reason_of(&format!(
        "speaks for pool {a} but came through the status queue of pool {b}"
    ));
    reason_of(&format!("belongs to pool \"{a}\""));
    reason_of(&format!("held by executor \"{peer}\", not intruder"));
    reason_of(&format!("no job {ghost}"));

    // The job is as the peer left it; the ghost job was not made.
    let now = stack.job(&id).await.unwrap();
    assert_eq!(
        (now["state"].as_str(), now["executor_id"].as_str()),
        (Some("running"), Some(peer.as_str()))
    );
    assert!(now.get("report_key").is_none(), "{now}");
    let (status, _) = stack
        .call("GET", &format!("/api/v1/jobs/{ghost}"), None)
        .await
        .unwrap();
    assert_eq!(status, 404);

    // The heartbeat counts as sent now: the executor is online, but last seen no later than now.
    let seen = eventually(
        Duration::from_secs(60),
        "the heartbeat recorded",
        || async {
            let (_, body) = stack.call("GET", "/api/v1/executors", None).await?;
            Ok(body["executors"]
                .as_array()
                .and_then(|all| {
                    all.iter()
                        .find(|e| e["executor_id"] == ghost_executor.as_str())
                })
                .cloned())
        },
    )
    .await
    .unwrap();
    let last_seen =
        chrono::DateTime::parse_from_rfc3339(seen["last_seen"].as_str().unwrap()).unwrap();
    assert!(
        last_seen < chrono::Utc::now() + chrono::Duration::minutes(2),
        "a heartbeat dated {ahead} was recorded as {last_seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_obeys_only_its_pool_and_what_each_endpoint_opens_to_the_cloud() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("site");
    let queue = stack.create_pool(&pool).await.unwrap();
    let closed = tempfile::tempdir().unwrap();
    std::fs::write(closed.path().join("secret.txt"), "not for the cloud").unwrap();
    let opts = ExecutorOptions {
        // `closed` takes the default: jobs from the cloud may deliver to it, never read it.
        extra_config: format!(
            "[endpoints.closed]\ntype = \"local\"\nroot = \"{}\"\n",
            closed.path().display()
        ),
        ..Default::default()
    };
    let executor = Executor::start_with(&stack, &pool, &queue.url, opts).unwrap();
    let job = |job_id: &str, job_pool: &str| {
        json!({
            "v": 1, "job_id": job_id, "template_id": "manual", "pool": job_pool,
            "source": {"type": "endpoint", "endpoint": "closed"},
            "files": [{"key": "secret.txt", "size": 17, "dest_path": "stolen.txt"}],
            "destination": "disk",
            "created_at": chrono::Utc::now().to_rfc3339(),
        })
    };
    let reading = unique("read");
    stack
        .send_job(&queue.url, &job(&reading, &pool))
        .await
        .unwrap();
    let elsewhere = unique("elsewhere");
    let mut other = job(&elsewhere, "another-site");
    other["source"] = json!({"type": "s3", "bucket": stack.source_bucket()});
    stack.send_job(&queue.url, &other).await.unwrap();

    let row = executor.finished(&reading).await.unwrap();
    assert_eq!(
        (row["state"].as_str(), row["error_class"].as_str()),
        (Some("failed"), Some("forbidden")),
        "{row:#}"
    );
    let error = row["error"].as_str().unwrap();
    assert!(
        error.contains("endpoint closed may not be read by jobs from the cloud"),
        "{error}"
    );
    assert!(error.contains("[endpoints.closed]"), "{error}");
    let row = executor.finished(&elsewhere).await.unwrap();
    assert_eq!(row["error_class"], "forbidden", "{row:#}");
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains(&format!("this executor serves pool {pool}"))
    );
    assert!(
        !executor.landing.join("stolen.txt").exists(),
        "nothing was copied"
    );
    assert_eq!(
        pbs_e2e::files_under(&executor.landing),
        Vec::<std::path::PathBuf>::new()
    );
}

/// An executor of a new pool with an `outbox` endpoint open to the cloud both ways, and `rules`.
async fn site_with_outbox(stack: &Stack, rules: &str) -> (Executor, tempfile::TempDir, String) {
    let pool = unique("links");
    let queue = stack.create_pool(&pool).await.unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let opts = ExecutorOptions {
        extra_config: format!(
            "[endpoints.outbox]\ntype = \"local\"\nroot = \"{}\"\ncloud = \"read-write\"\n\n{rules}",
            outbox.path().display()
        ),
        ..Default::default()
    };
    let executor = Executor::start_with(stack, &pool, &queue.url, opts).unwrap();
    (executor, outbox, queue.url)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_link_leads_out_of_a_root_for_watch_schedule_source_or_destination() {
    let stack = Stack::connect().await.unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside the root").unwrap();
    let rules = "[[watch]]\nname = \"links-watch\"\nsource = \"outbox\"\nfolder = \"watched\"\n\
                 destination = \"disk\"\npath = \"in/{key}\"\nstable_seconds = 1\nreconcile_seconds = 5\n\
                 after = \"delete\"\n\n\
                 [[schedule]]\nname = \"links-schedule\"\ncron = \"*/2 * * * * *\"\nsource = \"outbox\"\n\
                 folder = \"nightly\"\ndestination = \"disk\"\npath = \"sched/{key}\"\n";
    // Links placed before the executor starts (found by scans and listings) ...
    let early = tempfile::tempdir().unwrap();
    let root = early.path();
    for folder in ["watched", "nightly"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join(folder).join("linked-dir")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.txt"),
            root.join(folder).join("linked-file.txt"),
        )
        .unwrap();
    }
    std::fs::write(root.join("nightly/n.txt"), "nightly").unwrap();
    let (executor, outbox, queue) = site_with_outbox(&stack, rules).await;
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), outbox.path().join(entry.file_name())).unwrap();
    }
    let o = outbox.path();
    // ... and after it started (found by file events): a linked folder, and a new file in the
    // folder it points to.
    std::os::unix::fs::symlink(outside.path(), o.join("watched/late-link")).unwrap();
    std::fs::write(outside.path().join("new.txt"), "also outside").unwrap();
    std::fs::write(o.join("watched/real.txt"), "inside").unwrap();

    assert_eq!(executor.landed("in/real.txt").await.unwrap(), b"inside");
    assert_eq!(executor.landed("sched/n.txt").await.unwrap(), b"nightly");
    // Endpoint-source jobs through a linked folder, and to a destination folder that is a link.
    let into = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(into.path(), executor.landing.join("linked-dest")).unwrap();
    std::fs::write(o.join("plain.txt"), "plain").unwrap();
    let pool = executor.pool.clone();
    let job = |id: &str, key: &str, dest: &str| {
        json!({
            "v": 1, "job_id": id, "template_id": "manual", "pool": pool,
            "source": {"type": "endpoint", "endpoint": "outbox"},
            "files": [{"key": key, "size": 5, "dest_path": dest}],
            "destination": "disk", "created_at": chrono::Utc::now().to_rfc3339(),
        })
    };
    let (read_id, write_id) = (unique("read-link"), unique("write-link"));
    stack
        .send_job(
            &queue,
            &job(&read_id, "watched/linked-dir/secret.txt", "got.txt"),
        )
        .await
        .unwrap();
    stack
        .send_job(
            &queue,
            &job(&write_id, "plain.txt", "linked-dest/plain.txt"),
        )
        .await
        .unwrap();
    let read = executor.finished(&read_id).await.unwrap();
    assert_eq!(read["state"], "failed", "{read:#}");
    assert!(
        read["error"]
            .as_str()
            .unwrap()
            .contains("the folder watched/linked-dir on its path is a symbolic link"),
        "{read:#}"
    );
    let write = executor.finished(&write_id).await.unwrap();
    assert_eq!(write["state"], "failed", "{write:#}");
    assert!(
        write["error"]
            .as_str()
            .unwrap()
            .contains("not written: linked-dest/plain.txt: the folder linked-dest"),
        "{write:#}"
    );

    // Let a few more reconcile scans and scheduled runs pass, then look at what happened.
    std::fs::write(o.join("watched/last.txt"), "last").unwrap();
    executor.landed("in/last.txt").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let landed = pbs_e2e::files_under(&executor.landing);
    let names: Vec<String> = landed.iter().map(|p| p.display().to_string()).collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("secret") && !n.contains("new.txt") && !n.contains("linked")),
        "something outside the root was copied: {names:#?}"
    );
    assert!(!executor.landing.join("got.txt").exists());
    assert_eq!(
        std::fs::read_dir(into.path()).unwrap().count(),
        0,
        "nothing written through the link"
    );
    // The watch rule deletes what it delivered, and nothing behind a link.
    assert!(
        !o.join("watched/real.txt").exists(),
        "the delivered file is deleted"
    );
    assert_eq!(
        std::fs::read(outside.path().join("secret.txt")).unwrap(),
        b"outside the root"
    );
    assert!(outside.path().join("new.txt").exists());
    assert!(
        o.join("watched/linked-file.txt").symlink_metadata().is_ok(),
        "the link itself is left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_the_destination_cannot_take_fails_alone_and_the_run_delivers_the_rest() {
    let stack = Stack::connect().await.unwrap();
    let rule = unique("odd-names");
    let rules = format!(
        "[[schedule]]\nname = \"{rule}\"\ncron = \"*/2 * * * * *\"\nsource = \"outbox\"\n\
         folder = \"drop\"\ndestination = \"disk\"\npath = \"{{key}}\"\n"
    );
    let (executor, outbox, _) = site_with_outbox(&stack, &rules).await;
    let staged = outbox.path().join("staged");
    std::fs::create_dir_all(&staged).unwrap();
    for i in 0..9 {
        std::fs::write(staged.join(format!("good-{i}.txt")), format!("file {i}")).unwrap();
    }
    std::fs::write(staged.join("x:y.txt"), "a drive letter on Windows").unwrap();
    // The whole folder appears at once, so one scheduled run sees all ten.
    std::fs::rename(&staged, outbox.path().join("drop")).unwrap();

    // The first run takes all ten; later ones find the nine at their destination and try only
    // the odd name again.
    let jobs = stack.finished_jobs(&rule, 2).await.unwrap();
    let by_age = |j: &&Value| j["created_at"].as_str().unwrap_or_default().to_owned();
    let job = jobs.iter().min_by_key(by_age).unwrap();
    let later = jobs.iter().max_by_key(by_age).unwrap();
    assert_eq!(later["state"], "failed", "{later:#}");
    let again = stack
        .report(later["job_id"].as_str().unwrap())
        .await
        .unwrap();
    let again: Vec<&Value> = again["files"].as_array().unwrap().iter().collect();
    assert_eq!(again.len(), 1, "only the odd name again: {again:#?}");
    assert_eq!(again[0]["key"], "drop/x:y.txt");
    assert_eq!(job["state"], "failed", "{job:#}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("\"x:y.txt\" cannot be delivered"),
        "{job:#}"
    );
    for i in 0..9 {
        let landed = executor.landed(&format!("good-{i}.txt")).await.unwrap();
        assert_eq!(landed, format!("file {i}").as_bytes());
    }
    let id = job["job_id"].as_str().unwrap();
    let report = stack.report(id).await.unwrap();
    let rows = report["files"].as_array().unwrap();
    assert_eq!(rows.len(), 10, "{report:#}");
    let copied = rows.iter().filter(|r| r["outcome"] == "copied").count();
    assert_eq!(copied, 9, "{report:#}");
    let odd = rows
        .iter()
        .find(|r| r["key"] == "drop/x:y.txt")
        .expect("the odd name's row");
    assert_eq!(odd["outcome"], "not_delivered");
    assert!(
        odd["error"].as_str().unwrap().contains("is absolute"),
        "{odd:#}"
    );
}

/// Whether an SDK error is IAM's refusal (not a missing queue, key or bucket).
fn denied<E: std::fmt::Debug>(what: &str, res: Result<impl std::fmt::Debug, E>) {
    let e = format!("{:?}", res.expect_err(&format!("{what} was allowed")));
    assert!(
        e.contains("AccessDenied") || e.contains("not authorized"),
        "{what}: refused for another reason: {e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pools_executor_credentials_reach_only_its_own_pool() {
    let stack = Stack::connect().await.unwrap();
    let (a, b) = (unique("iam-a"), unique("iam-b"));
    // Pool A reads only its own prefix of the source bucket.
    let (tpl, prefix) = (unique("iam"), unique("iam-in"));
    let a_reads = format!("SourcePrefixes={prefix}/");
    let pool_a = stack.deploy_pool_stack_with(&a, &[&a_reads]).unwrap();
    let pool_b = stack.deploy_pool_stack(&b).unwrap();
    let who_a = stack
        .identity(&format!("{a}-exec"), &pool_a["ExecutorPolicyArn"])
        .await
        .unwrap();

    // Pool A's executor, signing as its IAM user, does its work: a job lands and its reports
    // (through A's status queue), log and delivery report (under A's prefixes) reach the cloud.
    let opts = ExecutorOptions {
        env: who_a.env(),
        ..Default::default()
    };
    let executor = Executor::start_with(&stack, &a, &pool_a["PoolQueueUrl"], opts).unwrap();
    let template = template_json(
        &tpl,
        stack.source_bucket(),
        &format!("{prefix}/**"),
        &a,
        "{key}",
    );
    stack.create_template(&template).await.unwrap();
    let key = format!("{prefix}/granted.txt");
    stack
        .put_object(stack.source_bucket(), &key, b"within the policy".to_vec())
        .await
        .unwrap();
    assert_eq!(executor.landed(&key).await.unwrap(), b"within the policy");
    let jobs = stack.finished_jobs(&tpl, 1).await.unwrap();
    assert_eq!(jobs[0]["state"], "succeeded", "{:#}", jobs[0]);
    let report = stack
        .report(jobs[0]["job_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(report["files"][0]["outcome"], "copied", "{report:#}");

    // The same credentials reach nothing of pool B, and put work on no pool queue.
    let as_a = stack.acting_as(&who_a).await;
    let bucket = stack.output("ConfigBucketName");
    let receive = |url: String| as_a.sqs.receive_message().queue_url(url).send();
    let send = |url: String| {
        as_a.sqs
            .send_message()
            .queue_url(url)
            .message_body("{}")
            .send()
    };
    denied(
        "receiving from B's work queue",
        receive(pool_b["PoolQueueUrl"].clone()).await,
    );
    denied(
        "sending to B's status queue",
        send(pool_b["StatusQueueUrl"].clone()).await,
    );
    denied(
        "sending to A's own work queue",
        send(pool_a["PoolQueueUrl"].clone()).await,
    );
    denied(
        "sending to B's work queue",
        send(pool_b["PoolQueueUrl"].clone()).await,
    );
    denied(
        "sending to the default pool's queue",
        send(stack.output("DefaultPoolQueueUrl").into()).await,
    );
    let get = |key: String| as_a.s3.get_object().bucket(bucket).key(key).send();
    let put = |key: String| {
        let body = aws_sdk_s3::primitives::ByteStream::from_static(b"x");
        as_a.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
    };
    denied(
        "reading B's rules",
        get(format!("pools/{b}/rules.json")).await,
    );
    denied(
        "writing B's logs",
        put(format!("logs/{b}/forged.log")).await,
    );
    denied(
        "writing B's reports",
        put(format!("reports/{b}/forged.json")).await,
    );
    denied(
        "writing B's staging",
        put(format!("staging/{b}/forged")).await,
    );
    denied(
        "writing B's rules",
        put(format!("pools/{b}/rules.json")).await,
    );
    // The source bucket beyond A's SourcePrefixes: neither read nor listed.
    let source = stack.source_bucket();
    let elsewhere = format!("{}/not-for-a.txt", unique("iam-other"));
    stack
        .put_object(source, &elsewhere, b"another site's".to_vec())
        .await
        .unwrap();
    let read = |key: String| as_a.s3.get_object().bucket(source).key(key).send();
    denied(
        "reading outside A's source prefixes",
        read(elsewhere.clone()).await,
    );
    denied(
        "listing the whole source bucket",
        as_a.s3.list_objects_v2().bucket(source).send().await,
    );
    // What A's policy grants, for contrast: its own status queue, prefixes and source prefix.
    send(pool_a["StatusQueueUrl"].clone())
        .await
        .expect("A reports through its own queue");
    put(format!("logs/{a}/own.log"))
        .await
        .expect("A writes its own logs");
    read(key).await.expect("A reads its own source prefix");
    as_a.s3
        .list_objects_v2()
        .bucket(source)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .expect("A lists its own source prefix");
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_queues_take_work_only_from_the_stacks_functions() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("qp");
    let outputs = stack.deploy_pool_stack(&pool).unwrap();
    // An identity whose own policy lets it send to every queue of the account.
    let name = unique("broad-sender");
    let document = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:SendMessageBatch"], "Resource": "*"}],
    });
    let policy = stack
        .iam
        .create_policy()
        .policy_name(&name)
        .policy_document(document.to_string())
        .send()
        .await
        .unwrap();
    let arn = policy.policy().and_then(|p| p.arn()).unwrap().to_owned();
    let broad = stack
        .acting_as(&stack.identity(&name, &arn).await.unwrap())
        .await;
    let send = |url: String| {
        broad
            .sqs
            .send_message()
            .queue_url(url)
            .message_body("{}")
            .send()
    };
    denied(
        "a broad sender putting work on a pool's queue",
        send(outputs["PoolQueueUrl"].clone()).await,
    );
    denied(
        "a broad sender putting work on the default pool's queue",
        send(stack.output("DefaultPoolQueueUrl").into()).await,
    );
    // Its identity policy works where no queue policy says otherwise: the refusal above is the
    // pool queues' own.
    send(outputs["StatusQueueUrl"].clone())
        .await
        .expect("the broad sender reaches a queue without that policy");
}
