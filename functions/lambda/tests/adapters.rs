//! The DynamoDB, SQS and Secrets Manager adapters against the emulator.
#![cfg(feature = "emulator-tests")]

mod support;

use relay_shared::adapters::aws::sqs::REFRESH_AFTER_RECEIVES;
use relay_shared::adapters::aws::{AwsAdapters, DeadLetter};
use relay_shared::adapters::memory::MemoryStore;
use relay_shared::domain::delivery::{
    Attempt, AttemptClass, DeliveryId, DeliveryRecord, DeliveryStatus, Prepared,
};
use relay_shared::domain::event::EventId;
use relay_shared::domain::idempotency::{Begin, EventRecord, RecordStatus};
use relay_shared::ports::clock::ManualClock;
use relay_shared::ports::queue::{Message, QueueName};
use relay_shared::ports::store::DeliveryCursor;
use relay_shared::ports::{Credentials, DeliveryFilter, DeliveryStore, EventStore, Queue};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::{secret_json, Emulator};

const NOW_MS: i64 = 1_795_687_200_000;

fn record(id: &str, hash: &str, now_ms: i64) -> EventRecord {
    EventRecord {
        id: EventId::from_stored(id),
        kind: "contact.created".into(),
        payload_hash: hash.into(),
        event: json!({"id": id, "type": "contact.created"}),
        received_at: now_ms,
        status: RecordStatus::InProgress,
        in_progress_until: now_ms + 30_000,
        expires_at: now_ms / 1000 + 7 * 24 * 3600,
    }
}

fn delivery(id: &str, event: &str, rule: &str, index: usize, created_at: i64) -> DeliveryRecord {
    DeliveryRecord {
        id: DeliveryId::from_stored(id),
        event_id: EventId::from_stored(event),
        rule: rule.into(),
        action: "trigger_event".into(),
        action_index: index,
        status: DeliveryStatus::Pending,
        attempts: 0,
        last_error: None,
        last_response: None,
        sent_at: None,
        next_attempt_at: None,
        request: Some(Prepared::Http {
            method: "POST".into(),
            url: "https://example.com/hook".into(),
            headers: vec![],
            body: Some("{}".into()),
            auth: None,
        }),
        created_at,
        chain_depth: 0,
        email: None,
        event_type: None,
        attempt_log: Vec::new(),
    }
}

async fn adapters(secret: &str) -> (Emulator, AwsAdapters, Arc<ManualClock>) {
    let emu = Emulator::start(secret).await;
    let clock = Arc::new(ManualClock::at_ms(NOW_MS));
    let adapters = AwsAdapters::new(&emu.sdk, &emu.settings, clock.clone());
    (emu, adapters, clock)
}

#[tokio::test]
async fn an_event_id_is_claimed_once_with_powertools_semantics() {
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let store = &aws.store;
    let first = record("evt-1", "hash-a", NOW_MS);
    assert_eq!(store.begin(&first, NOW_MS).await.unwrap(), Begin::Started);

    // Held IN_PROGRESS: the holder's record comes back from the one conditional write.
    match store.begin(&first, NOW_MS + 1000).await.unwrap() {
        Begin::Existing(held) => {
            assert_eq!(held.status, RecordStatus::InProgress);
            assert_eq!(held, first);
        }
        other => panic!("expected the holder, got {other:?}"),
    }

    // COMPLETED: a duplicate, whatever the time within retention.
    store.complete(&first.id).await.unwrap();
    let later = NOW_MS + 3_600_000;
    match store
        .begin(&record("evt-1", "hash-a", later), later)
        .await
        .unwrap()
    {
        Begin::Existing(held) => assert_eq!(held.status, RecordStatus::Completed),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // The same id with another body is shown the first body's hash.
    match store
        .begin(&record("evt-1", "hash-b", later), later)
        .await
        .unwrap()
    {
        Begin::Existing(held) => assert_eq!(held.payload_hash, "hash-a"),
        other => panic!("expected the first record, got {other:?}"),
    }
    // After the record expired (DynamoDB's TTL may not have deleted it yet) it is free.
    let expired = (first.expires_at + 1) * 1000;
    assert_eq!(
        store
            .begin(&record("evt-1", "hash-b", expired), expired)
            .await
            .unwrap(),
        Begin::Started
    );
}

#[tokio::test]
async fn a_claim_whose_holder_ran_out_of_time_is_taken_over_and_release_frees_it() {
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let store = &aws.store;
    let r = record("evt-2", "h", NOW_MS);
    assert_eq!(store.begin(&r, NOW_MS).await.unwrap(), Begin::Started);
    let after_lease = r.in_progress_until + 1;
    assert_eq!(
        store
            .begin(&record("evt-2", "h", after_lease), after_lease)
            .await
            .unwrap(),
        Begin::Started
    );

    store.release(&r.id).await.unwrap();
    assert_eq!(store.get("evt-2").await.unwrap(), None);
    assert_eq!(store.begin(&r, NOW_MS).await.unwrap(), Begin::Started);

    // A completed record is not released.
    store.complete(&r.id).await.unwrap();
    store.release(&r.id).await.unwrap();
    assert_eq!(
        store.get("evt-2").await.unwrap().map(|r| r.status),
        Some(RecordStatus::Completed)
    );
}

#[tokio::test]
async fn insert_new_stored_returns_new_ones_as_given_and_old_ones_as_stored() {
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let store = &aws.store;
    let a = delivery("dlv_sa", "evt-s", "welcome", 0, NOW_MS);
    let mut sent = a.clone();
    sent.record_dry_run();
    store.insert_new(std::slice::from_ref(&a)).await.unwrap();
    store.save(&sent).await.unwrap();

    // `a` again (as rendered, pending), a new `b`, and `b` twice in the same batch.
    let b = delivery("dlv_sb", "evt-s", "welcome", 1, NOW_MS);
    let got = store
        .insert_new_stored(&[a.clone(), b.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![sent.clone(), b.clone()],
        "the one stored before as it is stored (not as rendered again), the new one as given, once"
    );
    assert_eq!(
        store.get_many(&[a.id.clone(), b.id.clone()]).await.unwrap(),
        vec![sent, b],
        "what it returned is what is stored"
    );
}

#[tokio::test]
async fn deliveries_are_stored_once_and_a_sent_one_stays_sent() {
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let store = &aws.store;
    let a = delivery("dlv_a", "evt-3", "welcome", 0, NOW_MS);
    let b = delivery("dlv_b", "evt-3", "welcome", 1, NOW_MS);
    store.insert_new(&[a.clone(), b.clone()]).await.unwrap();

    // A repeat leaves stored ones as they are.
    let mut changed = a.clone();
    changed.rule = "other".into();
    store.insert_new(&[changed]).await.unwrap();
    let got = store
        .get_many(&[
            b.id.clone(),
            DeliveryId::from_stored("dlv_missing"),
            a.id.clone(),
            a.id.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![b.clone(), a.clone()],
        "in the order asked, missing ones left out"
    );

    let mut sent = a.clone();
    sent.status = DeliveryStatus::Sent;
    sent.attempts = 1;
    sent.sent_at = Some("2026-11-26T10:00:00.000Z".into());
    store.save(&sent).await.unwrap();
    // A late writer (a replay, a concurrent retry) cannot turn it back into one to send.
    let mut stale = a.clone();
    stale.status = DeliveryStatus::Retrying;
    stale.attempts = 1;
    store.save(&stale).await.unwrap();
    assert_eq!(
        store.get_many(std::slice::from_ref(&a.id)).await.unwrap(),
        vec![sent.clone()]
    );

    // Saving a delivery that was never stored creates nothing.
    store
        .save(&delivery("dlv_ghost", "evt-3", "welcome", 9, NOW_MS))
        .await
        .unwrap();
    assert!(store
        .get_many(&[DeliveryId::from_stored("dlv_ghost")])
        .await
        .unwrap()
        .is_empty());
}

fn ids(names: &[&str]) -> Vec<DeliveryId> {
    names.iter().map(|n| DeliveryId::from_stored(*n)).collect()
}

#[tokio::test]
async fn two_holders_asking_for_the_same_leases_at_once_get_each_delivery_once() {
    use relay_shared::ports::SendLeases;
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let store = aws.store.clone();
    let names: Vec<String> = (0..20).map(|i| format!("dlv_race_{i}")).collect();
    let records: Vec<DeliveryRecord> = names
        .iter()
        .enumerate()
        .map(|(i, n)| delivery(n, "evt-race", "welcome", i, NOW_MS))
        .collect();
    store.insert_new(&records).await.unwrap();
    let all: Vec<DeliveryId> = records.iter().map(|d| d.id.clone()).collect();
    let (a, b) = tokio::join!(
        store.take(&all, "holder-a", NOW_MS, NOW_MS + 45_000),
        store.take(&all, "holder-b", NOW_MS, NOW_MS + 45_000),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), all.len(), "a: {a:?}, b: {b:?}");
    assert!(a.iter().all(|id| !b.contains(id)), "a: {a:?}, b: {b:?}");
    let mut in_order = a.clone();
    in_order.sort_by_key(|id| all.iter().position(|x| x == id));
    assert_eq!(a, in_order, "the ids taken come back in the order asked");
}

#[tokio::test]
async fn a_lease_past_its_time_is_taken_a_sent_delivery_never_and_recording_releases() {
    use relay_shared::ports::SendLeases;
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let store = &aws.store;
    let a = delivery("dlv_la", "evt-lease", "welcome", 0, NOW_MS);
    let b = delivery("dlv_lb", "evt-lease", "welcome", 1, NOW_MS);
    let mut sent = delivery("dlv_ls", "evt-lease", "welcome", 2, NOW_MS);
    sent.status = DeliveryStatus::Sent;
    store
        .insert_new(&[a.clone(), b.clone(), sent.clone()])
        .await
        .unwrap();
    let all = ids(&["dlv_la", "dlv_lb", "dlv_ls", "dlv_unknown"]);
    let until = NOW_MS + 45_000;
    assert_eq!(
        store.take(&all, "one", NOW_MS, until).await.unwrap(),
        ids(&["dlv_la", "dlv_lb"]),
        "a sent or unknown delivery is never leased"
    );
    assert!(store
        .take(&all, "two", until - 1, until + 45_000)
        .await
        .unwrap()
        .is_empty());
    // The first holder died mid-call: once its lease has run out, another takes it.
    assert_eq!(
        store
            .take(&ids(&["dlv_lb"]), "two", until, until + 45_000)
            .await
            .unwrap(),
        ids(&["dlv_lb"])
    );

    // Recording an outcome releases the lease in the same write.
    let mut retrying = a.clone();
    retrying.status = DeliveryStatus::Retrying;
    retrying.attempts = 1;
    store.save_many(&[retrying.clone()]).await.unwrap();
    assert_eq!(
        store.get_many(&ids(&["dlv_la"])).await.unwrap(),
        vec![retrying],
        "the outcome is recorded as before"
    );
    assert_eq!(
        store
            .take(&ids(&["dlv_la"]), "three", NOW_MS + 1, until)
            .await
            .unwrap(),
        ids(&["dlv_la"])
    );
    // A release gives back only the releaser's own lease.
    SendLeases::release(store.as_ref(), &ids(&["dlv_la", "dlv_lb"]), "three")
        .await
        .unwrap();
    assert_eq!(
        store
            .take(&ids(&["dlv_la", "dlv_lb"]), "four", until + 1, until + 2)
            .await
            .unwrap(),
        ids(&["dlv_la"])
    );
}

#[tokio::test]
async fn the_ttls_follow_the_retention_windows_from_when_a_delivery_finished() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relay_shared::domain::retention::Retention;
    let (emu, aws, clock) = adapters(&secret_json(None)).await;
    let hour = Duration::from_secs(3600);
    let store = aws
        .with_retention(Retention {
            events: hour,
            deliveries: hour * 2,
            dead: hour * 3,
        })
        .store;
    let waiting = delivery("dlv_ttl_wait", "evt-ttl", "welcome", 0, NOW_MS);
    let finished = delivery("dlv_ttl_sent", "evt-ttl", "welcome", 1, NOW_MS);
    let dead = delivery("dlv_ttl_dead", "evt-ttl", "welcome", 2, NOW_MS);
    store
        .insert_new(&[waiting.clone(), finished.clone(), dead.clone()])
        .await
        .unwrap();
    clock.advance(hour);
    let mut sent = finished.clone();
    sent.status = DeliveryStatus::Sent;
    let mut gave_up = dead.clone();
    gave_up.status = DeliveryStatus::Dead;
    let mut retrying = waiting.clone();
    retrying.status = DeliveryStatus::Retrying;
    store.save_many(&[sent, gave_up, retrying]).await.unwrap();

    let items = emu.items().await;
    let ttl = |id: &str| {
        items
            .iter()
            .find(|i| i.get("id") == Some(&AttributeValue::S(id.to_string())))
            .and_then(|i| i.get("expires_at").cloned())
    };
    let finished_at = NOW_MS / 1000 + 3600;
    assert_eq!(ttl("dlv_ttl_wait"), None, "work left: never expires");
    assert_eq!(
        ttl("dlv_ttl_sent"),
        Some(AttributeValue::N((finished_at + 2 * 3600).to_string()))
    );
    assert_eq!(
        ttl("dlv_ttl_dead"),
        Some(AttributeValue::N((finished_at + 3 * 3600).to_string()))
    );
}

#[tokio::test]
async fn deliveries_are_found_by_event_and_listed_by_status() {
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let store = &aws.store;
    let chained = {
        let mut d = delivery("dlv_c", "evt-4", "followup", 0, NOW_MS + 5);
        d.chain_depth = 1;
        d
    };
    let first = delivery("dlv_z", "evt-4", "welcome", 0, NOW_MS);
    let second = delivery("dlv_y", "evt-4", "welcome", 1, NOW_MS);
    let elsewhere = delivery("dlv_x", "evt-5", "welcome", 0, NOW_MS + 1);
    store
        .insert_new(&[
            chained.clone(),
            second.clone(),
            elsewhere.clone(),
            first.clone(),
        ])
        .await
        .unwrap();
    let ids: Vec<String> = store
        .for_event("evt-4")
        .await
        .unwrap()
        .iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(ids, ["dlv_z", "dlv_y", "dlv_c"]);

    let mut dead = elsewhere.clone();
    dead.status = DeliveryStatus::Dead;
    dead.last_error = Some("the target answered 422".into());
    store.save(&dead).await.unwrap();
    let listed = store
        .list(&DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![dead]);
    let welcome = store
        .list(&DeliveryFilter {
            rule: Some("welcome".into()),
            since_ms: Some(NOW_MS),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(welcome.len(), 2);
    assert!(welcome
        .iter()
        .all(|d| d.rule == "welcome" && d.created_at == NOW_MS));
}

/// Delivery `n` of a contact's history: three share each creation time, so the id decides.
fn contact_delivery(n: usize) -> DeliveryRecord {
    let mut d = delivery(
        &format!("dlv_{:02}", (n * 7) % 31),
        &format!("evt-p{}", n % 5),
        ["welcome", "cart"][n % 2],
        0,
        NOW_MS + (n / 3) as i64 * 1_000,
    );
    d.status = [
        DeliveryStatus::Sent,
        DeliveryStatus::Dead,
        DeliveryStatus::Retrying,
    ][n % 3];
    d.email = (n % 4 != 3).then(|| format!("c{}@example.com", n % 2));
    d.event_type = Some("contact.created".into());
    d
}

/// Every page of `f` by `size`, as ids.
async fn pages_of(store: &dyn DeliveryStore, f: &DeliveryFilter, size: usize) -> Vec<String> {
    let f = DeliveryFilter {
        limit: size,
        ..f.clone()
    };
    let (mut ids, mut after): (Vec<String>, Option<DeliveryCursor>) = (Vec::new(), None);
    loop {
        let page = store.page(&f, after.as_ref()).await.unwrap();
        ids.extend(page.deliveries.iter().map(|d| d.id.to_string()));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn pages_newest_first_by_e_mail_status_or_none_and_counts_match_the_memory_store() {
    let (_emu, aws, clock) = adapters(&secret_json(None)).await;
    let memory = MemoryStore::new(clock);
    let all: Vec<DeliveryRecord> = (0..24).map(contact_delivery).collect();
    aws.store.insert_new(&all).await.unwrap();
    memory.insert_new(&all).await.unwrap();
    let filters = [
        DeliveryFilter::default(),
        DeliveryFilter {
            email: Some(" C1@Example.com".into()),
            ..Default::default()
        },
        DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            ..Default::default()
        },
        DeliveryFilter {
            email: Some("c0@example.com".into()),
            status: Some(DeliveryStatus::Sent),
            ..Default::default()
        },
        DeliveryFilter {
            rule: Some("cart".into()),
            since_ms: Some(NOW_MS + 2_000),
            until_ms: Some(NOW_MS + 6_000),
            ..Default::default()
        },
        DeliveryFilter {
            event_id: Some("evt-p2".into()),
            ..Default::default()
        },
        DeliveryFilter {
            event_id: Some("evt-p1".into()),
            status: Some(DeliveryStatus::Dead),
            ..Default::default()
        },
    ];
    // Deliveries 2, 7, 12, 17 and 22 are evt-p2's, newest first.
    let of_p2: Vec<String> = [22, 17, 12, 7, 2]
        .map(|n| contact_delivery(n).id.to_string())
        .to_vec();
    assert_eq!(pages_of(&memory, &filters[5], 0).await, of_p2);
    let listed: Vec<String> = aws
        .store
        .list(&filters[5])
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(listed, of_p2);
    for f in &filters {
        let expected = pages_of(&memory, f, 0).await;
        assert!(!expected.is_empty(), "{f:?}");
        for size in [1, 4, 0] {
            assert_eq!(
                pages_of(aws.store.as_ref(), f, size).await,
                expected,
                "{f:?} by {size}"
            );
        }
    }
    for since in [NOW_MS, NOW_MS + 4_000] {
        assert_eq!(
            aws.store.count_by_status(since).await.unwrap(),
            memory.count_by_status(since).await.unwrap()
        );
    }
}

#[tokio::test]
async fn a_delivery_keeps_its_e_mail_event_type_and_attempts() {
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let mut d = contact_delivery(1);
    aws.store
        .insert_new(std::slice::from_ref(&d))
        .await
        .unwrap();
    d.status = DeliveryStatus::Retrying;
    d.push_attempt(Attempt {
        at_ms: NOW_MS,
        duration_ms: 40,
        status_code: Some(503),
        response: Some("503 busy".into()),
        class: AttemptClass::Retry,
        reason: Some("the target answered 503".into()),
    });
    aws.store.save(&d).await.unwrap();
    let got = aws
        .store
        .get_many(std::slice::from_ref(&d.id))
        .await
        .unwrap();
    assert_eq!(got, vec![d]);
}

#[tokio::test]
async fn the_queue_sends_in_batches_receives_acks_and_delays() {
    let (emu, aws, _) = adapters(&secret_json(None)).await;
    let q = &aws.queue;
    let bodies: Vec<String> = (0..23).map(|i| format!("{{\"n\":{i}}}")).collect();
    q.send(QueueName::Render, bodies, Duration::ZERO)
        .await
        .unwrap();
    let got = q
        .receive(QueueName::Render, 50, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(got.len(), 23);
    assert!(got.iter().all(|m| m.receive_count == 1));

    let handles: Vec<String> = got.iter().map(|m| m.handle.clone()).collect();
    q.ack(QueueName::Render, &handles[..22]).await.unwrap();
    // The last one is put back, visible again at once.
    q.retry_after(QueueName::Render, &handles[22], Duration::ZERO)
        .await
        .unwrap();
    let again = q
        .receive(QueueName::Render, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, got[22].body);
    assert_eq!(again[0].receive_count, 2);
    // A retry later hides it.
    q.retry_after(
        QueueName::Render,
        &again[0].handle,
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert!(q
        .receive(QueueName::Render, 10, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(emu.depth(&emu.settings.render_queue_url).await, 1);
}

#[tokio::test]
async fn requeued_messages_come_back_each_once_the_often_received_as_fresh_copies() {
    let (emu, aws, _) = adapters(&secret_json(None)).await;
    let q = &aws.queue;
    let bodies: Vec<String> = (0..23).map(|i| format!("{{\"n\":{i}}}")).collect();
    q.send(QueueName::Dispatch, bodies.clone(), Duration::ZERO)
        .await
        .unwrap();
    let mut got = q
        .receive(QueueName::Dispatch, 50, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(got.len(), 23);
    // Every third as if received often: those go back as fresh copies, the rest as they are.
    for m in got.iter_mut().step_by(3) {
        m.receive_count = REFRESH_AFTER_RECEIVES;
    }
    let items: Vec<(Message, Duration)> = got.iter().map(|m| (m.clone(), Duration::ZERO)).collect();
    q.requeue_many(QueueName::Dispatch, &items).await.unwrap();
    let again = q
        .receive(QueueName::Dispatch, 50, Duration::from_secs(60))
        .await
        .unwrap();
    let mut seen: Vec<(String, u32)> = again
        .iter()
        .map(|m| (m.body.clone(), m.receive_count))
        .collect();
    seen.sort();
    let mut expected: Vec<(String, u32)> = got
        .iter()
        .map(|m| {
            let fresh = m.receive_count >= REFRESH_AFTER_RECEIVES;
            (m.body.clone(), if fresh { 1 } else { 2 })
        })
        .collect();
    expected.sort();
    assert_eq!(
        seen, expected,
        "each message once: a fresh copy (received once) or itself"
    );

    // Held for ten minutes, none is seen now.
    let items: Vec<(Message, Duration)> = again
        .iter()
        .map(|m| (m.clone(), Duration::from_secs(600)))
        .collect();
    q.requeue_many(QueueName::Dispatch, &items).await.unwrap();
    assert!(q
        .receive(QueueName::Dispatch, 50, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(emu.depth(&emu.settings.dispatch_queue_url).await, 23);
}

#[tokio::test]
async fn a_queue_failure_names_the_messages_not_enqueued() {
    let (mut emu, _, clock) = adapters(&secret_json(None)).await;
    emu.settings.dispatch_queue_url = format!("{}-gone", emu.settings.dispatch_queue_url);
    let aws = AwsAdapters::new(&emu.sdk, &emu.settings, clock);
    let err = aws
        .queue
        .send(
            QueueName::Dispatch,
            vec!["a".into(), "b".into()],
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert_eq!(err.failed, vec![0, 1]);
}

#[tokio::test]
async fn dead_letters_carry_their_reason() {
    let (emu, aws, _) = adapters(&secret_json(None)).await;
    aws.queue
        .dead_letter(
            QueueName::Dispatch,
            &[DeadLetter {
                body: r#"{"delivery":"dlv_1"}"#.into(),
                reason: "the target answered 422: Invalid emailaddress".into(),
            }],
        )
        .await
        .unwrap();
    let dlq = emu.settings.dispatch_dlq_url.clone().unwrap();
    let got = emu.receive_all(&dlq).await;
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_str(got[0].body().unwrap()).unwrap();
    assert_eq!(body["delivery"], "dlv_1");
    assert_eq!(
        body["dead_letter_reason"],
        "the target answered 422: Invalid emailaddress"
    );
    let attr = got[0]
        .message_attributes()
        .and_then(|a| a.get("reason"))
        .and_then(|v| v.string_value())
        .map(str::to_string);
    assert_eq!(
        attr.as_deref(),
        Some("the target answered 422: Invalid emailaddress")
    );
}

#[tokio::test]
async fn secrets_are_cached_for_five_minutes_and_refresh_drops_the_cache() {
    let (emu, aws, clock) = adapters(&secret_json(Some(("shop@example.com", "key-1")))).await;
    let creds = &aws.credentials;
    let first = creds.smartemailing().await.unwrap().unwrap();
    assert_eq!(first.api_key.expose(), "key-1");
    assert_eq!(creds.api_keys().await.unwrap().len(), 1);
    assert_eq!(
        creds
            .secret("crm_token")
            .await
            .unwrap()
            .map(|s| s.expose().to_string()),
        Some("crm-secret-1".into())
    );

    emu.secrets
        .put_secret_value()
        .secret_id(&emu.settings.secret_id)
        .secret_string(secret_json(Some(("shop@example.com", "key-2"))))
        .send()
        .await
        .unwrap();
    clock.advance(Duration::from_secs(4 * 60));
    assert_eq!(
        creds
            .smartemailing()
            .await
            .unwrap()
            .unwrap()
            .api_key
            .expose(),
        "key-1",
        "still cached"
    );
    clock.advance(Duration::from_secs(2 * 60));
    assert_eq!(
        creds
            .smartemailing()
            .await
            .unwrap()
            .unwrap()
            .api_key
            .expose(),
        "key-2",
        "fetched again after five minutes"
    );

    emu.secrets
        .put_secret_value()
        .secret_id(&emu.settings.secret_id)
        .secret_string(secret_json(Some(("shop@example.com", "key-3"))))
        .send()
        .await
        .unwrap();
    creds.refresh().await;
    assert_eq!(
        creds
            .smartemailing()
            .await
            .unwrap()
            .unwrap()
            .api_key
            .expose(),
        "key-3",
        "a refresh (after a 401) fetches at once"
    );
}

#[tokio::test]
async fn a_missing_secret_is_an_error_that_names_it() {
    let (mut emu, _, clock) = adapters(&secret_json(None)).await;
    emu.settings.secret_id = "relay-no-such-secret".into();
    let aws = AwsAdapters::new(&emu.sdk, &emu.settings, clock);
    let err = aws.credentials.api_keys().await.unwrap_err();
    assert!(err.to_string().contains("relay-no-such-secret"), "{err}");
}

/// An operator's cancel on `store`: only a delivery still scheduled and not yet due is
/// cancelled, in one write that a dispatcher's save made a moment before defeats.
async fn operator_cancels(store: &dyn DeliveryStore) {
    let due = NOW_MS + 3_600_000;
    let scheduled = |id: &str| {
        let mut d = delivery(id, "evt-op", "abandoned-cart", 0, NOW_MS);
        d.status = DeliveryStatus::Scheduled;
        d.next_attempt_at = Some(due);
        d.email = Some("jan@example.com".into());
        d
    };
    let (waiting, taken) = (scheduled("dlv_wait"), scheduled("dlv_taken"));
    store
        .insert_new(&[waiting.clone(), taken.clone()])
        .await
        .unwrap();
    let why = "cancelled by an operator";
    // Due: it may be being sent.
    assert_eq!(
        store.cancel_scheduled(&waiting.id, due, why).await.unwrap(),
        None
    );
    // A dispatcher sent it between the operator's look and the cancel.
    let mut sent = taken.clone();
    sent.status = DeliveryStatus::Sent;
    sent.next_attempt_at = None;
    store.save(&sent).await.unwrap();
    assert_eq!(
        store
            .cancel_scheduled(&taken.id, NOW_MS, why)
            .await
            .unwrap(),
        None
    );
    let unknown = DeliveryId::from_stored("dlv_none");
    assert_eq!(
        store.cancel_scheduled(&unknown, NOW_MS, why).await.unwrap(),
        None
    );
    let mut expected = waiting.clone();
    expected.cancel(why);
    let got = store
        .cancel_scheduled(&waiting.id, due - 1, why)
        .await
        .unwrap();
    assert_eq!(got.as_ref(), Some(&expected));
    assert_eq!(
        store
            .get_many(&[waiting.id.clone(), taken.id.clone()])
            .await
            .unwrap(),
        vec![expected, sent]
    );
    assert_eq!(
        store
            .cancel_scheduled(&waiting.id, NOW_MS, why)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn an_operator_cancels_only_a_delivery_still_waiting_on_dynamodb_and_in_memory() {
    let (_emu, aws, clock) = adapters(&secret_json(None)).await;
    operator_cancels(aws.store.as_ref()).await;
    operator_cancels(&MemoryStore::new(clock)).await;
}

#[tokio::test]
async fn a_later_event_cancels_only_the_waiting_deliveries_of_other_events() {
    use relay_shared::ports::TimerStore;
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let store = &aws.store;
    let due = NOW_MS + 3_600_000;
    let scheduled = |id: &str, event: &str| {
        let mut d = delivery(id, event, "abandoned-cart", 0, NOW_MS);
        d.status = DeliveryStatus::Scheduled;
        d.next_attempt_at = Some(due);
        d
    };
    let mut sent = scheduled("dlv_sent", "evt-c");
    sent.status = DeliveryStatus::Sent;
    sent.next_attempt_at = None;
    store
        .insert_new(&[
            scheduled("dlv_a", "evt-a"),
            scheduled("dlv_b", "evt-b"),
            sent.clone(),
        ])
        .await
        .unwrap();
    let ids: Vec<DeliveryId> = ["dlv_a", "dlv_b", "dlv_sent"]
        .into_iter()
        .map(DeliveryId::from_stored)
        .collect();
    let key = "abandoned-cart:jan@example.com";
    store.hold(key, &ids, due).await.unwrap();

    let cancelled = store.cancel(key, "evt-b").await.unwrap();
    assert_eq!(cancelled, vec![DeliveryId::from_stored("dlv_a")]);
    let now: Vec<(String, DeliveryStatus, Option<i64>)> = store
        .get_many(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id.to_string(), d.status, d.next_attempt_at))
        .collect();
    assert_eq!(
        now,
        [
            ("dlv_a".to_string(), DeliveryStatus::Cancelled, None),
            ("dlv_b".to_string(), DeliveryStatus::Scheduled, Some(due)),
            ("dlv_sent".to_string(), DeliveryStatus::Sent, None),
        ]
    );
    let listed = store
        .list(&DeliveryFilter {
            status: Some(DeliveryStatus::Cancelled),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(store.cancel(key, "evt-b").await.unwrap().is_empty());
}

#[tokio::test]
async fn birthdays_are_found_by_day_page_by_page_and_the_latest_wins() {
    use chrono::NaiveDate;
    use relay_shared::ports::ContactStore;
    let (_emu, aws, _) = adapters(&secret_json(None)).await;
    let store = &aws.store;
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    store
        .remember_birthday("Jan@Example.com", day(1990, 5, 17))
        .await
        .unwrap();
    store
        .remember_birthday("eva@example.com", day(1985, 5, 17))
        .await
        .unwrap();
    store
        .remember_birthday("petr@example.com", day(2000, 5, 18))
        .await
        .unwrap();
    // Jan corrected his birthday: only the latest counts.
    store
        .remember_birthday("jan@example.com", day(1990, 5, 16))
        .await
        .unwrap();
    for who in ["a@example.com", "b@example.com"] {
        store
            .remember_birthday(who, day(1999, 5, 17))
            .await
            .unwrap();
    }
    let first = store.birthdays_on(5, 17, None, 2).await.unwrap();
    assert_eq!(
        first,
        vec![
            ("a@example.com".to_string(), day(1999, 5, 17)),
            ("b@example.com".to_string(), day(1999, 5, 17))
        ]
    );
    let rest = store
        .birthdays_on(5, 17, Some("b@example.com"), 2)
        .await
        .unwrap();
    assert_eq!(
        rest,
        vec![("eva@example.com".to_string(), day(1985, 5, 17))]
    );
    assert_eq!(
        store.birthdays_on(5, 16, None, 10).await.unwrap(),
        vec![("jan@example.com".to_string(), day(1990, 5, 16))]
    );
}
