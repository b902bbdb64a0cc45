//! `GET /metrics`: the Prometheus exposition of the process's `Telemetry`, for admin keys
//! only (an ingest key is a shop's, and the metrics name rules, targets and volumes). Also
//! the count of submissions the API refused, by error code, which no handler sees whole.

use super::auth::require_admin;
use super::error::ApiError;
use super::router::AppState;
use crate::telemetry::EventOutcome;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// What OpenMetrics scrapers (Prometheus itself) ask for and get.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// What other readers (`curl`, `promtool check metrics`) get.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The type counted for a refused submission: its body was not read as an event.
const UNREAD_TYPE: &str = "unknown";
/// The most of an error body read to find its code (error bodies are a few hundred bytes).
const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// The `/metrics` route, behind the admin-key check (an ingest key gets 403).
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

async fn get_metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let text = state
        .telemetry
        .exposition(state.clock.now_ms())
        .await
        .map_err(|e| ApiError::unavailable("cannot encode the metrics", e))?;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if openmetrics {
        (text, OPENMETRICS)
    } else {
        (prometheus_text(&text), PROMETHEUS_TEXT)
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

/// The exposition in Prometheus's own text format: OpenMetrics names a counter's family
/// without its `_total` suffix and ends with `# EOF`; the older format names the family as
/// its samples are named and has no end marker.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                let tail = &rest[name.len()..];
                let suffix = if counters.contains(&name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix}{tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether a request submits events (a refusal there is an event refused).
fn submits_events(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == Method::POST && (path == "/v1/events" || path.starts_with("/v1/webhooks/"))
}

/// Counts each submission the API refused whole (`relay_events_total{outcome="refused"}`)
/// by the error's code. An answer naming each event's outcome (`results`) was counted by
/// the inbound step.
pub(crate) async fn count_refusals(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let submits = submits_events(&req);
    let resp = next.run(req).await;
    let status = resp.status();
    if !submits || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ERROR_BODY_LIMIT).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if value.get("results").is_none() {
        let code = value
            .pointer("/error/code")
            .and_then(|c| c.as_str())
            .unwrap_or(status.as_str());
        state
            .telemetry
            .record_event(UNREAD_TYPE, EventOutcome::Refused(code));
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_their_suffix_in_the_prometheus_format() {
        let om = "# HELP relay_events Events.\n# TYPE relay_events counter\nrelay_events_total{type=\"a\"} 1\n# HELP relay_queue_depth Depth.\n# TYPE relay_queue_depth gauge\nrelay_queue_depth 2\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP relay_events_total Events.\n# TYPE relay_events_total counter\nrelay_events_total{type=\"a\"} 1\n# HELP relay_queue_depth Depth.\n# TYPE relay_queue_depth gauge\nrelay_queue_depth 2\n"
        );
    }
}
