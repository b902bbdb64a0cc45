//! When a failed delivery is tried again: an explicit schedule of delays (as Svix's worker
//! has), jittered, with `Retry-After` honoured within bounds and a floor for an overloaded
//! target. Pure: the caller brings the clock and the random numbers.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// The retry schedule of a config, and the floor for an overloaded target.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    min_overload_delay: Duration,
}

impl RetryPolicy {
    /// Retries after each delay of `schedule` in turn, and never sooner than
    /// `min_overload_delay` when the target said it is overloaded.
    pub fn new(schedule: Vec<Duration>, min_overload_delay: Duration) -> Self {
        Self {
            schedule,
            min_overload_delay,
        }
    }

    /// How long to wait after failed attempt `attempt` (1 for the first), or `None` once the
    /// schedule is spent. `jitter` (in ±0.2) is drawn only when there is a next attempt, so a
    /// seeded run draws the same numbers whatever the schedule.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        overload: bool,
        jitter: impl FnOnce() -> f64,
    ) -> Option<Duration> {
        if attempt as usize > self.schedule.len() {
            return None;
        }
        let delay = retry_delay(&self.schedule, attempt, retry_after, jitter());
        Some(if overload {
            delay.max(self.min_overload_delay)
        } else {
            delay
        })
    }
}

/// The delay before attempt `attempts + 1`: the schedule's step, jittered ±20 %, and a
/// `Retry-After` honoured between that step and twice it.
pub fn retry_delay(
    schedule: &[Duration],
    attempts: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let idx = (attempts.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    let step = schedule
        .get(idx)
        .copied()
        .unwrap_or(Duration::from_secs(60));
    let jittered = step.mul_f64((1.0 + jitter.clamp(-0.2, 0.2)).max(0.0));
    match retry_after {
        Some(asked) => asked.clamp(step, step * 2).max(jittered.min(step * 2)),
        None => jittered,
    }
}

/// Parses `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (when - now).to_std().ok().or(Some(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_bounded_by_the_schedule() {
        let schedule = [Duration::from_secs(10), Duration::from_secs(60)];
        assert_eq!(
            retry_delay(&schedule, 1, None, 0.0),
            Duration::from_secs(10)
        );
        assert_eq!(
            retry_delay(&schedule, 1, None, 0.2),
            Duration::from_secs(12)
        );
        assert_eq!(
            retry_delay(&schedule, 1, Some(Duration::from_secs(15)), 0.0),
            Duration::from_secs(15)
        );
        assert_eq!(
            retry_delay(&schedule, 1, Some(Duration::from_secs(500)), 0.0),
            Duration::from_secs(20)
        );
        assert_eq!(
            retry_delay(&schedule, 2, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(60)
        );
        assert_eq!(
            retry_delay(&schedule, 9, None, 0.0),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn retry_after_reads_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 10:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    /// One retry, 10 s later; 30 s when the target is overloaded.
    fn ten_seconds_once() -> RetryPolicy {
        RetryPolicy::new(vec![Duration::from_secs(10)], Duration::from_secs(30))
    }

    #[test]
    fn the_schedule_once_spent_gives_no_delay_and_draws_no_jitter() {
        let policy = ten_seconds_once();
        assert_eq!(
            policy.next_delay(1, None, false, || 0.0),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            policy.next_delay(2, None, false, || panic!("no jitter is drawn")),
            None
        );
    }

    #[test]
    fn an_overloaded_target_is_left_alone_for_at_least_the_floor() {
        let policy = ten_seconds_once();
        assert_eq!(
            policy.next_delay(1, None, true, || 0.0),
            Some(Duration::from_secs(30))
        );
    }
}
