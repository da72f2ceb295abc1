//! The watch and schedule rules in force, changed without a restart: when the configuration file
//! changes, rules that changed or went are stopped and new or changed ones started; the others
//! keep running untouched. A configuration that does not load is reported and ignored, and the
//! rules in force stay.
//!
//! The pool's rules from the cloud act once for the pool: their watch rules start jobs only while
//! this executor holds the pool's rule lease, and their schedules tick in the cloud, each run
//! coming through the pool's work queue to one executor ([`PoolRules`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pbs_shared::template::Trigger;
use pbs_shared::{PoolName, Template};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::cloud::lease::PoolLease;
use crate::config::{AfterAction, CloudUse, Config, EndpointConfig, ScheduleRule, WatchRule};
use crate::config::{check_schedule_rule, check_watch_rule};
use crate::jobs::local::LocalJobs;
use crate::rules::cloud::PoolRules;
use crate::rules::poll::RemoteWatcher;
use crate::rules::schedule::Scheduler;
use crate::rules::watch::Watcher;
use crate::transfer::endpoints::Endpoints;

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// A watch rule; `true` when it comes from the cloud (held through the pool's lease).
    Watch(WatchRule, bool),
    Schedule(ScheduleRule),
}

pub struct RuleSet {
    pool: PoolName,
    endpoints: Arc<Endpoints>,
    jobs: Arc<LocalJobs>,
    tracker: TaskTracker,
    /// Rules stop with it (shutdown).
    parent: CancellationToken,
    running: HashMap<String, (Rule, CancellationToken)>,
    /// The configuration the rules in force come from (TOML rules, endpoints for checks).
    config: Option<Config>,
    /// The pool's templates with watch and schedule triggers, from the cloud.
    cloud: Vec<Template>,
    /// The pool's rule lease, which cloud watch rules start jobs under.
    lease: Option<Arc<PoolLease>>,
    /// The cloud rules in force here, for the schedule runs and retries the cloud sends.
    book: Arc<PoolRules>,
}

impl RuleSet {
    pub fn new(
        pool: PoolName,
        endpoints: Arc<Endpoints>,
        jobs: Arc<LocalJobs>,
        tracker: TaskTracker,
        parent: CancellationToken,
        lease: Option<Arc<PoolLease>>,
    ) -> Self {
        Self {
            book: Arc::new(PoolRules::new(
                pool.clone(),
                endpoints.clone(),
                jobs.clone(),
            )),
            pool,
            endpoints,
            jobs,
            tracker,
            parent,
            running: HashMap::new(),
            config: None,
            cloud: Vec::new(),
            lease,
        }
    }

    /// The cloud rules in force, for the schedule runs and retries the cloud sends.
    pub fn cloud_rules(&self) -> Arc<PoolRules> {
        self.book.clone()
    }

    /// Makes `templates` the cloud's rules for this pool.
    pub fn apply_cloud(&mut self, templates: Vec<Template>) {
        self.cloud = templates;
        if let Some(config) = self.config.clone() {
            self.apply(&config);
        }
    }

    pub fn len(&self) -> usize {
        self.running.len() + self.book.schedules()
    }

    /// Makes `config`'s rules, and the cloud's, the ones in force.
    pub fn apply(&mut self, config: &Config) {
        self.config = Some(config.clone());
        let mut wanted: HashMap<String, Rule> = HashMap::new();
        for w in &config.watch {
            wanted.insert(w.name.to_string(), Rule::Watch(w.clone(), false));
        }
        for s in &config.schedule {
            wanted.insert(s.name.to_string(), Rule::Schedule(s.clone()));
        }
        let (mut schedules, mut watches) = (HashMap::new(), HashMap::new());
        for (name, rule) in cloud_rules(config, &self.cloud) {
            match rule {
                Rule::Schedule(s) => {
                    schedules.insert(s.name.clone(), s);
                }
                Rule::Watch(w, cloud) => {
                    watches.insert(w.name.clone(), w.clone());
                    wanted.insert(name, Rule::Watch(w, cloud));
                }
            }
        }
        self.book.set(schedules, watches);
        self.running.retain(|name, (rule, stop)| {
            if wanted.get(name) == Some(rule) {
                return true;
            }
            info!(rule = %name, "rule changed or removed; stopping it");
            stop.cancel();
            false
        });
        for (name, rule) in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            let stop = self.parent.child_token();
            match &rule {
                Rule::Watch(w, cloud) => {
                    let lease = if *cloud { self.lease.clone() } else { None };
                    // Endpoints are resolved at start; a rule naming a new one needs a restart.
                    match self.endpoints.get(&w.source).map(|e| &e.config) {
                        Ok(EndpointConfig::Local(l)) => {
                            let watcher = Arc::new(Watcher {
                                rule: w.clone(),
                                root: l.root.clone(),
                                pool: self.pool.clone(),
                                jobs: self.jobs.clone(),
                                lease,
                            });
                            self.tracker.spawn(watcher.run(stop.clone()));
                        }
                        Ok(_) => {
                            let watcher = Arc::new(RemoteWatcher {
                                rule: w.clone(),
                                pool: self.pool.clone(),
                                endpoints: self.endpoints.clone(),
                                jobs: self.jobs.clone(),
                                lease,
                            });
                            self.tracker.spawn(watcher.run(stop.clone()));
                        }
                        Err(_) => {
                            error!(rule = %name, endpoint = %w.source, "rule not started: its source endpoint was added since the start; restart the executor to use new endpoints");
                            continue;
                        }
                    }
                }
                Rule::Schedule(s) => {
                    if self.endpoints.get(&s.source).is_err()
                        || (self.endpoints.get(&s.destination).is_err()
                            && s.destination.as_str() != pbs_shared::message::STAGING_ENDPOINT)
                    {
                        error!(rule = %name, "rule not started: it names an endpoint added since the start; restart the executor to use new endpoints");
                        continue;
                    }
                    let scheduler = Arc::new(Scheduler {
                        rule: s.clone(),
                        pool: self.pool.clone(),
                        endpoints: self.endpoints.clone(),
                        jobs: self.jobs.clone(),
                    });
                    self.tracker.spawn(scheduler.run(stop.clone()));
                }
            }
            self.running.insert(name, (rule, stop));
        }
        let watch = self
            .running
            .values()
            .filter(|(r, _)| matches!(r, Rule::Watch(..)))
            .count();
        let schedule = self.running.len() - watch + self.book.schedules();
        crate::metrics::METRICS.rules(watch, schedule);
    }

    /// Reloads the rules whenever `path` changes or the cloud sends new ones, until `stop`.
    pub async fn follow(
        mut self,
        path: PathBuf,
        mut cloud: mpsc::UnboundedReceiver<Vec<Template>>,
        stop: CancellationToken,
    ) {
        let stamp = |p: &PathBuf| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        // The rules in force came from the file as it was read at start, and it may have been
        // written since, before this loop began: the first check reads it whatever its stamp,
        // and a change is a change of content, not only of modification time.
        let mut last_stamp: Option<(Option<SystemTime>, u64)> = None;
        let mut last_text: Option<Vec<u8>> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(templates) = cloud.recv() => {
                    self.apply_cloud(templates);
                    info!(rules = self.len(), "cloud rules updated: rules in force updated");
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            let now = stamp(&path);
            if last_text.is_some() && now == last_stamp {
                continue;
            }
            last_stamp = now;
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            if last_text.as_ref() == Some(&text) {
                continue;
            }
            let first = last_text.replace(text).is_none();
            match Config::load(&path) {
                Ok(config) => {
                    // Unchanged rules keep running: applying the same file again changes nothing.
                    self.apply(&config);
                    if !first {
                        info!(
                            rules = self.len(),
                            "configuration reloaded: rules in force updated"
                        );
                    }
                }
                Err(e) => {
                    error!(error = %e, "configuration changed but does not load; the rules in force stay")
                }
            }
        }
        for (_, (_, stop)) in self.running.drain() {
            stop.cancel();
        }
    }
}

/// Why the cloud may not run a rule reading `source` and writing `destination` here: each
/// endpoint's `cloud` setting must allow it, as for a queued job.
fn cloud_may(
    config: &Config,
    source: &pbs_shared::EndpointName,
    destination: &pbs_shared::EndpointName,
) -> Result<(), String> {
    if let Some(why) = config.cloud_refusal(source, CloudUse::Read) {
        return Err(format!("trigger.source: {why}"));
    }
    match config.cloud_refusal(destination, CloudUse::Write) {
        Some(why) => Err(format!("destination.endpoint: {why}")),
        None => Ok(()),
    }
}

/// The cloud's templates as rules, checked against this executor's endpoints; a rule that does
/// not fit (unknown endpoint, an endpoint its `cloud` setting closes to it, same name as a TOML
/// rule, removal of source files not allowed) is reported and left out.
fn cloud_rules(config: &Config, templates: &[Template]) -> Vec<(String, Rule)> {
    let mut out = Vec::new();
    for t in templates {
        let name = t.id.to_string();
        if config.watch.iter().any(|w| w.name == t.id)
            || config.schedule.iter().any(|s| s.name == t.id)
        {
            error!(rule = %name, "cloud rule ignored: a rule of the configuration file has the same name");
            continue;
        }
        let may_remove = config
            .cloud
            .as_ref()
            .is_some_and(|c| c.allow_source_removal);
        let source = match &t.trigger {
            Trigger::Watch(w) => &w.source,
            Trigger::Schedule(s) => &s.source,
            Trigger::S3 { .. } | Trigger::Chain {} | Trigger::Manual(_) => continue,
        };
        if let Err(why) = cloud_may(config, source, &t.destination.endpoint) {
            error!(rule = %name, "cloud rule ignored: {why}");
            continue;
        }
        let (rule, checked) = match &t.trigger {
            Trigger::Watch(w) if w.after != AfterAction::Keep && !may_remove => {
                error!(rule = %name, "cloud rule ignored: trigger.after: deleting or moving source files on this machine needs cloud.allow_source_removal = true in its configuration");
                continue;
            }
            Trigger::Watch(w) => {
                let r = WatchRule::from_template(t, w);
                let c = check_watch_rule(config, &r);
                (Rule::Watch(r, true), c)
            }
            Trigger::Schedule(s) => {
                let r = ScheduleRule::from_template(t, s);
                let c = check_schedule_rule(config, &r);
                (Rule::Schedule(r), c)
            }
            Trigger::S3 { .. } | Trigger::Chain {} | Trigger::Manual(_) => continue,
        };
        match checked {
            Ok(()) => out.push((name, rule)),
            Err((field, m)) => {
                error!(rule = %name, "cloud rule ignored: trigger.{field}: {m}")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cloud: &str) -> Config {
        Config::parse(&format!(
            "pool = \"p\"\nstate_dir = \"/tmp\"\n{cloud}\n\
             [endpoints.drop]\ntype = \"local\"\nroot = \"/srv/drop\"\ncloud = \"read\"\n\
             [endpoints.disk]\ntype = \"local\"\nroot = \"/srv/disk\"\n\
             [[watch]]\nname = \"local-rule\"\nsource = \"drop\"\ndestination = \"disk\"\n"
        ))
        .unwrap()
    }

    fn template(id: &str, trigger: serde_json::Value, endpoint: &str) -> Template {
        Template::from_json(
            serde_json::json!({
                "id": id, "trigger": trigger,
                "destination": {"pool": "p", "endpoint": endpoint, "path": "{key}"}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn cloud_templates_become_rules_only_where_they_fit_this_executor() {
        let watch = serde_json::json!({"type": "watch", "source": "drop", "folder": "in"});
        let delete = serde_json::json!({"type": "watch", "source": "drop", "folder": "in", "after": "delete"});
        let templates = vec![
            template("ok", watch.clone(), "disk"),
            template(
                "schedule",
                serde_json::json!({"type": "schedule", "cron": "0 2 * * *", "source": "drop"}),
                "disk",
            ),
            template("unknown-endpoint", watch.clone(), "nas"),
            // `disk` takes the default: written by the cloud, never read; `drop` is never written.
            template(
                "reads-a-destination",
                serde_json::json!({"type": "watch", "source": "disk"}),
                "disk",
            ),
            template("writes-a-source", watch.clone(), "drop"),
            template("local-rule", watch.clone(), "disk"),
            template("deletes", delete, "disk"),
        ];
        let names = |cfg: &Config| {
            let mut n: Vec<String> = cloud_rules(cfg, &templates)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            n.sort();
            n
        };
        let cloud = "[cloud]\nregion = \"r\"\nwork_queue_url = \"q\"\nstatus_queue_url = \"s\"";
        assert_eq!(names(&config(cloud)), ["ok", "schedule"]);
        let allowed = format!("{cloud}\nallow_source_removal = true");
        assert_eq!(names(&config(&allowed)), ["deletes", "ok", "schedule"]);
    }
}
