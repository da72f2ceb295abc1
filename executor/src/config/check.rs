//! Checks of the watch and schedule rules of a configuration against its endpoints: errors name
//! the rule and field (`watch[0] (name).source: ...`).

use pbs_shared::EndpointName;
use pbs_shared::rule_spec::{check_schedule, check_watch};

use super::{Config, EndpointConfig, ScheduleRule, WatchRule};

/// Checks every rule against the endpoints; errors name the rule and field.
pub fn check(config: &Config) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for (i, w) in config.watch.iter().enumerate() {
        let at = format!("watch[{i}] ({})", w.name);
        if !names.insert(w.name.as_str()) {
            return Err(format!("{at}.name: another rule has this name"));
        }
        check_watch_rule(config, w).map_err(|(f, m)| format!("{at}.{f}: {m}"))?;
    }
    for (i, s) in config.schedule.iter().enumerate() {
        let at = format!("schedule[{i}] ({})", s.name);
        if !names.insert(s.name.as_str()) {
            return Err(format!("{at}.name: another rule has this name"));
        }
        check_schedule_rule(config, s).map_err(|(f, m)| format!("{at}.{f}: {m}"))?;
    }
    Ok(())
}

type FieldProblem = (&'static str, String);

fn endpoint<'a>(
    config: &'a Config,
    field: &'static str,
    name: &EndpointName,
) -> Result<&'a EndpointConfig, FieldProblem> {
    config.endpoints.get(name).ok_or_else(|| {
        (
            field,
            format!("endpoint \"{name}\" is not defined in [endpoints]"),
        )
    })
}

/// A rule's destination: an endpoint, or the stack's relay staging area when configured.
fn destination(config: &Config, name: &EndpointName) -> Result<(), FieldProblem> {
    if name.as_str() == pbs_shared::message::STAGING_ENDPOINT {
        return match config
            .cloud
            .as_ref()
            .and_then(|c| c.staging_bucket.as_ref())
        {
            Some(_) => Ok(()),
            None => Err((
                "destination",
                "the relay staging area is not configured on this executor (cloud.staging_bucket)"
                    .into(),
            )),
        };
    }
    endpoint(config, "destination", name).map(drop)
}

/// A watch rule against `config`'s endpoints: returns the failing field and why.
pub fn check_watch_rule(config: &Config, w: &WatchRule) -> Result<(), FieldProblem> {
    endpoint(config, "source", &w.source)?;
    destination(config, &w.destination)?;
    check_watch(&w.trigger(), w.delivery.verify)?;
    w.retry.check().map_err(|(_, m)| ("retry", m))
}

/// A schedule rule against `config`'s endpoints.
pub fn check_schedule_rule(config: &Config, s: &ScheduleRule) -> Result<(), FieldProblem> {
    endpoint(config, "source", &s.source)?;
    destination(config, &s.destination)?;
    check_schedule(&s.trigger())?;
    s.retry.check().map_err(|(_, m)| ("retry", m))
}
