//! `relay serve` killed with SIGKILL under a stream of events, restarted, several times:
//! every event answered 202 is delivered, and duplicates stay within the stated guarantee.

mod support;

use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;
use support::*;

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {n: "{{ data.n }}"}}
"#;

fn spawn(config: &Path, state: &Path, port: u16) -> Child {
    spawn_relay(config, state, port, "warn", Stdio::null())
}

/// A tiny deterministic generator, so a failure can be reproduced.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_accepted_event() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.yaml");
    std::fs::write(&config, config_yaml(&se.base_url(), RULES)).unwrap();
    let state = dir.path().join("state");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut rng = Lcg(0x5eed);
    let mut accepted: HashSet<String> = HashSet::new();
    let mut unanswered: Vec<String> = Vec::new();
    let mut next_id = 0u32;
    let kills = 4;

    for _round in 0..kills {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut child = spawn(&config, &state, port);
        wait_healthy(&url).await;
        // A client retries what went unanswered; then sends new events until the kill.
        let mut to_send: Vec<String> = std::mem::take(&mut unanswered);
        let burst = 20 + rng.next(60) as u32;
        for _ in 0..burst {
            to_send.push(format!("k-{next_id}"));
            next_id += 1;
        }
        let kill_after = rng.next(to_send.len() as u64) as usize;
        for (i, id) in to_send.iter().enumerate() {
            if i == kill_after {
                child.kill().expect("SIGKILL");
            }
            let n: u32 = id[2..].parse().unwrap();
            let body = json!({"id": id, "type": "contact.created", "contact": {"email": format!("k{n}@example.com")}, "data": {"n": n}});
            match http
                .post(format!("{url}/v1/events"))
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status() == 202 => {
                    accepted.insert(id.clone());
                }
                _ => unanswered.push(id.clone()),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    // A last, clean run: retry the unanswered ones and let everything drain.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = spawn(&config, &state, port);
    wait_healthy(&url).await;
    for id in std::mem::take(&mut unanswered) {
        let n: u32 = id[2..].parse().unwrap();
        let body = json!({"id": id, "type": "contact.created", "contact": {"email": format!("k{n}@example.com")}, "data": {"n": n}});
        let r = http
            .post(format!("{url}/v1/events"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "a retry after a crash must be accepted");
        accepted.insert(id);
    }
    // Wait until every accepted event arrived: distinct contacts, duplicates do not count.
    let expected: HashSet<String> = accepted
        .iter()
        .map(|id| format!("k{}@example.com", &id[2..]))
        .collect();
    let deadline = tokio::time::Instant::now() + PATIENCE * 4;
    let mut per_contact: HashMap<String, usize>;
    loop {
        per_contact = HashMap::new();
        for t in se.triggered_events() {
            *per_contact
                .entry(t["emailaddress"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        if expected.iter().all(|e| per_contact.contains_key(e))
            || tokio::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered_all = expected.iter().all(|e| per_contact.contains_key(e));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        delivered_all,
        "only {} of {} accepted events arrived",
        per_contact.len(),
        accepted.len()
    );
    for id in &accepted {
        let n = &id[2..];
        assert!(
            per_contact.contains_key(&format!("k{n}@example.com")),
            "accepted event {id} was never delivered"
        );
    }
    // Duplicates can only come from a batch SmartEmailing accepted just before a kill.
    let duplicates: usize = per_contact.values().map(|c| c - 1).sum();
    eprintln!(
        "{} accepted, {} kills, {duplicates} duplicates",
        accepted.len(),
        kills
    );
    assert!(duplicates <= kills * 500, "{duplicates} duplicates");
}
