//! Accepting events: claim each id, enqueue one render job per new event, answer.
//! Nothing is reported accepted before its job is durably enqueued.

use crate::domain::event::{EventId, Submitted};
use crate::domain::idempotency::{
    Begin, Claim, EventRecord, RecordStatus, EVENT_RETENTION, IN_PROGRESS_LEASE,
};
use crate::ports::clock::Clock;
use crate::ports::queue::{send_jobs, Job, JobError, RenderJob};
use crate::ports::{AtomicAccept, EventStore, Queue, StoreError};
use crate::telemetry::{EventOutcome, Telemetry};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// What happened to one event of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// New; its render job is enqueued.
    Accepted,
    /// Seen before with the same body; not processed again.
    Duplicate,
    /// Could not be enqueued; the key was released so a retry works.
    Failed,
}

impl Accepted {
    /// As written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Accepted::Accepted => "accepted",
            Accepted::Duplicate => "duplicate",
            Accepted::Failed => "failed",
        }
    }
}

/// Why a submission was refused whole.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The id was used before with a different body.
    #[error("the id `{id}` was already used for a different event")]
    KeyReused {
        /// Position in the batch.
        index: usize,
        /// The id.
        id: EventId,
    },
    /// The id is being processed by another request right now.
    #[error("the event `{id}` is being accepted by another request; retry shortly")]
    InProgress {
        /// Position in the batch.
        index: usize,
        /// The id.
        id: EventId,
    },
    /// One event is larger than the queue takes.
    #[error("the event `{id}` is larger than {limit} bytes once queued; send less data")]
    TooLarge {
        /// Position in the batch.
        index: usize,
        /// The id.
        id: EventId,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event could not be encoded for the store or the queue (a bug, never the caller's).
    #[error(transparent)]
    Job(#[from] JobError),
}

/// What a claim means for the caller: accepted, a duplicate, or the whole batch refused.
fn outcome(index: usize, sub: &Submitted, claim: Begin) -> Result<Accepted, InboundError> {
    let id = || sub.event.id.clone();
    match claim.claim(&sub.payload_hash) {
        Claim::Ours => Ok(Accepted::Accepted),
        Claim::Duplicate => Ok(Accepted::Duplicate),
        Claim::Reused => Err(InboundError::KeyReused { index, id: id() }),
        Claim::InProgress => Err(InboundError::InProgress { index, id: id() }),
    }
}

/// The idempotency record that claims an event's id, IN_PROGRESS for the lease.
fn record_of(
    sub: &Submitted,
    now: DateTime<Utc>,
    retention: Duration,
) -> Result<EventRecord, InboundError> {
    let now_ms = now.timestamp_millis();
    Ok(EventRecord {
        id: sub.event.id.clone(),
        kind: sub.event.kind.to_string(),
        payload_hash: sub.payload_hash.clone(),
        event: serde_json::to_value(&sub.event).map_err(|e| JobError::Encode(e.to_string()))?,
        received_at: now_ms,
        status: RecordStatus::InProgress,
        in_progress_until: now_ms + IN_PROGRESS_LEASE.as_millis() as i64,
        expires_at: now.timestamp() + retention.as_secs() as i64,
    })
}

/// The inbound step.
pub struct Inbound {
    events: Arc<dyn EventStore>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
    wake: Option<Arc<Notify>>,
    max_message_bytes: Option<usize>,
    atomic: Option<Arc<dyn AtomicAccept>>,
    event_retention: Duration,
    telemetry: Option<Arc<Telemetry>>,
}

impl Inbound {
    /// Refuses events whose render job would be larger than `bytes` (SQS takes 256 KiB a
    /// message): such an event is answered 413 instead of failing to enqueue forever.
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }

    /// Wires the step; `wake` is poked after a successful enqueue (the local runner's workers).
    pub fn new(
        events: Arc<dyn EventStore>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
        wake: Option<Arc<Notify>>,
    ) -> Self {
        Self {
            events,
            queue,
            clock,
            wake,
            max_message_bytes: None,
            atomic: None,
            event_retention: EVENT_RETENTION,
            telemetry: None,
        }
    }

    /// Counts each event's outcome in `telemetry` (`relay_events_total`).
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// How long an accepted event's id stays a duplicate (`retention.events`; the default is
    /// `EVENT_RETENTION`).
    pub fn with_event_retention(mut self, retention: Duration) -> Self {
        self.event_retention = retention;
        self
    }

    /// Claims and enqueues in one commit through a store that can (the local store, which
    /// folds concurrent requests into one commit): one `fsync` for many requests.
    pub fn with_atomic(mut self, store: Arc<dyn AtomicAccept>) -> Self {
        self.atomic = Some(store);
        self
    }

    /// Accepts validated events: one outcome per event, in order.
    pub async fn accept(
        &self,
        submitted: Vec<Submitted>,
    ) -> Result<Vec<(EventId, Accepted)>, InboundError> {
        let now = self.clock.now();
        let now_ms = now.timestamp_millis();
        let records = submitted
            .iter()
            .map(|sub| record_of(sub, now, self.event_retention))
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes = match &self.atomic {
            Some(atomic) => {
                self.accept_in_one_commit(atomic.as_ref(), &submitted, records, now_ms)
                    .await
            }
            None => self.accept_across_ports(&submitted, records, now_ms).await,
        }?;
        self.report(&submitted, &outcomes);
        Ok(outcomes)
    }

    /// Logs and counts the outcomes (a refused submission is counted by the API, by its
    /// code): the first line of an event's story in the logs.
    fn report(&self, submitted: &[Submitted], outcomes: &[(EventId, Accepted)]) {
        for (sub, (id, outcome)) in submitted.iter().zip(outcomes) {
            let kind = sub.event.kind.as_str();
            tracing::info!(event = %id, event_type = %kind, outcome = %outcome.as_str(), "event received");
            let Some(telemetry) = &self.telemetry else {
                continue;
            };
            let outcome = match outcome {
                Accepted::Accepted => EventOutcome::Accepted,
                Accepted::Duplicate => EventOutcome::Duplicate,
                Accepted::Failed => EventOutcome::Failed,
            };
            telemetry.record_event(kind, outcome);
        }
    }

    /// Claim, enqueue, complete, through separate ports (DynamoDB and SQS cannot share a
    /// transaction). A claim taken is released if the batch is refused or its job was not
    /// enqueued, so the caller's retry works.
    async fn accept_across_ports(
        &self,
        submitted: &[Submitted],
        records: Vec<EventRecord>,
        now_ms: i64,
    ) -> Result<Vec<(EventId, Accepted)>, InboundError> {
        let claims = self.events.begin_many(&records, now_ms).await?;
        let started: Vec<usize> = (0..claims.len())
            .filter(|&i| claims[i] == Begin::Started)
            .collect();
        let decided = submitted
            .iter()
            .zip(claims)
            .enumerate()
            .map(|(index, (sub, claim))| Ok((sub.event.id.clone(), outcome(index, sub, claim)?)))
            .collect::<Result<Vec<_>, InboundError>>();
        let mut outcomes = match decided {
            Ok(o) => o,
            Err(e) => {
                self.release_all(submitted, &started).await;
                return Err(e);
            }
        };
        if started.is_empty() {
            return Ok(outcomes);
        }
        let failed = self.enqueue_started(submitted, &started).await?;
        self.complete_or_release(submitted, &started, &failed, &mut outcomes)
            .await;
        Ok(outcomes)
    }

    /// Enqueues the render jobs of the events whose claims started; the positions (in
    /// `submitted`) of those the queue refused.
    async fn enqueue_started(
        &self,
        submitted: &[Submitted],
        started: &[usize],
    ) -> Result<Vec<usize>, InboundError> {
        let jobs = started
            .iter()
            .map(|&i| self.render_job(i, &submitted[i]))
            .collect::<Result<Vec<_>, _>>();
        let jobs = match jobs {
            Ok(j) => j,
            Err(e) => {
                self.release_all(submitted, started).await;
                return Err(e);
            }
        };
        Ok(
            match send_jobs(self.queue.as_ref(), &jobs, Duration::ZERO).await {
                Ok(()) => Vec::new(),
                Err(e) => {
                    tracing::error!(error = %e, "could not enqueue render jobs");
                    e.failed
                        .iter()
                        .filter_map(|&k| started.get(k).copied())
                        .collect()
                }
            },
        )
    }

    /// Marks the enqueued events completed and releases the keys of those not enqueued
    /// (their outcome becomes `failed`).
    async fn complete_or_release(
        &self,
        submitted: &[Submitted],
        started: &[usize],
        failed: &[usize],
        outcomes: &mut [(EventId, Accepted)],
    ) {
        let mut done: Vec<EventId> = Vec::with_capacity(started.len());
        for &i in started {
            let id = &submitted[i].event.id;
            if failed.contains(&i) {
                if let Err(e) = self.events.release(id).await {
                    tracing::error!(error = %e, event = %id, "could not release an idempotency key");
                }
                outcomes[i].1 = Accepted::Failed;
            } else {
                done.push(id.clone());
            }
        }
        if let Err(e) = self.events.complete_many(&done).await {
            // The jobs are enqueued, so the events are safe; a retry after the lease
            // re-enqueues them and the deterministic delivery ids absorb the repeat.
            tracing::warn!(error = %e, "could not mark events completed");
        }
        if failed.len() < started.len() {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
    }

    async fn accept_in_one_commit(
        &self,
        atomic: &dyn AtomicAccept,
        submitted: &[Submitted],
        mut records: Vec<EventRecord>,
        now_ms: i64,
    ) -> Result<Vec<(EventId, Accepted)>, InboundError> {
        let bodies = submitted
            .iter()
            .enumerate()
            .map(|(i, sub)| Ok(self.render_job(i, sub)?.encode()?))
            .collect::<Result<Vec<_>, InboundError>>()?;
        for r in &mut records {
            r.status = RecordStatus::Completed;
        }
        let claims = atomic.accept_atomic(records, bodies, now_ms).await?;
        let mut outcomes = Vec::with_capacity(claims.len());
        let mut accepted = false;
        for (index, (sub, claim)) in submitted.iter().zip(claims).enumerate() {
            let outcome = outcome(index, sub, claim)?;
            accepted |= outcome == Accepted::Accepted;
            outcomes.push((sub.event.id.clone(), outcome));
        }
        if accepted {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        Ok(outcomes)
    }

    /// The render job of the event at `index`, refused when the event is too large for the
    /// queue (with room for the job's envelope).
    fn render_job(&self, index: usize, sub: &Submitted) -> Result<RenderJob, InboundError> {
        if let Some(limit) = self.max_message_bytes {
            // The event's own size plus 64 bytes for the envelope: the bound since the
            // first version of this check.
            let size = serde_json::to_vec(&sub.event)
                .map_err(|e| JobError::Encode(e.to_string()))?
                .len()
                + 64;
            if size > limit {
                return Err(InboundError::TooLarge {
                    index,
                    id: sub.event.id.clone(),
                    limit,
                });
            }
        }
        Ok(RenderJob {
            event: sub.event.clone(),
            rules: None,
            depth: 0,
            after_ms: None,
        })
    }

    async fn release_all(&self, submitted: &[Submitted], started: &[usize]) {
        for &i in started {
            if let Err(e) = self.events.release(&submitted[i].event.id).await {
                tracing::error!(error = %e, "could not release an idempotency key");
            }
        }
    }
}

#[cfg(all(test, feature = "local"))]
mod tests {
    use super::*;
    use crate::adapters::sqlite::SqliteStore;
    use crate::domain::event::parse_submission;
    use crate::ports::clock::ManualClock;
    use serde_json::json;

    #[tokio::test]
    async fn an_event_too_large_for_the_queue_is_refused_and_its_key_released() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::at_ms(1_795_000_000_000));
        let store = Arc::new(SqliteStore::open(dir.path(), clock.clone()).unwrap());
        let inbound = Inbound::new(store.clone(), store.clone(), clock.clone(), None)
            .with_max_message_bytes(1000);
        let big = json!({"events": [
            {"id": "small", "type": "t"},
            {"id": "big", "type": "t", "data": {"x": "y".repeat(2000)}}
        ]});
        let subs = parse_submission(big, clock.now()).unwrap();
        match inbound.accept(subs).await {
            Err(InboundError::TooLarge { index: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        // Nothing of the batch is held: both ids can be sent again.
        assert!(store.get("small").await.unwrap().is_none());
        assert!(store.get("big").await.unwrap().is_none());
        let ok = parse_submission(json!({"id": "small", "type": "t"}), clock.now()).unwrap();
        assert_eq!(inbound.accept(ok).await.unwrap()[0].1, Accepted::Accepted);
    }

    #[tokio::test]
    async fn one_commit_accepts_refuse_a_batch_whole_on_a_reused_key() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::at_ms(1_795_000_000_000));
        let store = Arc::new(SqliteStore::open(dir.path(), clock.clone()).unwrap());
        let inbound = Inbound::new(store.clone(), store.clone(), clock.clone(), None)
            .with_atomic(store.clone());
        let first = parse_submission(
            json!({"id": "a", "type": "t", "data": {"v": 1}}),
            clock.now(),
        )
        .unwrap();
        assert_eq!(
            inbound.accept(first.clone()).await.unwrap()[0].1,
            Accepted::Accepted
        );
        assert_eq!(
            inbound.accept(first).await.unwrap()[0].1,
            Accepted::Duplicate
        );
        let batch = parse_submission(
            json!({"events": [{"id": "b", "type": "t"}, {"id": "a", "type": "t", "data": {"v": 2}}]}),
            clock.now(),
        )
        .unwrap();
        match inbound.accept(batch).await {
            Err(InboundError::KeyReused { index: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            store.get("b").await.unwrap().is_none(),
            "nothing of a refused batch is stored"
        );
        assert_eq!(
            store
                .queue_depth(crate::ports::queue::QueueName::Render)
                .unwrap(),
            1,
            "one job: the first accept"
        );
        // Many concurrent accepts share commits and each gets its own answer.
        let mut tasks = Vec::new();
        for i in 0..50 {
            let inbound = Arc::new(
                Inbound::new(store.clone(), store.clone(), clock.clone(), None)
                    .with_atomic(store.clone()),
            );
            let sub =
                parse_submission(json!({"id": format!("c{i}"), "type": "t"}), clock.now()).unwrap();
            tasks.push(tokio::spawn(async move {
                inbound.accept(sub).await.unwrap()[0].1
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Accepted::Accepted);
        }
        assert_eq!(
            store
                .queue_depth(crate::ports::queue::QueueName::Render)
                .unwrap(),
            51
        );
        assert_eq!(
            store.get("c7").await.unwrap().unwrap().status,
            RecordStatus::Completed
        );
    }
}
