//! What an event costs on AWS (issue 16): every AWS request the functions make, counted per
//! event through a recording proxy in front of the emulator, for the welcome rule (one
//! trigger) and the order rule (order + trigger + SMS), posted one event per HTTP request and
//! a hundred per request. The test plays API Gateway and Lambda's event source mappings (the
//! template's batch sizes); what they bill is modelled from the counts (see `Bill`).
//!
//! It prints the figures BENCHMARKS.md's cost table is made from, and fails if the functions'
//! AWS requests per event grow beyond `CEILINGS`.
#![cfg(feature = "emulator-tests")]

mod support;

#[path = "../../../tests/support/fake_smartemailing.rs"]
mod fake_smartemailing;

use fake_smartemailing::FakeSmartEmailing;
use relay_lambda::dispatch::DispatchHandler;
use relay_lambda::render::RenderHandler;
use relay_shared::ports::clock::SystemClock;
use relay_shared::rules::config::Config;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::proxy::{start_proxy, unchanged, Recorded, RequestLog};
use support::{repo_root, secret_json, sqs_event, Emulator};

const SE_USER: &str = "shop@example.com";
const SE_KEY: &str = "se-key-aws-1";
const ARN: &str = "arn:aws:sqs:eu-central-1:123456789012:relay";

/// The functions' AWS requests per event, by service, at most: (scenario, DynamoDB, SQS,
/// Secrets Manager), as measured when this test was written (BENCHMARKS.md, "What a million
/// events cost on AWS"). Lower them when a change cuts requests; never raise them without a
/// reason written in BENCHMARKS.md.
const CEILINGS: [(&str, f64, f64, f64); 4] = [
    ("welcome, 1 per request", 7.0, 2.0, 0.2),
    ("welcome, 100 per request", 6.01, 0.2, 0.01),
    ("order, 1 per request", 12.0, 2.0, 0.2),
    ("order, 100 per request", 11.03, 0.4, 0.01),
];

/// Public list prices in eu-central-1 (USD), as of 2026-12-02 from AWS's pricing pages as
/// known to the author (no web access when written): re-check them before quoting a bill.
mod price {
    /// HTTP API, per request (first 300 million a month).
    pub const API_GATEWAY: f64 = 1.20e-6;
    /// Lambda, per invocation.
    pub const LAMBDA_REQUEST: f64 = 0.20e-6;
    /// Lambda, per GB-second (x86).
    pub const LAMBDA_GB_SECOND: f64 = 0.000_016_666_7;
    /// DynamoDB on demand, per write request unit.
    pub const DYNAMODB_WRITE: f64 = 1.525e-6;
    /// DynamoDB on demand, per read request unit.
    pub const DYNAMODB_READ: f64 = 0.305e-6;
    /// SQS standard, per request (each 64 KB chunk of a payload is one).
    pub const SQS: f64 = 0.40e-6;
    /// Secrets Manager, per API call.
    pub const SECRETS: f64 = 0.05 / 10_000.0;
}

/// What both rule sets share: the fake SmartEmailing, fast retries, no pacing.
const DELIVERY: &str = r#"
smartemailing:
  base_url: BASE_URL
delivery:
  timeout: 5s
  retry_schedule: [1s, 1s, 1s]
  batch_window: 10ms
  max_requests_per_second: 100000
"#;

const WELCOME_RULES: &str = r#"
rules:
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event:
          name: welcome
          payload:
            first_name: "{{ contact.first_name | default(value='') }}"
"#;

const ORDER_RULES: &str = r#"
rules:
  - name: order-status
    on: [order.status_changed]
    actions:
      - upsert_order:
          eshop_name: example-shop
          eshop_code: "{{ data.order_id }}"
          status: "{{ data.status }}"
          items: "{{ data.items | default(value=[]) }}"
      - trigger_event:
          name: "order-{{ data.status }}"
          payload:
            order_id: "{{ data.order_id }}"
            items: "{{ data.items | default(value=[]) }}"
  - name: order-shipped-sms
    on: [order.status_changed]
    if: "data.status == 'shipped'"
    actions:
      - send_sms:
          sms_id: 3
          tag: shipping
          replace:
            order_id: "{{ data.order_id }}"
"#;

/// One measured case: a rule set, an event and how many events each HTTP request carries.
struct Scenario {
    name: &'static str,
    rules: &'static str,
    event: fn(usize) -> Value,
    per_request: usize,
    requests: usize,
}

fn welcome_event(i: usize) -> Value {
    let mut e = sample("contact.created");
    e["id"] = json!(format!("cost-welcome-{i}"));
    e["contact"]["email"] = json!(format!("c{i}@example.com"));
    e
}

fn order_event(i: usize) -> Value {
    let mut e = sample("order.status_changed");
    e["id"] = json!(format!("cost-order-{i}"));
    e["contact"]["email"] = json!(format!("o{i}@example.com"));
    e["data"]["order_id"] = json!(format!("A-{i}"));
    e
}

/// A sample event of `events/`.
fn sample(name: &str) -> Value {
    let path = repo_root().join("events").join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What one scenario did: the functions' requests and what the test did as API Gateway and
/// the event source mappings.
#[derive(Default)]
struct Run {
    events: usize,
    http_requests: usize,
    /// Per function: how many invocations and their durations.
    invocations: BTreeMap<&'static str, Vec<Duration>>,
    /// Messages each event source mapping handed over and deleted: (received, deleted).
    esm_messages: Vec<(usize, usize)>,
    requests: Vec<Recorded>,
    /// The table's items at the end, by key: their size as DynamoDB counts it, and whether
    /// gsi2 holds them.
    item_sizes: HashMap<(String, String), (usize, bool)>,
}

struct Pipeline {
    emu: Emulator,
    app: axum::Router,
    render: RenderHandler,
    dispatch: DispatchHandler,
    log: RequestLog,
}

impl Pipeline {
    async fn start(rules: &str, fake: &FakeSmartEmailing) -> Pipeline {
        let log = RequestLog::default();
        let proxy = start_proxy(log.clone(), unchanged()).await;
        let emu = Emulator::start(&secret_json(Some((SE_USER, SE_KEY)))).await;
        let text = format!("{DELIVERY}{rules}").replace("BASE_URL", &fake.base_url());
        let config = Config::parse(&text, "cost rules").unwrap();
        let ctx = emu.context_via(&proxy, config, Arc::new(SystemClock)).await;
        let (app, render, dispatch) = support::functions(&ctx, 3);
        Pipeline {
            app,
            render,
            dispatch,
            emu,
            log,
        }
    }

    /// POST /v1/events through API Gateway's request shape, timed as the inbound function.
    async fn post(&self, events: &[Value], run: &mut Run) {
        let started = Instant::now();
        let answer = support::post_events(&self.app, events).await;
        run.invocations
            .entry("inbound")
            .or_default()
            .push(started.elapsed());
        assert!(
            answer["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "accepted"),
            "{answer}"
        );
        run.http_requests += 1;
        run.events += events.len();
    }

    /// Plays the two event source mappings until both queues are empty.
    async fn drain(&self, run: &mut Run) {
        let (render_q, dispatch_q) = (
            self.emu.settings.render_queue_url.clone(),
            self.emu.settings.dispatch_queue_url.clone(),
        );
        // The render queue first: the dispatch mapping's batching window (1 s) collects what a
        // burst of render invocations queued.
        loop {
            let jobs = self.emu.receive_batch(&render_q, 10, None).await;
            if !jobs.is_empty() {
                self.invoke("render", &render_q, &jobs, run).await;
                continue;
            }
            let batch = self.emu.receive_batch(&dispatch_q, 100, None).await;
            if batch.is_empty() {
                return;
            }
            self.invoke("dispatch", &dispatch_q, &batch, run).await;
        }
    }

    /// Hands a batch to a function, timed, and deletes it as the event source mapping does.
    async fn invoke(
        &self,
        function: &'static str,
        queue: &str,
        batch: &[aws_sdk_sqs::types::Message],
        run: &mut Run,
    ) {
        let event = sqs_event(batch, ARN);
        let started = Instant::now();
        let response = match function {
            "render" => self.render.handle(event).await,
            _ => self.dispatch.handle(event).await,
        };
        run.invocations
            .entry(function)
            .or_default()
            .push(started.elapsed());
        assert!(response.batch_item_failures.is_empty(), "{function}");
        self.emu.settle(queue, batch, &response).await;
        run.esm_messages.push((batch.len(), batch.len()));
    }

    /// The table's items by key: their size in DynamoDB JSON and whether gsi2 (which
    /// projects every attribute) holds them.
    async fn item_sizes(&self) -> HashMap<(String, String), (usize, bool)> {
        let mut out = HashMap::new();
        let mut start = None;
        loop {
            let page = self
                .emu
                .dynamodb
                .scan()
                .table_name(&self.emu.settings.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in page.items() {
                let size: usize = item.iter().map(|(k, v)| k.len() + value_size(v)).sum();
                let key = |n: &str| {
                    item.get(n)
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default()
                };
                out.insert((key("pk"), key("sk")), (size, item.contains_key("gsi2pk")));
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return out;
            }
        }
    }
}

/// An attribute value's size as DynamoDB counts it (strings and numbers by their text).
fn value_size(v: &aws_sdk_dynamodb::types::AttributeValue) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) | A::N(s) => s.len(),
        A::B(b) => b.as_ref().len(),
        A::Bool(_) | A::Null(_) => 1,
        A::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        A::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        A::Ss(l) | A::Ns(l) => l.iter().map(String::len).sum(),
        _ => 8,
    }
}

async fn measure(s: &Scenario) -> Run {
    let fake = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let p = Pipeline::start(s.rules, &fake).await;
    let mut run = Run::default();
    for r in 0..s.requests {
        let events: Vec<Value> = (0..s.per_request)
            .map(|i| (s.event)(r * s.per_request + i))
            .collect();
        p.post(&events, &mut run).await;
        // One event per request: each goes through alone (light traffic, the dearest case);
        // a hundred: the mappings see full batches.
        p.drain(&mut run).await;
    }
    run.requests = p.log.drain();
    run.item_sizes = p.item_sizes().await;
    assert_eq!(
        fake.triggered_events().len(),
        run.events,
        "every event triggered once"
    );
    assert_eq!(p.emu.depth(&p.emu.settings.render_queue_url).await, 0);
    assert_eq!(p.emu.depth(&p.emu.settings.dispatch_queue_url).await, 0);
    run
}

/// The four cases: five requests of one event, one request of a hundred.
fn scenarios() -> [Scenario; 4] {
    let case = |name, rules, event, per_request, requests| Scenario {
        name,
        rules,
        event,
        per_request,
        requests,
    };
    [
        case("welcome, 1 per request", WELCOME_RULES, welcome_event, 1, 5),
        case(
            "welcome, 100 per request",
            WELCOME_RULES,
            welcome_event,
            100,
            1,
        ),
        case("order, 1 per request", ORDER_RULES, order_event, 1, 5),
        case("order, 100 per request", ORDER_RULES, order_event, 100, 1),
    ]
}

// ---------------------------------------------------------------- the bill

/// The service an operation belongs to, from its `x-amz-target`.
fn service(operation: &str) -> &'static str {
    if operation.starts_with("DynamoDB_") {
        "dynamodb"
    } else if operation.starts_with("AmazonSQS.") {
        "sqs"
    } else if operation.starts_with("secretsmanager.") {
        "secrets"
    } else {
        panic!("an AWS request of an unknown service: {operation:?}")
    }
}

/// What the services bill for one scenario, in units, and what it comes to.
#[derive(Debug, Default)]
struct Bill {
    api_gateway: f64,
    lambda_invocations: f64,
    lambda_gb_seconds: f64,
    dynamodb_requests: f64,
    write_units: f64,
    read_units: f64,
    sqs_requests: f64,
    /// SQS requests the event source mappings make (receives and batched deletes), modelled.
    sqs_mapping_requests: f64,
    secrets_requests: f64,
    /// The write units by operation and kind of item (`PutItem DELIVERY`): the profile.
    writes_by: BTreeMap<String, f64>,
}

impl Bill {
    fn dollars(&self) -> f64 {
        self.api_gateway * price::API_GATEWAY
            + self.lambda_invocations * price::LAMBDA_REQUEST
            + self.lambda_gb_seconds * price::LAMBDA_GB_SECOND
            + self.write_units * price::DYNAMODB_WRITE
            + self.read_units * price::DYNAMODB_READ
            + (self.sqs_requests + self.sqs_mapping_requests) * price::SQS
            + self.secrets_requests * price::SECRETS
    }

    fn per_event(&self, events: usize) -> Bill {
        let n = events as f64;
        Bill {
            api_gateway: self.api_gateway / n,
            lambda_invocations: self.lambda_invocations / n,
            lambda_gb_seconds: self.lambda_gb_seconds / n,
            dynamodb_requests: self.dynamodb_requests / n,
            write_units: self.write_units / n,
            read_units: self.read_units / n,
            sqs_requests: self.sqs_requests / n,
            sqs_mapping_requests: self.sqs_mapping_requests / n,
            secrets_requests: self.secrets_requests / n,
            writes_by: self
                .writes_by
                .iter()
                .map(|(k, v)| (k.clone(), v / n))
                .collect(),
        }
    }
}

/// The functions' memory size in template.yaml, in GB.
fn memory_gb() -> f64 {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["Globals"]["Function"]["MemorySize"]
        .as_f64()
        .expect("Globals.Function.MemorySize in template.yaml")
        / 1024.0
}

fn chunks_of_64k(bytes: usize) -> f64 {
    bytes.div_ceil(64 * 1024).max(1) as f64
}

fn key_of(v: &Value) -> (String, String) {
    let s = |n: &str| v[n]["S"].as_str().unwrap_or_default().to_string();
    (s("pk"), s("sk"))
}

/// A write's units: the item's size (the larger of what was sent and what the table holds
/// at the end) in KB, rounded up, and as much again for gsi2, which projects every attribute.
/// The keys-only indexes (gsi1, gsi3) take one unit when an item is first written.
fn write_units(
    item: &Value,
    sent: usize,
    sizes: &HashMap<(String, String), (usize, bool)>,
    seen: &mut HashSet<(String, String)>,
) -> f64 {
    let key = key_of(item);
    let (stored, in_gsi2) = sizes.get(&key).copied().unwrap_or((0, false));
    let units = sent.max(stored).div_ceil(1024).max(1) as f64;
    let mut total = units;
    if in_gsi2 {
        total += units;
    }
    if seen.insert(key) {
        let keys_only = ["gsi1pk", "gsi3pk"]
            .iter()
            .filter(|k| item.get(**k).is_some())
            .count();
        total += keys_only as f64;
    }
    total
}

/// A read's units: 4 KB per unit, half a unit when eventually consistent.
fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

fn stored_size(key: &Value, sizes: &HashMap<(String, String), (usize, bool)>) -> usize {
    sizes.get(&key_of(key)).map_or(0, |s| s.0)
}

/// DynamoDB's units for one request: (write units, read units), estimated from the sizes.
fn dynamodb_units(
    r: &Recorded,
    sizes: &HashMap<(String, String), (usize, bool)>,
    seen: &mut HashSet<(String, String)>,
) -> (f64, f64) {
    let req: Value = serde_json::from_slice(&r.request).unwrap_or(Value::Null);
    let resp: Value = serde_json::from_slice(&r.response).unwrap_or(Value::Null);
    let op = r.operation.trim_start_matches("DynamoDB_20120810.");
    let consistent = req["ConsistentRead"].as_bool().unwrap_or(false);
    let json_size = |v: &Value| v.to_string().len();
    match op {
        "PutItem" => (write_units(&req["Item"], 0, sizes, seen), 0.0),
        "UpdateItem" | "DeleteItem" => (write_units(&req["Key"], 0, sizes, seen), 0.0),
        "GetItem" => (0.0, read_units(stored_size(&req["Key"], sizes), consistent)),
        "Query" => {
            let items = resp["Items"].as_array().cloned().unwrap_or_default();
            let bytes: usize = items.iter().map(|i| stored_size(i, sizes)).sum();
            (0.0, read_units(bytes, consistent))
        }
        "BatchGetItem" => {
            let mut units = 0.0;
            for table in req["RequestItems"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                let consistent = table["ConsistentRead"].as_bool().unwrap_or(false);
                for key in table["Keys"].as_array().into_iter().flatten() {
                    units += read_units(stored_size(key, sizes), consistent);
                }
            }
            (0.0, units)
        }
        "BatchWriteItem" => {
            let mut units = 0.0;
            for w in req["RequestItems"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            {
                let item = if w["PutRequest"].is_object() {
                    &w["PutRequest"]["Item"]
                } else {
                    &w["DeleteRequest"]["Key"]
                };
                units += write_units(item, 0, sizes, seen);
            }
            (units, 0.0)
        }
        "TransactWriteItems" => {
            let mut units = 0.0;
            for t in req["TransactItems"].as_array().into_iter().flatten() {
                let (kind, body) = t.as_object().and_then(|m| m.iter().next()).unwrap();
                let item = if kind == "Put" {
                    &body["Item"]
                } else {
                    &body["Key"]
                };
                // A transaction's every item costs twice.
                units += 2.0 * write_units(item, json_size(item), sizes, seen);
            }
            (units, 0.0)
        }
        other => panic!("no unit estimate for DynamoDB's {other}: add one"),
    }
}

/// A write's operation and the kind of item it writes (its `pk` up to `#`).
fn write_kind(r: &Recorded) -> String {
    let text = String::from_utf8_lossy(&r.request);
    let kind = text
        .find("\"pk\":{\"S\":\"")
        .map(|i| &text[i + 11..])
        .and_then(|rest| rest.split('#').next())
        .unwrap_or("?");
    let op = r.operation.trim_start_matches("DynamoDB_20120810.");
    format!("{op} {kind}")
}

fn bill(run: &Run) -> Bill {
    let gb = memory_gb();
    let mut b = Bill {
        api_gateway: run.http_requests as f64,
        ..Bill::default()
    };
    for durations in run.invocations.values() {
        b.lambda_invocations += durations.len() as f64;
        // Lambda bills each invocation by the millisecond, rounded up.
        b.lambda_gb_seconds += durations
            .iter()
            .map(|d| (d.as_micros().div_ceil(1000) as f64 / 1000.0) * gb)
            .sum::<f64>();
    }
    for (received, deleted) in &run.esm_messages {
        b.sqs_mapping_requests += (received.div_ceil(10) + deleted.div_ceil(10)) as f64;
    }
    let mut seen = HashSet::new();
    for r in &run.requests {
        match service(&r.operation) {
            "dynamodb" => {
                b.dynamodb_requests += 1.0;
                let (w, rd) = dynamodb_units(r, &run.item_sizes, &mut seen);
                b.write_units += w;
                if w > 0.0 {
                    *b.writes_by.entry(write_kind(r)).or_default() += w;
                }
                b.read_units += rd;
            }
            "sqs" => b.sqs_requests += chunks_of_64k(r.request.len().max(r.response.len())),
            _ => b.secrets_requests += 1.0,
        }
    }
    b
}

fn print_run(s: &Scenario, run: &Run, per: &Bill) {
    let mut ops = BTreeMap::<&str, usize>::new();
    for r in &run.requests {
        *ops.entry(r.operation.as_str()).or_default() += 1;
    }
    eprintln!("== {} ({} events)", s.name, run.events);
    for (op, n) in &ops {
        eprintln!(
            "  {op:<40} {n:>5} ({:.3} per event)",
            *n as f64 / run.events as f64
        );
    }
    for (f, d) in &run.invocations {
        let total: Duration = d.iter().sum();
        eprintln!(
            "  {f:<10} {:>4} invocations, mean {:.1?} (in moto, not Lambda)",
            d.len(),
            total / d.len().max(1) as u32
        );
    }
    eprintln!("  per event: {per:?}");
    for (k, w) in &per.writes_by {
        eprintln!("  write units per event, {k:<24} {w:.2}");
    }
    eprintln!(
        "| {} | {:.2} | {:.2} | {:.4} | {:.2} ({:.2} WRU, {:.2} RRU) | {:.2} + {:.2} | {:.3} | ${:.2} |",
        s.name,
        per.api_gateway,
        per.lambda_invocations,
        per.lambda_gb_seconds,
        per.dynamodb_requests,
        per.write_units,
        per.read_units,
        per.sqs_requests,
        per.sqs_mapping_requests,
        per.secrets_requests,
        per.dollars() * 1e6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_requests_per_event_do_not_grow() {
    let mut over = Vec::new();
    for s in scenarios() {
        let run = measure(&s).await;
        let per = bill(&run).per_event(run.events);
        print_run(&s, &run, &per);
        let n = run.events as f64;
        let count = |svc: &str| {
            run.requests
                .iter()
                .filter(|r| service(&r.operation) == svc)
                .count() as f64
                / n
        };
        let (_, dynamodb, sqs, secrets) = CEILINGS.iter().find(|c| c.0 == s.name).copied().unwrap();
        for (svc, ceiling) in [("dynamodb", dynamodb), ("sqs", sqs), ("secrets", secrets)] {
            let got = count(svc);
            if got > ceiling + 1e-9 {
                over.push(format!(
                    "{}: {got:.3} {svc} requests per event, ceiling {ceiling}",
                    s.name
                ));
            }
        }
    }
    assert!(
        over.is_empty(),
        "AWS requests per event grew (see BENCHMARKS.md, \"What a million events cost on \
         AWS\"): {over:?}"
    );
}
