//! Identifier newtypes, each parsed once at the boundary so the rest of the code can trust them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Checks the shape shared by template ids, pool names and endpoint names: 1 to 63 characters of
/// lowercase ASCII letters, digits, `-` and `_`, starting with a letter or digit. The shape keeps
/// names safe in queue names, file names, URLs and environment variables.
fn check_slug(kind: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    let err = |reason| {
        Err(NameError {
            kind,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return err("must not be empty");
    }
    if value.len() > max {
        return err("is too long");
    }
    if !value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return err("must start with a lowercase letter or a digit");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return err("may only contain lowercase letters, digits, '-' and '_'");
    }
    Ok(())
}

/// Words a pool name may not hold (between `-`): the queues of a pool are named after it
/// (`<prefix><pool>`, `<prefix><pool>-dlq`, `<prefix><pool>-ctl-<executor>`), so a pool named
/// `a-dlq` or `a-ctl-x` would name another pool's dead-letter or control queue, and an IAM policy
/// granting `<prefix>a-ctl-*` would reach it.
const RESERVED_POOL_WORDS: [&str; 2] = ["ctl", "dlq"];

fn check_pool_words(value: &str) -> Result<(), &'static str> {
    if value
        .split('-')
        .any(|word| RESERVED_POOL_WORDS.contains(&word))
    {
        return Err(
            "may not hold the word 'ctl' or 'dlq' between '-' (they name a pool's control and dead-letter queues)",
        );
    }
    Ok(())
}

fn no_more_checks(_: &str) -> Result<(), &'static str> {
    Ok(())
}

macro_rules! slug_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        slug_newtype!($(#[$doc])* $name, $kind, $max, no_more_checks);
    };
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $extra:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates the name.
            pub fn parse(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check_slug($kind, &value, $max)?;
                if let Err(reason) = $extra(&value) {
                    return Err(NameError {
                        kind: $kind,
                        value,
                        reason,
                    });
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

slug_newtype!(
    /// A transfer template's id, e.g. `media-ingest`.
    TemplateId, "template id", 63
);
slug_newtype!(
    /// An executor pool's name, e.g. `default` or `site-b`. Each pool has one work queue.
    PoolName, "pool name", 63, check_pool_words
);
slug_newtype!(
    /// A named endpoint that the executors of a pool resolve locally, e.g. `archive-share`.
    EndpointName, "endpoint name", 63
);
slug_newtype!(
    /// A job's id: deterministic for event-driven jobs (see `job::event_job_id`).
    JobId, "job id", 64
);
slug_newtype!(
    /// An executor's id, unique within its pool, e.g. the host name.
    ExecutorId, "executor id", 63
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs() {
        assert_eq!(PoolName::parse("site-b_2").unwrap().as_str(), "site-b_2");
        assert!(TemplateId::parse("0abc").is_ok());
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        let e = PoolName::parse("Site").unwrap_err();
        assert_eq!(e.reason, "must start with a lowercase letter or a digit");
        assert!(PoolName::parse("").is_err());
        assert!(PoolName::parse("a/b").is_err());
        assert!(PoolName::parse("-a").is_err());
        assert!(PoolName::parse("a".repeat(64)).is_err());
        assert!(JobId::parse("a".repeat(64)).is_ok());
        assert!(
            EndpointName::parse("a b")
                .unwrap_err()
                .to_string()
                .contains("a b")
        );
    }

    #[test]
    fn a_pool_name_cannot_name_another_pools_queues() {
        for taken in ["a-dlq", "a-ctl-b", "ctl", "dlq-a", "a-ctl"] {
            let e = PoolName::parse(taken).unwrap_err();
            assert!(e.reason.contains("'ctl' or 'dlq'"), "{taken}: {e}");
        }
        for fine in ["dlqs", "a_ctl", "control", "site-b"] {
            assert!(PoolName::parse(fine).is_ok(), "{fine}");
        }
        assert!(
            ExecutorId::parse("a-ctl").is_ok(),
            "only pool names are restricted"
        );
    }

    #[test]
    fn deserialize_validates() {
        let r: Result<PoolName, _> = serde_json::from_str("\"../etc\"");
        assert!(r.unwrap_err().to_string().contains("invalid pool name"));
    }
}
