//! Send leases: on AWS several dispatch containers may be handed the same job at once (SQS
//! is at-least-once), so before a call each delivery in it is leased with one conditional
//! write, and only the holder sends it. Locally one process holds the state (`relay.lock`),
//! so `relay serve` needs none.

use crate::domain::delivery::DeliveryId;
use async_trait::async_trait;

use super::StoreError;

/// Leases on deliveries, held for the length of one call.
#[async_trait]
pub trait SendLeases: Send + Sync {
    /// Takes, for `holder` until `until_ms`, the lease of each delivery that is not `sent`
    /// and holds no live lease of another holder at `now_ms`; returns the ids taken (a
    /// subset of `ids`, in their order). Ids whose lease is held elsewhere are left out: they
    /// are not to be sent now.
    async fn take(
        &self,
        ids: &[DeliveryId],
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<DeliveryId>, StoreError>;

    /// Gives back leases `holder` took and did not release by recording an outcome (a call
    /// that was not made after all). Recording an outcome (`DeliveryStore::save_many`)
    /// releases the lease in the same write.
    async fn release(&self, ids: &[DeliveryId], holder: &str) -> Result<(), StoreError>;
}
