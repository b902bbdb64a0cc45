//! Send leases end to end on the emulator (issue 13): SQS may hand the same dispatch job to
//! two containers at once, and only one of them calls SmartEmailing; a container that dies
//! holding a lease delays its deliveries by at most the lease.
#![cfg(feature = "emulator-tests")]

mod support;

#[path = "../../../tests/support/fake_smartemailing.rs"]
mod fake_smartemailing;

use fake_smartemailing::FakeSmartEmailing;
use relay_lambda::dispatch::DispatchHandler;
use relay_lambda::Context;
use relay_shared::adapters::reqwest::ReqwestTransport;
use relay_shared::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus};
use relay_shared::ports::clock::{Clock, SystemClock};
use relay_shared::ports::queue::{DispatchJob, QueueName};
use relay_shared::ports::{DeliveryStore, Queue, SendLeases};
use relay_shared::rules::config::Config;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{count_by_name, secret_json, sqs_event, trigger_delivery, Emulator};

const SE_USER: &str = "shop@example.com";
const SE_KEY: &str = "se-key-leases";
const ARN: &str = "arn:aws:sqs:eu-central-1:123456789012:relay-dispatch";
/// The rules' `delivery.timeout`: a lease lasts about this plus a margin.
const TIMEOUT: Duration = Duration::from_secs(2);

fn config(base_url: &str) -> Config {
    let text = format!(
        "smartemailing:\n  base_url: {base_url}\ndelivery:\n  timeout: {}s\n  retry_schedule: [1s, 1s]\n  batch_window: 10ms\nrules: []\n",
        TIMEOUT.as_secs()
    );
    Config::parse(&text, "lease rules").expect("the rules parse")
}

/// A pending trigger-event delivery whose item names it.
fn delivery(id: &str, now_ms: i64) -> DeliveryRecord {
    trigger_delivery(id, "welcome", DeliveryStatus::Pending, now_ms)
}

/// Stores the deliveries and queues one dispatch job each.
async fn queue_deliveries(ctx: &Context, records: &[DeliveryRecord]) {
    ctx.ports.store.insert_new(records).await.expect("stored");
    let jobs: Vec<String> = records
        .iter()
        .map(|d| {
            serde_json::to_string(&DispatchJob {
                delivery: d.id.clone(),
            })
            .expect("a job")
        })
        .collect();
    ctx.ports
        .queue
        .send(QueueName::Dispatch, jobs, Duration::ZERO)
        .await
        .expect("queued");
}

/// How many times SmartEmailing was asked to trigger each delivery.
fn calls_by_name(fake: &FakeSmartEmailing) -> HashMap<String, usize> {
    count_by_name(fake.triggered_events())
}

/// One function container: its own clients on the same table and queues.
fn container(emu: &Emulator, fake: &FakeSmartEmailing) -> (Context, DispatchHandler) {
    let ctx = emu.context(config(&fake.base_url()), Arc::new(SystemClock));
    let transport = Arc::new(ReqwestTransport::new().expect("a transport"));
    let handler = DispatchHandler::new(&ctx, transport, Some(7));
    (ctx, handler)
}

#[tokio::test]
async fn two_dispatch_handlers_given_the_same_batch_at_once_make_one_call_per_delivery() {
    let fake = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let emu = Emulator::start(&secret_json(Some((SE_USER, SE_KEY)))).await;
    let (ctx, first) = container(&emu, &fake);
    let (_, second) = container(&emu, &fake);
    let now_ms = SystemClock.now_ms();
    let records: Vec<DeliveryRecord> = (0..10)
        .map(|i| delivery(&format!("dlv_twice_{i}"), now_ms))
        .collect();
    queue_deliveries(&ctx, &records).await;
    let dispatch_q = emu.settings.dispatch_queue_url.clone();
    let batch = emu
        .receive_within(&dispatch_q, Duration::from_secs(10))
        .await;
    assert_eq!(batch.len(), records.len());

    // SQS at-least-once: both containers are handed the very same messages.
    let event = sqs_event(&batch, ARN);
    let (a, b) = tokio::join!(first.handle(event.clone()), second.handle(event));
    emu.settle(&dispatch_q, &batch, &a).await;
    emu.settle(&dispatch_q, &batch, &b).await;

    let calls = calls_by_name(&fake);
    for d in &records {
        assert_eq!(calls.get(d.id.as_str()), Some(&1), "{}: {calls:?}", d.id);
    }
    let ids: Vec<DeliveryId> = records.iter().map(|d| d.id.clone()).collect();
    let stored = ctx.ports.store.get_many(&ids).await.expect("read back");
    assert!(
        stored.iter().all(|d| d.status == DeliveryStatus::Sent),
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_handler_that_dies_holding_the_lease_delays_the_delivery_by_at_most_the_lease() {
    let fake = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let emu = Emulator::start(&secret_json(Some((SE_USER, SE_KEY)))).await;
    let (ctx, survivor) = container(&emu, &fake);
    let now_ms = SystemClock.now_ms();
    let record = delivery("dlv_orphan", now_ms);
    queue_deliveries(&ctx, std::slice::from_ref(&record)).await;

    // A container took the lease, as a dispatcher does before its call, and died there.
    let lease = TIMEOUT + Duration::from_secs(3);
    let started = Instant::now();
    let taken = ctx
        .ports
        .store
        .take(
            std::slice::from_ref(&record.id),
            "a-container-that-died",
            now_ms,
            now_ms + lease.as_millis() as i64,
        )
        .await
        .expect("the lease");
    assert_eq!(taken, vec![record.id.clone()]);

    // The job comes back to the survivor until the lease has run out; then it is sent once.
    let dispatch_q = emu.settings.dispatch_queue_url.clone();
    // The survivor hides a job it may not send for at most a batch's visibility
    // (`Dispatcher::visibility` for these rules).
    let hold_at_most = TIMEOUT * 4 + Duration::from_secs(30);
    let patience = lease + hold_at_most + Duration::from_secs(5);
    let mut sent_after = None;
    while started.elapsed() < patience && sent_after.is_none() {
        let batch = emu
            .receive_within(&dispatch_q, Duration::from_secs(2))
            .await;
        if batch.is_empty() {
            continue;
        }
        let response = survivor.handle(sqs_event(&batch, ARN)).await;
        emu.settle(&dispatch_q, &batch, &response).await;
        if calls_by_name(&fake).contains_key(record.id.as_str()) {
            sent_after = Some(started.elapsed());
        } else {
            assert!(
                started.elapsed() < lease,
                "nothing sent while the lease lasts, and nothing held after it ran out"
            );
        }
    }
    let sent_after = sent_after.expect("the delivery is sent once the lease runs out");
    assert!(
        sent_after >= lease,
        "sent after {sent_after:?}, inside the lease"
    );
    assert!(
        sent_after <= lease + hold_at_most,
        "held {sent_after:?}, longer than the lease ({lease:?}) and one hold allow"
    );
    assert_eq!(calls_by_name(&fake).get(record.id.as_str()), Some(&1));
    let stored = ctx
        .ports
        .store
        .get_many(std::slice::from_ref(&record.id))
        .await
        .expect("read back");
    assert_eq!(stored[0].status, DeliveryStatus::Sent);
    assert!(
        emu.receive_within(&dispatch_q, Duration::from_secs(1))
            .await
            .is_empty(),
        "its job is gone"
    );
}
