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
