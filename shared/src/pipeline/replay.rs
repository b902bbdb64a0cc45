//! Replay: deliveries put back in the dispatch queue with their original ids. A delivery
//! already sent is left alone, so a replay never sends twice; one whose rendering failed is
//! rendered again with the current config. A replay is a new acceptance: the delivery's
//! wait (`created_at`, which `delivery.max_age` counts from) starts over.
//!
//! `relay replay` and `POST /v1/deliveries/replay` share everything here: the refusal of
//! unknown ids, the listing of a filter's deliveries, and the replay in chunks.

use crate::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus};
use crate::domain::event::Event;
use crate::ports::queue::{DispatchJob, QueueName};
use crate::ports::{DeliveryFilter, DeliveryStore, EventStore, Queue, QueueError, StoreError};
use crate::rules::config::Config;
use crate::rules::render::{render_event, NotRendered};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::time::Duration;

/// How many ids are read or replayed per store call (and per progress report).
pub const CHUNK: usize = 100;

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
    let ports = ReplayPorts {
        config,
        events,
        deliveries,
        queue,
    };
    Ok(replay_counted(&ports, ids, now).await?.queued)
}

/// What a replay works on.
pub struct ReplayPorts<'a> {
    /// The current config (a failed rendering is rendered again with it).
    pub config: &'a Config,
    /// The events, for a rendering again.
    pub events: &'a dyn EventStore,
    /// The deliveries.
    pub deliveries: &'a dyn DeliveryStore,
    /// The queue the replayed deliveries go on.
    pub queue: &'a dyn Queue,
}

/// What a replay of some deliveries did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The ids put back in the dispatch queue.
    pub queued: Vec<DeliveryId>,
    /// How many were sent already (and left alone).
    pub already_sent: usize,
}

/// `replay`, also counting the deliveries left alone because they were sent.
pub async fn replay_counted(
    ports: &ReplayPorts<'_>,
    ids: &[DeliveryId],
    now: DateTime<Utc>,
) -> Result<Replayed, ReplayError> {
    let ReplayPorts {
        config,
        events,
        deliveries,
        queue,
    } = *ports;
    let mut out = Replayed::default();
    for mut rec in deliveries.get_many(ids).await? {
        if rec.status == DeliveryStatus::Sent {
            out.already_sent += 1;
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
        out.queued.push(rec.id);
    }
    Ok(out)
}

/// Replays `targets` a chunk at a time, calling `progress(looked_at, queued_so_far)` after
/// each chunk; the queued ids and the count of those already sent.
pub async fn replay_in_chunks(
    ports: &ReplayPorts<'_>,
    targets: &[DeliveryId],
    now: DateTime<Utc>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Replayed, ReplayError> {
    let mut total = Replayed::default();
    for (i, chunk) in targets.chunks(CHUNK).enumerate() {
        let done = replay_counted(ports, chunk, now).await?;
        total.queued.extend(done.queued);
        total.already_sent += done.already_sent;
        progress(i * CHUNK + chunk.len(), total.queued.len());
    }
    Ok(total)
}

/// The ids among `ids` that name no delivery (a typo, another state): a replay naming any
/// replays nothing.
pub async fn unknown_ids(
    deliveries: &dyn DeliveryStore,
    ids: &[DeliveryId],
) -> Result<Vec<DeliveryId>, StoreError> {
    let mut known = HashSet::new();
    for chunk in ids.chunks(CHUNK) {
        let found = deliveries.get_many(chunk).await?;
        known.extend(found.into_iter().map(|d| d.id));
    }
    Ok(ids
        .iter()
        .filter(|id| !known.contains(*id))
        .cloned()
        .collect())
}

/// The ids of every delivery matching `filter` (its `limit` ignored), oldest first.
pub async fn matching_ids(
    deliveries: &dyn DeliveryStore,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryId>, StoreError> {
    let all = DeliveryFilter {
        limit: 0,
        ..filter.clone()
    };
    Ok(deliveries
        .list(&all)
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect())
}

/// A `since`/`until` as `relay deliveries --since` takes it: an RFC 3339 time, or a
/// duration ago from `now` (`2h`); in Unix ms, or `None` when it is neither.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Some(t.timestamp_millis());
    }
    let ago = humantime::parse_duration(text.trim()).ok()?;
    Some(now.timestamp_millis() - i64::try_from(ago.as_millis()).ok()?)
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
