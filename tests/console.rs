//! The operator's console in a real browser (Debian's chromium, driven over WebDriver) against
//! a relay on loopback and the fake SmartEmailing: what an operator sees and can do, and that
//! hostile event data stays text. Each page is saved as a screenshot under
//! `target/console-screenshots/`.

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::webdriver::Browser;
use support::*;

/// The key the console is opened with.
const KEY: &str = ADMIN_KEY;

/// Chromium is heavy and the machine small: at most two browsers at once.
static BROWSERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {first_name: "{{ contact.first_name }}"}}
    then:
      - {rule: welcome-2, after: 3d}
  - name: welcome-2
    actions:
      - trigger_event: {name: welcome-2, payload: {first_name: "{{ contact.first_name }}"}}
"#;

fn screenshot_path(name: &str) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map_or(tmp.clone(), PathBuf::from)
        .join("console-screenshots")
        .join(format!("{name}.png"))
}

/// Where a relay answers.
trait Url {
    fn url(&self) -> &str;
}

impl Url for TestRelay {
    fn url(&self) -> &str {
        &self.url
    }
}

/// The real `relay serve`, stopped when dropped (also when a test fails).
struct Served {
    child: std::process::Child,
    url: String,
    _state: tempfile::TempDir,
}

impl Url for Served {
    fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `relay serve` (the binary, with the tests' ingest and admin keys) on the fake.
async fn served(fake: &FakeSmartEmailing) -> Served {
    let state = tempfile::tempdir().expect("tempdir");
    let config = state.path().join("relay.yaml");
    std::fs::write(&config, config_yaml(&fake.base_url(), RULES)).expect("config");
    let port = free_port();
    let child = spawn_relay(
        &config,
        &state.path().join("state"),
        port,
        "warn",
        std::process::Stdio::null(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let served = Served {
        child,
        url,
        _state: state,
    };
    wait_healthy(&served.url).await;
    served
}

/// Posts a contact.created event and waits until one of its deliveries is `status`.
async fn posted(r: &TestRelay, id: &str, email: &str, status: &str) {
    let (s, body) = r
        .post("/v1/events", &event(id, "contact.created", email))
        .await;
    assert_eq!(s, 202, "{body}");
    r.wait_for_event(id, |d| d.iter().any(|x| x["status"] == status))
        .await;
}

/// The img elements in the view and the alerts raised since the test began watching.
async fn ran_from_data(browser: &Browser) -> Value {
    browser
        .execute(
            "return document.querySelectorAll('main img').length + window.__alerts;",
            vec![],
        )
        .await
}

/// The key the tab keeps (`null` when none).
async fn stored_key(browser: &Browser) -> Value {
    browser
        .execute("return sessionStorage.getItem('relay.adminKey');", vec![])
        .await
}

/// Fails on any error the page logged, then closes the browser.
async fn no_console_error_and_quit(browser: Browser) {
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.quit().await;
}

/// A relay on the fake SmartEmailing (sending for real), and the fake.
async fn relay() -> (TestRelay, FakeSmartEmailing) {
    let fake = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let relay = TestRelay::start(&config_yaml(&fake.base_url(), RULES), bundle(true)).await;
    (relay, fake)
}

/// Opens the console, signs in with `key` and waits for the first view.
async fn signed_in(browser: &Browser, relay: &impl Url, hash: &str, key: &str) {
    browser
        .goto(&format!("{}/console{hash}", relay.url()))
        .await;
    let input = browser.wait_for("#login:not([hidden]) #admin-key").await;
    browser.type_into(&input, key, true).await;
    browser.keys("\u{E007}").await;
}

#[tokio::test]
async fn the_console_is_served_without_a_key_with_a_strict_policy_and_revalidated_caching() {
    let (r, _fake) = relay().await;
    let get = |path: &str| r.http.get(format!("{}{path}", r.url)).send();
    let resp = get("/console").await.expect("get");
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("cache-control"), "no-cache");
    let etag = header("etag");
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    let html = resp.text().await.expect("body");
    assert!(html.contains("console/app.js"));

    let again = r
        .http
        .get(format!("{}/console", r.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(again.status(), 304, "the same content is not sent twice");
    assert_eq!(again.headers()["cache-control"], "no-cache");

    let js = get("/console/app.js").await.expect("get");
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_ne!(js.headers()["etag"].to_str().ok(), Some(etag.as_str()));
    assert_eq!(js.headers()["x-content-type-options"], "nosniff");

    let (status, body) = r
        .send(r.http.get(format!("{}/console/secrets.txt", r.url)))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn relay_serve_asks_for_a_key_once_and_loads_the_page_with_no_console_error() {
    let _gate = BROWSERS.acquire().await.expect("gate");
    let fake = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let r = served(&fake).await;
    let browser = Browser::start(1280, 860).await;
    browser.goto(&format!("{}/console", r.url)).await;
    browser.wait_for("#login:not([hidden]) #login-form").await;
    assert!(browser.text_of("#login").await.contains("Admin key"));
    browser.screenshot(&screenshot_path("sign-in")).await;

    // An empty key is refused by the form itself.
    browser.click_on("#login-form button[type=submit]").await;
    browser
        .wait_text("#login-reason", "Enter an admin key")
        .await;

    signed_in(&browser, &r, "", KEY).await;
    browser.wait_for("#login[hidden]").await;
    browser.wait_for("#dead-count").await;
    browser.wait_text("#targets", "Targets").await;
    // The keyboard reaches the sections, shows where it is and opens them.
    browser
        .execute("document.querySelector('.brand').focus();", vec![])
        .await;
    browser.keys("\u{E004}\u{E004}").await;
    let focused = browser
        .execute(
            "const e = document.activeElement; return [e.textContent, getComputedStyle(e).outlineStyle];",
            vec![],
        )
        .await;
    assert_eq!(
        focused,
        json!(["Deliveries", "solid"]),
        "the focus is visible"
    );
    browser.keys("\u{E007}").await;
    browser.wait_for("#delivery-list").await;
    // The key is kept for the tab: a reload does not ask again.
    browser.goto(&format!("{}/console#/rules", r.url)).await;
    browser.wait_for("main:not([hidden])").await;
    assert!(
        browser.find("#login:not([hidden])").await.is_none(),
        "asked twice"
    );
    let stored = stored_key(&browser).await;
    assert_eq!(stored, json!(KEY));
    let cookies = browser.execute("return document.cookie;", vec![]).await;
    assert_eq!(cookies, json!(""), "no cookie");
    no_console_error_and_quit(browser).await;
}

#[tokio::test]
async fn hostile_event_data_is_shown_as_text_and_runs_nothing() {
    let _gate = BROWSERS.acquire().await.expect("gate");
    let (r, _fake) = relay().await;
    let attack = "<img src=x onerror=alert(1)>";
    let mut ev = event("evt-xss-1", "contact.created", "jana@example.com");
    ev["contact"]["first_name"] = json!(attack);
    let (s, body) = r.post("/v1/events", &ev).await;
    assert_eq!(s, 202, "{body}");
    r.wait_for_event("evt-xss-1", |d| d.iter().any(|x| x["status"] == "sent"))
        .await;

    let browser = Browser::start(1280, 860).await;
    signed_in(&browser, &r, "#/event/evt-xss-1", KEY).await;
    browser.wait_for("#chain").await;
    // The page cannot be made to run the attack: alert is watched from here on.
    browser
        .execute(
            "window.__alerts = 0; window.alert = () => { window.__alerts += 1; };",
            vec![],
        )
        .await;
    let shown = browser.wait_text("main", attack).await;
    assert!(shown.contains("welcome-2"), "{shown}");
    assert!(
        shown.contains("step 2 · after welcome, 3d later"),
        "{shown}"
    );
    let imgs = browser
        .execute(
            "return document.querySelectorAll('main img, img[src=\"x\"]').length;",
            vec![],
        )
        .await;
    assert_eq!(imgs, json!(0), "an img element was made from event data");
    assert_eq!(browser.alert_text().await, None, "an alert is open");
    let alerts = browser.execute("return window.__alerts;", vec![]).await;
    assert_eq!(alerts, json!(0));
    browser.screenshot(&screenshot_path("event")).await;

    // The request as sent carries it too, as text.
    browser.click_on("#event-deliveries a.id").await;
    browser.wait_text("#delivery-status", "sent").await;
    browser.wait_text("main", attack).await;
    assert_eq!(ran_from_data(&browser).await, json!(0));

    // And the playground, given this event, renders it as text as well.
    browser.click_on("#to-event").await;
    browser.click_on("#try-event").await;
    let out = browser.wait_text("#pg-output", "trigger-event").await;
    assert!(out.contains(attack), "{out}");
    assert_eq!(ran_from_data(&browser).await, json!(0));
    assert_eq!(browser.alert_text().await, None, "an alert is open");
    no_console_error_and_quit(browser).await;
}

#[tokio::test]
async fn a_dead_delivery_found_by_email_is_replayed_after_the_fake_recovers_and_shows_sent() {
    let _gate = BROWSERS.acquire().await.expect("gate");
    let (r, fake) = relay().await;
    fake.set_default_fault(Some(Fault::status(500)));
    posted(&r, "evt-dead-1", "jana@example.com", "dead").await;
    // Someone else's dead letter, which the e-mail search must leave out.
    posted(&r, "evt-dead-2", "petr@example.com", "dead").await;

    let browser = Browser::start(1280, 860).await;
    signed_in(&browser, &r, "#/overview", KEY).await;
    browser.wait_text("#dead-count", "2").await;
    // The target's health: its last error is the outage's.
    let targets = browser.wait_text("#targets", "smartemailing").await;
    assert!(targets.contains("answered 500"), "{targets}");
    browser.screenshot(&screenshot_path("overview")).await;
    browser.click_on("#dead-count").await;
    browser
        .wait_text("#delivery-list", "petr@example.com")
        .await;
    let email = browser.wait_for("#f-email").await;
    browser
        .type_into(&email, "Jana@Example.com\u{E007}", true)
        .await;
    let list = browser
        .wait_text("#delivery-list", "jana@example.com")
        .await;
    assert!(!list.contains("petr@example.com"), "{list}");
    assert!(list.contains("dead"), "{list}");
    // At 1 280 px the filters are two tidy rows: what to look for, then when and the buttons;
    // a row's fields line up, the date-time ones included.
    let rows = browser
        .execute(
            "const top = (id) => Math.round(document.getElementById(id).getBoundingClientRect().top);
             const first = ['f-email', 'f-rule', 'f-action', 'f-event_type', 'f-event_id'].map(top);
             const second = ['f-since', 'f-until'].map(top);
             const search = Math.round(document.querySelector('#filters button[type=submit]').getBoundingClientRect().bottom);
             const until = Math.round(document.getElementById('f-until').getBoundingClientRect().bottom);
             return [new Set(first).size, new Set(second).size, second[0] > first[0], Math.abs(search - until) <= 2];",
            vec![],
        )
        .await;
    assert_eq!(rows, json!([1, 1, true, true]), "the filters' rows");
    browser.screenshot(&screenshot_path("deliveries")).await;

    browser.click_on("#delivery-list a.id").await;
    browser.wait_text("#delivery-status", "dead").await;
    let attempts = browser.wait_text("#attempts", "HTTP 500").await;
    assert!(
        attempts.contains("#4"),
        "every attempt is shown: {attempts}"
    );
    assert!(
        browser.find("#cancel").await.is_none(),
        "a dead delivery cannot be cancelled"
    );
    browser.screenshot(&screenshot_path("delivery")).await;

    fake.set_default_fault(None);
    browser.click_on("#replay").await;
    browser.wait_text("#notice", "Queued again").await;
    browser.wait_text("#delivery-status", "sent").await;
    assert!(
        browser.find("#replay").await.is_none(),
        "a sent delivery offers no replay"
    );
    let sent: Vec<Value> = fake.triggered_events();
    assert_eq!(sent.len(), 1, "only Jana's delivery was replayed: {sent:?}");
    assert_eq!(sent[0]["emailaddress"], "jana@example.com", "{sent:?}");
    no_console_error_and_quit(browser).await;
}

#[tokio::test]
async fn a_scheduled_delivery_is_cancelled_from_its_page_and_the_chain_shows_it() {
    let _gate = BROWSERS.acquire().await.expect("gate");
    let (r, _fake) = relay().await;
    posted(&r, "evt-timer-1", "jana@example.com", "scheduled").await;

    let browser = Browser::start(1280, 860).await;
    // A filter the relay refuses is said under the filters, which stay.
    signed_in(&browser, &r, "#/deliveries?since=yesterday", KEY).await;
    let said = browser
        .wait_text("#delivery-list", "refused this search")
        .await;
    assert!(said.contains("since"), "{said}");
    browser.wait_for("#filters #f-since").await;
    let refused = browser.console_errors().await;
    assert!(
        refused
            .iter()
            .all(|e| e.contains("since=yesterday") && e.contains("400")),
        "{refused:?}"
    );

    browser
        .goto(&format!("{}/console#/deliveries?status=scheduled", r.url))
        .await;
    browser.wait_text("#delivery-list", "welcome-2").await;
    browser.click_on("#delivery-list a.id").await;
    browser.wait_text("#delivery-status", "scheduled").await;
    browser.wait_text("main", "Due").await;
    assert!(
        browser.find("#replay").await.is_none(),
        "a scheduled delivery has no replay"
    );
    browser.click_on("#cancel").await;
    browser.wait_text("#delivery-status", "cancelled").await;
    browser.wait_text("#notice", "Cancelled").await;
    assert!(browser.find("#cancel").await.is_none());

    let body = r
        .wait_for_event("evt-timer-1", |d| {
            d.iter().any(|x| x["status"] == "cancelled")
        })
        .await;
    assert!(
        body["deliveries"].as_array().is_some_and(|d| d
            .iter()
            .any(|x| x["rule"] == "welcome-2" && x["status"] == "cancelled")),
        "{body}"
    );
    browser.click_on("#to-event").await;
    let chain = browser.wait_text("#chain", "cancelled").await;
    assert!(chain.contains("welcome-2"), "{chain}");
    no_console_error_and_quit(browser).await;
}

#[tokio::test]
async fn in_dry_run_the_playground_renders_an_edited_rule_and_points_at_a_template_error() {
    let _gate = BROWSERS.acquire().await.expect("gate");
    // No SmartEmailing credentials: a dry run, which the overview says first.
    let r = TestRelay::start(
        &config_yaml("http://127.0.0.1:9/api/v3", RULES),
        bundle(false),
    )
    .await;
    let browser = Browser::start(1280, 860).await;
    signed_in(&browser, &r, "#/overview", KEY).await;
    browser.wait_text("#dry-run", "Dry run").await;
    browser.click_on(".top nav a[href='#/rules']").await;
    browser.wait_text("#rules", "welcome-2").await;
    browser.screenshot(&screenshot_path("rules")).await;

    browser
        .goto(&format!("{}/console#/playground?rule=welcome", r.url))
        .await;
    let out = browser.wait_text("#pg-output", "trigger-event").await;
    assert!(out.contains("\"first_name\": \"Jana\""), "{out}");

    let rules = browser.wait_for("#pg-rules").await;
    let edited = "- name: welcome\n  on: [contact.created]\n  actions:\n    - trigger_event:\n        name: hello\n        payload: {shout: \"{{ contact.first_name | upper }}\"}\n";
    browser.type_into(&rules, edited, true).await;
    let out = browser.wait_text("#pg-output", "JANA").await;
    assert!(out.contains("hello"), "{out}");
    browser.screenshot(&screenshot_path("playground")).await;

    // A template that cannot compile: the error names the field it is in.
    let broken = edited.replace("| upper }}", "| }}");
    browser.type_into(&rules, &broken, true).await;
    let said = browser
        .wait_text(
            "#pg-rules-error",
            "rules[welcome].actions[0].trigger_event.payload.shout",
        )
        .await;
    assert!(
        said.starts_with("Line 6: "),
        "the line of the field: {said}"
    );
    let invalid = browser
        .execute(
            "return document.getElementById('pg-rules').getAttribute('aria-invalid');",
            vec![],
        )
        .await;
    assert_eq!(invalid, json!("true"));
    browser
        .screenshot(&screenshot_path("playground-error"))
        .await;

    // An event that is not JSON is pointed at before anything is sent.
    let ev = browser.wait_for("#pg-event").await;
    browser.type_into(&ev, "{\"id\": ", true).await;
    browser.wait_text("#pg-event-error", "Not JSON").await;
    let errors = browser.console_errors().await;
    let unexpected: Vec<&String> = errors
        .iter()
        .filter(|e| !e.contains("/v1/preview"))
        .collect();
    assert!(unexpected.is_empty(), "console errors: {errors:?}");
    browser.quit().await;
}

/// A gateway that serves the relay only under `/stage` (as API Gateway under a named stage
/// or a custom domain's base path): it strips the prefix and forwards; any other path is
/// `404` and counted.
struct Gateway {
    url: String,
    outside: Arc<AtomicUsize>,
}

impl Url for Gateway {
    fn url(&self) -> &str {
        &self.url
    }
}

async fn gateway(upstream: &str) -> Gateway {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stage", listener.local_addr().unwrap());
    let outside = Arc::new(AtomicUsize::new(0));
    let (client, upstream, seen) = (
        reqwest::Client::new(),
        upstream.to_string(),
        outside.clone(),
    );
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, upstream, seen) = (client.clone(), upstream.clone(), seen.clone());
        async move {
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let Some(rest) = target.strip_prefix("/stage").filter(|r| r.starts_with('/')) else {
                seen.fetch_add(1, Ordering::SeqCst);
                return (axum::http::StatusCode::NOT_FOUND, "outside the stage").into_response();
            };
            let url = format!("{upstream}{rest}");
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut headers = parts.headers;
            headers.remove(axum::http::header::HOST);
            let answer = client
                .request(parts.method, url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let mut back = axum::http::Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if name != axum::http::header::CONTENT_LENGTH
                    && name != axum::http::header::TRANSFER_ENCODING
                {
                    back = back.header(name, value);
                }
            }
            back.body(axum::body::Body::from(answer.bytes().await.unwrap()))
                .unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Gateway { url, outside }
}

#[tokio::test]
async fn behind_a_gateways_prefix_the_console_calls_the_api_under_it() {
    let _gate = BROWSERS.acquire().await.expect("gate");
    let (r, _fake) = relay().await;
    posted(&r, "evt-staged", "jana@example.com", "sent").await;
    let gw = gateway(&r.url).await;

    let browser = Browser::start(1280, 860).await;
    signed_in(&browser, &gw, "#/deliveries?status=sent", KEY).await;
    browser
        .wait_text("#delivery-list", "jana@example.com")
        .await;
    browser.click_on("#delivery-list a.id").await;
    browser.wait_text("#delivery-status", "sent").await;
    // A write goes under the prefix too: the chain's next step is cancelled from its page.
    browser
        .goto(&format!("{}/console#/deliveries?status=scheduled", gw.url))
        .await;
    browser.wait_text("#delivery-list", "welcome-2").await;
    browser.click_on("#delivery-list a.id").await;
    browser.click_on("#cancel").await;
    browser.wait_text("#delivery-status", "cancelled").await;
    assert_eq!(
        gw.outside.load(Ordering::SeqCst),
        0,
        "the page asked for something outside /stage"
    );
    no_console_error_and_quit(browser).await;
}

#[tokio::test]
async fn an_ingest_key_is_refused_by_the_management_api_and_the_page_says_why() {
    let _gate = BROWSERS.acquire().await.expect("gate");
    let (r, _fake) = relay().await;
    let (status, body) = r.get("/v1/deliveries").await;
    assert_eq!(status, 403, "{body}");

    let browser = Browser::start(1280, 860).await;
    signed_in(&browser, &r, "#/deliveries", API_KEY).await;
    let reason = browser
        .wait_text("#login:not([hidden]) #login-reason", "403")
        .await;
    assert!(reason.contains("ingest key"), "{reason}");
    assert!(
        browser.find("main[hidden]").await.is_some(),
        "no data view behind the form"
    );
    let stored = stored_key(&browser).await;
    assert_eq!(stored, Value::Null, "a refused key is not kept");
    browser.screenshot(&screenshot_path("refused")).await;

    // A wrong key is refused as such, and the right one opens the page asked for.
    let input = browser.wait_for("#admin-key").await;
    browser.type_into(&input, "not-a-key\u{E007}", true).await;
    browser.wait_text("#login-reason", "401").await;
    browser
        .type_into(&input, &format!("{KEY}\u{E007}"), true)
        .await;
    browser.wait_for("#delivery-list").await;
    browser.quit().await;
}

#[tokio::test]
async fn on_a_phone_in_a_dark_theme_the_pages_fit_the_screen() {
    let _gate = BROWSERS.acquire().await.expect("gate");
    let (r, _fake) = relay().await;
    posted(&r, "evt-phone-1", "jana@example.com", "scheduled").await;
    let mut browser = Browser::start(1280, 860).await;
    browser.viewport(390, 844, true).await;
    browser.prefer_dark().await;
    signed_in(&browser, &r, "#/deliveries", KEY).await;
    for (hash, ready, name) in [
        ("#/deliveries", "#delivery-list a.id", "phone-deliveries"),
        ("#/overview", "#dead-count", "phone-overview"),
        ("#/event/evt-phone-1", "#chain", "phone-event"),
    ] {
        browser.goto(&format!("{}/console{hash}", r.url)).await;
        browser.wait_for(ready).await;
        let wide = browser
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth;",
                vec![],
            )
            .await;
        assert!(
            wide.as_i64().is_some_and(|w| w <= 0),
            "{hash} scrolls sideways by {wide}px"
        );
        browser.screenshot(&screenshot_path(name)).await;
    }
    // The overview's small tables keep their numbers under their right-aligned headings; only
    // the tables shown as cards read left to right.
    browser.goto(&format!("{}/console#/overview", r.url)).await;
    browser.wait_text("main", "Last day").await;
    let aligned = browser
        .execute(
            "return [...document.querySelectorAll('main table:not(.cards) .num')].map((c) => getComputedStyle(c).textAlign);",
            vec![],
        )
        .await;
    let aligned = aligned.as_array().cloned().unwrap_or_default();
    assert!(
        aligned.len() >= 6 && aligned.iter().all(|a| a == "right"),
        "{aligned:?}"
    );
    // The system's dark theme is followed.
    let bg = browser
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await;
    assert_eq!(bg, json!("rgb(15, 18, 23)"), "the dark theme's background");
    no_console_error_and_quit(browser).await;
}
