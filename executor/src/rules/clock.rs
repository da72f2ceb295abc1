//! Watch and schedule rules: file filters, cron clocks and the jobs they make.
//!
//! Everything here is pure (no I/O, time passed in), so the decisions (which files, which job id,
//! when a schedule fires, what happens after downtime or while a run is still going) are tested
//! with an injected clock.

use chrono::{DateTime, Utc};
use pbs_shared::path_template::RenderContext;
pub use pbs_shared::rule_spec::{Cron, Filter};
use pbs_shared::{
    Delivery, EndpointName, JobFile, JobId, JobMessage, JobSource, Origin, OriginKind, Overwrite,
    PathTemplate, PoolName, RefusedFile, RetryPolicy, TemplateId,
};

use crate::transfer::Listed;

use crate::config::{MissedRuns, ScheduleRule, WatchRule};

/// What a schedule does at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fire {
    /// Start a run for this scheduled time.
    Run(DateTime<Utc>),
    /// This scheduled time came while the previous run was still going: skipped.
    SkipOverlap(DateTime<Utc>),
    /// Runs missed while the executor was down, skipped (`missed = "skip"`).
    SkipMissed { latest: DateTime<Utc>, count: u32 },
}

/// One schedule's state: the last scheduled time handled, and whether a run is going.
#[derive(Debug, Clone)]
pub struct RuleClock {
    cron: Cron,
    missed: MissedRuns,
    /// The last scheduled time that was run or skipped (persisted).
    pub last: Option<DateTime<Utc>>,
    pub running: bool,
}

impl RuleClock {
    pub fn new(cron: Cron, missed: MissedRuns, last: Option<DateTime<Utc>>) -> Self {
        Self {
            cron,
            missed,
            last,
            running: false,
        }
    }

    /// At start-up: applies the missed-run policy to firings between the last one handled and
    /// `now`. A schedule never seen before starts counting from `now`.
    pub fn start(&mut self, now: DateTime<Utc>) -> Option<Fire> {
        let Some(last) = self.last else {
            self.last = Some(now);
            return None;
        };
        let (latest, count) = self.cron.due_since(last, now)?;
        self.last = Some(latest);
        match self.missed {
            MissedRuns::Skip => Some(Fire::SkipMissed { latest, count }),
            MissedRuns::RunOnce => {
                self.running = true;
                Some(Fire::Run(latest))
            }
        }
    }

    /// When the schedule next needs looking at.
    pub fn next_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.next_after(self.last.unwrap_or(now))
    }

    /// At `now`: fires if a scheduled time has come (several that came at once make one run).
    pub fn tick(&mut self, now: DateTime<Utc>) -> Option<Fire> {
        let since = self.last.unwrap_or(now);
        let (latest, _) = self.cron.due_since(since, now)?;
        self.last = Some(latest);
        if self.running {
            return Some(Fire::SkipOverlap(latest));
        }
        self.running = true;
        Some(Fire::Run(latest))
    }

    /// The run started by the last [`Fire::Run`] has ended.
    pub fn finished(&mut self) {
        self.running = false;
    }
}

pub use pbs_shared::job::{schedule_job_id, watch_job_id};

/// What a rule's job is made of.
pub struct RuleJob<'a> {
    pub job_id: JobId,
    pub rule: &'a TemplateId,
    pub kind: OriginKind,
    pub pool: &'a PoolName,
    pub source: &'a EndpointName,
    pub folder: &'a str,
    pub destination: &'a EndpointName,
    pub path: &'a PathTemplate,
    pub delivery: Delivery,
    pub retry: RetryPolicy,
    pub bandwidth: Option<&'a pbs_shared::Bandwidth>,
    pub now: DateTime<Utc>,
    /// Why this executor runs it (see [`Origin::why`]).
    pub why: Option<String>,
}

impl<'a> RuleJob<'a> {
    /// The job of a watch rule.
    pub fn watch(
        rule: &'a WatchRule,
        pool: &'a PoolName,
        job_id: JobId,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            job_id,
            rule: &rule.name,
            kind: OriginKind::Watch,
            pool,
            source: &rule.source,
            folder: &rule.folder,
            destination: &rule.destination,
            path: &rule.path,
            delivery: rule.delivery,
            retry: rule.retry,
            bandwidth: rule.bandwidth.as_ref(),
            now,
            why: None,
        }
    }

    /// The job of a schedule's run for `scheduled_for`.
    pub fn schedule(
        rule: &'a ScheduleRule,
        pool: &'a PoolName,
        scheduled_for: DateTime<Utc>,
    ) -> Self {
        Self {
            job_id: schedule_job_id(&rule.name, scheduled_for),
            rule: &rule.name,
            kind: OriginKind::Schedule,
            pool,
            source: &rule.source,
            folder: &rule.folder,
            destination: &rule.destination,
            path: &rule.path,
            delivery: rule.delivery,
            retry: rule.retry,
            bandwidth: rule.bandwidth.as_ref(),
            now: scheduled_for,
            why: None,
        }
    }

    /// Says why this executor runs the job.
    pub fn because(mut self, why: impl Into<String>) -> Self {
        self.why = Some(why.into());
        self
    }

    /// The folder of the destination under which the path template keeps every file at its path
    /// relative to the rule's folder (`backup/{yyyy}/{key}` → `backup/2026`; `{key}` → the
    /// destination's root), found by rendering a probe; `None` when the template renames files.
    pub fn dest_folder(&self) -> Option<String> {
        const PROBE: &str = "pbs-probe/file.dat";
        let dest = self.render(PROBE).ok()?;
        let dest = dest.as_str();
        if dest == PROBE {
            return Some(String::new());
        }
        dest.strip_suffix(PROBE)
            .and_then(|folder| folder.strip_suffix('/'))
            .map(str::to_owned)
    }

    /// Whether the file at `rel` (relative to the rule's folder) goes to `folder/rel`.
    pub fn keeps_path(&self, folder: &str, rel: &str) -> bool {
        self.render(rel)
            .is_ok_and(|d| d.as_str() == crate::transfer::endpoints::join(folder, rel))
    }

    fn render(
        &self,
        rel: &str,
    ) -> Result<pbs_shared::DestPath, pbs_shared::path_template::TemplateError> {
        self.path.render(&RenderContext {
            bucket: "",
            key: rel,
            event_time: self.now,
        })
    }

    /// The job for `files` (path relative to the rule's folder, size). A file whose destination
    /// path would be unsafe or one the destination cannot take is refused alone, with the
    /// reason: the job fails for it and copies the others.
    pub fn build(self, files: &[(String, u64)]) -> JobMessage {
        let mut taken = Vec::with_capacity(files.len());
        let mut refused = Vec::new();
        for (rel, size) in files {
            let key = crate::transfer::endpoints::join(self.folder, rel);
            match self.render(rel) {
                Ok(dest_path) => taken.push(JobFile::at(key, *size, dest_path)),
                Err(e) => refused.push(RefusedFile {
                    key,
                    size: *size,
                    error: format!("{rel:?} cannot be delivered: {e}"),
                }),
            }
        }
        let files = taken;
        JobMessage {
            v: pbs_shared::message::V1,
            job_id: self.job_id,
            template_id: self.rule.clone(),
            pool: self.pool.clone(),
            source: JobSource::Endpoint {
                endpoint: self.source.clone(),
            },
            files,
            destination: self.destination.clone(),
            retry: self.retry,
            delivery: self.delivery,
            origin: Some(Origin {
                kind: self.kind,
                rule: self.rule.to_string(),
                why: self.why,
            }),
            bandwidth: self.bandwidth.cloned(),
            created_at: self.now,
            refused,
            folder: None,
        }
    }
}

/// What a schedule's run copies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunFiles {
    /// Paths relative to the rule's folder, with their sizes.
    pub copy: Vec<(String, u64)>,
    /// Files found at their destination as they are at the source, and not copied.
    pub unchanged: usize,
}

/// Splits a schedule's `source` files into what its run copies and what is already at the
/// destination, from `dest`, the listing of the folder under which `keeps_path` says a file keeps
/// its relative path. By the overwrite policy: `overwrite` copies a file unless the destination
/// has it with the same size and modification time (as rclone decides); `skip-existing` copies
/// only files the destination lacks; `fail-if-different` copies every file, so each is compared
/// by hash when delivered. Both lists are sorted and walked once: no map of a million paths.
pub fn not_at_destination(
    mut source: Vec<Listed>,
    mut dest: Vec<Listed>,
    overwrite: Overwrite,
    keeps_path: impl Fn(&str) -> bool,
) -> RunFiles {
    let mut out = RunFiles::default();
    if overwrite == Overwrite::FailIfDifferent {
        dest.clear();
    }
    source.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    dest.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    let mut there = dest.iter().peekable();
    out.copy.reserve(source.len().min(1 << 16));
    for file in source {
        while there.next_if(|d| d.path < file.path).is_some() {}
        let same = there.peek().is_some_and(|d| {
            d.path == file.path
                && match overwrite {
                    Overwrite::SkipExisting => true,
                    _ => d.same_as(&file),
                }
        });
        if same && keeps_path(&file.path) {
            out.unchanged += 1;
        } else {
            out.copy.push((file.path, file.size));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    use crate::config::Config;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn config(rules: &str) -> Result<Config, String> {
        Config::parse(&format!(
            "pool = \"p\"\nstate_dir = \"/tmp\"\n\
             [endpoints.drop]\ntype = \"local\"\nroot = \"/srv/drop\"\n\
             [endpoints.nas]\ntype = \"smb\"\nhost = \"h\"\nshare = \"s\"\nuser = \"u\"\npassword_env = \"P\"\n\
             {rules}"
        ))
    }

    #[test]
    fn rules_are_checked_against_the_endpoints_naming_rule_and_field() {
        let watch = |extra: &str| {
            format!("[[watch]]\nname = \"w\"\nsource = \"drop\"\ndestination = \"nas\"\n{extra}\n")
        };
        assert!(config(&watch("")).is_ok());
        // A share is watched by polling.
        assert!(
            config("[[watch]]\nname = \"w\"\nsource = \"nas\"\ndestination = \"drop\"\n").is_ok()
        );
        let cases = [
            (
                watch("poll_seconds = 0"),
                "watch[0] (w).poll_seconds: must be 1 to 86400",
            ),
            (
                "[[watch]]\nname = \"w\"\nsource = \"drop\"\ndestination = \"nope\"\n".to_owned(),
                "watch[0] (w).destination: endpoint \"nope\" is not defined",
            ),
            (
                watch("after = \"move-to\""),
                "watch[0] (w).archive_folder: required with after = \"move-to\"",
            ),
            (
                watch("after = \"move-to\"\narchive_folder = \"done\""),
                "is inside the watched folder",
            ),
            (
                watch("after = \"delete\"\n[watch.delivery]\nverify = \"none\""),
                "watch[0] (w).after: deleting or moving source files needs delivery.verify",
            ),
            (watch("folder = \"../etc\""), "watch[0] (w).folder"),
            (watch("include = [\"[\"]"), "watch[0] (w).include: \"[\""),
            (
                format!("{}{}", watch(""), watch("")),
                "watch[1] (w).name: another rule has this name",
            ),
            (
                "[[schedule]]\nname = \"s\"\ncron = \"0 61 * * *\"\nsource = \"nas\"\ndestination = \"drop\"\n".to_owned(),
                "schedule[0] (s).cron:",
            ),
            (
                "[[schedule]]\nname = \"s\"\ncron = \"0 2 * * *\"\ntimezone = \"Paris\"\nsource = \"nas\"\ndestination = \"drop\"\n".to_owned(),
                "schedule[0] (s).timezone:",
            ),
        ];
        for (rules, expected) in cases {
            let e = config(&rules).unwrap_err();
            assert!(e.contains(expected), "{rules}\n=> {e}");
        }
        // A schedule may read from any endpoint, and archive outside a non-recursive folder.
        assert!(
            config("[[schedule]]\nname = \"s\"\ncron = \"*/15 * * * *\"\nsource = \"nas\"\ndestination = \"drop\"\nmissed = \"run-once\"\n").is_ok()
        );
        assert!(
            config(&watch(
                "folder = \"in\"\nafter = \"move-to\"\narchive_folder = \"done\""
            ))
            .is_ok()
        );
    }

    #[test]
    fn filters_take_included_files_and_never_temporary_names() {
        let f = Filter::new(&["**/*.mov".into(), "*.mxf".into()], &["rejects/**".into()]).unwrap();
        assert!(f.matches("a.mxf"));
        assert!(f.matches("day1/cam a/clip 1.mov"));
        assert!(!f.matches("day1/a.mxf"), "* stays within one folder");
        assert!(!f.matches("rejects/x.mov"));
        assert!(!f.matches("day1/clip.mov.1a2b3c4d.partial"));
        let all = Filter::new(&[], &[]).unwrap();
        for temp in [
            "~$report.docx",
            ".notes.txt.swp",
            "x.partial",
            ".pbs-probe-1",
        ] {
            assert!(!all.matches(temp), "{temp}");
        }
        assert!(all.matches("report.docx"));
        let (field, e) = Filter::new(&["[".into()], &[]).unwrap_err();
        assert_eq!(field, "include");
        assert!(e.starts_with("\"[\""), "{e}");
    }

    #[test]
    fn cron_reads_five_or_six_fields_in_a_named_zone() {
        assert!(Cron::parse("*/15 * * * *", "UTC").is_ok());
        assert!(Cron::parse("30 0 2 * * MON-FRI", "Europe/Paris").is_ok());
        let (field, e) = Cron::parse("* * *", "UTC").unwrap_err();
        assert!(field == "cron" && e.contains("has 3 fields"), "{e}");
        let (field, _) = Cron::parse("0 2 * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(field, "timezone");
        let (field, _) = Cron::parse("0 25 * * *", "UTC").unwrap_err();
        assert_eq!(field, "cron");
    }

    #[test]
    fn next_run_follows_local_time_across_daylight_saving_changes() {
        // 09:00 in New York: 14:00 UTC in winter, 13:00 UTC once DST starts (8 March 2026).
        let c = Cron::parse("0 9 * * *", "America/New_York").unwrap();
        let before = utc(2026, 3, 7, 14, 0);
        assert_eq!(c.next_after(before), Some(utc(2026, 3, 8, 13, 0)));
        // And back: DST ends on 1 November 2026.
        assert_eq!(
            c.next_after(utc(2026, 10, 31, 13, 0)),
            Some(utc(2026, 11, 1, 14, 0))
        );
        // 02:30 does not exist in Paris on 29 March 2026 (02:00 jumps to 03:00): that day is
        // skipped, not run twice or at a shifted hour.
        let p = Cron::parse("30 2 * * *", "Europe/Paris").unwrap();
        let next = p.next_after(utc(2026, 3, 28, 2, 0)).unwrap();
        assert_eq!(next, utc(2026, 3, 30, 0, 30));
    }

    #[test]
    fn a_run_still_going_makes_the_next_firing_skip() {
        let cron = Cron::parse("*/15 * * * *", "UTC").unwrap();
        let mut clock = RuleClock::new(cron, MissedRuns::Skip, None);
        let t0 = utc(2026, 11, 25, 10, 1);
        assert_eq!(clock.start(t0), None, "a new schedule has nothing missed");
        assert_eq!(clock.next_due(t0), Some(utc(2026, 11, 25, 10, 15)));
        assert_eq!(clock.tick(utc(2026, 11, 25, 10, 14)), None);
        assert_eq!(
            clock.tick(utc(2026, 11, 25, 10, 15)),
            Some(Fire::Run(utc(2026, 11, 25, 10, 15)))
        );
        // Still running at 10:30: skipped, and not run late when the first run ends.
        assert_eq!(
            clock.tick(utc(2026, 11, 25, 10, 30)),
            Some(Fire::SkipOverlap(utc(2026, 11, 25, 10, 30)))
        );
        clock.finished();
        assert_eq!(clock.tick(utc(2026, 11, 25, 10, 31)), None);
        assert_eq!(
            clock.tick(utc(2026, 11, 25, 10, 45)),
            Some(Fire::Run(utc(2026, 11, 25, 10, 45)))
        );
    }

    #[test]
    fn missed_runs_are_skipped_or_caught_up_once() {
        let last = utc(2026, 11, 25, 2, 0);
        // Down from 02:05 to 05:10 with an hourly schedule: 03:00, 04:00 and 05:00 were missed.
        let now = utc(2026, 11, 25, 5, 10);
        let hourly = || Cron::parse("0 * * * *", "UTC").unwrap();

        let mut skip = RuleClock::new(hourly(), MissedRuns::Skip, Some(last));
        assert_eq!(
            skip.start(now),
            Some(Fire::SkipMissed {
                latest: utc(2026, 11, 25, 5, 0),
                count: 3
            })
        );
        assert!(!skip.running);
        assert_eq!(skip.next_due(now), Some(utc(2026, 11, 25, 6, 0)));

        let mut once = RuleClock::new(hourly(), MissedRuns::RunOnce, Some(last));
        assert_eq!(once.start(now), Some(Fire::Run(utc(2026, 11, 25, 5, 0))));
        assert!(once.running);
        assert_eq!(once.tick(now), None, "one catch-up run, not three");

        // Nothing missed: nothing happens.
        let mut fine = RuleClock::new(hourly(), MissedRuns::RunOnce, Some(utc(2026, 11, 25, 5, 0)));
        assert_eq!(fine.start(now), None);
    }

    #[test]
    fn job_ids_follow_the_file_state_and_the_scheduled_time() {
        let rule = TemplateId::parse("drop").unwrap();
        let a = watch_job_id(&rule, "a.mov", 10, 1);
        assert_eq!(a, watch_job_id(&rule, "a.mov", 10, 1));
        assert_ne!(a, watch_job_id(&rule, "a.mov", 10, 2));
        assert_ne!(a, watch_job_id(&rule, "a.mov", 11, 1));
        assert!(a.as_str().starts_with("wt-"));
        let t = utc(2026, 11, 25, 2, 0);
        assert_eq!(schedule_job_id(&rule, t), schedule_job_id(&rule, t));
        assert_ne!(
            schedule_job_id(&rule, t),
            schedule_job_id(&rule, utc(2026, 11, 25, 3, 0))
        );
    }

    fn schedule_job(path: &str, check: impl FnOnce(&RuleJob<'_>)) {
        let cfg = config(&format!(
            "[[schedule]]\nname = \"s\"\ncron = \"0 2 * * *\"\nsource = \"drop\"\nfolder = \"out\"\ndestination = \"nas\"\npath = \"{path}\"\n"
        ))
        .unwrap();
        let pool = PoolName::parse("p").unwrap();
        check(&RuleJob::schedule(
            &cfg.schedule[0],
            &pool,
            utc(2026, 11, 25, 2, 0),
        ));
    }

    #[test]
    fn a_schedule_knows_the_destination_folder_when_files_keep_their_paths() {
        schedule_job("backup/{yyyy}/{key}", |job| {
            assert_eq!(job.dest_folder().as_deref(), Some("backup/2026"));
            assert!(job.keeps_path("backup/2026", "deep/a b.csv"));
            assert!(!job.keeps_path("backup", "deep/a b.csv"));
        });
        schedule_job("{key}", |job| {
            assert_eq!(job.dest_folder().as_deref(), Some(""));
            assert!(job.keeps_path("", "x/y.txt"));
        });
        // Renamed files have no folder to compare with: every file is copied.
        schedule_job("flat/{basename}", |job| assert_eq!(job.dest_folder(), None));
        schedule_job("{key}.bak", |job| assert_eq!(job.dest_folder(), None));
    }

    fn listed(path: &str, size: u64, second: u32) -> Listed {
        Listed {
            path: path.into(),
            size,
            modified: Some(utc(2026, 11, 1, 0, 0) + chrono::Duration::seconds(second.into())),
        }
    }

    #[test]
    fn a_run_copies_only_what_its_destination_lacks_or_holds_otherwise() {
        let source = || {
            vec![
                listed("z/new.txt", 1, 0),
                listed("a/same.txt", 5, 10),
                listed("grown.txt", 6, 10),
                listed("touched.txt", 5, 30),
                listed("renamed.txt", 5, 10),
            ]
        };
        let dest = || {
            vec![
                listed("touched.txt", 5, 10),
                listed("grown.txt", 5, 10),
                listed("renamed.txt", 5, 10),
                listed("a/same.txt", 5, 10),
                listed("extra.txt", 1, 0),
            ]
        };
        // `renamed.txt` goes elsewhere than `folder/renamed.txt`: never taken as unchanged.
        let keeps = |rel: &str| rel != "renamed.txt";
        let run = not_at_destination(source(), dest(), Overwrite::Overwrite, keeps);
        assert_eq!(run.unchanged, 1);
        let copied: Vec<&str> = run.copy.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            copied,
            ["grown.txt", "renamed.txt", "touched.txt", "z/new.txt"]
        );
        assert_eq!(
            run.copy[0],
            ("grown.txt".into(), 6),
            "with the source's size"
        );

        let run = not_at_destination(source(), dest(), Overwrite::SkipExisting, keeps);
        assert_eq!((run.unchanged, run.copy.len()), (3, 2), "{run:?}");

        let run = not_at_destination(source(), dest(), Overwrite::FailIfDifferent, keeps);
        assert_eq!(
            (run.unchanged, run.copy.len()),
            (0, 5),
            "each compared by hash when delivered"
        );

        // Within a second is the same time (SFTP and SMB keep seconds); a time unknown is not.
        let mut unknown = listed("a/same.txt", 5, 10);
        unknown.modified = None;
        let run = not_at_destination(
            vec![listed("a/same.txt", 5, 10)],
            vec![unknown],
            Overwrite::Overwrite,
            |_| true,
        );
        assert_eq!(run.copy.len(), 1);
        let mut close = listed("a/same.txt", 5, 10);
        close.modified = close
            .modified
            .map(|t| t + chrono::Duration::milliseconds(600));
        let run = not_at_destination(
            vec![listed("a/same.txt", 5, 10)],
            vec![close],
            Overwrite::Overwrite,
            |_| true,
        );
        assert_eq!(run.unchanged, 1);
    }
}
