//! Destination path templates such as `{yyyy}/{mm}/{dd}/{key}`.
//!
//! A template is parsed once (unknown placeholders and unbalanced braces are errors), then
//! rendered per object. Rendering checks the object key before use and the whole result after,
//! so no key, however hostile, can place a file outside the destination root.

use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::dest_path::{DestPath, PathError};

/// The placeholders a path template may use.
pub const PLACEHOLDERS: &[&str] = &["key", "basename", "dirname", "bucket", "yyyy", "mm", "dd"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Key,
    Basename,
    Dirname,
    Bucket,
    Year,
    Month,
    Day,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "key" => Self::Key,
            "basename" => Self::Basename,
            "dirname" => Self::Dirname,
            "bucket" => Self::Bucket,
            "yyyy" => Self::Year,
            "mm" => Self::Month,
            "dd" => Self::Day,
            _ => return None,
        })
    }

    fn uses_key(self) -> bool {
        matches!(self, Self::Key | Self::Basename | Self::Dirname)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

/// Why a path template or its rendering was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown placeholder {{{0}}}; known placeholders: {{key}}, {{basename}}, {{dirname}}, {{bucket}}, {{yyyy}}, {{mm}}, {{dd}}"
    )]
    UnknownPlaceholder(String),
    #[error("unbalanced '{{' or '}}' at byte {0}")]
    Unbalanced(usize),
    #[error("path template is empty")]
    Empty,
    #[error("path template could escape the destination root: {0}")]
    Escapes(PathError),
    #[error("object key {key:?} cannot be used as a path: {reason}")]
    UnsafeKey { key: String, reason: PathError },
    #[error("rendered path is not safe: {0}")]
    Rendered(PathError),
}

/// What a template is rendered against.
#[derive(Debug, Clone)]
pub struct RenderContext<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub event_time: DateTime<Utc>,
}

/// A parsed destination path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    parts: Vec<Part>,
}

impl PathTemplate {
    /// Parses `source` and proves it cannot escape the root with any safe key.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        if source.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source.char_indices().peekable();
        while let Some((i, c)) = rest.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match rest.next() {
                            Some((_, '}')) => break,
                            Some((j, '{')) => return Err(TemplateError::Unbalanced(j)),
                            Some((_, ch)) => name.push(ch),
                            None => return Err(TemplateError::Unbalanced(i)),
                        }
                    }
                    let placeholder = Placeholder::from_name(&name)
                        .ok_or(TemplateError::UnknownPlaceholder(name))?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Placeholder(placeholder));
                }
                '}' => return Err(TemplateError::Unbalanced(i)),
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let template = Self {
            source: source.to_owned(),
            parts,
        };
        template.check_cannot_escape()?;
        Ok(template)
    }

    /// The literal parts must not be absolute nor contain `..`: rendering with a harmless key
    /// shows it, since placeholders only ever insert checked, relative values.
    fn check_cannot_escape(&self) -> Result<(), TemplateError> {
        if let Some(Part::Literal(first)) = self.parts.first()
            && first.starts_with('/')
        {
            return Err(TemplateError::Escapes(PathError::Absolute(
                self.source.clone(),
            )));
        }
        let sample = RenderContext {
            bucket: "bucket",
            key: "dir/file.bin",
            event_time: DateTime::<Utc>::UNIX_EPOCH,
        };
        self.render(&sample).map(|_| ()).map_err(|e| match e {
            TemplateError::Rendered(p) => TemplateError::Escapes(p),
            other => other,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders the template for one object.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<DestPath, TemplateError> {
        let uses_key = self
            .parts
            .iter()
            .any(|p| matches!(p, Part::Placeholder(ph) if ph.uses_key()));
        if uses_key {
            DestPath::parse(ctx.key).map_err(|reason| TemplateError::UnsafeKey {
                key: ctx.key.to_owned(),
                reason,
            })?;
        }
        let (dirname, basename) = match ctx.key.rsplit_once('/') {
            Some((dir, base)) => (dir, base),
            None => ("", ctx.key),
        };
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Placeholder(p) => match p {
                    Placeholder::Key => out.push_str(ctx.key),
                    Placeholder::Basename => out.push_str(basename),
                    Placeholder::Dirname => out.push_str(dirname),
                    Placeholder::Bucket => out.push_str(ctx.bucket),
                    Placeholder::Year => out.push_str(&format!("{:04}", ctx.event_time.year())),
                    Placeholder::Month => out.push_str(&format!("{:02}", ctx.event_time.month())),
                    Placeholder::Day => out.push_str(&format!("{:02}", ctx.event_time.day())),
                },
            }
        }
        // The literal text is relative (checked at parse) and the key is relative (checked above),
        // so a leading '/' can only come from `{dirname}` of a key at the bucket's root.
        let trimmed = if self.starts_with_dirname() {
            out.trim_start_matches('/')
        } else {
            &out
        };
        DestPath::from_rendered(trimmed).map_err(TemplateError::Rendered)
    }

    fn starts_with_dirname(&self) -> bool {
        matches!(
            self.parts.first(),
            Some(Part::Placeholder(Placeholder::Dirname))
        )
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for PathTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for PathTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ctx(key: &str) -> RenderContext<'_> {
        RenderContext {
            bucket: "media",
            key,
            event_time: Utc.with_ymd_and_hms(2026, 3, 7, 12, 0, 0).unwrap(),
        }
    }

    fn render(template: &str, key: &str) -> Result<String, TemplateError> {
        PathTemplate::parse(template)?
            .render(&ctx(key))
            .map(|p| p.as_str().to_owned())
    }

    #[test]
    fn renders_every_placeholder() {
        assert_eq!(render("{key}", "a/b c.txt").unwrap(), "a/b c.txt");
        assert_eq!(
            render("{bucket}/{yyyy}/{mm}/{dd}/{basename}", "x/y/z.mov").unwrap(),
            "media/2026/03/07/z.mov"
        );
        assert_eq!(
            render("out/{dirname}/v1-{basename}", "x/y/z.mov").unwrap(),
            "out/x/y/v1-z.mov"
        );
    }

    #[test]
    fn dirname_of_a_root_key_is_empty_not_absolute() {
        assert_eq!(render("{dirname}/{basename}", "z.mov").unwrap(), "z.mov");
        assert_eq!(
            render("in/{dirname}/{basename}", "z.mov").unwrap(),
            "in/z.mov"
        );
    }

    #[test]
    fn hostile_keys_are_refused_not_rewritten() {
        for key in [
            "../../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\0b",
            "a\\..\\b",
        ] {
            let err = render("incoming/{key}", key).unwrap_err();
            assert!(
                matches!(err, TemplateError::UnsafeKey { .. }),
                "{key}: {err}"
            );
        }
        // basename and dirname are checked through the key too.
        assert!(render("{basename}", "a/..").is_err());
        assert!(render("{dirname}/x", "../x").is_err());
    }

    #[test]
    fn templates_that_could_escape_are_refused_at_parse() {
        for t in [
            "/abs/{key}",
            "../{key}",
            "a/../../{basename}",
            "{key}/..",
            "C:/x/{key}",
        ] {
            assert!(
                matches!(PathTemplate::parse(t), Err(TemplateError::Escapes(_))),
                "{t} parsed"
            );
        }
    }

    #[test]
    fn template_syntax_errors() {
        assert_eq!(
            PathTemplate::parse("{nope}/x"),
            Err(TemplateError::UnknownPlaceholder("nope".into()))
        );
        assert!(matches!(
            PathTemplate::parse("{key"),
            Err(TemplateError::Unbalanced(0))
        ));
        assert!(matches!(
            PathTemplate::parse("a}b"),
            Err(TemplateError::Unbalanced(1))
        ));
        assert_eq!(PathTemplate::parse(" "), Err(TemplateError::Empty));
    }

    #[test]
    fn constant_template_ignores_hostile_key() {
        assert_eq!(
            render("fixed/{yyyy}.bin", "../x").unwrap(),
            "fixed/2026.bin"
        );
    }
}
