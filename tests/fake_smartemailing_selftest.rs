//! Self-test of the fake SmartEmailing server used by the end-to-end tests.
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::fake_smartemailing::{FakeSmartEmailing, Fault};

const USER: &str = "shop@example.com";
const KEY: &str = "key-1";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(fake: &FakeSmartEmailing, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}{path}", fake.base_url()))
        .basic_auth(USER, Some(key))
        .json(body)
        .send()
        .await
        .expect("request should get an answer");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get(fake: &FakeSmartEmailing, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = client().get(format!("{}{path}", fake.base_url()));
    if let Some(key) = key {
        req = req.basic_auth(USER, Some(key));
    }
    let resp = req.send().await.expect("request should get an answer");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

fn event(email: &str, name: &str) -> Value {
    json!({"emailaddress": email, "name": name, "payload": {"order_id": "A-17"}})
}

fn valid_import() -> Value {
    json!({
        "settings": {"update": true, "add_namedays": true, "add_genders": true, "add_salutions": true,
                     "preserve_unsubscribed": true, "skip_invalid_emails": false},
        "data": [{
            "emailaddress": "jan@example.com",
            "name": "Jan", "surname": "Novák", "cellphone": "+420720123456", "language": "cs_CZ",
            "birthday": "1990-05-17 00:00:00",
            "contactlists": [{"id": 12, "status": "confirmed"}, {"id": 7, "status": "removed"}],
            "customfields": [{"id": 3, "value": "gold"}, {"id": 5, "options": [1, 4]}]
        }]
    })
}

#[tokio::test]
async fn auth_is_enforced_and_key_rotation_works() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    assert!(fake.base_url().starts_with("http://127.0.0.1:"));
    assert!(fake.base_url().ends_with("/api/v3"));

    let (status, body) = get(&fake, "/ping", None).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"status": "error", "meta": [], "message": "Unauthorized"})
    );

    let (status, _) = get(&fake, "/check-credentials", Some("wrong")).await;
    assert_eq!(status, 401);

    let (status, body) = get(&fake, "/check-credentials", Some(KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["account_id"], 123);

    // Wrong key on a POST: refused before validation, nothing accepted.
    let (status, _) = post(
        &fake,
        "/trigger-event",
        "wrong",
        &json!([event("a@b.cz", "x")]),
    )
    .await;
    assert_eq!(status, 401);
    assert!(fake.triggered_events().is_empty());

    fake.set_api_key("key-2");
    let (status, _) = get(&fake, "/ping", Some(KEY)).await;
    assert_eq!(status, 401, "the old key is no longer valid");
    let (status, body) = get(&fake, "/ping", Some("key-2")).await;
    assert_eq!(status, 200);
    assert_eq!(body["message"], "Hi there! API version 3 here!");

    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![401, 401, 200, 401, 401, 200]);
    assert_eq!(fake.accepted().len(), 2);
    assert_eq!(fake.requests()[0].path, "/ping");
    assert_eq!(fake.requests()[1].path, "/check-credentials");
}

#[tokio::test]
async fn valid_trigger_event_is_accepted_and_recorded() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    let events = json!([
        event("jan@example.com", "welcome"),
        event("eva@example.com", "welcome")
    ]);
    let (status, body) = post(&fake, "/trigger-event", KEY, &events).await;
    assert_eq!(status, 201);
    assert_eq!(body, json!({"status": "created", "meta": []}));

    assert!(
        fake.wait_for_items("/trigger-event", 2, Duration::from_secs(1))
            .await
    );
    assert_eq!(fake.calls_to("/trigger-event"), 1);
    assert_eq!(fake.triggered_events(), events.as_array().unwrap().clone());

    let rec = &fake.requests()[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/trigger-event");
    assert_eq!(rec.status, 201);
    assert_eq!(rec.body, events);
    assert_eq!(
        serde_json::from_slice::<Value>(&rec.raw_body).unwrap(),
        events
    );
    assert_eq!(rec.header("Content-Type"), Some("application/json"));
    assert!(rec.header("authorization").unwrap().starts_with("Basic "));
    assert!(rec
        .headers
        .iter()
        .all(|(k, _)| *k == k.to_ascii_lowercase()));

    // Not enough items: times out and says so.
    let started = std::time::Instant::now();
    assert!(
        !fake
            .wait_for_items("/trigger-event", 3, Duration::from_millis(200))
            .await
    );
    assert!(started.elapsed() >= Duration::from_millis(200));

    // A waiter is woken by a later call.
    let waiter = fake.wait_for_items("/trigger-event", 3, Duration::from_secs(5));
    let sender = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        post(
            &fake,
            "/trigger-event",
            KEY,
            &json!([event("x@example.com", "later")]),
        )
        .await
    };
    let (woke, (status, _)) = tokio::join!(waiter, sender);
    assert_eq!(status, 201);
    assert!(woke);
}

#[tokio::test]
async fn invalid_trigger_events_are_refused() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    let too_many: Vec<Value> = (0..501)
        .map(|i| event(&format!("u{i}@example.com"), "bulk"))
        .collect();
    let cases = vec![
        json!([]),
        json!({"events": [event("a@example.com", "x")]}),
        json!([{"emailaddress": "a@example.com"}]),
        json!([{"emailaddress": "a@example.com", "name": ""}]),
        json!([{"emailaddress": "not-an-address", "name": "x"}]),
        json!([{"emailaddress": "a@example.com", "name": "x", "payload": "str"}]),
        json!([{"emailaddress": "a@example.com", "name": "x", "extra": 1}]),
        Value::Array(too_many),
    ];
    for body in &cases {
        let (status, answer) = post(&fake, "/trigger-event", KEY, body).await;
        assert_eq!(status, 422, "body {body} should be refused");
        assert_eq!(answer["status"], "error");
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    assert!(fake.triggered_events().is_empty());
    assert_eq!(fake.requests().len(), cases.len());

    let (_, answer) = post(
        &fake,
        "/trigger-event",
        KEY,
        &json!([{"emailaddress": "a@example.com", "name": "x", "extra": 1}]),
    )
    .await;
    assert!(answer["message"].as_str().unwrap().contains("extra"));
}

#[tokio::test]
async fn import_is_validated_strictly() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;

    let mut unknown_key = valid_import();
    unknown_key["data"][0]["favourite_colour"] = json!("blue");
    let mut bad_birthday = valid_import();
    bad_birthday["data"][0]["birthday"] = json!("1990-05-17");
    let mut settings_typo = valid_import();
    settings_typo["settings"]["add_salutations"] = json!(true);
    let mut bad_list_status = valid_import();
    bad_list_status["data"][0]["contactlists"][0]["status"] = json!("subscribed");
    let mut no_email = valid_import();
    no_email["data"][0]
        .as_object_mut()
        .unwrap()
        .remove("emailaddress");
    let mut no_settings = valid_import();
    no_settings.as_object_mut().unwrap().remove("settings");
    let mut empty_data = valid_import();
    empty_data["data"] = json!([]);

    for (body, needle) in [
        (&unknown_key, "favourite_colour"),
        (&bad_birthday, "birthday"),
        (&settings_typo, "add_salutations"),
        (&bad_list_status, "status"),
        (&no_email, "emailaddress"),
        (&no_settings, "settings"),
        (&empty_data, "data"),
    ] {
        let (status, answer) = post(&fake, "/import", KEY, body).await;
        assert_eq!(status, 422, "body {body} should be refused");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should name {needle:?}"
        );
    }
    assert!(fake.imported_contacts().is_empty());
    assert_eq!(fake.calls_to("/import"), 0);

    let (status, answer) = post(&fake, "/import", KEY, &valid_import()).await;
    assert_eq!(status, 201);
    assert_eq!(answer["status"], "created");
    let map = answer["contacts_map"].as_array().unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map[0]["emailaddress"], "jan@example.com");
    let id = map[0]["contact_id"].as_u64().unwrap();
    // Same address, same contact id.
    let (_, again) = post(&fake, "/import", KEY, &valid_import()).await;
    assert_eq!(again["contacts_map"][0]["contact_id"].as_u64(), Some(id));
    assert_eq!(fake.imported_contacts().len(), 2);
    assert_eq!(fake.imported_contacts()[0], valid_import()["data"][0]);
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    let url = format!("{}/trigger-event", fake.base_url());

    // No JSON content type.
    let resp = client()
        .post(&url)
        .basic_auth(USER, Some(KEY))
        .header("content-type", "text/plain")
        .body(json!([event("a@example.com", "x")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("Content-Type"));

    // Invalid JSON.
    let resp = client()
        .post(&url)
        .basic_auth(USER, Some(KEY))
        .header("content-type", "application/json")
        .body("[{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let rec = fake.requests().pop().unwrap();
    assert_eq!(rec.body, Value::Null);
    assert_eq!(rec.raw_body, b"[{".to_vec());

    // Unknown endpoint, wrong method, double slash.
    let (status, body) = post(&fake, "/no-such-thing", KEY, &json!({})).await;
    assert_eq!((status, body["status"].as_str()), (404, Some("error")));
    let (status, _) = get(&fake, "/trigger-event", Some(KEY)).await;
    assert_eq!(status, 405);
    let (status, _) = get(&fake, "//ping", Some(KEY)).await;
    assert_eq!(status, 404);
    assert!(fake.accepted().is_empty());
}

#[tokio::test]
async fn queued_faults_replace_answers_in_order() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    let events = json!([event("jan@example.com", "welcome")]);

    fake.push_fault(Fault::status(503).with_header("Retry-After", "1"));
    let resp = client()
        .post(format!("{}/trigger-event", fake.base_url()))
        .basic_auth(USER, Some(KEY))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers().get("retry-after").unwrap().to_str().unwrap(),
        "1"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(fake.calls_to("/trigger-event"), 0);
    assert!(fake.triggered_events().is_empty());

    // The fault was used up: the retry goes through.
    let (status, _) = post(&fake, "/trigger-event", KEY, &events).await;
    assert_eq!(status, 201);
    assert_eq!(fake.calls_to("/trigger-event"), 1);

    // Faults apply even before auth, FIFO, one per request.
    fake.fail_next(2, Fault::status(500));
    fake.push_fault(Fault::error(422, "Rate limit exceeded"));
    let (s1, _) = get(&fake, "/ping", Some("wrong")).await;
    let (s2, _) = get(&fake, "/ping", Some(KEY)).await;
    let (s3, b3) = get(&fake, "/ping", Some(KEY)).await;
    let (s4, _) = get(&fake, "/ping", Some(KEY)).await;
    assert_eq!((s1, s2, s3, s4), (500, 500, 422, 200));
    assert_eq!(b3["message"], "Rate limit exceeded");

    // An outage until cleared.
    fake.set_default_fault(Some(Fault::status(502)));
    for _ in 0..3 {
        assert_eq!(post(&fake, "/trigger-event", KEY, &events).await.0, 502);
    }
    fake.set_default_fault(None);
    assert_eq!(post(&fake, "/trigger-event", KEY, &events).await.0, 201);
    assert_eq!(fake.calls_to("/trigger-event"), 2);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![503, 201, 500, 500, 422, 200, 502, 502, 502, 201]
    );
}

#[tokio::test]
async fn delayed_fault_provokes_client_timeout() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    fake.push_fault(Fault::status(201).with_delay(Duration::from_secs(2)));
    let err = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .post(format!("{}/trigger-event", fake.base_url()))
        .basic_auth(USER, Some(KEY))
        .json(&json!([event("jan@example.com", "welcome")]))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "expected a timeout, got {err:?}");
    // The fake "processed" it: the answer was lost, not the request.
    assert_eq!(fake.calls_to("/trigger-event"), 1);
}

#[tokio::test]
async fn reset_fault_surfaces_as_a_connection_error() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    let client = client();
    // Warm a keep-alive connection first, so the reset hits a pooled connection.
    assert_eq!(
        client
            .get(format!("{}/ping", fake.base_url()))
            .basic_auth(USER, Some(KEY))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    fake.push_fault(Fault::reset());
    let err = client
        .post(format!("{}/trigger-event", fake.base_url()))
        .basic_auth(USER, Some(KEY))
        .json(&json!([event("jan@example.com", "welcome")]))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout());
    assert!(err.status().is_none(), "no HTTP answer at all: {err:?}");
    assert_eq!(fake.requests().last().unwrap().status, 0);
    assert!(fake.triggered_events().is_empty());

    // The server itself keeps working.
    let resp = client
        .get(format!("{}/ping", fake.base_url()))
        .basic_auth(USER, Some(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // A delayed reset.
    fake.push_fault(Fault::reset().with_delay(Duration::from_millis(100)));
    let started = std::time::Instant::now();
    assert!(client
        .get(format!("{}/ping", fake.base_url()))
        .basic_auth(USER, Some(KEY))
        .send()
        .await
        .is_err());
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn rejected_emails_are_refused_with_422() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    fake.reject_emails(&["bad@example.com"]);

    let (status, body) = post(
        &fake,
        "/trigger-event",
        KEY,
        &json!([event("ok@example.com", "x"), event("BAD@example.com", "x")]),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"status": "error", "meta": [], "message": "Invalid emailaddress: BAD@example.com"})
    );

    let mut import = valid_import();
    import["data"][0]["emailaddress"] = json!("bad@example.com");
    let (status, body) = post(&fake, "/import", KEY, &import).await;
    assert_eq!(status, 422);
    assert_eq!(body["message"], "Invalid emailaddress: bad@example.com");

    let send = json!({
        "sender_credentials": {"from": "shop@example.com", "sender_name": "Shop", "reply_to": "help@example.com"},
        "tag": "t", "email_id": 71,
        "tasks": [{"recipient": {"emailaddress": "bad@example.com"}, "replace": []}]
    });
    let (status, _) = post(&fake, "/send/custom-emails-bulk", KEY, &send).await;
    assert_eq!(status, 422);

    assert!(fake.accepted().is_empty());
    let (status, _) = post(
        &fake,
        "/trigger-event",
        KEY,
        &json!([event("ok@example.com", "x")]),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(fake.triggered_events().len(), 1);
}

#[tokio::test]
async fn sends_and_orders_are_validated() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    let task = |e: &str| json!({"recipient": {"emailaddress": e}, "replace": [{"key": "k", "content": "v"}]});
    let creds =
        json!({"from": "shop@example.com", "sender_name": "Shop", "reply_to": "help@example.com"});

    let send = json!({"sender_credentials": creds, "tag": "t", "email_id": 71,
                      "tasks": [task("a@example.com"), task("b@example.com")]});
    let (status, body) = post(&fake, "/send/custom-emails-bulk", KEY, &send).await;
    assert_eq!(status, 201);
    assert_eq!(body["data"][1]["recipient"], "b@example.com");
    assert!(body["data"][0]["id"].is_string());

    let mut no_replace = send.clone();
    no_replace["tasks"][0]
        .as_object_mut()
        .unwrap()
        .remove("replace");
    assert_eq!(
        post(&fake, "/send/custom-emails-bulk", KEY, &no_replace)
            .await
            .0,
        422
    );

    let tx = |n: usize| {
        json!({"sender_credentials": creds,
               "message_contents": {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"},
               "tasks": (0..n).map(|i| task(&format!("u{i}@example.com"))).collect::<Vec<_>>()})
    };
    assert_eq!(
        post(&fake, "/send/transactional-emails-bulk", KEY, &tx(5))
            .await
            .0,
        201
    );
    let (status, body) = post(&fake, "/send/transactional-emails-bulk", KEY, &tx(6)).await;
    assert_eq!(status, 422);
    assert!(body["message"].as_str().unwrap().contains("at most 5"));

    let sms = json!({"tag": "t", "sms_id": 3, "tasks": [
        {"recipient": {"emailaddress": "a@example.com", "cellphone": "+420720123456"}, "replace": []}]});
    assert_eq!(post(&fake, "/send/custom-sms-bulk", KEY, &sms).await.0, 201);
    let mut sms_no_phone = sms.clone();
    sms_no_phone["tasks"][0]["recipient"]
        .as_object_mut()
        .unwrap()
        .remove("cellphone");
    assert_eq!(
        post(&fake, "/send/custom-sms-bulk", KEY, &sms_no_phone)
            .await
            .0,
        422
    );

    let order = json!({"emailaddress": "a@example.com", "eshop_name": "shop", "eshop_code": "A-17",
                       "status": "shipped"});
    let orders = json!({"settings": {"skip_invalid_orders": false}, "data": [order]});
    assert_eq!(post(&fake, "/import-orders", KEY, &orders).await.0, 201);
    let mut canceled = orders.clone();
    canceled["data"][0]["status"] = json!("canceled");
    assert_eq!(post(&fake, "/import-orders", KEY, &canceled).await.0, 422);

    assert_eq!(fake.items_at("/send/custom-emails-bulk").len(), 2);
    assert_eq!(fake.items_at("/send/transactional-emails-bulk").len(), 5);
    assert_eq!(fake.items_at("/send/custom-sms-bulk").len(), 1);
    assert_eq!(fake.items_at("/import-orders").len(), 1);
    // The running counts the waiters read agree with the items, refused calls left out.
    for path in [
        "/send/custom-emails-bulk",
        "/send/transactional-emails-bulk",
        "/send/custom-sms-bulk",
        "/import-orders",
    ] {
        assert_eq!(
            fake.item_count_at(path),
            fake.items_at(path).len(),
            "{path}"
        );
    }
    fake.clear_requests();
    assert_eq!(fake.item_count_at("/import-orders"), 0);
}

fn order_with_item() -> Value {
    json!({"settings": {"skip_invalid_orders": false}, "data": [{
        "emailaddress": "a@example.com", "eshop_name": "shop", "eshop_code": "A-18", "status": "placed",
        "created_at": "2026-11-26 11:00:00", "paid_at": null,
        "items": [{"id": "SKU-1", "name": "Mug", "quantity": 2, "unit": "pieces",
                   "price": {"without_vat": 200, "with_vat": 242, "currency": "CZK"},
                   "url": "https://shop.example.com/p/mug"}]}]})
}

#[tokio::test]
async fn order_items_need_what_the_clients_require() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    assert_eq!(
        post(&fake, "/import-orders", KEY, &order_with_item())
            .await
            .0,
        201
    );
    for key in ["id", "name", "price", "quantity", "url"] {
        let mut body = order_with_item();
        body["data"][0]["items"][0]
            .as_object_mut()
            .unwrap()
            .remove(key);
        let (status, answer) = post(&fake, "/import-orders", KEY, &body).await;
        assert_eq!(status, 422, "an item without {key} should be refused");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(key), "{message:?} should name {key:?}");
    }
    let mut empty_url = order_with_item();
    empty_url["data"][0]["items"][0]["url"] = json!("");
    assert_eq!(post(&fake, "/import-orders", KEY, &empty_url).await.0, 422);
    assert_eq!(fake.items_at("/import-orders").len(), 1);
}

#[tokio::test]
async fn dates_must_be_what_the_clients_send() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    for bad in [
        "2026-11-26T10:00:00Z",
        "2026-11-26",
        "",
        "26.11.2026 10:00:00",
    ] {
        let mut order = order_with_item();
        order["data"][0]["created_at"] = json!(bad);
        let (status, answer) = post(&fake, "/import-orders", KEY, &order).await;
        assert_eq!(status, 422, "created_at {bad:?} should be refused");
        assert!(answer["message"].as_str().unwrap().contains("created_at"));

        let mut import = valid_import();
        import["data"][0]["purposes"] = json!([{"id": 1, "valid_from": bad}]);
        let (status, answer) = post(&fake, "/import", KEY, &import).await;
        assert_eq!(status, 422, "valid_from {bad:?} should be refused");
        assert!(answer["message"].as_str().unwrap().contains("valid_from"));
    }
    let mut empty_nameday = valid_import();
    empty_nameday["data"][0]["nameday"] = json!("");
    let (status, answer) = post(&fake, "/import", KEY, &empty_nameday).await;
    assert_eq!(status, 422);
    assert!(answer["message"].as_str().unwrap().contains("empty string"));
    assert!(fake.imported_contacts().is_empty());
}

#[tokio::test]
async fn dropping_the_fake_shuts_it_down() {
    let fake = FakeSmartEmailing::start(USER, KEY).await;
    let client = client();
    let url = format!("{}/ping", fake.base_url());
    let ok = client
        .get(&url)
        .basic_auth(USER, Some(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    drop(fake);
    // Both the pooled keep-alive connection and new connections fail.
    assert!(client
        .get(&url)
        .basic_auth(USER, Some(KEY))
        .send()
        .await
        .is_err());
    assert!(reqwest::Client::new()
        .get(&url)
        .basic_auth(USER, Some(KEY))
        .send()
        .await
        .is_err());
}
