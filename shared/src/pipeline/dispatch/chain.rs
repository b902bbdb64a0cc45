//! Chain: once every action of a rule succeeded for an event, its `then` steps become render
//! jobs, all of a pass in one queue write.

use super::{DispatchError, Dispatcher};
use crate::domain::delivery::DeliveryRecord;
use crate::domain::event::{Event, EventId};
use crate::ports::queue::{QueueName, RenderJob};
use crate::ports::StoreError;
use crate::rules::config::Rule;
use std::collections::HashSet;
use std::time::Duration;

/// A finished delivery whose rule may start a chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ChainFrom {
    event: EventId,
    rule: String,
    depth: u32,
}

impl ChainFrom {
    /// The chain a delivery's rule may start.
    pub(super) fn of(record: &DeliveryRecord) -> Self {
        Self {
            event: record.event_id.clone(),
            rule: record.rule.clone(),
            depth: record.chain_depth,
        }
    }
}

/// The render jobs of `rule`'s `then` steps for `event`, one per step with its own delay;
/// the render step holds the delayed ones as scheduled deliveries, visible in
/// `GET /v1/events/{id}`.
fn step_jobs(rule: &Rule, event: &Event, depth: u32) -> Result<Vec<String>, DispatchError> {
    rule.then
        .iter()
        .map(|step| {
            let job = RenderJob {
                event: event.clone(),
                rules: Some(vec![step.rule.clone()]),
                depth: depth + 1,
                after_ms: step.after.map(|a| a.as_millis() as u64),
            };
            Ok(serde_json::to_string(&job)?)
        })
        .collect()
}

impl Dispatcher {
    /// The chain phase: enqueues the `then` steps of every rule the pass finished. Every
    /// step of the pass goes in one write: one commit per pass, not one per event (it was
    /// the largest cost of a pass). A failure leaves the messages unacknowledged, so the pass
    /// is redone and the steps enqueued again (harmless: delivery ids are derived from the
    /// event).
    pub(super) async fn enqueue_chains(&self, chains: &[ChainFrom]) -> Result<(), DispatchError> {
        let mut done = HashSet::new();
        let mut steps = Vec::new();
        for from in chains {
            if done.insert((&from.event, &from.rule)) {
                steps.extend(self.chain(from).await?);
            }
        }
        if !steps.is_empty() {
            self.ctx
                .queue
                .send(QueueName::Render, steps, Duration::ZERO)
                .await?;
        }
        Ok(())
    }

    /// The render jobs of a rule's `then` rules, once every one of its actions for the event
    /// succeeded (none otherwise).
    async fn chain(&self, from: &ChainFrom) -> Result<Vec<String>, DispatchError> {
        let config = &self.ctx.config;
        let Some(rule) = config.rule(&from.rule) else {
            return Ok(Vec::new());
        };
        if rule.then.is_empty() || from.depth as usize >= config.max_chain_depth() {
            return Ok(Vec::new());
        }
        let mine: Vec<DeliveryRecord> = self
            .ctx
            .deliveries
            .for_event(from.event.as_str())
            .await?
            .into_iter()
            .filter(|d| d.rule == from.rule)
            .collect();
        if mine.len() < rule.actions.len() || !mine.iter().all(|d| d.status.is_success()) {
            return Ok(Vec::new());
        }
        let Some(record) = self.ctx.events.get(from.event.as_str()).await? else {
            tracing::warn!(event = %from.event, "cannot chain: the event is no longer stored");
            return Ok(Vec::new());
        };
        let event: Event =
            serde_json::from_value(record.event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        step_jobs(rule, &event, from.depth)
    }
}
