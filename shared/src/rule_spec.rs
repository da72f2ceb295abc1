//! Watch and schedule rules as templates carry them (`trigger.type` = `watch` | `schedule`), the
//! document that delivers a pool's rules to its executors, and the pure pieces both sides use to
//! check them: file filters and cron expressions read in a time zone.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use globset::{GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::names::EndpointName;

/// What happens to a watched file after its verified delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterAction {
    #[default]
    Keep,
    Delete,
    MoveTo,
}

/// Files present when watching starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExistingFiles {
    #[default]
    Process,
    Ignore,
}

/// Scheduled runs missed while the executor was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissedRuns {
    #[default]
    Skip,
    RunOnce,
}

pub fn yes() -> bool {
    true
}
pub fn default_stable() -> u64 {
    5
}
pub fn default_reconcile() -> u64 {
    60
}
pub fn default_poll() -> u64 {
    30
}
pub fn default_tz() -> String {
    "UTC".into()
}

/// A template's `watch` trigger: a folder of one of the pool's endpoints; a local folder is
/// followed through file events (and a full scan every `reconcile_seconds`), an SFTP, SMB or S3
/// folder is listed every `poll_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchTrigger {
    /// An endpoint of the pool's executors.
    pub source: EndpointName,
    #[serde(default)]
    pub folder: String,
    #[serde(default = "yes")]
    pub recursive: bool,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default = "default_stable")]
    pub stable_seconds: u64,
    #[serde(default)]
    pub after: AfterAction,
    #[serde(default)]
    pub archive_folder: Option<String>,
    #[serde(default)]
    pub existing: ExistingFiles,
    #[serde(default = "default_reconcile")]
    pub reconcile_seconds: u64,
    #[serde(default = "default_poll")]
    pub poll_seconds: u64,
}

/// A template's `schedule` trigger: any endpoint of the pool, on a cron schedule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTrigger {
    pub cron: String,
    #[serde(default = "default_tz")]
    pub timezone: String,
    pub source: EndpointName,
    #[serde(default)]
    pub folder: String,
    #[serde(default = "yes")]
    pub recursive: bool,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub missed: MissedRuns,
}

/// Checks a rule's folder, filters and timings; returns the failing field and why.
pub fn check_watch(w: &WatchTrigger, verify: crate::Verify) -> Result<(), (&'static str, String)> {
    relative_folder(&w.folder).map_err(|m| ("folder", m))?;
    Filter::new(&w.include, &w.exclude)?;
    if !(1..=86_400).contains(&w.stable_seconds) {
        return Err(("stable_seconds", "must be 1 to 86400".into()));
    }
    if !(5..=86_400).contains(&w.reconcile_seconds) {
        return Err(("reconcile_seconds", "must be 5 to 86400".into()));
    }
    if !(1..=86_400).contains(&w.poll_seconds) {
        return Err(("poll_seconds", "must be 1 to 86400".into()));
    }
    if w.after != AfterAction::Keep && verify == crate::Verify::None {
        return Err((
            "after",
            "deleting or moving source files needs delivery.verify = \"size\" or \"hash\"".into(),
        ));
    }
    match (w.after, &w.archive_folder) {
        (AfterAction::MoveTo, None) => {
            Err(("archive_folder", "required with after = \"move-to\"".into()))
        }
        (AfterAction::MoveTo, Some(a)) => {
            relative_folder(a).map_err(|m| ("archive_folder", m))?;
            let inside =
                w.folder.is_empty() || a == &w.folder || a.starts_with(&format!("{}/", w.folder));
            if a.is_empty() || (w.recursive && inside) {
                return Err((
                    "archive_folder",
                    format!(
                        "{a:?} is inside the watched folder; archived files would be taken again"
                    ),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks a schedule's folder, filters, cron expression and time zone.
pub fn check_schedule(s: &ScheduleTrigger) -> Result<(), (&'static str, String)> {
    relative_folder(&s.folder).map_err(|m| ("folder", m))?;
    Filter::new(&s.include, &s.exclude)?;
    Cron::parse(&s.cron, &s.timezone)?;
    Ok(())
}

pub fn relative_folder(folder: &str) -> Result<(), String> {
    if folder.is_empty() {
        return Ok(());
    }
    crate::DestPath::parse(folder)
        .map(drop)
        .map_err(|e| format!("{folder:?} must be a relative folder under the endpoint's root: {e}"))
}

/// Which files a rule takes, by their path relative to its folder.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Filter {
    /// Errors name the field (`include` or `exclude`) and the glob.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, (&'static str, String)> {
        let set = |field: &'static str, globs: &[String]| {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(
                    globset::GlobBuilder::new(g)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| (field, format!("{g:?}: {e}")))?,
                );
            }
            b.build().map_err(|e| (field, e.to_string()))
        };
        Ok(Self {
            include: if include.is_empty() {
                None
            } else {
                Some(set("include", include)?)
            },
            exclude: set("exclude", exclude)?,
        })
    }

    /// Whether `rel` is taken: not a temporary name, included, not excluded.
    pub fn matches(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        !is_temporary(name)
            && self.include.as_ref().is_none_or(|s| s.is_match(rel))
            && !self.exclude.is_match(rel)
    }
}

/// Names of files still being written by some program: rclone and browsers' partials, Office
/// lock files, editor swap files, our own probes.
pub fn is_temporary(name: &str) -> bool {
    name.ends_with(".partial")
        || name.ends_with(".part")
        || name.ends_with(".crdownload")
        || name.ends_with(".tmp")
        || name.starts_with("~$")
        || (name.starts_with('.') && (name.ends_with(".swp") || name.ends_with(".swx")))
        || name.starts_with(".pbs-probe-")
}

/// A cron expression read in a time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    schedule: cron::Schedule,
    tz: Tz,
}

impl Cron {
    /// Five fields (`min hour dom month dow`) or six with seconds first. Day-of-week names
    /// (`MON-FRI`) are the unambiguous spelling.
    /// Errors name the field (`cron` or `timezone`).
    pub fn parse(expr: &str, tz: &str) -> Result<Self, (&'static str, String)> {
        let fields = expr.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {expr}"),
            6 => expr.to_owned(),
            n => {
                return Err((
                    "cron",
                    format!(
                        "{expr:?} has {n} fields; expected 5 (min hour day month weekday) or 6 (with seconds first)"
                    ),
                ));
            }
        };
        let schedule =
            cron::Schedule::from_str(&full).map_err(|e| ("cron", format!("{expr:?}: {e}")))?;
        let tz = Tz::from_str(tz).map_err(|_| {
            (
                "timezone",
                format!("{tz:?} is not an IANA time zone such as Europe/Paris"),
            )
        })?;
        Ok(Self { schedule, tz })
    }

    /// The first firing strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last firing at or before `now` that comes after `since`, and how many there were
    /// (counting stops at 10,000).
    pub fn due_since(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, u32)> {
        let mut last = None;
        let mut count = 0;
        let mut t = since;
        while let Some(next) = self.next_after(t) {
            if next > now || count >= 10_000 {
                break;
            }
            last = Some(next);
            count += 1;
            t = next;
        }
        last.map(|l| (l, count))
    }
}
