//! Retention in `relay serve`'s store, on a fixed clock: what has expired is swept and the
//! file gives the space back; inside the windows nothing changes meaning.

mod support;

use relay_shared::adapters::sqlite::SqliteStore;
use relay_shared::domain::delivery::DeliveryRecord;
use relay_shared::ports::clock::ManualClock;
use relay_shared::ports::{DeliveryFilter, DeliveryStore};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const DAY: u64 = 24 * 3600;

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {note: "{{ data.note | default(value='') }}"}}
  - name: anniversary
    on: [contact.created]
    after: 40d
    actions:
      - trigger_event: {name: anniversary}
"#;

fn batch(from: usize, n: usize) -> Value {
    let pad = "x".repeat(1500);
    let events: Vec<Value> = (from..from + n)
        .map(|i| {
            json!({"id": format!("r-{i}"), "type": "contact.created",
                   "contact": {"email": format!("c{i}@example.com")}, "data": {"note": pad}})
        })
        .collect();
    json!({ "events": events })
}

async fn all_deliveries(store: &SqliteStore) -> Vec<DeliveryRecord> {
    store.list(&DeliveryFilter::default()).await.unwrap()
}

async fn deliveries(r: &TestRelay, id: &str) -> Vec<Value> {
    let (s, body) = r.get(&format!("/v1/events/{id}")).await;
    if s == 404 {
        return Vec::new();
    }
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_records_are_swept_and_the_file_gives_the_space_back() {
    let clock = Arc::new(ManualClock::at_ms(1_795_000_000_000));
    let yaml = config_yaml(
        "http://127.0.0.1:9/api/v3",
        RULES.split("  - name: anniversary").next().unwrap(),
    );
    // Dry-run (no SmartEmailing credentials): every delivery finishes at once.
    let r = TestRelay::start_with_clock(&yaml, bundle(false), clock.clone()).await;
    for from in (0..2000).step_by(100) {
        let (s, body) = r.post("/v1/events", &batch(from, 100)).await;
        assert_eq!(s, 202, "{body}");
    }
    r.settle().await;
    assert_eq!(deliveries(&r, "r-0").await[0]["status"], "dry_run");
    let store = &r.relay().store;
    assert_eq!(
        store.sweep().await.unwrap().deliveries,
        0,
        "nothing has expired yet"
    );
    let full = store.disk_usage();
    assert!(full > 2_000_000, "2 000 events of 1.5 KB: {full} bytes");

    clock.advance(Duration::from_secs(31 * DAY));
    // The relay's own sweeper may run at the same time: what counts is what is left.
    store.sweep().await.unwrap();
    assert!(all_deliveries(store).await.is_empty());
    assert_eq!(r.get("/v1/events/r-0").await.0, 404);
    assert_eq!(r.get("/v1/events/r-1999").await.0, 404);
    // A reader in the middle of a request can keep the log from being truncated at once;
    // the next sweep finishes it.
    let mut after = store.disk_usage();
    for _ in 0..3 {
        if after * 4 < full {
            break;
        }
        store.sweep().await.unwrap();
        after = store.disk_usage();
    }
    assert!(
        after * 4 < full,
        "the file should give the space back: {full} bytes before, {after} after"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_the_windows_duplicates_stay_duplicates_sent_is_never_resent_and_timers_survive() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let clock = Arc::new(ManualClock::at_ms(1_795_000_000_000));
    let yaml = config_yaml(&se.base_url(), RULES);
    let r = TestRelay::start_with_clock(&yaml, bundle(true), clock.clone()).await;
    let e =
        json!({"id": "keep-1", "type": "contact.created", "contact": {"email": "jan@example.com"}});
    assert_eq!(r.post("/v1/events", &e).await.0, 202);
    r.settle().await;
    let welcome_sent = |d: &[Value]| {
        d.iter()
            .any(|x| x["rule"] == "welcome" && x["status"] == "sent")
    };
    assert!(welcome_sent(&deliveries(&r, "keep-1").await));
    let store = &r.relay().store;

    // Six days on: inside the events window the id is still a duplicate.
    clock.advance(Duration::from_secs(6 * DAY));
    store.sweep().await.unwrap();
    assert_eq!(all_deliveries(store).await.len(), 2);
    let (s, again) = r.post("/v1/events", &e).await;
    assert_eq!(
        (s, again["results"][0]["status"].clone()),
        (202, json!("duplicate"))
    );

    // Twenty-nine days on: the sent delivery is still there and still sent once.
    clock.advance(Duration::from_secs(23 * DAY));
    r.settle().await;
    store.sweep().await.unwrap();
    let d = deliveries(&r, "keep-1").await;
    assert!(welcome_sent(&d), "{d:?}");
    assert_eq!(se.triggered_events().len(), 1);

    // Thirty-one days on: the sent delivery is swept; the scheduled one (due at 40 days)
    // survives, and so does its event.
    clock.advance(Duration::from_secs(2 * DAY));
    r.settle().await;
    store.sweep().await.unwrap();
    let d = deliveries(&r, "keep-1").await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["rule"], "anniversary");
    assert_eq!(d[0]["status"], "scheduled");

    // At forty days the timer fires, once.
    clock.advance(Duration::from_secs(9 * DAY + 60));
    let d = r
        .wait_for_event("keep-1", |d| d.iter().any(|x| x["status"] == "sent"))
        .await;
    assert_eq!(d["deliveries"][0]["rule"], "anniversary");
    let names: Vec<Value> = se
        .triggered_events()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("welcome"), json!("anniversary")]);
    r.stop().await;
}
