//! The HTTP API's answers, over real sockets: auth, validation, idempotency, preview, webhooks.

mod support;

use serde_json::{json, Value};
use support::*;

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {first_name: "{{ contact.first_name }}"}}
      - add_to_list: {list: 12}
  - name: clicks
    on: [smartemailing.click]
    actions:
      - trigger_event: {name: clicked, payload: {link: "{{ data.link | default(value='') }}"}}
"#;

async fn relay() -> TestRelay {
    // Dry run: these tests look at answers, not deliveries.
    TestRelay::start(
        &config_yaml("http://127.0.0.1:9/api/v3", RULES),
        bundle(false),
    )
    .await
}

#[tokio::test]
async fn health_needs_no_key() {
    let r = relay().await;
    let (status, body) = r.send(r.http.get(format!("{}/health", r.url))).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_refused_and_every_active_key_works() {
    let r = relay().await;
    let url = format!("{}/v1/events", r.url);
    let ev = event("k-1", "contact.created", "jan@example.com");
    let (s, body) = r.send(r.http.post(&url).json(&ev)).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (s, _) = r
        .send(r.http.post(&url).bearer_auth("nope").json(&ev))
        .await;
    assert_eq!(s, 401);
    // Basic auth is for SmartEmailing's webhooks only.
    let (s, _) = r
        .send(r.http.post(&url).basic_auth("x", Some(API_KEY)).json(&ev))
        .await;
    assert_eq!(s, 401);
    // Both keys of a rotation are accepted.
    let (s, _) = r
        .send(
            r.http
                .post(&url)
                .bearer_auth("old-key-rotated-out")
                .json(&ev),
        )
        .await;
    assert_eq!(s, 202);
    let (s, body) = r
        .send(r.http.post(&url).bearer_auth(API_KEY).json(&ev))
        .await;
    assert_eq!(s, 202);
    assert_eq!(
        body,
        json!({"results": [{"id": "k-1", "status": "duplicate"}]})
    );
}

#[tokio::test]
async fn one_event_is_accepted_and_can_be_read_back() {
    let r = relay().await;
    let (s, body) = r
        .post(
            "/v1/events",
            &event("evt-1", "contact.created", "jan@example.com"),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(
        body,
        json!({"results": [{"id": "evt-1", "status": "accepted"}]})
    );
    let settled = r.wait_settled("evt-1", 2).await;
    assert_eq!(settled.len(), 2);
    for d in &settled {
        assert_eq!(d["status"], "dry_run", "{d}");
        assert_eq!(d["rule"], "welcome");
        assert!(d["id"].as_str().unwrap().starts_with("dlv_"));
    }
    let (s, body) = r.get("/v1/events/evt-1").await;
    assert_eq!(s, 200);
    assert_eq!(body["type"], "contact.created");
    assert!(body["received_at"].as_str().unwrap().ends_with('Z'));
    let actions: Vec<&str> = body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger_event", "add_to_list"]);
}

#[tokio::test]
async fn an_unknown_event_is_404() {
    let r = relay().await;
    let (s, body) = r.get("/v1/events/never-sent").await;
    assert_eq!(s, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_batch_with_one_bad_event_is_refused_whole_and_nothing_is_stored() {
    let r = relay().await;
    let mut bad = event("b-2", "contact.created", "jan@example.com");
    bad["contact"]["email"] = json!("not-an-address");
    let batch = json!({"events": [event("b-1", "contact.created", "a@example.com"), bad]});
    let (s, body) = r.post("/v1/events", &batch).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field");
    assert_eq!(body["error"]["path"], "/events/1/contact/email");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not-an-address"));
    let (s, _) = r.get("/v1/events/b-1").await;
    assert_eq!(
        s, 404,
        "the valid half of a refused batch must not be stored"
    );
}

#[tokio::test]
async fn a_batch_is_accepted_with_one_result_per_event() {
    let r = relay().await;
    let events: Vec<Value> = (0..3)
        .map(|i| event(&format!("bb-{i}"), "contact.created", "a@example.com"))
        .collect();
    let (s, _) = r
        .post("/v1/events", &json!({"events": [events[0].clone()]}))
        .await;
    assert_eq!(s, 202);
    let (s, body) = r.post("/v1/events", &json!({"events": events})).await;
    assert_eq!(s, 202);
    assert_eq!(
        body["results"],
        json!([{"id": "bb-0", "status": "duplicate"}, {"id": "bb-1", "status": "accepted"}, {"id": "bb-2", "status": "accepted"}])
    );
}

#[tokio::test]
async fn field_errors_name_the_field() {
    let r = relay().await;
    let cases = [
        (json!({"type": "contact.created"}), "/id"),
        (json!({"id": "", "type": "contact.created"}), "/id"),
        (
            json!({"id": "x".repeat(201), "type": "contact.created"}),
            "/id",
        ),
        (json!({"id": "a"}), "/type"),
        (json!({"id": "a", "type": "Contact Created"}), "/type"),
        (
            json!({"id": "a", "type": "t", "occurred_at": "yesterday"}),
            "/occurred_at",
        ),
        (json!({"id": "a", "type": "t", "data": []}), "/data"),
        (
            json!({"id": "a", "type": "t", "contact": {"birthday": "17.5.1990"}}),
            "/contact/birthday",
        ),
        (json!({"id": "a", "type": "t", "colour": "red"}), "/colour"),
    ];
    for (body, path) in cases {
        let (s, answer) = r.post("/v1/events", &body).await;
        assert_eq!(s, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["path"], path, "{body} -> {answer}");
    }
    let too_many: Vec<Value> = (0..501)
        .map(|i| event(&format!("m{i}"), "t", "a@example.com"))
        .collect();
    let (s, answer) = r.post("/v1/events", &json!({"events": too_many})).await;
    assert_eq!(s, 400);
    assert_eq!(answer["error"]["path"], "/events");
}

#[tokio::test]
async fn bad_json_wrong_type_and_oversized_bodies_are_refused() {
    let r = relay().await;
    let url = format!("{}/v1/events", r.url);
    let (s, body) = r
        .send(
            r.http
                .post(&url)
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body("{\"id\": "),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["code"], "bad_json");
    let (s, body) = r
        .send(
            r.http
                .post(&url)
                .bearer_auth(API_KEY)
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_eq!(s, 415);
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    let big = json!({"id": "big", "type": "t", "data": {"blob": "x".repeat(1024 * 1024 + 10)}});
    let (s, body) = r.post("/v1/events", &big).await;
    assert_eq!(s, 413);
    assert_eq!(body["error"]["code"], "payload_too_large");
    let (s, _) = r.get("/v1/events/big").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn the_same_id_with_another_body_is_422_and_keeps_the_first() {
    let r = relay().await;
    let first = event("same", "contact.created", "jan@example.com");
    let (s, _) = r.post("/v1/events", &first).await;
    assert_eq!(s, 202);
    let mut second = first.clone();
    second["contact"]["email"] = json!("eva@example.com");
    let (s, body) = r.post("/v1/events", &second).await;
    assert_eq!(s, 422);
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    // Key order does not make a body different.
    let reordered: Value = serde_json::from_str(
        r#"{"data":{},"contact":{"phone":"+420720123456","last_name":"Novák","first_name":"Jan","email":"jan@example.com"},"occurred_at":"2026-11-26T10:00:00Z","type":"contact.created","id":"same"}"#,
    )
    .unwrap();
    let (s, body) = r.post("/v1/events", &reordered).await;
    assert_eq!(
        (s, body["results"][0]["status"].clone()),
        (202, json!("duplicate"))
    );
    let (_, stored) = r.get("/v1/events/same").await;
    assert_eq!(stored["event"]["contact"]["email"], "jan@example.com");
}

#[tokio::test]
async fn preview_renders_masks_credentials_and_stores_nothing() {
    let r = relay().await;
    let (s, body) = r
        .post(
            "/v1/preview",
            &event("pv-1", "contact.created", "jan@example.com"),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let d = body["deliveries"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0]["rule"], "welcome");
    assert_eq!(d[0]["action"], "trigger_event");
    assert_eq!(d[0]["request"]["method"], "POST");
    assert_eq!(
        d[0]["request"]["url"],
        "http://127.0.0.1:9/api/v3/trigger-event"
    );
    assert_eq!(d[0]["request"]["headers"]["Authorization"], "***");
    assert_eq!(
        d[0]["request"]["body"],
        json!([{"emailaddress": "jan@example.com", "name": "welcome", "payload": {"first_name": "Jan"}}])
    );
    assert_eq!(
        d[1]["request"]["body"]["data"][0]["contactlists"],
        json!([{"id": 12, "status": "confirmed"}])
    );
    let (s, _) = r.get("/v1/events/pv-1").await;
    assert_eq!(s, 404, "preview must store nothing");
}

#[tokio::test]
async fn smartemailing_webhooks_become_events_with_basic_or_bearer_auth() {
    let r = relay().await;
    let url = format!("{}/v1/webhooks/smartemailing?event_name=click", r.url);
    let body = json!({"emailaddress": "jan@example.com", "link": "https://shop.example.com/sale"});
    let (s, answer) = r
        .send(
            r.http
                .post(&url)
                .basic_auth("smartemailing", Some(API_KEY))
                .json(&body),
        )
        .await;
    assert_eq!(s, 202, "{answer}");
    let id = answer["results"][0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("se-click-"), "{id}");
    // SmartEmailing retrying the same call is a duplicate.
    let (s, again) = r
        .send(r.http.post(&url).bearer_auth(API_KEY).json(&body))
        .await;
    assert_eq!(
        (s, again["results"][0]["status"].clone()),
        (202, json!("duplicate"))
    );
    let (s, stored) = r.get(&format!("/v1/events/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(stored["type"], "smartemailing.click");
    assert_eq!(stored["event"]["contact"]["email"], "jan@example.com");
    assert_eq!(
        stored["event"]["data"]["link"],
        "https://shop.example.com/sale"
    );
    // A form body works too, and the address may sit under contact.
    let (s, answer) = r
        .send(
            r.http
                .post(format!(
                    "{}/v1/webhooks/smartemailing?event_name=new_contact",
                    r.url
                ))
                .basic_auth("smartemailing", Some(API_KEY))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("email=eva%40example.com&source=form"),
        )
        .await;
    assert_eq!(s, 202, "{answer}");
    let (s, wrong) = r
        .send(
            r.http
                .post(&url)
                .basic_auth("smartemailing", Some("wrong"))
                .json(&body),
        )
        .await;
    assert_eq!(
        (s, wrong["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let (s, missing) = r
        .send(
            r.http
                .post(format!("{}/v1/webhooks/smartemailing", r.url))
                .bearer_auth(API_KEY)
                .json(&body),
        )
        .await;
    assert_eq!(
        (s, missing["error"]["path"].clone()),
        (400, json!("/event_name"))
    );
}

#[tokio::test]
async fn smartemailing_registered_webhooks_are_authenticated_by_the_token_in_their_url() {
    let r = relay().await;
    // What SmartEmailing's `new_contact` webhook posts: a PHP-style form, no header.
    let url = format!(
        "{}/v1/webhooks/smartemailing/{WEBHOOK_TOKEN}?event_name=new_contact",
        r.url
    );
    let form = "contact%5Bemailaddress%5D=jan%40example.com&contact%5Bname%5D=Jan";
    let post = |url: String| {
        r.http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
    };
    let (s, answer) = r.send(post(url.clone())).await;
    assert_eq!(s, 202, "{answer}");
    let id = answer["results"][0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("se-new_contact-"), "{id}");
    let (_, stored) = r.get(&format!("/v1/events/{id}")).await;
    assert_eq!(stored["type"], "smartemailing.new_contact");
    assert_eq!(stored["event"]["contact"]["email"], "jan@example.com");
    assert_eq!(stored["event"]["data"]["contact"]["name"], "Jan");
    // Its retry is a duplicate.
    let (s, again) = r.send(post(url)).await;
    assert_eq!(
        (s, again["results"][0]["status"].clone()),
        (202, json!("duplicate"))
    );
    // A wrong token, or none, is refused, and the answer does not echo it.
    let wrong = "not-the-token-1234";
    let (s, refused) = r
        .send(post(format!(
            "{}/v1/webhooks/smartemailing/{wrong}?event_name=new_contact",
            r.url
        )))
        .await;
    assert_eq!(
        (s, refused["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    assert!(!refused.to_string().contains(wrong), "{refused}");
    // An API key is not a token.
    let (s, _) = r
        .send(post(format!(
            "{}/v1/webhooks/smartemailing/{API_KEY}?event_name=new_contact",
            r.url
        )))
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn unknown_routes_and_methods_say_nothing_more() {
    let r = relay().await;
    let (s, body) = r.send(r.http.get(format!("{}/admin", r.url))).await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (s, body) = r
        .send(
            r.http
                .delete(format!("{}/v1/events", r.url))
                .bearer_auth(API_KEY),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (405, json!("method_not_allowed"))
    );
}
