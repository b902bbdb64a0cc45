//! The HTTP API: one axum router, served by `relay serve` and by the inbound Lambda.

use crate::domain::event::{parse_event, parse_submission, FieldError, Submitted};
use crate::domain::secret::key_matches;
use crate::domain::smartemailing_webhook::{event_from_webhook, form_to_object};
use crate::pipeline::inbound::{Accepted, Inbound, InboundError};
use crate::ports::clock::Clock;
use crate::ports::{Credentials, DeliveryStore, EventStore};
use crate::rules::config::Config;
use crate::rules::render::{preview_request, render_event, NotRendered};
use crate::security::limits::{check_json, InputLimits, LimitCode};
use crate::security::signature::{SeenIds, SignedHeaders, Verifier, WebhookSecret};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SecondsFormat, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The default limit on a request body.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// What the router needs.
pub struct AppState {
    /// The loaded config.
    pub config: Arc<Config>,
    /// The inbound step.
    pub inbound: Inbound,
    /// Events, for `GET /v1/events/{id}`.
    pub events: Arc<dyn EventStore>,
    /// Deliveries, for `GET /v1/events/{id}`.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// API keys.
    pub credentials: Arc<dyn Credentials>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The largest body taken, in bytes.
    pub body_limit: usize,
    /// Ids of signed calls already taken (replays are refused).
    pub seen_ids: Arc<dyn SeenIds>,
}

/// An API error: `{"error": {"code", "message", "path"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    path: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            path: None,
        }
    }

    fn field(e: FieldError, prefix: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message: e.message,
            path: Some(format!("{prefix}{}", e.path)),
        }
    }
}

/// `503 unavailable`: the store or the secrets could not be reached; the caller should retry.
fn unavailable() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "try again shortly",
    )
    .into_response()
}

/// Reads and parses a JSON body within the limits, or the error answer to give.
async fn read_json(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, Response> {
    let (bytes, _) = read_body(state, headers, body, false)
        .await
        .map_err(IntoResponse::into_response)?;
    parse_json(&bytes).map_err(IntoResponse::into_response)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(p) = self.path {
            err["path"] = Value::String(p);
        }
        let mut resp = (self.status, Json(json!({"error": err}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/preview", post(post_preview))
        .route(
            "/v1/webhooks/smartemailing",
            post(post_smartemailing_webhook),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
        .with_state(state)
}

async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let webhook = path.starts_with("/v1/webhooks/");
    // A route configured for signed calls takes a valid Standard Webhooks signature instead
    // of an API key: the signing secret is what authenticates the sender.
    let signers = match path.as_str() {
        "/v1/events" if req.method() == axum::http::Method::POST => &state.config.signatures.events,
        "/v1/webhooks/smartemailing" => &state.config.signatures.smartemailing,
        _ => &Vec::new(),
    };
    if !signers.is_empty() {
        return verify_signed(&state, signers, req, next).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| presented_key(v, webhook));
    let keys = match state.credentials.api_keys().await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the API keys");
            return unavailable();
        }
    };
    match presented {
        Some(key) if key_matches(&key, &keys) => next.run(req).await,
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid API key as Authorization: Bearer <key>",
        )
        .into_response(),
    }
}

async fn verify_signed(state: &AppState, signers: &[String], req: Request, next: Next) -> Response {
    let mut secrets = Vec::new();
    for name in signers {
        match state.credentials.secret(name).await {
            Ok(Some(s)) => match WebhookSecret::parse(s.expose()) {
                Ok(w) => secrets.push(w),
                Err(e) => {
                    tracing::error!(secret = %name, error = %e, "a signing secret is malformed")
                }
            },
            Ok(None) => tracing::error!(secret = %name, "a signing secret is not set"),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the signing secrets");
                return unavailable();
            }
        }
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {} bytes", state.body_limit),
            )
            .into_response()
        }
    };
    let verdict = Verifier::new(secrets).verify(
        &SignedHeaders::from_headers(&parts.headers),
        &bytes,
        state.clock.now(),
        state.seen_ids.as_ref(),
    );
    match verdict {
        Ok(id) => {
            let id = id.to_string();
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            if resp.status().is_server_error() {
                // Not stored: the sender's retry with the same id must be taken.
                state.seen_ids.forget(&id);
            }
            resp
        }
        Err(e) => {
            let code = if e == crate::security::signature::SignatureError::Replayed {
                "signature_replayed"
            } else {
                "invalid_signature"
            };
            ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string()).into_response()
        }
    }
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

/// Reads the body within the limit, checking its Content-Type.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    allow_form: bool,
) -> Result<(Bytes, bool), ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = ctype.split(';').next().unwrap_or("").trim().to_string();
    let is_json =
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    let is_form = allow_form && mime == "application/x-www-form-urlencoded";
    if !is_json && !is_form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if allow_form {
                "send Content-Type: application/json (or application/x-www-form-urlencoded)"
            } else {
                "send Content-Type: application/json"
            },
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {} bytes", state.body_limit),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > state.body_limit {
            return Err(too_large());
        }
    }
    let bytes = axum::body::to_bytes(body, state.body_limit)
        .await
        .map_err(|_| too_large())?;
    Ok((bytes, is_form))
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    // Bounded parsing: depth, string lengths, field counts, duplicate keys, exact numbers.
    check_json(bytes, &InputLimits::default()).map_err(|e| {
        let status = match e.code {
            LimitCode::TooManyFields | LimitCode::TooManyValues | LimitCode::StringTooLong => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            code: e.code.as_str(),
            message: e.message,
            path: Some(e.path),
        }
    })
}

async fn accept(state: &AppState, subs: Vec<Submitted>, batch: bool) -> Response {
    let prefix = if batch { "/events/" } else { "/" };
    match state.inbound.accept(subs).await {
        Ok(outcomes) => {
            let failed = outcomes.iter().any(|(_, s)| *s == Accepted::Failed);
            let results: Vec<Value> = outcomes
                .iter()
                .map(|(id, s)| json!({"id": id, "status": s.as_str()}))
                .collect();
            if failed {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({
                        "error": {"code": "unavailable", "message": "some events could not be stored; retry those marked failed"},
                        "results": results
                    })),
                )
                    .into_response()
            } else {
                (StatusCode::ACCEPTED, Json(json!({"results": results}))).into_response()
            }
        }
        Err(InboundError::KeyReused { index, id }) => {
            let path = if batch {
                format!("{prefix}{index}/id")
            } else {
                "/id".into()
            };
            ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "idempotency_key_reused",
                message: format!(
                    "the id `{id}` was already used for an event with a different body"
                ),
                path: Some(path),
            }
            .into_response()
        }
        Err(InboundError::InProgress { index, id }) => {
            let path = if batch {
                format!("{prefix}{index}/id")
            } else {
                "/id".into()
            };
            ApiError {
                status: StatusCode::CONFLICT,
                code: "idempotency_key_in_progress",
                message: format!(
                    "the event `{id}` is being accepted by another request; retry shortly"
                ),
                path: Some(path),
            }
            .into_response()
        }
        Err(InboundError::TooLarge { index, id, limit }) => {
            let path = if batch {
                format!("{prefix}{index}")
            } else {
                String::new()
            };
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "event_too_large",
                message: format!(
                    "the event `{id}` is larger than {limit} bytes; send less data per event"
                ),
                path: Some(path),
            }
            .into_response()
        }
        Err(InboundError::Store(e)) => {
            tracing::error!(error = %e, "inbound store failure");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the relay cannot store events right now; retry",
            )
            .into_response()
        }
    }
}

async fn post_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let value = match read_json(&state, &headers, body).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let batch = value.get("events").is_some() && value.get("type").is_none();
    match parse_submission(&value, state.clock.now()) {
        Ok(subs) => accept(&state, subs, batch).await,
        Err(e) => ApiError::field(e, "").into_response(),
    }
}

async fn get_event(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let record = match state.events.get(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no event `{id}`"),
            )
            .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read an event");
            return unavailable();
        }
    };
    let deliveries = match state.deliveries.for_event(&id).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot read deliveries");
            return unavailable();
        }
    };
    let received_at = Utc
        .timestamp_millis_opt(record.received_at)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
    Json(json!({
        "id": record.id,
        "type": record.kind,
        "received_at": received_at,
        "event": record.event,
        "deliveries": deliveries.iter().map(|d| d.to_api()).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn post_preview(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let value = match read_json(&state, &headers, body).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let now = state.clock.now();
    let event = match parse_event(&value, "", now) {
        Ok(e) => e,
        Err(e) => return ApiError::field(e, "").into_response(),
    };
    Json(json!({"deliveries": preview(&state.config, &event, now)})).into_response()
}

/// What the rules would send for an event, credentials masked; sends and stores nothing.
pub fn preview(
    config: &Config,
    event: &crate::domain::event::Event,
    now: chrono::DateTime<Utc>,
) -> Vec<Value> {
    render_event(config, event, None, now)
        .into_iter()
        .map(|r| match r.result {
            Ok(p) => {
                json!({"rule": r.rule, "action": r.action, "request": preview_request(config, &p)})
            }
            Err(NotRendered::Failed(why)) => {
                json!({"rule": r.rule, "action": r.action, "error": why})
            }
            Err(NotRendered::Skipped(why)) => {
                json!({"rule": r.rule, "action": r.action, "skipped": why})
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct WebhookQuery {
    event_name: Option<String>,
}

async fn post_smartemailing_webhook(
    State(state): State<Arc<AppState>>,
    Query(q): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (bytes, is_form) = match read_body(&state, &headers, body, true).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let value = if is_form {
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes) {
            Ok(pairs) => form_to_object(pairs),
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_form",
                    format!("the form body is invalid: {e}"),
                )
                .into_response()
            }
        }
    } else if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match parse_json(&bytes) {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        }
    };
    let name = q.event_name.unwrap_or_default();
    match event_from_webhook(&name, value, state.clock.now()) {
        Ok((event, hash)) => {
            accept(
                &state,
                vec![Submitted {
                    event,
                    payload_hash: hash,
                }],
                false,
            )
            .await
        }
        Err(e) => ApiError::field(e, "").into_response(),
    }
}
