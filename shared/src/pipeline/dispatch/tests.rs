//! A dispatch pass on SQLite with a scripted transport: what each phase does with a batch.

use super::*;
use crate::adapters::env_credentials::StaticCredentials;
use crate::adapters::sqlite::SqliteStore;
use crate::domain::delivery::fixtures::pending;
use crate::domain::delivery::{AttemptClass, DeliveryStatus, Prepared};
use crate::domain::secret::{SeCredentials, Secret, SecretBundle};
use crate::domain::smartemailing::Endpoint;
use crate::ports::clock::ManualClock;
use crate::ports::queue::DispatchJob;
use crate::ports::{HttpRequest, HttpResponse, TransportError};
use async_trait::async_trait;
use serde_json::json;
use std::collections::VecDeque;

const NOW_MS: i64 = 1_795_000_000_000;

/// Answers calls from a script (201 once it runs out) and counts them; each call takes
/// `took` on the clock, when set.
#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<u16>>,
    calls: Mutex<Vec<HttpRequest>>,
    took: Mutex<Option<(Arc<ManualClock>, Duration)>>,
}

#[async_trait]
impl Transport for Script {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let status = self.answers.lock().unwrap().pop_front().unwrap_or(201);
        self.calls.lock().unwrap().push(request);
        if let Some((clock, took)) = &*self.took.lock().unwrap() {
            clock.advance(*took);
        }
        let body = if status < 300 {
            r#"{"status":"created","meta":[]}"#
        } else {
            r#"{"status":"error","message":"no"}"#
        };
        Ok(HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
            cut: None,
        })
    }
}

/// Credentials that cannot be read.
struct Broken;

#[async_trait]
impl Credentials for Broken {
    async fn smartemailing(&self) -> Result<Option<SeCredentials>, SecretError> {
        Err(SecretError("the vault is down".into()))
    }
    async fn api_keys(&self) -> Result<Vec<Secret>, SecretError> {
        Ok(Vec::new())
    }
    async fn webhook_tokens(&self) -> Result<Vec<Secret>, SecretError> {
        Ok(Vec::new())
    }
    async fn secret(&self, _name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(None)
    }
    async fn refresh(&self) {}
}

struct Bench {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    script: Arc<Script>,
    clock: Arc<ManualClock>,
    ctx: DispatchContext,
}

fn bench(answers: &[u16], smartemailing: bool) -> Bench {
    bench_with(10, "[]", answers, smartemailing)
}

fn bench_opening_after(open_after: u32, answers: &[u16], smartemailing: bool) -> Bench {
    bench_with(open_after, "[]", answers, smartemailing)
}

fn bench_with(open_after: u32, rules: &str, answers: &[u16], smartemailing: bool) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at_ms(NOW_MS));
    let store = Arc::new(SqliteStore::open(dir.path(), clock.clone()).unwrap());
    let script = Arc::new(Script::default());
    script.answers.lock().unwrap().extend(answers);
    let bundle = SecretBundle {
        smartemailing: smartemailing.then(|| SeCredentials {
            username: "u".into(),
            api_key: Secret::new("k"),
        }),
        ..SecretBundle::default()
    };
    let yaml = format!(
        "smartemailing:\n  base_url: http://se.test\ndelivery:\n  retry_schedule: [10s, 60s]\n  breaker: {{open_after: {open_after}, probe_after: 30s}}\nrules: {rules}\n"
    );
    let ctx = DispatchContext {
        config: Arc::new(Config::parse(&yaml, "test").unwrap()),
        events: store.clone(),
        deliveries: store.clone(),
        queue: store.clone(),
        credentials: Arc::new(StaticCredentials::new(bundle)),
        transport: script.clone(),
        clock: clock.clone(),
        leases: None,
    };
    Bench {
        _dir: dir,
        store,
        script,
        clock,
        ctx,
    }
}

fn delivery(n: usize, status: DeliveryStatus, due: Option<i64>) -> DeliveryRecord {
    let mut r = pending(&format!("evt-{n}"));
    r.status = status;
    r.attempts = u32::from(status == DeliveryStatus::Retrying);
    r.next_attempt_at = due;
    r.request = Some(Prepared::SmartEmailing {
        endpoint: Endpoint::TriggerEvent,
        group: json!({}),
        item: json!({"emailaddress": format!("c{n}@example.com"), "name": "welcome"}),
    });
    r.created_at = NOW_MS;
    r
}

impl Bench {
    /// Stores the deliveries, queues one message for each and receives them.
    async fn batch(&self, records: &[DeliveryRecord]) -> Vec<Message> {
        self.store.insert_new(records).await.unwrap();
        let bodies = records
            .iter()
            .map(|r| {
                serde_json::to_string(&DispatchJob {
                    delivery: r.id.clone(),
                })
                .unwrap()
            })
            .collect();
        self.store
            .send(QueueName::Dispatch, bodies, Duration::ZERO)
            .await
            .unwrap();
        self.store
            .receive(QueueName::Dispatch, 100, Duration::from_secs(60))
            .await
            .unwrap()
    }

    /// One pass of `d` over a batch of these deliveries.
    async fn pass(&self, d: &Dispatcher, records: &[DeliveryRecord]) -> DispatchReport {
        d.handle(self.batch(records).await).await.unwrap()
    }

    /// The dispatch messages visible now.
    async fn visible(&self) -> Vec<Message> {
        self.store
            .receive(QueueName::Dispatch, 100, Duration::from_secs(60))
            .await
            .unwrap()
    }

    async fn status(&self, record: &DeliveryRecord) -> DeliveryRecord {
        let mut got = self
            .store
            .get_many(std::slice::from_ref(&record.id))
            .await
            .unwrap();
        got.pop().unwrap()
    }

    /// The dispatch messages visible now.
    async fn due(&self) -> Vec<Message> {
        self.store
            .receive(QueueName::Dispatch, 10, Duration::from_secs(60))
            .await
            .unwrap()
    }

    fn calls(&self) -> usize {
        self.script.calls.lock().unwrap().len()
    }
}

#[tokio::test]
async fn deliveries_of_one_endpoint_share_one_call_and_a_repeat_is_not_sent_again() {
    let b = bench(&[], true);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let (one, two) = (
        delivery(1, DeliveryStatus::Pending, None),
        delivery(2, DeliveryStatus::Pending, None),
    );
    let report = b.pass(&d, &[one.clone(), two]).await;
    assert_eq!((report.sent, report.calls), (2, 1));
    assert_eq!(b.status(&one).await.status, DeliveryStatus::Sent);
    // The same delivery again: dropped as a duplicate, never a second call.
    let again = serde_json::to_string(&DispatchJob {
        delivery: one.id.clone(),
    })
    .unwrap();
    b.store
        .send(QueueName::Dispatch, vec![again], Duration::ZERO)
        .await
        .unwrap();
    let msgs = b.due().await;
    let report = d.handle(msgs).await.unwrap();
    assert_eq!((report.duplicates, report.calls), (1, 0));
    assert_eq!(b.calls(), 1);
}

#[tokio::test]
async fn a_failed_call_schedules_a_retry_and_keeps_the_message() {
    let b = bench(&[503], true);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let one = delivery(1, DeliveryStatus::Pending, None);
    let msgs = b.batch(std::slice::from_ref(&one)).await;
    let handle = msgs[0].handle.clone();
    let report = d.handle(msgs).await.unwrap();
    assert_eq!(report.retrying, 1);
    assert_eq!(report.retried_handles, vec![handle]);
    let stored = b.status(&one).await;
    assert_eq!(stored.status, DeliveryStatus::Retrying);
    assert_eq!(stored.attempts, 1);
    let due = stored.next_attempt_at.unwrap() - NOW_MS;
    assert!((8_000..=12_000).contains(&due), "10 s ±20 %, got {due} ms");
}

#[tokio::test]
async fn a_bulk_call_refused_for_one_bad_item_is_split_and_the_good_half_sent() {
    let b = bench(&[422, 201, 422], true);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let (good, bad) = (
        delivery(1, DeliveryStatus::Pending, None),
        delivery(2, DeliveryStatus::Pending, None),
    );
    let report = b.pass(&d, &[good.clone(), bad.clone()]).await;
    assert_eq!((report.sent, report.dead, report.calls), (1, 1, 3));
    assert_eq!(report.dead_ids, vec![bad.id.clone()]);
    assert_eq!(b.status(&good).await.status, DeliveryStatus::Sent);
    assert_eq!(b.status(&bad).await.status, DeliveryStatus::Dead);
}

#[tokio::test]
async fn an_early_retry_is_dropped_locally_and_held_where_the_queue_caps_delays() {
    let due = NOW_MS + 60_000;
    let b = bench(&[], true);
    let local = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let early = delivery(1, DeliveryStatus::Retrying, Some(due));
    let report = b.pass(&local, std::slice::from_ref(&early)).await;
    assert_eq!((report.duplicates, report.waiting, report.calls), (1, 0, 0));

    let b = bench(&[], true);
    let lambda =
        Dispatcher::from_context(b.ctx.clone(), Some(1)).with_queue_delays(QueueDelays::Capped);
    let msgs = b.batch(std::slice::from_ref(&early)).await;
    let handle = msgs[0].handle.clone();
    let report = lambda.handle(msgs).await.unwrap();
    assert_eq!((report.duplicates, report.waiting, report.calls), (0, 1, 0));
    assert_eq!(report.retried_handles, vec![handle]);
    assert_eq!(b.status(&early).await.status, DeliveryStatus::Retrying);
}

#[tokio::test]
async fn without_smartemailing_credentials_the_batch_is_recorded_as_dry_run() {
    let b = bench(&[], false);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let one = delivery(1, DeliveryStatus::Pending, None);
    let report = b.pass(&d, std::slice::from_ref(&one)).await;
    assert_eq!((report.dry_run, report.calls), (1, 0));
    let stored = b.status(&one).await;
    assert_eq!(
        (stored.status, stored.attempts),
        (DeliveryStatus::DryRun, 0)
    );
}

#[tokio::test]
async fn unreadable_credentials_fail_the_pass_as_a_secrets_error() {
    let mut b = bench(&[], true);
    b.ctx.credentials = Arc::new(Broken);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let msgs = b.batch(&[delivery(1, DeliveryStatus::Pending, None)]).await;
    match d.handle(msgs).await {
        Err(DispatchError::Secrets(e)) => assert!(e.to_string().contains("the vault is down")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_open_circuit_holds_the_rest_without_spending_attempts() {
    let b = bench_opening_after(1, &[503], true);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let first = delivery(1, DeliveryStatus::Pending, None);
    b.pass(&d, std::slice::from_ref(&first)).await;
    let second = delivery(2, DeliveryStatus::Pending, None);
    let report = b.pass(&d, std::slice::from_ref(&second)).await;
    assert_eq!((report.waiting, report.calls), (1, 0));
    let stored = b.status(&second).await;
    assert_eq!(
        (stored.status, stored.attempts),
        (DeliveryStatus::Pending, 0)
    );
    assert!(stored.next_attempt_at.unwrap() > NOW_MS);
}

#[tokio::test]
async fn a_bulk_call_records_one_timed_attempt_on_each_delivery_it_carried() {
    let b = bench(&[], true);
    *b.script.took.lock().unwrap() = Some((b.clock.clone(), Duration::from_millis(250)));
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let records: Vec<DeliveryRecord> = (0..50)
        .map(|n| delivery(n, DeliveryStatus::Pending, None))
        .collect();
    let report = b.pass(&d, &records).await;
    assert_eq!((report.sent, report.calls), (50, 1));
    for r in &records {
        let log = b.status(r).await.attempt_log;
        assert_eq!(log.len(), 1, "{}", r.id);
        let a = &log[0];
        assert_eq!((a.at_ms, a.duration_ms), (NOW_MS, 250));
        assert_eq!((a.status_code, a.class), (Some(201), AttemptClass::Success));
        assert!(a.response.as_deref().unwrap().starts_with("201 "), "{a:?}");
        assert_eq!(a.reason, None);
    }
}

/// A delivery's attempt log as (when, status code, class).
fn log_of(record: &DeliveryRecord) -> Vec<(i64, Option<u16>, AttemptClass)> {
    record
        .attempt_log
        .iter()
        .map(|a| (a.at_ms, a.status_code, a.class))
        .collect()
}

#[tokio::test]
async fn a_retry_and_the_success_after_it_are_both_in_the_log_oldest_first() {
    let b = bench(&[503], true);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let one = delivery(1, DeliveryStatus::Pending, None);
    b.pass(&d, std::slice::from_ref(&one)).await;
    b.clock.advance(Duration::from_secs(15));
    // The retry's message, requeued for 10 s ±20 %, is due again.
    let msgs = b.due().await;
    assert_eq!(msgs.len(), 1);
    d.handle(msgs).await.unwrap();
    let stored = b.status(&one).await;
    assert_eq!((stored.status, stored.attempts), (DeliveryStatus::Sent, 2));
    assert_eq!(
        log_of(&stored),
        vec![
            (NOW_MS, Some(503), AttemptClass::Retry),
            (NOW_MS + 15_000, Some(201), AttemptClass::Success)
        ]
    );
    let reason = stored.attempt_log[0].reason.as_deref().unwrap();
    assert!(reason.contains("503"), "{reason}");
}

#[tokio::test]
async fn a_split_call_logs_each_half_s_own_answer() {
    let b = bench(&[422, 201, 422], true);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let (good, bad) = (
        delivery(1, DeliveryStatus::Pending, None),
        delivery(2, DeliveryStatus::Pending, None),
    );
    b.pass(&d, &[good.clone(), bad.clone()]).await;
    let good = b.status(&good).await.attempt_log;
    let bad = b.status(&bad).await.attempt_log;
    assert_eq!(
        (good.len(), good[0].status_code, good[0].class),
        (1, Some(201), AttemptClass::Success)
    );
    assert_eq!(
        (bad.len(), bad[0].status_code, bad[0].class),
        (1, Some(422), AttemptClass::Permanent)
    );
}

#[tokio::test]
async fn a_failed_probe_is_logged_as_one_without_spending_an_attempt() {
    let b = bench_opening_after(1, &[503, 503], true);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let one = delivery(1, DeliveryStatus::Pending, None);
    b.pass(&d, std::slice::from_ref(&one)).await;
    // The circuit half-opens; the retry's message is due and is the probe.
    b.clock.advance(Duration::from_secs(31));
    let msgs = b.due().await;
    let report = d.handle(msgs).await.unwrap();
    assert_eq!((report.calls, report.waiting), (1, 1));
    let stored = b.status(&one).await;
    assert_eq!(stored.attempts, 1);
    assert_eq!(
        log_of(&stored),
        vec![
            (NOW_MS, Some(503), AttemptClass::Retry),
            (NOW_MS + 31_000, Some(503), AttemptClass::FailedProbe)
        ]
    );
}

#[tokio::test]
async fn a_delivery_without_a_request_logs_an_attempt_with_no_call() {
    let b = bench(&[], true);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let mut broken = delivery(1, DeliveryStatus::Pending, None);
    broken.request = None;
    b.pass(&d, std::slice::from_ref(&broken)).await;
    let log = b.status(&broken).await.attempt_log;
    assert_eq!(b.calls(), 0);
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].at_ms, log[0].status_code, log[0].class),
        (NOW_MS, None, AttemptClass::Permanent)
    );
}

#[tokio::test]
async fn a_delivery_held_again_by_a_circuit_still_open_is_not_rewritten_and_comes_back() {
    let b = bench_opening_after(1, &[503, 503], true);
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let first = delivery(1, DeliveryStatus::Pending, None);
    b.pass(&d, std::slice::from_ref(&first)).await;
    let second = delivery(2, DeliveryStatus::Pending, None);
    b.pass(&d, std::slice::from_ref(&second)).await;
    let held_until = b.status(&second).await.next_attempt_at.unwrap();

    // The circuit half-opens: the first probes and fails, the second waits once more.
    b.clock.advance(Duration::from_secs(32));
    let batch = b.visible().await;
    assert_eq!(batch.len(), 2, "both deliveries' messages are back");
    let report = d.handle(batch).await.unwrap();
    assert_eq!((report.calls, report.waiting), (1, 2));
    let stored = b.status(&second).await;
    assert_eq!(
        (stored.status, stored.attempts, stored.next_attempt_at),
        (DeliveryStatus::Pending, 0, Some(held_until)),
        "the second hold moved the message's timer, not the record"
    );

    // The circuit closes: both are sent, once.
    b.clock.advance(Duration::from_secs(32));
    let report = d.handle(b.visible().await).await.unwrap();
    assert_eq!((report.sent, report.calls), (2, 2));
    assert_eq!(b.status(&second).await.status, DeliveryStatus::Sent);
}

/// The rule `welcome` (one action), chained to `welcome-2`.
const CHAINED: &str = "\n  - name: welcome\n    on: [contact.created]\n    actions:\n      - trigger_event: {name: welcome}\n    then: [welcome-2]\n  - name: welcome-2\n    actions:\n      - trigger_event: {name: welcome-2}";

#[tokio::test]
async fn a_sent_delivery_whose_rule_is_done_enqueues_its_then_step() {
    let b = bench_with(10, CHAINED, &[], true);
    let event = crate::domain::event::parse_event(
        &json!({"id": "evt-1", "type": "contact.created", "contact": {"email": "c1@example.com"}}),
        "",
        b.ctx.clock.now(),
    )
    .unwrap();
    let record = crate::domain::idempotency::EventRecord {
        id: event.id.clone(),
        kind: "contact.created".into(),
        payload_hash: String::new(),
        event: serde_json::to_value(&event).unwrap(),
        received_at: NOW_MS,
        status: crate::domain::idempotency::RecordStatus::Completed,
        in_progress_until: NOW_MS,
        expires_at: NOW_MS / 1000 + 3600,
    };
    b.store.begin(&record, NOW_MS).await.unwrap();
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1));
    let report = b
        .pass(&d, &[delivery(1, DeliveryStatus::Pending, None)])
        .await;
    assert_eq!(report.sent, 1);
    let jobs = b
        .store
        .receive(QueueName::Render, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let job: crate::ports::queue::RenderJob = serde_json::from_str(&jobs[0].body).unwrap();
    assert_eq!(job.rules, Some(vec!["welcome-2".to_string()]));
    assert_eq!(job.depth, 1);
}

/// One `take`: the ids, the holder, now and until (Unix ms).
type Take = (Vec<DeliveryId>, String, i64, i64);

/// Send leases that another worker holds for some deliveries; records what was asked.
#[derive(Default)]
struct Leases {
    held_elsewhere: Vec<DeliveryId>,
    taken: Mutex<Vec<Take>>,
    released: Mutex<Vec<DeliveryId>>,
}

#[async_trait]
impl SendLeases for Leases {
    async fn take(
        &self,
        ids: &[DeliveryId],
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        self.taken
            .lock()
            .unwrap()
            .push((ids.to_vec(), holder.to_string(), now_ms, until_ms));
        Ok(ids
            .iter()
            .filter(|id| !self.held_elsewhere.contains(id))
            .cloned()
            .collect())
    }

    async fn release(&self, ids: &[DeliveryId], _holder: &str) -> Result<(), StoreError> {
        self.released.lock().unwrap().extend_from_slice(ids);
        Ok(())
    }
}

#[tokio::test]
async fn a_delivery_leased_elsewhere_is_not_in_the_call_and_waits_for_the_lease() {
    let b = bench(&[], true);
    let records: Vec<DeliveryRecord> = (1..=3)
        .map(|n| delivery(n, DeliveryStatus::Pending, None))
        .collect();
    let leases = Arc::new(Leases {
        held_elsewhere: vec![records[1].id.clone()],
        ..Leases::default()
    });
    let d = Dispatcher::from_context(b.ctx.clone(), Some(1)).with_leases(leases.clone());
    let report = b.pass(&d, &records).await;
    assert_eq!((report.sent, report.waiting, report.calls), (2, 1, 1));
    let call = b.script.calls.lock().unwrap()[0].clone();
    let body: serde_json::Value = serde_json::from_slice(&call.body.unwrap()).unwrap();
    let emails: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["emailaddress"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["c1@example.com", "c3@example.com"]);
    {
        let taken = leases.taken.lock().unwrap();
        let (ids, holder, now, until) = &taken[0];
        assert_eq!(ids.len(), 3);
        assert!(holder.starts_with("dispatch-"));
        assert_eq!(
            (*now, *until),
            (NOW_MS, NOW_MS + 30_000 + 10_000),
            "the call's timeout and 10 s"
        );
    }
    let waiting = b.status(&records[1]).await;
    assert_eq!(
        (waiting.status, waiting.attempts),
        (DeliveryStatus::Pending, 0)
    );
    // Its message is hidden until the lease ends, then seen again.
    b.clock.advance(Duration::from_secs(39));
    let early = b
        .store
        .receive(QueueName::Dispatch, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        early.is_empty(),
        "hidden while the other worker's lease lasts"
    );
    b.clock.advance(Duration::from_secs(1));
    let later = b
        .store
        .receive(QueueName::Dispatch, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(later.len(), 1);
    assert!(later[0].body.contains(records[1].id.as_str()));
    assert!(
        leases.released.lock().unwrap().is_empty(),
        "the outcome's write releases"
    );
}
