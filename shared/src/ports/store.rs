//! The stores: events (idempotency records), deliveries, timers and contacts.

use crate::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus};
use crate::domain::event::EventId;
use crate::domain::idempotency::{Begin, EventRecord};
use async_trait::async_trait;

/// A storage failure. The core treats every one as transient: the work is retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or refused the operation.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be read back.
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

/// Idempotency records of received events (which are also the events' store).
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Claims the record's key: `Started` when it was free, expired, or held IN_PROGRESS past
    /// its lease; otherwise the record that holds it.
    async fn begin(&self, record: &EventRecord, now_ms: i64) -> Result<Begin, StoreError>;
    /// Claims several keys, in order, as `begin` would one by one (a store may do it in one
    /// round trip).
    async fn begin_many(
        &self,
        records: &[EventRecord],
        now_ms: i64,
    ) -> Result<Vec<Begin>, StoreError> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(self.begin(r, now_ms).await?);
        }
        Ok(out)
    }
    /// Marks the key COMPLETED.
    async fn complete(&self, id: &EventId) -> Result<(), StoreError>;
    /// Marks several keys COMPLETED.
    async fn complete_many(&self, ids: &[EventId]) -> Result<(), StoreError> {
        for id in ids {
            self.complete(id).await?;
        }
        Ok(())
    }
    /// Frees the key so the caller's retry can claim it.
    async fn release(&self, id: &EventId) -> Result<(), StoreError>;
    /// Reads a record.
    async fn get(&self, id: &str) -> Result<Option<EventRecord>, StoreError>;
}

/// A store that can claim events and enqueue their render jobs in one commit (the local
/// store; DynamoDB and SQS cannot share a transaction).
#[async_trait]
pub trait AtomicAccept: Send + Sync {
    /// Claims `records` and enqueues `bodies[i]` for each record claimed, in one commit, the
    /// records stored COMPLETED. When any claim meets a conflict (the same id with another
    /// payload hash, or held IN_PROGRESS), nothing of this call is stored. Returns the claims.
    async fn accept_atomic(
        &self,
        records: Vec<EventRecord>,
        bodies: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<Begin>, StoreError>;
}

/// What a render pass writes once its deliveries are stored, derived from them as stored.
#[derive(Debug, Default)]
pub struct PassWrites {
    /// Timers to hold: correlation key, deliveries, due time (Unix ms).
    pub timers: Vec<(String, Vec<DeliveryId>, i64)>,
    /// Dispatch job bodies to enqueue, each group visible after its delay.
    pub jobs: Vec<(std::time::Duration, Vec<String>)>,
}

/// Derives a render pass's other writes from its deliveries as stored.
pub type PassPlan = Box<dyn FnOnce(&[DeliveryRecord]) -> Result<PassWrites, StoreError> + Send>;

/// A store that can write a whole render pass in one commit (the local store): a pass's
/// deliveries, timers, dispatch jobs and the deletion of its render jobs were four commits.
#[async_trait]
pub trait AtomicRender: Send + Sync {
    /// Stores `records` (ids stored before are left as they are), writes what `plan` derives
    /// from the deliveries as stored, and deletes the render messages `acks`, all or nothing
    /// in one commit. Returns the deliveries as stored, in the order of `records`.
    async fn render_atomic(
        &self,
        records: Vec<DeliveryRecord>,
        plan: PassPlan,
        acks: Vec<String>,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only those created at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// At most this many (0 means no limit).
    pub limit: usize,
    /// Only this action kind (e.g. `trigger_event`).
    pub action: Option<String>,
    /// Only those for this contact (compared trimmed and lower case).
    pub email: Option<String>,
    /// Only those of events of this type.
    pub event_type: Option<String>,
    /// Only those created before this time (Unix ms).
    pub until_ms: Option<i64>,
    /// Only those of this event (its id as accepted).
    pub event_id: Option<String>,
}

/// The page size when a filter asks for none (`limit` 0).
pub const DEFAULT_PAGE: usize = 100;

impl DeliveryFilter {
    /// The e-mail asked for as deliveries store it: trimmed, lower case.
    pub fn email_key(&self) -> Option<String> {
        self.email.as_deref().map(|e| e.trim().to_lowercase())
    }

    /// Whether a delivery passes every field of the filter (`limit` aside).
    pub fn matches(&self, r: &DeliveryRecord) -> bool {
        let email = self.email_key();
        self.status.is_none_or(|s| r.status == s)
            && self.rule.as_ref().is_none_or(|x| &r.rule == x)
            && self.action.as_ref().is_none_or(|x| &r.action == x)
            && email.is_none_or(|x| r.email.as_ref() == Some(&x))
            && self
                .event_type
                .as_ref()
                .is_none_or(|x| r.event_type.as_ref() == Some(x))
            && self
                .event_id
                .as_ref()
                .is_none_or(|x| r.event_id.as_str() == x)
            && self.since_ms.is_none_or(|t| r.created_at >= t)
            && self.until_ms.is_none_or(|t| r.created_at < t)
    }

    /// The size of a page: `limit`, or [`DEFAULT_PAGE`] when it is 0.
    pub fn page_size(&self) -> usize {
        if self.limit == 0 {
            DEFAULT_PAGE
        } else {
            self.limit
        }
    }
}

/// Where a page of deliveries (newest first) ends: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCursor {
    /// The last listed delivery's `created_at`.
    pub created_at: i64,
    /// The last listed delivery's id.
    pub id: DeliveryId,
}

impl DeliveryCursor {
    /// The cursor just after `r`.
    pub fn of(r: &DeliveryRecord) -> Self {
        Self {
            created_at: r.created_at,
            id: r.id.clone(),
        }
    }

    /// Whether `r` comes after the cursor, newest first: older, or as old with a smaller id.
    pub fn precedes(&self, r: &DeliveryRecord) -> bool {
        (r.created_at, &r.id) < (self.created_at, &self.id)
    }

    /// The cursor as an opaque, URL-safe token.
    pub fn encode(&self) -> String {
        hex::encode(format!("{}:{}", self.created_at, self.id))
    }

    /// Reads a token made by [`DeliveryCursor::encode`]; `None` when it is not one.
    pub fn parse(token: &str) -> Option<Self> {
        let text = String::from_utf8(hex::decode(token).ok()?).ok()?;
        let (at, id) = text.split_once(':')?;
        Some(Self {
            created_at: at.parse().ok()?,
            id: DeliveryId::from_stored(id),
        })
    }
}

/// One page of deliveries, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryPage {
    /// The deliveries of this page.
    pub deliveries: Vec<DeliveryRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<DeliveryCursor>,
}

impl DeliveryPage {
    /// The first `size` of `newest_first` (already filtered and after the cursor), with a
    /// cursor when more follow.
    pub fn collect(newest_first: impl IntoIterator<Item = DeliveryRecord>, size: usize) -> Self {
        let mut deliveries: Vec<DeliveryRecord> = newest_first
            .into_iter()
            .take(size.saturating_add(1))
            .collect();
        let more = deliveries.len() > size;
        deliveries.truncate(size);
        let next_cursor = if more {
            deliveries.last().map(DeliveryCursor::of)
        } else {
            None
        };
        Self {
            deliveries,
            next_cursor,
        }
    }
}

/// Deliveries and their state.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Stores new deliveries; ids already stored are left as they are.
    async fn insert_new(&self, records: &[DeliveryRecord]) -> Result<(), StoreError>;
    /// Reads deliveries by id (missing ones are left out).
    async fn get_many(&self, ids: &[DeliveryId]) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Stores new deliveries as `insert_new` does and returns them as stored, one per id in
    /// the order first given: the ones stored now as given, the ones stored before as read
    /// back. This default reads them all back; a store that learns from its writes which ids
    /// it had reads only those (DynamoDB: the render function's read after its puts was a
    /// billed request per pass, issue 16).
    async fn insert_new_stored(
        &self,
        records: &[DeliveryRecord],
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.insert_new(records).await?;
        let ids: Vec<DeliveryId> = records.iter().map(|r| r.id.clone()).collect();
        let mut by_id: std::collections::HashMap<DeliveryId, DeliveryRecord> = self
            .get_many(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }
    /// Writes a delivery's state.
    async fn save(&self, record: &DeliveryRecord) -> Result<(), StoreError>;
    /// Writes several deliveries' state (a store may do it in one round trip).
    async fn save_many(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        for r in records {
            self.save(r).await?;
        }
        Ok(())
    }
    /// Cancels the delivery `id` in one conditional write if it is still `scheduled` and
    /// not due before `now_ms`, with `why` as its last error; returns it as stored then, or
    /// `None` when it is not cancellable (any more): unknown, due, sent, cancelled. A
    /// dispatcher that takes it between an operator's look and this write wins.
    async fn cancel_scheduled(
        &self,
        id: &DeliveryId,
        now_ms: i64,
        why: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError>;
    /// Every delivery of an event, oldest first.
    async fn for_event(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Deliveries matching a filter, oldest first.
    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// One page of the deliveries matching a filter, newest first (by `created_at`, then id),
    /// starting after `after`; the page size is `filter.page_size()`.
    async fn page(
        &self,
        filter: &DeliveryFilter,
        after: Option<&DeliveryCursor>,
    ) -> Result<DeliveryPage, StoreError>;
    /// How many deliveries created at or after `since_ms` are in each status (statuses with
    /// none are left out), in the order of [`DeliveryStatus::ALL`].
    async fn count_by_status(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(DeliveryStatus, u64)>, StoreError>;
}

/// Timers: deliveries held until a due time, findable by a correlation key so a later
/// event can cancel them (`unless`).
#[async_trait]
pub trait TimerStore: Send + Sync {
    /// Registers held deliveries under a correlation key (`<rule>:<value>`).
    async fn hold(
        &self,
        correlation: &str,
        deliveries: &[DeliveryId],
        due_ms: i64,
    ) -> Result<(), StoreError>;
    /// Cancels the scheduled deliveries held under `correlation`, except those of the event
    /// `except_event`; returns the ids cancelled.
    async fn cancel(
        &self,
        correlation: &str,
        except_event: &str,
    ) -> Result<Vec<DeliveryId>, StoreError>;
}

/// Whether the store takes writes: `/health` reports it, and the workers pause while it
/// does not (a full disk, a read-only file system).
pub trait StoreHealth: Send + Sync {
    /// Why the last write failed, while writes fail; `None` when they work.
    fn unwritable(&self) -> Option<String>;
}

/// Contacts' birthdays, for the daily birthday run.
#[async_trait]
pub trait ContactStore: Send + Sync {
    /// Remembers a contact's birthday (the latest one given wins).
    async fn remember_birthday(
        &self,
        email: &str,
        birthday: chrono::NaiveDate,
    ) -> Result<(), StoreError>;
    /// One page of the contacts born on `month`-`day`, ordered by e-mail, after `after`.
    async fn birthdays_on(
        &self,
        month: u32,
        day: u32,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, chrono::NaiveDate)>, StoreError>;
}
