//! The whole AWS pipeline in one process: API Gateway request -> inbound -> render queue ->
//! render -> dispatch queue -> dispatch -> a fake SmartEmailing on loopback, with a retry, a
//! chained rule and duplicates, checking what DynamoDB holds at the end.
#![cfg(feature = "emulator-tests")]

mod support;

#[path = "../../../tests/support/fake_smartemailing.rs"]
mod fake_smartemailing;

use fake_smartemailing::{FakeSmartEmailing, Fault};
use relay_lambda::dispatch::DispatchHandler;
use relay_lambda::inbound;
use relay_lambda::render::RenderHandler;
use relay_shared::adapters::reqwest::ReqwestTransport;
use relay_shared::domain::delivery::{DeliveryId, DeliveryStatus};
use relay_shared::domain::event::EventId;
use relay_shared::ports::clock::SystemClock;
use relay_shared::ports::queue::{DispatchJob, QueueName};
use relay_shared::ports::{DeliveryStore, EventStore, Queue};
use relay_shared::rules::config::Config;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::{fixture, secret_json, sqs_event, Emulator};

const SE_USER: &str = "shop@example.com";
const SE_KEY: &str = "se-key-aws-1";
/// How long a step may take to show up in a queue.
const PATIENCE: Duration = Duration::from_secs(15);

fn rules(base_url: &str) -> String {
    format!(
        r#"
smartemailing:
  base_url: {base_url}
delivery:
  timeout: 5s
  retry_schedule: [1s, 1s, 1s]
  batch_window: 10ms
rules:
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event:
          name: welcome
          payload:
            first_name: "{{{{ contact.first_name | default(value='') }}}}"
    then: [welcome-followup]
  - name: welcome-followup
    actions:
      - trigger_event:
          name: welcome-followup
"#
    )
}

async fn post_fixture(app: &axum::Router) -> Value {
    let request: Value = serde_json::from_str(&fixture("apigw-post-event.json")).unwrap();
    support::post_request(app, &request).await
}

#[tokio::test]
async fn an_event_goes_through_the_aws_pipeline_once_despite_a_retry_and_duplicates() {
    let fake = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let emu = Emulator::start(&secret_json(Some((SE_USER, SE_KEY)))).await;
    let config = Config::parse(&rules(&fake.base_url()), "pipeline rules").unwrap();
    let ctx = emu.context(config, Arc::new(SystemClock));
    let app = inbound::router(&ctx);
    let render = RenderHandler::new(&ctx);
    let dispatch = DispatchHandler::new(&ctx, Arc::new(ReqwestTransport::new().unwrap()), Some(1));
    let render_q = emu.settings.render_queue_url.clone();
    let dispatch_q = emu.settings.dispatch_queue_url.clone();
    let arn = "arn:aws:sqs:eu-central-1:123456789012:relay";

    // In: accepted once.
    let answer = post_fixture(&app).await;
    assert_eq!(answer["results"][0]["status"], "accepted");

    // Render: one delivery, one dispatch job.
    let jobs = emu.receive_within(&render_q, PATIENCE).await;
    assert_eq!(jobs.len(), 1);
    let response = render.handle(sqs_event(&jobs, arn)).await;
    assert!(response.batch_item_failures.is_empty());
    emu.settle(&render_q, &jobs, &response).await;

    // Dispatch, first attempt: SmartEmailing is briefly unavailable.
    fake.fail_next(1, Fault::status(503));
    let batch = emu.receive_within(&dispatch_q, PATIENCE).await;
    assert_eq!(batch.len(), 1);
    let response = dispatch.handle(sqs_event(&batch, arn)).await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "the retried message is reported, so SQS keeps it"
    );
    emu.settle(&dispatch_q, &batch, &response).await;
    let event_id = EventId::from_stored("evt-aws-0001");
    let welcome = DeliveryId::derive(&event_id, "welcome", 0);
    let record = &ctx
        .ports
        .store
        .get_many(std::slice::from_ref(&welcome))
        .await
        .unwrap()[0];
    assert_eq!(record.status, DeliveryStatus::Retrying);
    assert_eq!(record.attempts, 1);
    assert!(record.last_error.as_deref().unwrap_or("").contains("503"));

    // The same message comes back once its visibility (the retry delay) runs out.
    let batch = emu.receive_within(&dispatch_q, PATIENCE).await;
    assert_eq!(batch.len(), 1, "the retry is delivered again");
    assert_eq!(
        batch[0]
            .attributes()
            .and_then(
                |a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            )
            .map(String::as_str),
        Some("2")
    );
    let response = dispatch.handle(sqs_event(&batch, arn)).await;
    assert!(response.batch_item_failures.is_empty());
    emu.settle(&dispatch_q, &batch, &response).await;

    // The chained rule runs once the first one has fully succeeded.
    let jobs = emu.receive_within(&render_q, PATIENCE).await;
    assert_eq!(jobs.len(), 1, "one chained render job");
    let response = render.handle(sqs_event(&jobs, arn)).await;
    emu.settle(&render_q, &jobs, &response).await;
    let batch = emu.receive_within(&dispatch_q, PATIENCE).await;
    assert_eq!(batch.len(), 1);
    let response = dispatch.handle(sqs_event(&batch, arn)).await;
    assert!(response.batch_item_failures.is_empty());
    emu.settle(&dispatch_q, &batch, &response).await;

    let names: Vec<Value> = fake
        .triggered_events()
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names, ["welcome", "welcome-followup"]);
    assert_eq!(
        fake.requests_to("/trigger-event").len(),
        3,
        "503, then two successes"
    );

    // Duplicates: the same event again, and a stray copy of a sent delivery's job.
    let answer = post_fixture(&app).await;
    assert_eq!(answer["results"][0]["status"], "duplicate");
    assert_eq!(emu.depth(&render_q).await, 0, "no second render job");
    let stray = serde_json::to_string(&DispatchJob {
        delivery: welcome.clone(),
    })
    .unwrap();
    ctx.ports
        .queue
        .send(QueueName::Dispatch, vec![stray], Duration::ZERO)
        .await
        .unwrap();
    let batch = emu.receive_within(&dispatch_q, PATIENCE).await;
    assert_eq!(batch.len(), 1);
    let response = dispatch.handle(sqs_event(&batch, arn)).await;
    assert!(response.batch_item_failures.is_empty());
    emu.settle(&dispatch_q, &batch, &response).await;
    // The stray copy makes sure the chain was enqueued; rendering it again finds the chained
    // delivery sent and queues nothing.
    let jobs = emu.receive_within(&render_q, Duration::from_secs(2)).await;
    let response = render.handle(sqs_event(&jobs, arn)).await;
    assert!(response.batch_item_failures.is_empty());
    emu.settle(&render_q, &jobs, &response).await;
    assert_eq!(
        emu.depth(&dispatch_q).await,
        0,
        "no dispatch job for a sent delivery"
    );
    assert_eq!(fake.calls_to("/trigger-event"), 2, "nothing is sent twice");

    // What DynamoDB holds.
    let event = ctx.ports.store.get("evt-aws-0001").await.unwrap().unwrap();
    assert_eq!(event.status.as_str(), "COMPLETED");
    let deliveries = ctx.ports.store.for_event("evt-aws-0001").await.unwrap();
    let summary: Vec<(&str, DeliveryStatus, u32, u32)> = deliveries
        .iter()
        .map(|d| (d.rule.as_str(), d.status, d.attempts, d.chain_depth))
        .collect();
    assert_eq!(
        summary,
        [
            ("welcome", DeliveryStatus::Sent, 2, 0),
            ("welcome-followup", DeliveryStatus::Sent, 1, 1)
        ]
    );
    assert!(deliveries.iter().all(|d| d.sent_at.is_some()));
    assert_eq!(
        emu.items().await.len(),
        3,
        "one event record and two deliveries"
    );
    assert_eq!(emu.depth(&render_q).await + emu.depth(&dispatch_q).await, 0);
}
