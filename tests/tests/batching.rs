//! Jobs received together are copied together: one rclone run for a backlog of compatible jobs,
//! with each job keeping its own outcome, report, log and message.

use std::time::Duration;

use pbs_e2e::{Executor, Scenario, Stack, body, eventually, s3_event, unique};
use serde_json::json;

/// Sum of a counter's samples in a Prometheus text page.
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_is_copied_in_few_rclone_runs_and_each_job_keeps_its_own_outcome() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("batch");
    let queue = stack.create_pool(&pool).await.unwrap();
    let bucket = unique("quiet");
    stack.create_quiet_bucket(&bucket).await.unwrap();

    // 40 objects, one job each, queued before any executor runs; one more job whose object
    // does not exist.
    let mut expected = Vec::new();
    for i in 0..40u32 {
        let key = format!("take {i:02}/clip ü {i}.bin");
        let data = body(4096 + i as usize, i + 1);
        stack.put_object(&bucket, &key, data.clone()).await.unwrap();
        expected.push((format!("job-{i:02}-{pool}"), key, data));
    }
    let missing = (
        format!("job-missing-{pool}"),
        "take 99/gone.bin".to_owned(),
        Vec::new(),
    );
    for (job_id, key, data) in expected.iter().chain([&missing]) {
        let job = json!({
            "v": 1, "job_id": job_id, "template_id": "batching", "pool": pool,
            "source": {"type": "s3", "bucket": bucket},
            "files": [{"key": key, "size": data.len(), "dest_path": format!("in/{key}"),
                       "sequencer": "00000000000000A1"}],
            "destination": "disk",
            "delivery": {"overwrite": "overwrite", "verify": "hash"},
            "created_at": "2026-11-25T00:00:00Z"
        });
        stack.enqueue_job(&queue.url, &job).await.unwrap();
    }

    let executor = Executor::start(&stack, &pool, &queue.url).unwrap();
    for (job_id, key, data) in &expected {
        let row = executor.finished(job_id).await.unwrap();
        assert_eq!(row["state"], "succeeded", "{row}");
        assert_eq!(
            executor.landed(&format!("in/{key}")).await.unwrap(),
            *data,
            "{key}"
        );
        // The job's rclone log is there, as for a job run alone.
        let log = executor.state.join(format!("logs/{job_id}.1.log"));
        assert!(log.exists(), "{} missing", log.display());
    }
    let row = executor.finished(&missing.0).await.unwrap();
    assert_eq!(row["state"], "failed", "{row}");
    let detail = executor.cli(&["jobs", "show", &missing.0]).unwrap();
    let detail = String::from_utf8_lossy(&detail.stdout);
    assert!(
        detail.contains("not_found") && detail.contains("gone.bin"),
        "{detail}"
    );

    // Far fewer rclone runs than jobs: the backlog went in batches.
    let page = executor.metrics().await.unwrap();
    let runs = counter(&page, "pbs_rclone_exits_total");
    let batched = counter(&page, "pbs_batched_jobs_total");
    assert!(batched >= 20.0, "{batched} jobs batched:\n{page}");
    assert!(runs < 20.0, "{runs} rclone runs for 41 jobs:\n{page}");

    // Each job's own outcome reached the cloud.
    for (job_id, state) in [(&expected[7].0, "succeeded"), (&missing.0, "failed")] {
        let job = eventually(
            Duration::from_secs(30),
            "the job's report applied",
            || async {
                let (status, job) = stack
                    .call("GET", &format!("/api/v1/jobs/{job_id}"), None)
                    .await?;
                Ok((status == 200 && job["state"] == state).then_some(job))
            },
        )
        .await
        .unwrap();
        if state == "failed" {
            assert_eq!(job["error_class"], "not_found", "{job}");
        }
        // Its delivery report (its batch's, which the API narrows to this job) tells its file.
        let report = stack.report(job_id).await.unwrap();
        let rows = report["files"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{report}");
        assert_eq!(rows[0]["job_id"], job_id.as_str());
        let outcome = if state == "failed" {
            "not_delivered"
        } else {
            "copied"
        };
        assert_eq!(rows[0]["outcome"], outcome, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_verified_by_hash_takes_rclone_s_checks_and_reads_back_only_what_they_leave_open() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("hashbatch");
    let queue = stack.create_pool(&pool).await.unwrap();
    let bucket = unique("quiet");
    stack.create_quiet_bucket(&bucket).await.unwrap();
    let rclone = pbs_e2e::RecordingRclone::new().unwrap();

    // 20 objects, one job each, announced with their ETags, queued before the executor runs.
    // The last is announced with another ETag (an earlier version's, say): rclone's check
    // vouches for what it read, not for what the event announced, so that file is read back.
    let mut jobs = Vec::new();
    for i in 0..20u32 {
        let key = format!("cam {i:02}/shot ü {i}.bin");
        let data = body(5000 + i as usize, i + 3);
        let etag = stack.put_object(&bucket, &key, data.clone()).await.unwrap();
        let announced = if i == 19 {
            "0123456789abcdef0123456789abcdef".to_owned()
        } else {
            etag.clone()
        };
        let job_id = format!("job-{i:02}-{pool}");
        let job = json!({
            "v": 1, "job_id": job_id, "template_id": "batching", "pool": pool,
            "source": {"type": "s3", "bucket": bucket},
            "files": [{"key": key, "size": data.len(), "dest_path": format!("in/{key}"),
                       "sequencer": "00000000000000A1", "etag": announced}],
            "destination": "disk",
            "delivery": {"overwrite": "overwrite", "verify": "hash"},
            "created_at": "2026-11-30T00:00:00Z"
        });
        stack.enqueue_job(&queue.url, &job).await.unwrap();
        jobs.push((job_id, key, data, etag));
    }
    let executor = Executor::start_with(
        &stack,
        &pool,
        &queue.url,
        pbs_e2e::ExecutorOptions {
            rclone: Some(rclone.path.display().to_string()),
            ..Default::default()
        },
    )
    .unwrap();
    for (job_id, key, data, _) in &jobs {
        let row = executor.finished(job_id).await.unwrap();
        assert_eq!(row["state"], "succeeded", "{row}\n{}", executor.log());
        assert_eq!(executor.landed(&format!("in/{key}")).await.unwrap(), *data);
    }
    let verbs = rclone.verbs();
    assert!(
        verbs.iter().any(|v| v == "copy") && !verbs.iter().any(|v| v == "copyto"),
        "the jobs were not copied as a batch: {verbs:?}"
    );
    // Only the file rclone's checks left open was hashed again (at the source and where it
    // landed).
    assert_eq!(
        rclone.hashed().into_iter().collect::<Vec<_>>(),
        [jobs[19].1.as_str()],
        "{}",
        rclone.record()
    );
    // Each job's report holds the MD5 of what landed: the announced ETag where rclone's check
    // proved it, the object's own where the file was read back.
    for (job_id, _, _, etag) in [&jobs[3], &jobs[19]] {
        let report = eventually(Duration::from_secs(30), "the job's report", || async {
            Ok(stack.report(job_id).await.ok())
        })
        .await
        .unwrap();
        let row = &report["files"][0];
        assert_eq!(row["md5"].as_str(), Some(etag.as_str()), "{report}");
    }
    // The batch's log, shared by its jobs, kept none of the debug lines the checks came from.
    let log =
        std::fs::read_to_string(executor.state.join(format!("logs/{}.1.log", jobs[0].0))).unwrap();
    assert!(log.contains("Copied (new)"), "{log}");
    assert!(!log.contains("\"level\":\"debug\""), "{log}");
}

/// An SQS event as the EventsQueue's event source mapping hands it to the trigger: one record
/// per S3 notification body.
fn sqs_event(bodies: &[String]) -> serde_json::Value {
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| {
            json!({
                "messageId": unique("msg"), "receiptHandle": unique("rh"), "body": b,
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:events",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storm_batch_becomes_one_job_with_a_file_list_and_duplicate_events_start_nothing() {
    let stack = Stack::connect().await.unwrap();
    let sc = Scenario::new(&stack, "storm", None, "cam/**", "{key}")
        .await
        .unwrap();
    let put = |i: u32| {
        let (stack, bucket) = (&stack, sc.bucket.clone());
        async move {
            let key = format!("cam/card {i:02}/frame+{i}.dng");
            let data = body(4096 + i as usize, 500 + i);
            let etag = stack.put_object(&bucket, &key, data.clone()).await.unwrap();
            let event = s3_event(
                &bucket,
                &key,
                data.len() as u64,
                &etag,
                &format!("{i:016X}"),
            );
            (key, data, event)
        }
    };
    let mut first = Vec::new();
    for i in 0..30 {
        first.push(put(i).await);
    }
    // One event of the batch names an object that is not there (deleted since, say).
    let ghost = s3_event(&sc.bucket, "cam/gone.dng", 10, "0123", "00000000000000FF");
    let mut bodies: Vec<String> = first.iter().map(|(_, _, e)| e.clone()).collect();
    bodies.push(ghost.clone());

    // The whole batch reaches the trigger at once, as a storm's events do.
    let answer = stack
        .invoke("TriggerFunctionName", &sqs_event(&bodies))
        .await
        .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let jobs = stack.jobs_of_template(&sc.template).await.unwrap();
    assert_eq!(jobs.len(), 1, "one job for the batch: {jobs:#?}");
    let id = jobs[0]["job_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("co-"), "{id}");
    assert_eq!(jobs[0]["file_count"], 31, "{:#}", jobs[0]);
    // Any of its files finds the job, not only the first (each event's claim is in the key index).
    for key in ["cam/card 17/frame+17", "cam/gone"] {
        let (status, found) = stack
            .call(
                "GET",
                &format!(
                    "/api/v1/jobs?template={}&key_prefix={}",
                    sc.template,
                    key.replace(' ', "%20").replace('+', "%2B")
                ),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{found}");
        assert_eq!(pbs_e2e::job_ids(&found), [id.as_str()], "{key}: {found}");
    }

    // Every present file lands; the missing one fails the job, named, and alone.
    for (key, data, _) in &first {
        assert_eq!(&sc.executor.landed(key).await.unwrap(), data, "{key}");
    }
    let done = stack
        .job_when(&id, Duration::from_secs(60), "the storm job to end", |j| {
            ["succeeded", "failed"].contains(&j["state"].as_str().unwrap_or(""))
        })
        .await
        .unwrap();
    assert_eq!(done["state"], "failed", "{done:#}");
    assert_eq!(done["error_class"], "not_found", "{done:#}");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("cam/gone.dng"), "{error}");
    assert!(
        !error.contains("frame+"),
        "only the missing file is named: {error}"
    );

    // The delivery report accounts for each file.
    let report = stack.report(&id).await.unwrap();
    let rows = report["files"].as_array().unwrap();
    assert_eq!(rows.len(), 31, "{report:#}");
    for row in rows {
        let expected = if row["key"] == "cam/gone.dng" {
            "not_delivered"
        } else {
            "copied"
        };
        assert_eq!(row["outcome"], expected, "{row}");
    }

    // A file's own event id leads to the job holding it.
    let file = &done["files"][7];
    let member = pbs_shared::job::event_job_id(
        &pbs_shared::TemplateId::parse(&sc.template).unwrap(),
        &sc.bucket,
        file["key"].as_str().unwrap(),
        None,
        file["sequencer"].as_str(),
        file["etag"].as_str(),
    );
    assert_eq!(stack.job(member.as_str()).await.unwrap()["job_id"], id);

    // Redelivered events, batched with new ones: only the new objects make a job.
    let mut second = Vec::new();
    for i in 30..35 {
        second.push(put(i).await);
    }
    let mut again: Vec<String> = bodies[..20].to_vec();
    again.extend(second.iter().map(|(_, _, e)| e.clone()));
    again.extend(bodies[20..].iter().cloned());
    let answer = stack
        .invoke("TriggerFunctionName", &sqs_event(&again))
        .await
        .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    // One duplicate alone, and the ghost again: nothing new either.
    let answer = stack
        .invoke(
            "TriggerFunctionName",
            &sqs_event(&[bodies[3].clone(), ghost]),
        )
        .await
        .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let jobs = stack.jobs_of_template(&sc.template).await.unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    let new = jobs.iter().find(|j| j["job_id"] != id.as_str()).unwrap();
    let keys: Vec<&str> = new["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = second.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys, expected);
    let new_id = new["job_id"].as_str().unwrap();
    let done = stack
        .job_when(
            new_id,
            Duration::from_secs(60),
            "the second job to end",
            |j| j["state"] == "succeeded" || j["state"] == "failed",
        )
        .await
        .unwrap();
    assert_eq!(done["state"], "succeeded", "{done:#}");
    for (key, data, _) in &second {
        assert_eq!(&sc.executor.landed(key).await.unwrap(), data, "{key}");
    }
    // Each job ran once, a copy for all its files: a handful of rclone runs for 36 files.
    for row in sc.executor.ledger().unwrap() {
        assert_eq!(row["attempts"], 1, "{row}");
    }
    let page = sc.executor.metrics().await.unwrap();
    let runs = counter(&page, "pbs_rclone_exits_total");
    assert!(
        runs <= 10.0,
        "{runs} rclone runs for two jobs of 36 files:\n{page}"
    );
}
