//! Inbound signed calls from a real Standard Webhooks sender: the spec authors' Python
//! package signs, over real HTTP, and retries as Svix-style senders do.

mod support;

use relay_shared::domain::secret::Secret;
use serde_json::{json, Value};
use support::{bundle, config_yaml, TestRelay};

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome}
"#;

/// The Python with `standardwebhooks` installed (`scripts/test` sets it).
fn python() -> Option<String> {
    std::env::var("RELAY_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
}

#[tokio::test]
async fn a_standard_webhooks_senders_retry_is_a_duplicate_and_a_reused_id_is_refused() {
    let Some(python) = python() else {
        eprintln!(
            "SKIPPED: set RELAY_TEST_PYTHON to a Python with `standardwebhooks` (scripts/test does)"
        );
        return;
    };
    let yaml = config_yaml("http://127.0.0.1:9/api/v3", RULES).replace(
        "outbound:",
        "inbound:\n  signatures:\n    events: [cdp_signing]\noutbound:",
    );
    let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut secrets = bundle(false);
    secrets.named.insert("cdp_signing".into(), Secret::new(key));
    let r = TestRelay::start(&yaml, secrets).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/standard_webhooks_sender.py"
    );
    let url = format!("{}/v1/events", r.url);
    // On a blocking thread: the relay is served by this test's runtime meanwhile.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(script)
            .arg(url)
            .arg(key)
            .output()
    })
    .await
    .expect("join")
    .expect("run the Python sender");
    assert!(
        out.status.success(),
        "the sender failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let attempts: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    // The first delivery is taken.
    assert_eq!(attempts[0]["status"], 202, "{attempts:?}");
    assert_eq!(attempts[0]["answer"]["results"][0]["status"], "accepted");
    // The sender's retry (same id, same body, signed afresh) is a 2xx duplicate.
    assert_eq!(attempts[1]["status"], 202, "{attempts:?}");
    assert_eq!(
        attempts[1]["answer"]["results"][0],
        json!({"id": "swh-1", "status": "duplicate"})
    );
    // The same id for another body is refused, and that body is not stored.
    assert_eq!(attempts[2]["status"], 422, "{attempts:?}");
    assert_eq!(attempts[2]["answer"]["error"]["code"], "webhook_id_reused");
    assert_eq!(r.get("/v1/events/swh-2").await.0, 404);
    // The first event ran once: one welcome delivery.
    let deliveries = r.wait_settled("swh-1", 1).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
}
