//! The settings of the process around the rules: how `relay serve` bounds its HTTP server
//! (`server:`), and how long what the relay stores is kept (`retention:`, the same meaning
//! locally and on AWS).

use crate::domain::duration::HumanDuration;
use crate::domain::retention::Retention;
use serde::Deserialize;
use std::time::Duration;

/// `server:` — the bounds `relay serve` holds where API Gateway would hold them on AWS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// A client that has not sent a whole request head within this is dropped.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// A body not received within this is answered 408.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: HumanDuration,
    /// A body arriving slower than this many bytes a second (after the first second) is
    /// answered 408.
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: u64,
    /// An idle keep-alive connection is closed after this.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// The most connections held at once; more wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The most requests handled at once; more are answered 503 with `Retry-After`.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            min_body_rate: default_min_body_rate(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

fn default_header_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_body_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_min_body_rate() -> u64 {
    1024
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_in_flight() -> usize {
    256
}

/// `retention:` — how long records are kept, locally (the sweeper of `relay serve`) and on
/// AWS (the DynamoDB TTLs the functions write). Pending, retrying and scheduled deliveries,
/// their jobs and timers are never swept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Received events: the idempotency window (an id older than this is accepted again).
    #[serde(default = "default_events")]
    pub events: HumanDuration,
    /// Finished deliveries: sent, skipped, cancelled, dry_run.
    #[serde(default = "default_deliveries")]
    pub deliveries: HumanDuration,
    /// Dead letters not replayed.
    #[serde(default = "default_dead")]
    pub dead: HumanDuration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            events: default_events(),
            deliveries: default_deliveries(),
            dead: default_dead(),
        }
    }
}

fn default_events() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}
fn default_deliveries() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 24 * 3600))
}
fn default_dead() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 24 * 3600))
}

impl RetentionSettings {
    /// The windows as the stores use them.
    pub fn windows(&self) -> Retention {
        Retention {
            events: self.events.get(),
            deliveries: self.deliveries.get(),
            dead: self.dead.get(),
        }
    }
}

/// Checks the settings' values; each problem names its field.
pub(super) fn check(
    server: &ServerSettings,
    retention: &RetentionSettings,
    problems: &mut Vec<String>,
) {
    for (field, d) in [
        ("server.header_timeout", &server.header_timeout),
        ("server.body_timeout", &server.body_timeout),
        ("server.idle_timeout", &server.idle_timeout),
    ] {
        if d.get().is_zero() {
            problems.push(format!("{field}: must be longer than 0s"));
        }
    }
    if server.max_connections == 0 {
        problems.push("server.max_connections: must be at least 1".into());
    }
    if server.max_in_flight == 0 {
        problems.push("server.max_in_flight: must be at least 1".into());
    }
    for (field, d) in [
        ("retention.events", &retention.events),
        ("retention.deliveries", &retention.deliveries),
        ("retention.dead", &retention.dead),
    ] {
        if d.get() < Duration::from_secs(3600) {
            problems.push(format!(
                "{field}: must be at least 1h (it is {d}); a shorter window would forget work still in flight"
            ));
        }
    }
}
