//! `relay replay --aws` end to end (issue 13): the real `relay` binary, built with the `aws`
//! feature, against the moto emulator at `RELAY_TEST_AWS_ENDPOINT` (`scripts/test` starts
//! it). Dead deliveries in the table are replayed by filter, the dispatch step (the Lambda's
//! dispatcher on the same adapters) sends each once, and a `sent` one is never touched.
#![cfg(feature = "aws")]

#[path = "support/fake_smartemailing.rs"]
mod fake_smartemailing;
#[path = "../functions/lambda/tests/support/resources.rs"]
mod resources;

use fake_smartemailing::FakeSmartEmailing;
use relay_shared::adapters::aws::{emulator_config, AwsStores};
use relay_shared::adapters::env_credentials::StaticCredentials;
use relay_shared::adapters::reqwest::ReqwestTransport;
use relay_shared::domain::delivery::{DeliveryId, DeliveryStatus};
use relay_shared::domain::secret::{SeCredentials, Secret, SecretBundle};
use relay_shared::pipeline::dispatch::{Dispatcher, QueueDelays};
use relay_shared::ports::clock::{Clock, SystemClock};
use relay_shared::ports::queue::QueueName;
use relay_shared::ports::{DeliveryStore, Queue};
use relay_shared::rules::config::Config;
use resources::{count_by_name, trigger_delivery as delivery};
use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

const SE_USER: &str = "shop@example.com";
const SE_KEY: &str = "se-key-replay-aws";

/// The emulator's URL; `None` (the test says it is skipped) without one.
fn emulator() -> Option<String> {
    match std::env::var("RELAY_TEST_AWS_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        _ => {
            eprintln!(
                "SKIPPED: RELAY_TEST_AWS_ENDPOINT is not set, so `relay replay --aws` is not \
                 tested. Run `scripts/test`, which starts the moto emulator, or start \
                 `moto_server -H 127.0.0.1 -p 5000` and export \
                 RELAY_TEST_AWS_ENDPOINT=http://127.0.0.1:5000"
            );
            None
        }
    }
}

/// The deployment's table and queues on the emulator, as the stack's outputs name them.
struct Stack {
    env: HashMap<&'static str, String>,
    endpoint: String,
    stores: AwsStores,
}

impl Stack {
    async fn create(endpoint: &str) -> Stack {
        let sdk = emulator_config(endpoint).await;
        let table = resources::unique("relay-replay");
        resources::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let render = resources::create_queue(&sqs, &resources::unique("render"), None).await;
        let dispatch = resources::create_queue(&sqs, &resources::unique("dispatch"), None).await;
        let env = HashMap::from([
            ("TABLE_NAME", table),
            ("RENDER_QUEUE_URL", render),
            ("DISPATCH_QUEUE_URL", dispatch),
        ]);
        let stores =
            AwsStores::from_lookup(&sdk, |k| env.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"));
        Stack {
            env,
            endpoint: endpoint.to_string(),
            stores,
        }
    }

    /// `relay <args>` pointed at this stack, as docs/aws.md says to run it: the outputs and
    /// the SDK's own settings in the environment, and no `SECRET_ID` (it reads no secret).
    fn relay(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
        cmd.args(args)
            .env_remove("SECRET_ID")
            .env_remove("RELAY_CONFIG")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "eu-central-1")
            .envs(&self.env);
        let out = cmd.output().expect("relay runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "relay {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// What the dispatch function does with every job in the dispatch queue, until it is empty.
    async fn dispatch_all(&self, config: Config, fake: &FakeSmartEmailing) {
        let store = self.stores.store.clone();
        let credentials = Arc::new(StaticCredentials::new(SecretBundle {
            smartemailing: Some(SeCredentials {
                username: fake.username(),
                api_key: Secret::new(fake.api_key()),
            }),
            ..SecretBundle::default()
        }));
        let dispatcher = Dispatcher::new(
            Arc::new(config),
            store.clone(),
            store,
            self.stores.queue.clone(),
            credentials,
            Arc::new(ReqwestTransport::new().expect("a transport")),
            Arc::new(SystemClock),
            Some(3),
        )
        .with_queue_delays(QueueDelays::Capped);
        loop {
            let batch = self
                .stores
                .queue
                .receive(QueueName::Dispatch, 10, Duration::from_secs(30))
                .await
                .expect("receive");
            if batch.is_empty() {
                return;
            }
            dispatcher.handle(batch).await.expect("a dispatch pass");
        }
    }

    async fn status_of(&self, ids: &[&str]) -> Vec<DeliveryStatus> {
        let ids: Vec<DeliveryId> = ids.iter().map(|i| DeliveryId::from_stored(*i)).collect();
        let found = self.stores.store.get_many(&ids).await.expect("read back");
        assert_eq!(found.len(), ids.len());
        found.iter().map(|d| d.status).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_aws_sends_the_dead_deliveries_of_a_rule_once_and_never_a_sent_one() {
    let Some(endpoint) = emulator() else { return };
    let fake = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let stack = Stack::create(&endpoint).await;
    let dir = std::env::temp_dir().join(resources::unique("relay-replay-aws"));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let rules = dir.join("relay.yaml");
    let text = format!(
        "smartemailing:\n  base_url: {}\ndelivery:\n  timeout: 5s\n  batch_window: 10ms\nrules:\n  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {{name: welcome}}\n  - name: other\n    on: [contact.updated]\n    actions:\n      - trigger_event: {{name: other}}\n",
        fake.base_url()
    );
    std::fs::write(&rules, &text).expect("the rules written");
    let config = Config::parse(&text, "replay rules").expect("the rules parse");

    let now = SystemClock.now_ms();
    let records = [
        delivery("dlv_dead_1", "welcome", DeliveryStatus::Dead, now),
        delivery("dlv_dead_2", "welcome", DeliveryStatus::Dead, now + 1),
        delivery("dlv_dead_other", "other", DeliveryStatus::Dead, now + 2),
        delivery("dlv_sent", "welcome", DeliveryStatus::Sent, now + 3),
    ];
    stack
        .stores
        .store
        .insert_new(&records)
        .await
        .expect("stored");

    // By filter: the dead ones of `welcome`, not those of another rule, never a sent one.
    let rules_arg = rules.to_str().expect("a UTF-8 path");
    let state = dir.to_str().expect("a UTF-8 path");
    let out = stack.relay(&[
        "replay",
        "--aws",
        "--all-dead",
        "--rule",
        "welcome",
        "--config",
        rules_arg,
        "--state",
        state,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("2 of 2 deliveries queued"), "{said}");
    assert_eq!(
        stack
            .status_of(&["dlv_dead_1", "dlv_dead_2", "dlv_dead_other", "dlv_sent"])
            .await,
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Pending,
            DeliveryStatus::Dead,
            DeliveryStatus::Sent
        ]
    );
    // Named, the sent one is still left alone.
    let out = stack.relay(&[
        "replay", "--aws", "dlv_sent", "--config", rules_arg, "--state", state,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("0 of 1 deliveries queued"), "{said}");

    stack.dispatch_all(config, &fake).await;
    let calls = count_by_name(fake.triggered_events());
    assert_eq!(
        calls,
        HashMap::from([("dlv_dead_1".to_string(), 1), ("dlv_dead_2".to_string(), 1)]),
        "each replayed delivery sent once, nothing else"
    );
    assert_eq!(
        stack
            .status_of(&["dlv_dead_1", "dlv_dead_2", "dlv_dead_other", "dlv_sent"])
            .await,
        [
            DeliveryStatus::Sent,
            DeliveryStatus::Sent,
            DeliveryStatus::Dead,
            DeliveryStatus::Sent
        ]
    );
    let listed = stack.relay(&["deliveries", "--aws", "--status", "dead", "--json"]);
    let dead: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["id"], "dlv_dead_other");
    let _ = std::fs::remove_dir_all(&dir);
}
