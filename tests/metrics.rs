//! `GET /metrics` read by real consumers: the real `relay serve` takes events (one sent after
//! a 503, one given up on a 400, a duplicate, a refused one) through the fake SmartEmailing;
//! the exposition passes `promtool check metrics` (Debian's `prometheus` package) and the
//! counters moved as the events flowed; the real Prometheus server scrapes it with the
//! README's scrape config; the log follows each event by its id. Only an admin key reads the
//! metrics.

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// One rule, one SmartEmailing call per event: each call's class is the fault pushed for it.
const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions: [{trigger_event: {name: welcome}}]
"#;

/// The real `relay serve` on the fake SmartEmailing, logging at info to a file; killed
/// when the test ends, passed or not.
struct Relay {
    se: FakeSmartEmailing,
    url: String,
    http: reqwest::Client,
    log: std::path::PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start() -> Relay {
        let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay.yaml");
        std::fs::write(&config, config_yaml(&se.base_url(), RULES)).unwrap();
        let port = free_port();
        let log = dir.path().join("relay.log");
        let file = std::fs::File::create(&log).unwrap();
        let state = dir.path().join("state");
        let child = spawn_relay(&config, &state, port, "info", Stdio::from(file));
        let url = format!("http://127.0.0.1:{port}");
        wait_healthy(&url).await;
        Relay {
            se,
            url,
            http: reqwest::Client::new(),
            log,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scrape: each sample's value by its name and labels as written
/// (`relay_events_total{type="a",outcome="accepted"}`).
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a sample is `series value`");
                (series.to_string(), value.parse::<f64>().expect("a number"))
            })
            .collect();
        Scrape { text, samples }
    }

    /// A sample's value; 0 when the series is not there yet (a counter not yet counted).
    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// A sample that must be there.
    fn must(&self, series: &str) -> f64 {
        match self.samples.get(series) {
            Some(v) => *v,
            None => panic!("no sample `{series}` in:\n{}", self.text),
        }
    }
}

async fn scrape(http: &reqwest::Client, url: &str, key: &str) -> (u16, String) {
    let resp = http
        .get(format!("{url}/metrics"))
        .bearer_auth(key)
        .send()
        .await
        .expect("the relay answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// `promtool check metrics` on the exposition: it parses it and lints the names, types and
/// help texts; any complaint fails the test.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's `prometheus` package; scripts/test installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads the exposition");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn post_event(http: &reqwest::Client, url: &str, body: &Value) -> u16 {
    http.post(format!("{url}/v1/events"))
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .expect("the relay answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_move_as_events_flow_and_promtool_takes_the_exposition() {
    let relay = Relay::start().await;
    let (se, url, http) = (&relay.se, relay.url.as_str(), &relay.http);
    let log_path = relay.log.clone();

    let (status, text) = scrape(http, url, ADMIN_KEY).await;
    assert_eq!(status, 200, "{text}");
    promtool_check(&text);
    let before = Scrape::parse(text);
    let version = format!(
        "relay_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(before.must(&version), 1.0);

    // Sent on the second call, after a 503.
    se.fail_next(1, Fault::status(503));
    let first = event("m-1", "contact.created", "jana@example.com");
    assert_eq!(post_event(http, url, &first).await, 202);
    wait_delivery_status(http, url, "m-1", "sent").await;
    // Given up: SmartEmailing refuses it for good.
    se.fail_next(1, Fault::status(400));
    let second = event("m-2", "contact.created", "petr@example.com");
    assert_eq!(post_event(http, url, &second).await, 202);
    wait_delivery_status(http, url, "m-2", "dead").await;
    // A duplicate, and an event refused for its missing type.
    assert_eq!(post_event(http, url, &first).await, 202);
    let untyped = json!({"id": "m-3", "contact": {"email": "eva@example.com"}});
    assert_eq!(post_event(http, url, &untyped).await, 400);
    let keyless = http
        .post(format!("{url}/v1/events"))
        .json(&first)
        .send()
        .await;
    assert_eq!(keyless.unwrap().status().as_u16(), 401);

    let (status, text) = scrape(http, url, ADMIN_KEY).await;
    assert_eq!(status, 200, "{text}");
    promtool_check(&text);
    let after = Scrape::parse(text);
    let moved = |series: &str| after.must(series) - before.value(series);

    let events = |outcome: &str| {
        format!("relay_events_total{{type=\"contact.created\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(moved(&events("accepted")), 2.0);
    assert_eq!(moved(&events("duplicate")), 1.0);
    assert_eq!(
        moved("relay_events_total{type=\"unknown\",outcome=\"refused\",code=\"invalid_field\"}"),
        1.0
    );
    assert_eq!(
        moved("relay_events_total{type=\"unknown\",outcome=\"refused\",code=\"unauthorized\"}"),
        1.0
    );
    let deliveries = |status: &str| {
        format!("relay_deliveries_total{{rule=\"welcome\",action=\"trigger_event\",status=\"{status}\"}}")
    };
    assert_eq!(moved(&deliveries("pending")), 2.0);
    assert_eq!(moved(&deliveries("retrying")), 1.0);
    assert_eq!(moved(&deliveries("sent")), 1.0);
    assert_eq!(moved(&deliveries("dead")), 1.0);
    let calls = |class: &str| {
        format!("relay_target_requests_total{{target=\"smartemailing\",endpoint=\"trigger-event\",class=\"{class}\"}}")
    };
    assert_eq!(moved(&calls("5xx")), 1.0);
    assert_eq!(moved(&calls("2xx")), 1.0);
    assert_eq!(moved(&calls("4xx")), 1.0);
    assert_eq!(
        moved("relay_target_request_duration_seconds_count{target=\"smartemailing\",endpoint=\"trigger-event\"}"),
        3.0
    );
    assert_eq!(
        after.must("relay_circuit_state{target=\"smartemailing\"}"),
        0.0
    );
    assert_eq!(after.must("relay_queue_depth{queue=\"dispatch\"}"), 0.0);
    assert_eq!(after.must("relay_dead_deliveries"), 1.0);
    assert_eq!(after.must("relay_scheduled_deliveries"), 0.0);

    let log = std::fs::read_to_string(&log_path).unwrap();
    follows_each_delivery(&log);
}

/// Every log line about a delivery names its delivery, event, rule and target, so one
/// search for an event's id finds its whole story.
fn follows_each_delivery(log: &str) {
    for line in log.lines().filter(|l| l.contains("delivery=")) {
        for field in ["event=", "rule=", "target="] {
            assert!(
                line.contains(field),
                "no `{field}` in a delivery's line: {line}"
            );
        }
    }
    let story = |id: &str| -> Vec<&str> {
        log.lines()
            .filter(|l| l.contains(&format!("event={id}")))
            .collect()
    };
    let first = story("m-1").join("\n");
    for step in ["event received", "retrying", "sent"] {
        assert!(first.contains(step), "m-1's story lacks `{step}`:\n{first}");
    }
    assert!(first.contains("target=smartemailing"), "{first}");
    let second = story("m-2").join("\n");
    assert!(second.contains("dead: permanent failure"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_key_reads_the_metrics_and_a_scraper_gets_openmetrics() {
    let relay = Relay::start().await;
    let (url, http) = (relay.url.as_str(), &relay.http);

    let (status, text) = scrape(http, url, API_KEY).await;
    assert_eq!(
        status, 403,
        "an ingest key must not read the metrics: {text}"
    );
    assert!(!text.contains("relay_"), "{text}");
    let (status, _) = scrape(http, url, "not-a-key").await;
    assert_eq!(status, 401);
    let anonymous = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // What Prometheus asks for when it scrapes.
    let resp = http
        .get(format!("{url}/metrics"))
        .bearer_auth(ADMIN_KEY)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert!(text.contains("# TYPE relay_build_info gauge"), "{text}");
}

/// A Prometheus server, killed when the test ends.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asks a Prometheus server for `query`'s first value; `None` while it has none.
async fn query(http: &reqwest::Client, prometheus: &str, query: &str) -> Option<String> {
    let resp = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?;
    let body: Value = resp.json().await.ok()?;
    body["data"]["result"][0]["value"][1]
        .as_str()
        .map(str::to_string)
}

/// The real Prometheus server (the same Debian package) scrapes the relay with the README's
/// scrape config — the admin key as `authorization: {credentials: ...}` — and has the
/// counters the relay counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_relay_with_the_readme_scrape_config() {
    let relay = Relay::start().await;
    let (url, http) = (relay.url.as_str(), &relay.http);
    let first = event("p-1", "contact.created", "jana@example.com");
    assert_eq!(post_event(http, url, &first).await, 202);
    wait_delivery_status(http, url, "p-1", "sent").await;

    let dir = tempfile::tempdir().unwrap();
    let target = url.trim_start_matches("http://");
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: smartemailing-relay\n    metrics_path: /metrics\n    authorization:\n      credentials: {ADMIN_KEY}\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let server = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs (Debian's `prometheus` package; scripts/test installs it)");
    let _server = Prometheus(server);
    let prometheus = format!("http://127.0.0.1:{port}");

    let accepted = r#"relay_events_total{job="smartemailing-relay",type="contact.created",outcome="accepted"}"#;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seen = None;
    while tokio::time::Instant::now() < deadline {
        seen = query(http, &prometheus, accepted).await;
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.as_deref(),
        Some("1"),
        "Prometheus never scraped the count"
    );
    let up = query(http, &prometheus, r#"up{job="smartemailing-relay"}"#).await;
    assert_eq!(up.as_deref(), Some("1"));
    let sent = r#"relay_deliveries_total{rule="welcome",action="trigger_event",status="sent"}"#;
    assert_eq!(query(http, &prometheus, sent).await.as_deref(), Some("1"));
}
