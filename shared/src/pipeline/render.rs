//! The render step: a render job becomes stored deliveries and dispatch jobs. Delayed rules
//! and chain steps become scheduled deliveries held by durable timers; a later event named in
//! a rule's `unless` cancels them; birthdays seen on the way are remembered.

use crate::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus, Prepared};
use crate::domain::event::Event;
use crate::ports::clock::Clock;
use crate::ports::queue::{send_jobs, DispatchJob, Message, RenderJob};
use crate::ports::queue::{Job, QueueName};
use crate::ports::{
    AtomicRender, ContactStore, DeliveryStore, PassPlan, PassWrites, Queue, QueueError, StoreError,
    TimerStore,
};
use crate::rules::config::Config;
use crate::rules::render::{render_event, NotRendered};
use crate::telemetry::Telemetry;
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
    timers: Arc<dyn TimerStore>,
    contacts: Arc<dyn ContactStore>,
    telemetry: Option<Arc<Telemetry>>,
    /// Writes a pass in one commit where the store can (`with_atomic`).
    atomic: Option<Arc<dyn AtomicRender>>,
}

/// The ports the render step writes to.
pub struct RenderPorts {
    /// Where deliveries are stored.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// Where dispatch jobs go.
    pub queue: Arc<dyn Queue>,
    /// Timers a later event may cancel (`unless`).
    pub timers: Arc<dyn TimerStore>,
    /// Contacts' birthdays, remembered from every event.
    pub contacts: Arc<dyn ContactStore>,
}

/// What became of one render job.
#[derive(Debug)]
pub enum RenderResult {
    /// Done: the message may be deleted. Carries the deliveries created.
    Done(Vec<DeliveryRecord>),
    /// The job could not be read: it can never succeed (a poison message).
    Unreadable(String),
}

/// Why a render pass did not finish; its jobs are rendered again later (harmlessly:
/// delivery ids are derived from the event).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dispatch queue refused the jobs.
    #[error("cannot enqueue dispatch jobs: {0}")]
    Queue(#[from] QueueError),
}

/// A decoded job and the position of its message in the pass.
type Positioned = (usize, RenderJob);

impl RenderStep {
    /// Wires the step; `wake` is poked when deliveries are enqueued.
    pub fn new(
        config: Arc<Config>,
        ports: RenderPorts,
        clock: Arc<dyn Clock>,
        wake: Option<Arc<Notify>>,
    ) -> Self {
        Self {
            config,
            deliveries: ports.deliveries,
            queue: ports.queue,
            clock,
            wake,
            timers: ports.timers,
            contacts: ports.contacts,
            telemetry: None,
            atomic: None,
        }
    }

    /// Writes each pass of `handle_and_ack` (deliveries, timers, dispatch jobs, the deletion
    /// of its messages) in one commit of `store`.
    pub fn with_atomic(mut self, store: Arc<dyn AtomicRender>) -> Self {
        self.atomic = Some(store);
        self
    }

    /// Counts each stored delivery's first status in `telemetry` (`relay_deliveries_total`).
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Renders one job: stores its deliveries (a repeat finds them stored and changes
    /// nothing) and enqueues a dispatch job for each pending or scheduled one.
    pub async fn handle(&self, message: &Message) -> Result<RenderResult, RenderError> {
        let mut out = self.handle_batch(std::slice::from_ref(message)).await?;
        out.pop()
            .ok_or_else(|| StoreError::Corrupt("no render result".into()).into())
    }

    /// Renders a batch of jobs with one write for all their deliveries; one result per
    /// message, in order. On an error nothing is reported done, and every job of the
    /// batch is rendered again later (harmlessly: delivery ids are derived from the event).
    pub async fn handle_batch(
        &self,
        messages: &[Message],
    ) -> Result<Vec<RenderResult>, RenderError> {
        self.pass(messages, None).await
    }

    /// Renders a batch as `handle_batch` does and deletes its messages from the render
    /// queue: in the same commit as the rest of the pass where the store can
    /// (`with_atomic`), else after it.
    pub async fn handle_and_ack(
        &self,
        messages: &[Message],
    ) -> Result<Vec<RenderResult>, RenderError> {
        let handles = messages.iter().map(|m| m.handle.clone()).collect();
        self.pass(messages, Some(handles)).await
    }

    /// One pass; `acks`: the messages to delete with it.
    async fn pass(
        &self,
        messages: &[Message],
        acks: Option<Vec<String>>,
    ) -> Result<Vec<RenderResult>, RenderError> {
        let now = self.clock.now();
        let (unreadable, jobs) = decode(messages);
        let mut rendered: Vec<(usize, DeliveryRecord)> = Vec::new();
        for (i, job) in &jobs {
            self.observe(&job.event).await?;
            rendered.extend(self.records_for(job, now).into_iter().map(|r| (*i, r)));
        }
        let correlations = self.correlations(&rendered, &jobs);
        let stored = self
            .write_pass(&rendered, correlations, acks, now.timestamp_millis())
            .await?;
        self.count(&stored);
        let owner: HashMap<&DeliveryId, usize> =
            rendered.iter().map(|(i, r)| (&r.id, *i)).collect();
        let mut mine: HashMap<usize, Vec<DeliveryRecord>> = HashMap::new();
        for r in stored {
            if let Some(&i) = owner.get(&r.id) {
                mine.entry(i).or_default().push(r);
            }
        }
        let mut unreadable = unreadable;
        Ok((0..messages.len())
            .map(|i| match unreadable.remove(&i) {
                Some(why) => RenderResult::Unreadable(why),
                None => RenderResult::Done(mine.remove(&i).unwrap_or_default()),
            })
            .collect())
    }

    /// Stores the pass's deliveries, holds the timers and enqueues the dispatch jobs of them
    /// as stored, deletes `acks`, and wakes the dispatcher; in one commit where the store
    /// can. Returns the deliveries as stored.
    async fn write_pass(
        &self,
        rendered: &[(usize, DeliveryRecord)],
        correlations: HashMap<DeliveryId, String>,
        acks: Option<Vec<String>>,
        now_ms: i64,
    ) -> Result<Vec<DeliveryRecord>, RenderError> {
        let stored = match (&self.atomic, acks) {
            (Some(store), Some(acks)) => {
                let records = rendered.iter().map(|(_, r)| r.clone()).collect();
                let plan: PassPlan = Box::new(move |stored: &[DeliveryRecord]| {
                    Ok(PassWrites {
                        timers: timer_groups(stored, &correlations, now_ms),
                        jobs: encoded(dispatch_jobs(stored, now_ms))?,
                    })
                });
                store.render_atomic(records, plan, acks).await?
            }
            (_, acks) => {
                let stored = self.store(rendered).await?;
                for (correlation, ids, due) in timer_groups(&stored, &correlations, now_ms) {
                    self.timers.hold(&correlation, &ids, due).await?;
                }
                for (delay, jobs) in dispatch_jobs(&stored, now_ms) {
                    send_jobs(self.queue.as_ref(), &jobs, delay).await?;
                }
                if let Some(acks) = acks.filter(|a| !a.is_empty()) {
                    self.queue.ack(QueueName::Render, &acks).await?;
                }
                stored
            }
        };
        let enqueued = stored.iter().any(|r| {
            matches!(
                r.status,
                DeliveryStatus::Pending | DeliveryStatus::Scheduled
            )
        });
        if enqueued {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        Ok(stored)
    }

    /// Counts the deliveries a pass stored, each in its first status (a job rendered again
    /// counts them again: rare, after a crash between the write and the ack).
    fn count(&self, stored: &[DeliveryRecord]) {
        if let Some(t) = &self.telemetry {
            for r in stored {
                t.record_delivery(&r.rule, &r.action, r.status);
            }
        }
    }

    /// What an event's arrival does before its own rules run: remembers the contact's
    /// birthday and cancels the timers it names in an `unless`.
    async fn observe(&self, event: &Event) -> Result<(), StoreError> {
        if let (Some(email), Some(birthday)) = (event.email(), event.birthday()) {
            self.contacts.remember_birthday(email, birthday).await?;
        }
        self.cancel_timers(event).await
    }

    /// Stores the rendered deliveries (ones stored before are left as they are) and reads
    /// them back as stored.
    async fn store(
        &self,
        rendered: &[(usize, DeliveryRecord)],
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        if rendered.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<DeliveryRecord> = rendered.iter().map(|(_, r)| r.clone()).collect();
        self.deliveries.insert_new_stored(&all).await
    }

    /// The key under which each scheduled delivery rendered is held, so a later event may
    /// cancel it: `<rule>:<value at the unless path>`, for the rules with an `unless`.
    fn correlations(
        &self,
        rendered: &[(usize, DeliveryRecord)],
        jobs: &[Positioned],
    ) -> HashMap<DeliveryId, String> {
        let by_position: HashMap<usize, &RenderJob> = jobs.iter().map(|(i, j)| (*i, j)).collect();
        let mut out = HashMap::new();
        for (i, r) in rendered
            .iter()
            .filter(|(_, r)| r.status == DeliveryStatus::Scheduled)
        {
            let Some(unless) = self
                .config
                .rule(&r.rule)
                .and_then(|rule| rule.unless.as_ref())
            else {
                continue;
            };
            let Some(job) = by_position.get(i) else {
                continue;
            };
            match job.event.lookup(&unless.match_path) {
                Some(value) => {
                    out.insert(r.id.clone(), format!("{}:{value}", r.rule));
                }
                None => {
                    tracing::warn!(event = %job.event.id, rule = %r.rule, path = %unless.match_path,
                    "the event has no value at the `unless` path; this timer cannot be cancelled")
                }
            }
        }
        out
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
                        tracing::warn!(delivery = %DeliveryId::derive(&event.id, &r.rule, r.index), event = %event.id, rule = %r.rule, target = "none", error = %why, "render failed; the delivery is dead until replayed");
                        (DeliveryStatus::Dead, None, Some(why))
                    }
                    Err(NotRendered::Skipped(why)) => (DeliveryStatus::Skipped, None, Some(why)),
                };
                let email = email_of(request.as_ref(), event);
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
                    email,
                    event_type: Some(event.kind.as_str().to_string()),
                    attempt_log: Vec::new(),
                }
            })
            .collect()
    }

    /// Cancels the timers this event's arrival cancels (`unless: {event, match}`).
    async fn cancel_timers(&self, event: &Event) -> Result<(), StoreError> {
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
            let cancelled = self
                .timers
                .cancel(&format!("{}:{value}", rule.name), event.id.as_str())
                .await?;
            if !cancelled.is_empty() {
                tracing::info!(rule = %rule.name, event = %event.id, cancelled = cancelled.len(), "timers cancelled");
            }
        }
        Ok(())
    }
}

/// The timers of the deliveries stored as scheduled that have a correlation key, grouped by
/// key and due time.
fn timer_groups(
    stored: &[DeliveryRecord],
    correlations: &HashMap<DeliveryId, String>,
    now_ms: i64,
) -> Vec<(String, Vec<DeliveryId>, i64)> {
    let mut held: BTreeMap<(String, i64), Vec<DeliveryId>> = BTreeMap::new();
    for r in stored
        .iter()
        .filter(|r| r.status == DeliveryStatus::Scheduled)
    {
        if let Some(key) = correlations.get(&r.id) {
            held.entry((key.clone(), r.next_attempt_at.unwrap_or(now_ms)))
                .or_default()
                .push(r.id.clone());
        }
    }
    held.into_iter()
        .map(|((key, due), ids)| (key, ids, due))
        .collect()
}

/// A dispatch job for each delivery stored as pending (now) or scheduled (when due),
/// grouped by delay.
fn dispatch_jobs(stored: &[DeliveryRecord], now_ms: i64) -> Vec<(Duration, Vec<DispatchJob>)> {
    let mut by_delay: BTreeMap<u64, Vec<DispatchJob>> = BTreeMap::new();
    for r in stored {
        let delay = match r.status {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::Scheduled => r
                .next_attempt_at
                .map(|d| (d - now_ms).max(0) as u64)
                .unwrap_or(0),
            _ => continue,
        };
        by_delay.entry(delay).or_default().push(DispatchJob {
            delivery: r.id.clone(),
        });
    }
    by_delay
        .into_iter()
        .map(|(ms, jobs)| (Duration::from_millis(ms), jobs))
        .collect()
}

/// The jobs as message bodies. One that cannot be encoded (plain data: never) fails the
/// pass before anything is written.
fn encoded(
    groups: Vec<(Duration, Vec<DispatchJob>)>,
) -> Result<Vec<(Duration, Vec<String>)>, StoreError> {
    groups
        .into_iter()
        .map(|(delay, jobs)| {
            let bodies = jobs
                .iter()
                .map(Job::encode)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok((delay, bodies))
        })
        .collect()
}

/// The contact a delivery is for, as an operator searches it: the address its request names,
/// or else the event's contact's; trimmed and lower case.
fn email_of(request: Option<&Prepared>, event: &Event) -> Option<String> {
    request
        .and_then(Prepared::email)
        .filter(|e| !e.is_empty())
        .or_else(|| event.email().map(|e| e.trim().to_lowercase()))
        .filter(|e| !e.is_empty())
}

/// Decodes a pass's messages: the unreadable ones (by position, with why) and the jobs.
fn decode(messages: &[Message]) -> (HashMap<usize, String>, Vec<Positioned>) {
    let mut unreadable = HashMap::new();
    let mut jobs = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m.decode::<RenderJob>() {
            Ok(j) => jobs.push((i, j)),
            Err(e) => {
                unreadable.insert(i, e.to_string());
            }
        }
    }
    (unreadable, jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::parse_event;
    use crate::domain::smartemailing::Endpoint;
    use serde_json::json;

    fn event(email: &str) -> Event {
        let raw = json!({"id": "evt-1", "type": "contact.created", "contact": {"email": email}});
        parse_event(&raw, "", chrono::Utc::now()).unwrap()
    }

    #[test]
    fn a_delivery_is_for_the_address_its_request_names_or_else_the_event_s_contact() {
        let import = Prepared::SmartEmailing {
            endpoint: Endpoint::Import,
            group: json!({}),
            item: json!({"emailaddress": " Other@Example.com"}),
        };
        let webhook = Prepared::Http {
            method: "POST".into(),
            url: "https://hooks.example.com".into(),
            headers: vec![],
            body: None,
            auth: None,
        };
        let e = event("Jana@Example.com");
        assert_eq!(
            email_of(Some(&import), &e).as_deref(),
            Some("other@example.com")
        );
        assert_eq!(
            email_of(Some(&webhook), &e).as_deref(),
            Some("jana@example.com")
        );
        assert_eq!(email_of(None, &e).as_deref(), Some("jana@example.com"));
    }
}
