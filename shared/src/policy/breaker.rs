//! Circuit breakers and pacing per target (the SmartEmailing account, or a webhook host).
//!
//! A breaker opens after a run of failed calls; while open, deliveries wait without spending
//! attempts; after `probe_after` one call (carrying one delivery) probes the target, and a
//! success closes the breaker. A failed probe spends no attempt either: the outage is the
//! target's fault, not the delivery's. State is per process (per Lambda container on AWS), which is
//! what a breaker needs: it protects the target from this process's calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// What a breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Calls go through.
    Closed,
    /// No calls until this time (Unix ms); deliveries wait.
    Open {
        /// When the breaker half-opens.
        until_ms: i64,
    },
    /// One probe call may go; the rest wait for its result.
    HalfOpen,
}

#[derive(Debug, Default, Clone)]
struct State {
    failures: u32,
    open_until_ms: Option<i64>,
    /// When the run of failed calls began (Unix ms).
    failing_since_ms: Option<i64>,
}

/// The breakers of every target.
#[derive(Debug)]
pub struct Breakers {
    open_after: u32,
    probe_after: Duration,
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    /// Breakers that open after `open_after` failed calls in a row and probe after `probe_after`.
    pub fn new(open_after: u32, probe_after: Duration) -> Self {
        Self {
            open_after: open_after.max(1),
            probe_after,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// What the target's breaker allows at `now_ms`.
    pub fn gate(&self, target: &str, now_ms: i64) -> Gate {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        match states.get(target).and_then(|s| s.open_until_ms) {
            Some(until_ms) if now_ms < until_ms => Gate::Open { until_ms },
            Some(_) => Gate::HalfOpen,
            None => Gate::Closed,
        }
    }

    /// Since when (Unix ms) the target has not answered, while its circuit is open or half
    /// open; `None` while it is closed.
    pub fn down_since(&self, target: &str) -> Option<i64> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let s = states.get(target)?;
        s.open_until_ms.and(s.failing_since_ms)
    }

    /// Records a call that reached the target and was answered sensibly.
    pub fn success(&self, target: &str) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = states.get_mut(target) {
            if s.open_until_ms.is_some() {
                tracing::info!(target = %target, "circuit closed: the target answers again");
            }
            *s = State::default();
        }
    }

    /// Records a failed call (no answer, 5xx, 429, ...); `force` opens the breaker at once
    /// (credentials refused). Returns true when this call opened it.
    pub fn failure(&self, target: &str, now_ms: i64, force: bool) -> bool {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let s = states.entry(target.to_string()).or_default();
        s.failures += 1;
        s.failing_since_ms.get_or_insert(now_ms);
        let was_half_open = s.open_until_ms.is_some();
        if force || was_half_open || s.failures >= self.open_after {
            s.open_until_ms = Some(now_ms + self.probe_after.as_millis() as i64);
            if !was_half_open {
                tracing::warn!(target = %target, failures = s.failures, probe_after_ms = self.probe_after.as_millis() as u64,
                    "circuit open: deliveries to this target wait without spending attempts");
            }
            return !was_half_open;
        }
        false
    }
}

/// Paces calls per target to at most `per_second`, spreading a burst into a steady stream.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: tokio::sync::Mutex<HashMap<String, tokio::time::Instant>>,
}

impl Pacer {
    /// A pacer allowing `per_second` calls a second per target (0 means unlimited).
    pub fn new(per_second: f64) -> Self {
        let interval = if per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Self {
            interval,
            next: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Waits for the target's next slot.
    pub async fn wait(&self, target: &str) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let slot = next
                .get(target)
                .copied()
                .filter(|t| *t > now)
                .unwrap_or(now);
            next.insert(target.to_string(), slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_a_run_of_failures_and_probes_later() {
        let b = Breakers::new(3, Duration::from_secs(30));
        assert_eq!(b.gate("se", 0), Gate::Closed);
        assert!(!b.failure("se", 0, false));
        assert!(!b.failure("se", 1, false));
        assert_eq!(b.gate("se", 1), Gate::Closed);
        assert!(b.failure("se", 2, false));
        assert_eq!(b.gate("se", 3), Gate::Open { until_ms: 30_002 });
        assert_eq!(b.gate("other", 3), Gate::Closed, "breakers are per target");
        assert_eq!(b.gate("se", 30_002), Gate::HalfOpen);
        // A failed probe opens it again at once.
        b.failure("se", 30_010, false);
        assert_eq!(b.gate("se", 30_011), Gate::Open { until_ms: 60_010 });
        assert_eq!(
            b.down_since("se"),
            Some(0),
            "down since the first failure of the run"
        );
        b.success("se");
        assert_eq!(b.gate("se", 30_012), Gate::Closed);
        assert_eq!(b.down_since("se"), None);
    }

    #[test]
    fn a_success_resets_the_run() {
        let b = Breakers::new(2, Duration::from_secs(1));
        b.failure("se", 0, false);
        b.success("se");
        b.failure("se", 0, false);
        assert_eq!(b.gate("se", 0), Gate::Closed);
        assert_eq!(b.down_since("se"), None, "a closed circuit is not down");
        b.failure("se", 0, true);
        assert!(matches!(b.gate("se", 0), Gate::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spreads_calls() {
        let p = Pacer::new(10.0);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            p.wait("se").await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        p.wait("other").await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(400),
            "pacing is per target"
        );
    }
}
