//! The API through its router and [`ApiStore`], from memory: real tokens signed with the unit-test
//! issuer's key (`tests/fixtures/unit-test-issuer.*`), the template, job and report fixtures of
//! `tests/fixtures/`. What each route answers, what it records, sends and audits.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{DateTime, Duration, Utc};
use pbs_shared::message::ControlMessage;
use pbs_shared::{
    ErrorClass, ExecutorId, JobId, JobMessage, JobState, ObjectRef, PoolName, Template, TemplateId,
};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::auth::Verifier;
use super::{
    ApiState, ApiStore, Artifact, Head, MAX_ARTIFACT_BYTES, Page, RefusedReport, RulesDelivery,
    router,
};
use crate::dispatch::Dispatched;
use crate::flow::Ended;
use crate::store::audit::{AuditEntry, AuditError, Caller};
use crate::store::executors::ExecutorView;
use crate::store::items::{Item, get_s, s};
use crate::store::jobs::{Inserted, JobFilter, JobTableError, JobView, queued_item};
use crate::store::templates::{Stored, TemplateTableError};

const KEY: &str = include_str!("../../../tests/fixtures/unit-test-issuer.key.pem");
const JWKS: &str = include_str!("../../../tests/fixtures/unit-test-issuer.jwks.json");
const S3_TEMPLATE: &str = include_str!("../../../tests/fixtures/template-s3.v1.json");
const WATCH_TEMPLATE: &str = include_str!("../../../tests/fixtures/template-watch.v1.json");
const JOB: &str = include_str!("../../../tests/fixtures/job-message.v1.json");
const REPORT: &str = include_str!("../../../tests/fixtures/delivery-report.v1.json");
const ISSUER: &str = "urn:pbs-rclone:unit-test-issuer";
const AUDIENCE: &str = "pbs-rclone-console";

/// The stack in memory: jobs as the items the jobs table holds (shown through the same
/// [`JobView::from_item`]), and a log of what was sent, published, ended and audited.
#[derive(Default)]
struct Memory {
    jobs: Mutex<BTreeMap<String, Item>>,
    templates: Mutex<BTreeMap<TemplateId, Template>>,
    /// Source objects by (bucket, key): their size.
    objects: Mutex<BTreeMap<(String, String), u64>>,
    artifacts: Mutex<BTreeMap<String, Vec<u8>>>,
    sent: Mutex<Vec<JobMessage>>,
    controls: Mutex<Vec<(PoolName, ExecutorId, ControlMessage)>>,
    ended: Mutex<Vec<(String, JobState)>>,
    published: Mutex<Vec<PoolName>>,
    audit: Mutex<Vec<AuditEntry>>,
    executors: Mutex<Vec<ExecutorView>>,
    /// Endpoint tests: the items as recorded, and the requests sent to pool queues.
    endpoint_tests: Mutex<BTreeMap<String, Item>>,
    tests_sent: Mutex<Vec<pbs_shared::message::EndpointTestRequest>>,
    /// Sending to a pool queue fails while set.
    queue_down: AtomicBool,
}

impl Memory {
    fn set(&self, job: &str, attrs: &[(&str, &str)]) {
        let mut jobs = self.jobs.lock().unwrap();
        let item = jobs.get_mut(job).expect("the job is recorded");
        for (k, v) in attrs {
            item.insert((*k).into(), s(*v));
        }
    }

    fn view(&self, job: &str) -> JobView {
        JobView::from_item(&self.jobs.lock().unwrap()[job])
    }

    fn record(&self, message: &JobMessage) {
        self.jobs.lock().unwrap().insert(
            message.job_id.to_string(),
            queued_item(message, Duration::days(90)),
        );
    }

    fn audited(&self) -> Vec<(String, String, u16, Option<String>)> {
        let all = self.audit.lock().unwrap();
        all.iter()
            .map(|e| (e.method.clone(), e.path.clone(), e.status, e.target.clone()))
            .collect()
    }
}

impl ApiStore for Memory {
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        limit: i32,
        next: Option<&str>,
    ) -> Result<Page<JobView>, JobTableError> {
        let jobs = self.jobs.lock().unwrap();
        if next.is_some_and(|n| !jobs.contains_key(n)) {
            return Err(JobTableError::BadPageToken);
        }
        let matches = |item: &Item, attr: &str, want: &Option<String>| {
            want.as_deref().is_none_or(|w| get_s(item, attr) == Some(w))
        };
        let mut all: Vec<JobView> = jobs
            .values()
            .filter(|i| matches(i, "state", &filter.state))
            .filter(|i| matches(i, "template_id", &filter.template))
            .filter(|i| matches(i, "pool", &filter.pool))
            .map(JobView::from_item)
            .collect();
        all.truncate(limit as usize);
        Ok((all, None))
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>, JobTableError> {
        Ok(self.jobs.lock().unwrap().get(id).map(JobView::from_item))
    }

    async fn insert_queued(&self, job: &JobMessage) -> Result<Inserted, JobTableError> {
        if self.jobs.lock().unwrap().contains_key(job.job_id.as_str()) {
            return Ok(Inserted::Exists { dispatched: true });
        }
        self.record(job);
        Ok(Inserted::New)
    }

    async fn record_endpoint_test(
        &self,
        request: &pbs_shared::message::EndpointTestRequest,
    ) -> Result<(), String> {
        let item = crate::store::endpoint_tests::queued_item(request);
        self.endpoint_tests
            .lock()
            .unwrap()
            .insert(request.test_id.clone(), item);
        Ok(())
    }

    async fn send_endpoint_test(
        &self,
        request: &pbs_shared::message::EndpointTestRequest,
    ) -> Result<bool, String> {
        self.tests_sent.lock().unwrap().push(request.clone());
        Ok(true)
    }

    async fn endpoint_test(&self, id: &str) -> Result<Option<Value>, String> {
        let tests = self.endpoint_tests.lock().unwrap();
        Ok(tests.get(id).map(crate::store::endpoint_tests::view))
    }

    async fn note_relay(
        &self,
        job: &JobId,
        relay: &pbs_shared::transfer::RelayTo,
    ) -> Result<(), JobTableError> {
        let json = serde_json::to_string(relay).unwrap();
        self.set(job.as_str(), &[("relay_json", json.as_str())]);
        Ok(())
    }

    async fn note_origin(
        &self,
        job: &JobId,
        created_by: &str,
        retry_of: Option<&str>,
    ) -> Result<(), JobTableError> {
        self.set(
            job.as_str(),
            &[("origin", "manual"), ("created_by", created_by)],
        );
        if let Some(r) = retry_of {
            self.set(job.as_str(), &[("retry_of", r)]);
        }
        Ok(())
    }

    async fn fail_undispatchable(
        &self,
        job: &JobId,
        class: ErrorClass,
        reason: &str,
    ) -> Result<(), JobTableError> {
        self.set(
            job.as_str(),
            &[
                ("state", "failed"),
                ("error_class", class.as_str()),
                ("error", reason),
            ],
        );
        Ok(())
    }

    async fn cancel_queued(
        &self,
        id: &str,
        by: &str,
        _at: DateTime<Utc>,
    ) -> Result<Option<String>, JobTableError> {
        let state = match self.jobs.lock().unwrap().get(id) {
            None => return Ok(Some(String::new())),
            Some(item) => get_s(item, "state").unwrap_or_default().to_owned(),
        };
        if state != "queued" {
            return Ok(Some(state));
        }
        self.set(id, &[("state", "cancelled"), ("cancel_requested_by", by)]);
        // As the table does: a cancelled job waits no more.
        self.jobs
            .lock()
            .unwrap()
            .get_mut(id)
            .map(|i| i.remove("waiting_pool"));
        Ok(None)
    }

    async fn note_cancel_request(
        &self,
        job: &JobId,
        by: &str,
        _at: DateTime<Utc>,
    ) -> Result<(), JobTableError> {
        self.set(job.as_str(), &[("cancel_requested_by", by)]);
        Ok(())
    }

    async fn templates(&self) -> Result<Vec<Stored>, TemplateTableError> {
        Ok(self
            .templates
            .lock()
            .unwrap()
            .values()
            .cloned()
            .map(Ok)
            .collect())
    }

    async fn template(&self, id: &TemplateId) -> Result<Option<Stored>, TemplateTableError> {
        Ok(self.templates.lock().unwrap().get(id).cloned().map(Ok))
    }

    async fn put_template(
        &self,
        template: &Template,
        create_only: bool,
    ) -> Result<(), TemplateTableError> {
        let mut all = self.templates.lock().unwrap();
        if create_only && all.contains_key(&template.id) {
            return Err(TemplateTableError::Exists(template.id.clone()));
        }
        all.insert(template.id.clone(), template.clone());
        Ok(())
    }

    async fn delete_template(&self, id: &TemplateId) -> Result<(), TemplateTableError> {
        match self.templates.lock().unwrap().remove(id) {
            Some(_) => Ok(()),
            None => Err(TemplateTableError::NotFound(id.clone())),
        }
    }

    async fn publish_rules(&self, pool: &PoolName) -> Result<RulesDelivery, String> {
        self.published.lock().unwrap().push(pool.clone());
        Ok(RulesDelivery::Published)
    }

    async fn artifact(&self, key: &str) -> Result<Artifact, String> {
        let all = self.artifacts.lock().unwrap();
        let bytes = all
            .get(key)
            .cloned()
            .ok_or_else(|| format!("no object {key}"))?;
        Ok(match bytes.len() as u64 {
            n if n > MAX_ARTIFACT_BYTES => Artifact::TooLarge(n),
            _ => Artifact::Bytes(bytes),
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Head, String> {
        if bucket != "pbs-source" {
            return Ok(Head::Forbidden);
        }
        let objects = self.objects.lock().unwrap();
        Ok(match objects.get(&(bucket.to_owned(), key.to_owned())) {
            Some(size) => Head::Found(ObjectRef {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size: *size,
                etag: Some("e1".into()),
                version_id: None,
                sequencer: None,
            }),
            None => Head::Missing,
        })
    }

    async fn send_job(&self, job: &JobMessage) -> Result<Dispatched, String> {
        if self.queue_down.load(Ordering::SeqCst) {
            return Err("SQS is unavailable".into());
        }
        self.sent.lock().unwrap().push(job.clone());
        Ok(Dispatched::Sent)
    }

    async fn send_control(
        &self,
        pool: &PoolName,
        executor: &ExecutorId,
        message: &ControlMessage,
    ) -> Result<(), String> {
        let controls = &mut self.controls.lock().unwrap();
        controls.push((pool.clone(), executor.clone(), message.clone()));
        Ok(())
    }

    async fn after_end(&self, ended: &Ended<'_>, _job: JobView) -> Result<(), String> {
        let all = &mut self.ended.lock().unwrap();
        all.push((ended.job_id.to_string(), ended.state));
        Ok(())
    }

    fn pool_queue(&self, pool: &str) -> String {
        format!("pbs-pool-{pool}")
    }

    /// Every job sent and still waiting is one message; the oldest by creation.
    async fn backlog(&self, pool: &PoolName) -> Result<Option<super::Backlog>, String> {
        let jobs = self.jobs.lock().unwrap();
        let mut waiting: Vec<&Item> = jobs
            .values()
            .filter(|i| get_s(i, "waiting_pool") == Some(pool.as_str()))
            .collect();
        waiting.sort_by_key(|i| get_s(i, "created_sk").unwrap_or_default().to_owned());
        Ok(Some(super::Backlog {
            waiting: waiting.len() as u64,
            oldest_job: waiting.first().map(|i| super::WaitingJob {
                job_id: get_s(i, "job_id").unwrap_or_default().to_owned(),
                created_at: get_s(i, "created_at").unwrap_or_default().to_owned(),
            }),
            ..Default::default()
        }))
    }

    async fn stats(
        &self,
        _scope: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Value>, String> {
        Ok(crate::store::stats::fill(&[], from, to))
    }

    async fn executors(&self, _now: DateTime<Utc>) -> Result<Vec<ExecutorView>, String> {
        Ok(self.executors.lock().unwrap().clone())
    }

    async fn audit(
        &self,
        caller: Caller<'_>,
        at: DateTime<Utc>,
        method: &str,
        path: &str,
        status: u16,
        target: Option<&str>,
    ) -> Result<(), String> {
        self.audit.lock().unwrap().push(AuditEntry {
            at: at.to_rfc3339(),
            principal: caller.name.into(),
            subject: caller.subject.into(),
            role: caller.role.into(),
            method: method.into(),
            path: path.into(),
            status,
            target: target.map(Into::into),
        });
        Ok(())
    }

    async fn refused_reports(&self) -> Result<Vec<RefusedReport>, String> {
        Ok(vec![RefusedReport {
            reason: "the body speaks for pool a but came through the status queue of pool b".into(),
            sent_at: None,
            body: "{}".into(),
        }])
    }

    async fn audit_page(
        &self,
        limit: i32,
        _next: Option<&str>,
    ) -> Result<Page<AuditEntry>, AuditError> {
        let mut all = self.audit.lock().unwrap().clone();
        all.reverse();
        all.truncate(limit as usize);
        Ok((all, None))
    }
}

/// A token of the unit-test issuer for `name` in `group`.
fn token(group: &str, name: &str) -> String {
    let now = Utc::now().timestamp();
    sign(&json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("test|{name}"), "username": name,
        "cognito:groups": [group], "iat": now, "exp": now + 600,
    }))
}

/// `claims` signed by the unit-test issuer.
fn sign(claims: &Value) -> String {
    let mut head = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    head.kid = Some("unit-test-issuer".into());
    let der: String = KEY.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, der)
        .expect("the fixture key is PEM");
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&der);
    jsonwebtoken::encode(&head, claims, &key).expect("signs")
}

struct Api {
    store: std::sync::Arc<Memory>,
    router: axum::Router,
}

impl Api {
    fn new(store: Memory) -> Self {
        let auth = Verifier::new(ISSUER, Some(AUDIENCE), JWKS).expect("the fixture JWKS");
        let state = ApiState::new(store, auth);
        Self {
            store: state.store.clone(),
            router: router(state),
        }
    }

    /// `method path` as `group` (`None`: no token) with `body`: the status and the JSON answer
    /// (or the text, as a JSON string).
    async fn call(
        &self,
        group: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(g) = group {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", token(g, "ana")));
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let res = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Some("viewer"), Method::GET, path, None).await
    }

    async fn post(&self, group: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Some(group), Method::POST, path, Some(body)).await
    }
}

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixtures are JSON")
}

fn template(text: &str) -> Template {
    Template::from_json(text.as_bytes()).expect("fixture templates are valid")
}

/// The API with the S3 template fixture stored and `keys` in its source bucket.
fn with_objects(keys: &[&str]) -> Api {
    let store = Memory::default();
    let t = template(S3_TEMPLATE);
    store.templates.lock().unwrap().insert(t.id.clone(), t);
    for k in keys {
        let objects = &mut store.objects.lock().unwrap();
        objects.insert(("pbs-source".into(), (*k).into()), 42);
    }
    Api::new(store)
}

/// The job message fixture, recorded in `state`.
fn with_fixture_job(api: &Api, state: &str) -> String {
    let message: JobMessage = serde_json::from_str(JOB).unwrap();
    api.store.record(&message);
    api.store.set(message.job_id.as_str(), &[("state", state)]);
    message.job_id.to_string()
}

fn field(answer: &Value) -> &str {
    answer["error"]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn every_route_needs_a_verified_token_and_the_role_it_names() {
    let api = with_objects(&[]);
    let (status, answer) = api.call(None, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"]["code"], "unauthorized");

    let forged = format!("{}x", token("admin", "eve"));
    let req = Request::get("/api/v1/templates")
        .header(header::AUTHORIZATION, format!("Bearer {forged}"))
        .body(Body::empty())
        .unwrap();
    let res = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));

    let (status, _) = api
        .call(Some("nobody"), Method::GET, "/api/v1/jobs", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a token in no PBS group");
    let (status, answer) = api
        .post("viewer", "/api/v1/templates", fixture(S3_TEMPLATE))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin")
    );
    let (status, _) = api.get("/api/v1/jobs").await;
    assert_eq!(status, StatusCode::OK);
    // The refused change is audited with its answer; reads are not.
    assert_eq!(
        api.store.audited(),
        vec![("POST".into(), "/api/v1/templates".into(), 403, None)]
    );
    assert!(api.store.audit.lock().unwrap()[0].principal == "ana");
}

#[test]
fn keys_fetched_in_the_clear_are_refused_unless_local() {
    let e = Verifier::new(ISSUER, None, "http://issuer.example.com/jwks.json").err();
    assert!(e.is_some_and(|e| e.contains("not HTTPS")));
    assert!(Verifier::new(ISSUER, None, "http://127.0.0.1:9000/jwks.json").is_ok());
    assert!(Verifier::new(ISSUER, None, "https://issuer.example.com/jwks.json").is_ok());
}

#[tokio::test]
async fn a_caller_is_named_by_the_tokens_email_before_its_user_name() {
    let api = with_objects(&[]);
    let now = Utc::now().timestamp();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "5f2c-uuid", "cognito:username": "5f2c-uuid",
        "email": "ada@example.com", "cognito:groups": ["viewer"], "iat": now, "exp": now + 600,
    });
    let req = Request::get("/api/v1/me")
        .header(header::AUTHORIZATION, format!("Bearer {}", sign(&claims)))
        .body(Body::empty())
        .unwrap();
    let res = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let me: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(me["name"], "ada@example.com", "{me}");
    assert_eq!(me["subject"], "5f2c-uuid", "{me}");
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let api = with_objects(&[]);
    let now = Utc::now().timestamp();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "test|early", "cognito:groups": ["admin"],
        "nbf": now + 600, "exp": now + 1200,
    });
    let req = Request::get("/api/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {}", sign(&claims)))
        .body(Body::empty())
        .unwrap();
    let res = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn templates_are_checked_field_by_field_and_a_rule_change_publishes_its_pool() {
    let api = Api::new(Memory::default());
    let mut broken = fixture(S3_TEMPLATE);
    broken["destination"]["path"] = json!("../{key}");
    let (status, answer) = api.post("admin", "/api/v1/templates", broken).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(field(&answer), "destination.path");

    let mut chained = fixture(S3_TEMPLATE);
    chained["options"]["next_template"] = json!("archive");
    let (status, answer) = api.post("admin", "/api/v1/templates", chained).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(field(&answer), "options.next_template");

    let (status, _) = api
        .post("admin", "/api/v1/templates", fixture(S3_TEMPLATE))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api
        .post("admin", "/api/v1/templates", fixture(S3_TEMPLATE))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "ids are unique");
    assert!(
        api.store.published.lock().unwrap().is_empty(),
        "an S3 template is no executor rule"
    );

    let (status, _) = api
        .post("admin", "/api/v1/templates", fixture(WATCH_TEMPLATE))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        *api.store.published.lock().unwrap(),
        vec![PoolName::parse("site-b").unwrap()]
    );

    let (status, answer) = api
        .call(
            Some("admin"),
            Method::PUT,
            "/api/v1/templates/other",
            Some(fixture(WATCH_TEMPLATE)),
        )
        .await;
    assert_eq!((status, field(&answer)), (StatusCode::BAD_REQUEST, "id"));
    let (status, _) = api
        .call(
            Some("admin"),
            Method::DELETE,
            "/api/v1/templates/scans-out",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.store.published.lock().unwrap().len(),
        2,
        "deleting a rule republishes"
    );
    let (status, _) = api.get("/api/v1/templates/scans-out").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, answer) = api.get("/api/v1/templates").await;
    assert_eq!(answer["templates"][0]["id"], "media-in");
}

#[tokio::test]
async fn a_manual_job_checks_every_key_records_who_made_it_and_goes_to_its_pool() {
    let api = with_objects(&["incoming/a.mov", "incoming/b c.mov"]);
    let body = json!({"template_id": "media-in", "keys": ["incoming/a.mov", "incoming/gone.mov"]});
    let (status, answer) = api.post("operator", "/api/v1/jobs", body).await;
    assert_eq!(
        (status, field(&answer)),
        (StatusCode::BAD_REQUEST, "keys[1]")
    );
    let body = json!({"template_id": "media-in", "keys": ["outgoing/x.mov"]});
    let (_, answer) = api.post("operator", "/api/v1/jobs", body).await;
    assert_eq!(
        field(&answer),
        "keys[0]",
        "a key the template does not take"
    );
    let body =
        json!({"template_id": "media-in", "keys": ["incoming/a.mov"], "bucket": "elsewhere"});
    let (_, answer) = api.post("operator", "/api/v1/jobs", body).await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not be read")
    );
    assert!(
        api.store.jobs.lock().unwrap().is_empty(),
        "nothing recorded"
    );

    let body = json!({"template_id": "media-in", "keys": ["incoming/a.mov", "incoming/b c.mov"]});
    let (status, answer) = api.post("operator", "/api/v1/jobs", body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("manual-"));
    assert_eq!(answer["state"], "queued");
    assert_eq!(answer["created_by"], "ana");
    assert_eq!(answer["origin"], "manual");
    assert_eq!(answer["files"][1]["dest_path"], "media/incoming/b c.mov");
    let sent = api.store.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].job_id.as_str(), sent[0].files.len()),
        (id.as_str(), 2)
    );
    assert_eq!(sent[0].pool.as_str(), "default");
    let audited = api.store.audited();
    assert_eq!(
        audited.last().unwrap(),
        &("POST".into(), "/api/v1/jobs".into(), 201, Some(id))
    );
}

#[tokio::test]
async fn a_manual_job_that_cannot_be_sent_is_failed_not_left_queued() {
    let api = with_objects(&["incoming/a.mov"]);
    api.store.queue_down.store(true, Ordering::SeqCst);
    let body = json!({"template_id": "media-in", "keys": ["incoming/a.mov"]});
    let (status, answer) = api.post("operator", "/api/v1/jobs", body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !answer.to_string().contains("SQS"),
        "internal details stay in the log: {answer}"
    );
    let jobs = api.store.jobs.lock().unwrap();
    let job = JobView::from_item(jobs.values().next().expect("the job is recorded"));
    assert_eq!(job.state, "failed");
    assert_eq!(job.error_class.as_deref(), Some("retryable"));
}

#[tokio::test]
async fn retry_repeats_only_a_failed_or_cancelled_job_and_links_the_new_one() {
    let api = with_objects(&["incoming/a b+c%.txt"]);
    let id = with_fixture_job(&api, "succeeded");
    let (status, _) = api
        .post("operator", &format!("/api/v1/jobs/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    api.store.set(&id, &[("state", "failed")]);
    let (status, answer) = api
        .post("operator", &format!("/api/v1/jobs/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["retry_of"], id.as_str());
    assert_eq!(answer["files"][0]["key"], "incoming/a b+c%.txt");
    assert_eq!(api.store.sent.lock().unwrap().len(), 1);
    let (status, _) = api
        .post("viewer", &format!("/api/v1/jobs/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn cancel_ends_a_queued_job_at_once_and_asks_a_running_jobs_executor() {
    let api = with_objects(&[]);
    let id = with_fixture_job(&api, "queued");
    let cancel = format!("/api/v1/jobs/{id}/cancel");
    let (status, answer) = api.post("operator", &cancel, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(api.store.view(&id).state, "cancelled");
    assert_eq!(
        *api.store.ended.lock().unwrap(),
        vec![(id.clone(), JobState::Cancelled)]
    );
    let (status, answer) = api.post("operator", &cancel, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already cancelled")
    );

    api.store
        .set(&id, &[("state", "running"), ("executor_id", "site-a-1")]);
    let (status, answer) = api.post("operator", &cancel, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["executor_id"], "site-a-1");
    let controls = api.store.controls.lock().unwrap().clone();
    assert_eq!(controls.len(), 1);
    assert_eq!(
        (controls[0].0.as_str(), controls[0].1.as_str()),
        ("default", "site-a-1")
    );
    assert!(
        matches!(&controls[0].2, ControlMessage::Cancel(c) if c.job_id.as_str() == id && c.requested_by == "ana")
    );
    assert_eq!(
        api.store.view(&id).cancel_requested_by.as_deref(),
        Some("ana")
    );

    let (status, _) = api
        .post("operator", "/api/v1/jobs/ev-0123/cancel", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = api
        .post("operator", "/api/v1/jobs/..%2Fx/cancel", json!({}))
        .await;
    assert_eq!((status, field(&answer)), (StatusCode::BAD_REQUEST, "id"));
}

#[tokio::test]
async fn a_report_serves_only_the_jobs_own_rows_as_json_or_csv() {
    let api = with_objects(&[]);
    let id = with_fixture_job(&api, "succeeded");
    let (status, _) = api.get(&format!("/api/v1/jobs/{id}/report")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no report yet");
    api.store
        .set(&id, &[("report_key", "reports/default/x/1.json")]);
    api.store.artifacts.lock().unwrap().insert(
        "reports/default/x/1.json".into(),
        REPORT.as_bytes().to_vec(),
    );

    let (status, answer) = api.get(&format!("/api/v1/jobs/{id}/report")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let files = answer["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "the batch's other job's row is not served");
    assert_eq!(files[0]["md5"], "9e107d9d372bb6826bd81d3542a419d6");
    let (status, csv) = api
        .get(&format!("/api/v1/jobs/{id}/report?format=csv"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let csv = csv.as_str().unwrap();
    assert_eq!(csv.lines().count(), 2, "a header and one row: {csv}");
    assert!(csv.contains("a b+c%.txt") && !csv.contains("other.txt"));
    let (status, answer) = api
        .get(&format!("/api/v1/jobs/{id}/report?format=xml"))
        .await;
    assert_eq!(
        (status, field(&answer)),
        (StatusCode::BAD_REQUEST, "format")
    );
}

#[tokio::test]
async fn list_parameters_are_checked_and_filters_apply() {
    let api = with_objects(&[]);
    let id = with_fixture_job(&api, "failed");
    for (query, named) in [
        ("state=lost", "state"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("since=yesterday", "since"),
        ("colour=red", "query"),
        ("next=nonsense", "next"),
        ("key_prefix=", "key_prefix"),
        ("key_prefix=a%01b", "key_prefix"),
    ] {
        let (status, answer) = api.get(&format!("/api/v1/jobs?{query}")).await;
        assert_eq!(
            (status, field(&answer)),
            (StatusCode::BAD_REQUEST, named),
            "{query}"
        );
    }
    let (_, answer) = api.get("/api/v1/jobs?state=failed&pool=default").await;
    assert_eq!(answer["jobs"][0]["job_id"], id.as_str());
    let (_, answer) = api.get("/api/v1/jobs?state=queued").await;
    assert_eq!(answer["jobs"], json!([]));
}

#[tokio::test]
async fn a_flow_shows_every_step_of_a_chain_in_order() {
    let api = with_objects(&[]);
    let first = with_fixture_job(&api, "succeeded");
    let mut message: JobMessage = serde_json::from_str(JOB).unwrap();
    for (id, parent) in [("chain-2", first.as_str()), ("chain-3", "chain-2")] {
        message.job_id = JobId::parse(id).unwrap();
        api.store.record(&message);
        api.store.set(id, &[("parent_job", parent)]);
        api.store.set(parent, &[("next_job", id)]);
    }
    let (status, answer) = api.get("/api/v1/jobs/chain-2/flow").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = answer["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), "chain-2", "chain-3"]);
}

#[tokio::test]
async fn refused_reports_are_shown_to_admins_only() {
    let api = Api::new(Memory::default());
    let (status, _) = api.get("/api/v1/refused-reports").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "viewers do not see report bodies"
    );
    let (status, answer) = api
        .call(Some("admin"), Method::GET, "/api/v1/refused-reports", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let reason = answer["reports"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("came through the status queue of pool b"),
        "{answer}"
    );
}

#[tokio::test]
async fn pools_gather_their_executors_and_templates() {
    let store = Memory::default();
    let t = template(WATCH_TEMPLATE);
    store.templates.lock().unwrap().insert(t.id.clone(), t);
    store.executors.lock().unwrap().extend([
        executor("b-1", "site-b", true),
        executor("b-2", "site-b", false),
        executor("a-1", "default", true),
    ]);
    let api = Api::new(store);
    let (_, answer) = api.get("/api/v1/pools").await;
    let b = answer["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == "site-b")
        .expect("pool site-b");
    assert_eq!(b["online"], 1);
    assert_eq!(b["executors"], json!(["b-1", "b-2"]));
    assert_eq!(b["templates"], json!(["scans-out"]));
    assert_eq!(b["queue"], "pbs-pool-site-b");
    assert_eq!(b["backlog"]["waiting"], 0, "{b}");
    assert_eq!(b["backlog"]["oldest_job"], Value::Null, "{b}");
}

#[tokio::test]
async fn a_pools_backlog_names_its_oldest_waiting_job_until_it_leaves_the_queue() {
    let api = with_objects(&[]);
    let mut message: JobMessage = serde_json::from_str(JOB).unwrap();
    let pool = message.pool.to_string();
    let start = Utc::now() - Duration::minutes(10);
    for (i, id) in ["older", "newer"].iter().enumerate() {
        message.job_id = JobId::parse(*id).unwrap();
        message.created_at = start + Duration::minutes(i as i64);
        api.store.record(&message);
    }
    let backlog = |answer: &Value| {
        answer["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pool"] == pool.as_str())
            .map(|p| p["backlog"].clone())
            .expect("the jobs' pool is listed")
    };
    let (_, answer) = api.get("/api/v1/pools").await;
    let b = backlog(&answer);
    assert_eq!(b["waiting"], 2, "{b}");
    assert_eq!(b["oldest_job"]["job_id"], "older", "{b}");
    let age = b["oldest_job"]["age_seconds"].as_i64().unwrap();
    assert!((600..700).contains(&age), "{b}");
    let (status, answer) = api
        .post("operator", "/api/v1/jobs/older/cancel", json!(null))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, answer) = api.get("/api/v1/pools").await;
    assert_eq!(backlog(&answer)["oldest_job"]["job_id"], "newer");
}

fn executor(id: &str, pool: &str, online: bool) -> ExecutorView {
    ExecutorView {
        executor_id: id.into(),
        pool: Some(pool.into()),
        version: None,
        last_seen: None,
        heartbeat_seconds: 60,
        running_jobs: None,
        silent_seconds: None,
        online,
        endpoints: Vec::new(),
    }
}

/// An executor of `pool` publishing `endpoints` as `(name, type, cloud)`.
fn site(id: &str, pool: &str, endpoints: &[(&str, &str, &str)]) -> ExecutorView {
    let mut e = executor(id, pool, true);
    e.endpoints = endpoints
        .iter()
        .map(|(name, kind, cloud)| pbs_shared::message::OfferedEndpoint {
            name: pbs_shared::EndpointName::parse(*name).unwrap(),
            kind: (*kind).into(),
            cloud: (*cloud).into(),
        })
        .collect();
    e
}

fn transfer(source: &str, dest: &str, mode: &str) -> Value {
    json!({
        "source": {"pool": "site-b", "endpoint": source, "folder": "/drop/2026/", "include": ["**/*.csv"]},
        "destination": {"pool": "site-b", "endpoint": dest, "folder": "in"},
        "mode": mode,
    })
}

#[tokio::test]
async fn a_transfer_names_endpoints_its_pool_publishes_open_to_what_it_does() {
    let store = Memory::default();
    store.executors.lock().unwrap().extend([
        site(
            "b-1",
            "site-b",
            &[
                ("partner-sftp", "sftp", "read-write"),
                ("nas", "smb", "write"),
            ],
        ),
        site("a-1", "default", &[("vault", "local", "read-write")]),
    ]);
    let api = Api::new(store);
    let refused = |answer: &Value| answer["error"]["message"].as_str().unwrap_or("").to_owned();

    let (status, _) = api
        .post(
            "viewer",
            "/api/v1/transfers",
            transfer("partner-sftp", "nas", "copy"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a viewer starts nothing");
    let (status, answer) = api
        .post(
            "operator",
            "/api/v1/transfers",
            transfer("vault", "nas", "copy"),
        )
        .await;
    assert_eq!(
        (status, field(&answer)),
        (StatusCode::BAD_REQUEST, "source.endpoint")
    );
    assert!(refused(&answer).contains("no executor of pool site-b publishes an endpoint named vault (published: nas, partner-sftp)"), "{answer}");
    let (_, answer) = api
        .post(
            "operator",
            "/api/v1/transfers",
            transfer("nas", "partner-sftp", "copy"),
        )
        .await;
    assert_eq!(field(&answer), "source.endpoint");
    assert!(
        refused(&answer).contains("may not be read by the cloud (its site set cloud = \"write\""),
        "{answer}"
    );
    let (_, answer) = api
        .post(
            "operator",
            "/api/v1/transfers",
            transfer("partner-sftp", "nas", "sync"),
        )
        .await;
    assert_eq!(
        field(&answer),
        "destination.endpoint",
        "a sync deletes at its destination: {answer}"
    );
    // Between pools: the destination is checked against its own pool's endpoints, and only a
    // copy crosses sites.
    let mut other_pool = transfer("partner-sftp", "nas", "copy");
    other_pool["destination"]["pool"] = json!("default");
    let (_, answer) = api.post("operator", "/api/v1/transfers", other_pool).await;
    assert_eq!(field(&answer), "destination.endpoint", "{answer}");
    assert!(
        refused(&answer).contains("pool default publishes an endpoint named nas"),
        "{answer}"
    );
    let mut moved = transfer("partner-sftp", "vault", "move");
    moved["destination"]["pool"] = json!("default");
    let (_, answer) = api.post("operator", "/api/v1/transfers", moved).await;
    assert_eq!(field(&answer), "mode", "{answer}");
    let mut inside = transfer("partner-sftp", "partner-sftp", "copy");
    inside["destination"]["folder"] = json!("drop/2026/copy");
    let (_, answer) = api.post("operator", "/api/v1/transfers", inside).await;
    assert_eq!(
        field(&answer),
        "destination.folder",
        "a folder into itself: {answer}"
    );
    let mut bad = transfer("partner-sftp", "nas", "copy");
    bad["source"]["folder"] = json!("../etc");
    let (_, answer) = api.post("operator", "/api/v1/transfers", bad).await;
    assert_eq!(field(&answer), "source.folder");
    assert!(
        api.store.sent.lock().unwrap().is_empty(),
        "nothing was queued"
    );

    let (status, answer) = api
        .post(
            "operator",
            "/api/v1/transfers",
            transfer("partner-sftp", "nas", "move"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tr-"), "{id}");
    assert_eq!(answer["created_by"], "ana");
    assert_eq!(answer["transfer"]["folder"], "drop/2026");
    assert_eq!(answer["transfer"]["mode"], "move");
    let sent = api.store.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let folder = sent[0].folder.as_ref().expect("a folder transfer");
    assert_eq!(
        (folder.folder.as_str(), folder.dest_folder.as_str()),
        ("drop/2026", "in")
    );
    assert_eq!(folder.include, ["**/*.csv"]);
    assert!(
        sent[0].files.is_empty(),
        "the executor lists the folder when it runs"
    );
    assert_eq!(
        api.store.audited().last().unwrap(),
        &("POST".into(), "/api/v1/transfers".into(), 201, Some(id))
    );
}

#[tokio::test]
async fn a_transfer_between_pools_stages_the_folder_and_keeps_where_it_goes_next() {
    let store = Memory::default();
    store.executors.lock().unwrap().extend([
        site("b-1", "site-b", &[("partner-sftp", "sftp", "read")]),
        site("a-1", "default", &[("vault", "local", "write")]),
    ]);
    let api = Api::new(store);
    let mut body = transfer("partner-sftp", "vault", "copy");
    body["destination"]["pool"] = json!("default");
    body["delivery"] = json!({"verify": "hash"});
    let (status, answer) = api.post("operator", "/api/v1/transfers", body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let sent = api.store.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "one step now; the second when it succeeds");
    assert_eq!(
        (sent[0].pool.as_str(), sent[0].destination.as_str()),
        ("site-b", "staging")
    );
    assert_eq!(
        sent[0].folder.as_ref().unwrap().dest_folder,
        "",
        "staged under the job's own prefix"
    );
    assert_eq!(answer["relay"]["pool"], "default", "{answer}");
    assert_eq!(answer["relay"]["endpoint"], "vault");
    assert_eq!(answer["relay"]["folder"], "in");
    assert_eq!(answer["relay"]["delivery"]["verify"], "hash");
}

#[tokio::test]
async fn a_sync_is_limited_to_a_hundred_deletes_unless_it_says_otherwise() {
    let store = Memory::default();
    store.executors.lock().unwrap().push(site(
        "b-1",
        "site-b",
        &[
            ("partner-sftp", "sftp", "read"),
            ("nas", "smb", "read-write"),
        ],
    ));
    let api = Api::new(store);
    let (status, answer) = api
        .post(
            "operator",
            "/api/v1/transfers",
            transfer("partner-sftp", "nas", "sync"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let mut own = transfer("partner-sftp", "nas", "sync");
    own["max_delete"] = json!(3);
    own["dry_run"] = json!(true);
    let (status, answer) = api.post("operator", "/api/v1/transfers", own).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let sent = api.store.sent.lock().unwrap().clone();
    let limits: Vec<_> = sent
        .iter()
        .map(|j| j.folder.as_ref().unwrap().max_delete)
        .collect();
    assert_eq!(limits, [Some(100), Some(3)]);
    assert!(sent[1].folder.as_ref().unwrap().dry_run);
}

#[tokio::test]
async fn saved_transfers_and_rule_templates_run_now_as_jobs_of_their_template() {
    let store = Memory::default();
    store.executors.lock().unwrap().push(site(
        "b-1",
        "site-b",
        &[
            ("partner-sftp", "sftp", "read-write"),
            ("nas", "smb", "read-write"),
        ],
    ));
    let api = Api::new(store);
    let saved = |path: &str, mode: &str, source_pool: Option<&str>| {
        let mut trigger =
            json!({"type": "manual", "source": "partner-sftp", "folder": "exports", "mode": mode});
        if let Some(p) = source_pool {
            trigger["source_pool"] = json!(p);
        }
        json!({"id": "nightly-pull", "trigger": trigger,
               "destination": {"pool": "site-b", "endpoint": "nas", "path": path},
               "options": {"delivery": {"verify": "hash"}}})
    };
    let (status, answer) = api
        .post(
            "admin",
            "/api/v1/templates",
            saved("in/{yyyy}", "copy", None),
        )
        .await;
    assert_eq!(
        (status, field(&answer)),
        (StatusCode::BAD_REQUEST, "destination.path"),
        "{answer}"
    );
    let (_, answer) = api
        .post(
            "admin",
            "/api/v1/templates",
            saved("in", "sync", Some("default")),
        )
        .await;
    assert_eq!(field(&answer), "trigger.mode", "{answer}");
    let mut reserved = saved("in", "copy", None);
    reserved["id"] = json!("transfer");
    let (_, answer) = api.post("admin", "/api/v1/templates", reserved).await;
    assert_eq!(field(&answer), "id", "{answer}");
    let (status, answer) = api
        .post("admin", "/api/v1/templates", saved("in", "sync", None))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");

    let (status, _) = api
        .post("viewer", "/api/v1/templates/nightly-pull/run", json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = api
        .post("operator", "/api/v1/templates/nightly-pull/run", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["template_id"], "nightly-pull");
    let sent = api.store.sent.lock().unwrap().clone();
    let spec = sent[0].folder.as_ref().unwrap();
    assert_eq!(
        (spec.folder.as_str(), spec.dest_folder.as_str()),
        ("exports", "in")
    );
    assert_eq!(spec.max_delete, Some(100), "a sync's default delete limit");
    assert_eq!(
        sent[0].delivery.verify,
        pbs_shared::Verify::Hash,
        "the template's options"
    );

    // A schedule runs now as a copy of its folder to the folder of its path.
    let schedule = |path: &str| {
        json!({"id": "hourly", "trigger": {"type": "schedule", "cron": "0 * * * *", "source": "partner-sftp", "folder": "drop", "include": ["*.csv"]},
               "destination": {"pool": "site-b", "endpoint": "nas", "path": path}})
    };
    let (status, answer) = api
        .post("admin", "/api/v1/templates", schedule("landed/{key}"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, answer) = api
        .post("operator", "/api/v1/templates/hourly/run", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let sent = api.store.sent.lock().unwrap().clone();
    let spec = sent[1].folder.as_ref().unwrap();
    assert_eq!(
        (
            spec.folder.as_str(),
            spec.dest_folder.as_str(),
            spec.include.as_slice()
        ),
        ("drop", "landed", ["*.csv".to_owned()].as_slice())
    );
    let (status, _) = api
        .call(
            Some("admin"),
            Method::PUT,
            "/api/v1/templates/hourly",
            Some(schedule("{yyyy}/{key}")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = api
        .post("operator", "/api/v1/templates/hourly/run", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"{yyyy}/{key}\""),
        "{answer}"
    );
    let (status, _) = api
        .post("operator", "/api/v1/templates/no-such/run", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_admin_asks_a_pool_to_test_an_endpoint_it_publishes() {
    let store = Memory::default();
    store
        .executors
        .lock()
        .unwrap()
        .push(site("b-1", "site-b", &[("nas", "smb", "write")]));
    let api = Api::new(store);
    let path = "/api/v1/pools/site-b/endpoints/nas/test";
    let (status, _) = api.post("operator", path, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins only");
    let (status, answer) = api
        .post(
            "admin",
            "/api/v1/pools/site-b/endpoints/vault/test",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(published: nas)"),
        "{answer}"
    );
    let (status, answer) = api.post("admin", path, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        (answer["state"].as_str(), answer["requested_by"].as_str()),
        (Some("queued"), Some("ana"))
    );
    let id = answer["test_id"].as_str().unwrap().to_owned();
    let sent = api.store.tests_sent.lock().unwrap().clone();
    assert_eq!(
        (sent[0].pool.as_str(), sent[0].endpoint.as_str()),
        ("site-b", "nas")
    );
    let body = serde_json::to_value(&sent[0]).unwrap();
    assert_eq!(
        body["kind"], "endpoint_test",
        "told apart from jobs on the pool queue"
    );
    assert!(
        pbs_shared::message::EndpointTestRequest::recognise(&body.to_string())
            .unwrap()
            .is_ok()
    );
    assert!(
        pbs_shared::message::EndpointTestRequest::recognise(JOB).is_none(),
        "a job is not a test"
    );
    let (status, shown) = api.get(&format!("/api/v1/endpoint-tests/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["endpoint"], "nas");
    let (status, _) = api.get("/api/v1/endpoint-tests/et-none").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.store.audited().last().unwrap(),
        &("POST".into(), path.into(), 202, Some(id))
    );
}

#[tokio::test]
async fn the_console_and_its_files_are_served_at_both_addresses_with_their_type_and_policy() {
    let api = with_objects(&[]);
    let page = ("text/html", "<title>PBS Rclone</title>");
    let script = ("text/javascript", "\"use strict\"");
    let style = ("text/css", ":root");
    let chart = ("text/javascript", "uPlot");
    let chart_style = ("text/css", ".uplot");
    let licence = ("text/plain", "The MIT License");
    for (path, (kind, text)) in [
        ("/console", page),
        ("/console/", page),
        ("/console.js", script),
        ("/console/console.js", script),
        ("/console.css", style),
        ("/console/console.css", style),
        ("/vendor/uplot.min.js", chart),
        ("/console/vendor/uplot.min.js", chart),
        ("/vendor/uplot.min.css", chart_style),
        ("/console/vendor/uplot.min.css", chart_style),
        ("/vendor/LICENSE-uPlot.txt", licence),
        ("/console/vendor/LICENSE-uPlot.txt", licence),
    ] {
        let res = api
            .router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let header = |name: header::HeaderName| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header(header::CONTENT_TYPE).starts_with(kind), "{path}");
        assert!(
            header(header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"),
            "{path}"
        );
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains(text), "{path}");
    }
}
