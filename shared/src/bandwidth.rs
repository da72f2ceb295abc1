//! Bandwidth limits: one rate, or a weekly timetable, in rclone's `--bwlimit` syntax.
//!
//! `"10M"` is 10 MiB/s all the time; `"08:00,512k 18:00,off"` switches every day;
//! `"Mon-08:00,10M Fri-18:00,off"` switches on given days. rclone applies a timetable itself,
//! inside a running transfer, so a limit changes live at its times (the executor's local time).
//! An executor's limit and a template's are combined into one timetable that, at every minute of
//! the week, takes the lower of the two ([`Bandwidth::lowest`]).

use std::fmt;

use chrono::Weekday;
use serde::{Deserialize, Serialize};

const MINUTES_PER_DAY: u32 = 24 * 60;
const DAYS: [(&str, Weekday); 7] = [
    ("Mon", Weekday::Mon),
    ("Tue", Weekday::Tue),
    ("Wed", Weekday::Wed),
    ("Thu", Weekday::Thu),
    ("Fri", Weekday::Fri),
    ("Sat", Weekday::Sat),
    ("Sun", Weekday::Sun),
];

/// A rate: bytes per second, or unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// `None` is `off` (unlimited).
    bytes_per_second: Option<u64>,
    /// As written, for rclone and for people.
    text: String,
}

impl Rate {
    fn parse(token: &str) -> Result<Self, String> {
        if token == "off" {
            return Ok(Self {
                bytes_per_second: None,
                text: token.to_owned(),
            });
        }
        if token.contains(':') {
            return Err(format!(
                "rate {token:?}: separate upload:download rates are not supported; give one rate"
            ));
        }
        let (number, unit) = match token.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&token[..i], c),
            _ => (token, 'k'),
        };
        let scale: u64 = match unit.to_ascii_lowercase() {
            'b' => 1,
            'k' => 1 << 10,
            'm' => 1 << 20,
            'g' => 1 << 30,
            't' => 1 << 40,
            _ => {
                return Err(format!(
                    "rate {token:?}: unit {unit:?} is not one of B, K, M, G, T (per second)"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .ok_or_else(|| {
                format!("rate {token:?} is not a positive number with an optional unit, or \"off\"")
            })?;
        let bytes = (value * scale as f64).round();
        if bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(format!("rate {token:?} is out of range"));
        }
        Ok(Self {
            bytes_per_second: Some(bytes as u64),
            text: token.to_owned(),
        })
    }

    /// Bytes per second, or `None` for unlimited.
    pub fn bytes_per_second(&self) -> Option<u64> {
        self.bytes_per_second
    }

    fn lower<'a>(&'a self, other: &'a Rate) -> &'a Rate {
        match (self.bytes_per_second, other.bytes_per_second) {
            (None, _) => other,
            (Some(_), None) => self,
            (Some(a), Some(b)) if b < a => other,
            _ => self,
        }
    }
}

/// When a timetable entry starts: every day, or on one day, at a minute of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    day: Option<Weekday>,
    minute: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    at: Option<At>,
    rate: Rate,
}

/// A parsed limit: a single rate or a timetable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    entries: Vec<Entry>,
}

impl Bandwidth {
    /// Parses rclone's `--bwlimit` syntax, naming the entry that is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let tokens: Vec<&str> = text.split_whitespace().collect();
        match tokens.as_slice() {
            [] => return Err("a bandwidth limit is empty: give a rate such as \"10M\", \"off\" or a timetable such as \"Mon-08:00,10M Mon-18:00,off\"".into()),
            [only] if !only.contains(',') => {
                if parse_at(only).is_ok() {
                    return Err(format!("timetable entry {only:?} is not TIME,RATE (e.g. \"08:00,10M\" or \"Mon-08:00,10M\")"));
                }
                return Ok(Self {
                    entries: vec![Entry {
                        at: None,
                        rate: Rate::parse(only)?,
                    }],
                });
            }
            _ => {}
        }
        let mut entries = Vec::with_capacity(tokens.len());
        for token in tokens {
            let (when, rate) = token.split_once(',').ok_or_else(|| {
                format!("timetable entry {token:?} is not TIME,RATE (e.g. \"08:00,10M\" or \"Mon-08:00,10M\")")
            })?;
            let at = parse_at(when).map_err(|m| format!("timetable entry {token:?}: {m}"))?;
            let rate = Rate::parse(rate).map_err(|m| format!("timetable entry {token:?}: {m}"))?;
            if entries.iter().any(|e: &Entry| e.at == Some(at)) {
                return Err(format!(
                    "timetable entry {token:?} repeats a time given before"
                ));
            }
            entries.push(Entry { at: Some(at), rate });
        }
        Ok(Self { entries })
    }

    /// The limit in force at `minute_of_week` (0 = Monday 00:00).
    pub fn rate_at(&self, minute_of_week: u32) -> &Rate {
        let weekly = self.weekly();
        weekly
            .iter()
            .rev()
            .find(|(m, _)| *m <= minute_of_week)
            .or(weekly.last())
            .map(|(_, r)| *r)
            .expect("a bandwidth limit has at least one entry")
    }

    /// Every change of the week, in order: daily entries repeat on each day.
    fn weekly(&self) -> Vec<(u32, &Rate)> {
        let mut out: Vec<(u32, &Rate)> = Vec::new();
        for e in &self.entries {
            match e.at {
                None => out.push((0, &e.rate)),
                Some(At {
                    day: Some(d),
                    minute,
                }) => out.push((d.num_days_from_monday() * MINUTES_PER_DAY + minute, &e.rate)),
                Some(At { day: None, minute }) => {
                    out.extend((0..7).map(|d| (d * MINUTES_PER_DAY + minute, &e.rate)))
                }
            }
        }
        out.sort_by_key(|(m, _)| *m);
        // A day's own entry wins over a daily one at the same minute.
        out.dedup_by_key(|(m, _)| *m);
        out
    }

    /// The limit that, at every minute of the week, is the lower of `self` and `other`.
    pub fn lowest(&self, other: &Bandwidth) -> Bandwidth {
        let mut points: Vec<u32> = self
            .weekly()
            .into_iter()
            .chain(other.weekly())
            .map(|(m, _)| m)
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut steps: Vec<(u32, Rate)> = Vec::new();
        for m in points {
            let rate = self.rate_at(m).lower(other.rate_at(m)).clone();
            if steps
                .last()
                .is_none_or(|(_, last)| last.bytes_per_second != rate.bytes_per_second)
            {
                steps.push((m, rate));
            }
        }
        // The week wraps: the last step runs on into Monday 00:00, so a first step with the same
        // rate adds nothing.
        if steps.len() > 1
            && steps.last().map(|(_, r)| r.bytes_per_second) == Some(steps[0].1.bytes_per_second)
        {
            steps.remove(0);
        }
        if steps.len() == 1 {
            let (_, rate) = steps.pop().expect("one step");
            return Bandwidth {
                entries: vec![Entry { at: None, rate }],
            };
        }
        let entries = steps
            .into_iter()
            .map(|(m, rate)| Entry {
                at: Some(At {
                    day: Some(DAYS[(m / MINUTES_PER_DAY) as usize].1),
                    minute: m % MINUTES_PER_DAY,
                }),
                rate,
            })
            .collect();
        Bandwidth { entries }
    }

    /// Whether the limit never limits anything.
    pub fn is_off(&self) -> bool {
        self.entries
            .iter()
            .all(|e| e.rate.bytes_per_second.is_none())
    }
}

fn parse_at(when: &str) -> Result<At, String> {
    let (day, time) = match when.split_once('-') {
        Some((d, t)) => {
            let day = DAYS
                .iter()
                .find(|(name, _)| *name == d)
                .map(|(_, w)| *w)
                .ok_or_else(|| format!("day {d:?} is not one of Mon Tue Wed Thu Fri Sat Sun"))?;
            (Some(day), t)
        }
        None => (None, when),
    };
    let bad = || format!("time {time:?} is not HH:MM (00:00 to 23:59)");
    let (h, m) = time.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(At {
        day,
        minute: h * 60 + m,
    })
}

impl fmt::Display for Bandwidth {
    /// rclone's `--bwlimit` syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if let Some(at) = e.at {
                if let Some(day) = at.day {
                    let name = DAYS.iter().find(|(_, w)| *w == day).expect("a day").0;
                    write!(f, "{name}-")?;
                }
                write!(f, "{:02}:{:02},", at.minute / 60, at.minute % 60)?;
            }
            f.write_str(&e.rate.text)?;
        }
        Ok(())
    }
}

impl Serialize for Bandwidth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bandwidth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Minutes since Monday 00:00 of `t`'s week.
pub fn minute_of_week<T: chrono::Datelike + chrono::Timelike>(t: &T) -> u32 {
    t.weekday().num_days_from_monday() * MINUTES_PER_DAY + t.hour() * 60 + t.minute()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;

    fn bw(s: &str) -> Bandwidth {
        Bandwidth::parse(s).unwrap()
    }

    fn bps(b: &Bandwidth, day: u32, h: u32, m: u32) -> Option<u64> {
        b.rate_at(day * MINUTES_PER_DAY + h * 60 + m)
            .bytes_per_second()
    }

    #[test]
    fn rates_use_rclone_units() {
        assert_eq!(bps(&bw("10M"), 0, 0, 0), Some(10 << 20));
        assert_eq!(
            bps(&bw("512"), 3, 5, 0),
            Some(512 << 10),
            "default unit KiB/s"
        );
        assert_eq!(bps(&bw("2.5k"), 0, 0, 0), Some(2560));
        assert_eq!(bps(&bw("100B"), 0, 0, 0), Some(100));
        assert_eq!(bps(&bw("off"), 0, 0, 0), None);
        assert!(bw("off").is_off());
        assert_eq!(bw("10M").to_string(), "10M");
    }

    #[test]
    fn timetables_switch_by_day_and_time_and_wrap_around_the_week() {
        let daily = bw("08:00,10M 18:00,off");
        assert_eq!(bps(&daily, 2, 9, 0), Some(10 << 20));
        assert_eq!(bps(&daily, 2, 19, 0), None);
        assert_eq!(
            bps(&daily, 2, 7, 59),
            None,
            "before 08:00: the day before's 18:00"
        );
        let weekly = bw("Mon-08:00,10M Fri-18:00,off");
        assert_eq!(bps(&weekly, 2, 3, 0), Some(10 << 20));
        assert_eq!(bps(&weekly, 5, 12, 0), None);
        assert_eq!(
            bps(&weekly, 0, 7, 0),
            None,
            "Monday before 08:00 wraps to Friday's entry"
        );
        assert_eq!(weekly.to_string(), "Mon-08:00,10M Fri-18:00,off");
    }

    #[test]
    fn bad_limits_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("fast", "not a positive number"),
            ("10X", "unit 'X'"),
            ("-1M", "not a positive number"),
            ("10M:1M", "upload:download"),
            ("8:00,10M", "HH:MM"),
            ("24:00,10M", "HH:MM"),
            ("Mon-08:00", "TIME,RATE"),
            ("Lun-08:00,1M", "day \"Lun\""),
            ("08:00,1M 08:00,2M", "repeats"),
        ] {
            let e = Bandwidth::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_lower_limit_wins_at_every_minute() {
        let office = bw("Mon-08:00,10M Mon-18:00,off Tue-08:00,10M Tue-18:00,off");
        let site = bw("4M");
        let both = office.lowest(&site);
        for (day, h) in [(0, 9), (0, 20), (1, 12), (4, 3)] {
            assert_eq!(bps(&both, day, h, 0), Some(4 << 20), "day {day} {h}:00");
        }
        assert_eq!(both.to_string(), "4M", "a constant result is one rate");

        let night = bw("00:00,1M 06:00,off");
        let both = office.lowest(&night);
        assert_eq!(bps(&both, 0, 3, 0), Some(1 << 20));
        assert_eq!(bps(&both, 0, 9, 0), Some(10 << 20));
        assert_eq!(bps(&both, 0, 19, 0), None);
        assert_eq!(bps(&both, 2, 9, 0), None);
        assert_eq!(bps(&both, 6, 1, 0), Some(1 << 20));
        let again = Bandwidth::parse(&both.to_string()).unwrap();
        for m in (0..MINUTES_PER_WEEK).step_by(30) {
            assert_eq!(
                again.rate_at(m).bytes_per_second(),
                both.rate_at(m).bytes_per_second(),
                "minute {m}"
            );
        }
        assert!(bw("off").lowest(&bw("off")).is_off());
        assert_eq!(
            bw("Mon-08:00,1M Mon-18:00,off")
                .lowest(&bw("off"))
                .to_string(),
            "Mon-08:00,1M Mon-18:00,off"
        );
        let pairs = [
            ("Mon-08:00,1M Mon-18:00,off", "off"),
            ("Mon-08:00,1M Mon-18:00,off", "4M"),
            ("08:00,10M 18:00,off", "Wed-12:00,2M Thu-00:00,off"),
            ("00:00,1M 06:00,8M", "Sun-23:00,off Mon-01:00,512k"),
        ];
        for (a, b) in pairs {
            let (a, b) = (bw(a), bw(b));
            let both = a.lowest(&b);
            for m in (0..MINUTES_PER_WEEK).step_by(15) {
                let want = a.rate_at(m).lower(b.rate_at(m)).bytes_per_second();
                assert_eq!(
                    both.rate_at(m).bytes_per_second(),
                    want,
                    "{a} & {b} at minute {m}: {both}"
                );
            }
        }
    }
}
