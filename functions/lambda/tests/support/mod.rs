//! The AWS emulator for the tests: a fresh table (created from template.yaml's definition, so
//! the two cannot drift), four queues and a secret per test, on the moto server that
//! `scripts/test` starts at `RELAY_TEST_AWS_ENDPOINT`.
#![allow(dead_code)]

pub mod proxy;
mod resources;

// Each test file uses a part of them.
#[allow(unused_imports)]
pub use resources::{
    count_by_name, create_queue, create_table, endpoint, repo_root, trigger_delivery, unique,
};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use relay_lambda::dispatch::DispatchHandler;
use relay_lambda::render::RenderHandler;
use relay_lambda::Context;
use relay_shared::adapters::aws::{AwsSettings, SdkConfig};
use relay_shared::adapters::reqwest::ReqwestTransport;
use relay_shared::ports::clock::Clock;
use relay_shared::rules::config::Config;
use serde_json::{json, Value};
use std::sync::Arc;

/// A file of `events/aws/`.
pub fn fixture(name: &str) -> String {
    let path = repo_root().join("events/aws").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One test's resources on the emulator.
pub struct Emulator {
    /// The SDK configuration pointing at the emulator.
    pub sdk: SdkConfig,
    /// The resources' names, as a function's environment gives them.
    pub settings: AwsSettings,
    /// Raw clients, to look behind the adapters.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Raw SQS client.
    pub sqs: aws_sdk_sqs::Client,
    /// Raw Secrets Manager client.
    pub secrets: aws_sdk_secretsmanager::Client,
}

/// The secret the tests use: one inbound key, SmartEmailing credentials when given.
pub fn secret_json(smartemailing: Option<(&str, &str)>) -> String {
    let se = match smartemailing {
        Some((u, k)) => json!({"username": u, "api_key": k}),
        None => json!({"username": "", "api_key": ""}),
    };
    json!({"smartemailing": se, "api_keys": ["fixture-api-key"], "webhook_secrets": {"crm_token": "crm-secret-1"}})
        .to_string()
}

impl Emulator {
    /// Creates a table, the queues and the secret, with fresh names.
    pub async fn start(secret: &str) -> Emulator {
        let sdk = relay_shared::adapters::aws::emulator_config(&endpoint()).await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let table = unique("relay");
        create_table(&dynamodb, &table).await;
        let mut urls = Vec::new();
        for name in ["render-dlq", "dispatch-dlq"] {
            urls.push(create_queue(&sqs, &unique(name), None).await);
        }
        let render = create_queue(&sqs, &unique("render"), Some(&urls[0])).await;
        let dispatch = create_queue(&sqs, &unique("dispatch"), Some(&urls[1])).await;
        let secret_id = unique("relay-secret");
        secrets
            .create_secret()
            .name(&secret_id)
            .secret_string(secret)
            .send()
            .await
            .expect("create the secret");
        Emulator {
            settings: AwsSettings {
                table,
                render_queue_url: render,
                dispatch_queue_url: dispatch,
                render_dlq_url: Some(urls[0].clone()),
                dispatch_dlq_url: Some(urls[1].clone()),
                secret_id,
            },
            sdk,
            dynamodb,
            sqs,
            secrets,
        }
    }

    /// A function context on these resources.
    pub fn context(&self, config: Config, clock: Arc<dyn Clock>) -> Context {
        Context::new(config, &self.sdk, &self.settings, clock)
    }

    /// A function context on these resources whose AWS requests go through `proxy` (see
    /// `proxy::start_proxy`).
    pub async fn context_via(&self, proxy: &str, config: Config, clock: Arc<dyn Clock>) -> Context {
        let sdk = relay_shared::adapters::aws::emulator_config(proxy).await;
        Context::new(config, &sdk, &self.settings, clock)
    }

    /// Every message waiting in a queue (received, so hidden for 30 s).
    pub async fn receive_all(&self, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive");
            let msgs = got.messages.unwrap_or_default();
            if msgs.is_empty() {
                return out;
            }
            out.extend(msgs);
        }
    }

    /// Up to `max` of a queue's visible messages, ten to a receive, as an event source
    /// mapping takes a batch; hidden for `visibility` seconds when given (else the queue's).
    pub async fn receive_batch(
        &self,
        url: &str,
        max: usize,
        visibility: Option<i32>,
    ) -> Vec<aws_sdk_sqs::types::Message> {
        let mut out = Vec::new();
        while out.len() < max {
            let got = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages((max - out.len()).min(10) as i32)
                .set_visibility_timeout(visibility)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                break;
            }
            out.extend(got);
        }
        out
    }

    /// Waits (up to `patience`) for messages to become visible in a queue, and takes them.
    pub async fn receive_within(
        &self,
        url: &str,
        patience: std::time::Duration,
    ) -> Vec<aws_sdk_sqs::types::Message> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // Long polling: the emulator answers as soon as a message is visible.
            let got = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            let msgs = got.messages.unwrap_or_default();
            if !msgs.is_empty() || tokio::time::Instant::now() >= deadline {
                return msgs;
            }
        }
    }

    /// Does what Lambda's event source mapping does after a handler: deletes the messages
    /// that were not reported as failures.
    pub async fn settle(
        &self,
        url: &str,
        messages: &[aws_sdk_sqs::types::Message],
        response: &SqsBatchResponse,
    ) {
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        for m in messages {
            if !failed.contains(&m.message_id().unwrap_or_default()) {
                // A message the handler already deleted is fine to delete again.
                let _ = self
                    .sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await;
            }
        }
    }

    /// Every item of the table.
    pub async fn items(
        &self,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.dynamodb
            .scan()
            .table_name(&self.settings.table)
            .send()
            .await
            .expect("scan")
            .items
            .unwrap_or_default()
    }

    /// How many messages a queue holds, visible or not.
    pub async fn depth(&self, url: &str) -> usize {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        attrs.values().filter_map(|v| v.parse::<usize>().ok()).sum()
    }
}

/// The three functions a test drives on `ctx`: the inbound router, render and dispatch
/// (calling SmartEmailing over real HTTP, jitter seeded by `seed`).
pub fn functions(ctx: &Context, seed: u64) -> (axum::Router, RenderHandler, DispatchHandler) {
    let transport = Arc::new(ReqwestTransport::new().expect("an HTTP client"));
    (
        relay_lambda::inbound::router(ctx),
        RenderHandler::new(ctx),
        DispatchHandler::new(ctx, transport, Some(seed)),
    )
}

/// POST /v1/events with `events` through API Gateway's request shape; the answer, which
/// must be a 202.
pub async fn post_events(app: &axum::Router, events: &[Value]) -> Value {
    let mut request: Value = serde_json::from_str(&fixture("apigw-post-event.json")).unwrap();
    request["body"] = json!(json!({ "events": events }).to_string());
    post_request(app, &request).await
}

/// Hands an API Gateway request (its JSON, as `events/aws/` has them) to the inbound router;
/// the answer, which must be a 202.
pub async fn post_request(app: &axum::Router, request: &Value) -> Value {
    use tower::ServiceExt;
    let request = lambda_http::request::from_str(&request.to_string()).unwrap();
    let (parts, body) = request.into_parts();
    let response = app
        .clone()
        .oneshot(axum::http::Request::from_parts(
            parts,
            axum::body::Body::from(body.to_vec()),
        ))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The messages as Lambda's SQS event source hands them to a function.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message], queue_arn: &str) -> SqsEvent {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attrs: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attrs,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "eu-central-1",
            })
        })
        .collect();
    serde_json::from_value(json!({"Records": records})).expect("an SQS event")
}
