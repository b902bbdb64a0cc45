//! The ports: what the core needs from the outside world. AWS and local adapters implement them.

use crate::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus};
use crate::event::EventId;
use crate::idempotency::{Begin, EventRecord};
use crate::queue::{Message, QueueName};
use crate::secrets::{SeCredentials, Secret};
use async_trait::async_trait;
use std::time::Duration;

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

/// A queue failure: which of the messages sent were not enqueued.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the queue refused {} message(s): {message}", failed.len())]
pub struct QueueError {
    /// Positions (in the batch given) of the messages not enqueued; all of them when unknown.
    pub failed: Vec<usize>,
    /// What the queue said.
    pub message: String,
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
}

/// Deliveries and their state.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Stores new deliveries; ids already stored are left as they are.
    async fn insert_new(&self, records: &[DeliveryRecord]) -> Result<(), StoreError>;
    /// Reads deliveries by id (missing ones are left out).
    async fn get_many(&self, ids: &[DeliveryId]) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Writes a delivery's state.
    async fn save(&self, record: &DeliveryRecord) -> Result<(), StoreError>;
    /// Writes several deliveries' state (a store may do it in one round trip).
    async fn save_many(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        for r in records {
            self.save(r).await?;
        }
        Ok(())
    }
    /// Every delivery of an event, oldest first.
    async fn for_event(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Deliveries matching a filter, oldest first.
    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError>;
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

/// A durable queue with visibility timeouts (SQS semantics).
#[async_trait]
pub trait Queue: Send + Sync {
    /// Enqueues messages, visible after `delay`.
    async fn send(
        &self,
        queue: QueueName,
        bodies: Vec<String>,
        delay: Duration,
    ) -> Result<(), QueueError>;
    /// Takes up to `max` visible messages, hiding them for `visibility`.
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError>;
    /// Deletes handled messages.
    async fn ack(&self, queue: QueueName, handles: &[String]) -> Result<(), QueueError>;
    /// Makes a message visible again after `delay` (a scheduled retry).
    async fn retry_after(
        &self,
        queue: QueueName,
        handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError>;
    /// Puts received messages back to be seen again after their delays: a retry, a hold
    /// while a circuit is open, a timer not yet due. Unlike `retry_after`, the queue has the
    /// message itself, so it may send a fresh copy and delete the old one (SQS counts every
    /// receive of a message towards its dead-letter limit; a long wait must not use it up).
    async fn requeue_many(
        &self,
        queue: QueueName,
        items: &[(Message, Duration)],
    ) -> Result<(), QueueError> {
        let retries: Vec<(String, Duration)> =
            items.iter().map(|(m, d)| (m.handle.clone(), *d)).collect();
        self.retry_after_many(queue, &retries).await
    }
    /// Schedules several retries (a queue may do it in one round trip).
    async fn retry_after_many(
        &self,
        queue: QueueName,
        retries: &[(String, Duration)],
    ) -> Result<(), QueueError> {
        for (handle, delay) in retries {
            self.retry_after(queue, handle, *delay).await?;
        }
        Ok(())
    }
}

/// A secrets failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("secrets are unavailable: {0}")]
pub struct SecretError(pub String);

/// Credentials and secrets; implementations never log them.
#[async_trait]
pub trait Credentials: Send + Sync {
    /// SmartEmailing's username and API key; `None` means dry-run.
    async fn smartemailing(&self) -> Result<Option<SeCredentials>, SecretError>;
    /// The keys that may call the inbound API.
    async fn api_keys(&self) -> Result<Vec<Secret>, SecretError>;
    /// A named secret for a webhook action.
    async fn secret(&self, name: &str) -> Result<Option<Secret>, SecretError>;
    /// Drops any cached values so the next read fetches fresh ones (after a 401).
    async fn refresh(&self);
}

/// An outgoing HTTP request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method, upper case.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Headers, including credentials: never log them.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Option<Vec<u8>>,
    /// How long the whole call may take.
    pub timeout: Duration,
    /// Connect only to these addresses for the URL's host (the ones an outbound check
    /// approved), so a second DNS answer cannot redirect the call.
    pub pinned: Option<(String, Vec<std::net::SocketAddr>)>,
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a call got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The call took longer than its timeout.
    #[error("timed out")]
    Timeout,
    /// The connection failed or broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Sends HTTP requests.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends one request and reads the whole answer.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}
