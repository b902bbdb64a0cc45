//! What the relay has been doing, for the operator's window (`GET /v1/status`) and the
//! metrics: per target, the circuit's state, the last success and error and the calls of the
//! last minute. Held in memory by one process (on AWS, by one function container).

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A target's circuit as last reported by the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    #[default]
    Closed,
    /// One probe call is let through to see whether the target is back.
    HalfOpen,
    /// Calls are held until `open_until`.
    Open,
}

/// One target's health, as `GET /v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct TargetSnapshot {
    /// `smartemailing`, or a webhook's host.
    pub target: String,
    /// The circuit's state.
    pub circuit: CircuitState,
    /// Until when the circuit stays open (Unix ms).
    pub open_until_ms: Option<i64>,
    /// When a call last succeeded (Unix ms).
    pub last_success_ms: Option<i64>,
    /// When a call last failed (Unix ms) and why.
    pub last_error: Option<(i64, String)>,
    /// Calls made in the last minute.
    pub calls_last_minute: u64,
}

#[derive(Default)]
struct TargetStats {
    snapshot: TargetSnapshot,
    /// Start times of the recent calls (Unix ms), oldest first.
    recent: VecDeque<i64>,
}

/// The recorder the dispatcher reports into and the status route reads.
#[derive(Default)]
pub struct Telemetry {
    targets: Mutex<HashMap<String, TargetStats>>,
}

const MINUTE_MS: i64 = 60_000;

impl Telemetry {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_target(&self, target: &str, f: impl FnOnce(&mut TargetStats)) {
        let mut map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let stats = map
            .entry(target.to_string())
            .or_insert_with(|| TargetStats {
                snapshot: TargetSnapshot {
                    target: target.to_string(),
                    ..TargetSnapshot::default()
                },
                recent: VecDeque::new(),
            });
        f(stats);
    }

    /// Records a call to `target` made at `at_ms`: `error` is why it failed, `None` when it
    /// succeeded.
    pub fn record_call(&self, target: &str, at_ms: i64, error: Option<&str>) {
        self.with_target(target, |t| {
            t.recent.push_back(at_ms);
            while t.recent.front().is_some_and(|&s| s < at_ms - MINUTE_MS) {
                t.recent.pop_front();
            }
            match error {
                None => t.snapshot.last_success_ms = Some(at_ms),
                Some(why) => t.snapshot.last_error = Some((at_ms, why.to_string())),
            }
        });
    }

    /// Records the state of `target`'s circuit.
    pub fn record_circuit(&self, target: &str, state: CircuitState, open_until_ms: Option<i64>) {
        self.with_target(target, |t| {
            t.snapshot.circuit = state;
            t.snapshot.open_until_ms = open_until_ms;
        });
    }

    /// Every target seen so far, by name, as of `now_ms`.
    pub fn targets(&self, now_ms: i64) -> Vec<TargetSnapshot> {
        let map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<TargetSnapshot> = map
            .values()
            .map(|t| TargetSnapshot {
                calls_last_minute: t
                    .recent
                    .iter()
                    .filter(|&&s| s >= now_ms - MINUTE_MS)
                    .count() as u64,
                ..t.snapshot.clone()
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_shows_its_last_success_and_error_and_the_calls_of_the_last_minute() {
        let t = Telemetry::new();
        t.record_call("smartemailing", 1_000, None);
        t.record_call("smartemailing", 50_000, Some("the target answered 503"));
        t.record_circuit("smartemailing", CircuitState::Open, Some(80_000));
        let s = &t.targets(70_000)[0];
        assert_eq!(s.last_success_ms, Some(1_000));
        assert_eq!(
            s.last_error,
            Some((50_000, "the target answered 503".into()))
        );
        assert_eq!(s.calls_last_minute, 1);
        assert_eq!(s.circuit, CircuitState::Open);
        assert_eq!(s.open_until_ms, Some(80_000));
    }
}
