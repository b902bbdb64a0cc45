//! What the relay has been doing: the one place the process reports into. Per target, the
//! circuit's state, the last success and error and the calls of the last minute, for the
//! operator's window (`GET /v1/status`); and the counters, histograms and gauges of
//! `GET /metrics` (`families`), with their increases kept for the functions' CloudWatch
//! records (`pending`). Held in memory by one process (on AWS, by one function container).
//! Every label set is bounded (`labels`).

mod class;
mod families;
mod gauges;
mod labels;
mod pending;

pub use class::CallClass;
pub use gauges::{GaugeReading, GaugeSource, QueueReading, StoreGauges};
pub use labels::{Bounded, OTHER};
pub use pending::{Sample, SampleValue};

use crate::domain::delivery::DeliveryStatus;
use crate::rules::config::{Config, TypePattern};
use families::{Families, Labels};
use pending::Pending;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// How many event types are counted by name; the rest count as `other`.
const EVENT_TYPES: usize = 50;
/// How many targets are counted by name; the rest count as `other`.
const TARGETS: usize = 20;
/// How many rule or action names not in the config (a replay of a renamed rule) are
/// counted by name.
const UNKNOWN_RULES: usize = 20;

/// What became of a submitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome<'a> {
    /// New, and its render job enqueued.
    Accepted,
    /// Seen before with the same body.
    Duplicate,
    /// Could not be enqueued; the caller retries.
    Failed,
    /// Refused, with the API's error code.
    Refused(&'a str),
}

/// One call to a target, as the dispatcher saw it.
#[derive(Debug, Clone, Copy)]
pub struct CallReport<'a> {
    /// `smartemailing`, or `http:<host>`.
    pub target: &'a str,
    /// The SmartEmailing endpoint (`import`, ...), or `webhook`.
    pub endpoint: &'a str,
    /// How it went.
    pub class: CallClass,
    /// How long it took.
    pub duration: Duration,
    /// When it was answered, or gave up waiting (Unix ms).
    pub at_ms: i64,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<&'a str>,
}

/// The bounded label sets.
struct Caps {
    types: Bounded,
    targets: Bounded,
    rules: Bounded,
    actions: Bounded,
}

/// The recorder the dispatcher and the inbound step report into, and the status and
/// metrics routes read.
pub struct Telemetry {
    targets: Mutex<HashMap<String, TargetStats>>,
    families: Families,
    pending: Pending,
    caps: Caps,
    gauges: Option<Arc<dyn GaugeSource>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::with_names(Vec::new(), Vec::new(), Vec::new())
    }
}

const MINUTE_MS: i64 = 60_000;

impl Telemetry {
    /// An empty recorder that knows no names in advance.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder whose labels always count the config's rule names, action kinds and
    /// exact event types (only unknown ones are capped).
    pub fn for_config(config: &Config) -> Self {
        let rules = config.rules.iter().map(|r| r.name.clone()).collect();
        let actions = config
            .rules
            .iter()
            .flat_map(|r| r.actions.iter().map(|a| a.kind.to_string()))
            .collect();
        let types = config
            .rules
            .iter()
            .flat_map(|r| r.on.iter())
            .filter_map(|p| match p {
                TypePattern::Exact(t) => Some(t.clone()),
                TypePattern::Prefix(_) => None,
            })
            .collect();
        Self::with_names(rules, actions, types)
    }

    fn with_names(rules: Vec<String>, actions: Vec<String>, types: Vec<String>) -> Self {
        Self {
            targets: Mutex::new(HashMap::new()),
            families: Families::new(env!("CARGO_PKG_VERSION")),
            pending: Pending::default(),
            caps: Caps {
                types: Bounded::new(types, EVENT_TYPES),
                targets: Bounded::new(["smartemailing"], TARGETS),
                rules: Bounded::new(rules, UNKNOWN_RULES),
                actions: Bounded::new(actions, UNKNOWN_RULES),
            },
            gauges: None,
        }
    }

    /// Reads the gauges (queue depths, scheduled and dead deliveries) from `source` at
    /// each scrape.
    pub fn with_gauges(mut self, source: Arc<dyn GaugeSource>) -> Self {
        self.gauges = Some(source);
        self
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

    /// Records a call: the target's last success or error and recent calls, and the
    /// request counter and duration histogram.
    pub fn record_call(&self, call: &CallReport<'_>) {
        let at_ms = call.at_ms;
        self.with_target(call.target, |t| {
            t.recent.push_back(at_ms);
            while t.recent.front().is_some_and(|&s| s < at_ms - MINUTE_MS) {
                t.recent.pop_front();
            }
            match call.error {
                None => t.snapshot.last_success_ms = Some(at_ms),
                Some(why) => t.snapshot.last_error = Some((at_ms, why.to_string())),
            }
        });
        let target = self.caps.targets.label(call.target);
        let endpoint = call.endpoint.to_string();
        let class = call.class.as_str().to_string();
        let by_endpoint: Labels = vec![("target", target.clone()), ("endpoint", endpoint)];
        let mut by_class = by_endpoint.clone();
        by_class.push(("class", class));
        self.families.requests.get_or_create(&by_class).inc();
        self.families
            .durations
            .get_or_create(&by_endpoint)
            .observe(call.duration.as_secs_f64());
        self.pending.count("TargetRequests", capitalised(&by_class));
        self.pending.duration(
            "TargetRequestDuration",
            capitalised(&by_endpoint),
            call.duration.as_secs_f64() * 1000.0,
        );
    }

    /// Records a submitted event of type `kind` (counted as `other` past the cap).
    pub fn record_event(&self, kind: &str, outcome: EventOutcome<'_>) {
        let (outcome, code) = match outcome {
            EventOutcome::Accepted => ("accepted", ""),
            EventOutcome::Duplicate => ("duplicate", ""),
            EventOutcome::Failed => ("failed", ""),
            EventOutcome::Refused(code) => ("refused", code),
        };
        let mut labels: Labels = vec![
            ("type", self.caps.types.label(kind)),
            ("outcome", outcome.to_string()),
        ];
        if !code.is_empty() {
            labels.push(("code", code.to_string()));
        }
        self.families.events.get_or_create(&labels).inc();
        self.pending.count("Events", capitalised(&labels));
    }

    /// Records a delivery of `rule`'s `action` entering `status`.
    pub fn record_delivery(&self, rule: &str, action: &str, status: DeliveryStatus) {
        let labels: Labels = vec![
            ("rule", self.caps.rules.label(rule)),
            ("action", self.caps.actions.label(action)),
            ("status", status.as_str().to_string()),
        ];
        self.families.deliveries.get_or_create(&labels).inc();
        self.pending.count("Deliveries", capitalised(&labels));
    }

    /// The counters' increases since the last call (the functions' CloudWatch records).
    pub fn drain(&self) -> Vec<Sample> {
        self.pending.drain()
    }

    /// The OpenMetrics text of every metric as of `now_ms`, the gauges read first.
    pub async fn exposition(&self, now_ms: i64) -> Result<String, std::fmt::Error> {
        if let Some(source) = &self.gauges {
            self.set_gauges(&source.read(now_ms).await);
        }
        for t in self.targets(now_ms) {
            let state = match (t.circuit, t.open_until_ms) {
                // The breaker lets a probe through once the open time is over.
                (CircuitState::Open, Some(until)) if until <= now_ms => CircuitState::HalfOpen,
                (state, _) => state,
            };
            let value = match state {
                CircuitState::Closed => 0,
                CircuitState::HalfOpen => 1,
                CircuitState::Open => 2,
            };
            let labels: Labels = vec![("target", self.caps.targets.label(&t.target))];
            self.families.circuit.get_or_create(&labels).set(value);
        }
        self.families.encode()
    }

    fn set_gauges(&self, reading: &GaugeReading) {
        let f = &self.families;
        for q in &reading.queues {
            let labels: Labels = vec![("queue", q.queue.to_string())];
            f.queue_depth.get_or_create(&labels).set(q.depth as i64);
            f.oldest_due
                .get_or_create(&labels)
                .set(q.oldest_due_seconds);
        }
        if let Some(n) = reading.scheduled {
            f.scheduled.get_or_create(&Vec::new()).set(n as i64);
        }
        if let Some(n) = reading.dead {
            f.dead.get_or_create(&Vec::new()).set(n as i64);
        }
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

/// Prometheus's label names as CloudWatch dimension names (`rule` → `Rule`).
fn capitalised(labels: &Labels) -> Vec<(&'static str, String)> {
    labels
        .iter()
        .map(|(k, v)| {
            let name = match *k {
                "type" => "Type",
                "outcome" => "Outcome",
                "code" => "Code",
                "rule" => "Rule",
                "action" => "Action",
                "status" => "Status",
                "target" => "Target",
                "endpoint" => "Endpoint",
                "class" => "Class",
                other => other,
            };
            (name, v.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(at_ms: i64, error: Option<&str>) -> CallReport<'_> {
        CallReport {
            target: "smartemailing",
            endpoint: "import",
            class: if error.is_some() {
                CallClass::ServerError
            } else {
                CallClass::Success
            },
            duration: Duration::from_millis(30),
            at_ms,
            error,
        }
    }

    #[test]
    fn a_target_shows_its_last_success_and_error_and_the_calls_of_the_last_minute() {
        let t = Telemetry::new();
        t.record_call(&call(1_000, None));
        t.record_call(&call(50_000, Some("the target answered 503")));
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

#[cfg(test)]
mod exposition_tests {
    use super::*;

    struct Fixed;

    #[async_trait::async_trait]
    impl GaugeSource for Fixed {
        async fn read(&self, _now_ms: i64) -> GaugeReading {
            GaugeReading {
                queues: vec![QueueReading {
                    queue: "dispatch",
                    depth: 3,
                    oldest_due_seconds: 1.5,
                }],
                scheduled: Some(2),
                dead: Some(1),
            }
        }
    }

    #[tokio::test]
    async fn the_exposition_has_every_family_with_bounded_labels() {
        let t = Telemetry::new().with_gauges(Arc::new(Fixed));
        t.record_event("order.created", EventOutcome::Refused("invalid_field"));
        for i in 0..(EVENT_TYPES + 5) {
            t.record_event(&format!("made.up.{i}"), EventOutcome::Accepted);
        }
        t.record_delivery("welcome", "trigger_event", DeliveryStatus::Sent);
        t.record_call(&CallReport {
            target: "smartemailing",
            endpoint: "trigger-event",
            class: CallClass::Success,
            duration: Duration::from_millis(20),
            at_ms: 1_000,
            error: None,
        });
        t.record_circuit("http:hooks.example.com", CircuitState::Open, Some(5_000));
        let text = t.exposition(9_000).await.unwrap();
        if let Ok(path) = std::env::var("RELAY_DUMP_METRICS") {
            std::fs::write(path, &text).unwrap();
        }
        assert!(
            text.contains(r#"relay_events_total{type="other",outcome="accepted"} 6"#),
            "{text}"
        );
        assert!(text.contains(r#"relay_events_total{type="order.created",outcome="refused",code="invalid_field"} 1"#), "{text}");
        assert!(text.contains(
            r#"relay_deliveries_total{rule="welcome",action="trigger_event",status="sent"} 1"#
        ));
        assert!(text.contains(r#"relay_target_requests_total{target="smartemailing",endpoint="trigger-event",class="2xx"} 1"#));
        assert!(text.contains(r#"relay_target_request_duration_seconds_bucket{le="0.025",target="smartemailing",endpoint="trigger-event"} 1"#), "{text}");
        assert!(text.contains(r#"relay_queue_depth{queue="dispatch"} 3"#));
        assert!(text.contains(r#"relay_oldest_due_seconds{queue="dispatch"} 1.5"#));
        assert!(text.contains("relay_scheduled_deliveries 2"));
        assert!(text.contains("relay_dead_deliveries 1"));
        // Open until 5 s, asked at 9 s: the next call is a probe.
        assert!(text.contains(r#"relay_circuit_state{target="http:hooks.example.com"} 1"#));
        assert!(text.contains(&format!(
            r#"relay_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )));
        // The first 50 types by name (order.created among them), the rest as one `other`.
        assert_eq!(text.matches("relay_events_total{").count(), EVENT_TYPES + 1);
    }
}
