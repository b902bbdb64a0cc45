//! A bad day at SmartEmailing, on a fixed clock: a six-hour outage, throttling with
//! Retry-After, malformed answers and a wrong API key.

mod support;

use relay_shared::domain::delivery::{DeliveryId, DeliveryRecord};
use relay_shared::domain::event::EventId;
use relay_shared::pipeline::dispatch::replay;
use relay_shared::ports::clock::{Clock, ManualClock};
use relay_shared::ports::queue::QueueName;
use relay_shared::ports::DeliveryStore;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn config(base_url: &str, rules: &str) -> String {
    config_with(
        base_url,
        "retry_schedule: [1m, 5m, 30m, 2h, 5h, 10h, 10h]\n  breaker: {open_after: 3, probe_after: 30s}",
        rules,
    )
}

/// A config with `delivery` (indented lines) besides the test's fixed settings.
fn config_with(base_url: &str, delivery: &str, rules: &str) -> String {
    format!(
        "smartemailing:\n  base_url: {base_url}\ndelivery:\n  timeout: 2s\n  batch_window: 10ms\n  min_overload_delay: 60s\n  max_requests_per_second: 1000\n  {delivery}\nrules:\n{rules}"
    )
}

/// Issue 13's repro, as a new user would set it up: three quick retries and a circuit that
/// opens after three failures and probes every second.
const QUICK: &str = "retry_schedule: [1s, 1s, 1s]\n  breaker: {open_after: 3, probe_after: 1s}";

const TRIGGER: &str = "  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: welcome}\n";

/// Posts `n` contact.created events with ids `<prefix>-<i>` and returns the ids.
async fn post_contacts(r: &TestRelay, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let events: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| event(id, "contact.created", &format!("{prefix}{i}@example.com")))
        .collect();
    assert_eq!(
        r.post("/v1/events", &json!({"events": events})).await.0,
        202
    );
    ids
}

/// Each contact's trigger reached SmartEmailing exactly once.
fn assert_each_triggered_once(se: &FakeSmartEmailing, n: usize) {
    let mut emails: Vec<String> = se
        .triggered_events()
        .iter()
        .filter_map(|t| t["emailaddress"].as_str().map(str::to_string))
        .collect();
    assert_eq!(emails.len(), n, "nothing sent twice");
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), n, "every contact sent once");
}

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome}
      - add_to_list: {list: 12}
"#;

/// Waits (in real time) until the relay has nothing due at the fixed clock's time.
async fn settle(r: &TestRelay) {
    let store = &r.relay().store;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if store.is_idle(QueueName::Render).unwrap() && store.is_idle(QueueName::Dispatch).unwrap()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never settled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn records(r: &TestRelay, ids: &[String]) -> Vec<DeliveryRecord> {
    let mut all = Vec::new();
    for id in ids {
        all.extend(r.relay().store.for_event(id).await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_six_hour_outage_ends_with_everything_sent_and_nothing_dead() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let clock = fixed_clock();
    let r =
        TestRelay::start_with_clock(&config(&se.base_url(), RULES), bundle(true), clock.clone())
            .await;
    se.set_default_fault(Some(Fault::status(503)));
    let ids = post_contacts(&r, "o", 30).await;
    settle(&r).await;

    // Six hours of 503s, a minute at a time.
    for _ in 0..360 {
        clock.advance(Duration::from_secs(60));
        settle(&r).await;
    }
    let outage_calls = se.requests().len();
    let during = records(&r, &ids).await;
    assert_eq!(during.len(), 60);
    assert!(
        during.iter().all(|d| d.status.as_str() != "dead"),
        "nothing may die in a six-hour outage"
    );
    // The breaker let through about one probe per 30 s, not a retry storm.
    assert!(
        outage_calls <= 6 * 120 + 10,
        "{outage_calls} calls during the outage"
    );
    assert!(
        outage_calls >= 100,
        "the breaker must keep probing ({outage_calls})"
    );

    se.set_default_fault(None);
    let mut waited = 0;
    loop {
        clock.advance(Duration::from_secs(60));
        settle(&r).await;
        let all = records(&r, &ids).await;
        if all.iter().all(|d| d.status.as_str() == "sent") {
            for d in &all {
                assert!(d.attempts <= 6, "{} used {} attempts", d.id, d.attempts);
            }
            break;
        }
        waited += 1;
        assert!(
            waited < 12 * 60,
            "not everything was sent within 12 h of the recovery"
        );
    }
    assert_each_triggered_once(&se, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_waits_as_told_by_retry_after() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let clock = fixed_clock();
    let rules = "  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: welcome}\n";
    let r =
        TestRelay::start_with_clock(&config(&se.base_url(), rules), bundle(true), clock.clone())
            .await;
    se.push_fault(Fault::status(429).with_header("Retry-After", "100"));
    assert_eq!(
        r.post(
            "/v1/events",
            &event("th-1", "contact.created", "jan@example.com")
        )
        .await
        .0,
        202
    );
    settle(&r).await;
    let id = DeliveryId::derive(&EventId::parse("th-1").unwrap(), "welcome", 0);
    let rec = r
        .relay()
        .store
        .get_many(std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(rec.status.as_str(), "retrying");
    // The schedule says 1 min (±20 %); SmartEmailing asked for 100 s: 100 s it is.
    assert_eq!(rec.next_attempt_at.unwrap() - clock.now_ms(), 100_000);
    clock.advance(Duration::from_secs(99));
    settle(&r).await;
    assert_eq!(
        se.requests().len(),
        1,
        "nothing before the time SmartEmailing asked for"
    );
    clock.advance(Duration::from_secs(1));
    settle(&r).await;
    assert_eq!(se.triggered_events().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_answer_waits_at_least_the_floor() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let clock = fixed_clock();
    let rules = "  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: welcome}\n";
    let yaml = config(&se.base_url(), rules).replace("[1m, 5m,", "[5s, 5m,");
    let r = TestRelay::start_with_clock(&yaml, bundle(true), clock.clone()).await;
    se.push_fault(
        Fault::status(200)
            .with_body(json!({"status": "error", "meta": [], "message": "Rate limit exceeded"})),
    );
    assert_eq!(
        r.post(
            "/v1/events",
            &event("ov-1", "contact.created", "jan@example.com")
        )
        .await
        .0,
        202
    );
    settle(&r).await;
    let id = DeliveryId::derive(&EventId::parse("ov-1").unwrap(), "welcome", 0);
    let rec = r
        .relay()
        .store
        .get_many(std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(rec.status.as_str(), "retrying");
    assert!(
        rec.last_error.as_deref().unwrap().contains("rate limiting"),
        "{rec:?}"
    );
    assert!(
        rec.next_attempt_at.unwrap() - clock.now_ms() >= 60_000,
        "a 5 s step is raised to the 60 s floor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_judged_by_their_status() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let clock = fixed_clock();
    let rules = "  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: welcome}\n";
    let r =
        TestRelay::start_with_clock(&config(&se.base_url(), rules), bundle(true), clock.clone())
            .await;
    // A 500 with an HTML page is retried; a 201 whose body is not JSON was accepted.
    se.push_fault(Fault::status(500).with_body(json!("<html>Bad gateway</html>")));
    se.push_fault(Fault::status(201).with_body(json!("<html>ok</html>")));
    assert_eq!(
        r.post(
            "/v1/events",
            &event("m-1", "contact.created", "jan@example.com")
        )
        .await
        .0,
        202
    );
    settle(&r).await;
    clock.advance(Duration::from_secs(90));
    settle(&r).await;
    let d = r.wait_settled("m-1", 1).await;
    assert_eq!(d[0]["status"], "sent", "{d:?}");
    assert_eq!(d[0]["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_opens_the_circuit_instead_of_burning_attempts() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let clock: Arc<ManualClock> = fixed_clock();
    let r =
        TestRelay::start_with_clock(&config(&se.base_url(), RULES), bundle(true), clock.clone())
            .await;
    se.set_api_key("someone-rotated-it");
    let ids = post_contacts(&r, "w", 10).await;
    settle(&r).await;
    let all = records(&r, &ids).await;
    let dead = all.iter().filter(|d| d.status.as_str() == "dead").count();
    let waiting: Vec<&DeliveryRecord> = all
        .iter()
        .filter(|d| d.status.as_str() == "pending")
        .collect();
    // The first bulk call (10 triggers) met a 401 twice and is dead; the /import call waits.
    assert_eq!(dead, 10, "{all:?}");
    assert_eq!(waiting.len(), 10, "{all:?}");
    assert!(
        waiting.iter().all(|d| d.attempts == 0),
        "waiting spends no attempts"
    );
    assert_eq!(se.requests().len(), 2);

    // The key is fixed; the next probe closes the circuit and the rest goes out.
    se.set_api_key(SE_KEY);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(31));
        settle(&r).await;
    }
    let all = records(&r, &ids).await;
    let sent = all.iter().filter(|d| d.status.as_str() == "sent").count();
    assert_eq!(sent, 10, "{all:?}");
    assert_eq!(se.imported_contacts().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retry_schedule_kills_nothing() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let clock = fixed_clock();
    let yaml = config_with(&se.base_url(), QUICK, TRIGGER);
    let r = TestRelay::start_with_clock(&yaml, bundle(true), clock.clone()).await;
    se.fail_next(40, Fault::status(503));
    let ids = post_contacts(&r, "q", 30).await;
    settle(&r).await;
    let mut steps = 0;
    loop {
        let all = records(&r, &ids).await;
        assert!(
            all.iter().all(|d| d.status.as_str() != "dead"),
            "a failed probe spends no attempt, so nothing dies: {all:?}"
        );
        if all.iter().all(|d| d.status.as_str() == "sent") {
            break;
        }
        steps += 1;
        assert!(steps < 600, "not everything was sent: {all:?}");
        clock.advance(Duration::from_millis(500));
        settle(&r).await;
    }
    assert_eq!(se.pending_faults(), 0, "all 40 calls failed first");
    for d in records(&r, &ids).await {
        assert!(d.attempts <= 4, "{} used {} attempts", d.id, d.attempts);
    }
    assert_each_triggered_once(&se, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_max_age_kills_everything_with_the_reason_and_replay_sends_it() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let clock = fixed_clock();
    let delivery = format!("{QUICK}\n  max_age: 10m");
    let yaml = config_with(&se.base_url(), &delivery, TRIGGER);
    let r = TestRelay::start_with_clock(&yaml, bundle(true), clock.clone()).await;
    se.set_default_fault(Some(Fault::status(503)));
    let outage_began = clock.now();
    let ids = post_contacts(&r, "m", 30).await;
    settle(&r).await;
    // Eleven minutes of 503s, a few seconds at a time.
    for _ in 0..(11 * 60 / 5) {
        clock.advance(Duration::from_secs(5));
        settle(&r).await;
    }
    let dead = records(&r, &ids).await;
    let since = outage_began.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for d in &dead {
        assert_eq!(d.status.as_str(), "dead", "{d:?}");
        let reason = d.last_error.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("not sent within delivery.max_age (10m): waited 10m")
                && reason.ends_with(&format!("SmartEmailing unreachable since {since}")),
            "{reason}"
        );
    }
    assert!(se.triggered_events().is_empty());

    // SmartEmailing is back; `relay replay --all-dead` puts them back and each goes once.
    se.set_default_fault(None);
    let dead_ids: Vec<DeliveryId> = dead.iter().map(|d| d.id.clone()).collect();
    let store = r.relay().store.clone();
    let queued = replay(r.config(), &store, &store, &store, &dead_ids, clock.now())
        .await
        .unwrap();
    assert_eq!(queued.len(), 30);
    for _ in 0..10 {
        clock.advance(Duration::from_secs(1));
        settle(&r).await;
    }
    let all = records(&r, &ids).await;
    assert!(all.iter().all(|d| d.status.as_str() == "sent"), "{all:?}");
    assert_each_triggered_once(&se, 30);
}

/// Issue 12: the same contact several times in one batch never shares a call (the fake
/// answers 422 to a call with a duplicate row); the second goes in the next call, and each
/// contact's deliveries to an endpoint keep the order of their events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carries_each_contact_once_and_keeps_their_order() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let rules = "  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: welcome, payload: {n: \"{{ data.n }}\"}}\n      - add_to_list: {list: 12}\n";
    let r = TestRelay::start(&config_yaml(&se.base_url(), rules), bundle(true)).await;
    let contacts = [
        "jan@example.com",
        "petr@example.com",
        "JAN@example.com",
        "eva@example.com",
        "jan@example.com",
    ];
    let events: Vec<Value> = contacts
        .iter()
        .enumerate()
        .map(|(n, email)| {
            let mut e = event(&format!("row-{n}"), "contact.created", email);
            e["data"] = json!({"n": n});
            e
        })
        .collect();
    assert_eq!(
        r.post("/v1/events", &json!({"events": events})).await.0,
        202
    );
    for n in 0..contacts.len() {
        let d = r.wait_settled(&format!("row-{n}"), 2).await;
        assert!(d.iter().all(|x| x["status"] == "sent"), "{d:?}");
    }
    let refused: Vec<Value> = se
        .requests()
        .iter()
        .filter(|q| q.status == 422)
        .map(|q| q.response_body.clone())
        .collect();
    assert!(
        refused.is_empty(),
        "a call carried a contact twice: {refused:?}"
    );
    let jan: Vec<String> = se
        .triggered_events()
        .iter()
        .filter(|t| {
            t["emailaddress"].as_str().map(str::to_lowercase).as_deref() == Some("jan@example.com")
        })
        .map(|t| t["payload"]["n"].to_string())
        .collect();
    assert_eq!(
        jan,
        ["0", "2", "4"],
        "jan's triggers in the order of the events"
    );
    assert_eq!(se.imported_contacts().len(), 5);
    assert!(se.calls_to("/trigger-event") >= 3 && se.calls_to("/import") >= 3);
}
