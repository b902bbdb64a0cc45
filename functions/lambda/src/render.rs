//! The render function: the render queue's messages become stored deliveries and dispatch
//! jobs. A job that fails for a passing reason is reported as a batch item failure, so SQS
//! redelivers it alone; one that can never succeed (unreadable, or a template error) goes to
//! the render dead-letter queue with the reason.

use crate::Context;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use relay_shared::adapters::aws::{DeadLetter, SqsQueue};
use relay_shared::domain::delivery::DeliveryStatus;
use relay_shared::pipeline::render::{RenderPorts, RenderResult, RenderStep};
use relay_shared::ports::queue::{Message, QueueName};
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
pub struct RenderHandler {
    step: RenderStep,
    queue: Arc<SqsQueue>,
}

impl RenderHandler {
    /// Wires the render step to the AWS adapters.
    pub fn new(ctx: &Context) -> Self {
        Self {
            step: RenderStep::new(
                ctx.config.clone(),
                RenderPorts {
                    deliveries: ctx.aws.store.clone(),
                    queue: ctx.aws.queue.clone(),
                    timers: ctx.aws.store.clone(),
                    contacts: ctx.aws.store.clone(),
                },
                ctx.clock.clone(),
                None,
            ),
            queue: ctx.aws.queue.clone(),
        }
    }

    /// Handles one batch; the answer names the messages SQS should deliver again.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for record in &event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let m = message(record);
            let dead = match self.step.handle(&m).await {
                Ok(RenderResult::Done(records)) => {
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
                    if reasons.is_empty() {
                        None
                    } else {
                        Some(reasons.join("; "))
                    }
                }
                Ok(RenderResult::Unreadable(why)) => Some(why),
                Err(e) => {
                    tracing::error!(error = %e, message = %id, "render failed; SQS will deliver the job again");
                    response.add_failure(id);
                    continue;
                }
            };
            if let Some(reason) = dead {
                // The deliveries that did render are stored and on their way; the dead ones
                // stay listable and replayable once the config is fixed.
                tracing::warn!(message = %id, reason = %reason, "render job dead-lettered");
                let letter = DeadLetter {
                    body: m.body.clone(),
                    reason,
                };
                if let Err(e) = self.queue.dead_letter(QueueName::Render, &[letter]).await {
                    tracing::error!(error = %e, message = %id, "cannot dead-letter a render job; SQS will deliver it again");
                    response.add_failure(id);
                }
            }
        }
        response
    }
}
