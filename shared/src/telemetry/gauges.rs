//! The gauges read when the metrics are scraped (queue depths, the oldest due message,
//! scheduled and dead deliveries): the store knows them, so they are asked, not counted.

use crate::domain::delivery::DeliveryStatus;
use crate::ports::queue::{QueueDepth, QueueName};
use crate::ports::{DeliveryStore, Queue};
use async_trait::async_trait;
use std::sync::Arc;

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

/// Where the gauges come from (`StoreGauges` for `relay serve`).
#[async_trait]
pub trait GaugeSource: Send + Sync {
    /// The gauges as of `now_ms`.
    async fn read(&self, now_ms: i64) -> GaugeReading;
}

/// The gauges of a store and its queues, read through their ports.
pub struct StoreGauges {
    /// The queues (`Queue::depth`).
    pub queue: Arc<dyn Queue>,
    /// The deliveries (`DeliveryStore::count_by_status`).
    pub deliveries: Arc<dyn DeliveryStore>,
}

#[async_trait]
impl GaugeSource for StoreGauges {
    async fn read(&self, now_ms: i64) -> GaugeReading {
        let mut queues = Vec::new();
        for queue in [QueueName::Render, QueueName::Dispatch] {
            let Ok(QueueDepth {
                messages: Some(depth),
                oldest_due_age_ms,
            }) = self.queue.depth(queue, now_ms).await
            else {
                continue;
            };
            queues.push(QueueReading {
                queue: queue.as_str(),
                depth,
                oldest_due_seconds: oldest_due_age_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
            });
        }
        let counts = self.deliveries.count_by_status(0).await.ok();
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
