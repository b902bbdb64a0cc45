//! The functions' metrics: what each invocation added to the container's `Telemetry`,
//! written to the log as CloudWatch Embedded Metric Format records (one JSON object a line,
//! on stdout), which CloudWatch turns into metrics in the `SmartEmailingRelay` namespace.
//! No `PutMetricData` call: nothing is added to the hot path but a log line.
//!
//! The metrics are the Prometheus counters of `relay serve` under CloudWatch names, with
//! the same bounded labels as dimensions: `Events` (Type, Outcome, Code), `Deliveries` (Rule,
//! Action, Status), `TargetRequests` (Target, Endpoint, Class) and `TargetRequestDuration`
//! (Target, Endpoint; milliseconds). Each is also rolled up by one dimension (Outcome,
//! Status, Class, Target), so an alarm can watch, say, every dead delivery at once.

use crate::context::{Context, Ports};
use relay_shared::ports::clock::Clock;
use relay_shared::telemetry::{Sample, SampleValue, Telemetry};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "SmartEmailingRelay";

/// The dimension each metric is also rolled up by.
fn rollup(metric: &str) -> &'static str {
    match metric {
        "Events" => "Outcome",
        "Deliveries" => "Status",
        "TargetRequests" => "Class",
        _ => "Target",
    }
}

/// One EMF record for a sample, stamped `timestamp_ms`.
pub fn record(sample: &Sample, timestamp_ms: i64) -> Value {
    let names: Vec<&str> = sample.dimensions.iter().map(|(k, _)| *k).collect();
    let roll = rollup(sample.metric);
    let mut sets = vec![names.clone()];
    if names.len() > 1 && names.contains(&roll) {
        sets.push(vec![roll]);
    }
    let (unit, value) = match &sample.value {
        SampleValue::Count(n) => ("Count", json!(n)),
        SampleValue::Milliseconds(v) => ("Milliseconds", json!(v)),
    };
    let mut out = Map::new();
    out.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": sets,
                "Metrics": [{"Name": sample.metric, "Unit": unit}],
            }],
        }),
    );
    for (k, v) in &sample.dimensions {
        out.insert((*k).to_string(), Value::String(v.clone()));
    }
    out.insert(sample.metric.to_string(), value);
    Value::Object(out)
}

/// Writes what the counters gained since the last flush as EMF lines on stdout, where the
/// Lambda runtime sends them to CloudWatch Logs.
pub fn flush(telemetry: &Telemetry, now_ms: i64) {
    use std::io::Write;
    let samples = telemetry.drain();
    if samples.is_empty() {
        return;
    }
    if !in_lambda() {
        // Outside Lambda (the tests drive the handlers in-process): through `print!`, which
        // a test harness captures, so the lines show only with a failing test's output.
        for s in &samples {
            println!("{}", record(s, now_ms));
        }
        return;
    }
    let mut out = std::io::stdout().lock();
    for s in &samples {
        // A lost metric line must not fail the invocation that did the work.
        let _ = writeln!(out, "{}", record(s, now_ms));
    }
}

/// Whether this process is a Lambda function (the runtime API's address is set for every
/// function, and only there).
fn in_lambda() -> bool {
    static IN_LAMBDA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_LAMBDA.get_or_init(|| std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some())
}

/// A container's recorder and clock: what a handler needs to write its invocation's metrics.
#[derive(Clone)]
pub struct Flusher {
    telemetry: Arc<Telemetry>,
    clock: Arc<dyn Clock>,
}

/// Writes the metrics when dropped: a handler holds one for its invocation, so every way
/// out of it (an early error answer too) writes them.
pub struct OnExit(Flusher);

impl Drop for OnExit {
    fn drop(&mut self) {
        flush(&self.0.telemetry, self.0.clock.now_ms());
    }
}

impl Flusher {
    /// The context's recorder and clock.
    pub fn of<P: Ports>(ctx: &Context<P>) -> Self {
        Self {
            telemetry: ctx.telemetry.clone(),
            clock: ctx.clock.clone(),
        }
    }

    /// A guard that writes the metrics when the invocation ends.
    pub fn on_exit(&self) -> OnExit {
        OnExit(self.clone())
    }

    /// The router, writing its metrics after every request (the inbound function).
    pub fn around(self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::map_response(
            move |resp: axum::response::Response| {
                flush(&self.telemetry, self.clock.now_ms());
                async move { resp }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_shared::domain::delivery::DeliveryStatus;
    use relay_shared::telemetry::{CallClass, CallReport, EventOutcome};
    use std::time::Duration;

    #[test]
    fn each_series_becomes_one_emf_record_with_its_dimensions_and_a_rollup() {
        let t = Telemetry::new();
        t.record_delivery("welcome", "trigger_event", DeliveryStatus::Dead);
        t.record_delivery("welcome", "trigger_event", DeliveryStatus::Dead);
        let samples = t.drain();
        assert_eq!(samples.len(), 1);
        let r = record(&samples[0], 1_795_000_000_000);
        assert_eq!(
            r,
            json!({
                "_aws": {
                    "Timestamp": 1_795_000_000_000_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "SmartEmailingRelay",
                        "Dimensions": [["Rule", "Action", "Status"], ["Status"]],
                        "Metrics": [{"Name": "Deliveries", "Unit": "Count"}],
                    }],
                },
                "Rule": "welcome",
                "Action": "trigger_event",
                "Status": "dead",
                "Deliveries": 2,
            })
        );
        assert!(
            t.drain().is_empty(),
            "a drain leaves nothing to report twice"
        );
    }

    #[test]
    fn every_dimension_named_in_a_record_is_one_of_its_members() {
        let t = Telemetry::new();
        t.record_event("order.created", EventOutcome::Refused("invalid_field"));
        t.record_call(&CallReport {
            target: "smartemailing",
            endpoint: "import",
            class: CallClass::ServerError,
            duration: Duration::from_millis(12),
            at_ms: 0,
            error: Some("the target answered 503"),
        });
        let records: Vec<Value> = t.drain().iter().map(|s| record(s, 0)).collect();
        assert_eq!(records.len(), 3);
        for r in &records {
            let directive = &r["_aws"]["CloudWatchMetrics"][0];
            for set in directive["Dimensions"].as_array().unwrap() {
                for name in set.as_array().unwrap() {
                    assert!(r[name.as_str().unwrap()].is_string(), "{r}");
                }
            }
            let metric = directive["Metrics"][0]["Name"].as_str().unwrap();
            assert!(!r[metric].is_null(), "{r}");
        }
        let duration = records
            .iter()
            .find(|r| r.get("TargetRequestDuration").is_some())
            .unwrap();
        assert_eq!(duration["TargetRequestDuration"], json!([12.0]));
        assert_eq!(
            duration["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Milliseconds"
        );
    }

    /// The dead-deliveries alarm in template.yaml watches a series these records make.
    #[test]
    fn the_template_alarm_on_dead_deliveries_watches_the_series_the_records_make() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let alarm = &doc["Resources"]["DeadDeliveriesAlarm"]["Properties"];
        assert_eq!(alarm["Namespace"].as_str(), Some(NAMESPACE));
        let metric = alarm["MetricName"].as_str().unwrap();
        let dimensions: Vec<(String, String)> = alarm["Dimensions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|d| {
                let field = |k: &str| d[k].as_str().unwrap().to_string();
                (field("Name"), field("Value"))
            })
            .collect();
        let t = Telemetry::new();
        t.record_delivery("welcome", "trigger_event", DeliveryStatus::Dead);
        let r = record(&t.drain()[0], 0);
        let directive = &r["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Metrics"][0]["Name"], metric);
        let names: Vec<Value> = dimensions.iter().map(|(k, _)| json!(k)).collect();
        assert!(
            directive["Dimensions"]
                .as_array()
                .unwrap()
                .contains(&json!(names)),
            "{r}"
        );
        for (k, v) in &dimensions {
            assert_eq!(r[k.as_str()], json!(v));
        }
    }
}
