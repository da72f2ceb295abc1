//! Who is calling: every API route requires a JWT (RS256) from the configured issuer, verified
//! here against the issuer's JSON Web Key Set — not only by API Gateway.
//!
//! Roles come from the `cognito:groups` claim (Cognito user pool groups; the local dev issuer
//! uses the same claim): `viewer` reads, `operator` also creates, retries and cancels jobs,
//! `admin` also manages templates and pools. A caller with several groups has the highest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

use super::ApiError;

/// A role, ordered: each includes the rights of those below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The verified caller of a request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Principal {
    /// How people know the caller: the token's `email`, else its user name, else `sub`.
    pub name: String,
    pub subject: String,
    pub role: Role,
}

impl Principal {
    /// `Ok` when this caller holds at least `needed`; otherwise the 403 to answer.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {} role; {} has {}",
                needed.as_str(),
                self.name,
                self.role.as_str()
            )))
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, rename = "cognito:groups")]
    groups: Vec<String>,
    #[serde(default, rename = "cognito:username")]
    cognito_username: Option<String>,
    #[serde(default)]
    username: Option<String>,
    /// Cognito ID tokens carry it; a pool signing users in by e-mail names them by a UUID.
    #[serde(default)]
    email: Option<String>,
    /// Cognito access tokens carry the app client here instead of in `aud`.
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
}

/// Where the verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS document fetched over HTTPS (Cognito: `<issuer>/.well-known/jwks.json`), cached and
    /// fetched again when a token names a key id not in the cache.
    Url(String),
    /// A JWKS document given inline (the local dev issuer).
    Inline(JwkSet),
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Verifier {
    issuer: String,
    audience: Option<String>,
    source: KeySource,
    http: reqwest::Client,
    cache: Arc<RwLock<Option<(JwkSet, Instant)>>>,
}

/// Keys are fetched again at most this often when an unknown key id shows up.
const REFRESH_AFTER: Duration = Duration::from_secs(60);
/// Fetched keys are used at most this long before they are fetched again.
const KEYS_EXPIRE: Duration = Duration::from_secs(3600);

impl Verifier {
    /// `jwks` is an `http(s)://` URL of a JWKS document or the document itself.
    pub fn new(issuer: &str, audience: Option<&str>, jwks: &str) -> Result<Self, String> {
        let jwks = jwks.trim();
        let source = if jwks.starts_with("https://") {
            KeySource::Url(jwks.to_owned())
        } else if let Some(rest) = jwks.strip_prefix("http://") {
            // Keys fetched in the clear could be swapped on the way: only a local issuer may.
            let host = rest.split(['/', ':']).next().unwrap_or_default();
            if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                return Err(format!(
                    "the JWKS URL {jwks} is not HTTPS (plain HTTP is accepted only from this machine)"
                ));
            }
            KeySource::Url(jwks.to_owned())
        } else {
            let set: JwkSet = serde_json::from_str(jwks)
                .map_err(|e| format!("the JWKS is neither a URL nor a JWKS document: {e}"))?;
            if set.keys.is_empty() {
                return Err("the JWKS document has no keys".into());
            }
            KeySource::Inline(set)
        };
        if issuer.trim().is_empty() {
            return Err("the token issuer is empty".into());
        }
        Ok(Self {
            issuer: issuer.trim().to_owned(),
            audience: audience
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(Into::into),
            source,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?,
            cache: Arc::new(RwLock::new(None)),
        })
    }

    /// The caller of a request with header `authorization` (its value, if any).
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let Some(header) = authorization else {
            return Err(ApiError::Unauthorized(
                "no Authorization header: send `Authorization: Bearer <token>`".into(),
            ));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header is not `Bearer <token>`".into())
            })?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ApiError::Unauthorized(format!("the token is not a JWT: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(ApiError::Unauthorized(format!(
                "token algorithm {:?} is not accepted; tokens are RS256",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| ApiError::Unauthorized("the token header has no key id (kid)".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // A token not valid yet (`nbf` ahead, beyond the leeway) is refused too.
        validation.validate_nbf = true;
        // The audience is checked below: Cognito access tokens carry `client_id` instead.
        validation.validate_aud = false;
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| ApiError::Unauthorized(format!("the token is not valid: {e}")))?;
        let claims = data.claims;
        if let Some(expected) = &self.audience {
            let in_aud = match &claims.aud {
                Some(serde_json::Value::String(a)) => a == expected,
                Some(serde_json::Value::Array(list)) => list.iter().any(|a| a == expected),
                _ => false,
            };
            if !in_aud && claims.client_id.as_deref() != Some(expected.as_str()) {
                return Err(ApiError::Unauthorized(format!(
                    "the token is not for this API (audience {expected})"
                )));
            }
        }
        let name = claims
            .email
            .or(claims.cognito_username)
            .or(claims.username)
            .unwrap_or_else(|| claims.sub.clone());
        let role = claims
            .groups
            .iter()
            .filter_map(|g| Role::parse(g))
            .max()
            .ok_or_else(|| {
                ApiError::Forbidden(format!(
                    "{name} is in no PBS Rclone group (viewer, operator or admin)"
                ))
            })?;
        Ok(Principal {
            name,
            subject: claims.sub,
            role,
        })
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, ApiError> {
        let found = match &self.source {
            KeySource::Inline(set) => set.find(kid).cloned(),
            KeySource::Url(url) => {
                let cached = self.cache.read().await.clone();
                match cached {
                    // A key the issuer withdrew stops being trusted within KEYS_EXPIRE.
                    Some((set, at)) if set.find(kid).is_some() && at.elapsed() < KEYS_EXPIRE => {
                        set.find(kid).cloned()
                    }
                    // An unknown key id fetches again, at most once per REFRESH_AFTER.
                    Some((_, at)) if at.elapsed() < REFRESH_AFTER => None,
                    _ => {
                        let set = self.fetch(url).await?;
                        let jwk = set.find(kid).cloned();
                        *self.cache.write().await = Some((set, Instant::now()));
                        jwk
                    }
                }
            }
        };
        let jwk = found.ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "the token's key id {kid} is not one of the issuer's"
            ))
        })?;
        DecodingKey::from_jwk(&jwk)
            .map_err(|e| ApiError::Unauthorized(format!("the issuer's key {kid} is unusable: {e}")))
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, ApiError> {
        let fetched = async {
            let res = self.http.get(url).send().await?.error_for_status()?;
            res.json::<JwkSet>().await
        }
        .await;
        fetched
            .map_err(|e| ApiError::Internal(format!("fetching the issuer's keys from {url}: {e}")))
    }
}
