//! The management API over real sockets, on a fixed clock: admin keys and ingest keys, the
//! deliveries listed by e-mail and status and paged, one delivery with its masked request
//! and its attempts, replays, cancellations, the status, the rules and a preview of rules
//! not loaded.

mod support;

use relay_shared::ports::clock::ManualClock;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn rules(collector: &str) -> String {
    format!(
        r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {{name: welcome, payload: {{first_name: "{{{{ contact.first_name }}}}"}}}}
  - name: reminder
    on: [cart.abandoned]
    after: 1h
    actions:
      - trigger_event: {{name: cart-reminder, payload: {{}}}}
  - name: crm
    on: [crm.sync]
    actions:
      - webhook:
          url: "{collector}/hook"
          headers: {{X-Api-Key: literal-crm-key-42, X-Source: relay}}
          auth: {{bearer_secret: collector_token}}
          body: {{email: "{{{{ contact.email }}}}"}}
"#
    )
}

struct Setup {
    se: FakeSmartEmailing,
    collector: Collector,
    clock: Arc<ManualClock>,
    relay: TestRelay,
}

async fn setup() -> Setup {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let collector = Collector::start().await;
    let clock = fixed_clock();
    let relay = TestRelay::start_with_clock(
        &config_yaml(&se.base_url(), &rules(&collector.url)),
        bundle(true),
        clock.clone(),
    )
    .await;
    Setup {
        se,
        collector,
        clock,
        relay,
    }
}

/// An event on the test's clock (no `occurred_at` of its own).
fn now_event(id: &str, kind: &str, email: &str) -> Value {
    let mut e = event(id, kind, email);
    e.as_object_mut().map(|o| o.remove("occurred_at"));
    e
}

impl Setup {
    async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = &self.relay;
        r.send(
            r.http
                .get(format!("{}{path}", r.url))
                .bearer_auth(ADMIN_KEY),
        )
        .await
    }

    async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = &self.relay;
        r.send(
            r.http
                .post(format!("{}{path}", r.url))
                .bearer_auth(ADMIN_KEY)
                .json(body),
        )
        .await
    }

    /// Posts an event, lets the relay do all it can, and moves the clock on a second so the
    /// next one is newer.
    async fn accept(&self, id: &str, kind: &str, email: &str) {
        let (s, body) = self
            .relay
            .post("/v1/events", &now_event(id, kind, email))
            .await;
        assert_eq!(s, 202, "{body}");
        self.relay.settle().await;
        self.advance(1).await;
    }

    async fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
        self.relay.settle().await;
    }

    /// The deliveries of an event, as `GET /v1/events/{id}` shows them.
    async fn deliveries_of(&self, id: &str) -> Vec<Value> {
        let (s, body) = self.relay.get(&format!("/v1/events/{id}")).await;
        assert_eq!(s, 200, "{body}");
        body["deliveries"].as_array().cloned().unwrap_or_default()
    }

    async fn only_delivery_of(&self, id: &str) -> Value {
        let d = self.deliveries_of(id).await;
        assert_eq!(d.len(), 1, "{d:?}");
        d[0].clone()
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["deliveries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_key_is_refused_by_every_management_route_and_an_admin_key_reaches_the_ingest_routes(
) {
    let s = setup().await;
    let r = &s.relay;
    let routes: Vec<(&str, &str, Value)> = vec![
        ("GET", "/v1/deliveries", Value::Null),
        ("GET", "/v1/deliveries?status=dead", Value::Null),
        ("GET", "/v1/deliveries/dlv_x", Value::Null),
        ("POST", "/v1/deliveries/replay", json!({"ids": ["dlv_x"]})),
        ("POST", "/v1/deliveries/dlv_x/cancel", json!({})),
        ("GET", "/v1/status", Value::Null),
        ("GET", "/v1/rules", Value::Null),
        (
            "POST",
            "/v1/preview",
            json!({"event": now_event("p-1", "contact.created", "a@example.com"), "rules": "name: x\nactions: [{add_to_list: {list: 1}}]\n"}),
        ),
    ];
    for (method, path, body) in &routes {
        let req = |key: Option<&str>| {
            let url = format!("{}{path}", r.url);
            let mut b = if *method == "GET" {
                r.http.get(&url)
            } else {
                r.http.post(&url).json(body)
            };
            if let Some(k) = key {
                b = b.bearer_auth(k);
            }
            b
        };
        let (status, answer) = r.send(req(Some(API_KEY))).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden", "{method} {path}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("admin key")),
            "{answer}"
        );
        assert!(!answer.to_string().contains(API_KEY), "{answer}");
        let (status, _) = r.send(req(None)).await;
        assert_eq!(status, 401, "{method} {path} without a key");
        let (status, _) = r.send(req(Some("not-a-key"))).await;
        assert_eq!(status, 401, "{method} {path} with an unknown key");
    }

    // An admin key does everything an ingest key does.
    let (status, body) = s
        .admin_post(
            "/v1/events",
            &now_event("a-1", "contact.created", "jana@example.com"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = s.admin_get("/v1/events/a-1").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .admin_post(
            "/v1/preview",
            &now_event("a-2", "contact.created", "jana@example.com"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deliveries"][0]["rule"], "welcome");
    let (status, _) = r
        .send(
            r.http
                .post(format!(
                    "{}/v1/webhooks/smartemailing?event_name=click",
                    r.url
                ))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"emailaddress": "jana@example.com"})),
        )
        .await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_found_by_email_and_status_and_paged_newest_first() {
    let s = setup().await;
    for (id, email) in [
        ("l-1", "jana@example.com"),
        ("l-2", "eva@example.com"),
        ("l-3", "jana@example.com"),
        ("l-4", "jana@example.com"),
    ] {
        s.accept(id, "contact.created", email).await;
    }
    let jana: Vec<String> = {
        let mut v = Vec::new();
        for id in ["l-4", "l-3", "l-1"] {
            v.push(
                s.only_delivery_of(id).await["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        v
    };

    // The e-mail is compared trimmed and in any case.
    let (status, first) = s
        .admin_get("/v1/deliveries?email=%20JANA%40example.com&limit=2")
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(ids(&first), jana[..2]);
    let d = &first["deliveries"][0];
    assert_eq!(d["email"], "jana@example.com");
    assert_eq!(d["event_id"], "l-4");
    assert_eq!(d["event_type"], "contact.created");
    assert_eq!(d["status"], "sent");
    assert_eq!(d["chain_depth"], 0);
    assert_eq!(d["created_at"], "2026-11-18T11:06:43.000Z");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (status, second) = s
        .admin_get(&format!(
            "/v1/deliveries?email=jana@example.com&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(ids(&second), jana[2..]);
    assert_eq!(second["next_cursor"], Value::Null);

    let (_, sent) = s.admin_get("/v1/deliveries?status=sent").await;
    assert_eq!(ids(&sent).len(), 4, "{sent}");
    let (_, dead) = s.admin_get("/v1/deliveries?status=dead").await;
    assert_eq!(dead, json!({"deliveries": [], "next_cursor": null}));

    for (query, field) in [
        ("limit=501", "limit"),
        ("status=lost", "status"),
        ("cursor=not-a-cursor", "cursor"),
        ("since=last-tuesday", "since"),
    ] {
        let (status, body) = s.admin_get(&format!("/v1/deliveries?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["path"], field, "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_deliveries_are_listed_by_its_id() {
    let s = setup().await;
    for id in ["e-1", "e-2", "e-3"] {
        s.accept(id, "contact.created", "jana@example.com").await;
    }
    let of_e2 = s.only_delivery_of("e-2").await;
    let (status, body) = s.admin_get("/v1/deliveries?event_id=e-2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), vec![of_e2["id"].as_str().unwrap().to_string()]);
    assert_eq!(body["deliveries"][0]["event_id"], "e-2");
    assert_eq!(body["next_cursor"], Value::Null);
    for query in [
        "event_id=e-2&status=dead",
        "event_id=e-9",
        "event_id=e-2&email=eva@example.com",
    ] {
        let (status, body) = s.admin_get(&format!("/v1/deliveries?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), Vec::<String>::new(), "{query}: {body}");
    }
    // A filter the listing does not know names itself, and the list of those it does names
    // `event_id`.
    let (status, body) = s.admin_get("/v1/deliveries?event=e-2").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["path"], "event");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event_id"),
        "{body}"
    );
    // A replay's filter takes it too: e-2's sent delivery is not sent again.
    let (status, body) = s
        .admin_post(
            "/v1/deliveries/replay",
            &json!({"filter": {"event_id": "e-2", "status": "sent"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["already_sent"], 1, "{body}");
    assert_eq!(body["queued"], 0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_shows_its_request_masked_and_every_attempt() {
    let s = setup().await;
    s.collector.script.lock().unwrap().push(502);
    s.accept("c-1", "crm.sync", "jana@example.com").await;
    // The retry is due 50 ms later on the relay's clock.
    s.advance(1).await;
    let id = s.only_delivery_of("c-1").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, d) = s.admin_get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["status"], "sent", "{d}");
    assert_eq!(d["request"]["method"], "POST");
    assert_eq!(d["request"]["url"], format!("{}/hook", s.collector.url));
    assert_eq!(d["request"]["headers"]["Authorization"], "***");
    assert_eq!(d["request"]["headers"]["X-Api-Key"], "***");
    assert_eq!(d["request"]["headers"]["X-Source"], "relay");
    assert_eq!(d["request"]["body"], json!({"email": "jana@example.com"}));
    let shown = d.to_string();
    for secret in [
        "collector-secret-77",
        "literal-crm-key-42",
        SE_KEY,
        ADMIN_KEY,
    ] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    // The webhook itself got the real values.
    let got = s.collector.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].headers["authorization"],
        "Bearer collector-secret-77"
    );

    let log = d["attempt_log"].as_array().expect("attempts");
    assert_eq!(log.len(), 2, "{d}");
    assert_eq!(log[0]["status_code"], 502);
    assert_eq!(log[0]["class"], "retry");
    assert!(log[0]["reason"].is_string(), "{d}");
    assert_eq!(log[1]["status_code"], 200);
    assert_eq!(log[1]["class"], "success");
    assert!(
        log[0]["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{d}"
    );
    assert!(log[1]["duration_ms"].is_u64(), "{d}");

    let (status, body) = s.admin_get("/v1/deliveries/dlv_nothing").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_delivery_is_replayed_after_the_fake_recovers_and_a_sent_one_is_not_resent() {
    let s = setup().await;
    s.accept("r-1", "contact.created", "eva@example.com").await;
    let blacklisted = || {
        Fault::status(200).with_body(
            json!({"status": "error", "meta": [], "message": "Emailaddress is blacklisted"}),
        )
    };
    s.se.push_fault(blacklisted());
    s.accept("r-2", "contact.created", "jana@example.com").await;
    s.se.push_fault(blacklisted());
    s.accept("r-3", "contact.created", "jana@example.com").await;
    let sent = s.only_delivery_of("r-1").await;
    let dead = s.only_delivery_of("r-2").await;
    assert_eq!(sent["status"], "sent");
    assert_eq!(dead["status"], "dead", "{dead}");
    let calls = s.se.calls_to("/trigger-event");

    // An unknown id: nothing is replayed.
    let (status, body) = s
        .admin_post(
            "/v1/deliveries/replay",
            &json!({"ids": [dead["id"], "dlv_unknown"]}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("dlv_unknown"));
    s.relay.settle().await;
    assert_eq!(s.only_delivery_of("r-2").await["status"], "dead");

    let (status, body) = s
        .admin_post(
            "/v1/deliveries/replay",
            &json!({"ids": [dead["id"], sent["id"]]}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"queued": 1, "already_sent": 1}))
    );
    s.relay.settle().await;
    assert_eq!(s.only_delivery_of("r-2").await["status"], "sent");
    assert_eq!(
        s.only_delivery_of("r-1").await["attempts"],
        1,
        "never resent"
    );
    assert_eq!(s.se.calls_to("/trigger-event"), calls + 1);

    // By filter: the dead ones of a rule (dead is what a filter replays unless it says).
    let (status, body) = s
        .admin_post(
            "/v1/deliveries/replay",
            &json!({"filter": {"rule": "welcome"}}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"queued": 1, "already_sent": 0}))
    );
    s.relay.settle().await;
    assert_eq!(s.only_delivery_of("r-3").await["status"], "sent");
    let (status, body) = s
        .admin_post(
            "/v1/deliveries/replay",
            &json!({"filter": {"status": "sent", "rule": "welcome"}}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"queued": 0, "already_sent": 3}))
    );

    for body in [
        json!({}),
        json!({"ids": [], "filter": {}}),
        json!({"ids": "dlv_x"}),
        json!({"filter": {"status": "lost"}}),
    ] {
        let (status, answer) = s.admin_post("/v1/deliveries/replay", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_scheduled_delivery_is_never_sent() {
    let s = setup().await;
    s.accept("k-1", "cart.abandoned", "jana@example.com").await;
    let d = s.only_delivery_of("k-1").await;
    assert_eq!(d["status"], "scheduled", "{d}");
    let id = d["id"].as_str().unwrap().to_string();

    let (status, body) = s
        .admin_post(&format!("/v1/deliveries/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["id"], id.as_str());
    let (status, body) = s
        .admin_post(&format!("/v1/deliveries/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_scheduled");
    let (status, _) = s
        .admin_post("/v1/deliveries/dlv_nothing/cancel", &json!({}))
        .await;
    assert_eq!(status, 404);

    // The timer's job comes due and finds it cancelled: nothing is sent.
    s.advance(2 * 3600).await;
    assert_eq!(s.se.calls_to("/trigger-event"), 0);
    assert_eq!(s.only_delivery_of("k-1").await["status"], "cancelled");
    assert_eq!(
        s.relay
            .relay()
            .store
            .queue_depth(relay_shared::ports::queue::QueueName::Dispatch)
            .unwrap(),
        0
    );

    // Once due it may be being sent: it is not cancelled, whether the dispatcher has taken
    // it yet or not, and it is sent.
    s.accept("k-3", "cart.abandoned", "eva@example.com").await;
    let due = s.only_delivery_of("k-3").await;
    s.clock.advance(Duration::from_secs(3600));
    let (status, body) = s
        .admin_post(
            &format!("/v1/deliveries/{}/cancel", due["id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_scheduled");
    s.relay.settle().await;
    assert_eq!(s.only_delivery_of("k-3").await["status"], "sent");
    assert_eq!(s.se.calls_to("/trigger-event"), 1);

    // A sent one cannot be cancelled.
    s.accept("k-2", "contact.created", "jana@example.com").await;
    let sent = s.only_delivery_of("k-2").await;
    let (status, _) = s
        .admin_post(
            &format!("/v1/deliveries/{}/cancel", sent["id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_queues_the_counts_and_the_rules() {
    let s = setup().await;
    s.accept("s-1", "contact.created", "jana@example.com").await;
    s.accept("s-2", "cart.abandoned", "jana@example.com").await;
    let (status, body) = s.admin_get("/v1/status").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dry_run"], false);
    assert_eq!(body["platform"], "local");
    assert!(body["version"].is_string());
    assert!(body["note"].is_string());
    assert_eq!(body["rules"], json!(["welcome", "reminder", "crm"]));
    assert_eq!(
        body["queues"],
        // The scheduled delivery's job waits in the dispatch queue, not due yet.
        json!([
            {"queue": "render", "depth": 0, "oldest_due_age_seconds": null},
            {"queue": "dispatch", "depth": 1, "oldest_due_age_seconds": null},
        ])
    );
    let hour = &body["deliveries"]["last_hour"];
    assert_eq!(hour["sent"], 1, "{body}");
    assert_eq!(hour["scheduled"], 1, "{body}");
    assert_eq!(hour["dead"], 0, "{body}");
    assert_eq!(body["deliveries"]["last_day"]["sent"], 1);
    assert_eq!(body["dead_last_day"], 0);
    assert!(body["targets"].is_array());

    // Two hours later the last hour's counts are empty.
    s.advance(2 * 3600).await;
    let (_, later) = s.admin_get("/v1/status").await;
    assert_eq!(later["deliveries"]["last_hour"]["sent"], 0, "{later}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_are_shown_as_written() {
    let s = setup().await;
    let (status, body) = s.admin_get("/v1/rules").await;
    assert_eq!(status, 200, "{body}");
    let rules = body["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0]["name"], "welcome");
    assert_eq!(rules[0]["on"], json!(["contact.created"]));
    assert_eq!(
        rules[0]["actions"][0],
        json!({"kind": "trigger_event", "name": "welcome", "payload": {"first_name": "{{ contact.first_name }}"}})
    );
    assert_eq!(rules[1]["after"], "1h");
    assert_eq!(
        rules[2]["actions"][0]["auth"],
        json!({"bearer_secret": "collector_token"})
    );
    assert!(!body.to_string().contains("collector-secret-77"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_of_rules_renders_them_and_names_a_broken_templates_field() {
    let s = setup().await;
    let ev = now_event("pv-1", "order.placed", "jana@example.com");
    let rules = "- name: try-it\n  on: [order.placed]\n  actions:\n    - trigger_event: {name: ordered, payload: {who: '{{ contact.first_name }}'}}\n";
    let (status, body) = s
        .admin_post("/v1/preview", &json!({"event": ev, "rules": rules}))
        .await;
    assert_eq!(status, 200, "{body}");
    let d = body["deliveries"].as_array().unwrap();
    assert_eq!(d.len(), 1, "only the rules given: {body}");
    assert_eq!(d[0]["rule"], "try-it");
    assert_eq!(d[0]["request"]["headers"]["Authorization"], "***");
    assert_eq!(
        d[0]["request"]["body"][0]["payload"],
        json!({"who": "Jan"}),
        "{body}"
    );
    // Stored and sent nothing.
    assert_eq!(s.relay.get("/v1/events/pv-1").await.0, 404);
    assert_eq!(s.se.requests().len(), 0);

    let broken = "- name: try-it\n  on: [order.placed]\n  actions:\n    - trigger_event: {name: ordered, payload: {who: '{{ contact.first_nam }}'}}\n";
    let (status, body) = s
        .admin_post("/v1/preview", &json!({"event": ev, "rules": broken}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_rules");
    assert_eq!(
        body["error"]["path"],
        "rules[try-it].actions[0].trigger_event.payload.who"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean first_name?"),
        "{body}"
    );
    let (status, body) = s
        .admin_post(
            "/v1/preview",
            &json!({"event": {"type": "x"}, "rules": rules}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["path"]
            .as_str()
            .unwrap()
            .starts_with("/event"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_serve_takes_its_admin_keys_from_relay_admin_keys() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relay.yaml");
    std::fs::write(
        &config,
        config_yaml(&se.base_url(), &rules("http://127.0.0.1:9")),
    )
    .unwrap();
    let port = free_port();
    let mut child = spawn_relay(
        &config,
        &dir.path().join("state"),
        port,
        "warn",
        std::process::Stdio::null(),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&url).await;
    let http = reqwest::Client::new();
    let get = |key: &'static str| http.get(format!("{url}/v1/rules")).bearer_auth(key).send();
    let admin = get(ADMIN_KEY).await.expect("an answer");
    let ingest = get(API_KEY).await.expect("an answer");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(admin.status(), 200);
    assert_eq!(ingest.status(), 403);
}

/// Both local queues (SQLite, memory) tell their depth and the age of their oldest due
/// message the same way.
#[tokio::test]
async fn a_queue_tells_its_depth_and_how_long_its_oldest_due_message_waited() {
    use relay_shared::adapters::memory::MemoryStore;
    use relay_shared::adapters::sqlite::SqliteStore;
    use relay_shared::ports::clock::Clock;
    use relay_shared::ports::queue::{QueueDepth, QueueName};
    use relay_shared::ports::Queue;

    let clock = fixed_clock();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(dir.path(), clock.clone()).expect("a store");
    let memory = MemoryStore::new(clock.clone());
    let queues: [(&str, &dyn Queue); 2] = [("sqlite", &sqlite), ("memory", &memory)];
    let hour = Duration::from_secs(3600);
    for (name, q) in queues {
        q.send(
            QueueName::Dispatch,
            vec!["a".into(), "b".into()],
            Duration::ZERO,
        )
        .await
        .unwrap();
        q.send(QueueName::Dispatch, vec!["later".into()], hour)
            .await
            .unwrap();
        clock.advance(Duration::from_secs(90));
        let now = clock.now_ms();
        assert_eq!(
            q.depth(QueueName::Dispatch, now).await.unwrap(),
            QueueDepth {
                messages: Some(3),
                oldest_due_age_ms: Some(90_000)
            },
            "{name}"
        );
        assert_eq!(
            q.depth(QueueName::Render, now).await.unwrap(),
            QueueDepth {
                messages: Some(0),
                oldest_due_age_ms: None
            },
            "{name}"
        );
        // Taken (hidden while worked on), the due ones are no longer waiting.
        let taken = q
            .receive(QueueName::Dispatch, 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(taken.len(), 2, "{name}");
        let d = q.depth(QueueName::Dispatch, now).await.unwrap();
        assert_eq!(
            d,
            QueueDepth {
                messages: Some(3),
                oldest_due_age_ms: None
            },
            "{name}"
        );
        let handles: Vec<String> = taken.into_iter().map(|m| m.handle).collect();
        q.ack(QueueName::Dispatch, &handles).await.unwrap();
        clock.advance(hour);
    }
}
