//! The Prometheus side: one `prometheus-client` registry holding every metric family the
//! relay exposes at `GET /metrics`, in the OpenMetrics text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::AtomicU64;

/// A series' labels, names first.
pub type Labels = Vec<(&'static str, String)>;

/// The buckets of call durations, in seconds: from a fast local answer to the longest
/// timeout a config may set.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Registers families of one type, each with its name and help.
fn register_all<M: Metric + Clone, const N: usize>(
    registry: &mut Registry,
    families: [(&str, &str, &M); N],
) {
    for (name, help, family) in families {
        registry.register(name, help, family.clone());
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The metric families and the registry that encodes them.
pub struct Families {
    registry: Registry,
    pub(super) events: Family<Labels, Counter>,
    pub(super) deliveries: Family<Labels, Counter>,
    pub(super) requests: Family<Labels, Counter>,
    pub(super) durations: Family<Labels, Histogram, fn() -> Histogram>,
    pub(super) queue_depth: Family<Labels, Gauge>,
    pub(super) oldest_due: Family<Labels, Gauge<f64, AtomicU64>>,
    /// A family of one unlabelled series, so it is left out until the store is read.
    pub(super) scheduled: Family<Labels, Gauge>,
    /// As `scheduled`.
    pub(super) dead: Family<Labels, Gauge>,
    pub(super) circuit: Family<Labels, Gauge>,
}

impl Families {
    /// Every family, registered; `relay_build_info` set for `version`.
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::default();
        let durations: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        let f = Self {
            events: Family::default(),
            deliveries: Family::default(),
            requests: Family::default(),
            durations,
            queue_depth: Family::default(),
            oldest_due: Family::default(),
            scheduled: Family::default(),
            dead: Family::default(),
            circuit: Family::default(),
            registry: Registry::default(),
        };
        let counters = [
            ("relay_events", "Events submitted, by type and outcome (accepted, duplicate, failed, refused; code: why refused)", &f.events),
            ("relay_deliveries", "Deliveries entering a status, by rule, action and status", &f.deliveries),
            ("relay_target_requests", "Calls to targets, by target, endpoint and class (2xx, 3xx, 4xx, 5xx, timeout, network, envelope_error, rate_limited)", &f.requests),
        ];
        register_all(&mut registry, counters);
        registry.register(
            "relay_target_request_duration_seconds",
            "How long calls to targets took, by target and endpoint",
            f.durations.clone(),
        );
        let gauges = [
            (
                "relay_queue_depth",
                "Messages waiting in a queue, due or not",
                &f.queue_depth,
            ),
            (
                "relay_scheduled_deliveries",
                "Deliveries held by a timer",
                &f.scheduled,
            ),
            (
                "relay_dead_deliveries",
                "Deliveries given up and held for a replay",
                &f.dead,
            ),
            (
                "relay_circuit_state",
                "Each target's circuit: 0 closed, 1 half-open, 2 open",
                &f.circuit,
            ),
        ];
        register_all(&mut registry, gauges);
        registry.register(
            "relay_oldest_due_seconds",
            "How long the oldest due message of a queue has been due",
            f.oldest_due.clone(),
        );
        let build: Family<Labels, Gauge> = Family::default();
        build
            .get_or_create(&vec![("version", version.to_string())])
            .set(1);
        registry.register("relay_build_info", "The relay's version", build);
        Self { registry, ..f }
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
