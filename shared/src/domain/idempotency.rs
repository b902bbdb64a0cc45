//! Idempotency records, with the life cycle of AWS Lambda Powertools: a key is IN_PROGRESS
//! while its holder works, COMPLETED after; records expire; each carries the payload's hash
//! (the same key with another payload is refused); an IN_PROGRESS record whose holder ran
//! out of time may be taken over.

use crate::domain::event::EventId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// How long an event id stays a duplicate (and the event stays readable).
pub const EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a holder may keep a key IN_PROGRESS before another may take it over.
pub const IN_PROGRESS_LEASE: Duration = Duration::from_secs(30);

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordStatus {
    /// Someone is working on it.
    InProgress,
    /// Done; a repeat is a duplicate.
    Completed,
}

impl RecordStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::InProgress => "IN_PROGRESS",
            RecordStatus::Completed => "COMPLETED",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IN_PROGRESS" => Some(RecordStatus::InProgress),
            "COMPLETED" => Some(RecordStatus::Completed),
            _ => None,
        }
    }
}

/// A received event's record: the idempotency key and the event itself.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The event id (the key).
    pub id: EventId,
    /// The event type.
    pub kind: String,
    /// SHA-256 of the submitted JSON.
    pub payload_hash: String,
    /// The validated event as JSON.
    pub event: Value,
    /// When it was received (Unix ms).
    pub received_at: i64,
    /// IN_PROGRESS or COMPLETED.
    pub status: RecordStatus,
    /// Until when an IN_PROGRESS holder keeps the key (Unix ms).
    pub in_progress_until: i64,
    /// When the record expires (Unix seconds, the DynamoDB TTL convention).
    pub expires_at: i64,
}

impl EventRecord {
    /// Whether an existing record may be replaced by a new claim at `now_ms`.
    pub fn is_claimable(&self, now_ms: i64) -> bool {
        self.expires_at * 1000 < now_ms
            || (self.status == RecordStatus::InProgress && self.in_progress_until < now_ms)
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The key is ours.
    Started,
    /// Someone holds it; here is their record.
    Existing(EventRecord),
}

/// What a claim means for the one who asked with `payload_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: go on.
    Ours,
    /// The same event was taken before: a duplicate, answered as the first time.
    Duplicate,
    /// The key was used for a different payload: refused.
    Reused,
    /// Someone else is still working on the same key: try again later.
    InProgress,
}

impl Claim {
    /// Whether the caller's whole batch must be refused (a reused or busy key).
    pub fn refuses_batch(self) -> bool {
        matches!(self, Claim::Reused | Claim::InProgress)
    }
}

impl Begin {
    /// The one rule for what an answer to a claim means.
    pub fn claim(&self, payload_hash: &str) -> Claim {
        match self {
            Begin::Started => Claim::Ours,
            Begin::Existing(held) if held.payload_hash != payload_hash => Claim::Reused,
            Begin::Existing(held) if held.status == RecordStatus::Completed => Claim::Duplicate,
            Begin::Existing(_) => Claim::InProgress,
        }
    }
}
