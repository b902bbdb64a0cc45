//! Who may call: an API key (Bearer, or Basic's password on the webhook routes), or on a route
//! configured for signed calls a valid Standard Webhooks signature instead. Ingest keys
//! (`RELAY_API_KEYS`) reach the ingest routes only; admin keys (`RELAY_ADMIN_KEYS`) reach
//! those and the management API. A key is never logged or echoed.

use super::error::ApiError;
use super::router::AppState;
use crate::domain::secret::key_matches;
use crate::security::signature::{SignatureError, SignedHeaders, Verifier, WebhookSecret};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What the caller's key lets it do; the handlers find it in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// An ingest key, or a signed call: the ingest routes.
    Ingest,
    /// An admin key: everything.
    Admin,
}

/// The scope of a presented key; `None` for no key or an unknown one.
async fn scope_of(state: &AppState, presented: Option<&str>) -> Result<Option<Scope>, ApiError> {
    let Some(key) = presented else {
        return Ok(None);
    };
    let admin = state
        .credentials
        .admin_keys()
        .await
        .map_err(|e| ApiError::unavailable("cannot read the admin keys", e))?;
    if key_matches(key, &admin) {
        return Ok(Some(Scope::Admin));
    }
    let keys = state
        .credentials
        .api_keys()
        .await
        .map_err(|e| ApiError::unavailable("cannot read the API keys", e))?;
    Ok(key_matches(key, &keys).then_some(Scope::Ingest))
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send a valid API key as Authorization: Bearer <key>",
    )
}

/// The middleware in front of the management routes: admin keys only (an ingest key is
/// known but not enough: 403).
pub(crate) async fn require_admin(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = bearer(&req, false);
    match scope_of(&state, presented.as_deref()).await? {
        Some(Scope::Admin) => {
            req.extensions_mut().insert(Scope::Admin);
            Ok(next.run(req).await)
        }
        Some(Scope::Ingest) => Err(admin_needed()),
        None => Err(unauthorized()),
    }
}

/// `403 forbidden`: the route is for admin keys.
pub(crate) fn admin_needed() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this needs an admin key (RELAY_ADMIN_KEYS, or the secret's admin_keys); an ingest key cannot use the management API",
    )
}

fn bearer(req: &Request, webhook: bool) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| presented_key(v, webhook))
}

/// The middleware in front of every ingest `/v1` route.
pub(crate) async fn require_key(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let webhook = path.starts_with("/v1/webhooks/");
    // A route configured for signed calls takes a valid Standard Webhooks signature instead
    // of an API key: the signing secret is what authenticates the sender.
    let signers = match path.as_str() {
        "/v1/events" if req.method() == Method::POST => &state.config.signatures.events,
        "/v1/webhooks/smartemailing" => &state.config.signatures.smartemailing,
        _ => &Vec::new(),
    };
    if !signers.is_empty() {
        req.extensions_mut().insert(Scope::Ingest);
        return verify_signed(&state, signers, req, next).await;
    }
    let presented = bearer(&req, webhook);
    match scope_of(&state, presented.as_deref()).await? {
        Some(scope) => {
            req.extensions_mut().insert(scope);
            Ok(next.run(req).await)
        }
        None => Err(unauthorized()),
    }
}

/// The signing secrets of a route; a missing or malformed one is logged and left out.
async fn signing_secrets(
    state: &AppState,
    signers: &[String],
) -> Result<Vec<WebhookSecret>, ApiError> {
    let mut secrets = Vec::new();
    for name in signers {
        let secret = state
            .credentials
            .secret(name)
            .await
            .map_err(|e| ApiError::unavailable("cannot read the signing secrets", e))?;
        match secret.map(|s| WebhookSecret::parse(s.expose())) {
            Some(Ok(w)) => secrets.push(w),
            Some(Err(e)) => {
                tracing::error!(secret = %name, error = %e, "a signing secret is malformed")
            }
            None => tracing::error!(secret = %name, "a signing secret is not set"),
        }
    }
    Ok(secrets)
}

async fn verify_signed(
    state: &AppState,
    signers: &[String],
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let secrets = signing_secrets(state, signers).await?;
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, state.body_limit)
        .await
        .map_err(|_| ApiError::too_large(state.body_limit))?;
    let id = Verifier::new(secrets)
        .verify(
            &SignedHeaders::from_headers(&parts.headers),
            &bytes,
            state.clock.now(),
            state.seen_ids.as_ref(),
        )
        .map_err(|e| match e {
            SignatureError::IdReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "webhook_id_reused",
                e.to_string(),
            ),
            _ => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string()),
        })?
        .to_string();
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if resp.status().is_server_error() {
        // Not stored: the sender's retry with the same id must be taken.
        state.seen_ids.forget(&id);
    }
    Ok(resp.into_response())
}

fn presented_key(value: &str, allow_basic: bool) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if allow_basic && scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}
