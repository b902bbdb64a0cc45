//! Settle: each delivery of a call records its outcome (`DeliveryRecord::record`), with the
//! retry policy saying when a retry is due; the records are written in one go, right after
//! the answer, and the messages are requeued (retries) or marked for deletion.

use super::chain::ChainFrom;
use super::report::target_label;
use super::send::Tried;
use super::{DispatchError, DispatchReport, Dispatcher, Pass, Work};
use crate::domain::delivery::{AttemptClass, DeliveryRecord, DeliveryStatus, Outcome};
use crate::ports::queue::Message;
use std::time::Duration;

/// Counts a settled delivery in the report and logs what became of it.
fn tally(
    report: &mut DispatchReport,
    record: &DeliveryRecord,
    outcome: &Outcome,
    retry_in: Option<Duration>,
) {
    let (reason, exhausted) = match outcome {
        Outcome::Success { .. } => ("", false),
        Outcome::Retry { reason, .. } => (reason.as_str(), true),
        Outcome::Permanent { reason, .. } => (reason.as_str(), false),
    };
    match (record.status, retry_in) {
        (DeliveryStatus::Sent, _) => {
            report.sent += 1;
            tracing::info!(delivery = %record.id, event = %record.event_id, rule = %record.rule, target = %target_label(record), attempts = record.attempts, "sent");
        }
        (DeliveryStatus::Retrying, Some(delay)) => {
            report.retrying += 1;
            tracing::info!(delivery = %record.id, event = %record.event_id, rule = %record.rule, target = %target_label(record), attempts = record.attempts, delay_ms = delay.as_millis() as u64, reason = %reason, "retrying");
        }
        _ => {
            report.dead += 1;
            report.dead_ids.push(record.id.clone());
            if exhausted {
                tracing::warn!(delivery = %record.id, event = %record.event_id, rule = %record.rule, target = %target_label(record), reason = %reason, "dead: retries exhausted");
            } else {
                tracing::warn!(delivery = %record.id, event = %record.event_id, rule = %record.rule, target = %target_label(record), reason = %reason, "dead: permanent failure");
            }
        }
    }
}

/// How an outcome is classified in the attempt log. A retry stays a retry even when the
/// schedule is spent: the answer said "try again", the policy said "no more".
fn class_of(outcome: &Outcome) -> AttemptClass {
    match outcome {
        Outcome::Success { .. } => AttemptClass::Success,
        Outcome::Retry { .. } => AttemptClass::Retry,
        Outcome::Permanent { .. } => AttemptClass::Permanent,
    }
}

/// A failed probe's deliveries log the call as a failed probe (it spends no attempt, but the
/// operator sees it was made); gives back their outcomes, for `probe_failed`.
pub(super) fn log_failed_probe(work: &mut [Work], tried: Vec<Tried>) -> Vec<Outcome> {
    work.iter_mut()
        .zip(tried)
        .map(|(w, t)| {
            w.record.push_attempt(t.attempt(AttemptClass::FailedProbe));
            t.outcome
        })
        .collect()
}

impl Dispatcher {
    /// When a delivery that just failed `outcome` is tried again; `None` when it is not
    /// (sent, dead, or its retries spent).
    fn retry_in(&self, record: &DeliveryRecord, outcome: &Outcome) -> Option<Duration> {
        let Outcome::Retry {
            retry_after,
            overload,
            ..
        } = outcome
        else {
            return None;
        };
        self.retry
            .next_delay(record.attempts + 1, *retry_after, *overload, || {
                self.draw(-0.2..=0.2, 0.0)
            })
    }

    /// The settle phase for one call: records every outcome in one write, right after the
    /// answer (this is the whole window in which a crash could cause a duplicate), then
    /// requeues the retries.
    pub(super) async fn settle(
        &self,
        chunk: Vec<Work>,
        tried: Vec<Tried>,
        pass: &mut Pass,
    ) -> Result<(), DispatchError> {
        let now = self.ctx.clock.now();
        let mut settled: Vec<(Work, Option<Duration>)> = Vec::with_capacity(chunk.len());
        for (mut w, t) in chunk.into_iter().zip(tried) {
            let outcome = &t.outcome;
            let mut retry_in = self.retry_in(&w.record, outcome);
            w.record.record(outcome, now, retry_in);
            w.record.push_attempt(t.attempt(class_of(outcome)));
            if w.record.status == DeliveryStatus::Retrying {
                if let Some(reason) = self.overdue(&w.record, now.timestamp_millis()) {
                    w.record.give_up(reason);
                    retry_in = None;
                }
            }
            tally(&mut pass.report, &w.record, outcome, retry_in);
            self.report_status(&w.record);
            settled.push((w, retry_in));
        }
        let records: Vec<DeliveryRecord> = settled.iter().map(|(w, _)| w.record.clone()).collect();
        self.record_outcomes(&records).await?;
        let retries: Vec<(Message, Duration)> = settled
            .iter()
            .filter_map(|(w, r)| r.map(|d| (w.message.clone(), d)))
            .collect();
        self.requeue(&retries, "schedule retries").await;
        for (w, retry_in) in settled {
            if retry_in.is_some() {
                pass.report.retried_handles.push(w.message.handle);
                continue;
            }
            if w.record.status.is_success() {
                pass.chains.push(ChainFrom::of(&w.record));
            }
            pass.done(w.message);
        }
        Ok(())
    }

    /// Settles the whole batch as dry-run: with no SmartEmailing credentials nothing is sent,
    /// and chains go on as if it had been.
    pub(super) async fn settle_dry_run(
        &self,
        work: Vec<Work>,
        pass: &mut Pass,
    ) -> Result<(), DispatchError> {
        let records: Vec<DeliveryRecord> = work
            .iter()
            .map(|w| {
                let mut r = w.record.clone();
                r.record_dry_run();
                self.report_status(&r);
                r
            })
            .collect();
        self.record_outcomes(&records).await?;
        for w in work {
            pass.report.dry_run += 1;
            pass.chains.push(ChainFrom::of(&w.record));
            pass.done(w.message);
        }
        Ok(())
    }
}
