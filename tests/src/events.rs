//! S3 event notifications shaped as the emulator's S3 sends them, for tests that announce
//! objects themselves.

use serde_json::Value;

/// An S3 `ObjectCreated:Put` notification body shaped like the one S3 sends, with the key
/// URL-encoded the way S3 encodes it.
pub fn s3_event(bucket: &str, key: &str, size: u64, etag: &str, sequencer: &str) -> String {
    let fixture = include_str!("../fixtures/s3-event-put.json");
    let mut event: Value = serde_json::from_str(fixture).unwrap();
    let record = &mut event["Records"][0];
    record["s3"]["bucket"]["name"] = bucket.into();
    record["s3"]["bucket"]["arn"] = format!("arn:aws:s3:::{bucket}").into();
    record["s3"]["object"]["key"] = encode_event_key(key).into();
    record["s3"]["object"]["size"] = size.into();
    record["s3"]["object"]["eTag"] = etag.into();
    record["s3"]["object"]["sequencer"] = sequencer.into();
    event.to_string()
}

/// S3's event key encoding: form-style, a space becomes `+`.
pub fn encode_event_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `s3_body` (an S3 event notification) as SNS delivers it to a subscribed queue without raw
/// delivery: a `Notification` whose `Message` is the S3 event, as text.
pub fn sns_envelope(s3_body: &str) -> String {
    let fixture = include_str!("../fixtures/s3-event-sns.json");
    let mut envelope: Value = serde_json::from_str(fixture).unwrap();
    envelope["Message"] = s3_body.into();
    envelope.to_string()
}

/// The EventBridge `Object Created` event S3 sends for the same upload: the key as it is, the
/// sequencer in lower case without leading zeros (as EventBridge shows it).
pub fn eventbridge_event(
    bucket: &str,
    key: &str,
    size: u64,
    etag: &str,
    sequencer: &str,
) -> String {
    let fixture = include_str!("../fixtures/s3-event-eventbridge.json");
    let mut event: Value = serde_json::from_str(fixture).unwrap();
    event["resources"] = serde_json::json!([format!("arn:aws:s3:::{bucket}")]);
    let detail = &mut event["detail"];
    detail["bucket"]["name"] = bucket.into();
    detail["object"]["key"] = key.into();
    detail["object"]["size"] = size.into();
    detail["object"]["etag"] = etag.into();
    detail["object"]["sequencer"] = sequencer
        .trim_start_matches('0')
        .to_ascii_lowercase()
        .into();
    event["time"] = chrono::Utc::now().to_rfc3339().into();
    event.to_string()
}
