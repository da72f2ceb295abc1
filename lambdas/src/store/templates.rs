//! The templates table: one item per template (its JSON document), plus a generation counter
//! that every change bumps so the trigger can keep a cached copy and still see edits at once.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::Utc;
use pbs_shared::{Template, TemplateId};

use crate::store::items::{Item, describe_error, get_n, get_s, is_condition_failure, n, s};

/// The key of the generation counter item. Template ids cannot start with `_`, so it never
/// collides with a template.
const GENERATION_KEY: &str = "__generation__";

#[derive(Debug, thiserror::Error)]
pub enum TemplateTableError {
    #[error("templates table: {0}")]
    Dynamo(String),
    #[error("template {0} already exists")]
    Exists(TemplateId),
    #[error("template {0} not found")]
    NotFound(TemplateId),
}

fn dynamo_err<E, R>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> TemplateTableError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    TemplateTableError::Dynamo(describe_error(&e))
}

/// A stored template, or why a stored item could not be read as one.
pub type Stored = Result<Template, (String, String)>;

#[derive(Clone)]
pub struct TemplateTable {
    client: Client,
    table: String,
}

impl TemplateTable {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The current generation; 0 before the first change.
    pub async fn generation(&self) -> Result<u64, TemplateTableError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("template_id", s(GENERATION_KEY))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_err)?;
        Ok(out.item().and_then(|i| get_n(i, "generation")).unwrap_or(0))
    }

    async fn bump_generation(&self) -> Result<(), TemplateTableError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("template_id", s(GENERATION_KEY))
            .update_expression("ADD #generation :one")
            .expression_attribute_names("#generation", "generation")
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(dynamo_err)?;
        Ok(())
    }

    /// Every stored template; an item that no longer parses is returned as `(id, reason)`.
    pub async fn load_all(&self) -> Result<Vec<Stored>, TemplateTableError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(dynamo_err)?;
            for item in page.items() {
                let id = get_s(item, "template_id").unwrap_or_default();
                if id == GENERATION_KEY {
                    continue;
                }
                out.push(parse_item(item));
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    pub async fn get(&self, id: &TemplateId) -> Result<Option<Stored>, TemplateTableError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("template_id", s(id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_err)?;
        Ok(out.item().map(parse_item))
    }

    /// Stores a template; with `create_only`, fails if one with the same id exists.
    pub async fn put(&self, t: &Template, create_only: bool) -> Result<(), TemplateTableError> {
        let doc = serde_json::to_string(t).expect("templates serialise");
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("template_id", s(t.id.as_str()))
            .item("doc", s(doc))
            .item("updated_at", s(Utc::now().to_rfc3339()));
        if create_only {
            req = req.condition_expression("attribute_not_exists(template_id)");
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if is_condition_failure(&e) => {
                return Err(TemplateTableError::Exists(t.id.clone()));
            }
            Err(e) => return Err(dynamo_err(e)),
        }
        self.bump_generation().await
    }

    pub async fn delete(&self, id: &TemplateId) -> Result<(), TemplateTableError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("template_id", s(id.as_str()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(dynamo_err)?;
        if out.attributes().is_none_or(|a| a.is_empty()) {
            return Err(TemplateTableError::NotFound(id.clone()));
        }
        self.bump_generation().await
    }
}

fn parse_item(item: &Item) -> Stored {
    let id = get_s(item, "template_id").unwrap_or("?").to_owned();
    let doc = match item.get("doc") {
        Some(AttributeValue::S(doc)) => doc,
        _ => return Err((id, "item has no \"doc\" string attribute".into())),
    };
    Template::from_json(doc.as_bytes()).map_err(|e| (id, e.to_string()))
}
