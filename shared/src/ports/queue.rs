//! The queues between the steps (SQS semantics), their names, and the jobs that travel on them.

use crate::domain::delivery::DeliveryId;
use crate::domain::event::Event;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The two queues between the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueName {
    /// inbound (and chains, schedules) → render.
    Render,
    /// render → dispatch.
    Dispatch,
}

impl QueueName {
    /// The queue's name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Render => "render",
            QueueName::Dispatch => "dispatch",
        }
    }
}

/// A received message.
#[derive(Debug, Clone)]
pub struct Message {
    /// What to pass to `ack` or `retry_after`.
    pub handle: String,
    /// The message body (a job, JSON).
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

/// Render an event: all rules listening for its type, or only the named ones (a chain step).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderJob {
    /// The event.
    pub event: Event,
    /// Only these rules (a chain step); `None` means match by type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
    /// How many chain steps led here.
    #[serde(default)]
    pub depth: u32,
    /// A chain step's delay: the rules' actions are held until this long after the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
}

/// Send one delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DispatchJob {
    /// The delivery to send.
    pub delivery: DeliveryId,
}

/// A job that travels on a queue: it knows its queue, and its wire form is JSON, encoded
/// and decoded only here.
pub trait Job: Serialize + DeserializeOwned {
    /// The queue it travels on.
    const QUEUE: QueueName;

    /// The job as a message body.
    fn encode(&self) -> Result<String, JobError> {
        serde_json::to_string(self).map_err(|e| JobError::Encode(e.to_string()))
    }
}

impl Job for RenderJob {
    const QUEUE: QueueName = QueueName::Render;
}

impl Job for DispatchJob {
    const QUEUE: QueueName = QueueName::Dispatch;
}

/// A job that could not be turned into a message body, or read back from one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// The job could not be encoded (a bug: jobs are plain data).
    #[error("cannot encode a job: {0}")]
    Encode(String),
    /// A message body is not a job of the expected kind (a poison message).
    #[error("unreadable {kind} job: {message}")]
    Decode {
        /// Which kind of job was expected.
        kind: &'static str,
        /// What the decoder said.
        message: String,
    },
}

impl Message {
    /// The job this message carries.
    pub fn decode<T: Job>(&self) -> Result<T, JobError> {
        serde_json::from_str(&self.body).map_err(|e| JobError::Decode {
            kind: T::QUEUE.as_str(),
            message: e.to_string(),
        })
    }
}

/// Enqueues jobs on their queue, visible after `delay`. A job that cannot be encoded fails
/// the whole send before anything is enqueued.
pub async fn send_jobs<T: Job>(
    queue: &dyn Queue,
    jobs: &[T],
    delay: Duration,
) -> Result<(), QueueError> {
    let bodies = jobs
        .iter()
        .map(Job::encode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueueError {
            failed: (0..jobs.len()).collect(),
            message: e.to_string(),
        })?;
    queue.send(T::QUEUE, bodies, delay).await
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

/// How full a queue is, for `GET /v1/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Messages in the queue, visible or not; `None` where the queue cannot tell.
    pub messages: Option<u64>,
    /// How long the oldest message that is due has waited, in milliseconds; `None` when none
    /// is due or the queue cannot tell.
    pub oldest_due_age_ms: Option<i64>,
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
    /// How full `queue` is at `now_ms`; a queue that cannot tell says nothing.
    async fn depth(&self, queue: QueueName, now_ms: i64) -> Result<QueueDepth, QueueError> {
        let _ = (queue, now_ms);
        Ok(QueueDepth::default())
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
