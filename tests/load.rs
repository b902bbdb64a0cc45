//! 20 000 events through `relay serve` with 5 % injected faults: nothing lost, nothing sent
//! twice, dead only what SmartEmailing refuses for good, memory bounded. (A correctness test
//! under load; speed is measured in benches/, not here.)

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {n: "{{ data.n }}"}}
      - add_to_list: {list: 12}
"#;

const EVENTS: usize = 20_000;

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_events_with_injected_faults() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    // 1 % of the contacts are refused for good; 1 call in 20 (at random, seeded) fails
    // with a 503.
    let bad: Vec<String> = (0..EVENTS)
        .filter(|i| i % 100 == 37)
        .map(|i| format!("l{i}@example.com"))
        .collect();
    let bad_refs: Vec<&str> = bad.iter().map(String::as_str).collect();
    se.reject_emails(&bad_refs);
    se.set_random_fault(20, 7, Some(Fault::status(503)));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.yaml");
    std::fs::write(
        &config,
        config_yaml(&se.base_url(), RULES)
            .replace("[50ms, 50ms, 50ms]", "[50ms, 50ms, 50ms, 50ms, 50ms, 50ms]"),
    )
    .unwrap();
    let state = dir.path().join("state");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--state"])
        .arg(&state)
        .env("RELAY_API_KEYS", API_KEY)
        .env("SMARTEMAILING_USERNAME", SE_USER)
        .env("SMARTEMAILING_API_KEY", SE_KEY)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("relay.log")).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_healthy(&url).await;

    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(250) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"id": format!("l-{i}"), "type": "contact.created", "contact": {"email": format!("l{i}@example.com")}, "data": {"n": i}}))
            .collect();
        let r = http
            .post(format!("{url}/v1/events"))
            .bearer_auth(API_KEY)
            .json(&json!({"events": events}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let good = EVENTS - bad.len();
    let all_arrived = se
        .wait_for_items("/trigger-event", good, Duration::from_secs(300))
        .await
        && se
            .wait_for_items("/import", good, Duration::from_secs(300))
            .await;
    // Let the last dead letters settle, then stop the relay cleanly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let dead = loop {
        let out = deliveries(&state, &["--status", "dead"]);
        if out.lines().count() >= bad.len() * 2 || tokio::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // When something did not arrive, say where it is: the deliveries that are neither sent
    // nor dead, and the relay's warnings.
    let stuck = if all_arrived {
        String::new()
    } else {
        unfinished(&state) + &tail(&dir.path().join("relay.log"), 40)
    };
    let rss = peak_rss_kib(child.id());
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    assert!(
        all_arrived,
        "{} of {good} triggers and {} of {good} imports arrived\n{stuck}",
        se.triggered_events().len(),
        se.imported_contacts().len()
    );
    let mut per_contact: HashMap<String, usize> = HashMap::new();
    for t in se.triggered_events() {
        *per_contact
            .entry(t["emailaddress"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_contact.len(), good, "every good contact exactly once");
    assert!(per_contact.values().all(|&n| n == 1), "nothing sent twice");
    for b in &bad {
        assert!(!per_contact.contains_key(b));
    }
    let dead: Vec<Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        dead.len(),
        bad.len() * 2,
        "dead: exactly the refused contacts' deliveries"
    );
    for d in &dead {
        let n: usize = d["event_id"].as_str().unwrap()[2..].parse().unwrap();
        assert_eq!(n % 100, 37, "{d}");
        assert!(
            d["last_error"]
                .as_str()
                .unwrap()
                .contains("Invalid emailaddress"),
            "{d}"
        );
    }
    let injected = se.requests().iter().filter(|r| r.status == 503).count();
    assert!(injected > 0, "faults were injected");
    let rss = rss.expect("peak RSS readable");
    eprintln!(
        "{} calls, {injected} injected 503s, peak RSS {} MiB",
        se.requests().len(),
        rss / 1024
    );
    assert!(rss < 256 * 1024, "peak RSS {rss} KiB");
}

/// The deliveries that are neither sent nor dead: a count per status and rule, and the first
/// few in full.
fn unfinished(state: &std::path::Path) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut examples = Vec::new();
    for line in deliveries(state, &[]).lines() {
        let d: Value = serde_json::from_str(line).unwrap();
        let status = d["status"].as_str().unwrap_or("?").to_string();
        if status == "sent" || status == "dead" {
            continue;
        }
        *counts
            .entry(format!("{status} {}", d["action"]))
            .or_default() += 1;
        if examples.len() < 5 {
            examples.push(line.to_string());
        }
    }
    format!("unfinished: {counts:?}\n{}\n", examples.join("\n"))
}

/// Every delivery `relay deliveries --json` lists with `filter`, one JSON object a line.
fn deliveries(state: &std::path::Path, filter: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("deliveries")
        .args(filter)
        .args(["--json", "--limit", "0", "--state"])
        .arg(state)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last `n` lines of the relay's log, leaving out the expected ones (the refused
/// contacts given up).
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("Invalid emailaddress"))
        .collect();
    format!(
        "relay log, last {n} unexpected lines:\n{}",
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}
