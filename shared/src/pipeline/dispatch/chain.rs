//! Chain: once every action of a rule succeeded for an event, its `then` steps become render
//! jobs, all of a pass in one queue write.

use super::{DispatchError, Dispatcher};
use crate::domain::delivery::DeliveryRecord;
use crate::domain::event::{Event, EventId};
use crate::ports::queue::{QueueName, RenderJob};
use crate::ports::StoreError;
use crate::rules::config::Rule;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// A delivery that succeeded, whose rule may start a chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ChainFrom {
    event: EventId,
    rule: String,
    depth: u32,
    /// Which of the rule's actions it was.
    action: usize,
}

impl ChainFrom {
    /// The chain a delivery's rule may start.
    pub(super) fn of(record: &DeliveryRecord) -> Self {
        Self {
            event: record.event_id.clone(),
            rule: record.rule.clone(),
            depth: record.chain_depth,
            action: record.action_index,
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
        // Per event and rule, in the order first seen: which of its actions the pass saw
        // succeed.
        let mut order = Vec::new();
        let mut seen: HashMap<(&EventId, &str), BTreeSet<usize>> = HashMap::new();
        for from in chains {
            let actions = seen
                .entry((&from.event, from.rule.as_str()))
                .or_insert_with(|| {
                    order.push(from);
                    BTreeSet::new()
                });
            actions.insert(from.action);
        }
        let mut steps = Vec::new();
        for from in order {
            let actions = &seen[&(&from.event, from.rule.as_str())];
            steps.extend(self.chain(from, actions).await?);
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
    /// succeeded (none otherwise). `succeeded`: the actions this pass saw succeed; when they
    /// are all of the rule's (a rule renders one delivery per action, numbered from 0), the
    /// stored deliveries need not be read (issue 16: the read was a tenth of a pass's time).
    async fn chain(
        &self,
        from: &ChainFrom,
        succeeded: &BTreeSet<usize>,
    ) -> Result<Vec<String>, DispatchError> {
        let config = &self.ctx.config;
        let Some(rule) = config.rule(&from.rule) else {
            return Ok(Vec::new());
        };
        if rule.then.is_empty() || from.depth as usize >= config.max_chain_depth() {
            return Ok(Vec::new());
        }
        let all_seen = (0..rule.actions.len()).all(|i| succeeded.contains(&i));
        if !all_seen && !self.all_succeeded(from, rule.actions.len()).await? {
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

    /// Whether every one of the `actions` deliveries of `from`'s rule for its event is
    /// stored as succeeded.
    async fn all_succeeded(&self, from: &ChainFrom, actions: usize) -> Result<bool, StoreError> {
        let mine: Vec<DeliveryRecord> = self
            .ctx
            .deliveries
            .for_event(from.event.as_str())
            .await?
            .into_iter()
            .filter(|d| d.rule == from.rule)
            .collect();
        Ok(mine.len() >= actions && mine.iter().all(|d| d.status.is_success()))
    }
}
