//! The dispatch function: a batch of the dispatch queue goes through the core's dispatcher
//! (coalescing, sending, classifying). A delivery to retry has its message hidden until the
//! next attempt (ChangeMessageVisibility) and reported as a batch item failure, so SQS keeps
//! it; a dead one goes to the dispatch dead-letter queue with the reason.

use crate::context::{Aws, Context, Ports};
use crate::metrics::Flusher;
use crate::render::message;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use relay_shared::domain::delivery::DeliveryId;
use relay_shared::pipeline::dispatch::{Dispatcher, QueueDelays};
use relay_shared::ports::queue::{Message, QueueName};
use relay_shared::ports::{DeadLetter, DeadLetters, DeliveryStore, Transport};
use std::collections::HashMap;
use std::sync::Arc;

/// The dispatch handler, built once per container.
pub struct DispatchHandler<P: Ports = Aws> {
    dispatcher: Dispatcher,
    store: Arc<P::Store>,
    queue: Arc<P::Queue>,
    metrics: Flusher,
}

impl<P: Ports> DispatchHandler<P> {
    /// Wires the dispatcher to a function's adapters and an HTTP transport.
    pub fn new(ctx: &Context<P>, transport: Arc<dyn Transport>, seed: Option<u64>) -> Self {
        Self {
            dispatcher: Dispatcher::new(
                ctx.config.clone(),
                ctx.ports.store.clone(),
                ctx.ports.store.clone(),
                ctx.ports.queue.clone(),
                ctx.ports.credentials.clone(),
                transport,
                ctx.clock.clone(),
                seed,
            )
            // SQS hides a message for 12 hours at most, so a retry due later comes back
            // early: it is the scheduled message itself, and the core holds it again.
            .with_queue_delays(QueueDelays::Capped)
            .with_leases(ctx.ports.store.clone())
            .with_telemetry(ctx.telemetry.clone()),
            store: ctx.ports.store.clone(),
            queue: ctx.ports.queue.clone(),
            metrics: Flusher::of(ctx),
        }
    }

    /// Handles one batch; the answer names the messages SQS should keep (retries, and all
    /// of them when the store failed).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let _metrics = self.metrics.on_exit();
        let mut response = SqsBatchResponse::default();
        let mut ids_by_handle: HashMap<String, String> = HashMap::new();
        let mut messages: Vec<Message> = Vec::with_capacity(event.records.len());
        for record in &event.records {
            let m = message(record);
            ids_by_handle.insert(
                m.handle.clone(),
                record.message_id.clone().unwrap_or_default(),
            );
            messages.push(m);
        }
        let handles: Vec<String> = messages.iter().map(|m| m.handle.clone()).collect();
        let report = match self.dispatcher.handle(messages).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "dispatch failed; SQS will deliver the batch again");
                for h in handles {
                    response.add_failure(ids_by_handle.get(&h).cloned().unwrap_or_default());
                }
                return response;
            }
        };
        tracing::info!(
            sent = report.sent,
            dry_run = report.dry_run,
            retrying = report.retrying,
            dead = report.dead,
            calls = report.calls,
            duplicates = report.duplicates,
            "dispatch batch"
        );
        for h in &report.retried_handles {
            response.add_failure(ids_by_handle.get(h).cloned().unwrap_or_default());
        }
        self.dead_letter(&report.dead_ids).await;
        response
    }

    /// Sends the deliveries that died in this batch to the dispatch dead-letter queue. Their
    /// records stay in DynamoDB, dead, listable and replayable, whatever happens here.
    async fn dead_letter(&self, ids: &[DeliveryId]) {
        if ids.is_empty() {
            return;
        }
        let records = match self.store.get_many(ids).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read dead deliveries to dead-letter them");
                return;
            }
        };
        let letters: Vec<DeadLetter> = records
            .iter()
            .map(|d| DeadLetter {
                body: serde_json::json!({
                    "delivery": d.id,
                    "event_id": d.event_id,
                    "rule": d.rule,
                    "action": d.action,
                    "attempts": d.attempts,
                })
                .to_string(),
                reason: d
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "given up".to_string()),
            })
            .collect();
        if let Err(e) = self.queue.dead_letter(QueueName::Dispatch, &letters).await {
            tracing::error!(error = %e, "cannot send dead letters; the deliveries stay dead in the table");
        }
    }
}
