//! Outcomes the store refused to record (a full disk, a throttled table). A call was made
//! and answered; if its outcome were dropped, the delivery would still read as unsent and the
//! next pass would send it again. So the outcome is kept, and written again before the next
//! pass does anything else: while the store refuses, no call is made at all.

use super::{DispatchError, Dispatcher};
use crate::domain::delivery::{DeliveryId, DeliveryRecord};
use std::collections::HashMap;
use std::sync::Mutex;

/// The outcomes waiting to be written, by delivery (a later one replaces an earlier one).
#[derive(Default)]
pub(super) struct Unrecorded(Mutex<HashMap<DeliveryId, DeliveryRecord>>);

impl Unrecorded {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, DeliveryRecord>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&self, records: &[DeliveryRecord]) {
        let mut kept = self.lock();
        for r in records {
            kept.insert(r.id.clone(), r.clone());
        }
    }

    fn snapshot(&self) -> Vec<DeliveryRecord> {
        self.lock().values().cloned().collect()
    }

    /// Forgets the records written, unless a newer outcome replaced one meanwhile.
    fn written(&self, records: &[DeliveryRecord]) {
        let mut kept = self.lock();
        for r in records {
            if kept.get(&r.id) == Some(r) {
                kept.remove(&r.id);
            }
        }
    }
}

impl Dispatcher {
    /// Records outcomes; if the store refuses, they are kept to be written first next time.
    pub(super) async fn record_outcomes(
        &self,
        records: &[DeliveryRecord],
    ) -> Result<(), DispatchError> {
        if let Err(e) = self.ctx.deliveries.save_many(records).await {
            tracing::warn!(error = %e, deliveries = records.len(),
                "cannot record outcomes; they are kept and written before any other call");
            self.unrecorded.keep(records);
            return Err(e.into());
        }
        Ok(())
    }

    /// Writes the outcomes kept from an earlier pass; an error means the store still
    /// refuses, and the pass must make no call.
    pub(super) async fn flush_unrecorded(&self) -> Result<(), DispatchError> {
        let kept = self.unrecorded.snapshot();
        if kept.is_empty() {
            return Ok(());
        }
        self.ctx.deliveries.save_many(&kept).await?;
        self.unrecorded.written(&kept);
        tracing::info!(
            deliveries = kept.len(),
            "outcomes kept while the store refused writes are recorded"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::DispatchContext;
    use super::*;
    use crate::adapters::env_credentials::StaticCredentials;
    use crate::adapters::memory::{MemoryStore, Part};
    use crate::domain::delivery::fixtures::pending;
    use crate::domain::delivery::{DeliveryStatus, Prepared};
    use crate::domain::secret::{SeCredentials, Secret, SecretBundle};
    use crate::domain::smartemailing::Endpoint;
    use crate::ports::clock::ManualClock;
    use crate::ports::queue::{send_jobs, DispatchJob, QueueName};
    use crate::ports::{
        DeliveryStore, HttpRequest, HttpResponse, Queue, Transport, TransportError,
    };
    use crate::rules::config::Config;
    use async_trait::async_trait;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// SmartEmailing accepting every call; the disk fills up as it answers.
    struct FillsTheDisk {
        store: Arc<MemoryStore>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Transport for FillsTheDisk {
        async fn send(&self, _r: HttpRequest) -> Result<HttpResponse, TransportError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.store.set_down(Part::StoreWrites, true);
            Ok(HttpResponse {
                status: 201,
                headers: vec![],
                body: br#"{"status":"created","meta":[]}"#.to_vec(),
                cut: None,
            })
        }
    }

    #[tokio::test]
    async fn an_outcome_the_store_refused_is_written_before_any_new_call_and_nothing_is_sent_twice()
    {
        let clock = Arc::new(ManualClock::at_ms(1_795_000_000_000));
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let se = Arc::new(FillsTheDisk {
            store: store.clone(),
            calls: AtomicUsize::new(0),
        });
        let yaml = "smartemailing:\n  base_url: http://se.test\nrules: []\n";
        let credentials = SecretBundle {
            smartemailing: Some(SeCredentials {
                username: "u".into(),
                api_key: Secret::new("k"),
            }),
            ..SecretBundle::default()
        };
        let dispatcher = Dispatcher::from_context(
            DispatchContext {
                config: Arc::new(Config::parse(yaml, "test").unwrap()),
                events: store.clone(),
                deliveries: store.clone(),
                queue: store.clone(),
                credentials: Arc::new(StaticCredentials::new(credentials)),
                transport: se.clone(),
                clock: clock.clone(),
                leases: None,
            },
            Some(1),
        );
        let records: Vec<DeliveryRecord> = (0..3)
            .map(|n| {
                let mut r = pending(&format!("evt-{n}"));
                r.request = Some(Prepared::SmartEmailing {
                    endpoint: Endpoint::TriggerEvent,
                    group: json!({}),
                    item: json!({"emailaddress": format!("c{n}@example.com"), "name": "welcome"}),
                });
                r
            })
            .collect();
        store.insert_new(&records).await.unwrap();
        let jobs: Vec<DispatchJob> = records
            .iter()
            .map(|r| DispatchJob {
                delivery: r.id.clone(),
            })
            .collect();
        send_jobs(store.as_ref(), &jobs, Duration::ZERO)
            .await
            .unwrap();
        let received = store
            .receive(QueueName::Dispatch, 10, Duration::from_secs(60))
            .await
            .unwrap();

        // The bulk call is made and accepted; recording it fails.
        assert!(dispatcher.handle(received.clone()).await.is_err());
        assert_eq!(se.calls.load(Ordering::SeqCst), 1);
        // The same messages again, while writes still fail: no new call.
        for _ in 0..3 {
            clock.advance(Duration::from_secs(1));
            assert!(dispatcher.handle(received.clone()).await.is_err());
        }
        assert_eq!(
            se.calls.load(Ordering::SeqCst),
            1,
            "no call while nothing can be recorded"
        );
        // Writes work again: the kept outcomes are written first, and the redelivered
        // messages find their deliveries sent.
        store.set_down(Part::StoreWrites, false);
        dispatcher.handle(received).await.unwrap();
        assert_eq!(se.calls.load(Ordering::SeqCst), 1, "sent exactly once");
        let ids: Vec<DeliveryId> = records.iter().map(|r| r.id.clone()).collect();
        let stored = store.get_many(&ids).await.unwrap();
        assert!(
            stored.iter().all(|r| r.status == DeliveryStatus::Sent),
            "{stored:?}"
        );
    }
}
