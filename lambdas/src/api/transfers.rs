//! `POST /api/v1/transfers`: a person moves a folder between two endpoints of a pool, now. The
//! job names the folder; an executor of the pool lists it when the job runs
//! ([`FolderTransfer`]). What the sites publish with their heartbeats decides what may be
//! asked: an endpoint no executor of the pool has, or one its site keeps from the cloud, is a 400
//! naming it, before anything is queued.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use pbs_shared::message::{OfferedEndpoint, V1};
use pbs_shared::transfer::{FolderTransfer, TransferMode};
use pbs_shared::{
    Bandwidth, Delivery, EndpointName, JobId, JobMessage, JobSource, PoolName, RetryPolicy,
    TemplateId,
};
use serde::Deserialize;

use super::auth::{Principal, Role};
use super::error::json_body;
use super::jobs::{created, find, send_or_fail};
use super::{ApiError, ApiState, ApiStore};
use crate::store::jobs::Inserted;

/// The template id of transfers started by hand: a name templates may not take.
pub const TRANSFER_TEMPLATE: &str = "transfer";

/// A sync deletes at most this many files unless the request says otherwise.
pub const DEFAULT_MAX_DELETE: u64 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    pool: PoolName,
    endpoint: EndpointName,
    #[serde(default)]
    folder: String,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default = "yes")]
    recursive: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Destination {
    pool: PoolName,
    endpoint: EndpointName,
    /// Folder under the endpoint's root; files keep their path relative to the source folder.
    #[serde(default)]
    folder: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    source: Source,
    destination: Destination,
    #[serde(default)]
    mode: TransferMode,
    #[serde(default)]
    max_delete: Option<u64>,
    #[serde(default)]
    backup_folder: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    delivery: Delivery,
    #[serde(default)]
    retry: RetryPolicy,
    #[serde(default)]
    bandwidth: Option<Bandwidth>,
}

pub async fn create<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require(Role::Operator)?;
    let req: TransferBody = json_body(&body)?;
    let spec = folder_transfer(&req)?;
    if req.source.pool != req.destination.pool {
        return Err(ApiError::field(
            "destination.pool",
            format!(
                "a transfer runs within one pool; pool {} cannot reach pool {}'s endpoints (relay it through a chain of templates with a staging step: docs/flows.md#relays)",
                req.source.pool, req.destination.pool
            ),
        ));
    }
    if req.source.endpoint == req.destination.endpoint
        && (within(&spec.folder, &spec.dest_folder) || within(&spec.dest_folder, &spec.folder))
    {
        return Err(ApiError::field(
            "destination.folder",
            format!(
                "{:?} and the source folder {:?} of endpoint {} hold one another",
                spec.dest_folder, spec.folder, req.source.endpoint
            ),
        ));
    }
    let offered = offered(&state, &req.source.pool).await?;
    check_offered(&offered, &req, spec.mode)?;
    let message = JobMessage {
        v: V1,
        job_id: JobId::parse(format!("tr-{}", uuid::Uuid::new_v4().simple()))
            .expect("transfer job ids are valid"),
        template_id: TemplateId::parse(TRANSFER_TEMPLATE).expect("a valid template id"),
        pool: req.source.pool.clone(),
        source: JobSource::Endpoint {
            endpoint: req.source.endpoint.clone(),
        },
        files: Vec::new(),
        destination: req.destination.endpoint.clone(),
        retry: req.retry,
        delivery: req.delivery,
        origin: None,
        bandwidth: req.bandwidth.clone(),
        created_at: Utc::now(),
        refused: Vec::new(),
        folder: Some(spec),
    };
    if state.store.insert_queued(&message).await? != Inserted::New {
        return Err(ApiError::Internal(format!(
            "job id {} already used",
            message.job_id
        )));
    }
    state
        .store
        .note_origin(&message.job_id, &principal.name, None)
        .await?;
    send_or_fail(&state, &message).await?;
    tracing::info!(job_id = %message.job_id, principal = %principal.name, pool = %message.pool, mode = req.mode.as_str(), dry_run = req.dry_run, "transfer started");
    Ok(created(find(&state, message.job_id.as_str()).await?))
}

/// The request's folder transfer, checked field by field.
fn folder_transfer(req: &TransferBody) -> Result<FolderTransfer, ApiError> {
    let spec = FolderTransfer {
        folder: req.source.folder.trim_matches('/').to_owned(),
        include: req.source.include.clone(),
        exclude: req.source.exclude.clone(),
        recursive: req.source.recursive,
        dest_folder: req.destination.folder.trim_matches('/').to_owned(),
        mode: req.mode,
        max_delete: match req.mode {
            TransferMode::Sync => Some(req.max_delete.unwrap_or(DEFAULT_MAX_DELETE)),
            _ => req.max_delete,
        },
        backup_folder: req
            .backup_folder
            .as_ref()
            .map(|b| b.trim_matches('/').to_owned()),
        dry_run: req.dry_run,
    };
    spec.check().map_err(|(field, why)| {
        let field = match field {
            "folder" | "include" | "exclude" => format!("source.{field}"),
            "dest_folder" => "destination.folder".into(),
            other => other.into(),
        };
        ApiError::field(&field, why)
    })?;
    Ok(spec)
}

/// Whether `path` is `folder` or under it (the empty folder holds everything).
fn within(path: &str, folder: &str) -> bool {
    folder.is_empty() || path == folder || path.starts_with(&format!("{folder}/"))
}

/// The endpoints the executors of `pool` publish (online or not: a transfer waits in the queue
/// for one to come back).
async fn offered<S: ApiStore>(
    state: &ApiState<S>,
    pool: &PoolName,
) -> Result<Vec<OfferedEndpoint>, ApiError> {
    let executors = state
        .store
        .executors(Utc::now())
        .await
        .map_err(ApiError::Internal)?;
    Ok(executors
        .into_iter()
        .filter(|e| e.pool.as_deref() == Some(pool.as_str()))
        .flat_map(|e| e.endpoints)
        .collect())
}

/// Each endpoint of the request is published by an executor of its pool, open to what the
/// transfer does with it; else a 400 naming the endpoint and its site's setting.
fn check_offered(
    offered: &[OfferedEndpoint],
    req: &TransferBody,
    mode: TransferMode,
) -> Result<(), ApiError> {
    let pool = &req.source.pool;
    let find = |field: &str, name: &EndpointName| {
        let found: Vec<&OfferedEndpoint> = offered.iter().filter(|o| &o.name == name).collect();
        if found.is_empty() {
            let mut names: Vec<&str> = offered.iter().map(|o| o.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            return Err(ApiError::field(
                field,
                format!(
                    "no executor of pool {pool} publishes an endpoint named {name} (published: {})",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        }
        Ok(found)
    };
    let closed = |field: &str, name: &EndpointName, found: &[&OfferedEndpoint], what: &str| {
        ApiError::field(
            field,
            format!(
                "endpoint {name} of pool {pool} may not be {what} by the cloud (its site set cloud = \"{}\"; the site's [endpoints.{name}] must allow it)",
                found[0].cloud
            ),
        )
    };
    let source = find("source.endpoint", &req.source.endpoint)?;
    if !source.iter().any(|o| o.may_read()) {
        return Err(closed(
            "source.endpoint",
            &req.source.endpoint,
            &source,
            "read",
        ));
    }
    if mode == TransferMode::Move && !source.iter().any(|o| o.may_delete()) {
        return Err(closed(
            "source.endpoint",
            &req.source.endpoint,
            &source,
            "deleted from (a move)",
        ));
    }
    let dest = find("destination.endpoint", &req.destination.endpoint)?;
    if !dest.iter().any(|o| o.may_write()) {
        return Err(closed(
            "destination.endpoint",
            &req.destination.endpoint,
            &dest,
            "written",
        ));
    }
    if mode == TransferMode::Sync && !dest.iter().any(|o| o.may_delete()) {
        return Err(closed(
            "destination.endpoint",
            &req.destination.endpoint,
            &dest,
            "deleted from (a sync)",
        ));
    }
    Ok(())
}
