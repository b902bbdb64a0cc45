//! Deliveries end to end: every action's request shape at a strict fake SmartEmailing,
//! duplicates, coalescing, retries, dead letters, replays, chains and hostile data.

mod support;

use relay_shared::domain::delivery::DeliveryId;
use relay_shared::pipeline::dispatch::replay;
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

async fn fake() -> FakeSmartEmailing {
    FakeSmartEmailing::start(SE_USER, SE_KEY).await
}

const ALL_ACTIONS: &str = r#"
  - name: everything
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {first_name: "{{ contact.first_name }}", tier: "{{ contact.custom_fields.tier }}"}}
      - upsert_contact:
          fields: {company: "{{ data.company }}"}
          lists: [12, {id: 7, status: removed}]
          custom_fields: {3: "{{ contact.custom_fields.tier }}", 5: [1, 4]}
      - add_to_list: {list: 14}
      - remove_from_list: {list: 15}
      - unsubscribe: {list: 16}
      - move_to_list: {from: 12, to: 17}
      - send_email:
          email_id: 71
          sender: {from: shop@example.com, sender_name: Shop, reply_to: help@example.com}
          tag: welcome
          replace: {first_name: "{{ contact.first_name }}"}
          template_variables: {points: "{{ data.points }}"}
      - send_transactional_email:
          subject: "Hi {{ contact.first_name }}"
          html_body: "<p>Hi</p>"
          text_body: "Hi"
          sender: {from: shop@example.com, sender_name: Shop}
          tag: tx
      - send_sms: {sms_id: 3, tag: sms, replace: {code: "{{ data.code }}"}}
      - upsert_order:
          eshop_name: shop
          eshop_code: "{{ data.order_id }}"
          status: placed
          items: "{{ data.items }}"
"#;

fn rich_event(id: &str) -> Value {
    json!({
        "id": id, "type": "contact.created",
        "contact": {"email": "jan@example.com", "first_name": "Jan", "last_name": "Novák",
                    "phone": "+420720123456", "birthday": "1990-05-17", "language": "cs_CZ",
                    "custom_fields": {"tier": "gold"}},
        "data": {"company": "ACME", "points": 42, "code": "X1", "order_id": "A-17",
                 "items": [{"id": "SKU-1", "name": "Mug", "price": {"without_vat": 200, "with_vat": 242, "currency": "CZK"}, "quantity": 2, "url": "https://shop.example.com/p/mug"}]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_reaches_smartemailing_in_its_shape() {
    let se = fake().await;
    let r = TestRelay::start(&config_yaml(&se.base_url(), ALL_ACTIONS), bundle(true)).await;
    let (s, body) = r.post("/v1/events", &rich_event("all-1")).await;
    assert_eq!(s, 202, "{body}");
    let deliveries = r.wait_settled("all-1", 10).await;
    for d in &deliveries {
        assert_eq!(d["status"], "sent", "{d}");
        assert_eq!(d["attempts"], 1);
        assert!(d["sent_at"].is_string());
    }
    // Every call carried the account's Basic auth (the fake refuses anything else).
    for req in se.requests() {
        assert_eq!(
            req.status / 100,
            2,
            "{} answered {}: {}",
            req.path,
            req.status,
            req.response_body
        );
    }
    assert_eq!(
        se.items_at("/trigger-event"),
        vec![
            json!({"emailaddress": "jan@example.com", "name": "welcome", "payload": {"first_name": "Jan", "tier": "gold"}})
        ]
    );
    let imports = se.items_at("/import");
    assert_eq!(imports.len(), 5, "{imports:?}");
    let upsert = imports
        .iter()
        .find(|c| c.get("company").is_some())
        .expect("the upsert");
    assert_eq!(upsert["name"], "Jan");
    assert_eq!(upsert["surname"], "Novák");
    assert_eq!(upsert["cellphone"], "+420720123456");
    assert_eq!(upsert["birthday"], "1990-05-17 00:00:00");
    assert_eq!(
        upsert["contactlists"],
        json!([{"id": 12, "status": "confirmed"}, {"id": 7, "status": "removed"}])
    );
    assert_eq!(
        upsert["customfields"],
        json!([{"id": 3, "value": "gold"}, {"id": 5, "options": [1, 4]}])
    );
    let lists: Vec<Value> = imports
        .iter()
        .filter(|c| c.get("company").is_none())
        .map(|c| c["contactlists"].clone())
        .collect();
    for expected in [
        json!([{"id": 14, "status": "confirmed"}]),
        json!([{"id": 15, "status": "removed"}]),
        json!([{"id": 16, "status": "unsubscribed"}]),
        json!([{"id": 12, "status": "removed"}, {"id": 17, "status": "confirmed"}]),
    ] {
        assert!(lists.contains(&expected), "{expected} not in {lists:?}");
    }
    // All list changes share the same settings, so they went out as one /import call.
    let import_calls = se.requests_to("/import");
    assert!(import_calls
        .iter()
        .all(|c| c.body["settings"]["preserve_unsubscribed"] == true));
    let email = &se.requests_to("/send/custom-emails-bulk")[0].body;
    assert_eq!(email["email_id"], 71);
    assert_eq!(
        email["sender_credentials"],
        json!({"from": "shop@example.com", "sender_name": "Shop", "reply_to": "help@example.com"})
    );
    assert_eq!(
        email["tasks"][0]["recipient"],
        json!({"emailaddress": "jan@example.com"})
    );
    assert_eq!(
        email["tasks"][0]["replace"],
        json!([{"key": "first_name", "content": "Jan"}])
    );
    assert_eq!(
        email["tasks"][0]["template_variables"],
        json!({"points": 42})
    );
    let tx = &se.requests_to("/send/transactional-emails-bulk")[0].body;
    assert_eq!(tx["message_contents"]["subject"], "Hi Jan");
    assert_eq!(tx["tasks"][0]["replace"], json!([]));
    let sms = &se.requests_to("/send/custom-sms-bulk")[0].body;
    assert_eq!(sms["sms_id"], 3);
    assert_eq!(sms["tasks"][0]["recipient"]["cellphone"], "+420720123456");
    let order = &se.requests_to("/import-orders")[0].body;
    assert_eq!(order["data"][0]["eshop_code"], "A-17");
    assert_eq!(order["data"][0]["emailaddress"], "jan@example.com");
    assert_eq!(order["data"][0]["items"][0]["quantity"], 2);
}

const TRIGGER: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {first_name: "{{ contact.first_name }}"}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_is_not_dispatched_twice() {
    let se = fake().await;
    let r = TestRelay::start(&config_yaml(&se.base_url(), TRIGGER), bundle(true)).await;
    let ev = event("dup-1", "contact.created", "jan@example.com");
    assert_eq!(r.post("/v1/events", &ev).await.0, 202);
    r.wait_settled("dup-1", 1).await;
    let (_, again) = r.post("/v1/events", &ev).await;
    assert_eq!(again["results"][0]["status"], "duplicate");
    // A second, different event proves the pipeline kept running after the duplicate.
    assert_eq!(
        r.post(
            "/v1/events",
            &event("dup-2", "contact.created", "eva@example.com")
        )
        .await
        .0,
        202
    );
    r.wait_settled("dup-2", 1).await;
    let names: Vec<String> = se
        .triggered_events()
        .iter()
        .map(|t| t["emailaddress"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["jan@example.com", "eva@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_events_reach_smartemailing_in_a_handful_of_calls() {
    let se = fake().await;
    let r = TestRelay::start(&config_yaml(&se.base_url(), TRIGGER), bundle(true)).await;
    let events: Vec<Value> = (0..200)
        .map(|i| {
            event(
                &format!("c-{i}"),
                "contact.created",
                &format!("c{i}@example.com"),
            )
        })
        .collect();
    for chunk in events.chunks(100) {
        let (s, _) = r.post("/v1/events", &json!({"events": chunk})).await;
        assert_eq!(s, 202);
    }
    assert!(
        se.wait_for_items("/trigger-event", 200, PATIENCE).await,
        "only {} arrived",
        se.triggered_events().len()
    );
    let calls = se.calls_to("/trigger-event");
    assert!(calls <= 5, "200 events took {calls} calls");
    let mut emails: Vec<String> = se
        .triggered_events()
        .iter()
        .map(|t| t["emailaddress"].as_str().unwrap().to_string())
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), 200, "every event exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_sent() {
    let se = fake().await;
    let r = TestRelay::start(&config_yaml(&se.base_url(), TRIGGER), bundle(true)).await;
    se.push_fault(Fault::status(503));
    se.push_fault(Fault::status(429).with_header("Retry-After", "0"));
    se.push_fault(Fault::reset());
    assert_eq!(
        r.post(
            "/v1/events",
            &event("r-1", "contact.created", "jan@example.com")
        )
        .await
        .0,
        202
    );
    let d = r.wait_settled("r-1", 1).await;
    assert_eq!(d[0]["status"], "sent", "{d:?}");
    assert_eq!(d[0]["attempts"], 4);
    assert_eq!(se.triggered_events().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried() {
    let se = fake().await;
    let r = TestRelay::start(&config_yaml(&se.base_url(), TRIGGER), bundle(true)).await;
    // The relay's timeout is 2 s; this answer comes after 5 s.
    se.push_fault(Fault::status(503).with_delay(Duration::from_secs(5)));
    assert_eq!(
        r.post(
            "/v1/events",
            &event("t-1", "contact.created", "jan@example.com")
        )
        .await
        .0,
        202
    );
    let d = r.wait_settled("t-1", 1).await;
    assert_eq!(d[0]["status"], "sent", "{d:?}");
    assert_eq!(d[0]["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_and_permanent_errors_end_dead_with_the_reason() {
    let se = fake().await;
    let r = TestRelay::start(&config_yaml(&se.base_url(), TRIGGER), bundle(true)).await;
    se.fail_next(4, Fault::status(500));
    assert_eq!(
        r.post(
            "/v1/events",
            &event("x-1", "contact.created", "jan@example.com")
        )
        .await
        .0,
        202
    );
    let d = r.wait_settled("x-1", 1).await;
    assert_eq!(d[0]["status"], "dead");
    assert_eq!(d[0]["attempts"], 4, "one attempt and three retries");
    assert!(
        d[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{d:?}"
    );

    se.push_fault(Fault::status(200).with_body(
        json!({"status": "error", "meta": [], "message": "Emailaddress is blacklisted"}),
    ));
    assert_eq!(
        r.post(
            "/v1/events",
            &event("x-2", "contact.created", "eva@example.com")
        )
        .await
        .0,
        202
    );
    let d = r.wait_settled("x-2", 1).await;
    assert_eq!(d[0]["status"], "dead");
    assert_eq!(d[0]["attempts"], 1, "a permanent error is not retried");
    assert!(
        d[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("Emailaddress is blacklisted"),
        "{d:?}"
    );
    assert_eq!(se.triggered_events().len(), 0);

    // Replaying sends them with their original ids; a second replay sends nothing more.
    let ids: Vec<DeliveryId> = ["x-1", "x-2"]
        .iter()
        .map(|e| {
            DeliveryId::derive(
                &relay_shared::domain::event::EventId::parse(e).unwrap(),
                "welcome",
                0,
            )
        })
        .collect();
    let store = r.relay().store.clone();
    let queued = replay(r.config(), &store, &store, &store, &ids, r.clock.now())
        .await
        .unwrap();
    assert_eq!(queued.len(), 2);
    r.wait_for_event("x-2", |d| d[0]["status"] == "sent").await;
    r.wait_for_event("x-1", |d| d[0]["status"] == "sent").await;
    let again = replay(r.config(), &store, &store, &store, &ids, r.clock.now())
        .await
        .unwrap();
    assert!(again.is_empty(), "sent deliveries are never replayed");
    assert_eq!(se.triggered_events().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_contact_does_not_sink_the_bulk_call() {
    let se = fake().await;
    let r = TestRelay::start(&config_yaml(&se.base_url(), TRIGGER), bundle(true)).await;
    se.reject_emails(&["bad@example.com"]);
    let emails = [
        "a@example.com",
        "b@example.com",
        "bad@example.com",
        "c@example.com",
        "d@example.com",
    ];
    let events: Vec<Value> = emails
        .iter()
        .enumerate()
        .map(|(i, e)| event(&format!("s-{i}"), "contact.created", e))
        .collect();
    assert_eq!(
        r.post("/v1/events", &json!({"events": events})).await.0,
        202
    );
    for i in 0..5 {
        r.wait_settled(&format!("s-{i}"), 1).await;
    }
    let (_, bad) = r.get("/v1/events/s-2").await;
    assert_eq!(bad["deliveries"][0]["status"], "dead");
    assert!(
        bad["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("Invalid emailaddress: bad@example.com"),
        "{bad}"
    );
    let mut sent: Vec<String> = se
        .triggered_events()
        .iter()
        .map(|t| t["emailaddress"].as_str().unwrap().to_string())
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            "a@example.com",
            "b@example.com",
            "c@example.com",
            "d@example.com"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_is_reloaded_once_then_dead_and_replayable_after_the_fix() {
    let se = fake().await;
    let r = TestRelay::start(&config_yaml(&se.base_url(), TRIGGER), bundle(true)).await;
    se.set_api_key("rotated-key");
    assert_eq!(
        r.post(
            "/v1/events",
            &event("a-1", "contact.created", "jan@example.com")
        )
        .await
        .0,
        202
    );
    let d = r.wait_settled("a-1", 1).await;
    assert_eq!(d[0]["status"], "dead");
    assert!(
        d[0]["last_error"].as_str().unwrap().contains("401"),
        "{d:?}"
    );
    assert_eq!(
        se.requests_to("/trigger-event").len(),
        2,
        "one try, one after reloading the credentials"
    );
    // The operator fixes the key; a replay delivers.
    let mut fixed = bundle(true);
    fixed.smartemailing.as_mut().unwrap().api_key =
        relay_shared::domain::secret::Secret::new("rotated-key");
    r.credentials.replace(fixed);
    let id = DeliveryId::from_stored(d[0]["id"].as_str().unwrap());
    let store = r.relay().store.clone();
    replay(r.config(), &store, &store, &store, &[id], r.clock.now())
        .await
        .unwrap();
    r.wait_for_event("a-1", |d| d[0]["status"] == "sent").await;
    assert_eq!(se.triggered_events().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_records_everything_and_sends_nothing() {
    let se = fake().await;
    let r = TestRelay::start(&config_yaml(&se.base_url(), TRIGGER), bundle(false)).await;
    assert_eq!(
        r.post(
            "/v1/events",
            &event("d-1", "contact.created", "jan@example.com")
        )
        .await
        .0,
        202
    );
    let d = r.wait_settled("d-1", 1).await;
    assert_eq!(d[0]["status"], "dry_run");
    assert!(se.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_data_is_carried_verbatim_and_cannot_add_fields() {
    let se = fake().await;
    let rules = r#"
  - name: hostile
    on: [contact.created]
    actions:
      - trigger_event:
          name: welcome
          payload:
            note: "{{ data.note }}"
            greeting: "Hello {{ data.note }}!"
            nested: "{{ data.nested }}"
"#;
    let r = TestRelay::start(&config_yaml(&se.base_url(), rules), bundle(true)).await;
    let note = "\"}, \"admin\": true, {\"x\": \"\n\t{{ 7*7 }} {% if true %}yes{% endif %} \\ \u{0} ěščřžýáíé 🐱 \u{2028}";
    let nested = json!({"a": [1, "{{ secret }}", {"b": null}], "quote\"key": "v"});
    let mut ev = event("h-1", "contact.created", "jan@example.com");
    ev["data"] = json!({"note": note, "nested": nested});
    assert_eq!(r.post("/v1/events", &ev).await.0, 202);
    let d = r.wait_settled("h-1", 1).await;
    assert_eq!(d[0]["status"], "sent", "{d:?}");
    let sent = se.triggered_events();
    assert_eq!(sent.len(), 1);
    let payload = sent[0]["payload"].as_object().unwrap();
    assert_eq!(payload.len(), 3, "no field may be injected: {payload:?}");
    assert_eq!(payload["note"], json!(note));
    assert_eq!(payload["greeting"], json!(format!("Hello {note}!")));
    assert_eq!(payload["nested"], nested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_rule_runs_only_after_its_parent_succeeded() {
    let se = fake().await;
    let rules = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome}
      - add_to_list: {list: 12}
    then: [welcome-2]
  - name: welcome-2
    actions:
      - trigger_event: {name: welcome-2, payload: {first_name: "{{ contact.first_name }}"}}
"#;
    let r = TestRelay::start(&config_yaml(&se.base_url(), rules), bundle(true)).await;
    assert_eq!(
        r.post(
            "/v1/events",
            &event("ch-1", "contact.created", "jan@example.com")
        )
        .await
        .0,
        202
    );
    let d = r.wait_settled("ch-1", 3).await;
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d.iter().all(|x| x["status"] == "sent"), "{d:?}");
    assert_eq!(d[2]["rule"], "welcome-2");
    let names: Vec<String> = se
        .triggered_events()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["welcome", "welcome-2"]);

    // When the parent fails for good, the chain does not run.
    se.reject_emails(&["bad@example.com"]);
    assert_eq!(
        r.post(
            "/v1/events",
            &event("ch-2", "contact.created", "bad@example.com")
        )
        .await
        .0,
        202
    );
    let d = r.wait_settled("ch-2", 2).await;
    assert!(d.iter().all(|x| x["status"] == "dead"), "{d:?}");
    assert!(
        d.iter().all(|x| x["rule"] == "welcome"),
        "the chained rule must not run: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_actions_send_rendered_requests_with_secret_auth() {
    let se = fake().await;
    let collector = Collector::start().await;
    let rules = format!(
        r#"
  - name: forward
    on: [smartemailing.*]
    actions:
      - webhook:
          url: "{}/collect/{{{{ event.type }}}}"
          headers: {{X-Source: relay}}
          auth: {{bearer_secret: collector_token}}
          body: {{email: "{{{{ contact.email }}}}", data: "{{{{ data }}}}"}}
"#,
        collector.url
    );
    let r = TestRelay::start(&config_yaml(&se.base_url(), &rules), bundle(true)).await;
    collector.script.lock().unwrap().push(502);
    let (s, body) = r
        .send(
            r.http
                .post(format!(
                    "{}/v1/webhooks/smartemailing?event_name=click",
                    r.url
                ))
                .basic_auth("se", Some(API_KEY))
                .json(&json!({"emailaddress": "jan@example.com", "link": "https://x.example.com"})),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    let id = body["results"][0]["id"].as_str().unwrap().to_string();
    let d = r.wait_settled(&id, 1).await;
    assert_eq!(d[0]["status"], "sent", "{d:?}");
    assert_eq!(d[0]["attempts"], 2, "the 502 was retried");
    let got = collector.received();
    assert_eq!(got.len(), 2);
    let last = &got[1];
    assert_eq!(last.method, "POST");
    assert_eq!(last.uri, "/collect/smartemailing.click");
    assert_eq!(last.headers["authorization"], "Bearer collector-secret-77");
    assert_eq!(last.headers["x-source"], "relay");
    assert_eq!(last.headers["content-type"], "application/json");
    let sent: Value = serde_json::from_str(&last.body).unwrap();
    assert_eq!(
        sent,
        json!({"email": "jan@example.com", "data": {"emailaddress": "jan@example.com", "link": "https://x.example.com"}})
    );
    // Nothing went to SmartEmailing.
    assert!(se.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_errors_and_missing_recipients_are_visible() {
    let se = fake().await;
    let rules = r#"
  - name: needs-data
    on: [contact.created]
    actions:
      - trigger_event: {name: "x-{{ data.missing }}"}
  - name: needs-email
    on: [contact.created]
    actions:
      - trigger_event: {name: y}
"#;
    let r = TestRelay::start(&config_yaml(&se.base_url(), rules), bundle(true)).await;
    let ev = json!({"id": "te-1", "type": "contact.created", "data": {}});
    assert_eq!(r.post("/v1/events", &ev).await.0, 202);
    let d = r.wait_settled("te-1", 2).await;
    let by_rule = |n: &str| d.iter().find(|x| x["rule"] == n).unwrap().clone();
    // No e-mail: both are skipped before the template is even needed.
    assert_eq!(by_rule("needs-email")["status"], "skipped");
    assert!(by_rule("needs-email")["last_error"]
        .as_str()
        .unwrap()
        .contains("contact.email"));

    let ev = event("te-2", "contact.created", "jan@example.com");
    assert_eq!(r.post("/v1/events", &ev).await.0, 202);
    let d = r.wait_settled("te-2", 2).await;
    let broken = d.iter().find(|x| x["rule"] == "needs-data").unwrap();
    assert_eq!(broken["status"], "dead");
    let why = broken["last_error"].as_str().unwrap();
    assert!(
        why.contains("rules[needs-data].actions[0].trigger_event.name") && why.contains("missing"),
        "{why}"
    );
    assert_eq!(se.triggered_events().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_survive_a_restart() {
    let se = fake().await;
    // An outage holds the deliveries in the queue while the relay restarts.
    se.set_default_fault(Some(Fault::status(503)));
    let mut r = TestRelay::start(&config_yaml(&se.base_url(), TRIGGER), bundle(true)).await;
    for i in 0..5 {
        assert_eq!(
            r.post(
                "/v1/events",
                &event(
                    &format!("rs-{i}"),
                    "contact.created",
                    &format!("r{i}@example.com")
                )
            )
            .await
            .0,
            202
        );
    }
    r.restart().await;
    se.set_default_fault(None);
    assert!(se.wait_for_items("/trigger-event", 5, PATIENCE).await);
    for i in 0..5 {
        let d = r.wait_settled(&format!("rs-{i}"), 1).await;
        assert!(
            matches!(d[0]["status"].as_str(), Some("sent") | Some("dead")),
            "{d:?}"
        );
    }
}
