//! Small helpers to read and write DynamoDB attribute maps without a mapping framework.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A string attribute, if present.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// A numeric attribute, if present and numeric.
pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub fn get_bool(item: &Item, name: &str) -> Option<bool> {
    item.get(name).and_then(|v| v.as_bool().ok()).copied()
}

/// Builds an `UpdateItem` whose every attribute name is aliased (`#name`) and every value bound
/// (`:name`), so no attribute can collide with DynamoDB's reserved words (`state`, `pool`, ...).
#[derive(Debug, Default)]
pub struct Update {
    sets: Vec<String>,
    removes: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    pub fn new() -> Self {
        Self::default()
    }

    /// `SET #attr = :attr`.
    pub fn set(mut self, attr: &str, value: AttributeValue) -> Self {
        self.sets.push(format!("#{attr} = :{attr}"));
        self.bind(attr, value)
    }

    /// `SET #attr = if_not_exists(#attr, :attr)`.
    pub fn set_if_absent(mut self, attr: &str, value: AttributeValue) -> Self {
        self.sets
            .push(format!("#{attr} = if_not_exists(#{attr}, :{attr})"));
        self.bind(attr, value)
    }

    /// `REMOVE #attr`.
    pub fn remove(mut self, attr: &str) -> Self {
        self.removes.push(format!("#{attr}"));
        self.name(attr)
    }

    /// Makes `#attr` usable in a condition.
    pub fn name(mut self, attr: &str) -> Self {
        self.names.insert(format!("#{attr}"), attr.to_owned());
        self
    }

    /// Binds `:placeholder` for use in a condition.
    pub fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(format!(":{placeholder}"), value);
        self
    }

    fn bind(self, attr: &str, value: AttributeValue) -> Self {
        self.name(attr).value(attr, value)
    }

    pub fn apply(
        self,
        req: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
        condition: Option<&str>,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let mut expression = format!("SET {}", self.sets.join(", "));
        if !self.removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", self.removes.join(", ")));
        }
        req.update_expression(expression)
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values(Some(self.values))
    }
}

/// A short description of an SDK error of any AWS client: the service's code and message when
/// there is one, else the whole cause chain (connection errors).
pub fn describe_error<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => format!(
            "{}: {}",
            se.code().unwrap_or("ServiceError"),
            se.message().unwrap_or("no message")
        ),
        None => aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
    }
}

/// Whether an SDK error is a failed condition expression.
pub fn is_condition_failure<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}
