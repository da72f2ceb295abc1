//! Which job messages from the pool's work queue this executor obeys. A message is believed for
//! what its queue allows (anything the stack's functions sent), so what it asks is checked against
//! what this site allows: jobs of this executor's pool only, and each endpoint touched only as its
//! `cloud` setting says. Jobs this executor makes itself (its watch and schedule rules) do not
//! pass here.

use pbs_shared::transfer::TransferMode;
use pbs_shared::{JobMessage, JobSource};

use crate::config::{CloudUse, Config};

/// `Ok` when the executor may run `job` from its queue; else why not, naming the setting to change.
pub fn admit(config: &Config, job: &JobMessage) -> Result<(), String> {
    if job.pool != config.pool {
        return Err(format!(
            "job {} is for pool {}; this executor serves pool {}",
            job.job_id, job.pool, config.pool
        ));
    }
    if job.origin.is_some() {
        return Err(
            "a queued job may not claim a watch or schedule origin: only executors make those jobs"
                .into(),
        );
    }
    let source = match &job.source {
        JobSource::Endpoint { endpoint } => Some(endpoint),
        JobSource::S3 { .. } => None,
    };
    let mode = job.folder.as_ref().map(|f| f.mode);
    let mut uses = vec![(Some(&job.destination), CloudUse::Write)];
    uses.push((source, CloudUse::Read));
    match mode {
        Some(TransferMode::Move) => uses.push((source, CloudUse::Delete)),
        Some(TransferMode::Sync) => uses.push((Some(&job.destination), CloudUse::Delete)),
        _ => {}
    }
    match uses
        .into_iter()
        .find_map(|(endpoint, how)| config.cloud_refusal(endpoint?, how))
    {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "pool = \"site-a\"\nstate_dir = \"/tmp/x\"\n\
             [endpoints.drop]\ntype = \"local\"\nroot = \"/srv/drop\"\n{extra}\
             [endpoints.vault]\ntype = \"local\"\nroot = \"/srv/vault\"\ncloud = \"read-write\"\n\
             [endpoints.private]\ntype = \"local\"\nroot = \"/srv/private\"\ncloud = \"none\"\n"
        );
        Config::parse(&text).expect("a valid configuration")
    }

    fn job(pool: &str, source: Option<&str>, destination: &str) -> JobMessage {
        let source = match source {
            Some(e) => serde_json::json!({"type": "endpoint", "endpoint": e}),
            None => serde_json::json!({"type": "s3", "bucket": "in"}),
        };
        JobMessage::parse(
            &serde_json::json!({
                "v": 1, "job_id": "ev-1", "template_id": "t", "pool": pool, "source": source,
                "files": [{"key": "a.txt", "size": 1, "dest_path": "a.txt"}],
                "destination": destination, "created_at": "2026-11-25T16:30:00Z"
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn deliveries_to_a_default_endpoint_are_obeyed() {
        let c = config("");
        assert_eq!(admit(&c, &job("site-a", None, "drop")), Ok(()));
        assert_eq!(admit(&c, &job("site-a", Some("vault"), "drop")), Ok(()));
        assert_eq!(admit(&c, &job("site-a", Some("staging"), "vault")), Ok(()));
    }

    #[test]
    fn reading_or_writing_beyond_an_endpoints_setting_is_refused_with_the_fix() {
        let c = config("");
        let e = admit(&c, &job("site-a", Some("drop"), "vault")).unwrap_err();
        assert!(e.contains("endpoint drop may not be read"), "{e}");
        assert!(
            e.contains("set cloud = \"read\" or \"read-write\" in [endpoints.drop]"),
            "{e}"
        );
        let e = admit(&c, &job("site-a", None, "private")).unwrap_err();
        assert!(e.contains("endpoint private may not be written"), "{e}");
        assert!(e.contains("its cloud = \"none\""), "{e}");
        let c = config("cloud = \"read\"\n");
        assert!(admit(&c, &job("site-a", Some("drop"), "vault")).is_ok());
        assert!(
            admit(&c, &job("site-a", None, "drop")).is_err(),
            "read only"
        );
    }

    #[test]
    fn a_move_or_sync_needs_deletes_where_it_removes_files() {
        let c = config("");
        let mut mv = job("site-a", Some("vault"), "drop");
        mv.folder = Some(serde_json::from_value(serde_json::json!({"mode": "move"})).unwrap());
        assert!(admit(&c, &mv).is_ok(), "vault is read-write");
        let mut sync = job("site-a", Some("vault"), "drop");
        sync.folder = Some(serde_json::from_value(serde_json::json!({"mode": "sync"})).unwrap());
        let e = admit(&c, &sync).unwrap_err();
        assert!(e.contains("endpoint drop may not be deleted from"), "{e}");
        assert!(
            e.contains("set cloud = \"read-write\" in [endpoints.drop]"),
            "{e}"
        );
        let mut copy = job("site-a", Some("vault"), "drop");
        copy.folder = Some(serde_json::from_value(serde_json::json!({"mode": "copy"})).unwrap());
        assert!(admit(&c, &copy).is_ok());
    }

    #[test]
    fn another_pools_job_and_a_claimed_origin_are_refused() {
        let c = config("");
        let e = admit(&c, &job("site-b", None, "drop")).unwrap_err();
        assert!(
            e.contains("is for pool site-b; this executor serves pool site-a"),
            "{e}"
        );
        let mut forged = job("site-a", None, "drop");
        forged.origin = Some(pbs_shared::message::Origin {
            kind: pbs_shared::message::OriginKind::Watch,
            rule: "r".into(),
            why: None,
        });
        assert!(admit(&c, &forged).unwrap_err().contains("origin"));
    }
}
