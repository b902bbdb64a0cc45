//! The routes, their state and their handlers.

use super::auth::{admin_needed, require_key, Scope};
use super::body::{read_json, read_webhook_body};
pub use super::error::ApiError;
use crate::domain::event::{parse_event, parse_submission, Submitted};
use crate::domain::secret::key_matches;
use crate::domain::smartemailing_webhook::event_from_webhook;
use crate::pipeline::inbound::{Accepted, Inbound};
use crate::ports::clock::Clock;
use crate::ports::{Credentials, DeliveryStore, EventStore, Queue, StoreHealth};
use crate::rules::config::Config;
use crate::rules::render::{preview_request, render_event, NotRendered};
use crate::security::signature::SeenIds;
use crate::telemetry::Telemetry;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
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
    /// Whether the store takes writes, for `/health` (`None` where the platform watches
    /// the store itself, as on AWS).
    pub store_health: Option<Arc<dyn StoreHealth>>,
    /// The queues: replays go on the dispatch queue; `GET /v1/status` shows their depths.
    pub queue: Arc<dyn Queue>,
    /// What the dispatcher reports about each target, for `GET /v1/status`.
    pub telemetry: Arc<Telemetry>,
    /// Where the relay runs, for `GET /v1/status`.
    pub platform: Platform,
    /// `GET /v1/status`'s last answer on AWS, reused for a few seconds.
    pub status_cache: Arc<super::StatusCache>,
}

/// Where the relay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// `relay serve`: one process holds everything.
    Local,
    /// The Lambda functions: each container holds its own view of the targets.
    Aws,
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
        .route("/health", get(health))
        // SmartEmailing registers only a URL: the token in it is the credential.
        .route(
            "/v1/webhooks/smartemailing/{token}",
            post(post_smartemailing_webhook_by_token),
        )
        .merge(super::console::routes())
        .merge(api)
        .merge(super::manage::routes(state.clone()))
        .merge(super::metrics::routes(state.clone()))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::metrics::count_refusals,
        ))
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

/// `200 {"status": "ok"}`, or `503` with the reason while the store refuses writes (a full
/// disk): an orchestrator sees it, and callers' events would be refused anyway.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.store_health.as_ref().and_then(|h| h.unwritable()) {
        None => Json(json!({"status": "ok"})).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "store": format!("the store refuses writes: {why}")})),
        )
            .into_response(),
    }
}

/// Hands the events to the inbound step and answers with each one's outcome.
async fn accept(state: &AppState, subs: Vec<Submitted>, batch: bool) -> Result<Response, ApiError> {
    let outcomes = state
        .inbound
        .accept(subs)
        .await
        .map_err(|e| ApiError::inbound(e, batch))?;
    let failed = outcomes.iter().any(|(_, s)| *s == Accepted::Failed);
    let results: Vec<Value> = outcomes
        .iter()
        .map(|(id, s)| json!({"id": id, "status": s.as_str()}))
        .collect();
    Ok(if failed {
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
    })
}

async fn post_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(state.body_limit, &headers, body).await?;
    let batch = value.get("events").is_some() && value.get("type").is_none();
    let subs = parse_submission(value, state.clock.now())?;
    accept(&state, subs, batch).await
}

async fn get_event(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .events
        .get(&id)
        .await
        .map_err(|e| ApiError::unavailable("cannot read an event", e))?
        .ok_or_else(|| ApiError::not_found(format!("no event `{id}`")))?;
    let deliveries = state
        .deliveries
        .for_event(&id)
        .await
        .map_err(|e| ApiError::unavailable("cannot read deliveries", e))?;
    let received_at = Utc
        .timestamp_millis_opt(record.received_at)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
    Ok(Json(json!({
        "id": record.id,
        "type": record.kind,
        "received_at": received_at,
        "event": record.event,
        "deliveries": deliveries.iter().map(super::manage::listed).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// What one event would send; with `rules` (admin keys), what those rules would send.
async fn post_preview(
    State(state): State<Arc<AppState>>,
    scope: Option<Extension<Scope>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(state.body_limit, &headers, body).await?;
    let now = state.clock.now();
    // An event has no `rules` member, so a body with one is a trial of rules.
    if value.get("rules").is_some() {
        if scope.map(|s| s.0) != Some(Scope::Admin) {
            return Err(admin_needed());
        }
        return Ok(Json(super::trial::preview_rules(&state.config, &value, now)?).into_response());
    }
    let event = parse_event(&value, "", now)?;
    Ok(Json(json!({"deliveries": preview(&state.config, &event, now)})).into_response())
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
) -> Result<Response, ApiError> {
    accept_webhook(&state, q, &headers, body).await
}

/// SmartEmailing's registered webhooks (`POST /web-hooks` takes only a URL): the token in
/// the path, compared in constant time with the configured ones, authenticates the call.
/// The token is never logged or echoed.
async fn post_smartemailing_webhook_by_token(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
    Query(q): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tokens = state
        .credentials
        .webhook_tokens()
        .await
        .map_err(|e| ApiError::unavailable("cannot read the webhook tokens", e))?;
    if !key_matches(&token, &tokens) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown webhook token: register the URL with one of the relay's webhook tokens",
        ));
    }
    accept_webhook(&state, q, &headers, body).await
}

async fn accept_webhook(
    state: &AppState,
    q: WebhookQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_webhook_body(state.body_limit, headers, body).await?;
    let name = q.event_name.unwrap_or_default();
    let (event, payload_hash) = event_from_webhook(&name, value, state.clock.now())?;
    accept(
        state,
        vec![Submitted {
            event,
            payload_hash,
        }],
        false,
    )
    .await
}
