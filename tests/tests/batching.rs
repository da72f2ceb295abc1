//! Jobs received together are copied together: one rclone run for a backlog of compatible jobs,
//! with each job keeping its own outcome, report, log and message.

use std::time::Duration;

use pbs_e2e::{Executor, Stack, body, eventually, unique};
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
        stack.send_job(&queue.url, &job).await.unwrap();
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
    let page = stack
        .http
        .get(format!("{}/metrics", executor.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
        let (status, report) = stack
            .call("GET", &format!("/api/v1/jobs/{job_id}/report"), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{report}");
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
