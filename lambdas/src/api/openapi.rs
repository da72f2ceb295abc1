//! `GET /api/v1/openapi.json`: the API's OpenAPI 3 document, kept beside the router; a unit test
//! holds the two to the same routes.

use axum::http::header;
use axum::response::IntoResponse;

use super::ApiError;
use super::auth::{Principal, Role};

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document(principal: Principal) -> Result<impl IntoResponse, ApiError> {
    principal.require(Role::Viewer)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], DOCUMENT))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// `(method, path)` of every route the router declares, read from its source.
    fn router_routes() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let start = source.find("let v1 = Router::new()").expect("router");
        let end = source[start..].find(".fallback(").expect("fallback") + start;
        let block: String = source[start..end].split_whitespace().collect();
        let mut out = BTreeSet::new();
        for part in block.split(".route(\"").skip(1) {
            let (path, handlers) = part.split_once("\",").expect("route path");
            for method in ["get", "post", "put", "delete"] {
                // `get(x)`, `.post(x)` …: a handler for this method.
                let needle = format!("{method}(");
                if handlers.starts_with(&needle) || handlers.contains(&format!(".{needle}")) {
                    out.insert((method.to_owned(), format!("/api/v1{path}")));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_lists_exactly_the_routes_of_the_router() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let op = &item[method];
                assert!(
                    op["x-pbs-role"].is_string(),
                    "{method} {path} does not say which role it needs"
                );
                documented.insert((method.clone(), path.clone()));
            }
        }
        let routes = router_routes();
        assert!(
            routes.len() >= 15,
            "routes read from the router: {routes:?}"
        );
        assert_eq!(documented, routes);
    }
}
