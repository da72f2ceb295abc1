//! Running the service: executor heartbeats and the monitor that finds silent executors, and a
//! pool added with the per-pool stack (`infra/pool.yaml`) as an operator adds one.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use pbs_e2e::{Executor, ExecutorOptions, Stack, eventually, template_json, unique};
use serde_json::{Value, json};

/// The monitor's entry for `executor` in its `online` or `offline` list.
fn listed<'a>(report: &'a Value, list: &str, executor: &str) -> Option<&'a Value> {
    report[list]
        .as_array()?
        .iter()
        .find(|e| e.as_str() == Some(executor) || e["executor_id"].as_str() == Some(executor))
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_keep_an_executor_online_and_the_monitor_reports_it_offline_once_silent() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("beat");
    let queue = stack.create_pool(&pool).await.unwrap();
    let mut executor = Executor::start_with(
        &stack,
        &pool,
        &queue.url,
        ExecutorOptions {
            heartbeat_seconds: Some(1),
            ..Default::default()
        },
    )
    .unwrap();

    // Heartbeats reach the executors table through the StatusQueue and the status function,
    // with no job having run.
    let item = eventually(Duration::from_secs(30), "a heartbeat recorded", || async {
        let out = stack
            .dynamo
            .get_item()
            .table_name(stack.output("ExecutorsTableName"))
            .key("executor_id", AttributeValue::S(executor.id.clone()))
            .consistent_read(true)
            .send()
            .await?;
        Ok(out
            .item()
            .filter(|i| i.contains_key("heartbeat_seconds"))
            .cloned())
    })
    .await
    .unwrap();
    let attr = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v) | AttributeValue::N(v)) => v.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(attr("heartbeat_seconds"), "1");
    assert_eq!(attr("running_jobs"), "0");
    assert_eq!(attr("pool"), pool);
    assert_eq!(attr("version"), env!("CARGO_PKG_VERSION"));

    let report = stack
        .invoke("MonitorFunctionName", &json!({}))
        .await
        .unwrap();
    assert!(
        listed(&report, "online", &executor.id).is_some(),
        "a beating executor is online: {report}"
    );

    executor.terminate().unwrap();
    // Three missed one-second heartbeats later, the monitor lists it offline.
    let entry = eventually(
        Duration::from_secs(30),
        "the stopped executor listed offline",
        || async {
            let report = stack.invoke("MonitorFunctionName", &json!({})).await?;
            Ok(listed(&report, "offline", &executor.id).cloned())
        },
    )
    .await
    .unwrap();
    assert_eq!(entry["pool"], pool.as_str());
    assert!(entry["silent_seconds"].as_i64().unwrap() >= 3, "{entry}");
    assert_eq!(entry["online"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_stack_adds_a_pool_that_jobs_reach() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("site");
    stack.deploy_pool_stack(&pool).unwrap();

    // The pool's queue is the one the trigger dispatches to by name.
    let queue_url = stack
        .sqs
        .get_queue_url()
        .queue_name(format!("{}{pool}", stack.output("PoolQueuePrefix")))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let executor = Executor::start(&stack, &pool, &queue_url).unwrap();
    let prefix = unique("pooled");
    let tpl = unique("tpl");
    stack
        .create_template(&template_json(
            &tpl,
            stack.source_bucket(),
            &format!("{prefix}/**"),
            &pool,
            "{key}",
        ))
        .await
        .unwrap();
    let key = format!("{prefix}/reel.mov");
    stack
        .put_object(stack.source_bucket(), &key, b"to site b".to_vec())
        .await
        .unwrap();
    assert_eq!(executor.landed(&key).await.unwrap(), b"to site b");
    let jobs = stack.finished_jobs(&tpl, 1).await.unwrap();
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");
    assert_eq!(jobs[0]["pool"], pool.as_str());
}
