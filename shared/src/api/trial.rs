//! `POST /v1/preview` with `{"event", "rules"}` (admin keys): rules not loaded, checked as
//! `relay check` checks a file and rendered against the event on the loaded config's
//! settings. Nothing is stored or sent.

use super::error::ApiError;
use super::router::preview;
use crate::domain::event::parse_event;
use crate::rules::config::{Config, ConfigError};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// `{"deliveries": [...]}` the given rules would make of the event.
pub(super) fn preview_rules(
    config: &Config,
    body: &Value,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let yaml = body.get("rules").and_then(Value::as_str).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "must be the YAML text of one rule or a list of rules",
        )
        .at("/rules")
    })?;
    if let Some(key) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !matches!(k.as_str(), "rules" | "event")))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "a preview of rules takes only `event` and `rules`",
        )
        .at(format!("/{key}")));
    }
    let event = parse_event(body.get("event").unwrap_or(&Value::Null), "/event", now)?;
    let (trial, names) = config.with_trial_rules(yaml).map_err(invalid_rules)?;
    let deliveries: Vec<Value> = preview(&trial, &event, now)
        .into_iter()
        .filter(|d| {
            d["rule"]
                .as_str()
                .is_some_and(|r| names.iter().any(|n| n == r))
        })
        .collect();
    Ok(json!({"deliveries": deliveries}))
}

/// `422 invalid_rules`: every problem, as `relay check` words it; `path` is the first one's
/// place (`rules[welcome].actions[0].trigger_event.payload.a`).
fn invalid_rules(e: ConfigError) -> ApiError {
    let problems: Vec<Value> = e
        .problems
        .iter()
        .map(|p| json!({"path": place(p), "message": p}))
        .collect();
    let first = e.problems.first().cloned().unwrap_or_default();
    let mut err = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_rules",
        first.clone(),
    )
    .with("problems", Value::Array(problems));
    if let Some(at) = place(&first) {
        err = err.at(at);
    }
    err
}

/// The field a problem names: what comes before its first `: `, when that is a config path.
fn place(problem: &str) -> Option<String> {
    let (at, _) = problem.split_once(": ")?;
    let is_path = at.starts_with("rules") && !at.contains(' ') && !at.is_empty();
    is_path.then(|| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_names_its_field_when_it_has_one() {
        assert_eq!(
            place("rules[a].actions[0].trigger_event.payload.n: `x`: no field").as_deref(),
            Some("rules[a].actions[0].trigger_event.payload.n")
        );
        assert_eq!(place("did not find expected node content at line 1"), None);
        assert_eq!(place("the rules given: bad"), None);
    }
}
