//! `/api/v1/templates`: list, create, show, replace, delete, with field-level validation.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use pbs_shared::{PoolName, Template, TemplateId};
use serde_json::{Value, json};

use super::auth::{Principal, Role};
use super::{ApiError, ApiState, ApiStore, RulesDelivery};
use crate::pool_rules::is_rule;
use crate::store::templates::Stored;

fn parse_id(raw: &str) -> Result<TemplateId, ApiError> {
    TemplateId::parse(raw).map_err(|e| ApiError::field("id", e))
}

fn parse_body(body: &[u8]) -> Result<Template, ApiError> {
    let template = Template::from_json(body).map_err(ApiError::BadRequest)?;
    if template.id.as_str() == pbs_shared::transfer::TRANSFER_TEMPLATE {
        return Err(ApiError::field(
            "id",
            "\"transfer\" names the transfers started by hand (POST /api/v1/transfers); choose another id",
        ));
    }
    Ok(template)
}

/// A stored template as JSON; a corrupt one is shown with its problem rather than hidden.
fn stored_json(stored: Stored) -> Value {
    match stored {
        Ok(t) => serde_json::to_value(t).expect("templates serialise"),
        Err((id, reason)) => json!({"id": id, "invalid": reason}),
    }
}

pub async fn list<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let mut all: Vec<Value> = state
        .store
        .templates()
        .await?
        .into_iter()
        .map(stored_json)
        .collect();
    all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!({"templates": all})))
}

/// Republishes the rule documents of the pools that `before` and `after` (the template before and
/// after a change) belong to, when either is a watch or schedule rule.
async fn publish_rules<S: ApiStore>(
    state: &ApiState<S>,
    before: Option<&Template>,
    after: Option<&Template>,
) -> Result<(), ApiError> {
    let mut pools: Vec<&PoolName> = [before, after]
        .into_iter()
        .flatten()
        .filter(|t| is_rule(t))
        .map(|t| &t.destination.pool)
        .collect();
    pools.dedup();
    if pools.is_empty() {
        return Ok(());
    }
    for pool in pools {
        let delivery = state.store.publish_rules(pool).await.map_err(|e| {
            ApiError::Internal(format!(
                "template saved, but its pool's rules were not published (save it again to retry): {e}"
            ))
        })?;
        if delivery == RulesDelivery::NoConfigBucket {
            tracing::warn!("no configuration bucket: watch and schedule rules are not delivered");
            break;
        }
    }
    Ok(())
}

/// A template naming a next step: that step must exist and be a chain step.
async fn check_next<S: ApiStore>(state: &ApiState<S>, template: &Template) -> Result<(), ApiError> {
    let Some(next) = &template.options.next_template else {
        return Ok(());
    };
    match previous(state, next).await? {
        None => Err(ApiError::field(
            "options.next_template",
            format!("template {next} does not exist (create the next step first)"),
        )),
        Some(t) if t.trigger != (pbs_shared::template::Trigger::Chain {}) => Err(ApiError::field(
            "options.next_template",
            format!("template {next} is not a chain step (its trigger type must be \"chain\")"),
        )),
        Some(_) => Ok(()),
    }
}

/// The stored template at `id`, if it is readable.
async fn previous<S: ApiStore>(
    state: &ApiState<S>,
    id: &TemplateId,
) -> Result<Option<Template>, ApiError> {
    Ok(state.store.template(id).await?.and_then(Result::ok))
}

pub async fn create<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require(Role::Admin)?;
    let template = parse_body(&body)?;
    check_next(&state, &template).await?;
    state.store.put_template(&template, true).await?;
    publish_rules(&state, None, Some(&template)).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(template).expect("serialises")),
    ))
}

pub async fn show<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let id = parse_id(&id)?;
    match state.store.template(&id).await? {
        Some(stored) => Ok(Json(stored_json(stored))),
        None => Err(ApiError::NotFound(format!("template {id} not found"))),
    }
}

/// Creates or replaces the template at `{id}`; the body's `id` must be the same.
pub async fn replace<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Admin)?;
    let id = parse_id(&id)?;
    let template = parse_body(&body)?;
    if template.id != id {
        return Err(ApiError::field(
            "id",
            format!(
                "body id {:?} differs from the id in the path {:?}",
                template.id.as_str(),
                id.as_str()
            ),
        ));
    }
    check_next(&state, &template).await?;
    let before = previous(&state, &id).await?;
    state.store.put_template(&template, false).await?;
    publish_rules(&state, before.as_ref(), Some(&template)).await?;
    Ok(Json(serde_json::to_value(template).expect("serialises")))
}

pub async fn remove<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    let id = parse_id(&id)?;
    let before = previous(&state, &id).await?;
    state.store.delete_template(&id).await?;
    publish_rules(&state, before.as_ref(), None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /api/v1/templates/dry-run`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunBody {
    bucket: String,
    key: String,
    /// Object size for the templates' size rules; default 0.
    #[serde(default)]
    size: u64,
}

/// `POST /api/v1/templates/dry-run`: which templates an object created at `bucket`/`key` would
/// match, and where each would deliver it (or why it would be rejected). Changes nothing.
pub async fn dry_run<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let req: DryRunBody = super::json_body(&body)?;
    if req.bucket.is_empty() {
        return Err(ApiError::field("bucket", "bucket is empty"));
    }
    if req.key.is_empty() {
        return Err(ApiError::field("key", "key is empty"));
    }
    let templates: Vec<Template> = state
        .store
        .templates()
        .await?
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let (set, _) = pbs_shared::TemplateSet::compile(templates);
    let now = chrono::Utc::now();
    let event = pbs_shared::plan::ObjectEvent {
        object: pbs_shared::ObjectRef {
            bucket: req.bucket,
            key: req.key,
            size: req.size,
            etag: None,
            version_id: None,
            sequencer: None,
        },
        event_time: now,
    };
    let matches: Vec<Value> = pbs_shared::plan::plan(&set, &event, now)
        .into_iter()
        .map(|planned| match planned {
            pbs_shared::plan::Planned::Dispatch(d) => json!({
                "template_id": d.job.template_id,
                "pool": d.job.pool,
                "endpoint": d.job.destination,
                "dest_path": d.job.files[0].dest_path,
            }),
            pbs_shared::plan::Planned::Reject(r) => json!({
                "template_id": r.template.id,
                "pool": r.template.destination.pool,
                "endpoint": r.template.destination.endpoint,
                "rejected": r.reason,
            }),
        })
        .collect();
    Ok(Json(json!({"matches": matches})))
}
