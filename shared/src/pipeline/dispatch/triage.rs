//! Triage: which messages of a batch are sent, dropped or held. Unreadable messages and
//! unknown deliveries are dropped; finished deliveries are dropped (their chains are
//! re-checked); a message read before its delivery is due is held or dropped by one rule
//! (`triage`, after `QueueDelays`); the rest are grouped by bulk call. The breaker gates,
//! call by call, how much of a group goes.

use super::chain::ChainFrom;
use super::send::target_of;
use super::{DispatchError, Dispatcher, Pass, Work};
use crate::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus, Outcome, Prepared};
use crate::policy::breaker::Gate;
use crate::ports::queue::{DispatchJob, Message};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// A message read less than this before its delivery is due is sent now.
const EARLY_SLACK_MS: i64 = 1000;

/// How long the dispatch queue can hide a message. It decides what a retry's message read
/// before the retry is due is, and so what the one rule for early messages does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueDelays {
    /// The queue hides a message as long as asked (SQLite, `relay serve`): a retry's own
    /// message never comes early, so an early one is a copy (a replay, a redelivery) and is
    /// dropped; the scheduled one is still waiting.
    #[default]
    Full,
    /// The queue caps how long it hides a message (SQS: 12 hours): a retry due later comes
    /// back early and is the scheduled message itself, so it is hidden again until due.
    Capped,
}

/// What triage does with one message whose delivery is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Triage {
    /// Send it now.
    Send,
    /// Finished already: drop the message, never send twice.
    Finished,
    /// A copy of a message still waiting in the queue: drop it.
    EarlyCopy,
    /// Not due yet and this is its message: hide it again for this long.
    Hold(Duration),
}

/// The one rule for a message read before its delivery is due: a timer (a scheduled
/// delivery) has one message, so it is held again, whatever the queue; a retry's message
/// is held too where the queue caps its delays, and is a copy (dropped) where it does not.
fn triage(record: &DeliveryRecord, now_ms: i64, delays: QueueDelays) -> Triage {
    if record.status.is_final() {
        return Triage::Finished;
    }
    let Some(due) = record
        .next_attempt_at
        .filter(|t| *t > now_ms + EARLY_SLACK_MS)
    else {
        return Triage::Send;
    };
    let hold = Triage::Hold(Duration::from_millis((due - now_ms) as u64));
    match (record.status, delays) {
        (DeliveryStatus::Scheduled, _) | (DeliveryStatus::Retrying, QueueDelays::Capped) => hold,
        (DeliveryStatus::Retrying, QueueDelays::Full) => Triage::EarlyCopy,
        // A pending delivery has no due time of its own to wait for.
        _ => Triage::Send,
    }
}

/// Deliveries that may share calls: one bulk key, one target, one batch limit.
pub(super) struct Group {
    /// The breaker and pacing target.
    target: String,
    /// How many deliveries one call may carry.
    limit: usize,
    /// The deliveries not sent yet, in the order they arrived.
    rest: Vec<Work>,
}

/// One call's share of a group.
pub(super) struct Chunk {
    /// The deliveries the call carries.
    pub(super) work: Vec<Work>,
    /// Whether the call probes a half-open circuit (its failure spends no attempt).
    pub(super) probe: bool,
}

/// The row a delivery writes (`Prepared::row_key`), if any.
fn row_of(w: &Work) -> Option<String> {
    w.record.request.as_ref().and_then(Prepared::row_key)
}

/// Groups the work by bulk key, keeping the order deliveries arrived in. Groups are sent one
/// after the other, so a delivery joins its key's group only if every earlier delivery to
/// the same row is in that group or an earlier one; otherwise it opens a new group at the
/// end (its key's later deliveries join that one), and per contact the deliveries to one
/// endpoint go in the order their events happened.
pub(super) fn by_bulk_key(work: Vec<Work>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut row_group: HashMap<String, usize> = HashMap::new();
    for w in work {
        let key = match &w.record.request {
            Some(r) => r.bulk_key(&w.record.id),
            None => format!("none:{}", w.record.id),
        };
        let row = row_of(&w);
        let earlier = row.as_ref().and_then(|r| row_group.get(r)).copied();
        let joins = index
            .get(&key)
            .copied()
            .filter(|&i| earlier.is_none_or(|e| e <= i));
        let at = joins.unwrap_or(groups.len());
        if let Some(row) = row {
            row_group.insert(row, at);
        }
        match joins {
            Some(i) => groups[i].rest.push(w),
            None => {
                index.insert(key, groups.len());
                let (target, limit) = match &w.record.request {
                    Some(r @ Prepared::SmartEmailing { endpoint, .. }) => {
                        (target_of(r), endpoint.batch_limit())
                    }
                    Some(r) => (target_of(r), 1),
                    None => (String::new(), 1),
                };
                groups.push(Group {
                    target,
                    limit,
                    rest: vec![w],
                });
            }
        }
    }
    groups
}

/// Takes, in order, up to `limit` of `rest` of which no two write the same row (`row`); the
/// others stay in `rest`, in order, for the next call.
fn take_rows<T>(rest: &mut Vec<T>, limit: usize, row: impl Fn(&T) -> Option<String>) -> Vec<T> {
    let mut rows = HashSet::new();
    let mut taken = Vec::new();
    let mut left = Vec::new();
    for w in rest.drain(..) {
        let fits = taken.len() < limit && row(&w).is_none_or(|r| rows.insert(r));
        if fits {
            taken.push(w);
        } else {
            left.push(w);
        }
    }
    *rest = left;
    taken
}

/// Reads the jobs; an unreadable message is dropped.
fn decode(messages: Vec<Message>, pass: &mut Pass) -> Vec<(Message, DeliveryId)> {
    let mut jobs = Vec::with_capacity(messages.len());
    for m in messages {
        match serde_json::from_str::<DispatchJob>(&m.body) {
            Ok(job) => jobs.push((m, job.delivery)),
            Err(e) => {
                tracing::error!(error = %e, "dropping an unreadable dispatch message");
                pass.done(m);
            }
        }
    }
    jobs
}

impl Dispatcher {
    /// The triage phase: loads the batch's deliveries and returns those to send now.
    pub(super) async fn triage(
        &self,
        messages: Vec<Message>,
        pass: &mut Pass,
    ) -> Result<Vec<Work>, DispatchError> {
        let jobs = decode(messages, pass);
        let ids: Vec<DeliveryId> = jobs.iter().map(|(_, id)| id.clone()).collect();
        let mut records: HashMap<DeliveryId, DeliveryRecord> = self
            .ctx
            .deliveries
            .get_many(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let now_ms = self.ctx.clock.now_ms();
        let mut work = Vec::new();
        let mut held = Vec::new();
        let mut seen = HashSet::new();
        for (message, id) in jobs {
            let Some(record) = records.remove(&id) else {
                if seen.contains(&id) {
                    pass.report.duplicates += 1;
                } else {
                    // Only the id is known: no record says its event, rule or target.
                    tracing::warn!(delivery = %id, "dropping a message for an unknown delivery");
                }
                pass.done(message);
                continue;
            };
            seen.insert(id);
            match triage(&record, now_ms, self.delays) {
                Triage::Send => work.push(Work { message, record }),
                Triage::Finished => {
                    // A queue redelivery or a repeat. Never send twice, but make sure the
                    // chain it may have started was enqueued.
                    pass.report.duplicates += 1;
                    if record.status.is_success() {
                        pass.chains.push(ChainFrom::of(&record));
                    }
                    pass.done(message);
                }
                Triage::EarlyCopy => {
                    pass.report.duplicates += 1;
                    pass.done(message);
                }
                Triage::Hold(delay) => held.push((message, delay)),
            }
        }
        self.hold_messages(held, pass);
        Ok(work)
    }

    /// The next call's share of a group, as the target's breaker allows: up to the batch
    /// limit, one probe delivery while half open, or none while open (the rest wait, without
    /// spending an attempt, until it half-opens).
    pub(super) async fn next_chunk(
        &self,
        group: &mut Group,
        pass: &mut Pass,
    ) -> Result<Option<Chunk>, DispatchError> {
        if group.rest.is_empty() {
            return Ok(None);
        }
        let now_ms = self.ctx.clock.now_ms();
        let (take, probe) = match self.breakers.gate(&group.target, now_ms) {
            Gate::Closed => (group.limit, false),
            Gate::HalfOpen => (1, true),
            Gate::Open { until_ms } => {
                let rest = std::mem::take(&mut group.rest);
                self.hold_open(rest, false, until_ms, now_ms, pass).await?;
                return Ok(None);
            }
        };
        let work = take_rows(&mut group.rest, take, row_of);
        Ok(Some(Chunk { work, probe }))
    }

    /// A probe failed and re-opened the circuit: its deliveries keep their attempts and wait
    /// with the rest of the group.
    pub(super) async fn probe_failed(
        &self,
        group: &Group,
        mut work: Vec<Work>,
        outcomes: &[Outcome],
        pass: &mut Pass,
    ) -> Result<(), DispatchError> {
        for (w, outcome) in work.iter_mut().zip(outcomes) {
            w.record.record_failed_probe(outcome);
        }
        let now_ms = self.ctx.clock.now_ms();
        let until_ms = match self.breakers.gate(&group.target, now_ms) {
            Gate::Open { until_ms } => until_ms,
            Gate::Closed | Gate::HalfOpen => now_ms,
        };
        // The probe's records changed, and their write releases the probe's send lease.
        self.hold_open(work, true, until_ms, now_ms, pass).await
    }

    /// Holds deliveries back while their target's circuit is open: each is due a little
    /// after the circuit half-opens, so they do not all return in the same instant. Those
    /// that have waited longer than `delivery.max_age` are given up instead.
    ///
    /// A hold is written only where it changes the stored record: a delivery given up, one
    /// whose record `changed` since it was read (a failed probe), and the first hold of one
    /// that had no due time. Every later hold of the same wait only moves its message's
    /// timer in the queue (one batch call per ten held), so a long outage costs no write per
    /// held delivery and probe cycle: the stored due time stays an earlier bound, and a
    /// delivery read past it is sent only if its circuit lets it.
    async fn hold_open(
        &self,
        mut work: Vec<Work>,
        changed: bool,
        until_ms: i64,
        now_ms: i64,
        pass: &mut Pass,
    ) -> Result<(), DispatchError> {
        let mut held = Vec::with_capacity(work.len());
        let mut writes = Vec::new();
        for w in &mut work {
            let first = w.record.next_attempt_at.is_none();
            match self.overdue(&w.record, now_ms) {
                Some(reason) => {
                    w.record.give_up(reason);
                    held.push(None);
                    writes.push(w.record.clone());
                }
                None => {
                    let due = until_ms + self.draw(0..1000, 0);
                    w.record.next_attempt_at = Some(due);
                    held.push(Some(Duration::from_millis((due - now_ms).max(0) as u64)));
                    if changed || first {
                        writes.push(w.record.clone());
                    }
                }
            }
        }
        if !writes.is_empty() {
            self.ctx.deliveries.save_many(&writes).await?;
        }
        let mut messages = Vec::with_capacity(work.len());
        for (w, hold) in work.into_iter().zip(held) {
            match hold {
                Some(delay) => messages.push((w.message, delay)),
                None => {
                    pass.gave_up(&w.record);
                    self.report_status(&w.record);
                    pass.done(w.message);
                }
            }
        }
        self.hold_messages(messages, pass);
        Ok(())
    }

    /// Hides messages again for their delays, without spending an attempt, in one requeue
    /// with the pass's other holds at its end; if the queue fails, they are seen again
    /// after the pass's visibility timeout and held once more.
    pub(super) fn hold_messages(&self, held: Vec<(Message, Duration)>, pass: &mut Pass) {
        pass.report.waiting += held.len();
        pass.report
            .retried_handles
            .extend(held.iter().map(|(m, _)| m.handle.clone()));
        pass.held.extend(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::fixtures::pending;

    fn record(status: DeliveryStatus, due: Option<i64>) -> DeliveryRecord {
        let mut r = pending("evt-1");
        r.status = status;
        r.attempts = 1;
        r.next_attempt_at = due;
        r
    }

    /// Work for a trigger of `contact` under the bulk group `group`.
    fn trigger(n: usize, contact: &str, group: serde_json::Value) -> Work {
        let mut record = pending(&format!("evt-{n}"));
        record.request = Some(Prepared::SmartEmailing {
            endpoint: crate::domain::smartemailing::Endpoint::TriggerEvent,
            group,
            item: serde_json::json!({"emailaddress": contact, "name": "welcome"}),
        });
        let message = Message {
            handle: format!("h{n}"),
            body: String::new(),
            receive_count: 1,
        };
        Work { message, record }
    }

    fn events(work: &[Work]) -> Vec<&str> {
        work.iter().map(|w| w.record.event_id.as_str()).collect()
    }

    #[test]
    fn a_call_carries_each_row_once_and_the_second_goes_next_in_order() {
        let mut rest: Vec<Work> = [(0, "a"), (1, "b"), (2, "A"), (3, "c"), (4, "a"), (5, "d")]
            .into_iter()
            .map(|(n, c)| trigger(n, &format!("{c}@example.com"), serde_json::json!({})))
            .collect();
        let first = take_rows(&mut rest, 3, row_of);
        assert_eq!(events(&first), ["evt-0", "evt-1", "evt-3"]);
        let second = take_rows(&mut rest, 500, row_of);
        assert_eq!(
            events(&second),
            ["evt-2", "evt-5"],
            "a's second and third are apart"
        );
        let third = take_rows(&mut rest, 500, row_of);
        assert_eq!(events(&third), ["evt-4"]);
        assert!(rest.is_empty());
    }

    #[test]
    fn rows_without_a_key_never_conflict() {
        let mut rest = vec![None, None, Some("x".to_string()), Some("x".to_string())];
        let taken = take_rows(&mut rest, 10, |r| r.clone());
        assert_eq!(taken.len(), 3);
        assert_eq!(rest, [Some("x".to_string())]);
    }

    #[test]
    fn a_contact_s_later_delivery_never_goes_in_an_earlier_group() {
        let s1 = serde_json::json!({"s": 1});
        let s2 = serde_json::json!({"s": 2});
        let work = vec![
            trigger(0, "b@example.com", s2.clone()),
            trigger(1, "a@example.com", s1.clone()),
            trigger(2, "a@example.com", s2.clone()),
            trigger(3, "c@example.com", s2.clone()),
            trigger(4, "d@example.com", s1),
        ];
        let groups = by_bulk_key(work);
        let order: Vec<Vec<&str>> = groups.iter().map(|g| events(&g.rest)).collect();
        assert_eq!(
            order,
            [
                vec!["evt-0"],
                vec!["evt-1", "evt-4"],
                vec!["evt-2", "evt-3"]
            ],
            "a's second (s2) waits for its first (s1); the s2 deliveries after it follow it"
        );
    }

    #[test]
    fn a_finished_delivery_is_never_sent_again() {
        for status in [
            DeliveryStatus::Sent,
            DeliveryStatus::Dead,
            DeliveryStatus::DryRun,
        ] {
            let r = record(status, None);
            assert_eq!(triage(&r, 0, QueueDelays::Full), Triage::Finished);
        }
    }

    #[test]
    fn a_due_delivery_is_sent_even_a_little_early() {
        let r = record(DeliveryStatus::Retrying, Some(10_900));
        assert_eq!(triage(&r, 10_000, QueueDelays::Full), Triage::Send);
        let r = record(DeliveryStatus::Pending, None);
        assert_eq!(triage(&r, 10_000, QueueDelays::Capped), Triage::Send);
    }

    #[test]
    fn an_early_timer_is_held_until_due_whatever_the_queue() {
        let r = record(DeliveryStatus::Scheduled, Some(70_000));
        for delays in [QueueDelays::Full, QueueDelays::Capped] {
            assert_eq!(
                triage(&r, 10_000, delays),
                Triage::Hold(Duration::from_secs(60))
            );
        }
    }

    #[test]
    fn an_early_retry_is_a_copy_where_the_queue_holds_delays_in_full() {
        let r = record(DeliveryStatus::Retrying, Some(70_000));
        assert_eq!(triage(&r, 10_000, QueueDelays::Full), Triage::EarlyCopy);
    }

    #[test]
    fn an_early_retry_is_held_again_where_the_queue_caps_delays() {
        let r = record(DeliveryStatus::Retrying, Some(70_000));
        assert_eq!(
            triage(&r, 10_000, QueueDelays::Capped),
            Triage::Hold(Duration::from_secs(60))
        );
    }
}
