//! How long a delivery may wait to be sent (`delivery.max_age`): past it, whatever kept it
//! waiting (an outage, its retries), it is given up, so nothing waits
//! forever. Pure: the caller brings the clock.

use chrono::{DateTime, SecondsFormat, Utc};
use std::time::Duration;

/// Why a delivery that waited too long was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause<'a> {
    /// The target's circuit is open: it has not answered since this time (Unix ms).
    Unreachable {
        /// The target as a user names it: `SmartEmailing`, or a webhook's host.
        target: &'a str,
        /// When the run of failed calls began.
        since_ms: i64,
    },
    /// The last error recorded on the delivery, if any.
    LastError(Option<&'a str>),
}

/// The longest wait, from when a delivery's wait began (see `began_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge(pub Duration);

impl MaxAge {
    /// How long a delivery whose wait began at `began_ms` has waited at `now_ms`, when that is
    /// longer than the limit; `None` while it may still wait.
    pub fn exceeded(self, began_ms: i64, now_ms: i64) -> Option<Duration> {
        let waited = Duration::from_millis(now_ms.saturating_sub(began_ms).max(0) as u64);
        (waited > self.0).then_some(waited)
    }

    /// The reason recorded on a delivery given up after waiting `waited`.
    pub fn reason(self, waited: Duration, cause: Cause<'_>) -> String {
        let why = match cause {
            Cause::Unreachable { target, since_ms } => {
                let since = DateTime::<Utc>::from_timestamp_millis(since_ms)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                    .unwrap_or_else(|| since_ms.to_string());
                format!("{target} unreachable since {since}")
            }
            Cause::LastError(Some(e)) => e.to_string(),
            Cause::LastError(None) => "it could not be sent".to_string(),
        };
        format!(
            "not sent within delivery.max_age ({}): waited {} since its event was accepted; {why}",
            humantime::format_duration(self.0),
            humantime::format_duration(Duration::from_secs(waited.as_secs())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn a_delivery_may_wait_up_to_the_limit_and_not_longer() {
        let limit = MaxAge(Duration::from_secs(7 * 86_400));
        assert_eq!(limit.exceeded(0, 7 * DAY_MS), None);
        assert_eq!(
            limit.exceeded(0, 7 * DAY_MS + 1_000),
            Some(Duration::from_millis(7 * DAY_MS as u64 + 1_000))
        );
        assert_eq!(
            limit.exceeded(5, 0),
            None,
            "a wait that begins later is no wait"
        );
    }

    #[test]
    fn the_reason_says_how_long_and_why() {
        let limit = MaxAge(Duration::from_secs(3_600));
        let waited = Duration::from_millis(3_700_500);
        assert_eq!(
            limit.reason(
                waited,
                Cause::Unreachable {
                    target: "SmartEmailing",
                    since_ms: 1_795_000_000_000
                }
            ),
            "not sent within delivery.max_age (1h): waited 1h 1m 40s since its event was accepted; SmartEmailing unreachable since 2026-11-18T11:06:40Z"
        );
        assert!(limit
            .reason(waited, Cause::LastError(Some("the target answered 503")))
            .ends_with("; the target answered 503"));
        assert!(limit
            .reason(waited, Cause::LastError(None))
            .ends_with("; it could not be sent"));
    }
}
