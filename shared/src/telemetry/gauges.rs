//! The gauges read when the metrics are scraped (queue depths, the oldest due message,
//! scheduled and dead deliveries): the store knows them, so they are asked, not counted.

use async_trait::async_trait;

/// One queue's gauges.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueReading {
    /// The queue's name (`render`, `dispatch`).
    pub queue: &'static str,
    /// Messages waiting, due or not.
    pub depth: u64,
    /// How long the oldest due message has been due, in seconds (0 when none is).
    pub oldest_due_seconds: f64,
}

/// What the store says at scrape time; a part it could not read is `None` and left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GaugeReading {
    /// Each queue's gauges.
    pub queues: Vec<QueueReading>,
    /// Deliveries held by a timer.
    pub scheduled: Option<u64>,
    /// Deliveries given up.
    pub dead: Option<u64>,
}

/// Where the gauges come from (the local store for `relay serve`).
#[async_trait]
pub trait GaugeSource: Send + Sync {
    /// The gauges as of `now_ms`.
    async fn read(&self, now_ms: i64) -> GaugeReading;
}

#[cfg(feature = "local")]
mod sqlite {
    use super::{GaugeReading, GaugeSource, QueueReading};
    use crate::adapters::sqlite::SqliteStore;
    use crate::domain::delivery::DeliveryStatus;
    use crate::ports::queue::QueueName;
    use crate::ports::DeliveryStore;
    use async_trait::async_trait;

    #[async_trait]
    impl GaugeSource for SqliteStore {
        async fn read(&self, now_ms: i64) -> GaugeReading {
            let mut queues = Vec::new();
            for queue in [QueueName::Render, QueueName::Dispatch] {
                let (Ok(depth), Ok(oldest)) = (self.queue_depth(queue), self.oldest_due_ms(queue))
                else {
                    continue;
                };
                queues.push(QueueReading {
                    queue: queue.as_str(),
                    depth: depth as u64,
                    oldest_due_seconds: oldest.map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0),
                });
            }
            let counts = self.count_by_status(0).await.ok();
            let count = |s: DeliveryStatus| {
                counts
                    .as_ref()
                    .map(|c| c.iter().filter(|(k, _)| *k == s).map(|(_, n)| *n).sum())
            };
            GaugeReading {
                queues,
                scheduled: count(DeliveryStatus::Scheduled),
                dead: count(DeliveryStatus::Dead),
            }
        }
    }
}
