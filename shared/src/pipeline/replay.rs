//! Replay: deliveries put back in the dispatch queue with their original ids. A delivery
//! already sent is left alone, so a replay never sends twice; one whose rendering failed is
//! rendered again with the current config. A replay is a new acceptance: the delivery's
//! wait (`created_at`, which `delivery.max_age` counts from) starts over.

use crate::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus};
use crate::domain::event::Event;
use crate::ports::queue::{DispatchJob, QueueName};
use crate::ports::{DeliveryStore, EventStore, Queue, QueueError, StoreError};
use crate::rules::config::Config;
use crate::rules::render::{render_event, NotRendered};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Why a replay stopped; the deliveries queued before it stay queued.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dispatch queue refused the job.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The job could not be encoded.
    #[error("cannot encode a dispatch job: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Puts deliveries back in the queue with their original ids; a delivery already sent is
/// left alone, so a replay never sends twice. Deliveries whose rendering failed are
/// rendered again with the current config. Returns the ids queued.
pub async fn replay(
    config: &Config,
    events: &dyn EventStore,
    deliveries: &dyn DeliveryStore,
    queue: &dyn Queue,
    ids: &[DeliveryId],
    now: DateTime<Utc>,
) -> Result<Vec<DeliveryId>, ReplayError> {
    let mut queued = Vec::new();
    for mut rec in deliveries.get_many(ids).await? {
        if rec.status == DeliveryStatus::Sent {
            continue;
        }
        let needs_render = rec.request.is_none() || rec.status == DeliveryStatus::Skipped;
        if needs_render && !rerender(config, events, deliveries, &mut rec, now).await? {
            continue;
        }
        rec.status = DeliveryStatus::Pending;
        rec.attempts = 0;
        rec.next_attempt_at = None;
        rec.created_at = now.timestamp_millis();
        deliveries.save(&rec).await?;
        let body = serde_json::to_string(&DispatchJob {
            delivery: rec.id.clone(),
        })?;
        queue
            .send(QueueName::Dispatch, vec![body], Duration::ZERO)
            .await?;
        queued.push(rec.id);
    }
    Ok(queued)
}

/// Renders a delivery's action again from its stored event; false when there is nothing to
/// send (the event is gone, the action no longer matches, or it fails again, which is
/// recorded).
async fn rerender(
    config: &Config,
    events: &dyn EventStore,
    deliveries: &dyn DeliveryStore,
    rec: &mut DeliveryRecord,
    now: DateTime<Utc>,
) -> Result<bool, ReplayError> {
    let Some(stored) = events.get(rec.event_id.as_str()).await? else {
        return Ok(false);
    };
    let event: Event =
        serde_json::from_value(stored.event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let only = vec![rec.rule.clone()];
    let rendered = render_event(config, &event, Some(&only), now)
        .into_iter()
        .find(|r| r.index == rec.action_index);
    match rendered.map(|r| r.result) {
        Some(Ok(prepared)) => {
            rec.request = Some(prepared);
            Ok(true)
        }
        Some(Err(NotRendered::Failed(why) | NotRendered::Skipped(why))) => {
            rec.last_error = Some(why);
            deliveries.save(rec).await?;
            Ok(false)
        }
        None => Ok(false),
    }
}
