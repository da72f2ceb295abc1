//! End-to-end: the source bucket's events in every envelope the stack can be wired for
//! (`SourceEvents`): S3's own notification, the same wrapped by SNS (with and without raw
//! delivery), and EventBridge's `Object Created`, each delivered to the EventsQueue as that
//! service sends it. Each envelope alone starts the transfer; one upload announced through
//! several envelopes makes one job.

use pbs_e2e::{Scenario, Stack, eventbridge_event, s3_event, sns_envelope};

#[tokio::test(flavor = "multi_thread")]
async fn each_envelope_starts_a_transfer_and_one_upload_through_all_is_one_job() {
    let stack = Stack::connect().await.unwrap();
    let sc = Scenario::new(&stack, "envelopes", None, "in/**", "{key}")
        .await
        .unwrap();
    let put = |key: &'static str, body: &'static [u8]| {
        let (stack, bucket) = (&stack, &sc.bucket);
        async move {
            let etag = stack.put_object(bucket, key, body.to_vec()).await.unwrap();
            (key, body.len() as u64, etag)
        }
    };

    // Each envelope on its own: SNS (not raw), then EventBridge.
    let (by_sns, size, etag) = put("in/by sns+topic.csv", b"through sns").await;
    let sns_body = sns_envelope(&s3_event(
        &sc.bucket,
        by_sns,
        size,
        &etag,
        "00000000000000A1",
    ));
    stack.send_events(&[sns_body]).await.unwrap();
    assert_eq!(sc.executor.landed(by_sns).await.unwrap(), b"through sns");
    let (by_bridge, size2, etag2) = put("in/é/by bridge.csv", b"through eventbridge").await;
    let bridge_body = eventbridge_event(&sc.bucket, by_bridge, size2, &etag2, "00000000000000B2");
    stack.send_events(&[bridge_body]).await.unwrap();
    assert_eq!(
        sc.executor.landed(by_bridge).await.unwrap(),
        b"through eventbridge"
    );
    stack.events_drained().await.unwrap();

    // One upload through all four envelopes at once (SNS raw delivery is the S3 event itself),
    // and the two above announced again through the other envelope.
    let (all, size3, etag3) = put("in/q4 report+final.csv", b"figures").await;
    let direct = s3_event(&sc.bucket, all, size3, &etag3, "00000000000000C3");
    let bodies = [
        sns_envelope(&direct),
        direct.clone(),
        eventbridge_event(&sc.bucket, all, size3, &etag3, "00000000000000C3"),
        direct,
        eventbridge_event(&sc.bucket, by_sns, size, &etag, "00000000000000A1"),
        sns_envelope(&s3_event(
            &sc.bucket,
            by_bridge,
            size2,
            &etag2,
            "00000000000000B2",
        )),
    ];
    stack.send_events(&bodies).await.unwrap();
    assert_eq!(sc.executor.landed(all).await.unwrap(), b"figures");
    stack.events_drained().await.unwrap();

    let jobs = stack.finished_jobs(&sc.template, 3).await.unwrap();
    assert_eq!(jobs.len(), 3, "one job per upload: {jobs:#?}");
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:#?}");
}
