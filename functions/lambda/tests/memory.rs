//! Each handler fed the fixtures in `events/aws/` and called directly, on the memory adapters:
//! no AWS, no emulator. (The same handlers on the emulator: `handlers.rs`, `pipeline.rs`.)

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use relay_lambda::dispatch::DispatchHandler;
use relay_lambda::render::RenderHandler;
use relay_lambda::scheduler::{RunReport, SchedulerHandler};
use relay_lambda::{inbound, Context, Memory};
use relay_shared::adapters::memory::Part;
use relay_shared::domain::delivery::{
    Attempt, AttemptClass, DeliveryId, DeliveryRecord, DeliveryStatus, Prepared,
};
use relay_shared::domain::event::EventId;
use relay_shared::domain::secret::{SeCredentials, Secret, SecretBundle};
use relay_shared::domain::smartemailing::Endpoint;
use relay_shared::ports::clock::ManualClock;
use relay_shared::ports::queue::{Message, QueueName};
use relay_shared::ports::{
    ContactStore, DeliveryStore, EventStore, HttpRequest, HttpResponse, Queue, Transport,
    TransportError,
};
use relay_shared::rules::config::Config;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

const RULES: &str = include_str!("fixture-rules.yaml");

/// The fixtures' time: 2026-11-26 10:00:01 UTC, a second after their events occurred.
const FIXTURE_MS: i64 = 1_795_687_201_000;

/// The id of the render fixture's readable job, and of its unreadable one.
const READABLE: &str = "0b7a5f2c-1111-4e2b-9c1d-000000000000";
const UNREADABLE: &str = "0b7a5f2c-1111-4e2b-9c1d-000000000001";

fn fixture(name: &str) -> String {
    let path = format!("{}/../../events/aws/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sqs_fixture(name: &str) -> SqsEvent {
    serde_json::from_str(&fixture(name)).expect("an SQS event")
}

/// The inbound key of the fixtures; SmartEmailing's credentials only when given.
fn secrets(smartemailing: bool) -> SecretBundle {
    SecretBundle {
        smartemailing: smartemailing.then(|| SeCredentials {
            username: "relay@example.com".into(),
            api_key: Secret::new("se-key"),
        }),
        api_keys: vec![Secret::new("fixture-api-key")],
        admin_keys: vec![Secret::new("fixture-admin-key")],
        webhook_tokens: Vec::new(),
        named: Default::default(),
    }
}

fn context(secrets: SecretBundle) -> Context<Memory> {
    let config = Config::parse(RULES, "test rules").expect("valid test rules");
    Context::in_memory(config, secrets, Arc::new(ManualClock::at_ms(FIXTURE_MS)))
}

/// Calls the inbound router with an API Gateway fixture: the status and the JSON answer.
async fn call(ctx: &Context<Memory>, fixture_name: &str) -> (u16, Value) {
    let request = lambda_http::request::from_str(&fixture(fixture_name)).expect("a request");
    let request = request.map(|b| axum::body::Body::from(b.to_vec()));
    answer(inbound::router(ctx), request).await
}

/// A router's answer to a request: its status and JSON body.
async fn answer(
    router: axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (u16, Value) {
    let response = router.oneshot(request).await.expect("an answer");
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await;
    let json = serde_json::from_slice(&body.expect("a body")).unwrap_or(Value::Null);
    (status, json)
}

/// What Lambda's SQS event source does: takes a queue's visible messages as one event.
async fn take(ctx: &Context<Memory>, queue: QueueName) -> (SqsEvent, Vec<Message>) {
    let messages = ctx
        .ports
        .queue
        .receive(queue, 10, Duration::from_secs(30))
        .await
        .expect("a batch");
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let count = m.receive_count.to_string();
            json!({"messageId": m.handle, "receiptHandle": m.handle, "body": m.body,
                   "attributes": {"ApproximateReceiveCount": count}})
        })
        .collect();
    let event = serde_json::from_value(json!({ "Records": records })).expect("an SQS event");
    (event, messages)
}

/// What the event source does after the handler: deletes the messages not reported failed.
async fn settle(ctx: &Context<Memory>, queue: QueueName, batch: &[Message], r: &SqsBatchResponse) {
    let done: Vec<String> = batch
        .iter()
        .filter(|m| !failed(r).contains(&m.handle.as_str()))
        .map(|m| m.handle.clone())
        .collect();
    ctx.ports.queue.ack(queue, &done).await.expect("acked");
}

fn failed(response: &SqsBatchResponse) -> Vec<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

/// The render fixture with a third job: another readable event.
fn render_batch_of_three() -> SqsEvent {
    let mut batch: Value = serde_json::from_str(&fixture("sqs-render-batch.json")).unwrap();
    let records = batch["Records"].as_array_mut().unwrap();
    let mut third = records[0].clone();
    let body = third["body"]
        .as_str()
        .unwrap()
        .replace("evt-aws-0001", "evt-aws-0002");
    third["body"] = Value::String(body);
    third["messageId"] = json!("0b7a5f2c-1111-4e2b-9c1d-000000000002");
    records.push(third);
    serde_json::from_value(batch).unwrap()
}

/// A SmartEmailing that answers every call with `status`, and counts the calls.
struct Answering {
    status: u16,
    calls: Mutex<usize>,
}

#[async_trait]
impl Transport for Answering {
    async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, TransportError> {
        *self.calls.lock().unwrap() += 1;
        let body = json!({"status": "error", "message": "refused by the test"});
        Ok(HttpResponse {
            status: self.status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            cut: None,
        })
    }
}

#[tokio::test]
async fn inbound_accepts_an_api_gateway_request_once() {
    let ctx = context(secrets(false));
    let (status, body) = call(&ctx, "apigw-post-event.json").await;
    assert_eq!(
        (status, &body["results"][0]["status"]),
        (202, &json!("accepted"))
    );
    let (status, body) = call(&ctx, "apigw-post-event.json").await;
    assert_eq!(
        (status, &body["results"][0]["status"]),
        (202, &json!("duplicate"))
    );

    let record = ctx.ports.store.get("evt-aws-0001").await.unwrap();
    assert_eq!(record.expect("stored").status.as_str(), "COMPLETED");
    assert_eq!(
        ctx.ports.store.queue_depth(QueueName::Render),
        1,
        "one job, not two"
    );
    let (status, body) = call(&ctx, "apigw-get-event.json").await;
    assert_eq!((status, &body["type"]), (200, &json!("contact.created")));
}

#[tokio::test]
async fn an_accepted_event_is_kept_for_the_configs_events_window() {
    let rules = format!("retention:\n  events: 2d\n{RULES}");
    let config = Config::parse(&rules, "test rules").expect("valid test rules");
    let clock = Arc::new(ManualClock::at_ms(FIXTURE_MS));
    let ctx = Context::in_memory(config, secrets(false), clock);
    let (status, _) = call(&ctx, "apigw-post-event.json").await;
    assert_eq!(status, 202);
    let record = ctx.ports.store.get("evt-aws-0001").await.unwrap();
    assert_eq!(
        record.expect("stored").expires_at,
        FIXTURE_MS / 1000 + 2 * 24 * 3600,
        "the idempotency record's TTL is `retention.events` from now"
    );
}

/// Calls the inbound router with a GET and a key, as API Gateway passes it on.
async fn get_with(ctx: &Context<Memory>, path: &str, key: &str) -> (u16, Value) {
    get_from(inbound::router(ctx), path, key).await
}

/// `GET path` with `key` from `router` (one router kept across calls holds its state).
async fn get_from(router: axum::Router, path: &str, key: &str) -> (u16, Value) {
    let request = axum::http::Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(axum::body::Body::empty())
        .expect("a request");
    answer(router, request).await
}

#[tokio::test]
async fn inbound_serves_the_management_api_to_admin_keys_only() {
    let ctx = context(secrets(false));
    let (status, body) = get_with(&ctx, "/v1/rules", "fixture-admin-key").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["rules"].as_array().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let (status, body) = get_with(&ctx, "/v1/deliveries/dlv_none", "fixture-admin-key").await;
    assert_eq!(status, 404, "{body}");
    for path in [
        "/v1/rules",
        "/v1/status",
        "/v1/deliveries",
        "/v1/deliveries/dlv_none",
    ] {
        let (status, body) = get_with(&ctx, path, "fixture-api-key").await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
}

/// A delivery of `rule` to SmartEmailing whose one attempt at `at_ms` was `class`.
fn attempted(id: &str, class: AttemptClass, at_ms: i64) -> DeliveryRecord {
    let failed = class != AttemptClass::Success;
    DeliveryRecord {
        id: DeliveryId::from_stored(id),
        event_id: EventId::from_stored("evt-status"),
        rule: "welcome".into(),
        action: "trigger_event".into(),
        action_index: 0,
        status: if failed {
            DeliveryStatus::Dead
        } else {
            DeliveryStatus::Sent
        },
        attempts: 1,
        last_error: failed.then(|| "the target answered 422".into()),
        last_response: None,
        sent_at: None,
        next_attempt_at: None,
        request: Some(Prepared::SmartEmailing {
            endpoint: Endpoint::TriggerEvent,
            group: Value::Null,
            item: json!({"emailaddress": "jan@example.com", "name": "welcome"}),
        }),
        created_at: at_ms,
        chain_depth: 0,
        email: Some("jan@example.com".into()),
        event_type: Some("contact.created".into()),
        attempt_log: vec![Attempt {
            at_ms,
            duration_ms: 40,
            status_code: Some(if failed { 422 } else { 200 }),
            response: None,
            class,
            reason: failed.then(|| "the target answered 422".into()),
        }],
    }
}

#[tokio::test]
async fn on_aws_the_status_shows_each_target_from_the_attempts_in_the_table() {
    let ctx = context(secrets(false));
    let (ok_at, bad_at) = (FIXTURE_MS - 120_000, FIXTURE_MS - 30_000);
    let records = [
        attempted("dlv_sent", AttemptClass::Success, ok_at),
        attempted("dlv_dead", AttemptClass::Permanent, bad_at),
    ];
    ctx.ports.store.insert_new(&records).await.unwrap();
    let (status, body) = get_with(&ctx, "/v1/status", "fixture-admin-key").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["platform"], "aws");
    let targets = body["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 1, "{body}");
    let t = &targets[0];
    assert_eq!(t["target"], "smartemailing");
    assert_eq!(t["circuit"], Value::Null, "the circuit is per container");
    assert_eq!(t["last_success_at"], "2026-11-26T09:58:01.000Z");
    assert_eq!(t["last_error"]["at"], "2026-11-26T09:59:31.000Z");
    assert_eq!(t["last_error"]["message"], "the target answered 422");
    assert_eq!(
        t["calls_last_minute"], 1,
        "only the failed call is that recent"
    );
}

#[tokio::test]
async fn inbound_takes_smartemailing_webhooks_and_refuses_unknown_keys() {
    let ctx = context(secrets(false));
    let (status, body) = call(&ctx, "apigw-smartemailing-webhook.json").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(ctx.ports.store.queue_depth(QueueName::Render), 1);

    let other = SecretBundle {
        api_keys: vec![Secret::new("another-key")],
        ..SecretBundle::default()
    };
    let ctx = context(other);
    let (status, body) = call(&ctx, "apigw-post-event.json").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(ctx.ports.store.queue_depth(QueueName::Render), 0);
}

#[tokio::test]
async fn render_stores_deliveries_and_dead_letters_what_can_never_render() {
    let ctx = context(secrets(false));
    let response = RenderHandler::new(&ctx)
        .handle(sqs_fixture("sqs-render-batch.json"))
        .await;
    assert!(failed(&response).is_empty(), "{:?}", failed(&response));

    let deliveries = ctx.ports.store.for_event("evt-aws-0001").await.unwrap();
    let statuses: Vec<(&str, &str)> = deliveries
        .iter()
        .map(|d| (d.rule.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(statuses, [("broken", "dead"), ("welcome", "pending")]);
    assert_eq!(ctx.ports.store.queue_depth(QueueName::Dispatch), 1);

    let letters = ctx.ports.store.dead_letters(QueueName::Render);
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters[0].reason.contains("rule `broken`"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[1].body, "{not a render job", "kept as it came");
}

#[tokio::test]
async fn render_hands_the_whole_batch_to_one_pass() {
    let ctx = context(secrets(false));
    let response = RenderHandler::new(&ctx)
        .handle(render_batch_of_three())
        .await;
    assert!(failed(&response).is_empty(), "{:?}", failed(&response));

    let writes = ctx.ports.store.writes();
    let inserts = writes.iter().filter(|w| **w == "insert_new").count();
    assert_eq!(
        inserts, 1,
        "one write for the deliveries of all jobs: {writes:?}"
    );
    for event in ["evt-aws-0001", "evt-aws-0002"] {
        let stored = ctx.ports.store.for_event(event).await.unwrap();
        assert_eq!(stored.len(), 2, "{event}: {stored:?}");
    }
    let letters = ctx.ports.store.dead_letters(QueueName::Render);
    let unreadable: Vec<_> = letters
        .iter()
        .filter(|l| l.reason.contains("unreadable"))
        .collect();
    assert_eq!(unreadable.len(), 1, "{letters:?}");
    assert_eq!(writes.iter().filter(|w| **w == "dead_letter").count(), 1);
}

#[tokio::test]
async fn render_reports_a_failed_store_as_a_batch_item_failure() {
    let ctx = context(secrets(false));
    ctx.ports.store.set_down(Part::Store, true);
    let response = RenderHandler::new(&ctx)
        .handle(sqs_fixture("sqs-render-batch.json"))
        .await;
    // Only the readable job is worth another try; the poison one went to the dead letters.
    assert_eq!(failed(&response), [READABLE]);
    let letters = ctx.ports.store.dead_letters(QueueName::Render);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body, "{not a render job");
}

#[tokio::test]
async fn render_keeps_a_job_its_dead_letter_queue_refused() {
    let ctx = context(secrets(false));
    ctx.ports.store.set_down(Part::DeadLetters, true);
    let response = RenderHandler::new(&ctx)
        .handle(sqs_fixture("sqs-render-batch.json"))
        .await;
    // Both jobs have something to dead-letter (the broken rule, the unreadable job).
    assert_eq!(failed(&response), [READABLE, UNREADABLE]);
    let stored = ctx.ports.store.for_event("evt-aws-0001").await.unwrap();
    assert_eq!(stored.len(), 2, "what did render is stored all the same");
}

#[tokio::test]
async fn dispatch_drops_a_job_for_an_unknown_delivery() {
    let ctx = context(secrets(false));
    let transport = Arc::new(Answering {
        status: 200,
        calls: Mutex::new(0),
    });
    let handler = DispatchHandler::new(&ctx, transport.clone(), Some(7));
    let response = handler.handle(sqs_fixture("sqs-dispatch-batch.json")).await;
    assert!(failed(&response).is_empty());
    assert_eq!(*transport.calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn dispatch_keeps_the_whole_batch_when_the_store_is_down() {
    let ctx = context(secrets(false));
    ctx.ports.store.set_down(Part::Store, true);
    let transport = Arc::new(Answering {
        status: 200,
        calls: Mutex::new(0),
    });
    let handler = DispatchHandler::new(&ctx, transport, Some(7));
    let response = handler.handle(sqs_fixture("sqs-dispatch-batch.json")).await;
    assert_eq!(failed(&response), [READABLE]);
}

#[tokio::test]
async fn an_event_goes_from_the_api_to_a_dry_run_through_the_three_handlers() {
    let ctx = context(secrets(false));
    let (status, _) = call(&ctx, "apigw-post-event.json").await;
    assert_eq!(status, 202);

    let (event, batch) = take(&ctx, QueueName::Render).await;
    let response = RenderHandler::new(&ctx).handle(event).await;
    settle(&ctx, QueueName::Render, &batch, &response).await;
    assert_eq!(ctx.ports.store.queue_depth(QueueName::Render), 0);

    let transport = Arc::new(Answering {
        status: 200,
        calls: Mutex::new(0),
    });
    let dispatch = DispatchHandler::new(&ctx, transport.clone(), Some(7));
    let (event, batch) = take(&ctx, QueueName::Dispatch).await;
    assert_eq!(batch.len(), 1);
    let response = dispatch.handle(event).await;
    assert!(failed(&response).is_empty());
    settle(&ctx, QueueName::Dispatch, &batch, &response).await;

    let deliveries = ctx.ports.store.for_event("evt-aws-0001").await.unwrap();
    let welcome: Vec<&str> = deliveries
        .iter()
        .filter(|d| d.rule == "welcome")
        .map(|d| d.status.as_str())
        .collect();
    assert_eq!(welcome, ["dry_run"], "no credentials: nothing is sent");
    assert_eq!(*transport.calls.lock().unwrap(), 0);
    assert_eq!(ctx.ports.store.queue_depth(QueueName::Dispatch), 0);
}

#[tokio::test]
async fn dispatch_dead_letters_a_delivery_its_target_refuses() {
    let ctx = context(secrets(true));
    RenderHandler::new(&ctx)
        .handle(sqs_fixture("sqs-render-batch.json"))
        .await;
    let transport = Arc::new(Answering {
        status: 422,
        calls: Mutex::new(0),
    });
    let dispatch = DispatchHandler::new(&ctx, transport.clone(), Some(7));
    let (event, _) = take(&ctx, QueueName::Dispatch).await;
    let response = dispatch.handle(event).await;
    assert!(
        failed(&response).is_empty(),
        "a dead delivery is not retried"
    );

    assert_eq!(*transport.calls.lock().unwrap(), 1);
    let letters = ctx.ports.store.dead_letters(QueueName::Dispatch);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter: Value = serde_json::from_str(&letters[0].body).unwrap();
    assert_eq!(
        (&letter["rule"], &letter["event_id"]),
        (&json!("welcome"), &json!("evt-aws-0001"))
    );
}

#[tokio::test]
async fn the_daily_run_submits_todays_birthdays_once() {
    let ctx = context(secrets(false));
    let day = |d| chrono::NaiveDate::from_ymd_opt(1990, 11, d).unwrap();
    ctx.ports
        .store
        .remember_birthday("jan@example.com", day(26))
        .await
        .unwrap();
    ctx.ports
        .store
        .remember_birthday("eva@example.com", day(27))
        .await
        .unwrap();
    let handler = SchedulerHandler::new(&ctx);

    let run: Value = serde_json::from_str(&fixture("scheduler-birthdays.json")).unwrap();
    let RunReport::Birthdays(r) = handler.handle(run).await.unwrap();
    assert_eq!((r.found, r.accepted, r.duplicates), (1, 1, 0));
    // EventBridge retries a run, or the classic rule fires too: the second finds it done.
    let classic: Value =
        serde_json::from_str(&fixture("eventbridge-scheduled-event.json")).unwrap();
    let RunReport::Birthdays(r) = handler.handle(classic).await.unwrap();
    assert_eq!((r.accepted, r.duplicates), (0, 1));

    let (_, jobs) = take(&ctx, QueueName::Render).await;
    assert_eq!(jobs.len(), 1);
    let job: Value = serde_json::from_str(&jobs[0].body).unwrap();
    assert_eq!(job["event"]["type"], "contact.birthday");
    assert!(
        handler.handle(json!({"job": "due-timers"})).await.is_err(),
        "no minute run"
    );
}

#[tokio::test]
async fn on_aws_a_container_reuses_its_status_answer_for_30_seconds() {
    let config = Config::parse(RULES, "test rules").expect("valid test rules");
    let clock = Arc::new(ManualClock::at_ms(FIXTURE_MS));
    let ctx = Context::in_memory(config, secrets(false), clock.clone());
    let router = inbound::router(&ctx);
    let sent_last_hour = |router: axum::Router| async move {
        let (status, v) = get_from(router, "/v1/status", "fixture-admin-key").await;
        assert_eq!(status, 200, "{v}");
        (
            v["deliveries"]["last_hour"]["sent"].clone(),
            v["as_of"].clone(),
        )
    };
    let first = attempted("dlv_one", AttemptClass::Success, FIXTURE_MS - 60_000);
    ctx.ports.store.insert_new(&[first]).await.unwrap();
    let (sent, as_of) = sent_last_hour(router.clone()).await;
    assert_eq!(
        (sent, as_of.clone()),
        (json!(1), json!("2026-11-26T10:00:01.000Z"))
    );

    let second = attempted("dlv_two", AttemptClass::Success, FIXTURE_MS - 30_000);
    ctx.ports.store.insert_new(&[second]).await.unwrap();
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        sent_last_hour(router.clone()).await,
        (json!(1), as_of),
        "within 30 s the same answer, as of when it was made"
    );
    clock.advance(Duration::from_secs(1));
    let (sent, _) = sent_last_hour(router).await;
    assert_eq!(sent, json!(2), "then counted afresh");
}
