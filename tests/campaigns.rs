//! The campaigns people run, from the example config in config/relay.yaml, on a fixed clock:
//! welcome series, order status, abandoned cart, birthdays and engagement.

mod support;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use relay_shared::adapters::sqlite::SqliteStore;
use relay_shared::pipeline::birthdays::run_birthdays;
use relay_shared::pipeline::inbound::Inbound;
use relay_shared::ports::clock::{Clock, ManualClock};
use relay_shared::ports::queue::QueueName;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// The example config, with SmartEmailing and the collector pointed at local servers.
fn example_config(se: &FakeSmartEmailing, collector: &Collector) -> String {
    std::fs::read_to_string("config/relay.yaml")
        .unwrap()
        .replace("https://app.smartemailing.cz/api/v3", &se.base_url())
        .replace("https://collector.example.com", &collector.url)
        .replace(
            "max_requests_per_second: 10",
            "max_requests_per_second: 1000",
        )
        .replace("allow_loopback_http: false", "allow_loopback_http: true")
}

fn sample(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("events/{name}.json")).unwrap()).unwrap()
}

struct Campaign {
    se: FakeSmartEmailing,
    collector: Collector,
    clock: Arc<ManualClock>,
    relay: TestRelay,
}

async fn campaign(start: DateTime<Utc>) -> Campaign {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let collector = Collector::start().await;
    let clock = Arc::new(ManualClock::new(start));
    let relay = TestRelay::start_with_clock(
        &example_config(&se, &collector),
        bundle(true),
        clock.clone(),
    )
    .await;
    relay.settle().await;
    Campaign {
        se,
        collector,
        clock,
        relay,
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

impl Campaign {
    async fn post(&self, mut event: Value) {
        // The samples carry fixed times; the campaigns run on the test's clock.
        event.as_object_mut().unwrap().remove("occurred_at");
        let (s, body) = self.relay.post("/v1/events", &event).await;
        assert_eq!(s, 202, "{body}");
        self.relay.settle().await;
    }

    async fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
        self.relay.settle().await;
    }

    async fn deliveries(&self, id: &str) -> Vec<Value> {
        let (s, body) = self.relay.get(&format!("/v1/events/{id}")).await;
        assert_eq!(s, 200, "{body}");
        body["deliveries"].as_array().unwrap().clone()
    }

    fn trigger_names(&self) -> Vec<String> {
        self.se
            .triggered_events()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }
}

fn by_rule<'a>(d: &'a [Value], rule: &str) -> Vec<&'a Value> {
    d.iter().filter(|x| x["rule"] == rule).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_series_runs_over_a_week() {
    let c = campaign(at("2026-11-18T11:00:00Z")).await;
    c.post(sample("contact.created")).await;
    let d = c.deliveries("evt-2026-0001").await;
    assert!(
        by_rule(&d, "welcome").iter().all(|x| x["status"] == "sent"),
        "{d:?}"
    );
    let second = by_rule(&d, "welcome-2");
    assert_eq!(second.len(), 1, "{d:?}");
    assert_eq!(second[0]["status"], "scheduled");
    assert_eq!(second[0]["due_at"], "2026-11-21T11:00:00.000Z");
    assert_eq!(
        by_rule(&d, "welcome-3")[0]["due_at"],
        "2026-11-25T11:00:00.000Z"
    );
    assert_eq!(c.trigger_names(), ["welcome"]);
    let contact = &c.se.imported_contacts()[0];
    assert_eq!(
        contact["contactlists"],
        json!([{"id": 12, "status": "confirmed"}])
    );
    assert_eq!(contact["name"], "Jan");

    c.advance(3 * DAY - 60).await;
    assert_eq!(c.trigger_names(), ["welcome"], "nothing before its time");
    c.advance(60).await;
    assert_eq!(c.trigger_names(), ["welcome", "welcome-2"]);
    c.advance(4 * DAY).await;
    let d = c.deliveries("evt-2026-0001").await;
    assert!(d.iter().all(|x| x["status"] == "sent"), "{d:?}");
    let email = &c.se.requests_to("/send/custom-emails-bulk")[0].body;
    assert_eq!(email["email_id"], 71);
    assert_eq!(
        email["tasks"][0]["replace"],
        json!([{"key": "first_name", "content": "Jan"}])
    );
    assert_eq!(c.trigger_names(), ["welcome", "welcome-2"], "nothing twice");
}

fn order(id: &str, order_id: &str, status: &str) -> Value {
    let mut e = sample("order.status_changed");
    e["id"] = json!(id);
    e["data"]["order_id"] = json!(order_id);
    e["data"]["status"] = json!(status);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_status_triggers_per_status_and_a_later_status_ends_the_reminder() {
    let c = campaign(at("2026-11-18T11:00:00Z")).await;
    c.post(order("o-1", "A-1", "placed")).await;
    let d = c.deliveries("o-1").await;
    assert_eq!(
        by_rule(&d, "order-payment-reminder")[0]["status"],
        "scheduled"
    );
    c.advance(2 * HOUR).await;
    c.post(order("o-2", "A-1", "paid")).await;
    let d = c.deliveries("o-1").await;
    assert_eq!(
        by_rule(&d, "order-payment-reminder")[0]["status"],
        "cancelled",
        "{d:?}"
    );
    // Another order stays unpaid: its reminder fires a day later.
    c.post(order("o-3", "A-2", "placed")).await;
    c.advance(DAY).await;
    c.post(order("o-4", "A-1", "shipped")).await;
    c.post(order("o-5", "A-1", "completed")).await;
    assert_eq!(
        c.trigger_names(),
        [
            "order-placed",
            "order-paid",
            "order-placed",
            "order-payment-reminder",
            "order-shipped",
            "order-completed"
        ]
    );
    let reminder =
        c.se.triggered_events()
            .into_iter()
            .find(|t| t["name"] == "order-payment-reminder")
            .unwrap();
    assert_eq!(reminder["payload"]["order_id"], "A-2");
    let shipped =
        c.se.triggered_events()
            .into_iter()
            .find(|t| t["name"] == "order-shipped")
            .unwrap();
    assert_eq!(shipped["payload"]["payment_method"], "card");
    assert_eq!(shipped["payload"]["delivery_date"], "2026-11-28");
    assert_eq!(shipped["payload"]["items"][0]["name"], "Mug");
    let statuses: Vec<String> =
        c.se.items_at("/import-orders")
            .iter()
            .map(|o| {
                format!(
                    "{}:{}",
                    o["eshop_code"].as_str().unwrap(),
                    o["status"].as_str().unwrap()
                )
            })
            .collect();
    assert_eq!(
        statuses,
        [
            "A-1:placed",
            "A-1:processing",
            "A-2:placed",
            "A-1:shipped",
            "A-1:shipped"
        ]
    );
    // The shipped order also got its SMS.
    assert_eq!(c.se.calls_to("/send/custom-sms-bulk"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_cart_fires_after_two_hours_unless_ordered_and_survives_a_restart() {
    let mut c = campaign(at("2026-11-18T11:00:00Z")).await;
    let mut paid = sample("checkout.started");
    paid["id"] = json!("co-1");
    paid["data"]["cart_id"] = json!("cart-1");
    let mut left = sample("checkout.started");
    left["id"] = json!("co-2");
    left["contact"]["email"] = json!("jan@example.com");
    left["data"]["cart_id"] = json!("cart-2");
    c.post(paid).await;
    c.post(left).await;
    let d = c.deliveries("co-1").await;
    assert_eq!(d[0]["status"], "scheduled");
    assert_eq!(d[0]["due_at"], "2026-11-18T13:00:00.000Z");

    c.advance(HOUR).await;
    let mut ordered = sample("order.created");
    ordered["data"]["cart_id"] = json!("cart-1");
    c.post(ordered).await;
    assert_eq!(c.deliveries("co-1").await[0]["status"], "cancelled");

    // Timers are durable: a restart in the meantime changes nothing.
    c.relay.restart().await;
    c.advance(HOUR - 1).await;
    assert!(
        c.se.triggered_events().is_empty(),
        "nothing before the two hours"
    );
    c.advance(1).await;
    let sent = c.se.triggered_events();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["name"], "abandoned-cart");
    assert_eq!(sent[0]["emailaddress"], "jan@example.com");
    assert_eq!(sent[0]["payload"]["cart_id"], "cart-2");
    assert_eq!(sent[0]["payload"]["items"][0]["id"], "SKU-1");
    assert_eq!(c.deliveries("co-2").await[0]["status"], "sent");
    assert_eq!(c.deliveries("co-1").await[0]["status"], "cancelled");
}

fn contact_with_birthday(id: &str, email: &str, birthday: &str) -> Value {
    json!({"id": id, "type": "contact.updated", "contact": {"email": email, "birthday": birthday}})
}

fn reward(email: &str, year: i32) -> String {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(format!("{email}:{year}").as_bytes()));
    format!("BDAY-{}", h[..8].to_uppercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthdays_are_congratulated_once_at_eight_in_prague() {
    let c = campaign(at("2026-11-19T12:00:00Z")).await;
    c.post(contact_with_birthday(
        "b-1",
        "jan@example.com",
        "1990-11-20",
    ))
    .await;
    c.post(contact_with_birthday(
        "b-2",
        "petr@example.com",
        "1985-11-20",
    ))
    .await;
    c.post(contact_with_birthday(
        "b-3",
        "eva@example.com",
        "1992-02-29",
    ))
    .await;
    c.post(contact_with_birthday(
        "b-4",
        "ola@example.com",
        "1992-11-21",
    ))
    .await;

    // 07:59 in Prague (UTC+1): not yet.
    c.clock.set(at("2026-11-20T06:59:00Z"));
    c.advance(0).await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // one scheduler tick; nothing may happen
    c.relay.settle().await;
    assert!(c.se.triggered_events().is_empty());
    c.clock.set(at("2026-11-20T07:00:00Z"));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while c.se.triggered_events().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the 08:00 run did not happen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.relay.settle().await;
    let mut got: Vec<(String, String, Value)> =
        c.se.triggered_events()
            .iter()
            .map(|t| {
                (
                    t["emailaddress"].as_str().unwrap().to_string(),
                    t["payload"]["reward_code"].as_str().unwrap().to_string(),
                    t["payload"]["age"].clone(),
                )
            })
            .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            (
                "jan@example.com".to_string(),
                reward("jan@example.com", 2026),
                json!(36)
            ),
            (
                "petr@example.com".to_string(),
                reward("petr@example.com", 2026),
                json!(41)
            ),
        ]
    );
    let (s, ev) = c
        .relay
        .get("/v1/events/birthday:jan@example.com:2026")
        .await;
    assert_eq!((s, ev["type"].clone()), (200, json!("contact.birthday")));

    // A re-run the same day, by hand, beside the running relay: nobody twice.
    let store = c.relay.relay().store.clone();
    let inbound = Inbound::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        c.clock.clone(),
        None,
    );
    let again = run_birthdays(
        NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
        &store,
        &inbound,
        c.clock.now(),
    )
    .await
    .unwrap();
    assert_eq!((again.found, again.accepted, again.duplicates), (2, 0, 2));
    c.relay.settle().await;
    assert_eq!(c.se.triggered_events().len(), 2);

    // 29 February birthdays are celebrated on 28 February in common years.
    let leap = run_birthdays(
        NaiveDate::from_ymd_opt(2027, 2, 28).unwrap(),
        &store,
        &inbound,
        c.clock.now(),
    )
    .await
    .unwrap();
    assert_eq!((leap.found, leap.accepted), (1, 1));
    c.relay.settle().await;
    let eva: Vec<Value> =
        c.se.triggered_events()
            .into_iter()
            .filter(|t| t["emailaddress"] == "eva@example.com")
            .collect();
    assert_eq!(eva.len(), 1);
    assert_eq!(
        eva[0]["payload"]["reward_code"],
        json!(reward("eva@example.com", 2027))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_birthdays_on_one_day_are_paged_through() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 5, 17, 8, 0, 0).unwrap(),
    ));
    let store = SqliteStore::open(dir.path(), clock.clone()).unwrap();
    let born = NaiveDate::from_ymd_opt(1990, 5, 17).unwrap();
    let list: Vec<(String, NaiveDate)> = (0..100_000)
        .map(|i| (format!("c{i:06}@example.com"), born))
        .collect();
    store.remember_birthdays(&list).unwrap();
    store
        .remember_birthdays(&[(
            "other@example.com".into(),
            NaiveDate::from_ymd_opt(1990, 5, 18).unwrap(),
        )])
        .unwrap();
    let inbound = Inbound::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        clock.clone(),
        None,
    );
    let date = NaiveDate::from_ymd_opt(2026, 5, 17).unwrap();
    let report = run_birthdays(date, &store, &inbound, clock.now())
        .await
        .unwrap();
    assert_eq!(
        (report.found, report.accepted, report.duplicates),
        (100_000, 100_000, 0)
    );
    assert_eq!(store.queue_depth(QueueName::Render).unwrap(), 100_000);
    let again = run_birthdays(date, &store, &inbound, clock.now())
        .await
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 100_000));
    assert_eq!(
        store.queue_depth(QueueName::Render).unwrap(),
        100_000,
        "a re-run queues nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automation_click_step_adds_to_a_list_and_every_webhook_reaches_the_collector() {
    let c = campaign(at("2026-11-18T11:00:00Z")).await;
    let hook = |link: &str| {
        c.relay
            .http
            .post(format!(
                "{}/v1/webhooks/smartemailing?event_name=sale_link_clicked",
                c.relay.url
            ))
            .basic_auth("smartemailing", Some(API_KEY))
            .json(&json!({"emailaddress": "jan@example.com", "link": link, "campaign_id": 991}))
    };
    let (s, _) = c
        .relay
        .send(hook("https://shop.example.com/sale/winter"))
        .await;
    assert_eq!(s, 202);
    let (s, _) = c.relay.send(hook("https://shop.example.com/blog")).await;
    assert_eq!(s, 202);
    c.relay.settle().await;
    assert_eq!(
        c.se.imported_contacts(),
        vec![
            json!({"emailaddress": "jan@example.com", "contactlists": [{"id": 21, "status": "confirmed"}]})
        ]
    );
    let got = c.collector.received();
    assert_eq!(got.len(), 2);
    for g in &got {
        assert_eq!(g.uri, "/v1/smartemailing");
        assert_eq!(g.headers["authorization"], "Bearer collector-secret-77");
        let body: Value = serde_json::from_str(&g.body).unwrap();
        assert_eq!(body["type"], "smartemailing.sale_link_clicked");
        assert_eq!(body["email"], "jan@example.com");
        assert_eq!(body["data"]["campaign_id"], 991);
    }
}
