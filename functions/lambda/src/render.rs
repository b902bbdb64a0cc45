//! The render function: the render queue's messages become stored deliveries and dispatch
//! jobs, the whole batch in one render pass (one write for all its deliveries, as `relay
//! serve` does). A job that fails for a passing reason is reported as a batch item failure,
//! so SQS redelivers it alone; one that can never succeed (unreadable, or a template error)
//! goes to the render dead-letter queue with the reason.

use crate::context::{Aws, Context, Ports};
use crate::metrics::Flusher;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use relay_shared::domain::delivery::{DeliveryRecord, DeliveryStatus};
use relay_shared::pipeline::render::{RenderError, RenderPorts, RenderResult, RenderStep};
use relay_shared::ports::queue::{Message, QueueName};
use relay_shared::ports::{DeadLetter, DeadLetters};
use std::sync::Arc;

/// Converts an SQS record into the core's message.
pub fn message(record: &SqsMessage) -> Message {
    Message {
        handle: record.receipt_handle.clone().unwrap_or_default(),
        body: record.body.clone().unwrap_or_default(),
        receive_count: record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    }
}

/// The render handler, built once per container.
pub struct RenderHandler<P: Ports = Aws> {
    step: RenderStep,
    queue: Arc<P::Queue>,
    metrics: Flusher,
}

impl<P: Ports> RenderHandler<P> {
    /// Wires the render step to a function's adapters.
    pub fn new(ctx: &Context<P>) -> Self {
        Self {
            step: RenderStep::new(
                ctx.config.clone(),
                RenderPorts {
                    deliveries: ctx.ports.store.clone(),
                    queue: ctx.ports.queue.clone(),
                    timers: ctx.ports.store.clone(),
                    contacts: ctx.ports.store.clone(),
                },
                ctx.clock.clone(),
                None,
            )
            .with_telemetry(ctx.telemetry.clone()),
            queue: ctx.ports.queue.clone(),
            metrics: Flusher::of(ctx),
        }
    }

    /// Handles one batch; the answer names the messages SQS should deliver again.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let _metrics = self.metrics.on_exit();
        let messages: Vec<Message> = event.records.iter().map(message).collect();
        let mut response = SqsBatchResponse::default();
        // The jobs to dead-letter: the message's id and the letter.
        let mut letters: Vec<(String, DeadLetter)> = Vec::new();
        let results = self.render(&messages).await;
        for ((record, m), result) in event.records.iter().zip(&messages).zip(results) {
            let id = record.message_id.clone().unwrap_or_default();
            let reason = match result {
                Ok(RenderResult::Done(records)) => dead_reason(&records),
                Ok(RenderResult::Unreadable(why)) => Some(why),
                Err(e) => {
                    tracing::error!(error = %e, message = %id, "render failed; SQS will deliver the job again");
                    response.add_failure(id);
                    continue;
                }
            };
            if let Some(reason) = reason {
                // The deliveries that did render are stored and on their way; the dead ones
                // stay listable and replayable once the config is fixed.
                tracing::warn!(message = %id, reason = %reason, "render job dead-lettered");
                let body = m.body.clone();
                letters.push((id, DeadLetter { body, reason }));
            }
        }
        for id in self.dead_letter(letters).await {
            response.add_failure(id);
        }
        response
    }

    /// Renders the batch in one pass: one result per message. When the pass fails, each job
    /// is rendered alone, so a job the store refuses (or an outage) fails only itself and a
    /// job that can never render still reaches the dead letters (a repeat is harmless:
    /// delivery ids are derived from the event).
    async fn render(&self, messages: &[Message]) -> Vec<Result<RenderResult, RenderError>> {
        match self.step.handle_batch(messages).await {
            Ok(results) if results.len() == messages.len() => {
                return results.into_iter().map(Ok).collect()
            }
            Ok(_) => tracing::error!("the render pass lost a result; each job is tried alone"),
            Err(e) => {
                tracing::warn!(error = %e, jobs = messages.len(), "the render pass failed; each job is tried alone")
            }
        }
        let mut results = Vec::with_capacity(messages.len());
        for m in messages {
            results.push(self.step.handle(m).await);
        }
        results
    }

    /// Sends the letters to the render dead-letter queue in one call; returns the ids of the
    /// messages whose letter it refused, for SQS to deliver again.
    async fn dead_letter(&self, letters: Vec<(String, DeadLetter)>) -> Vec<String> {
        if letters.is_empty() {
            return Vec::new();
        }
        let (ids, letters): (Vec<String>, Vec<DeadLetter>) = letters.into_iter().unzip();
        match self.queue.dead_letter(QueueName::Render, &letters).await {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::error!(error = %e, "cannot dead-letter render jobs; SQS will deliver them again");
                e.failed
                    .iter()
                    .filter_map(|&i| ids.get(i).cloned())
                    .collect()
            }
        }
    }
}

/// Why a rendered job is dead-lettered: the deliveries that could not be rendered, if any.
fn dead_reason(records: &[DeliveryRecord]) -> Option<String> {
    let reasons: Vec<String> = records
        .iter()
        .filter(|d| d.status == DeliveryStatus::Dead && d.request.is_none())
        .map(|d| {
            format!(
                "rule `{}`, action {} ({}): {}",
                d.rule,
                d.action_index,
                d.action,
                d.last_error.as_deref().unwrap_or("not rendered")
            )
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}
