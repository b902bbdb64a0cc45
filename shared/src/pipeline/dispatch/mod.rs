//! Sending deliveries, in phases as Svix's worker does: `triage` (which messages to send,
//! drop or hold), `send` (the calls, with split-and-retry of bulk calls), `settle` (each
//! delivery records its outcome), `chain` (the `then` steps of finished rules) and the ack.
//! A pass is `Dispatcher::handle`: those phases in order. `age` gives up what waited longer
//! than `delivery.max_age`; `lease` takes each call's send leases where several workers may
//! hold the same job (AWS).

mod age;
mod chain;
mod lease;
mod report;
mod send;
mod settle;
mod triage;
mod unrecorded;

#[cfg(all(test, feature = "local"))]
mod tests;

/// Kept here so `relay replay` and the tests find it where they always did.
pub use crate::pipeline::replay::replay;
pub use send::target_of;
pub use triage::QueueDelays;

use crate::domain::delivery::{DeliveryId, DeliveryRecord, Outcome};
use crate::policy::breaker::{Breakers, Pacer};
use crate::policy::retry::RetryPolicy;
use crate::ports::clock::Clock;
use crate::ports::queue::{Message, QueueName};
use crate::ports::{
    Credentials, DeliveryStore, EventStore, Queue, QueueError, SecretError, SendLeases, StoreError,
    Transport,
};
use crate::rules::config::Config;
use crate::telemetry::Telemetry;
use chain::ChainFrom;
use rand::{rngs::StdRng, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a dispatch pass stopped; its messages stay in the queue and are seen again.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue refused the chain steps (the only queue write a pass cannot do without).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The SmartEmailing credentials could not be read.
    #[error(transparent)]
    Secrets(#[from] SecretError),
    /// A job could not be encoded.
    #[error("cannot encode a job: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Counts of what a dispatch pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DispatchReport {
    /// Deliveries accepted by their target.
    pub sent: usize,
    /// Deliveries recorded as dry-run.
    pub dry_run: usize,
    /// Deliveries scheduled for another attempt.
    pub retrying: usize,
    /// Deliveries given up.
    pub dead: usize,
    /// Calls made to targets.
    pub calls: usize,
    /// Messages dropped as duplicates of finished or scheduled deliveries.
    pub duplicates: usize,
    /// Handles of the messages scheduled for a retry (a Lambda reports them as batch failures).
    pub retried_handles: Vec<String>,
    /// Deliveries that became dead in this pass.
    pub dead_ids: Vec<DeliveryId>,
    /// Deliveries held back, without spending an attempt, because their target's circuit is
    /// open or they are not due yet.
    pub waiting: usize,
}

/// What a dispatch pass works with: the config and the ports.
#[derive(Clone)]
pub struct DispatchContext {
    /// The config (rules, delivery settings, SmartEmailing's base URL, the outbound policy).
    pub config: Arc<Config>,
    /// The events, read when a chain step is rendered.
    pub events: Arc<dyn EventStore>,
    /// The deliveries.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// The render and dispatch queues.
    pub queue: Arc<dyn Queue>,
    /// SmartEmailing's credentials and the webhook secrets.
    pub credentials: Arc<dyn Credentials>,
    /// Outgoing HTTP.
    pub transport: Arc<dyn Transport>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Send leases, where several workers may be handed the same job (AWS); `None` for
    /// `relay serve`, which holds the state lock.
    pub leases: Option<Arc<dyn SendLeases>>,
}

/// The dispatch step.
pub struct Dispatcher {
    ctx: DispatchContext,
    retry: RetryPolicy,
    rng: Mutex<StdRng>,
    breakers: Breakers,
    pacer: Pacer,
    delays: QueueDelays,
    /// Who this dispatcher is when it takes send leases.
    holder: String,
    /// Outcomes of calls made that the store refused to record (see `unrecorded`).
    unrecorded: unrecorded::Unrecorded,
    /// Where calls, circuits and statuses are reported (see `report`).
    telemetry: Arc<Telemetry>,
    /// Whether the caller deletes the handled messages (`with_acks_by_caller`).
    caller_acks: bool,
}

/// A message and the delivery it names.
struct Work {
    message: Message,
    record: DeliveryRecord,
}

/// What a pass has done so far: the report, the messages to delete, the chains to start.
#[derive(Default)]
struct Pass {
    report: DispatchReport,
    to_ack: Vec<String>,
    chains: Vec<ChainFrom>,
    /// Messages to put back for their delays, all in one requeue at the end of the pass.
    held: Vec<(Message, Duration)>,
    /// Where the pass's time went, for its debug line.
    times: PassTimes,
}

/// Where a dispatch pass's wall time went: reading its deliveries (triage), waiting for the
/// targets' answers, recording the outcomes, and the tail (holds, chain steps, the ack). In
/// the `dispatch pass` debug line, so an operator (or a benchmark) sees what sets the pace.
#[derive(Debug, Default, Clone, Copy)]
struct PassTimes {
    triage: Duration,
    calls: Duration,
    records: Duration,
    tail: Duration,
}

impl Pass {
    /// The message is handled: delete it at the end of the pass.
    fn done(&mut self, message: Message) {
        self.to_ack.push(message.handle);
    }

    /// The delivery was given up without a call (it waited longer than `delivery.max_age`).
    fn gave_up(&mut self, record: &DeliveryRecord) {
        self.report.dead += 1;
        self.report.dead_ids.push(record.id.clone());
        let reason = record.last_error.as_deref().unwrap_or_default();
        tracing::warn!(delivery = %record.id, event = %record.event_id, rule = %record.rule, target = %report::target_label(record), reason = %reason, "dead: waited longer than delivery.max_age");
    }
}

impl Dispatcher {
    /// Wires the step.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        events: Arc<dyn EventStore>,
        deliveries: Arc<dyn DeliveryStore>,
        queue: Arc<dyn Queue>,
        credentials: Arc<dyn Credentials>,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        seed: Option<u64>,
    ) -> Self {
        let ctx = DispatchContext {
            config,
            events,
            deliveries,
            queue,
            credentials,
            transport,
            clock,
            leases: None,
        };
        Self::from_context(ctx, seed)
    }

    /// The step over `ctx`; `seed` fixes the jitter (tests), `None` draws it at random.
    pub fn from_context(ctx: DispatchContext, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let delivery = &ctx.config.delivery;
        let breakers = Breakers::new(
            delivery.breaker.open_after,
            delivery.breaker.probe_after.get(),
        );
        let pacer = Pacer::new(delivery.max_requests_per_second);
        let retry = RetryPolicy::new(
            delivery.retry_schedule.iter().map(|d| d.get()).collect(),
            delivery.min_overload_delay.get(),
        );
        Self {
            ctx,
            retry,
            rng: Mutex::new(rng),
            breakers,
            pacer,
            delays: QueueDelays::Full,
            holder: lease::new_holder(),
            unrecorded: unrecorded::Unrecorded::default(),
            telemetry: Arc::new(Telemetry::new()),
            caller_acks: false,
        }
    }

    /// Leaves deleting the handled messages to the caller. Lambda's event source mapping
    /// deletes every message a handler does not report as failed, so an ack of the pass's
    /// own would be a second, billed DeleteMessageBatch for the same messages (issue 16).
    pub fn with_acks_by_caller(mut self) -> Self {
        self.caller_acks = true;
        self
    }

    /// Reports calls, circuits and statuses to `telemetry` (the process's one recorder).
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Takes a send lease on each delivery before its call (see `lease`): for workers that
    /// may be handed the same job at once.
    pub fn with_leases(mut self, leases: Arc<dyn SendLeases>) -> Self {
        self.ctx.leases = Some(leases);
        self
    }

    /// Says how long the dispatch queue can hide a message, which decides what a retry's
    /// message read before it is due is (see `QueueDelays`). `Full` unless told.
    pub fn with_queue_delays(mut self, delays: QueueDelays) -> Self {
        self.delays = delays;
        self
    }

    /// How long a received batch stays hidden from other workers: long enough for every
    /// call of the batch, split halves included.
    pub fn visibility(&self) -> Duration {
        self.ctx.config.delivery.timeout.get() * 4 + Duration::from_secs(30)
    }

    /// Handles one batch of dispatch messages.
    pub async fn handle(&self, messages: Vec<Message>) -> Result<DispatchReport, DispatchError> {
        // An outcome that could not be recorded is written before anything else: until it
        // is, no call is made (it would be made with nowhere to record it, and a delivery
        // whose outcome is unrecorded would look unsent).
        self.flush_unrecorded().await?;
        let mut pass = Pass::default();
        let started = Instant::now();
        let work = self.triage(messages, &mut pass).await?;
        pass.times.triage = started.elapsed();
        if self.ctx.credentials.smartemailing().await?.is_none() {
            self.settle_dry_run(work, &mut pass).await?;
        } else {
            for group in triage::by_bulk_key(work) {
                self.dispatch_group(group, &mut pass).await?;
            }
        }
        let tail = Instant::now();
        self.requeue(&pass.held, "hold deliveries back").await;
        self.enqueue_chains(&pass.chains).await?;
        self.ack(&pass.to_ack).await;
        pass.times.tail = tail.elapsed();
        let t = pass.times;
        tracing::debug!(
            sent = pass.report.sent,
            calls = pass.report.calls,
            total_us = started.elapsed().as_micros() as u64,
            triage_us = t.triage.as_micros() as u64,
            calls_us = t.calls.as_micros() as u64,
            records_us = t.records.as_micros() as u64,
            tail_us = t.tail.as_micros() as u64,
            "dispatch pass"
        );
        Ok(pass.report)
    }

    /// Sends a group of deliveries that may share calls, one call at a time as the target's
    /// breaker allows, recording each call's outcomes right after its answer. A failed probe
    /// records no attempt: its delivery goes back to the waiting ones.
    async fn dispatch_group(
        &self,
        mut group: triage::Group,
        pass: &mut Pass,
    ) -> Result<(), DispatchError> {
        while let Some(chunk) = self.next_chunk(&mut group, pass).await? {
            let mut chunk = self.lease(chunk, pass).await?;
            if chunk.work.is_empty() {
                continue;
            }
            let ids: Vec<DeliveryId> = chunk.work.iter().map(|w| w.record.id.clone()).collect();
            let records: Vec<&DeliveryRecord> = chunk.work.iter().map(|w| &w.record).collect();
            let calls_before = pass.report.calls;
            let call = Instant::now();
            let tried = self.send(&records, &mut pass.report).await;
            pass.times.calls += call.elapsed();
            let record = Instant::now();
            let failed = tried
                .iter()
                .all(|t| matches!(t.outcome, Outcome::Retry { .. }));
            let recorded = if chunk.probe && failed {
                let outcomes = settle::log_failed_probe(&mut chunk.work, tried);
                self.probe_failed(&group, chunk.work, &outcomes, pass).await
            } else {
                self.settle(chunk.work, tried, pass).await
            };
            pass.times.records += record.elapsed();
            if let Err(e) = recorded {
                // Recording releases the leases; when it failed, only a call not made may
                // give them back: after a call, another worker must not send again.
                if pass.report.calls == calls_before {
                    self.release(&ids).await;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Deletes the messages the pass handled. A failure is harmless: they are seen again and
    /// dropped as duplicates.
    async fn ack(&self, handles: &[String]) {
        if handles.is_empty() || self.caller_acks {
            return;
        }
        if let Err(e) = self.ctx.queue.ack(QueueName::Dispatch, handles).await {
            tracing::warn!(error = %e, "could not delete handled messages; they will be seen again and dropped");
        }
    }

    /// Puts messages back in the dispatch queue for their delays. A failure is logged, not
    /// returned: the queue shows them again after the pass's visibility timeout anyway.
    async fn requeue(&self, items: &[(Message, Duration)], what: &str) {
        if items.is_empty() {
            return;
        }
        if let Err(e) = self
            .ctx
            .queue
            .requeue_many(QueueName::Dispatch, items)
            .await
        {
            tracing::error!(error = %e, "could not {what}; the queue will redeliver them");
        }
    }

    /// A number in `range` from the pass's generator (seeded in tests).
    fn draw<T, R>(&self, range: R, otherwise: T) -> T
    where
        T: rand::distributions::uniform::SampleUniform,
        R: rand::distributions::uniform::SampleRange<T>,
    {
        use rand::Rng;
        self.rng
            .lock()
            .map(|mut r| r.gen_range(range))
            .unwrap_or(otherwise)
    }
}
