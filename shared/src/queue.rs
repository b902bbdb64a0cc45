//! The jobs that travel between the steps, and the queue names.

use crate::delivery::DeliveryId;
use crate::event::Event;
use serde::{Deserialize, Serialize};

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
