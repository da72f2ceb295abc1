//! `POST /api/v1/transfers`: a person moves a folder between two endpoints, now. The job names
//! the folder; an executor of the source's pool lists it when the job runs ([`FolderTransfer`]).
//! Between pools (sites that cannot reach each other) the transfer is a flow of two steps: the
//! folder is copied into the staging area, then delivered from there by the destination's pool
//! ([`RelayTo`], started by the status function when the first step succeeds). What the sites publish with their heartbeats decides what may be
//! asked: an endpoint no executor of the pool has, or one its site keeps from the cloud, is a 400
//! naming it, before anything is queued.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::Utc;
use pbs_shared::message::{OfferedEndpoint, STAGING_ENDPOINT, V1};
use pbs_shared::template::Trigger;
use pbs_shared::transfer::{FolderTransfer, RelayTo, TRANSFER_TEMPLATE, TransferMode};
use pbs_shared::{
    Bandwidth, Delivery, EndpointName, JobId, JobMessage, JobSource, PoolName, RetryPolicy,
    Template, TemplateId,
};
use serde::Deserialize;

use super::auth::{Principal, Role};
use super::error::json_body;
use super::jobs::{created, find, send_or_fail};
use super::{ApiError, ApiState, ApiStore};
use crate::store::executors::ExecutorView;
use crate::store::jobs::{Inserted, JobView};

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
    #[serde(default = "pbs_shared::rule_spec::yes")]
    recursive: bool,
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
    let planned = Planned {
        spec: folder_transfer(&req)?,
        source: (req.source.pool, req.source.endpoint),
        destination: (req.destination.pool, req.destination.endpoint),
        delivery: req.delivery,
        retry: req.retry,
        bandwidth: req.bandwidth,
        template: TemplateId::parse(TRANSFER_TEMPLATE).expect("a valid template id"),
    };
    Ok(created(start(&state, &principal, planned).await?))
}

/// `POST /api/v1/templates/{id}/run`: a saved transfer (`manual`), or a watch or schedule
/// template's folder, transferred now. The job is the template's: its notifications and next
/// step follow it.
pub async fn run_template<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(Role::Operator)?;
    let template_id = TemplateId::parse(&id).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let template = match state.store.template(&template_id).await? {
        Some(Ok(t)) => t,
        Some(Err((_, why))) => {
            return Err(ApiError::Conflict(format!(
                "template {id} is invalid: {why}"
            )));
        }
        None => return Err(ApiError::NotFound(format!("template {id} not found"))),
    };
    if !template.enabled {
        return Err(ApiError::Conflict(format!("template {id} is disabled")));
    }
    let dest = &template.destination;
    let rule = |source: &EndpointName, folder: &str, filters: (&[String], &[String]), recursive| {
        Ok::<_, ApiError>(Planned::of(
            &template,
            (dest.pool.clone(), source.clone()),
            FolderTransfer {
                folder: folder.to_owned(),
                include: filters.0.to_vec(),
                exclude: filters.1.to_vec(),
                recursive,
                dest_folder: rule_dest_folder(&template)?,
                mode: TransferMode::Copy,
                max_delete: None,
                backup_folder: None,
                dry_run: false,
            },
        ))
    };
    let planned = match &template.trigger {
        Trigger::Manual(m) => {
            let pool = m.source_pool.clone().unwrap_or_else(|| dest.pool.clone());
            Planned::of(
                &template,
                (pool, m.source.clone()),
                m.transfer(dest.path.as_str()),
            )
        }
        Trigger::Schedule(s) => rule(&s.source, &s.folder, (&s.include, &s.exclude), s.recursive)?,
        Trigger::Watch(w) => rule(&w.source, &w.folder, (&w.include, &w.exclude), w.recursive)?,
        Trigger::S3 { .. } => {
            return Err(ApiError::Conflict(format!(
                "template {id} takes S3 objects: deliver named objects with POST /api/v1/jobs"
            )));
        }
        Trigger::Chain {} => {
            return Err(ApiError::Conflict(format!(
                "template {id} is a chain step: it runs on what the step before it delivered"
            )));
        }
    };
    Ok(created(start(&state, &principal, planned).await?))
}

/// Where a watch or schedule template's files land when it runs now: the folder of a path
/// `<folder>/{key}` (or `{key}`, the root); other paths are refused, naming the path.
fn rule_dest_folder(template: &Template) -> Result<String, ApiError> {
    let path = template.destination.path.as_str();
    let folder = match path.strip_suffix("{key}") {
        Some(rest) if !rest.contains('{') => rest.trim_end_matches('/'),
        _ => {
            return Err(ApiError::Conflict(format!(
                "template {} delivers to {path:?}: Run now copies a folder keeping each file's relative path, so it needs a destination path \"{{key}}\" or \"<folder>/{{key}}\"",
                template.id
            )));
        }
    };
    Ok(folder.to_owned())
}

/// A transfer to start: what is read where, where it goes, how, and for which template.
struct Planned {
    spec: FolderTransfer,
    /// `(pool, endpoint)` of each side.
    source: (PoolName, EndpointName),
    destination: (PoolName, EndpointName),
    delivery: Delivery,
    retry: RetryPolicy,
    bandwidth: Option<Bandwidth>,
    template: TemplateId,
}

impl Planned {
    /// A run of `template` reading `source`, with its destination and options.
    fn of(template: &Template, source: (PoolName, EndpointName), spec: FolderTransfer) -> Self {
        let dest = &template.destination;
        Self {
            spec,
            source,
            destination: (dest.pool.clone(), dest.endpoint.clone()),
            delivery: template.options.delivery,
            retry: template.options.retry,
            bandwidth: template.options.bandwidth.clone(),
            template: template.id.clone(),
        }
    }
}

/// Checks `p` against what the sites publish, records and queues its job (and where a transfer
/// between pools goes next); the job as recorded.
async fn start<S: ApiStore>(
    state: &ApiState<S>,
    principal: &Principal,
    p: Planned,
) -> Result<JobView, ApiError> {
    let Planned {
        mut spec,
        source: (src_pool, src),
        destination: (dst_pool, dst),
        ..
    } = p;
    let relayed = src_pool != dst_pool;
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
    if !relayed && src == dst && spec.folders_overlap() {
        return Err(ApiError::field(
            "destination.folder",
            format!(
                "{:?} and the source folder {:?} of endpoint {src} hold one another",
                spec.dest_folder, spec.folder
            ),
        ));
    }
    let executors = state
        .store
        .executors(Utc::now())
        .await
        .map_err(ApiError::Internal)?;
    let (from, to) = (
        published(&executors, &src_pool),
        published(&executors, &dst_pool),
    );
    usable(
        "source.endpoint",
        (&src_pool, &from),
        &src,
        &source_needs(spec.mode),
    )?;
    usable(
        "destination.endpoint",
        (&dst_pool, &to),
        &dst,
        &dest_needs(spec.mode),
    )?;
    // Between pools the first step stages the folder (under staging/<pool>/<job id>/); the
    // second, started when it succeeds, delivers from there in the destination's pool.
    let relay = relayed.then(|| RelayTo {
        pool: dst_pool,
        endpoint: dst.clone(),
        folder: std::mem::take(&mut spec.dest_folder),
        delivery: p.delivery,
        retry: p.retry,
    });
    let destination = match relay {
        Some(_) => EndpointName::parse(STAGING_ENDPOINT).expect("a valid endpoint name"),
        None => dst,
    };
    let (mode, dry_run) = (spec.mode, spec.dry_run);
    let message = JobMessage {
        v: V1,
        job_id: JobId::parse(format!("tr-{}", uuid::Uuid::new_v4().simple()))
            .expect("transfer job ids are valid"),
        template_id: p.template,
        pool: src_pool,
        source: JobSource::Endpoint { endpoint: src },
        files: Vec::new(),
        destination,
        retry: p.retry,
        delivery: p.delivery,
        origin: None,
        bandwidth: p.bandwidth,
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
    send_or_fail(state, &message).await?;
    tracing::info!(job_id = %message.job_id, principal = %principal.name, template = %message.template_id, pool = %message.pool, mode = mode.as_str(), dry_run, "transfer started");
    find(state, message.job_id.as_str()).await
}

/// The request's folder transfer, checked field by field.
fn folder_transfer(req: &TransferBody) -> Result<FolderTransfer, ApiError> {
    let spec = FolderTransfer {
        folder: req.source.folder.clone(),
        include: req.source.include.clone(),
        exclude: req.source.exclude.clone(),
        recursive: req.source.recursive,
        dest_folder: req.destination.folder.clone(),
        mode: req.mode,
        max_delete: req.max_delete,
        backup_folder: req
            .backup_folder
            .as_ref()
            .map(|b| b.trim_matches('/').to_owned()),
        dry_run: req.dry_run,
    }
    .normalized();
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

/// The endpoints the executors of `pool` publish (online or not: a transfer waits in the queue
/// for one to come back).
pub(super) fn published(executors: &[ExecutorView], pool: &PoolName) -> Vec<OfferedEndpoint> {
    executors
        .iter()
        .filter(|e| e.pool.as_deref() == Some(pool.as_str()))
        .flat_map(|e| e.endpoints.iter().cloned())
        .collect()
}

/// Why `name` cannot be used: no executor of `pool` publishes it (`offered` is what they do).
pub(super) fn unpublished(
    pool: &PoolName,
    name: &EndpointName,
    offered: &[OfferedEndpoint],
) -> String {
    let mut names: Vec<&str> = offered.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let published = if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    };
    format!(
        "no executor of pool {pool} publishes an endpoint named {name} (published: {published})"
    )
}

/// What a transfer does with an endpoint: the check of its published setting, and the words.
type Need = (fn(&OfferedEndpoint) -> bool, &'static str);

/// What a transfer in `mode` does with its source.
fn source_needs(mode: TransferMode) -> Vec<Need> {
    let mut needs: Vec<Need> = vec![(OfferedEndpoint::may_read, "read")];
    if mode == TransferMode::Move {
        needs.push((OfferedEndpoint::may_delete, "deleted from (a move)"));
    }
    needs
}

/// What a transfer in `mode` does with its destination.
fn dest_needs(mode: TransferMode) -> Vec<Need> {
    let mut needs: Vec<Need> = vec![(OfferedEndpoint::may_write, "written")];
    if mode == TransferMode::Sync {
        needs.push((OfferedEndpoint::may_delete, "deleted from (a sync)"));
    }
    needs
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
        return Err(ApiError::field(field, unpublished(pool, name, offered)));
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
