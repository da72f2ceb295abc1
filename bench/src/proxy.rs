//! A counting reverse proxy: every HTTP request goes to one upstream as it came (its `Host`
//! header and body untouched, so SigV4 signatures still verify), and is counted by AWS service
//! and operation. The cost figures are made of these counts, not of estimates.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Requests by `"<service> <Operation>"` (DynamoDB: `"dynamodb <Operation> <table>"`), e.g.
/// `"sqs ReceiveMessage"`.
pub type Counts = BTreeMap<String, Tally>;

/// Requests of one kind and what AWS bills them as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub requests: u64,
    /// SQS: 64 KiB chunks of the larger of request and answer (each a billed request).
    /// DynamoDB: write units (each 1 KB of an item written, and of each index entry it makes;
    /// a transaction's twice), and one read unit per item read.
    /// Else: requests.
    pub units: u64,
}

#[derive(Clone)]
struct Forward {
    authority: String,
    /// Path-style S3 buckets served elsewhere: (bucket, authority).
    buckets: Vec<(String, String)>,
    client: Client<HttpConnector, Body>,
    counts: Arc<Mutex<Counts>>,
    sizes: Sizes,
}

/// The size in bytes of each jobs-table item written through the proxy, by `job_id`: an update
/// is billed by the size of the item it rewrites.
type Sizes = Arc<Mutex<HashMap<String, u64>>>;

/// A running proxy; it stops when dropped.
pub struct CountingProxy {
    /// Where clients send their requests (`http://127.0.0.1:<port>`).
    pub url: String,
    counts: Arc<Mutex<Counts>>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Listens on `listen` (`127.0.0.1:0` for any free port) and forwards to `upstream`
    /// (`http://host:port`).
    pub async fn start(listen: &str, upstream: &str) -> Result<Self> {
        Self::start_routed(listen, upstream, &[]).await
    }

    /// As [`CountingProxy::start`], with the path-style S3 requests of each of `buckets`
    /// (bucket, upstream) sent to that bucket's upstream instead.
    pub async fn start_routed(
        listen: &str,
        upstream: &str,
        buckets: &[(&str, &str)],
    ) -> Result<Self> {
        let authority_of = |url: &str| {
            url.parse::<Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.to_string()))
                .with_context(|| format!("upstream {url} is not http://host:port"))
        };
        let authority = authority_of(upstream)?;
        let buckets = buckets
            .iter()
            .map(|(b, url)| Ok(((*b).to_owned(), authority_of(url)?)))
            .collect::<Result<Vec<_>>>()?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the counting proxy to {listen}"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Mutex::new(Counts::new()));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let state = Forward {
            authority,
            buckets,
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(connector),
            counts: counts.clone(),
            sizes: Sizes::default(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, counts, task })
    }

    /// The counts so far, and a fresh start.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().expect("counts lock"))
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Most bytes of a JSON-protocol request body read to count it (SQS, DynamoDB: 1 MiB at most).
const JSON_BODY_LIMIT: usize = 4 << 20;

async fn forward(State(f): State<Forward>, req: Request) -> Response {
    let mut op = operation(req.method(), req.uri(), req.headers());
    let (mut parts, body) = req.into_parts();
    // SQS and DynamoDB bodies are small JSON: read to count them, then sent on unchanged.
    let (body, units) = if op.starts_with("sqs ") || op.starts_with("dynamodb ") {
        let bytes = match axum::body::to_bytes(body, JSON_BODY_LIMIT).await {
            Ok(b) => b,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        let units = if op.starts_with("dynamodb ") {
            let (table, items) = dynamodb_items(&op, &bytes, &f.sizes);
            op = format!("{op} {table}");
            items
        } else {
            chunks(bytes.len())
        };
        (Body::from(bytes), units)
    } else {
        (body, 1)
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let bucket = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let authority = f
        .buckets
        .iter()
        .find(|(b, _)| b == bucket)
        .map_or(&f.authority, |(_, a)| a);
    parts.uri = match format!("http://{authority}{path}").parse() {
        Ok(uri) => uri,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let res = f.client.request(Request::from_parts(parts, body)).await;
    // An SQS answer bigger than the request (received messages) is billed by its size.
    let answer_units = match &res {
        Ok(r) if op.starts_with("sqs ") => r
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .map_or(1, chunks),
        _ => 1,
    };
    {
        let mut counts = f.counts.lock().expect("counts lock");
        let tally = counts.entry(op).or_default();
        tally.requests += 1;
        tally.units += units.max(answer_units);
    }
    match res {
        Ok(res) => res.map(Body::new),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// SQS bills each 64 KiB of a request's payload as one request.
fn chunks(len: usize) -> u64 {
    len.div_ceil(64 * 1024).max(1) as u64
}

/// The jobs table's global secondary indexes (template.yaml): their key attributes, and whether
/// they copy every attribute (`ALL`) or only the keys. An item holding an index's keys is written
/// to that index too: as many write units as the item's for an `ALL` index, one for a keys-only.
const JOBS_INDEXES: [([&str; 2], bool); 3] = [
    (["list_pk", "created_sk"], true),
    (["list_pk", "key_sk"], true),
    (["waiting_pool", "created_sk"], false),
];

/// DynamoDB's size of an attribute value in bytes: a string's UTF-8 bytes, a number's about one
/// byte per two digits and one more, a binary's bytes, one for a boolean or null, and a map or
/// list three more than its elements (one more each, and a map's names).
fn value_size(value: &serde_json::Value) -> u64 {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    let text = |v: &serde_json::Value| v.as_str().map_or(0, |t| t.len() as u64);
    match kind.as_str() {
        "S" => text(inner),
        "N" => text(inner).div_ceil(2) + 1,
        "B" => text(inner) * 3 / 4,
        "SS" | "NS" | "BS" => inner.as_array().map_or(0, |a| a.iter().map(text).sum()),
        "M" => {
            3 + inner.as_object().map_or(0, |m| {
                m.iter()
                    .map(|(k, v)| k.len() as u64 + value_size(v) + 1)
                    .sum()
            })
        }
        "L" => {
            3 + inner
                .as_array()
                .map_or(0, |a| a.iter().map(|v| value_size(v) + 1).sum())
        }
        _ => 1,
    }
}

/// An item's size: its attribute names and values.
fn item_size(item: &serde_json::Value) -> u64 {
    item.as_object().map_or(0, |m| {
        m.iter().map(|(k, v)| k.len() as u64 + value_size(v)).sum()
    })
}

/// Write units of `size` bytes: one per KB begun.
fn kb_units(size: u64) -> u64 {
    size.div_ceil(1024).max(1)
}

/// Write units of one write (`request`: a `PutItem`'s or `UpdateItem`'s body, or a transaction's
/// entry) to `table`: the item, and each index of the jobs table whose keys it holds. An update of
/// a job is taken to add its values to the item it rewrites (its size from the job's put) and to
/// rewrite the two indexes that copy every attribute.
fn item_units(table: &str, op: &str, request: &serde_json::Value, sizes: &Sizes) -> u64 {
    let job = request["Item"]["job_id"]["S"]
        .as_str()
        .or(request["Key"]["job_id"]["S"].as_str());
    if op == "dynamodb UpdateItem" {
        let added: u64 = request["ExpressionAttributeValues"]
            .as_object()
            .map_or(0, |v| v.values().map(value_size).sum());
        if table != "JobsTable" {
            return kb_units(item_size(&request["Key"]) + added);
        }
        let mut sizes = sizes.lock().expect("sizes lock");
        let before = job.and_then(|j| sizes.get(j).copied()).unwrap_or(1024);
        let after = before + added;
        if let Some(j) = job {
            sizes.insert(j.to_owned(), after);
        }
        return 3 * kb_units(after);
    }
    let size = item_size(&request["Item"]);
    if table != "JobsTable" {
        return kb_units(size);
    }
    if let Some(j) = job {
        sizes.lock().expect("sizes lock").insert(j.to_owned(), size);
    }
    let item = &request["Item"];
    kb_units(size)
        + JOBS_INDEXES
            .iter()
            .filter(|(keys, _)| keys.iter().all(|k| item.get(k).is_some()))
            .map(|(_, all)| if *all { kb_units(size) } else { 1 })
            .sum::<u64>()
}

/// The table a DynamoDB request names (the first, for a transaction or batch) and the units it
/// is billed: write units by size (see [`item_units`], a transaction's twice), one read unit per
/// item read.
fn dynamodb_items(op: &str, body: &[u8], sizes: &Sizes) -> (String, u64) {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(table) = json["TableName"].as_str() {
        let table = table_kind(table);
        let units = if op == "dynamodb PutItem" || op == "dynamodb UpdateItem" {
            item_units(&table, op, &json, sizes)
        } else {
            1
        };
        return (table, units);
    }
    let (list, factor) = match op {
        "dynamodb TransactWriteItems" => (&json["TransactItems"], 2),
        "dynamodb TransactGetItems" => (&json["TransactItems"], 2),
        _ => (&json["RequestItems"], 1),
    };
    let mut tables = Vec::new();
    let mut items = 0u64;
    match list {
        serde_json::Value::Array(entries) => {
            for entry in entries {
                let Some((kind, inner)) = entry.as_object().and_then(|o| o.iter().next()) else {
                    items += factor;
                    continue;
                };
                let table = table_kind(inner["TableName"].as_str().unwrap_or_default());
                let op = match kind.as_str() {
                    "Update" => "dynamodb UpdateItem",
                    _ => "dynamodb PutItem",
                };
                items += factor * item_units(&table, op, inner, sizes);
                tables.push(table);
            }
        }
        serde_json::Value::Object(by_table) => {
            for (table, entries) in by_table {
                tables.push(table_kind(table));
                items += entries
                    .as_array()
                    .map_or(entries["Keys"].as_array().map_or(1, Vec::len), Vec::len)
                    as u64;
            }
        }
        _ => items = 1,
    }
    tables.sort();
    tables.dedup();
    (tables.join("+"), items.max(1))
}

/// A table's logical name in the stack (`pbs-bench-JobsTable-1A2B3C` → `JobsTable`).
fn table_kind(name: &str) -> String {
    name.split('-')
        .find(|part| part.ends_with("Table"))
        .unwrap_or(name)
        .to_owned()
}

/// `"<service> <Operation>"` of an AWS request: from `X-Amz-Target` (SQS, DynamoDB: JSON
/// protocols), else from the SigV4 credential scope's service and, for S3, the method and path.
pub fn operation(method: &Method, uri: &Uri, headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some((prefix, op)) = header("x-amz-target").and_then(|t| t.split_once('.')) {
        let service = match prefix {
            p if p.starts_with("DynamoDB") => "dynamodb",
            p if p.starts_with("AmazonSQS") => "sqs",
            p => p,
        };
        return format!("{service} {op}");
    }
    let service = header("authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("s3");
    if service != "s3" {
        return format!("{service} {method}");
    }
    let query = uri.query().unwrap_or("");
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    let object = uri
        .path()
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    let op = match (method.as_str(), object) {
        ("GET", true) => "GetObject",
        ("GET", false) if has("list-type") => "ListObjectsV2",
        ("GET", false) => "ListObjects",
        ("HEAD", true) => "HeadObject",
        ("HEAD", false) => "HeadBucket",
        ("PUT", true) if has("partNumber") => "UploadPart",
        ("PUT", true) if headers.contains_key("x-amz-copy-source") => "CopyObject",
        ("PUT", true) => "PutObject",
        ("PUT", false) => "CreateBucket",
        ("POST", false) if has("delete") => "DeleteObjects",
        ("POST", true) if has("uploads") => "CreateMultipartUpload",
        ("POST", true) if has("uploadId") => "CompleteMultipartUpload",
        ("DELETE", true) => "DeleteObject",
        (m, _) => return format!("s3 {m}"),
    };
    format!("s3 {op}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: &str, uri: &str, headers: &[(&'static str, &str)]) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().unwrap());
        }
        operation(&method.parse().unwrap(), &uri.parse().unwrap(), &map)
    }

    #[test]
    fn requests_are_named_by_service_and_operation() {
        assert_eq!(
            op("POST", "/", &[("x-amz-target", "AmazonSQS.ReceiveMessage")]),
            "sqs ReceiveMessage"
        );
        assert_eq!(
            op(
                "POST",
                "/",
                &[("x-amz-target", "DynamoDB_20120810.UpdateItem")]
            ),
            "dynamodb UpdateItem"
        );
        assert_eq!(op("GET", "/data/a/b.bin", &[]), "s3 GetObject");
        assert_eq!(op("HEAD", "/data/a/b.bin", &[]), "s3 HeadObject");
        assert_eq!(
            op("GET", "/data?list-type=2&prefix=a", &[]),
            "s3 ListObjectsV2"
        );
        assert_eq!(op("GET", "/data/", &[]), "s3 ListObjects");
        assert_eq!(op("PUT", "/logs/x.log", &[]), "s3 PutObject");
        assert_eq!(table_kind("pbs-bench-JobsTable-1A2B3C"), "JobsTable");
        // A queued job (in all three indexes) and a claim of its other file (in ByKey), twice.
        let transact = br#"{"TransactItems": [
            {"Put": {"TableName": "s-JobsTable-1", "Item": {"job_id": {}, "list_pk": {},
                     "created_sk": {}, "key_sk": {}, "waiting_pool": {}}}},
            {"Put": {"TableName": "s-JobsTable-1", "Item": {"job_id": {}, "list_pk": {},
                     "key_sk": {}}}}]}"#;
        let sizes = Sizes::default();
        assert_eq!(
            dynamodb_items("dynamodb TransactWriteItems", transact, &sizes),
            ("JobsTable".to_owned(), 2 * (4 + 2))
        );
        let stats = br#"{"TableName": "s-StatsTable-1", "Key": {}}"#;
        assert_eq!(
            dynamodb_items("dynamodb UpdateItem", stats, &sizes),
            ("StatsTable".to_owned(), 1)
        );
        // A job of 2,500 bytes (its message) is 3 units in the table and in each all-attribute
        // index, one in the keys-only index; an update rewrites it and those two indexes, at its
        // size with the update's values added.
        let message = "m".repeat(2500 - 54);
        let put = format!(
            r#"{{"TableName": "s-JobsTable-1", "Item": {{"job_id": {{"S": "j1"}}, "list_pk": {{"S": "J"}},
                "created_sk": {{"S": "c"}}, "key_sk": {{"S": "k"}}, "waiting_pool": {{"S": "p"}},
                "message": {{"S": "{message}"}}}}}}"#
        );
        let put: serde_json::Value = serde_json::from_str(&put).unwrap();
        assert_eq!(item_size(&put["Item"]), 2500);
        assert_eq!(
            dynamodb_items("dynamodb PutItem", put.to_string().as_bytes(), &sizes),
            ("JobsTable".to_owned(), 3 + 3 + 3 + 1)
        );
        let done = format!(
            r#"{{"TableName": "s-JobsTable-1", "Key": {{"job_id": {{"S": "j1"}}}},
                "ExpressionAttributeValues": {{":r": {{"S": "{}"}}}}}}"#,
            "r".repeat(600)
        );
        assert_eq!(
            dynamodb_items("dynamodb UpdateItem", done.as_bytes(), &sizes),
            ("JobsTable".to_owned(), 3 * 4)
        );
        assert_eq!(
            value_size(
                &serde_json::json!({"M": {"a": {"N": "1234"}, "b": {"L": [{"BOOL": true}]}}})
            ),
            3 + (1 + 3 + 1) + (1 + (3 + 1 + 1) + 1)
        );
        assert_eq!(chunks(10), 1);
        assert_eq!(chunks(64 * 1024 + 1), 2);
        let sts = "AWS4-HMAC-SHA256 Credential=test/20261130/us-east-1/sts/aws4_request, \
                   SignedHeaders=host, Signature=0";
        assert_eq!(op("POST", "/", &[("authorization", sts)]), "sts POST");
    }
}
