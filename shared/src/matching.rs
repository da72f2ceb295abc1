//! Matching objects against templates.
//!
//! Templates are compiled once per load (globs built with `globset`) and then tested against each
//! object: bucket equality, key glob, optional size bounds.

use globset::GlobMatcher;

use crate::glob::compile_glob;

use crate::template::{Template, Trigger};

/// The object an event is about, key already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub sequencer: Option<String>,
}

impl ObjectRef {
    /// A zero-byte key ending in `/` is a folder marker (the S3 console's "create folder"), not a
    /// file to deliver.
    pub fn is_folder_marker(&self) -> bool {
        self.key.ends_with('/') && self.size == 0
    }
}

/// A template ready for matching.
#[derive(Debug, Clone)]
pub struct CompiledTemplate {
    pub template: Template,
    /// The key glob of an S3 trigger; `None` for triggers that take no S3 events.
    glob: Option<GlobMatcher>,
    /// The glob's literal beginning (up to its first wildcard): a key that does not start with
    /// it cannot match, which is cheaper to see than running the glob.
    literal_prefix: String,
}

/// The part of a glob before its first special character.
fn literal_prefix(glob: &str) -> &str {
    let end = glob.find(['*', '?', '[', '{', '\\']).unwrap_or(glob.len());
    &glob[..end]
}

impl CompiledTemplate {
    pub fn new(template: Template) -> Result<Self, globset::Error> {
        let (glob, literal_prefix) = match &template.trigger {
            Trigger::S3 { key_glob, .. } => (
                Some(compile_glob(key_glob)?),
                literal_prefix(key_glob).to_owned(),
            ),
            Trigger::Watch(_) | Trigger::Schedule(_) | Trigger::Chain {} | Trigger::Manual(_) => {
                (None, String::new())
            }
        };
        Ok(Self {
            template,
            glob,
            literal_prefix,
        })
    }

    /// Whether this template takes the object.
    pub fn matches(&self, object: &ObjectRef) -> bool {
        if !self.template.enabled {
            return false;
        }
        let (
            Trigger::S3 {
                bucket,
                min_size,
                max_size,
                ..
            },
            Some(glob),
        ) = (&self.template.trigger, &self.glob)
        else {
            return false;
        };
        bucket == &object.bucket
            && object.key.starts_with(&self.literal_prefix)
            && min_size.is_none_or(|min| object.size >= min)
            && max_size.is_none_or(|max| object.size <= max)
            && glob.is_match(&object.key)
    }
}

/// Every loaded template, compiled.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    templates: Vec<CompiledTemplate>,
    /// Indexes into `templates` (in id order) of the S3 templates of each bucket.
    by_bucket: std::collections::HashMap<String, Vec<usize>>,
}

impl TemplateSet {
    /// Compiles templates; one that fails to compile is returned separately so it can be reported
    /// without hiding the others.
    pub fn compile(templates: Vec<Template>) -> (Self, Vec<(Template, globset::Error)>) {
        let mut ok = Vec::with_capacity(templates.len());
        let mut bad = Vec::new();
        for t in templates {
            match CompiledTemplate::new(t.clone()) {
                Ok(c) => ok.push(c),
                Err(e) => bad.push((t, e)),
            }
        }
        ok.sort_by(|a, b| a.template.id.cmp(&b.template.id));
        let mut by_bucket: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (i, t) in ok.iter().enumerate() {
            if let Trigger::S3 { bucket, .. } = &t.template.trigger {
                by_bucket.entry(bucket.clone()).or_default().push(i);
            }
        }
        (
            Self {
                templates: ok,
                by_bucket,
            },
            bad,
        )
    }

    /// The templates that take `object`, in id order.
    pub fn matching<'a>(
        &'a self,
        object: &'a ObjectRef,
    ) -> impl Iterator<Item = &'a Template> + 'a {
        self.by_bucket
            .get(&object.bucket)
            .into_iter()
            .flatten()
            .map(|&i| &self.templates[i])
            .filter(move |t| t.matches(object))
            .map(|t| &t.template)
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(
        id: &str,
        bucket: &str,
        glob: &str,
        min: Option<u64>,
        max: Option<u64>,
    ) -> Template {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "trigger": {"type": "s3", "bucket": bucket, "key_glob": glob, "min_size": min, "max_size": max},
            "destination": {"pool": "default", "endpoint": "disk", "path": "{key}"}
        }))
        .unwrap()
    }

    fn object(bucket: &str, key: &str, size: u64) -> ObjectRef {
        ObjectRef {
            bucket: bucket.into(),
            key: key.into(),
            size,
            etag: None,
            version_id: None,
            sequencer: None,
        }
    }

    fn ids(set: &TemplateSet, o: &ObjectRef) -> Vec<String> {
        set.matching(o).map(|t| t.id.to_string()).collect()
    }

    #[test]
    fn glob_star_stays_in_folder_double_star_crosses() {
        let (set, bad) = TemplateSet::compile(vec![
            template("flat", "b1", "in/*.mov", None, None),
            template("deep", "b1", "in/**/*.mov", None, None),
        ]);
        assert!(bad.is_empty());
        assert_eq!(ids(&set, &object("b1", "in/a.mov", 1)), ["deep", "flat"]);
        assert_eq!(ids(&set, &object("b1", "in/x/y/a.mov", 1)), ["deep"]);
        assert!(ids(&set, &object("b1", "in/a.txt", 1)).is_empty());
    }

    #[test]
    fn bucket_must_match() {
        let (set, _) = TemplateSet::compile(vec![template("t", "b1", "**", None, None)]);
        assert!(ids(&set, &object("b2", "x", 1)).is_empty());
        assert_eq!(ids(&set, &object("b1", "a b+c%.txt", 1)), ["t"]);
    }

    #[test]
    fn size_bounds_are_inclusive() {
        let (set, _) = TemplateSet::compile(vec![template("t", "b1", "**", Some(10), Some(20))]);
        assert!(ids(&set, &object("b1", "x", 9)).is_empty());
        assert_eq!(ids(&set, &object("b1", "x", 10)).len(), 1);
        assert_eq!(ids(&set, &object("b1", "x", 20)).len(), 1);
        assert!(ids(&set, &object("b1", "x", 21)).is_empty());
    }

    #[test]
    fn disabled_templates_match_nothing() {
        let mut t = template("t", "b1", "**", None, None);
        t.enabled = false;
        let (set, _) = TemplateSet::compile(vec![t]);
        assert!(ids(&set, &object("b1", "x", 1)).is_empty());
    }

    #[test]
    fn unicode_keys_match() {
        let (set, _) = TemplateSet::compile(vec![template("t", "b1", "été/*", None, None)]);
        assert_eq!(ids(&set, &object("b1", "été/🎬.mov", 1)), ["t"]);
    }

    #[test]
    fn folder_markers_are_recognised() {
        assert!(object("b", "dir/", 0).is_folder_marker());
        assert!(!object("b", "dir/", 3).is_folder_marker());
        assert!(!object("b", "dir/x", 0).is_folder_marker());
    }

    #[test]
    fn literal_prefixes_stop_at_the_first_special_character() {
        assert_eq!(literal_prefix("incoming/**/*.mov"), "incoming/");
        assert_eq!(literal_prefix("a/b.txt"), "a/b.txt");
        assert_eq!(literal_prefix("{x,y}/*"), "");
        assert_eq!(literal_prefix(r"a\*b"), "a");
        assert_eq!(literal_prefix("cam[12]/*"), "cam");
    }
}
