//! The render step: a render job becomes stored deliveries and dispatch jobs. Delayed rules
//! and chain steps become scheduled deliveries held by durable timers; a later event named in
//! a rule's `unless` cancels them; birthdays seen on the way are remembered.

use crate::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus};
use crate::ports::clock::Clock;
use crate::ports::queue::{DispatchJob, Message, QueueName, RenderJob};
use crate::ports::{ContactStore, DeliveryStore, Queue, StoreError, TimerStore};
use crate::rules::config::Config;
use crate::rules::render::{render_event, NotRendered};
use std::collections::{BTreeMap, HashMap};
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
    timers: Option<Arc<dyn TimerStore>>,
    contacts: Option<Arc<dyn ContactStore>>,
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
            timers: None,
            contacts: None,
        }
    }

    /// Adds the timer store that makes `unless` cancellations possible.
    pub fn with_timers(mut self, timers: Arc<dyn TimerStore>) -> Self {
        self.timers = Some(timers);
        self
    }

    /// Adds the contact store that remembers birthdays.
    pub fn with_contacts(mut self, contacts: Arc<dyn ContactStore>) -> Self {
        self.contacts = Some(contacts);
        self
    }

    /// Renders one job: stores its deliveries (a repeat finds them stored and changes
    /// nothing) and enqueues a dispatch job for each pending or scheduled one.
    pub async fn handle(&self, message: &Message) -> Result<RenderResult, StoreError> {
        let mut out = self.handle_batch(std::slice::from_ref(message)).await?;
        out.pop()
            .ok_or_else(|| StoreError::Corrupt("no render result".into()))
    }

    /// Renders a batch of jobs with one write for all their deliveries; one result per
    /// message, in order. On a store error nothing is reported done, and every job of the
    /// batch is rendered again later (harmlessly: delivery ids are derived from the event).
    pub async fn handle_batch(
        &self,
        messages: &[Message],
    ) -> Result<Vec<RenderResult>, StoreError> {
        let now = self.clock.now();
        let now_ms = now.timestamp_millis();
        let mut results: Vec<Option<RenderResult>> = Vec::with_capacity(messages.len());
        let mut jobs: Vec<(usize, RenderJob)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match serde_json::from_str::<RenderJob>(&m.body) {
                Ok(j) => {
                    jobs.push((i, j));
                    results.push(None);
                }
                Err(e) => results.push(Some(RenderResult::Unreadable(format!(
                    "unreadable render job: {e}"
                )))),
            }
        }

        let mut all: Vec<DeliveryRecord> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (i, job) in &jobs {
            let event = &job.event;
            if let (Some(contacts), Some(email), Some(birthday)) =
                (&self.contacts, event.email(), event.birthday())
            {
                contacts.remember_birthday(email, birthday).await?;
            }
            self.cancel_timers(event).await?;
            for r in self.records_for(job, now) {
                all.push(r);
                owner.push(*i);
            }
        }

        let stored = if all.is_empty() {
            Vec::new()
        } else {
            self.deliveries.insert_new(&all).await?;
            let ids: Vec<DeliveryId> = all.iter().map(|r| r.id.clone()).collect();
            self.deliveries.get_many(&ids).await?
        };

        // Register the timers a later event may cancel.
        if let Some(timers) = &self.timers {
            let by_id: HashMap<&DeliveryId, usize> = all
                .iter()
                .map(|r| &r.id)
                .zip(owner.iter().copied())
                .collect();
            let mut held: HashMap<(String, i64), Vec<DeliveryId>> = HashMap::new();
            for r in stored
                .iter()
                .filter(|r| r.status == DeliveryStatus::Scheduled)
            {
                let Some(unless) = self
                    .config
                    .rule(&r.rule)
                    .and_then(|rule| rule.unless.as_ref())
                else {
                    continue;
                };
                let Some(job) = by_id
                    .get(&r.id)
                    .and_then(|i| jobs.iter().find(|(j, _)| j == i))
                    .map(|(_, j)| j)
                else {
                    continue;
                };
                match job.event.lookup(&unless.match_path) {
                    Some(value) => held
                        .entry((
                            format!("{}:{value}", r.rule),
                            r.next_attempt_at.unwrap_or(now_ms),
                        ))
                        .or_default()
                        .push(r.id.clone()),
                    None => {
                        tracing::warn!(event = %job.event.id, rule = %r.rule, path = %unless.match_path,
                        "the event has no value at the `unless` path; this timer cannot be cancelled")
                    }
                }
            }
            for ((correlation, due), ids) in held {
                timers.hold(&correlation, &ids, due).await?;
            }
        }

        // Pending deliveries go now; scheduled ones when due (grouped by due time).
        let mut by_delay: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for r in &stored {
            let delay = match r.status {
                DeliveryStatus::Pending => 0,
                DeliveryStatus::Scheduled => r
                    .next_attempt_at
                    .map(|d| (d - now_ms).max(0) as u64)
                    .unwrap_or(0),
                _ => continue,
            };
            if let Ok(body) = serde_json::to_string(&DispatchJob {
                delivery: r.id.clone(),
            }) {
                by_delay.entry(delay).or_default().push(body);
            }
        }
        let enqueued = !by_delay.is_empty();
        for (delay, bodies) in by_delay {
            self.queue
                .send(QueueName::Dispatch, bodies, Duration::from_millis(delay))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        if enqueued {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }

        let mut mine: HashMap<usize, Vec<DeliveryRecord>> = HashMap::new();
        let owner_of: HashMap<&DeliveryId, usize> = all
            .iter()
            .map(|r| &r.id)
            .zip(owner.iter().copied())
            .collect();
        for r in stored {
            if let Some(&i) = owner_of.get(&r.id) {
                mine.entry(i).or_default().push(r);
            }
        }
        Ok(results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| RenderResult::Done(mine.remove(&i).unwrap_or_default()))
            })
            .collect())
    }

    /// The deliveries one job renders into, scheduled ones with their due time.
    fn records_for(
        &self,
        job: &RenderJob,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<DeliveryRecord> {
        let event = &job.event;
        let now_ms = now.timestamp_millis();
        // When each matched rule's actions are due: now, or held by a timer.
        let due_of = |rule: &str| -> Option<i64> {
            if let Some(after) = job.after_ms {
                return Some(now_ms + after as i64);
            }
            if job.rules.is_some() {
                return None;
            }
            let after = self.config.rule(rule)?.after?;
            let base = event.occurred_at.timestamp_millis().min(now_ms);
            Some(base + after.as_millis() as i64)
        };
        render_event(&self.config, event, job.rules.as_deref(), now)
            .into_iter()
            .map(|r| {
                let due = due_of(&r.rule);
                let (status, request, last_error) = match r.result {
                    Ok(p) if due.is_some() => (DeliveryStatus::Scheduled, Some(p), None),
                    Ok(p) => (DeliveryStatus::Pending, Some(p), None),
                    Err(NotRendered::Failed(why)) => {
                        tracing::warn!(event = %event.id, rule = %r.rule, error = %why, "render failed; the delivery is dead until replayed");
                        (DeliveryStatus::Dead, None, Some(why))
                    }
                    Err(NotRendered::Skipped(why)) => (DeliveryStatus::Skipped, None, Some(why)),
                };
                DeliveryRecord {
                    id: DeliveryId::derive(&event.id, &r.rule, r.index),
                    event_id: event.id.clone(),
                    rule: r.rule,
                    action: r.action.to_string(),
                    action_index: r.index,
                    status,
                    attempts: 0,
                    last_error,
                    last_response: None,
                    sent_at: None,
                    next_attempt_at: if status == DeliveryStatus::Scheduled { due } else { None },
                    request,
                    created_at: now_ms,
                    chain_depth: job.depth,
                }
            })
            .collect()
    }

    /// Cancels the timers this event's arrival cancels (`unless: {event, match}`).
    async fn cancel_timers(&self, event: &crate::domain::event::Event) -> Result<(), StoreError> {
        for rule in self.config.rules.iter() {
            let Some(unless) = rule
                .unless
                .as_ref()
                .filter(|u| u.event == event.kind.as_str())
            else {
                continue;
            };
            let Some(value) = event.lookup(&unless.match_path) else {
                continue;
            };
            let Some(timers) = &self.timers else {
                tracing::error!(rule = %rule.name, "this deployment has no timer store; `unless` cannot cancel");
                continue;
            };
            let cancelled = timers
                .cancel(&format!("{}:{value}", rule.name), event.id.as_str())
                .await?;
            if !cancelled.is_empty() {
                tracing::info!(rule = %rule.name, event = %event.id, cancelled = cancelled.len(), "timers cancelled");
            }
        }
        Ok(())
    }
}
