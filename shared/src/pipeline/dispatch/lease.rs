//! Leases: on AWS two containers may be handed the same job at once, so before a call each
//! of its deliveries is leased (`SendLeases`) for the call's timeout and a margin; only the
//! deliveries taken go in the call. One whose lease is held elsewhere is being sent by
//! another worker: its message is hidden again until that lease ends, attempts unchanged.
//! Recording the outcome releases the lease in the same write (the adapter's `save_many`);
//! a call not made after all gives its leases back. `relay serve` holds the state lock and
//! runs without leases.

use super::triage::Chunk;
use super::{DispatchError, Dispatcher, Pass};
use crate::domain::delivery::DeliveryId;
use crate::ports::queue::Message;
use std::collections::HashSet;
use std::time::Duration;

/// How much longer than the call's timeout a lease lasts: the outcome's write after the
/// answer, and clock skew between containers.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// A fresh holder id for one dispatcher (one Lambda container, one process).
pub(super) fn new_holder() -> String {
    use rand::Rng;
    format!("dispatch-{:016x}", rand::thread_rng().gen::<u64>())
}

impl Dispatcher {
    /// How long a lease lasts: one call's timeout and the margin.
    fn lease_length(&self) -> Duration {
        self.ctx.config.delivery.timeout.get() + LEASE_MARGIN
    }

    /// Leases the chunk's deliveries before its call and returns the chunk of those taken;
    /// the others' messages are hidden until the lease ends. Without leases (`relay serve`),
    /// the chunk as it is.
    pub(super) async fn lease(
        &self,
        mut chunk: Chunk,
        pass: &mut Pass,
    ) -> Result<Chunk, DispatchError> {
        let Some(leases) = &self.ctx.leases else {
            return Ok(chunk);
        };
        let ids: Vec<DeliveryId> = chunk.work.iter().map(|w| w.record.id.clone()).collect();
        let now_ms = self.ctx.clock.now_ms();
        let length = self.lease_length();
        let until_ms = now_ms.saturating_add(i64::try_from(length.as_millis()).unwrap_or(i64::MAX));
        let taken: HashSet<DeliveryId> = leases
            .take(&ids, &self.holder, now_ms, until_ms)
            .await?
            .into_iter()
            .collect();
        let (mine, elsewhere): (Vec<_>, Vec<_>) = chunk
            .work
            .into_iter()
            .partition(|w| taken.contains(&w.record.id));
        for w in &elsewhere {
            tracing::info!(delivery = %w.record.id, event = %w.record.event_id, rule = %w.record.rule, target = %super::report::target_label(&w.record), "another worker holds this delivery's send lease; it waits until the lease ends");
        }
        let held: Vec<(Message, Duration)> =
            elsewhere.into_iter().map(|w| (w.message, length)).collect();
        self.hold_messages(held, pass);
        chunk.work = mine;
        Ok(chunk)
    }

    /// Gives back the leases of a call that was not made after all. A failure is logged: the
    /// leases end by themselves.
    pub(super) async fn release(&self, ids: &[DeliveryId]) {
        let Some(leases) = &self.ctx.leases else {
            return;
        };
        if ids.is_empty() {
            return;
        }
        if let Err(e) = leases.release(ids, &self.holder).await {
            tracing::warn!(error = %e, "could not release send leases; they end by themselves");
        }
    }
}
