//! `relay serve` with its state on a tiny tmpfs, filled until the store refuses writes, then
//! grown: nothing accepted is lost, nothing is sent twice, `/health` says what is wrong while
//! the disk is full. Needs root (to mount a tmpfs); elsewhere it says so and skips.

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {note: "{{ data.note }}"}}
"#;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("remount");
        assert!(status.success(), "remount to {size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let Some(fs) = Tmpfs::mount(&state, "3m") else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let config = dir.path().join("relay.yaml");
    std::fs::write(&config, config_yaml(&se.base_url(), RULES)).unwrap();
    let log = dir.path().join("relay.log");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = spawn_relay(
        &config,
        &state,
        port,
        "info",
        std::fs::File::create(&log).unwrap().into(),
    );
    wait_healthy(&url).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Batches of five 2 KB events until the store refuses them (and a few more after).
    let note = "n".repeat(2000);
    let mut accepted: Vec<String> = Vec::new();
    let mut refused_batches = 0;
    let mut next = 0;
    while refused_batches < 5 && next < 20_000 {
        let events: Vec<Value> = (next..next + 5)
            .map(|i| json!({"id": format!("df-{i}"), "type": "contact.created",
                            "contact": {"email": format!("c{i}@example.com")}, "data": {"note": note}}))
            .collect();
        next += 5;
        let r = http
            .post(format!("{url}/v1/events"))
            .bearer_auth(API_KEY)
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        match status {
            202 => {
                for res in body["results"].as_array().unwrap() {
                    assert_eq!(res["status"], "accepted", "{body}");
                    accepted.push(res["id"].as_str().unwrap().to_string());
                }
            }
            503 => {
                for res in body["results"].as_array().into_iter().flatten() {
                    if res["status"] == "accepted" {
                        accepted.push(res["id"].as_str().unwrap().to_string());
                    }
                }
                refused_batches += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused_batches >= 5, "the 3 MB store never filled");
    assert!(!accepted.is_empty());

    // While the disk is full, /health says so (the workers find out within a pass).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let health = loop {
        let r = http.get(format!("{url}/health")).send().await.unwrap();
        let s = r.status().as_u16();
        let b: Value = r.json().await.unwrap_or(Value::Null);
        if s == 503 || tokio::time::Instant::now() > deadline {
            break (s, b);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health.0, 503, "{}", health.1);
    assert!(health.1["store"]
        .as_str()
        .unwrap()
        .contains("refuses writes"));

    // Grow the disk: everything accepted is delivered, each contact exactly once.
    fs.resize("64m");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut sent: HashMap<String, usize> = HashMap::new();
        for t in se.triggered_events() {
            *sent
                .entry(t["emailaddress"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        let all = accepted.iter().all(|id| {
            let n: usize = id.trim_start_matches("df-").parse().unwrap();
            sent.contains_key(&format!("c{n}@example.com"))
        });
        if all {
            let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
            assert!(twice.is_empty(), "sent more than once: {twice:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every accepted event was delivered after the disk grew ({} accepted, {} sent)\n{}",
            accepted.len(),
            sent.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every accepted event may have been sent before the disk filled up (only the outcome's
    // commit refused): then the workers find the store writable again at their next probe,
    // not before the last trigger arrived. Wait for that, then check again that the
    // recovery sent nothing a second time.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = http.get(format!("{url}/health")).send().await.unwrap();
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health still {} after the disk grew",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &accepted {
        wait_delivery_status(&http, &url, id, "sent").await;
    }
    let mut sent: HashMap<String, usize> = HashMap::new();
    for t in se.triggered_events() {
        *sent
            .entry(t["emailaddress"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent again after the recovery: {twice:?}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    // Said once, not four times a second. (Whether a worker pauses at all depends on whether
    // one of its writes met the full disk: the accepts' 10 KB batches are refused while a
    // pass's smaller writes may still fit, and a pass may have finished before.)
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let pauses = logs.matches("the store refuses writes; pausing").count();
    assert!(
        pauses <= 4,
        "the pause is logged once per worker and outage, not per pass: {pauses}\n{logs}"
    );
}
