//! Each handler fed the fixtures in `events/aws/`, against the emulator.
#![cfg(feature = "emulator-tests")]

mod support;

use aws_lambda_events::event::sqs::SqsEvent;
use axum::body::Body;
use relay_lambda::dispatch::DispatchHandler;
use relay_lambda::render::RenderHandler;
use relay_lambda::scheduler::{RunReport, SchedulerHandler};
use relay_lambda::{inbound, Context};
use relay_shared::adapters::reqwest::ReqwestTransport;
use relay_shared::ports::clock::{ManualClock, SystemClock};
use relay_shared::ports::{ContactStore, DeliveryStore, EventStore};
use relay_shared::rules::config::Config;
use serde_json::Value;
use std::sync::Arc;
use support::{fixture, secret_json, Emulator};
use tower::ServiceExt;

const RULES: &str = include_str!("fixture-rules.yaml");

fn config() -> Config {
    Config::parse(RULES, "test rules").expect("valid test rules")
}

async fn call(app: &axum::Router, fixture_name: &str) -> (u16, Value) {
    let request =
        lambda_http::request::from_str(&fixture(fixture_name)).expect("an API Gateway request");
    let (parts, body) = request.into_parts();
    let request = axum::http::Request::from_parts(parts, Body::from(body.to_vec()));
    let response = app.clone().oneshot(request).await.expect("an answer");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn context(emu: &Emulator) -> Context {
    emu.context(config(), Arc::new(SystemClock))
}

#[tokio::test]
async fn inbound_accepts_an_api_gateway_request_once() {
    let emu = Emulator::start(&secret_json(None)).await;
    let ctx = context(&emu).await;
    let app = inbound::router(&ctx);

    let (status, body) = call(&app, "apigw-post-event.json").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["results"][0]["status"], "accepted");
    let (status, body) = call(&app, "apigw-post-event.json").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["results"][0]["status"], "duplicate");

    let record = ctx
        .ports
        .store
        .get("evt-aws-0001")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(record.status.as_str(), "COMPLETED");
    let jobs = emu.receive_all(&emu.settings.render_queue_url).await;
    assert_eq!(jobs.len(), 1, "one render job, not two");
    let job: Value = serde_json::from_str(jobs[0].body().unwrap()).unwrap();
    assert_eq!(job["event"]["id"], "evt-aws-0001");

    let (status, body) = call(&app, "apigw-get-event.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "contact.created");
}

#[tokio::test]
async fn inbound_takes_smartemailing_webhooks_with_basic_auth() {
    let emu = Emulator::start(&secret_json(None)).await;
    let app = inbound::router(&context(&emu).await);
    let (status, body) = call(&app, "apigw-smartemailing-webhook.json").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        emu.receive_all(&emu.settings.render_queue_url).await.len(),
        1
    );
}

#[tokio::test]
async fn inbound_refuses_a_key_the_secret_does_not_hold() {
    let emu = Emulator::start(r#"{"api_keys": ["another-key"]}"#).await;
    let app = inbound::router(&context(&emu).await);
    let (status, body) = call(&app, "apigw-post-event.json").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(emu.depth(&emu.settings.render_queue_url).await, 0);
}

#[tokio::test]
async fn render_stores_deliveries_and_dead_letters_what_can_never_render() {
    let emu = Emulator::start(&secret_json(None)).await;
    let ctx = context(&emu).await;
    let handler = RenderHandler::new(&ctx);
    let event: SqsEvent = serde_json::from_str(&fixture("sqs-render-batch.json")).unwrap();
    let response = handler.handle(event).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "nothing is worth redelivering: {:?}",
        response.batch_item_failures
    );

    let deliveries = ctx.ports.store.for_event("evt-aws-0001").await.unwrap();
    let statuses: Vec<(&str, &str)> = deliveries
        .iter()
        .map(|d| (d.rule.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(statuses, [("broken", "dead"), ("welcome", "pending")]);
    assert_eq!(
        emu.receive_all(&emu.settings.dispatch_queue_url)
            .await
            .len(),
        1
    );

    let dlq = emu.settings.render_dlq_url.clone().unwrap();
    let mut letters: Vec<Value> = emu
        .receive_all(&dlq)
        .await
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    letters.sort_by_key(|l| l.get("body").is_some());
    assert_eq!(letters.len(), 2, "{letters:?}");
    // The template error: the job itself, with the rule and the reason.
    assert_eq!(letters[0]["event"]["id"], "evt-aws-0001");
    let reason = letters[0]["dead_letter_reason"].as_str().unwrap();
    assert!(reason.contains("rule `broken`"), "{reason}");
    // The unreadable job: kept as it came.
    assert_eq!(letters[1]["body"], "{not a render job");
}

#[tokio::test]
async fn render_reports_a_failed_store_as_a_batch_item_failure() {
    let mut emu = Emulator::start(&secret_json(None)).await;
    emu.settings.table = "relay-no-such-table".into();
    let handler = RenderHandler::new(&context(&emu).await);
    let event: SqsEvent = serde_json::from_str(&fixture("sqs-render-batch.json")).unwrap();
    let response = handler.handle(event).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    // Only the readable job is worth another try; the poison one went to the dead letters.
    assert_eq!(failed, ["0b7a5f2c-1111-4e2b-9c1d-000000000000"]);
}

#[tokio::test]
async fn dispatch_drops_a_job_for_an_unknown_delivery() {
    let emu = Emulator::start(&secret_json(None)).await;
    let ctx = context(&emu).await;
    let handler = DispatchHandler::new(&ctx, Arc::new(ReqwestTransport::new().unwrap()), Some(7));
    let event: SqsEvent = serde_json::from_str(&fixture("sqs-dispatch-batch.json")).unwrap();
    let response = handler.handle(event).await;
    assert!(response.batch_item_failures.is_empty());
}

#[tokio::test]
async fn dispatch_keeps_the_whole_batch_when_the_store_is_down() {
    let mut emu = Emulator::start(&secret_json(None)).await;
    emu.settings.table = "relay-no-such-table".into();
    let ctx = context(&emu).await;
    let handler = DispatchHandler::new(&ctx, Arc::new(ReqwestTransport::new().unwrap()), Some(7));
    let event: SqsEvent = serde_json::from_str(&fixture("sqs-dispatch-batch.json")).unwrap();
    let response = handler.handle(event).await;
    assert_eq!(response.batch_item_failures.len(), 1);
}

#[tokio::test]
async fn the_daily_run_submits_todays_birthdays_once() {
    let emu = Emulator::start(&secret_json(None)).await;
    let clock = Arc::new(ManualClock::at_ms(1_795_651_200_000 + 8 * 3_600_000)); // 2026-11-26 08:00 UTC
    let ctx = emu.context(config(), clock);
    ctx.ports
        .store
        .remember_birthday(
            "jan@example.com",
            chrono::NaiveDate::from_ymd_opt(1990, 11, 26).unwrap(),
        )
        .await
        .unwrap();
    ctx.ports
        .store
        .remember_birthday(
            "eva@example.com",
            chrono::NaiveDate::from_ymd_opt(1990, 11, 27).unwrap(),
        )
        .await
        .unwrap();
    let handler = SchedulerHandler::new(&ctx);
    let run: Value = serde_json::from_str(&fixture("eventbridge-scheduled-event.json")).unwrap();
    let RunReport::Birthdays(r) = handler.handle(run.clone()).await.unwrap();
    assert_eq!((r.found, r.accepted, r.duplicates), (1, 1, 0));
    // EventBridge Scheduler retries a run; the second finds it done.
    let RunReport::Birthdays(r) = handler.handle(run).await.unwrap();
    assert_eq!((r.accepted, r.duplicates), (0, 1));
    let jobs = emu.receive_all(&emu.settings.render_queue_url).await;
    assert_eq!(jobs.len(), 1);
    let job: Value = serde_json::from_str(jobs[0].body().unwrap()).unwrap();
    assert_eq!(job["event"]["type"], "contact.birthday");
}
