//! The config's settings sections, read as written with their defaults filled in.

use crate::domain::duration::HumanDuration;
use crate::domain::smartemailing;
use serde::Deserialize;
use std::time::Duration;

/// Where SmartEmailing is, and how its account takes dates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartEmailingSettings {
    /// The API base URL, without a trailing slash.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The account's IANA time zone (dates are sent in it); checked at load.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Ids of the custom fields that hold dates (sent as `YYYY-MM-DD HH:MM:SS`).
    #[serde(default)]
    pub date_custom_fields: Vec<i64>,
}

impl Default for SmartEmailingSettings {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
            time_zone: default_time_zone(),
            date_custom_fields: Vec::new(),
        }
    }
}

fn default_time_zone() -> String {
    crate::rules::dates::DEFAULT_TIME_ZONE.name().to_string()
}

fn default_base_url() -> String {
    smartemailing::DEFAULT_BASE_URL.to_string()
}

/// How deliveries are sent and retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// How long one call may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Delays between attempts; its length is the number of retries.
    #[serde(default = "default_retry_schedule")]
    pub retry_schedule: Vec<HumanDuration>,
    /// How long to wait to fill a bulk call.
    #[serde(default = "default_batch_window")]
    pub batch_window: HumanDuration,
    /// The least wait after a 429, a timeout or a rate-limit message.
    #[serde(default = "default_min_overload_delay")]
    pub min_overload_delay: HumanDuration,
    /// When a target's circuit opens, and when it is probed.
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// Calls per second per target (the SmartEmailing account, or a webhook host).
    #[serde(default = "default_max_rps")]
    pub max_requests_per_second: f64,
    /// How long a delivery may wait to be sent after its event was accepted, whatever keeps
    /// it waiting; past it, it is dead (and can be replayed).
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
}

/// The circuit breaker's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Failed calls in a row that open the circuit.
    #[serde(default = "default_open_after")]
    pub open_after: u32,
    /// How long an open circuit waits before one probe.
    #[serde(default = "default_probe_after")]
    pub probe_after: HumanDuration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            open_after: default_open_after(),
            probe_after: default_probe_after(),
        }
    }
}

fn default_open_after() -> u32 {
    10
}

fn default_probe_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_min_overload_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_max_rps() -> f64 {
    10.0
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            retry_schedule: default_retry_schedule(),
            batch_window: default_batch_window(),
            min_overload_delay: default_min_overload_delay(),
            breaker: BreakerSettings::default(),
            max_requests_per_second: default_max_rps(),
            max_age: default_max_age(),
        }
    }
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}

fn default_batch_window() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

fn default_retry_schedule() -> Vec<HumanDuration> {
    [5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(|s| HumanDuration(Duration::from_secs(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::rules::config::Config;
    use std::time::Duration;

    #[test]
    fn a_delivery_may_wait_a_week_unless_told() {
        let c = Config::parse("rules: []", "t").unwrap();
        assert_eq!(c.delivery.max_age.get(), Duration::from_secs(7 * 86_400));
        let c = Config::parse("delivery: {max_age: 2d}\nrules: []", "t").unwrap();
        assert_eq!(c.delivery.max_age.get(), Duration::from_secs(2 * 86_400));
    }

    #[test]
    fn max_age_must_outlast_the_retry_schedule() {
        let e = Config::parse(
            "delivery: {max_age: 1m, retry_schedule: [30s, 30s]}\nrules: []",
            "t",
        )
        .unwrap_err();
        assert!(
            e.problems.iter().any(|p| p.starts_with(
                "delivery.max_age: must be longer than the whole retry_schedule (1m)"
            )),
            "{:?}",
            e.problems
        );
    }
}
