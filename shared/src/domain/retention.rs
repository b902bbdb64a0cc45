//! How long what the relay stores is kept: one rule for both modes (the sweeper of `relay
//! serve` and the DynamoDB TTLs on AWS), so they cannot drift.

use crate::domain::delivery::DeliveryStatus;
use std::time::Duration;

/// The retention windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Received events: the idempotency window.
    pub events: Duration,
    /// Finished deliveries (sent, skipped, cancelled, dry_run), from when they finished.
    pub deliveries: Duration,
    /// Dead deliveries not replayed, from when they died.
    pub dead: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            events: Duration::from_secs(7 * 24 * 3600),
            deliveries: Duration::from_secs(30 * 24 * 3600),
            dead: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Retention {
    /// When a delivery last written at `written_ms` in `status` may be forgotten (Unix ms);
    /// `None` while it still has work to do (pending, retrying, scheduled): those are never
    /// swept.
    pub fn delivery_expires_at(&self, status: DeliveryStatus, written_ms: i64) -> Option<i64> {
        let window = match status {
            DeliveryStatus::Pending | DeliveryStatus::Retrying | DeliveryStatus::Scheduled => {
                return None
            }
            DeliveryStatus::Dead => self.dead,
            DeliveryStatus::Sent
            | DeliveryStatus::Skipped
            | DeliveryStatus::Cancelled
            | DeliveryStatus::DryRun => self.deliveries,
        };
        Some(written_ms.saturating_add(window.as_millis() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_in_progress_never_expires_and_finished_work_expires_after_its_window() {
        let r = Retention {
            events: Duration::from_secs(1),
            deliveries: Duration::from_secs(10),
            dead: Duration::from_secs(20),
        };
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::Retrying,
            DeliveryStatus::Scheduled,
        ] {
            assert_eq!(r.delivery_expires_at(s, 1_000), None, "{s:?}");
        }
        assert_eq!(
            r.delivery_expires_at(DeliveryStatus::Sent, 1_000),
            Some(11_000)
        );
        assert_eq!(
            r.delivery_expires_at(DeliveryStatus::DryRun, 0),
            Some(10_000)
        );
        assert_eq!(r.delivery_expires_at(DeliveryStatus::Dead, 0), Some(20_000));
    }
}
