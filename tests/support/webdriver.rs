//! A small W3C WebDriver client for the console's tests: Debian's `chromium` driven by its
//! `chromedriver`, headless, at a fixed window size. Only what the tests use.

use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for the page lasts before the test fails.
const WAIT: Duration = Duration::from_secs(15);

/// What to install when the browser is missing (named in the failure).
pub const INSTALL_HINT: &str = "the console's browser tests need Debian's `chromium` and \
`chromium-driver` packages (apt-get install -y chromium chromium-driver; scripts/test installs \
them when run as root), or RELAY_CHROMIUM and RELAY_CHROMEDRIVER pointing at a Chromium and its driver";

/// A running chromedriver with one browser session.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    base: String,
    /// The viewport's width and height in CSS pixels.
    size: (u32, u32),
    mobile: bool,
}

/// An element of the page.
#[derive(Clone, Debug)]
pub struct Element(String);

fn binary(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if !path.is_file() {
        panic!("{} not found: {INSTALL_HINT}", path.display());
    }
    path
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`; fails the test with
    /// the packages to install when either is missing.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = binary("RELAY_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("RELAY_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = super::free_port();
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so the browser it starts goes with it even when a test panics.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver: {e}: {INSTALL_HINT}"));
        let mut b = Browser {
            driver,
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            size: (width, height),
            mobile: false,
        };
        b.wait_ready().await;
        b.new_session(&chromium).await;
        b.viewport(width, height, false).await;
        b
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = self.http.get(format!("{}/status", self.base)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn new_session(&mut self, chromium: &Path) {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-breakpad", "--disable-crash-reporter", "--no-first-run",
                         "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
                         format!("--window-size={},{}", self.size.0, self.size.1)]
            }
        }}});
        let v = self.call("POST", "/session", Some(caps)).await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"));
        self.base = format!("{}/session/{id}", self.base);
    }

    /// One WebDriver command; panics on a WebDriver error (the test fails with it).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = self.try_call(method, path, body).await;
        if let Some(err) = v.get("error") {
            panic!("webdriver {method} {path}: {err}: {}", v["message"]);
        }
        v
    }

    /// One command, returning `value` (an error is `{"error", "message"}`).
    async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        v.get("value").cloned().unwrap_or(v)
    }

    /// Opens a URL and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// Runs a script in the page (`arguments[i]` are the args) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let v = self
            .try_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(|id| Element(id.to_string()))
    }

    /// Waits until an element matches `css` and returns it.
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if tokio::time::Instant::now() > deadline {
                let body = self.text_of("body").await;
                let log = self.console_log().await;
                panic!("nothing matches `{css}`; the page says: {body}; the console: {log:?}");
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    /// The rendered text of the first element matching `css` ("" when none).
    pub async fn text_of(&self, css: &str) -> String {
        let v = self
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                vec![json!(css)],
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the text of `css` contains `want`, and returns that text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.text_of(css).await;
            if text.contains(want) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("`{css}` never said {want:?}; it says: {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    /// Waits for the element matching `css` and clicks it.
    pub async fn click_on(&self, css: &str) {
        let e = self.wait_for(css).await;
        self.click(&e).await;
    }

    /// Clicks an element.
    pub async fn click(&self, e: &Element) {
        self.call("POST", &format!("/element/{}/click", e.0), None)
            .await;
    }

    /// Types into an element (after clearing it when `clear`).
    pub async fn type_into(&self, e: &Element, text: &str, clear: bool) {
        if clear {
            self.call("POST", &format!("/element/{}/clear", e.0), None)
                .await;
        }
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Presses keys on the focused element (e.g. "\u{E004}" is Tab, "\u{E007}" Enter).
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.call(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
        self.try_call("DELETE", "/actions", None).await;
    }

    /// The text of an open `alert()`, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        let v = self.try_call("GET", "/alert/text", None).await;
        v.as_str().map(str::to_string)
    }

    /// The browser's console messages since the last call (level, source, message).
    pub async fn console_log(&self) -> Vec<Value> {
        let v = self
            .call("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// The console messages at level SEVERE (errors, CSP violations, failed loads).
    pub async fn console_errors(&self) -> Vec<String> {
        self.console_log()
            .await
            .iter()
            .filter(|m| m["level"] == "SEVERE")
            .map(|m| m["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Sets the page's viewport (CSS pixels; `mobile` as a phone's browser lays out).
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.metrics(width, height, mobile).await;
        self.size = (width, height);
        self.mobile = mobile;
    }

    async fn metrics(&self, width: u32, height: u32, mobile: bool) {
        let params =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params})),
        )
        .await;
    }

    /// Makes the page see a dark system theme (`prefers-color-scheme: dark`).
    pub async fn prefer_dark(&self) {
        let features = json!([{"name": "prefers-color-scheme", "value": "dark"}]);
        self.call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {"features": features}})),
        )
        .await;
    }

    /// Saves a PNG of the whole page (as tall as its content, up to 4000 px) to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let height = self
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight);",
                vec![],
            )
            .await
            .as_u64()
            .unwrap_or(u64::from(self.size.1));
        let tall = u32::try_from(height)
            .unwrap_or(self.size.1)
            .clamp(self.size.1, 4000);
        self.metrics(self.size.0, tall, self.mobile).await;
        let v = self.call("GET", "/screenshot", None).await;
        self.metrics(self.size.0, self.size.1, self.mobile).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Ends the session and the driver.
    pub async fn quit(mut self) {
        self.try_call("DELETE", "", None).await;
        self.kill();
    }

    fn kill(&mut self) {
        // The whole group: chromedriver and the browser processes it started.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}
