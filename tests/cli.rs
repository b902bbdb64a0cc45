//! The `relay` command as a user runs it: check, render, serve, deliveries, replay, signals.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::*;

fn relay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(args)
        .env_remove("SMARTEMAILING_USERNAME")
        .env_remove("SMARTEMAILING_API_KEY")
        .env_remove("SMARTEMAILING_API_URL")
        .output()
        .expect("relay runs")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn check_passes_on_the_example_config_and_its_samples() {
    let out = relay(&[
        "check",
        "--config",
        "config/relay.yaml",
        "--events",
        "events",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("without errors"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_fails_with_errors_naming_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        "rules:\n  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: w, payload: {a: '{{ contact.first_name '}}\n    then: [nowhere]\n",
    )
    .unwrap();
    let out = relay(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("rules[welcome].actions[0].trigger_event.payload.a"),
        "{err}"
    );
    assert!(
        err.contains("rules[welcome].then[0]: no rule is named `nowhere`"),
        "{err}"
    );
}

#[test]
fn check_fails_when_a_sample_does_not_render() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.yaml");
    std::fs::write(&config, "rules:\n  - name: r\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: \"{{ data.nope }}\"}\n").unwrap();
    let events = dir.path().join("events");
    std::fs::create_dir(&events).unwrap();
    std::fs::write(
        events.join("e.json"),
        r#"{"id": "1", "type": "contact.created", "contact": {"email": "a@example.com"}}"#,
    )
    .unwrap();
    let out = relay(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}

#[test]
fn render_prints_the_requests_with_credentials_masked() {
    let out = relay(&["render", "--event", "events/contact.created.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = v["deliveries"].as_array().unwrap();
    assert_eq!(d[0]["rule"], "welcome");
    assert_eq!(
        d[0]["request"]["url"],
        "https://app.smartemailing.cz/api/v3/import"
    );
    assert_eq!(d[0]["request"]["headers"]["Authorization"], "***");
    assert_eq!(d[1]["request"]["body"][0]["name"], "welcome");
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    assert_eq!(relay(&["frobnicate"]).status.code(), Some(1));
    assert_eq!(relay(&["render"]).status.code(), Some(1));
    assert_eq!(relay(&["--help"]).status.code(), Some(0));
    for sub in ["serve", "check", "render", "deliveries", "replay"] {
        let out = relay(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        assert!(text(&out.stdout).contains("Usage"), "{sub}");
    }
    let out = relay(&["deliveries", "--state", "/nonexistent/state"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no relay state"));
}

#[test]
fn serve_refuses_to_start_without_api_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("RELAY_API_KEYS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("RELAY_API_KEYS"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(
    config: &Path,
    state: &Path,
    port: u16,
    se: Option<&FakeSmartEmailing>,
) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
    cmd.args(["serve", "--log-format", "json", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--state"])
        .arg(state)
        .env("RELAY_API_KEYS", API_KEY)
        .env_remove("SMARTEMAILING_USERNAME")
        .env_remove("SMARTEMAILING_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(se) = se {
        cmd.env("SMARTEMAILING_USERNAME", SE_USER)
            .env("SMARTEMAILING_API_KEY", SE_KEY)
            .env("SMARTEMAILING_API_URL", se.base_url());
    }
    cmd.spawn().unwrap()
}

async fn wait_status(url: &str, id: &str, want: &str) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = http
            .get(format!("{url}/v1/events/{id}"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            if v["deliveries"][0]["status"] == want {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigterm(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_from_the_command_line() {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.yaml");
    std::fs::write(
        &config,
        config_yaml("https://unused.example.com/api/v3", "  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: welcome}\n"),
    )
    .unwrap();
    let state = dir.path().join("state");
    se.set_default_fault(Some(Fault::error(422, "Emailaddress rejected for now")));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = serve(&config, &state, port, Some(&se));
    wait_healthy(&url).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url}/v1/events"))
        .bearer_auth(API_KEY)
        .json(&event("cli-1", "contact.created", "jan@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_status(&url, "cli-1", "dead").await;

    // SIGTERM stops it cleanly, and it says so.
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let logs = text(&out.stderr);
    assert!(
        logs.lines()
            .all(|l| l.trim().is_empty() || serde_json::from_str::<Value>(l).is_ok()),
        "--log-format json: {logs}"
    );
    assert!(logs.contains("stopped"), "{logs}");
    assert!(
        !logs.contains(SE_KEY) && !logs.contains(API_KEY),
        "secrets leaked into the logs"
    );

    let st = state.to_str().unwrap();
    let out = relay(&[
        "deliveries",
        "--status",
        "dead",
        "--rule",
        "welcome",
        "--since",
        "1h",
        "--state",
        st,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(
        listing.contains("cli-1") && listing.contains("Emailaddress rejected for now"),
        "{listing}"
    );
    let out = relay(&["deliveries", "--status", "sent", "--json", "--state", st]);
    assert_eq!(text(&out.stdout).trim(), "");

    let out = relay(&[
        "replay",
        "--all-dead",
        "--config",
        config.to_str().unwrap(),
        "--state",
        st,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 of 1 deliveries queued"),
        "{}",
        text(&out.stdout)
    );

    se.set_default_fault(None);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = serve(&config, &state, port, Some(&se));
    wait_healthy(&url).await;
    wait_status(&url, "cli-1", "sent").await;
    assert_eq!(
        se.triggered_events(),
        vec![json!({"emailaddress": "jan@example.com", "name": "welcome", "payload": {}})]
    );
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let out = relay(&["deliveries", "--status", "sent", "--json", "--state", st]);
    let line: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(line["event_id"], "cli-1");
    assert_eq!(line["attempts"], 1);
}
