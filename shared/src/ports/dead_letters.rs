//! Where the drivers put the jobs they give up on, with the reason (SQS dead-letter queues on
//! AWS, a list in memory for the tests).

use crate::ports::queue::{QueueError, QueueName};
use async_trait::async_trait;

/// A message given up on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job (the original message body).
    pub body: String,
    /// Why it was given up on; never carries credentials.
    pub reason: String,
}

/// The dead-letter queues beside the render and dispatch queues.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Puts letters into the dead-letter queue of `queue`, each with its reason.
    async fn dead_letter(&self, queue: QueueName, letters: &[DeadLetter])
        -> Result<(), QueueError>;
}
