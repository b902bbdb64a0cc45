//! Test support: the relay started in-process on a temporary state directory, a strict fake
//! SmartEmailing, and a webhook collector — all on real loopback sockets.
#![allow(dead_code)]

pub mod fake_smartemailing;
pub mod webdriver;

#[allow(unused_imports)]
pub use fake_smartemailing::{FakeSmartEmailing, Fault};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use relay_shared::adapters::env_credentials::StaticCredentials;
use relay_shared::adapters::reqwest::ReqwestTransport;
use relay_shared::domain::secret::{SeCredentials, Secret, SecretBundle};
use relay_shared::ports::clock::{Clock, ManualClock, SystemClock};
use relay_shared::rules::config::Config;
use relay_shared::runner::{start, Relay, RunnerOptions};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// SmartEmailing's username in the tests.
pub const SE_USER: &str = "shop@example.com";
/// SmartEmailing's API key in the tests.
pub const SE_KEY: &str = "se-key-4f1c9a7e2b";
/// The inbound API key in the tests.
pub const API_KEY: &str = "relay-key-9d2e7c1a";
/// The admin key (the management API) in the tests.
pub const ADMIN_KEY: &str = "relay-admin-3b8f0d6e";
/// The token of SmartEmailing's registered webhooks in tests.
pub const WEBHOOK_TOKEN: &str = "se-hook-token-5f1c9a";
/// How long a test waits for something that should happen quickly.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A config for tests: fast retries, a short batch window, the given rules.
pub fn config_yaml(base_url: &str, rules: &str) -> String {
    format!(
        "smartemailing:\n  base_url: {base_url}\ndelivery:\n  timeout: 2s\n  retry_schedule: [50ms, 50ms, 50ms]\n  batch_window: 50ms\n  min_overload_delay: 50ms\n  max_requests_per_second: 1000\n  breaker: {{open_after: 10, probe_after: 100ms}}\noutbound:\n  allow_loopback_http: true\nrules:\n{rules}"
    )
}

/// Secrets for a test relay.
pub fn bundle(with_smartemailing: bool) -> SecretBundle {
    let mut named = HashMap::new();
    named.insert(
        "collector_token".to_string(),
        Secret::new("collector-secret-77"),
    );
    SecretBundle {
        smartemailing: with_smartemailing.then(|| SeCredentials {
            username: SE_USER.into(),
            api_key: Secret::new(SE_KEY),
        }),
        api_keys: vec![Secret::new("old-key-rotated-out"), Secret::new(API_KEY)],
        admin_keys: vec![Secret::new(ADMIN_KEY)],
        webhook_tokens: vec![Secret::new(WEBHOOK_TOKEN)],
        named,
    }
}

/// A relay running in this process.
pub struct TestRelay {
    relay: Option<Relay>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// A client for the API.
    pub http: reqwest::Client,
    /// The credentials the relay reads (swap them to simulate a rotation).
    pub credentials: Arc<StaticCredentials>,
    /// The clock the relay reads.
    pub clock: Arc<dyn Clock>,
    /// The state directory.
    pub state: tempfile::TempDir,
    config: Arc<Config>,
}

impl TestRelay {
    /// Starts a relay with the config and secrets, on the system clock.
    pub async fn start(yaml: &str, secrets: SecretBundle) -> TestRelay {
        Self::start_with_clock(yaml, secrets, Arc::new(SystemClock)).await
    }

    /// Starts a relay on a given clock.
    pub async fn start_with_clock(
        yaml: &str,
        secrets: SecretBundle,
        clock: Arc<dyn Clock>,
    ) -> TestRelay {
        let config = Arc::new(Config::parse(yaml, "test").unwrap_or_else(|e| panic!("{e}")));
        let state = tempfile::tempdir().expect("tempdir");
        let credentials = Arc::new(StaticCredentials::new(secrets));
        let mut t = TestRelay {
            relay: None,
            url: String::new(),
            http: reqwest::Client::new(),
            credentials,
            clock,
            state,
            config,
        };
        t.boot().await;
        t
    }

    async fn boot(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let relay = start(
            listener,
            RunnerOptions {
                config: self.config.clone(),
                state_dir: self.state.path().to_path_buf(),
                credentials: self.credentials.clone(),
                clock: self.clock.clone(),
                transport: Arc::new(ReqwestTransport::new().expect("transport")),
                body_limit: relay_shared::api::router::DEFAULT_BODY_LIMIT,
                poll_interval: Duration::from_millis(10),
                seed: Some(7),
            },
        )
        .await
        .expect("relay starts");
        self.url = format!("http://{}", relay.addr);
        self.relay = Some(relay);
    }

    /// Stops the relay gracefully and starts it again on the same state.
    pub async fn restart(&mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown().await;
        }
        self.boot().await;
    }

    /// The running relay.
    pub fn relay(&self) -> &Relay {
        self.relay.as_ref().expect("running")
    }

    /// The loaded config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// POSTs JSON with the API key.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .bearer_auth(API_KEY)
                .json(body),
        )
        .await
    }

    /// GETs with the API key.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(
            self.http
                .get(format!("{}{path}", self.url))
                .bearer_auth(API_KEY),
        )
        .await
    }

    /// Sends a request and reads a JSON answer (Null when empty).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// Polls `GET /v1/events/{id}` until `done` holds for its deliveries; panics after PATIENCE.
    pub async fn wait_for_event(&self, id: &str, done: impl Fn(&[Value]) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.get(&format!("/v1/events/{id}")).await;
            if status == 200 {
                if let Some(d) = body["deliveries"].as_array() {
                    if done(d) {
                        return body;
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!("event {id} did not reach the expected state; last: {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every delivery of the event is final, and returns them.
    pub async fn wait_settled(&self, id: &str, count: usize) -> Vec<Value> {
        let body = self
            .wait_for_event(id, |d| {
                d.len() >= count
                    && d.iter().all(|x| {
                        !matches!(x["status"].as_str(), Some("pending") | Some("retrying"))
                    })
            })
            .await;
        body["deliveries"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (in real time) until nothing is due at the relay's clock time and nothing is
    /// being worked on: with a fixed clock, the relay has done all it can until it moves.
    pub async fn settle(&self) {
        use relay_shared::ports::queue::QueueName;
        let store = &self.relay().store;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut quiet = 0;
        loop {
            if store.is_idle(QueueName::Render).unwrap()
                && store.is_idle(QueueName::Dispatch).unwrap()
            {
                // Twice in a row: a worker may be between taking a job and leasing the next.
                quiet += 1;
                if quiet >= 2 {
                    return;
                }
            } else {
                quiet = 0;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay never settled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the relay.
    pub async fn stop(mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown().await;
        }
    }
}

/// Waits until a relay started as a process answers `GET /health`; panics after PATIENCE.
pub async fn wait_healthy(url: &str) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{url}/health")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("relay at {url} did not become healthy");
}

/// Polls a relay process's `GET /v1/events/{id}` until the event's first delivery has
/// `status`; panics after PATIENCE with the last answer.
pub async fn wait_delivery_status(http: &reqwest::Client, url: &str, id: &str, status: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let resp = http
            .get(format!("{url}/v1/events/{id}"))
            .bearer_auth(API_KEY)
            .send()
            .await;
        if let Ok(r) = resp {
            last = r.json().await.unwrap_or_default();
            if last["deliveries"][0]["status"] == status {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("event {id} did not reach `{status}`: {last}");
}

/// A free loopback port for a relay process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("local address")
        .port()
}

/// Starts the real `relay serve` on `port`, with the tests' credentials, logging at `log`
/// level to `stderr`.
pub fn spawn_relay(
    config: &std::path::Path,
    state: &std::path::Path,
    port: u16,
    log: &str,
    stderr: std::process::Stdio,
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--state"])
        .arg(state)
        .env("RELAY_API_KEYS", API_KEY)
        .env("RELAY_ADMIN_KEYS", ADMIN_KEY)
        .env("SMARTEMAILING_USERNAME", SE_USER)
        .env("SMARTEMAILING_API_KEY", SE_KEY)
        .env("RUST_LOG", log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("relay starts")
}

/// A manual clock starting at a fixed instant.
pub fn fixed_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_ms(1_795_000_000_000))
}

type CollectorState = (Arc<Mutex<Vec<Collected>>>, Arc<Mutex<Vec<u16>>>);

/// One request a collector received.
#[derive(Debug, Clone)]
pub struct Collected {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers, names lower case.
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: String,
}

/// A webhook target that records what it receives and answers 200 (or a scripted status).
#[derive(Clone)]
pub struct Collector {
    /// Everything received.
    pub received: Arc<Mutex<Vec<Collected>>>,
    /// Statuses to answer next, in order; 200 when empty.
    pub script: Arc<Mutex<Vec<u16>>>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Collector {
    /// Starts a collector on loopback.
    pub async fn start() -> Collector {
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Vec::new()));
        let state = (received.clone(), script.clone());
        let app = Router::new()
            .fallback(any(
                |State((rec, script)): State<CollectorState>,
                 method: axum::http::Method,
                 uri: axum::http::Uri,
                 headers: HeaderMap,
                 body: String| async move {
                    rec.lock().unwrap().push(Collected {
                        method: method.to_string(),
                        uri: uri.to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect(),
                        body,
                    });
                    let mut s = script.lock().unwrap();
                    let code = if s.is_empty() { 200 } else { s.remove(0) };
                    (StatusCode::from_u16(code).unwrap(), "ok")
                },
            ))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector {
            received,
            script,
            url,
        }
    }

    /// What was received so far.
    pub fn received(&self) -> Vec<Collected> {
        self.received.lock().unwrap().clone()
    }
}

/// A contact event.
pub fn event(id: &str, kind: &str, email: &str) -> Value {
    serde_json::json!({
        "id": id,
        "type": kind,
        "occurred_at": "2026-11-26T10:00:00Z",
        "contact": {"email": email, "first_name": "Jan", "last_name": "Novák", "phone": "+420720123456"},
        "data": {}
    })
}
