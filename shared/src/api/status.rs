//! `GET /v1/status` (what the relay is doing: targets, queues, counts) and `GET /v1/rules`
//! (the loaded rules as written).

use super::error::ApiError;
use super::manage::rfc3339;
use super::router::{AppState, Platform};
use crate::domain::delivery::{AttemptClass, DeliveryStatus};
use crate::pipeline::dispatch::target_of;
use crate::ports::queue::QueueName;
use crate::ports::DeliveryFilter;
use crate::telemetry::TargetSnapshot;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const MINUTE_MS: i64 = 60_000;
/// How many of the newest deliveries of each status the table's view of the targets reads.
const RECENT: usize = 200;
/// How long a container on AWS reuses its status answer. Each one counts every delivery of
/// the last day on the table (read units are paid by the size of what a count reads: about
/// 6 000 for a day of 50 000 deliveries), and the console asks every 5 s while it is open.
const AWS_REUSE_MS: i64 = 30_000;

/// The last status answer a container computed on AWS, and when.
#[derive(Debug, Default)]
pub struct StatusCache(std::sync::Mutex<Option<(i64, Value)>>);

impl StatusCache {
    fn fresh(&self, now_ms: i64) -> Option<Value> {
        let held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.as_ref()
            .filter(|(at, _)| (0..AWS_REUSE_MS).contains(&(now_ms - at)))
            .map(|(_, v)| v.clone())
    }

    fn keep(&self, now_ms: i64, answer: &Value) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((now_ms, answer.clone()));
    }
}

/// What `note` says about where the figures come from.
fn note(platform: Platform) -> &'static str {
    match platform {
        Platform::Local => "one process: the targets' circuits and calls are the relay's own",
        Platform::Aws => "on AWS each dispatch function container keeps its own circuit state (it is not global), so `circuit` is null; each target's last success, last error and calls of the last minute come from the attempts of the newest sent, retrying and dead deliveries in the table; the counts are the table's and the queue depths SQS's approximate ones; an answer is reused for up to 30 s (`as_of`), since each one reads the day's deliveries from the table",
    }
}

fn target(t: &TargetSnapshot) -> Value {
    json!({
        "target": t.target,
        "circuit": t.circuit,
        "open_until": t.open_until_ms.map_or(Value::Null, rfc3339),
        "last_success_at": t.last_success_ms.map_or(Value::Null, rfc3339),
        "last_error": t.last_error.as_ref().map(|(at, why)| json!({"at": rfc3339(*at), "message": why})),
        "calls_last_minute": t.calls_last_minute,
    })
}

/// The deliveries created since `since_ms`, by status (every status, zero included).
async fn counts(state: &AppState, since_ms: i64) -> Result<Map<String, Value>, ApiError> {
    let found = state
        .deliveries
        .count_by_status(since_ms)
        .await
        .map_err(|e| ApiError::unavailable("cannot count deliveries", e))?;
    Ok(DeliveryStatus::ALL
        .iter()
        .map(|s| {
            let n = found.iter().find(|(f, _)| f == s).map_or(0, |(_, n)| *n);
            (s.as_str().to_string(), json!(n))
        })
        .collect())
}

async fn queues(state: &AppState, now_ms: i64) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for q in [QueueName::Render, QueueName::Dispatch] {
        let d = state
            .queue
            .depth(q, now_ms)
            .await
            .map_err(|e| ApiError::unavailable("cannot read a queue's depth", e))?;
        out.push(json!({
            "queue": q.as_str(),
            "depth": d.messages,
            "oldest_due_age_seconds": d.oldest_due_age_ms.map(|ms| ms / 1000),
        }));
    }
    Ok(out)
}

/// On AWS the breakers live in the dispatch containers: each target's health comes from the
/// attempts the table holds (those of the newest sent, retrying and dead deliveries of the
/// last day), with no circuit state. A bulk call logs one attempt on each delivery it carried,
/// so calls are counted by their start and duration.
async fn table_targets(state: &AppState, now_ms: i64) -> Result<Vec<Value>, ApiError> {
    let mut seen: BTreeMap<String, (TargetSnapshot, HashSet<(i64, u64)>)> = BTreeMap::new();
    for status in [
        DeliveryStatus::Sent,
        DeliveryStatus::Retrying,
        DeliveryStatus::Dead,
    ] {
        let filter = DeliveryFilter {
            status: Some(status),
            since_ms: Some(now_ms - DAY_MS),
            limit: RECENT,
            ..DeliveryFilter::default()
        };
        let page = state
            .deliveries
            .page(&filter, None)
            .await
            .map_err(|e| ApiError::unavailable("cannot list deliveries", e))?;
        for d in &page.deliveries {
            let Some(request) = &d.request else { continue };
            let (t, calls) = seen.entry(target_of(request)).or_default();
            for a in &d.attempt_log {
                if a.at_ms >= now_ms - MINUTE_MS {
                    calls.insert((a.at_ms, a.duration_ms));
                }
                if a.class == AttemptClass::Success {
                    t.last_success_ms = t.last_success_ms.max(Some(a.at_ms));
                } else if t.last_error.as_ref().is_none_or(|(at, _)| *at < a.at_ms) {
                    t.last_error = Some((a.at_ms, a.reason.clone().unwrap_or_default()));
                }
            }
        }
    }
    Ok(seen
        .into_iter()
        .map(|(name, (t, calls))| {
            let mut v = target(&TargetSnapshot {
                target: name,
                calls_last_minute: calls.len() as u64,
                ..t
            });
            v["circuit"] = Value::Null;
            v
        })
        .collect())
}

/// `GET /v1/status`.
pub(super) async fn status(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now_ms();
    if state.platform == Platform::Local {
        return Ok(Json(answer(&state, now).await?));
    }
    if let Some(kept) = state.status_cache.fresh(now) {
        return Ok(Json(kept));
    }
    let fresh = answer(&state, now).await?;
    state.status_cache.keep(now, &fresh);
    Ok(Json(fresh))
}

/// The status as of `now` (`as_of`), computed from the stores.
async fn answer(state: &AppState, now: i64) -> Result<Value, ApiError> {
    let dry_run = state
        .credentials
        .smartemailing()
        .await
        .map_err(|e| ApiError::unavailable("cannot read the credentials", e))?
        .is_none();
    let last_hour = counts(state, now - HOUR_MS).await?;
    let last_day = counts(state, now - DAY_MS).await?;
    let dead_last_day = last_day.get("dead").cloned().unwrap_or(json!(0));
    let targets: Vec<Value> = match state.platform {
        Platform::Local => state.telemetry.targets(now).iter().map(target).collect(),
        Platform::Aws => table_targets(state, now).await?,
    };
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "as_of": rfc3339(now),
        "dry_run": dry_run,
        "rules": state.config.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        "targets": targets,
        "queues": queues(state, now).await?,
        "deliveries": {"last_hour": last_hour, "last_day": last_day},
        "dead_last_day": dead_last_day,
        "platform": match state.platform { Platform::Local => "local", Platform::Aws => "aws" },
        "note": note(state.platform),
    }))
}

/// `GET /v1/rules`: the loaded rules as written, templates as text (secrets are named in the
/// config, never held there).
pub(super) async fn rules(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"rules": state.config.written_rules()}))
}
