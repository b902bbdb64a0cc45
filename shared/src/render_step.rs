//! The render step: a render job becomes stored deliveries and dispatch jobs.

use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus};
use crate::ports::{DeliveryStore, Queue, StoreError};
use crate::queue::{DispatchJob, Message, QueueName, RenderJob};
use crate::rules::{render_event, NotRendered};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The render step.
pub struct RenderStep {
    config: Arc<Config>,
    deliveries: Arc<dyn DeliveryStore>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
    wake: Option<Arc<Notify>>,
}

/// What became of one render job.
#[derive(Debug)]
pub enum RenderResult {
    /// Done: the message may be deleted. Carries the deliveries created.
    Done(Vec<DeliveryRecord>),
    /// The job could not be read: it can never succeed (a poison message).
    Unreadable(String),
}

impl RenderStep {
    /// Wires the step; `wake` is poked when deliveries are enqueued.
    pub fn new(
        config: Arc<Config>,
        deliveries: Arc<dyn DeliveryStore>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
        wake: Option<Arc<Notify>>,
    ) -> Self {
        Self {
            config,
            deliveries,
            queue,
            clock,
            wake,
        }
    }

    /// Renders one job: stores its deliveries (a repeat finds them stored and changes
    /// nothing) and enqueues a dispatch job for each pending one.
    pub async fn handle(&self, message: &Message) -> Result<RenderResult, StoreError> {
        let job: RenderJob = match serde_json::from_str(&message.body) {
            Ok(j) => j,
            Err(e) => {
                return Ok(RenderResult::Unreadable(format!(
                    "unreadable render job: {e}"
                )))
            }
        };
        let now = self.clock.now();
        let rendered = render_event(&self.config, &job.event, job.rules.as_deref(), now);
        let now_ms = now.timestamp_millis();
        let records: Vec<DeliveryRecord> = rendered
            .into_iter()
            .map(|r| {
                let (status, request, last_error) = match r.result {
                    Ok(p) => (DeliveryStatus::Pending, Some(p), None),
                    Err(NotRendered::Failed(why)) => {
                        tracing::warn!(event = %job.event.id, rule = %r.rule, error = %why, "render failed; the delivery is dead until replayed");
                        (DeliveryStatus::Dead, None, Some(why))
                    }
                    Err(NotRendered::Skipped(why)) => (DeliveryStatus::Skipped, None, Some(why)),
                };
                DeliveryRecord {
                    id: DeliveryId::derive(&job.event.id, &r.rule, r.index),
                    event_id: job.event.id.clone(),
                    rule: r.rule,
                    action: r.action.to_string(),
                    action_index: r.index,
                    status,
                    attempts: 0,
                    last_error,
                    last_response: None,
                    sent_at: None,
                    next_attempt_at: None,
                    request,
                    created_at: now_ms,
                    chain_depth: job.depth,
                }
            })
            .collect();
        if records.is_empty() {
            return Ok(RenderResult::Done(records));
        }
        self.deliveries.insert_new(&records).await?;
        let ids: Vec<DeliveryId> = records.iter().map(|r| r.id.clone()).collect();
        let stored = self.deliveries.get_many(&ids).await?;
        let bodies: Vec<String> = stored
            .iter()
            .filter(|r| r.status == DeliveryStatus::Pending)
            .filter_map(|r| {
                serde_json::to_string(&DispatchJob {
                    delivery: r.id.clone(),
                })
                .ok()
            })
            .collect();
        if !bodies.is_empty() {
            self.queue
                .send(QueueName::Dispatch, bodies, Duration::ZERO)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        Ok(RenderResult::Done(stored))
    }
}
