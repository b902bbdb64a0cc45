//! Hostile input, signed webhooks, SSRF and header injection, and a full run whose every
//! output is searched for the secrets.

mod support;

use relay_shared::domain::secret::Secret;
use relay_shared::security::signature::{sign, WebhookSecret};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {note: "{{ data.note | default(value='') }}"}}
"#;

async fn raw(r: &TestRelay, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    r.send(
        r.http
            .post(format!("{}/v1/events", r.url))
            .bearer_auth(API_KEY)
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

#[tokio::test]
async fn hostile_bodies_get_a_clear_answer_and_nothing_is_stored() {
    let r = TestRelay::start(
        &config_yaml("http://127.0.0.1:9/api/v3", RULES),
        bundle(false),
    )
    .await;
    let deep = format!(
        "{{\"id\":\"deep\",\"type\":\"t\",\"data\":{}1{}}}",
        "{\"a\":".repeat(100),
        "}".repeat(100)
    );
    let many: String = (0..1500)
        .map(|i| format!("\"k{i}\":1"))
        .collect::<Vec<_>>()
        .join(",");
    // (what, body, content type, status, code, path)
    type Case<'a> = (&'a str, Vec<u8>, &'a str, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "oversized",
            format!(
                "{{\"id\":\"big\",\"type\":\"t\",\"data\":{{\"x\":\"{}\"}}}}",
                "x".repeat(1_100_000)
            )
            .into_bytes(),
            "application/json",
            413,
            "payload_too_large",
            None,
        ),
        (
            "deeply nested",
            deep.into_bytes(),
            "application/json",
            400,
            "too_deep",
            None,
        ),
        (
            "NaN",
            br#"{"id":"nan","type":"t","data":{"x":NaN}}"#.to_vec(),
            "application/json",
            400,
            "bad_json",
            None,
        ),
        (
            "Infinity",
            br#"{"id":"inf","type":"t","data":{"x":Infinity}}"#.to_vec(),
            "application/json",
            400,
            "bad_json",
            None,
        ),
        (
            "huge integer",
            br#"{"id":"huge","type":"t","data":{"x":123456789012345678901234567890}}"#.to_vec(),
            "application/json",
            400,
            "number_out_of_range",
            Some("/data/x"),
        ),
        (
            "huge float",
            br#"{"id":"hugef","type":"t","data":{"x":1e400}}"#.to_vec(),
            "application/json",
            400,
            "number_out_of_range",
            Some("/data/x"),
        ),
        (
            "duplicate key",
            br#"{"id":"a","id":"b","type":"t"}"#.to_vec(),
            "application/json",
            400,
            "duplicate_key",
            Some("/id"),
        ),
        (
            "invalid UTF-8",
            b"{\"id\":\"u\",\"type\":\"t\",\"data\":{\"x\":\"\xff\xfe\"}}".to_vec(),
            "application/json",
            400,
            "invalid_utf8",
            None,
        ),
        (
            "lone surrogate",
            br#"{"id":"s","type":"t","data":{"x":"\ud800"}}"#.to_vec(),
            "application/json",
            400,
            "bad_json",
            None,
        ),
        (
            "NUL in the id",
            br#"{"id":"a\u0000b","type":"t"}"#.to_vec(),
            "application/json",
            400,
            "invalid_field",
            Some("/id"),
        ),
        (
            "too many fields",
            format!("{{\"id\":\"f\",\"type\":\"t\",\"data\":{{{many}}}}}").into_bytes(),
            "application/json",
            413,
            "too_many_fields",
            Some("/data/k1000"),
        ),
        (
            "a long string",
            format!(
                "{{\"id\":\"l\",\"type\":\"t\",\"data\":{{\"x\":\"{}\"}}}}",
                "y".repeat(70_000)
            )
            .into_bytes(),
            "application/json",
            413,
            "string_too_long",
            Some("/data/x"),
        ),
        (
            "not JSON at all",
            b"<xml/>".to_vec(),
            "application/json",
            400,
            "bad_json",
            None,
        ),
        (
            "wrong content type",
            br#"{"id":"ct","type":"t"}"#.to_vec(),
            "text/plain",
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "form on the events route",
            b"id=x&type=t".to_vec(),
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "a bare array",
            b"[1,2]".to_vec(),
            "application/json",
            400,
            "invalid_field",
            Some(""),
        ),
    ];
    for (name, body, ctype, status, code, path) in cases {
        let (s, answer) = raw(&r, ctype, body).await;
        assert_eq!(s, status, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{name}: {answer}");
        if let Some(p) = path {
            assert_eq!(answer["error"]["path"], p, "{name}: {answer}");
        }
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    for id in [
        "big", "deep", "nan", "inf", "huge", "hugef", "a", "b", "u", "s", "f", "l", "ct",
    ] {
        assert_eq!(
            r.get(&format!("/v1/events/{id}")).await.0,
            404,
            "{id} must not be stored"
        );
    }
    // Template syntax, NUL and odd unicode inside data are just data.
    let ok = json!({"id": "odd", "type": "contact.created", "contact": {"email": "jan@example.com"},
                    "data": {"note": "{{ 7*7 }} {% raw %} \u{0} \u{202e} 🐱"}});
    assert_eq!(r.post("/v1/events", &ok).await.0, 202);
}

#[tokio::test]
async fn signed_routes_take_valid_signatures_only() {
    let yaml = config_yaml("http://127.0.0.1:9/api/v3", RULES).replace(
        "outbound:",
        "inbound:\n  signatures:\n    events: [cdp_signing]\noutbound:",
    );
    let mut secrets = bundle(false);
    let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    secrets.named.insert("cdp_signing".into(), Secret::new(key));
    let r = TestRelay::start(&yaml, secrets).await;
    let secret = WebhookSecret::parse(key).unwrap();
    let url = format!("{}/v1/events", r.url);
    let body = serde_json::to_vec(&event("sig-1", "contact.created", "jan@example.com")).unwrap();
    let now = chrono::Utc::now().timestamp();
    let signed = |id: &str, ts: i64, body: &[u8], sig: String| {
        r.http
            .post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.to_vec())
    };
    // A valid signature is enough; no API key needed on a signed route.
    let (s, a) = r
        .send(signed(
            "msg_1",
            now,
            &body,
            format!("v1,bm90LWl0 {}", sign(&secret, "msg_1", now, &body)),
        ))
        .await;
    assert_eq!(s, 202, "{a}");
    // The same message again (a sender's retry after a lost answer) is a duplicate: 2xx,
    // nothing runs twice.
    let (s, a) = r
        .send(signed(
            "msg_1",
            now + 30,
            &body,
            sign(&secret, "msg_1", now + 30, &body),
        ))
        .await;
    assert_eq!(
        (s, a["results"][0]["status"].clone()),
        (202, json!("duplicate")),
        "{a}"
    );
    // The same id for another body is refused with its own code.
    let other = serde_json::to_vec(&event("sig-9", "contact.created", "eva@example.com")).unwrap();
    let (s, a) = r
        .send(signed(
            "msg_1",
            now,
            &other,
            sign(&secret, "msg_1", now, &other),
        ))
        .await;
    assert_eq!(
        (s, a["error"]["code"].clone()),
        (422, json!("webhook_id_reused")),
        "{a}"
    );
    // A tampered body, a stale timestamp, another secret, no signature: refused.
    let tampered =
        serde_json::to_vec(&event("sig-1", "contact.created", "eva@example.com")).unwrap();
    let (s, _) = r
        .send(signed(
            "msg_2",
            now,
            &tampered,
            sign(&secret, "msg_2", now, &body),
        ))
        .await;
    assert_eq!(s, 401);
    let (s, a) = r
        .send(signed(
            "msg_3",
            now - 600,
            &body,
            sign(&secret, "msg_3", now - 600, &body),
        ))
        .await;
    assert_eq!(s, 401);
    assert!(
        a["error"]["message"].as_str().unwrap().contains("past"),
        "{a}"
    );
    let other = WebhookSecret::parse("whsec_b3RoZXItc2VjcmV0LWtleQ==").unwrap();
    let (s, _) = r
        .send(signed(
            "msg_4",
            now,
            &body,
            sign(&other, "msg_4", now, &body),
        ))
        .await;
    assert_eq!(s, 401);
    let (s, _) = r
        .send(r.http.post(&url).bearer_auth(API_KEY).json(&event(
            "sig-2",
            "contact.created",
            "a@example.com",
        )))
        .await;
    assert_eq!(
        s, 401,
        "a signed route needs the signature even with an API key"
    );
    assert_eq!(r.get("/v1/events/sig-2").await.0, 404);
    // Other routes still take the API key.
    assert_eq!(
        r.post(
            "/v1/preview",
            &event("p", "contact.created", "a@example.com")
        )
        .await
        .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_and_header_injection_through_event_data_are_refused() {
    let collector = Collector::start().await;
    let rules = format!(
        r#"
  - name: by-host
    on: [t.host]
    actions:
      - webhook: {{url: "https://{{{{ data.host }}}}/hook"}}
  - name: by-url
    on: [t.url]
    actions:
      - webhook: {{url: "{{{{ data.url }}}}"}}
  - name: by-path
    on: [t.path]
    actions:
      - webhook: {{url: "{}/hook/{{{{ data.path }}}}"}}
  - name: by-header
    on: [t.header]
    actions:
      - webhook: {{url: "{}/hook", headers: {{X-Note: "{{{{ data.h }}}}"}}}}
"#,
        collector.url, collector.url
    );
    let yaml = config_yaml("http://127.0.0.1:9/api/v3", &rules).replace(
        "outbound:\n  allow_loopback_http: true",
        "outbound:\n  allowed_hosts: [collector.example.com]\n  allow_loopback_http: true",
    );
    let r = TestRelay::start(&yaml, bundle(true)).await;
    let cases = [
        (
            "h-1",
            "t.host",
            json!({"host": "169.254.169.254"}),
            "not in outbound.allowed_hosts",
        ),
        (
            "h-2",
            "t.host",
            json!({"host": "collector.example.com@169.254.169.254"}),
            "",
        ),
        (
            "u-1",
            "t.url",
            json!({"url": "http://169.254.169.254/latest/meta-data/"}),
            "",
        ),
        ("u-2", "t.url", json!({"url": "file:///etc/passwd"}), ""),
        ("u-3", "t.url", json!({"url": "https://10.0.0.1/"}), ""),
        (
            "p-1",
            "t.path",
            json!({"path": "x@169.254.169.254/"}),
            "SKIP",
        ),
        (
            "x-1",
            "t.header",
            json!({"h": "ok\r\nX-Injected: 1"}),
            "control",
        ),
    ];
    for (id, kind, data, _) in &cases {
        let ev = json!({"id": id, "type": kind, "data": data});
        assert_eq!(r.post("/v1/events", &ev).await.0, 202);
    }
    for (id, _, _, why) in &cases {
        let d = r.wait_settled(id, 1).await;
        if *why == "SKIP" {
            // The template's own host stays; the data only lands in the path.
            assert_eq!(d[0]["status"], "sent", "{id}: {d:?}");
            continue;
        }
        assert_eq!(d[0]["status"], "dead", "{id}: {d:?}");
        assert!(
            d[0]["last_error"].as_str().unwrap().contains(why),
            "{id}: {d:?}"
        );
    }
    let got = collector.received();
    assert_eq!(
        got.len(),
        1,
        "only the path case reached the collector: {got:?}"
    );
    assert!(
        got[0].uri.starts_with("/hook/x@169.254.169.254"),
        "{}",
        got[0].uri
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_of_a_full_run_contains_a_secret() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let collector = Collector::start().await;
    let rules = format!(
        r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {{name: welcome}}
      - webhook: {{url: "{}/in", auth: {{bearer_secret: collector_token}}, body: {{e: "{{{{ contact.email }}}}"}}}}
"#,
        collector.url
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.yaml");
    std::fs::write(&config, config_yaml(&se.base_url(), &rules)).unwrap();
    let state = dir.path().join("state");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook_token = "se-token-never-logged-8c2f";
    let secrets = [SE_KEY, API_KEY, "collector-secret-77", hook_token];
    let child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--state"])
        .arg(&state)
        .env("RELAY_API_KEYS", API_KEY)
        .env("SMARTEMAILING_USERNAME", SE_USER)
        .env("SMARTEMAILING_API_KEY", SE_KEY)
        .env("RELAY_SECRET_COLLECTOR_TOKEN", "collector-secret-77")
        .env("RELAY_WEBHOOK_TOKENS", hook_token)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut outputs: Vec<String> = Vec::new();
    wait_healthy(&url).await;
    // A delivered event, one refused for good, a wrong key, a preview and the readings.
    se.reject_emails(&["bad@example.com"]);
    for (id, email) in [("s-1", "jan@example.com"), ("s-2", "bad@example.com")] {
        let r = http
            .post(format!("{url}/v1/events"))
            .bearer_auth(API_KEY)
            .json(&event(id, "contact.created", email))
            .send()
            .await
            .unwrap();
        outputs.push(r.text().await.unwrap());
    }
    let r = http
        .post(format!("{url}/v1/events"))
        .bearer_auth("wrong")
        .json(&event("s-3", "contact.created", "x@example.com"))
        .send()
        .await
        .unwrap();
    outputs.push(r.text().await.unwrap());
    // SmartEmailing's registered webhook, authenticated by the token in its URL, and one
    // with a wrong token: neither token may appear in any output.
    for token in [hook_token, "se-token-wrong-3b1e"] {
        let r = http
            .post(format!(
                "{url}/v1/webhooks/smartemailing/{token}?event_name=new_contact"
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("contact%5Bemailaddress%5D=hook%40example.com")
            .send()
            .await
            .unwrap();
        outputs.push(r.text().await.unwrap());
    }
    let r = http
        .post(format!("{url}/v1/preview"))
        .bearer_auth(API_KEY)
        .json(&event("s-4", "contact.created", "x@example.com"))
        .send()
        .await
        .unwrap();
    let preview = r.text().await.unwrap();
    assert!(preview.contains("***"), "{preview}");
    outputs.push(preview);
    assert!(se.wait_for_items("/trigger-event", 1, PATIENCE).await);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let body = http
            .get(format!("{url}/v1/events/s-2"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains("\"dead\"") || tokio::time::Instant::now() > deadline {
            outputs.push(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outputs.push(
        http.get(format!("{url}/v1/events/s-1"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(logs.len() > 1000, "trace logging produced output");
    outputs.push(logs);
    for args in [
        vec!["deliveries", "--json", "--limit", "0"],
        vec!["deliveries", "--status", "dead"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(&args)
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap();
        outputs.push(String::from_utf8_lossy(&o.stdout).into_owned());
        outputs.push(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let o = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["render", "--event", "events/contact.created.json"])
        .env("SMARTEMAILING_API_KEY", SE_KEY)
        .env("SMARTEMAILING_USERNAME", SE_USER)
        .output()
        .unwrap();
    outputs.push(String::from_utf8_lossy(&o.stdout).into_owned());
    // The database file itself holds no secret either.
    outputs.push(
        String::from_utf8_lossy(&std::fs::read(state.join("relay.db")).unwrap()).into_owned(),
    );
    for text in &outputs {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "a secret leaked into: {}",
                &text[..text.len().min(2000)]
            );
        }
    }
    // The collector did get its token: secrets go where they are meant to, and only there.
    assert_eq!(
        collector.received()[0].headers["authorization"],
        "Bearer collector-secret-77"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_that_resolves_to_a_private_address_is_refused_before_the_call() {
    let rules = r#"
  - name: hook
    on: [t.x]
    actions:
      - webhook: {url: "https://localhost:1/hook"}
"#;
    let yaml = config_yaml("http://127.0.0.1:9/api/v3", rules).replace(
        "outbound:\n  allow_loopback_http: true",
        "outbound:\n  allowed_hosts: [localhost]\n  allow_loopback_http: false",
    );
    let r = TestRelay::start(&yaml, bundle(true)).await;
    assert_eq!(
        r.post("/v1/events", &json!({"id": "dns-1", "type": "t.x"}))
            .await
            .0,
        202
    );
    let d = r.wait_settled("dns-1", 1).await;
    assert_eq!(d[0]["status"], "dead", "{d:?}");
    assert_eq!(d[0]["attempts"], 1, "refused without retrying");
    assert!(
        d[0]["last_error"].as_str().unwrap().contains("loopback"),
        "{d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_host_is_called_on_the_addresses_that_were_checked() {
    let collector = Collector::start().await;
    let port = collector.url.rsplit(':').next().unwrap().to_string();
    let rules = format!(
        "  - name: hook\n    on: [t.x]\n    actions:\n      - webhook: {{url: \"http://localhost:{port}/named\"}}\n"
    );
    let r = TestRelay::start(
        &config_yaml("http://127.0.0.1:9/api/v3", &rules),
        bundle(true),
    )
    .await;
    assert_eq!(
        r.post("/v1/events", &json!({"id": "n-1", "type": "t.x"}))
            .await
            .0,
        202
    );
    let d = r.wait_settled("n-1", 1).await;
    assert_eq!(d[0]["status"], "sent", "{d:?}");
    assert_eq!(collector.received()[0].uri, "/named");
}
