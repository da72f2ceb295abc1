//! `POST /api/v1/transfers`: a person moves a folder between two endpoints, now. The job names
//! the folder; an executor of the source's pool lists it when the job runs ([`FolderTransfer`]).
//! Between pools (sites that cannot reach each other) the transfer is a flow of two steps: the
//! folder is copied into the staging area, then delivered from there by the destination's pool
//! ([`RelayTo`], started by the status function when the first step succeeds). What the sites publish with their heartbeats decides what may be
//! asked: an endpoint no executor of the pool has, or one its site keeps from the cloud, is a 400
//! naming it, before anything is queued.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use pbs_shared::message::{OfferedEndpoint, STAGING_ENDPOINT, V1};
use pbs_shared::transfer::{FolderTransfer, RelayTo, TRANSFER_TEMPLATE, TransferMode};
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
    let mut spec = folder_transfer(&req)?;
    let relayed = req.source.pool != req.destination.pool;
    if relayed && spec.mode != TransferMode::Copy {
        return Err(ApiError::field(
            "mode",
            format!(
                "a {} between pools is not offered (it would remove files across sites); copy between pools, or {} within one",
                spec.mode.as_str(),
                spec.mode.as_str()
            ),
        ));
    }
    if !relayed
        && req.source.endpoint == req.destination.endpoint
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
    let from = offered(&state, &req.source.pool).await?;
    let to = match relayed {
        true => offered(&state, &req.destination.pool).await?,
        false => from.clone(),
    };
    check_offered((&from, &to), &req, spec.mode)?;
    // Between pools the first step stages the folder (under staging/<pool>/<job id>/); the
    // second, started when it succeeds, delivers from there in the destination's pool.
    let relay = relayed.then(|| RelayTo {
        pool: req.destination.pool.clone(),
        endpoint: req.destination.endpoint.clone(),
        folder: std::mem::take(&mut spec.dest_folder),
        delivery: req.delivery,
        retry: req.retry,
    });
    let destination = match relay {
        Some(_) => EndpointName::parse(STAGING_ENDPOINT).expect("a valid endpoint name"),
        None => req.destination.endpoint.clone(),
    };
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
        destination,
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
    if let Some(relay) = &relay {
        state.store.note_relay(&message.job_id, relay).await?;
    }
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

/// What a transfer does with an endpoint: the check of its published setting, and the words.
type Need = (fn(&OfferedEndpoint) -> bool, &'static str);

/// Each endpoint of the request is published by an executor of its pool, open to what the
/// transfer does with it; else a 400 naming the endpoint and its site's setting.
fn check_offered(
    (from, to): (&[OfferedEndpoint], &[OfferedEndpoint]),
    req: &TransferBody,
    mode: TransferMode,
) -> Result<(), ApiError> {
    let read: Need = (OfferedEndpoint::may_read, "read");
    let write: Need = (OfferedEndpoint::may_write, "written");
    let (remove_source, remove_dest): (Need, Need) = (
        (OfferedEndpoint::may_delete, "deleted from (a move)"),
        (OfferedEndpoint::may_delete, "deleted from (a sync)"),
    );
    let mut source = vec![read];
    let mut dest = vec![write];
    match mode {
        TransferMode::Move => source.push(remove_source),
        TransferMode::Sync => dest.push(remove_dest),
        TransferMode::Copy => {}
    }
    usable(
        "source.endpoint",
        (&req.source.pool, from),
        &req.source.endpoint,
        &source,
    )?;
    usable(
        "destination.endpoint",
        (&req.destination.pool, to),
        &req.destination.endpoint,
        &dest,
    )
}

/// `name` is published by an executor of `pool` (`offered` is what they publish) and allows each
/// of `needs`; else a 400 for `field`.
fn usable(
    field: &str,
    (pool, offered): (&PoolName, &[OfferedEndpoint]),
    name: &EndpointName,
    needs: &[Need],
) -> Result<(), ApiError> {
    let found: Vec<&OfferedEndpoint> = offered.iter().filter(|o| &o.name == name).collect();
    if found.is_empty() {
        let mut names: Vec<&str> = offered.iter().map(|o| o.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let published = if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        };
        return Err(ApiError::field(
            field,
            format!(
                "no executor of pool {pool} publishes an endpoint named {name} (published: {published})"
            ),
        ));
    }
    for (allows, what) in needs {
        if !found.iter().any(|o| allows(o)) {
            return Err(ApiError::field(
                field,
                format!(
                    "endpoint {name} of pool {pool} may not be {what} by the cloud (its site set cloud = \"{}\"; the site's [endpoints.{name}] must allow it)",
                    found[0].cloud
                ),
            ));
        }
    }
    Ok(())
}
