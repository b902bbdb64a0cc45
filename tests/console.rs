//! The operator's console in a real browser (Debian's chromium, driven over WebDriver) against
//! a relay on loopback and the fake SmartEmailing: what an operator sees and can do, and that
//! hostile event data stays text. Each page is saved as a screenshot under
//! `target/console-screenshots/`.

mod support;

use serde_json::json;
use std::path::PathBuf;
use support::webdriver::Browser;
use support::*;

/// The key the console is opened with.
const KEY: &str = API_KEY;

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

/// A relay on the fake SmartEmailing (sending for real), and the fake.
async fn relay() -> (TestRelay, FakeSmartEmailing) {
    let fake = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let relay = TestRelay::start(&config_yaml(&fake.base_url(), RULES), bundle(true)).await;
    (relay, fake)
}

/// Opens the console, signs in with `key` and waits for the first view.
async fn signed_in(browser: &Browser, relay: &TestRelay, hash: &str, key: &str) {
    browser.goto(&format!("{}/console{hash}", relay.url)).await;
    let input = browser.wait_for("#login:not([hidden]) #admin-key").await;
    browser.type_into(&input, key, true).await;
    browser.keys("\u{E007}").await;
}

#[tokio::test]
async fn the_console_is_served_without_a_key_with_a_strict_policy_and_revalidated_caching() {
    let (r, _fake) = relay().await;
    let resp = r
        .http
        .get(format!("{}/console", r.url))
        .send()
        .await
        .expect("get");
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

    let js = r
        .http
        .get(format!("{}/console/app.js", r.url))
        .send()
        .await
        .expect("get");
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
async fn the_page_asks_for_a_key_once_and_loads_with_no_console_error() {
    let _gate = BROWSERS.acquire().await.expect("gate");
    let (r, _fake) = relay().await;
    let browser = Browser::start(1280, 860).await;
    browser.goto(&format!("{}/console", r.url)).await;
    let form = browser.wait_for("#login:not([hidden]) #login-form").await;
    let _ = form;
    assert!(browser.text_of("#login").await.contains("Admin key"));
    browser.screenshot(&screenshot_path("sign-in")).await;

    // An empty key is refused by the form itself.
    let button = browser.wait_for("#login-form button[type=submit]").await;
    browser.click(&button).await;
    browser
        .wait_text("#login-reason", "Enter an admin key")
        .await;

    signed_in(&browser, &r, "", KEY).await;
    browser.wait_for("#login[hidden]").await;
    browser.wait_for("main:not([hidden])").await;
    // The key is kept for the tab: a reload does not ask again.
    browser.goto(&format!("{}/console#/rules", r.url)).await;
    browser.wait_for("main:not([hidden])").await;
    assert!(
        browser.find("#login:not([hidden])").await.is_none(),
        "asked twice"
    );
    let stored = browser
        .execute("return sessionStorage.getItem('relay.adminKey');", vec![])
        .await;
    assert_eq!(stored, json!(KEY));
    let cookies = browser.execute("return document.cookie;", vec![]).await;
    assert_eq!(cookies, json!(""), "no cookie");
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.quit().await;
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
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.quit().await;
}
