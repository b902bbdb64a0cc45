//! The management API (admin keys only): the deliveries listed and searched, one delivery
//! with its request and attempts, replays and cancellations; `status` has the status and
//! rules routes.

use super::auth::require_admin;
use super::body::read_json;
use super::error::ApiError;
use super::router::AppState;
use super::status;
use crate::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus};
use crate::pipeline::replay::{self, ReplayPorts};
use crate::ports::store::DeliveryCursor;
use crate::ports::DeliveryFilter;
use crate::rules::render::preview_request;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// A page's size when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;
/// The largest page.
pub const MAX_PAGE: usize = 500;

/// The management routes, behind the admin-key check.
pub(super) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/deliveries", get(list))
        .route("/v1/deliveries/replay", post(replay_deliveries))
        .route("/v1/deliveries/{id}", get(detail))
        .route("/v1/deliveries/{id}/cancel", post(cancel))
        .route("/v1/status", get(status::status))
        .route("/v1/rules", get(status::rules))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// A time in Unix ms as the API writes it (RFC 3339, UTC, milliseconds).
pub(super) fn rfc3339(ms: i64) -> Value {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// A delivery as the listing shows it: `to_api()` with its event, contact and times.
pub(super) fn listed(d: &DeliveryRecord) -> Value {
    let mut v = d.to_api();
    v["event_id"] = json!(d.event_id);
    v["event_type"] = json!(d.event_type);
    v["email"] = json!(d.email);
    v["created_at"] = rfc3339(d.created_at);
    v["chain_depth"] = json!(d.chain_depth);
    if let Some(next) = d.next_attempt_at {
        v["next_attempt_at"] = rfc3339(next);
    }
    v
}

/// A delivery with its request as sent (credentials masked) and every attempt kept.
fn detailed(state: &AppState, d: &DeliveryRecord) -> Value {
    let mut v = listed(d);
    v["request"] = d
        .request
        .as_ref()
        .map_or(Value::Null, |p| preview_request(&state.config, p));
    v["last_response"] = json!(d.last_response);
    v["attempt_log"] = d
        .attempt_log
        .iter()
        .map(|a| {
            json!({
                "at": rfc3339(a.at_ms),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "response": a.response,
                "class": a.class,
                "reason": a.reason,
            })
        })
        .collect();
    v
}

/// Sets one filter field from its text; `false` when `key` is not a filter field.
fn filter_field(
    filter: &mut DeliveryFilter,
    key: &str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<bool, String> {
    let time = |v: &str| {
        replay::parse_since(v, now)
            .ok_or_else(|| format!("`{v}` is neither an RFC 3339 time nor a duration like 2h"))
    };
    let text = || Some(value.trim().to_string()).filter(|v| !v.is_empty());
    match key {
        "status" => {
            filter.status = Some(DeliveryStatus::parse(value.trim()).ok_or_else(|| {
                format!("`{value}` is not a status (pending, retrying, sent, dead, skipped, dry_run, scheduled, cancelled)")
            })?)
        }
        "rule" => filter.rule = text(),
        "action" => filter.action = text(),
        "email" => filter.email = text().map(|e| e.to_lowercase()),
        "event_type" => filter.event_type = text(),
        "event_id" => filter.event_id = text(),
        "since" => filter.since_ms = Some(time(value)?),
        "until" => filter.until_ms = Some(time(value)?),
        _ => return Ok(false),
    }
    Ok(true)
}

fn bad_query(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).at(field)
}

/// `GET /v1/deliveries`'s query: the filter (its `limit` the page size) and the cursor.
fn list_query(
    raw: &str,
    now: DateTime<Utc>,
) -> Result<(DeliveryFilter, Option<DeliveryCursor>), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| bad_query("", format!("the query is not readable: {e}")))?;
    let mut filter = DeliveryFilter {
        limit: DEFAULT_PAGE,
        ..DeliveryFilter::default()
    };
    let mut cursor = None;
    for (key, value) in &pairs {
        match key.as_str() {
            "limit" => {
                filter.limit = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        bad_query("limit", format!("must be a number from 1 to {MAX_PAGE}"))
                    })?
            }
            "cursor" if value.is_empty() => {}
            "cursor" => {
                cursor = Some(DeliveryCursor::parse(value).ok_or_else(|| {
                    bad_query("cursor", "not a cursor: pass the next_cursor of a listing")
                })?)
            }
            _ => {
                if !filter_field(&mut filter, key, value, now).map_err(|m| bad_query(key, m))? {
                    return Err(bad_query(key, format!("`{key}` is not a filter (status, rule, action, email, event_type, event_id, since, until, limit, cursor)")));
                }
            }
        }
    }
    Ok((filter, cursor))
}

/// `GET /v1/deliveries`: one page, newest first.
async fn list(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (filter, cursor) = list_query(raw.as_deref().unwrap_or(""), state.clock.now())?;
    let page = state
        .deliveries
        .page(&filter, cursor.as_ref())
        .await
        .map_err(|e| ApiError::unavailable("cannot list deliveries", e))?;
    Ok(Json(json!({
        "deliveries": page.deliveries.iter().map(listed).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor.map(|c| c.encode()),
    })))
}

/// The delivery with this id, or 404.
async fn find(state: &AppState, id: &str) -> Result<DeliveryRecord, ApiError> {
    state
        .deliveries
        .get_many(&[DeliveryId::from_stored(id)])
        .await
        .map_err(|e| ApiError::unavailable("cannot read a delivery", e))?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no delivery `{id}`")))
}

/// `GET /v1/deliveries/{id}`.
async fn detail(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = find(&state, &id).await?;
    Ok(Json(detailed(&state, &d)))
}

/// `POST /v1/deliveries/{id}/cancel`: a scheduled delivery is cancelled; its timer's job,
/// when it comes due, finds it final and sends nothing.
async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // One conditional write: only a delivery still scheduled and not yet due is cancelled.
    // One already due may be being sent right now (cancelling it could hide that it was),
    // and a dispatcher that took it a moment before wins.
    let now_ms = state.clock.now_ms();
    let cancelled = state
        .deliveries
        .cancel_scheduled(
            &DeliveryId::from_stored(id.clone()),
            now_ms,
            "cancelled by an operator",
        )
        .await
        .map_err(|e| ApiError::unavailable("cannot cancel a delivery", e))?;
    if let Some(d) = cancelled {
        return Ok(Json(detailed(&state, &d)));
    }
    // Not cancelled: say why (an unknown id is `404`).
    let d = find(&state, &id).await?;
    let why = if d.status == DeliveryStatus::Scheduled {
        "the delivery is due and may be being sent; it can no longer be cancelled".to_string()
    } else {
        format!(
            "the delivery is {}; only a scheduled one can be cancelled",
            d.status.as_str()
        )
    };
    Err(ApiError::new(StatusCode::CONFLICT, "not_scheduled", why))
}

fn bad_body(path: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).at(path)
}

/// A replay's `filter`: the listing's filters as JSON strings; `status` is `dead` unless
/// given, as `relay replay --all-dead`.
fn replay_filter(value: &Value, now: DateTime<Utc>) -> Result<DeliveryFilter, ApiError> {
    let fields: &Map<String, Value> = value
        .as_object()
        .ok_or_else(|| bad_body("/filter", "must be an object of filters"))?;
    let mut filter = DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        ..DeliveryFilter::default()
    };
    for (key, v) in fields {
        let path = format!("/filter/{key}");
        let text = v
            .as_str()
            .ok_or_else(|| bad_body(&path, "must be a string"))?;
        if !filter_field(&mut filter, key, text, now).map_err(|m| bad_body(&path, m))? {
            return Err(bad_body(&path, format!("`{key}` is not a filter (status, rule, action, email, event_type, event_id, since, until)")));
        }
    }
    Ok(filter)
}

/// The ids a replay body names: `ids`, or the deliveries its `filter` matches.
async fn replay_targets(state: &AppState, body: &Value) -> Result<Vec<DeliveryId>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad_body("", "send {\"ids\": [...]} or {\"filter\": {...}}"))?;
    if let Some(key) = obj.keys().find(|k| !matches!(k.as_str(), "ids" | "filter")) {
        return Err(bad_body(
            &format!("/{key}"),
            "only `ids` or `filter` are taken",
        ));
    }
    let unavailable = |e| ApiError::unavailable("cannot read deliveries", e);
    match (obj.get("ids"), obj.get("filter")) {
        (Some(ids), None) => {
            let ids = ids
                .as_array()
                .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                .ok_or_else(|| bad_body("/ids", "must be a list of delivery ids"))?;
            let ids: Vec<DeliveryId> = ids.into_iter().map(DeliveryId::from_stored).collect();
            let unknown = replay::unknown_ids(state.deliveries.as_ref(), &ids)
                .await
                .map_err(unavailable)?;
            if !unknown.is_empty() {
                let names: Vec<&str> = unknown.iter().map(DeliveryId::as_str).collect();
                return Err(ApiError::not_found(format!(
                    "no delivery has the id(s) {}, so nothing was replayed",
                    names.join(", ")
                ))
                .at("/ids"));
            }
            Ok(ids)
        }
        (None, Some(filter)) => {
            let filter = replay_filter(filter, state.clock.now())?;
            replay::matching_ids(state.deliveries.as_ref(), &filter)
                .await
                .map_err(unavailable)
        }
        _ => Err(bad_body(
            "",
            "send either `ids` or `filter`, not both and not neither",
        )),
    }
}

/// `POST /v1/deliveries/replay`: as `relay replay`, a sent delivery is never resent.
async fn replay_deliveries(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = read_json(state.body_limit, &headers, body).await?;
    let targets = replay_targets(&state, &body).await?;
    let ports = ReplayPorts {
        config: &state.config,
        events: state.events.as_ref(),
        deliveries: state.deliveries.as_ref(),
        queue: state.queue.as_ref(),
    };
    let done = replay::replay_in_chunks(&ports, &targets, state.clock.now(), |_, _| {})
        .await
        .map_err(|e| ApiError::unavailable("a replay failed", e))?;
    Ok(Json(json!({
        "queued": done.queued.len(),
        "already_sent": done.already_sent,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_795_000_000_000).unwrap()
    }

    #[test]
    fn the_listing_query_reads_every_filter_and_the_page() {
        let (f, c) = list_query(
            "status=dead&rule=welcome&action=trigger_event&email=%20Jana%40Example.com&event_type=cart.abandoned&since=2h&until=2026-11-26T10:00:00Z&limit=500",
            now(),
        )
        .unwrap();
        assert_eq!(f.status, Some(DeliveryStatus::Dead));
        assert_eq!(f.email.as_deref(), Some("jana@example.com"));
        assert_eq!(f.since_ms, Some(1_795_000_000_000 - 2 * 3_600_000));
        let until = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z").unwrap();
        assert_eq!(f.until_ms, Some(until.timestamp_millis()));
        assert_eq!(f.limit, 500);
        assert!(c.is_none());
        assert_eq!(list_query("", now()).unwrap().0.limit, DEFAULT_PAGE);
    }

    #[test]
    fn a_bad_query_field_is_named() {
        for (q, field) in [
            ("limit=501", "limit"),
            ("limit=0", "limit"),
            ("status=lost", "status"),
            ("cursor=zz", "cursor"),
            ("since=yesterday", "since"),
            ("stauts=dead", "stauts"),
        ] {
            let err = format!("{:?}", list_query(q, now()).unwrap_err());
            assert!(
                err.contains(&format!("path: Some(\"{field}\")")),
                "{q}: {err}"
            );
        }
    }

    #[test]
    fn a_replay_filter_is_of_dead_ones_unless_it_says_otherwise() {
        let f = replay_filter(&json!({"rule": "welcome"}), now()).unwrap();
        assert_eq!(f.status, Some(DeliveryStatus::Dead));
        let f = replay_filter(&json!({"status": "skipped"}), now()).unwrap();
        assert_eq!(f.status, Some(DeliveryStatus::Skipped));
        let err = format!(
            "{:?}",
            replay_filter(&json!({"status": 3}), now()).unwrap_err()
        );
        assert!(err.contains("/filter/status"), "{err}");
    }
}
