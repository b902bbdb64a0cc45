//! Every port in memory, with the semantics of the SQLite store (`adapters::sqlite`, the
//! reference local implementation) and of SQS: the drivers' tests run on it without a
//! database or an AWS emulator. Time comes from the `Clock` port, so a test moves it.
//! Credentials in memory are `adapters::env_credentials::StaticCredentials`.

use crate::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus};
use crate::domain::event::EventId;
use crate::domain::idempotency::{Begin, EventRecord, RecordStatus};
use crate::ports::clock::Clock;
use crate::ports::dead_letters::{DeadLetter, DeadLetters};
use crate::ports::queue::{Message, QueueName};
use crate::ports::store::{DeliveryCursor, DeliveryPage};
use crate::ports::{
    AtomicAccept, ContactStore, DeliveryFilter, DeliveryStore, EventStore, Queue, QueueError,
    SendLeases, StoreError, TimerStore,
};
use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The events, deliveries, timers, birthdays, both queues and their dead letters, in memory.
/// Clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    /// The parts that fail, as an unreachable table or queue would (a test's fault).
    down: Arc<Mutex<Vec<Part>>>,
}

/// A part of the memory store a test can take down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The store ports: events, deliveries, timers, contacts.
    Store,
    /// Writes to the store only: reads still work, as on a full disk.
    StoreWrites,
    /// The two queues.
    Queues,
    /// The dead-letter queues.
    DeadLetters,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

#[derive(Default)]
struct State {
    events: HashMap<EventId, EventRecord>,
    deliveries: HashMap<DeliveryId, DeliveryRecord>,
    /// Send leases: delivery → (holder, until, Unix ms).
    leases: HashMap<DeliveryId, (String, i64)>,
    /// Held deliveries: (correlation, delivery) → due time (Unix ms).
    timers: BTreeMap<(String, DeliveryId), i64>,
    /// E-mail (lower case) → birthday.
    birthdays: BTreeMap<String, NaiveDate>,
    /// Messages by id; the id is also the receipt handle (as in SQLite).
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    dead_letters: Vec<(QueueName, DeadLetter)>,
    /// The write operations called, in order, by name.
    writes: Vec<&'static str>,
}

/// One message of a queue.
struct Job {
    queue: QueueName,
    body: String,
    visible_at: i64,
    receive_count: u32,
}

impl State {
    fn enqueue(&mut self, queue: QueueName, body: String, visible_at: i64) {
        self.next_job += 1;
        self.jobs.insert(
            self.next_job,
            Job {
                queue,
                body,
                visible_at,
                receive_count: 0,
            },
        );
    }
}

/// A receipt handle as the memory queue gives it.
fn job_id(handle: &str) -> Option<u64> {
    handle.parse().ok()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl MemoryStore {
    /// An empty store on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            clock,
            down: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_down(&self, part: Part) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&part)
    }

    /// The state for a store operation: refused while the store is down.
    fn store(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        if self.is_down(Part::Store) {
            return Err(StoreError::Unavailable(
                "the memory store is down (a test's fault)".into(),
            ));
        }
        Ok(self.lock())
    }

    /// The state for a store write, which is logged under `op`.
    fn write(&self, op: &'static str) -> Result<MutexGuard<'_, State>, StoreError> {
        if self.is_down(Part::StoreWrites) {
            return Err(StoreError::Unavailable(
                "the memory store refuses writes (a test's full disk)".into(),
            ));
        }
        let mut state = self.store()?;
        state.writes.push(op);
        Ok(state)
    }

    /// The state for a call to the queues of `part`, logged under `op`; refused for all `n`
    /// messages while that part is down.
    fn queue_call(
        &self,
        part: Part,
        op: &'static str,
        n: usize,
    ) -> Result<MutexGuard<'_, State>, QueueError> {
        if self.is_down(part) {
            return Err(QueueError {
                failed: (0..n).collect(),
                message: format!("the memory store's {part:?} are down (a test's fault)"),
            });
        }
        let mut state = self.lock();
        state.writes.push(op);
        Ok(state)
    }

    /// Takes a part down (`true`: its calls fail, the others' do not) or brings it back.
    pub fn set_down(&self, part: Part, down: bool) {
        let mut parts = self.down.lock().unwrap_or_else(|p| p.into_inner());
        parts.retain(|p| *p != part);
        if down {
            parts.push(part);
        }
    }

    /// The write operations called so far, in order (`insert_new`, `send`, …), so a test can
    /// check how a driver batches its writes.
    pub fn writes(&self) -> Vec<&'static str> {
        self.lock().writes.clone()
    }

    /// The letters given up on from `queue`, oldest first.
    pub fn dead_letters(&self, queue: QueueName) -> Vec<DeadLetter> {
        self.lock()
            .dead_letters
            .iter()
            .filter(|(q, _)| *q == queue)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// How many messages wait in a queue, visible or not.
    pub fn queue_depth(&self, queue: QueueName) -> usize {
        self.lock()
            .jobs
            .values()
            .filter(|j| j.queue == queue)
            .count()
    }
}

/// Claims one event id: `Started` (stored) when free, expired or held IN_PROGRESS past its
/// lease; otherwise the record that holds it.
fn claim(events: &mut HashMap<EventId, EventRecord>, record: &EventRecord, now_ms: i64) -> Begin {
    if let Some(held) = events.get(&record.id) {
        if !held.is_claimable(now_ms) {
            return Begin::Existing(held.clone());
        }
    }
    events.insert(record.id.clone(), record.clone());
    Begin::Started
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn begin(&self, record: &EventRecord, now_ms: i64) -> Result<Begin, StoreError> {
        Ok(claim(&mut self.write("begin")?.events, record, now_ms))
    }

    async fn complete(&self, id: &EventId) -> Result<(), StoreError> {
        if let Some(r) = self.write("complete")?.events.get_mut(id) {
            r.status = RecordStatus::Completed;
        }
        Ok(())
    }

    async fn release(&self, id: &EventId) -> Result<(), StoreError> {
        let mut state = self.write("release")?;
        if state
            .events
            .get(id)
            .is_some_and(|r| r.status == RecordStatus::InProgress)
        {
            state.events.remove(id);
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let id = EventId::from_stored(id.to_string());
        Ok(self.store()?.events.get(&id).cloned())
    }
}

#[async_trait]
impl AtomicAccept for MemoryStore {
    async fn accept_atomic(
        &self,
        records: Vec<EventRecord>,
        bodies: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<Begin>, StoreError> {
        let mut state = self.write("accept_atomic")?;
        // Claimed on a copy, so a conflict leaves nothing of this call behind.
        let mut events = state.events.clone();
        let mut claims = Vec::with_capacity(records.len());
        let mut accepted = Vec::new();
        let mut conflict = false;
        for (record, body) in records.iter().zip(bodies) {
            let c = claim(&mut events, record, now_ms);
            match &c {
                Begin::Existing(held) => conflict |= conflicts(held, record),
                Begin::Started => accepted.push(body),
            }
            claims.push(c);
        }
        if !conflict {
            state.events = events;
            for body in accepted {
                state.enqueue(QueueName::Render, body, now_ms);
            }
        }
        Ok(claims)
    }
}

/// Whether a held record makes an atomic accept of `record` store nothing (the rule of
/// `AtomicAccept`): another payload under the same id, or a claim still being worked on.
fn conflicts(held: &EventRecord, record: &EventRecord) -> bool {
    held.payload_hash != record.payload_hash || held.status == RecordStatus::InProgress
}

#[async_trait]
impl DeliveryStore for MemoryStore {
    async fn insert_new(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        let mut state = self.write("insert_new")?;
        for r in records {
            state
                .deliveries
                .entry(r.id.clone())
                .or_insert_with(|| r.clone());
        }
        Ok(())
    }

    async fn get_many(&self, ids: &[DeliveryId]) -> Result<Vec<DeliveryRecord>, StoreError> {
        let state = self.store()?;
        Ok(ids
            .iter()
            .filter_map(|id| state.deliveries.get(id).cloned())
            .collect())
    }

    async fn save(&self, r: &DeliveryRecord) -> Result<(), StoreError> {
        self.save_many(std::slice::from_ref(r)).await
    }

    async fn save_many(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        let mut state = self.write("save")?;
        for r in records {
            // Recording an outcome releases the send lease in the same write, as DynamoDB's.
            state.leases.remove(&r.id);
            // As SQLite's UPDATE: the state changes (with when its wait began, which a
            // replay restarts), what the delivery is does not, and an id never inserted
            // stays absent.
            if let Some(d) = state.deliveries.get_mut(&r.id) {
                d.created_at = r.created_at;
                d.status = r.status;
                d.attempts = r.attempts;
                d.last_error = r.last_error.clone();
                d.last_response = r.last_response.clone();
                d.sent_at = r.sent_at.clone();
                d.next_attempt_at = r.next_attempt_at;
                d.request = r.request.clone();
                d.attempt_log = r.attempt_log.clone();
            }
        }
        Ok(())
    }

    async fn cancel_scheduled(
        &self,
        id: &DeliveryId,
        now_ms: i64,
        why: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let mut state = self.write("cancel_scheduled")?;
        let Some(d) = state.deliveries.get_mut(id).filter(|d| {
            d.status == DeliveryStatus::Scheduled && d.next_attempt_at.is_some_and(|t| t > now_ms)
        }) else {
            return Ok(None);
        };
        d.cancel(why);
        Ok(Some(d.clone()))
    }

    async fn for_event(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        let state = self.store()?;
        let mut out: Vec<DeliveryRecord> = state
            .deliveries
            .values()
            .filter(|d| d.event_id.as_str() == event_id)
            .cloned()
            .collect();
        // The id last: a map has no order of its own, and a test's answer must not change
        // from one run to the next.
        out.sort_by(|a, b| {
            (a.created_at, a.chain_depth, &a.rule, a.action_index, &a.id).cmp(&(
                b.created_at,
                b.chain_depth,
                &b.rule,
                b.action_index,
                &b.id,
            ))
        });
        Ok(out)
    }

    async fn list(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
        let state = self.store()?;
        let mut out: Vec<DeliveryRecord> = state
            .deliveries
            .values()
            .filter(|d| f.matches(d))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        if f.limit > 0 {
            out.truncate(f.limit);
        }
        Ok(out)
    }

    async fn page(
        &self,
        f: &DeliveryFilter,
        after: Option<&DeliveryCursor>,
    ) -> Result<DeliveryPage, StoreError> {
        let state = self.store()?;
        let mut found: Vec<&DeliveryRecord> = state
            .deliveries
            .values()
            .filter(|d| f.matches(d) && after.is_none_or(|c| c.precedes(d)))
            .collect();
        found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(DeliveryPage::collect(
            found.into_iter().cloned(),
            f.page_size(),
        ))
    }

    async fn count_by_status(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(DeliveryStatus, u64)>, StoreError> {
        let state = self.store()?;
        let mut counts: HashMap<DeliveryStatus, u64> = HashMap::new();
        for d in state
            .deliveries
            .values()
            .filter(|d| d.created_at >= since_ms)
        {
            *counts.entry(d.status).or_default() += 1;
        }
        Ok(DeliveryStatus::ALL
            .into_iter()
            .filter_map(|s| counts.get(&s).map(|n| (s, *n)))
            .collect())
    }
}

#[async_trait]
impl SendLeases for MemoryStore {
    async fn take(
        &self,
        ids: &[DeliveryId],
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        let mut state = self.write("take_leases")?;
        let State {
            deliveries, leases, ..
        } = &mut *state;
        let mut taken = Vec::new();
        for id in ids {
            let free = deliveries
                .get(id)
                .is_some_and(|d| d.status != DeliveryStatus::Sent)
                && leases
                    .get(id)
                    .is_none_or(|(h, until)| *until <= now_ms || h == holder);
            if free {
                leases.insert(id.clone(), (holder.to_string(), until_ms));
                taken.push(id.clone());
            }
        }
        Ok(taken)
    }

    async fn release(&self, ids: &[DeliveryId], holder: &str) -> Result<(), StoreError> {
        let mut state = self.write("release_leases")?;
        for id in ids {
            if state.leases.get(id).is_some_and(|(h, _)| h == holder) {
                state.leases.remove(id);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl TimerStore for MemoryStore {
    async fn hold(
        &self,
        correlation: &str,
        deliveries: &[DeliveryId],
        due_ms: i64,
    ) -> Result<(), StoreError> {
        let mut state = self.write("hold")?;
        for id in deliveries {
            state
                .timers
                .entry((correlation.to_string(), id.clone()))
                .or_insert(due_ms);
        }
        Ok(())
    }

    async fn cancel(
        &self,
        correlation: &str,
        except_event: &str,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        let mut state = self.write("cancel")?;
        let State {
            timers, deliveries, ..
        } = &mut *state;
        let mut cancelled = Vec::new();
        timers.retain(|(c, id), _| {
            let Some(d) = deliveries.get_mut(id).filter(|d| {
                c == correlation
                    && d.status == DeliveryStatus::Scheduled
                    && d.event_id.as_str() != except_event
            }) else {
                return true;
            };
            d.cancel("cancelled by a later event");
            cancelled.push(id.clone());
            false
        });
        Ok(cancelled)
    }
}

#[async_trait]
impl ContactStore for MemoryStore {
    async fn remember_birthday(&self, email: &str, birthday: NaiveDate) -> Result<(), StoreError> {
        self.write("remember_birthday")?
            .birthdays
            .insert(email.to_lowercase(), birthday);
        Ok(())
    }

    async fn birthdays_on(
        &self,
        month: u32,
        day: u32,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, NaiveDate)>, StoreError> {
        let after = after.unwrap_or("");
        Ok(self
            .store()?
            .birthdays
            .iter()
            .filter(|(email, b)| email.as_str() > after && b.month() == month && b.day() == day)
            .take(limit)
            .map(|(email, b)| (email.clone(), *b))
            .collect())
    }
}

#[async_trait]
impl Queue for MemoryStore {
    async fn depth(
        &self,
        queue: QueueName,
        now_ms: i64,
    ) -> Result<crate::ports::queue::QueueDepth, QueueError> {
        Ok(self.depth_at(queue, now_ms))
    }

    async fn send(
        &self,
        queue: QueueName,
        bodies: Vec<String>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let visible_at = self.clock.now_ms().saturating_add(millis(delay));
        let mut state = self.queue_call(Part::Queues, "send", bodies.len())?;
        for body in bodies {
            state.enqueue(queue, body, visible_at);
        }
        Ok(())
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        let now = self.clock.now_ms();
        let until = now.saturating_add(millis(visibility));
        let mut state = self.queue_call(Part::Queues, "receive", 0)?;
        let mut visible: Vec<(i64, u64)> = state
            .jobs
            .iter()
            .filter(|(_, j)| j.queue == queue && j.visible_at <= now)
            .map(|(id, j)| (j.visible_at, *id))
            .collect();
        visible.sort_unstable();
        let mut out = Vec::new();
        for (_, id) in visible.into_iter().take(max) {
            if let Some(j) = state.jobs.get_mut(&id) {
                j.visible_at = until;
                j.receive_count += 1;
                out.push(Message {
                    handle: id.to_string(),
                    body: j.body.clone(),
                    receive_count: j.receive_count,
                });
            }
        }
        Ok(out)
    }

    async fn ack(&self, _queue: QueueName, handles: &[String]) -> Result<(), QueueError> {
        let mut state = self.queue_call(Part::Queues, "ack", handles.len())?;
        for id in handles.iter().filter_map(|h| job_id(h)) {
            state.jobs.remove(&id);
        }
        Ok(())
    }

    async fn retry_after(
        &self,
        _queue: QueueName,
        handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let at = self.clock.now_ms().saturating_add(millis(delay));
        let mut state = self.queue_call(Part::Queues, "retry_after", 1)?;
        if let Some(j) = job_id(handle).and_then(|id| state.jobs.get_mut(&id)) {
            j.visible_at = at;
        }
        Ok(())
    }
}

#[async_trait]
impl DeadLetters for MemoryStore {
    async fn dead_letter(
        &self,
        queue: QueueName,
        letters: &[DeadLetter],
    ) -> Result<(), QueueError> {
        let mut state = self.queue_call(Part::DeadLetters, "dead_letter", letters.len())?;
        state
            .dead_letters
            .extend(letters.iter().map(|l| (queue, l.clone())));
        Ok(())
    }
}

/// Queue depths for `GET /v1/status`.
impl MemoryStore {
    fn depth_at(&self, queue: QueueName, now_ms: i64) -> crate::ports::queue::QueueDepth {
        let state = self.lock();
        let mut count = 0u64;
        let mut oldest: Option<i64> = None;
        for j in state.jobs.values().filter(|j| j.queue == queue) {
            count += 1;
            if j.visible_at <= now_ms {
                oldest = Some(oldest.map_or(j.visible_at, |o| o.min(j.visible_at)));
            }
        }
        crate::ports::queue::QueueDepth {
            messages: Some(count),
            oldest_due_age_ms: oldest.map(|t| now_ms - t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::clock::ManualClock;

    const T0: i64 = 1_790_000_000_000;

    fn store() -> (MemoryStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at_ms(T0));
        (MemoryStore::new(clock.clone()), clock)
    }

    fn event(id: &str, hash: &str, status: RecordStatus) -> EventRecord {
        EventRecord {
            id: EventId::from_stored(id.to_string()),
            kind: "contact.created".into(),
            payload_hash: hash.into(),
            event: serde_json::json!({ "id": id }),
            received_at: T0,
            status,
            in_progress_until: T0 + 30_000,
            expires_at: T0 / 1000 + 3600,
        }
    }

    fn scheduled(id: &str, event_id: &str) -> DeliveryRecord {
        DeliveryRecord {
            id: DeliveryId::from_stored(id),
            event_id: EventId::from_stored(event_id),
            rule: "cart".into(),
            action: "trigger_event".into(),
            action_index: 0,
            status: DeliveryStatus::Scheduled,
            attempts: 0,
            last_error: None,
            last_response: None,
            sent_at: None,
            next_attempt_at: Some(T0 + 60_000),
            request: None,
            created_at: T0,
            chain_depth: 0,
            email: None,
            event_type: None,
            attempt_log: Vec::new(),
        }
    }

    fn bodies(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(|m| m.body.as_str()).collect()
    }

    #[tokio::test]
    async fn insert_new_stored_by_default_reads_back_what_is_stored_once_per_id() {
        let (s, _) = store();
        let a = scheduled("dlv_a", "e1");
        let mut sent = a.clone();
        sent.record_dry_run();
        s.insert_new(std::slice::from_ref(&a)).await.unwrap();
        s.save(&sent).await.unwrap();
        let b = scheduled("dlv_b", "e1");
        let got = s
            .insert_new_stored(&[b.clone(), a.clone(), b.clone()])
            .await
            .unwrap();
        assert_eq!(got, vec![b, sent], "in the order first given, as stored");
    }

    #[tokio::test]
    async fn a_claimed_id_is_held_until_its_lease_or_expiry_runs_out() {
        let (s, _) = store();
        let first = event("e1", "h", RecordStatus::InProgress);
        assert_eq!(s.begin(&first, T0).await.unwrap(), Begin::Started);
        let again = s
            .begin(&event("e1", "h2", RecordStatus::InProgress), T0 + 1)
            .await;
        assert_eq!(again.unwrap(), Begin::Existing(first.clone()));
        // Past the lease, an IN_PROGRESS claim may be taken over.
        let late = event("e1", "h3", RecordStatus::InProgress);
        assert_eq!(s.begin(&late, T0 + 30_001).await.unwrap(), Begin::Started);

        s.complete(&late.id).await.unwrap();
        EventStore::release(&s, &late.id).await.unwrap();
        let kept = s.get("e1").await.unwrap().unwrap();
        assert_eq!(
            kept.status,
            RecordStatus::Completed,
            "a completed claim is not released"
        );
        let expired = T0 + 3_600_001;
        assert_eq!(s.begin(&first, expired).await.unwrap(), Begin::Started);
    }

    #[tokio::test]
    async fn an_atomic_accept_with_a_conflict_stores_nothing() {
        let (s, _) = store();
        let taken = event("taken", "h1", RecordStatus::Completed);
        s.accept_atomic(vec![taken.clone()], vec!["job taken".into()], T0)
            .await
            .unwrap();
        // The same payload again is a duplicate, not a conflict.
        let dup = s
            .accept_atomic(vec![taken.clone()], vec!["again".into()], T0)
            .await
            .unwrap();
        assert_eq!(dup, vec![Begin::Existing(taken.clone())]);
        let fresh = event("fresh", "h", RecordStatus::Completed);
        let other = event("taken", "other", RecordStatus::Completed);
        let claims = s
            .accept_atomic(vec![fresh, other], vec!["a".into(), "b".into()], T0)
            .await
            .unwrap();
        assert_eq!(claims[0], Begin::Started);
        assert!(matches!(claims[1], Begin::Existing(_)), "{claims:?}");
        assert_eq!(s.get("fresh").await.unwrap(), None);
        assert_eq!(
            s.queue_depth(QueueName::Render),
            1,
            "only the first accept's job"
        );
    }

    #[tokio::test]
    async fn a_received_message_is_hidden_for_its_visibility_then_seen_again() {
        let (s, clock) = store();
        s.send(
            QueueName::Render,
            vec!["a".into(), "b".into()],
            Duration::ZERO,
        )
        .await
        .unwrap();
        s.send(
            QueueName::Render,
            vec!["later".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let visibility = Duration::from_secs(30);
        let got = s.receive(QueueName::Render, 10, visibility).await.unwrap();
        assert_eq!(
            bodies(&got),
            ["a", "b"],
            "a delayed message is not visible yet"
        );
        assert!(s
            .receive(QueueName::Dispatch, 10, visibility)
            .await
            .unwrap()
            .is_empty());

        clock.advance(Duration::from_secs(5));
        let got = s.receive(QueueName::Render, 10, visibility).await.unwrap();
        assert_eq!(bodies(&got), ["later"]);

        clock.advance(Duration::from_secs(26));
        let again = s.receive(QueueName::Render, 1, visibility).await.unwrap();
        assert_eq!(bodies(&again), ["a"], "oldest visible first, at most `max`");
        assert_eq!(again[0].receive_count, 2);
    }

    #[tokio::test]
    async fn an_acked_message_is_gone_and_a_retry_waits_its_delay() {
        let (s, clock) = store();
        s.send(
            QueueName::Dispatch,
            vec!["a".into(), "b".into()],
            Duration::ZERO,
        )
        .await
        .unwrap();
        let got = s
            .receive(QueueName::Dispatch, 10, Duration::from_secs(30))
            .await
            .unwrap();
        s.ack(QueueName::Dispatch, &[got[0].handle.clone()])
            .await
            .unwrap();
        s.retry_after(QueueName::Dispatch, &got[1].handle, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(s.queue_depth(QueueName::Dispatch), 1);

        clock.advance(Duration::from_secs(1));
        let early = s
            .receive(QueueName::Dispatch, 10, Duration::ZERO)
            .await
            .unwrap();
        assert!(early.is_empty(), "the retry is not due yet: {early:?}");
        clock.advance(Duration::from_secs(1));
        let due = s
            .receive(QueueName::Dispatch, 10, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(bodies(&due), ["b"]);
        // Handles of messages already gone change nothing.
        s.ack(QueueName::Dispatch, &["999".into(), "x".into()])
            .await
            .unwrap();
        s.retry_after(QueueName::Dispatch, "999", Duration::ZERO)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_later_event_cancels_the_timers_of_other_events_only() {
        let (s, _) = store();
        let held = [scheduled("d1", "e1"), scheduled("d2", "e2")];
        s.insert_new(&held).await.unwrap();
        let ids: Vec<DeliveryId> = held.iter().map(|d| d.id.clone()).collect();
        s.hold("cart:42", &ids, T0 + 60_000).await.unwrap();

        let cancelled = s.cancel("cart:42", "e2").await.unwrap();
        assert_eq!(cancelled, [DeliveryId::from_stored("d1")]);
        let after = s.get_many(&ids).await.unwrap();
        assert_eq!(after[0].status, DeliveryStatus::Cancelled);
        assert_eq!(after[0].next_attempt_at, None);
        assert_eq!(after[1].status, DeliveryStatus::Scheduled);
        assert!(s.cancel("cart:42", "e9").await.unwrap().len() == 1);
        assert!(s.cancel("cart:42", "e9").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn deliveries_are_stored_once_and_listed_oldest_first() {
        let (s, _) = store();
        let mut first = scheduled("d1", "e1");
        s.insert_new(std::slice::from_ref(&first)).await.unwrap();
        let mut again = first.clone();
        again.rule = "another".into();
        s.insert_new(&[again, scheduled("d0", "e1")]).await.unwrap();
        first.status = DeliveryStatus::Sent;
        s.save(&first).await.unwrap();
        s.save(&scheduled("never-inserted", "e1")).await.unwrap();

        let all = s.for_event("e1").await.unwrap();
        let seen: Vec<(&str, &str)> = all
            .iter()
            .map(|d| (d.id.as_str(), d.rule.as_str()))
            .collect();
        assert_eq!(seen, [("d0", "cart"), ("d1", "cart")]);
        let filter = DeliveryFilter {
            status: Some(DeliveryStatus::Sent),
            ..DeliveryFilter::default()
        };
        let sent = s.list(&filter).await.unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].id.as_str(), "d1");
    }

    #[tokio::test]
    async fn a_lease_goes_to_one_holder_until_it_runs_out_or_an_outcome_is_recorded() {
        let (s, _) = store();
        let mut sent = scheduled("sent", "e1");
        sent.status = DeliveryStatus::Sent;
        s.insert_new(&[scheduled("d1", "e1"), scheduled("d2", "e1"), sent])
            .await
            .unwrap();
        let ids = |names: &[&str]| -> Vec<DeliveryId> {
            names.iter().map(|n| DeliveryId::from_stored(*n)).collect()
        };
        let all = ids(&["d1", "d2", "sent", "unknown"]);
        assert_eq!(
            s.take(&all, "a", T0, T0 + 10).await.unwrap(),
            ids(&["d1", "d2"])
        );
        assert!(s.take(&all, "b", T0 + 9, T0 + 20).await.unwrap().is_empty());
        // The holder may take its own lease again; another only once it has run out.
        assert_eq!(
            s.take(&ids(&["d1"]), "a", T0 + 9, T0 + 30).await.unwrap(),
            ids(&["d1"])
        );
        assert_eq!(
            s.take(&all, "b", T0 + 10, T0 + 40).await.unwrap(),
            ids(&["d2"])
        );

        let d1 = s.get_many(&ids(&["d1"])).await.unwrap().remove(0);
        s.save_many(&[d1]).await.unwrap();
        assert_eq!(
            s.take(&all, "c", T0 + 11, T0 + 50).await.unwrap(),
            ids(&["d1"])
        );
        SendLeases::release(&s, &ids(&["d1", "d2"]), "c")
            .await
            .unwrap();
        assert!(
            s.take(&ids(&["d2"]), "c", T0 + 12, T0 + 50)
                .await
                .unwrap()
                .is_empty(),
            "a release gives back only the releaser's own leases"
        );
        assert_eq!(
            s.take(&ids(&["d1"]), "d", T0 + 12, T0 + 50).await.unwrap(),
            ids(&["d1"])
        );
    }

    #[tokio::test]
    async fn birthdays_are_found_by_day_one_page_at_a_time() {
        let (s, _) = store();
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        for email in ["c@x.cz", "A@x.cz", "b@x.cz"] {
            s.remember_birthday(email, day(1990, 11, 26)).await.unwrap();
        }
        s.remember_birthday("d@x.cz", day(1991, 11, 27))
            .await
            .unwrap();
        let page = s.birthdays_on(11, 26, None, 2).await.unwrap();
        let emails: Vec<&str> = page.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(emails, ["a@x.cz", "b@x.cz"]);
        let rest = s.birthdays_on(11, 26, Some("b@x.cz"), 2).await.unwrap();
        assert_eq!(rest, [("c@x.cz".to_string(), day(1990, 11, 26))]);
    }

    #[tokio::test]
    async fn a_part_taken_down_fails_alone() {
        let (s, _) = store();
        s.set_down(Part::Store, true);
        assert!(matches!(s.get("e1").await, Err(StoreError::Unavailable(_))));
        s.send(QueueName::Render, vec!["a".into()], Duration::ZERO)
            .await
            .unwrap();
        s.set_down(Part::DeadLetters, true);
        let letter = DeadLetter {
            body: "a".into(),
            reason: "poison".into(),
        };
        let refused = s
            .dead_letter(QueueName::Render, std::slice::from_ref(&letter))
            .await;
        assert_eq!(refused.unwrap_err().failed, [0]);
        s.set_down(Part::DeadLetters, false);
        s.set_down(Part::Store, false);
        s.dead_letter(QueueName::Render, std::slice::from_ref(&letter))
            .await
            .unwrap();
        assert_eq!(s.dead_letters(QueueName::Render), [letter]);
        assert!(s.dead_letters(QueueName::Dispatch).is_empty());
        assert_eq!(s.writes(), ["send", "dead_letter"]);
    }
}
