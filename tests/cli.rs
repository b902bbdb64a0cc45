//! The `relay` command as a user runs it: check, render, serve, deliveries, replay, signals.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use support::*;

/// `relay` with none of the environment that would change what it does.
fn relay_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
    cmd.env_remove("SMARTEMAILING_USERNAME")
        .env_remove("SMARTEMAILING_API_KEY")
        .env_remove("SMARTEMAILING_API_URL")
        .env_remove("RELAY_CONFIG");
    cmd
}

fn relay(args: &[&str]) -> Output {
    relay_command().args(args).output().expect("relay runs")
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
        .env_remove("RELAY_ADMIN_KEYS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("RELAY_API_KEYS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_with_admin_keys_alone_and_they_reach_ingest() {
    let (dir, config) = welcome_config();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--state"])
        .arg(dir.path().join("state"))
        .env_remove("RELAY_API_KEYS")
        .env("RELAY_ADMIN_KEYS", "admin-only-key")
        .env_remove("SMARTEMAILING_USERNAME")
        .env_remove("SMARTEMAILING_API_KEY")
        .env_remove("RELAY_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(&url).await;
    let post = |key: &'static str| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/events"))
                .bearer_auth(key)
                .json(&event("admin-only-1", "contact.created", "a@example.com"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post("admin-only-key").await, 202);
    assert_eq!(post("not-a-key").await, 401);
    let _ = child.kill();
    let _ = child.wait();
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
        .env_remove("RELAY_CONFIG")
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

/// Posts a `contact.created` event (answered 202) and waits for its delivery to be `status`.
async fn post_and_wait(url: &str, id: &str, email: &str, status: &str) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/events"))
        .bearer_auth(API_KEY)
        .json(&event(id, "contact.created", email))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_delivery_status(&reqwest::Client::new(), url, id, status).await;
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
    let (dir, config) = welcome_config();
    let state = dir.path().join("state");
    se.set_default_fault(Some(Fault::error(422, "Emailaddress rejected for now")));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = serve(&config, &state, port, Some(&se));
    wait_healthy(&url).await;
    post_and_wait(&url, "cli-1", "jan@example.com", "dead").await;

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
    wait_delivery_status(&reqwest::Client::new(), &url, "cli-1", "sent").await;
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
    let out = relay(&["deliveries", "--event-id", "cli-1", "--json", "--state", st]);
    let of_event: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(of_event["id"], line["id"]);
    let out = relay(&["deliveries", "--event-id", "cli-2", "--json", "--state", st]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "");
}

/// Asserts that a run exited 1 with `want` in its stderr, showing the stderr if not.
#[track_caller]
fn exited_1_saying(out: &Output, want: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
}

#[test]
fn help_describes_the_command_and_lists_every_delivery_status() {
    let help = text(&relay(&["--help"]).stdout);
    assert!(
        help.starts_with("Relay CDP and e-shop events to SmartEmailing: serve"),
        "{help}"
    );
    assert!(!help.contains("end-to-end tests"), "{help}");
    let help = text(&relay(&["deliveries", "--help"]).stdout);
    let statuses = [
        "pending",
        "scheduled",
        "retrying",
        "sent",
        "dry_run",
        "skipped",
        "dead",
        "cancelled",
    ];
    for status in statuses {
        assert!(help.contains(status), "{status}: {help}");
    }
    // The statuses the old help left out are accepted: the command gets as far as the store.
    for status in ["scheduled", "cancelled"] {
        let out = relay(&[
            "deliveries",
            "--status",
            status,
            "--state",
            "/nonexistent/state",
        ]);
        exited_1_saying(&out, "no relay state");
    }
    exited_1_saying(&relay(&["deliveries", "--status", "bogus"]), "cancelled");
}

#[test]
fn a_bare_port_for_listen_is_refused_with_the_address_to_write() {
    for given in ["8080", ":8080"] {
        let out = relay_command()
            .args(["serve", "--listen", given])
            .env("RELAY_API_KEYS", API_KEY)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{given}");
        let err = text(&out.stderr);
        assert!(err.contains("write 127.0.0.1:8080"), "{given}: {err}");
    }
}

#[test]
fn the_config_comes_from_relay_config_or_the_state_directory_and_a_miss_names_every_place() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = repo.join("config/relay.yaml");
    let events = repo.join("events");
    let dir = tempfile::tempdir().unwrap();
    let check = |env: Option<&Path>| {
        let mut cmd = relay_command();
        cmd.current_dir(dir.path())
            .arg("check")
            .arg("--events")
            .arg(&events);
        if let Some(path) = env {
            cmd.env("RELAY_CONFIG", path);
        }
        cmd.output().unwrap()
    };

    let out = check(None);
    for place in ["config/relay.yaml", ".relay/relay.yaml", "RELAY_CONFIG"] {
        exited_1_saying(&out, place);
    }

    let out = check(Some(&example));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("{}: ", example.display())),
        "{}",
        text(&out.stdout)
    );

    // `relay.yaml` in the state directory: found there, so the run gets as far as the store.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::copy(&example, state.join("relay.yaml")).unwrap();
    let out = relay_command()
        .current_dir(dir.path())
        .args(["birthdays", "run", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    exited_1_saying(&out, "no relay state");

    // Commands without --state look in the default one.
    std::fs::create_dir(dir.path().join(".relay")).unwrap();
    std::fs::copy(&example, dir.path().join(".relay/relay.yaml")).unwrap();
    let out = check(None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(".relay/relay.yaml: "));
}

/// A relay's output once it has exited; kills it and fails if it is still running after
/// PATIENCE (a `serve` that should have refused to start would otherwise hang the test).
fn output_within_patience(child: std::process::Child) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("relay (pid {pid}) still running after {PATIENCE:?}");
        }
    }
}

/// A config with one rule, `welcome`, in a new temporary directory.
fn welcome_config() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.yaml");
    std::fs::write(
        &config,
        config_yaml("https://unused.example.com/api/v3", "  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: welcome}\n"),
    )
    .unwrap();
    (dir, config)
}

/// A dry-run `relay serve` on `state`, answering: the process, its port and its URL.
async fn serving(config: &Path, state: &Path) -> (std::process::Child, u16, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = serve(config, state, port, None);
    wait_healthy(&url).await;
    (child, port, url)
}

/// SIGTERM, and the relay exits 0.
fn stop_cleanly(child: std::process::Child) {
    sigterm(&child);
    assert_eq!(output_within_patience(child).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_an_unknown_id_names_it_exits_1_and_replays_nothing() {
    let (dir, config) = welcome_config();
    let state = dir.path().join("state");
    let (child, _, url) = serving(&config, &state).await;
    post_and_wait(&url, "cli-2", "eva@example.com", "dry_run").await;

    let (cfg, st) = (config.to_str().unwrap(), state.to_str().unwrap());
    let out = relay(&["deliveries", "--json", "--state", st]);
    let known: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let known = known["id"].as_str().unwrap().to_string();

    let out = relay(&["replay", "dlv_unknown", "--config", cfg, "--state", st]);
    exited_1_saying(&out, "no delivery has the id dlv_unknown");
    assert_eq!(text(&out.stdout), "", "nothing is reported queued");

    // One unknown id among known ones: all are named, the known one is not replayed.
    let out = relay(&[
        "replay", &known, "dlv_a", "dlv_b", "--config", cfg, "--state", st,
    ]);
    exited_1_saying(
        &out,
        "no delivery has the ids dlv_a, dlv_b, so nothing was replayed",
    );
    assert!(
        !text(&out.stderr).contains("looked at"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "");

    stop_cleanly(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_state_exits_1_naming_the_directory_and_the_running_pid() {
    let (dir, config) = welcome_config();
    let state = dir.path().join("state");
    let (first, port, _) = serving(&config, &state).await;

    let second = output_within_patience(serve(&config, &state, free_port(), None));
    assert_eq!(second.status.code(), Some(1));
    let err = text(&second.stderr);
    assert!(err.contains(state.to_str().unwrap()), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(
        err.contains(&format!("listening on 127.0.0.1:{port}")),
        "{err}"
    );

    // The readers stay allowed beside a running relay.
    let out = relay(&["deliveries", "--state", state.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // The lock goes with the process: a relay started after it stops runs.
    stop_cleanly(first);
    let (third, _, _) = serving(&config, &state).await;
    stop_cleanly(third);
}
