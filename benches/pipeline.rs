//! In-process cost per event: parse + validate, match rules, render, and building one
//! coalesced bulk call of 500 — against the example config extended to 30 rules.
//!
//! `cargo bench --bench pipeline` (or `scripts/bench`, which also runs the load test).

use chrono::{DateTime, Utc};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use relay_shared::domain::delivery::Prepared;
use relay_shared::domain::event::parse_submission;
use relay_shared::domain::smartemailing::Endpoint;
use relay_shared::rules::config::Config;
use relay_shared::rules::render::{matching_rules, render_event};
use relay_shared::security::limits::{check_json, InputLimits};
use serde_json::Value;
use std::path::PathBuf;

/// How many rules the benchmark config has: the example's and generated ones.
const RULES: usize = 30;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The extra rules a grown account plausibly has: a few more on the busy event types, most
/// on types the sample events do not carry (so matching has to look at them and move on).
fn extra_rule(i: usize) -> String {
    let (on, cond) = match i % 6 {
        // A language-specific welcome: listens for contact.created, condition false here.
        0 => (
            "contact.created",
            format!("if: \"contact.language == 'xx_{i}'\""),
        ),
        // An order rule for one status.
        1 => ("order.*", format!("if: \"data.status == 'status-{i}'\"")),
        2 => ("product.viewed", String::new()),
        3 => ("wishlist.added", String::new()),
        4 => ("review.requested", String::new()),
        _ => ("loyalty.points_changed", String::new()),
    };
    format!(
        r#"
  - name: extra-{i}
    on: [{on}]
    {cond}
    actions:
      - trigger_event:
          name: extra-{i}
          payload:
            first_name: "{{{{ contact.first_name | default(value='') }}}}"
            n: "{{{{ data.n | default(value=0) }}}}"
"#
    )
}

/// The example config with generated rules appended until it has `RULES` rules.
pub fn config_30() -> Config {
    let base = read("config/relay.yaml");
    let have = Config::parse(&base, "config/relay.yaml")
        .expect("the example config is valid")
        .rules
        .len();
    let mut text = base;
    for i in 0..RULES.saturating_sub(have) {
        text.push_str(&extra_rule(i));
    }
    let config = Config::parse(&text, "bench config").expect("the bench config is valid");
    assert_eq!(config.rules.len(), RULES);
    config
}

fn now() -> DateTime<Utc> {
    "2026-11-26T10:00:01Z".parse().expect("a valid time")
}

fn event_value(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).expect("a sample event is JSON")
}

fn bench_event(c: &mut Criterion) {
    let bytes = read("events/contact.created.json").into_bytes();
    let value = event_value("events/contact.created.json");
    let limits = InputLimits::default();
    let mut g = c.benchmark_group("event");
    g.bench_function("parse_validate_value", |b| {
        // The value is taken by the parser; its copy is made outside the measured part.
        b.iter_batched(
            || value.clone(),
            |v| parse_submission(black_box(v), now()).expect("valid"),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("parse_validate_bytes", |b| {
        b.iter(|| {
            let v = check_json(black_box(&bytes), &limits).expect("within limits");
            parse_submission(v, now()).expect("valid")
        })
    });
    g.finish();
}

fn bench_rules(c: &mut Criterion) {
    let config = config_30();
    let mut g = c.benchmark_group("rules");
    for (name, file) in [
        ("match_contact_created", "events/contact.created.json"),
        (
            "match_order_status_changed",
            "events/order.status_changed.json",
        ),
    ] {
        let event = parse_submission(event_value(file), now()).expect("valid")[0]
            .event
            .clone();
        g.bench_function(name, |b| {
            b.iter(|| matching_rules(black_box(&config), black_box(&event), None).len())
        });
    }
    g.finish();
}

fn bench_render(c: &mut Criterion) {
    let config = config_30();
    // One typical action: the welcome trigger of the example config, alone in a config.
    const ONE: &str = r#"
rules:
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event:
          name: welcome
          payload:
            first_name: "{{ contact.first_name | default(value='') }}"
            source: "{{ data.source | default(value='web') }}"
"#;
    let one = Config::parse(ONE, "one action").expect("valid");
    let created = parse_submission(event_value("events/contact.created.json"), now())
        .expect("valid")[0]
        .event
        .clone();
    let order = parse_submission(event_value("events/order.status_changed.json"), now())
        .expect("valid")[0]
        .event
        .clone();
    let mut g = c.benchmark_group("render");
    g.bench_function("one_trigger_action", |b| {
        b.iter(|| render_event(black_box(&one), black_box(&created), None, now()))
    });
    g.bench_function("contact_created_30_rules", |b| {
        b.iter(|| render_event(black_box(&config), black_box(&created), None, now()))
    });
    g.bench_function("order_status_changed_30_rules", |b| {
        b.iter(|| render_event(black_box(&config), black_box(&order), None, now()))
    });
    g.finish();
}

/// The budget line: bytes in, rendered requests out, for one event.
fn bench_pipeline(c: &mut Criterion) {
    let config = config_30();
    let limits = InputLimits::default();
    let mut g = c.benchmark_group("pipeline");
    for (name, file) in [
        ("contact_created", "events/contact.created.json"),
        ("order_status_changed", "events/order.status_changed.json"),
    ] {
        let bytes = read(file).into_bytes();
        g.bench_function(name, |b| {
            b.iter(|| {
                let v = check_json(black_box(&bytes), &limits).expect("within limits");
                let subs = parse_submission(v, now()).expect("valid");
                render_event(&config, &subs[0].event, None, now())
            })
        });
    }
    g.finish();
}

/// The items 500 deliveries of one rule action contribute to one bulk call.
fn items_500(config: &Config, file: &str, action: &str) -> (Endpoint, Value, Vec<Value>) {
    let base = event_value(file);
    let mut endpoint = None;
    let mut group = Value::Null;
    let mut items = Vec::with_capacity(500);
    for i in 0..500 {
        let mut v = base.clone();
        v["id"] = Value::from(format!("evt-{i}"));
        v["contact"]["email"] = Value::from(format!("c{i}@example.com"));
        let event = parse_submission(v, now()).expect("valid")[0].event.clone();
        let rendered = render_event(config, &event, None, now());
        let hit = rendered
            .into_iter()
            .find(|r| r.action == action)
            .expect("the action is rendered");
        if let Ok(Prepared::SmartEmailing {
            endpoint: e,
            group: g,
            item,
        }) = hit.result
        {
            endpoint = Some(e);
            group = g;
            items.push(item);
        }
    }
    (endpoint.expect("a SmartEmailing action"), group, items)
}

fn bench_bulk(c: &mut Criterion) {
    let config = config_30();
    let mut g = c.benchmark_group("bulk");
    g.throughput(Throughput::Elements(500));
    for (name, action) in [
        ("trigger_event_500", "trigger_event"),
        ("import_500", "upsert_contact"),
    ] {
        let (endpoint, group, items) = items_500(&config, "events/contact.created.json", action);
        g.bench_function(name, |b| {
            b.iter_batched(
                || items.clone(),
                |items| serde_json::to_vec(&endpoint.body(&group, items)).expect("serialises"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_event,
    bench_rules,
    bench_render,
    bench_pipeline,
    bench_bulk
);
criterion_main!(benches);
