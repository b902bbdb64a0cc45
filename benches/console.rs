//! The operator's window on a big local store: one page of 100 deliveries out of a million
//! (the issue asks for well under 100 ms), unfiltered, by e-mail, by status and by rule, the
//! next page after a cursor deep in the table, and the counts by status of the last day.
//!
//! The store is built once, on SQLite in a temporary directory, from `CONSOLE_DELIVERIES`
//! (default 1 000 000) deliveries over 30 simulated days: 100 000 contacts, ten rules, 2 % dead
//! and 1 % retrying, each with a frozen SmartEmailing request and one logged attempt, inserted
//! 20 000 to a commit. Building takes a minute or two; only the reads are measured.
//!
//! `cargo bench --bench console` (add `-- --warm-up-time 1 --measurement-time 3` for a quick
//! run).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use relay_shared::adapters::sqlite::SqliteStore;
use relay_shared::domain::delivery::{
    Attempt, AttemptClass, DeliveryId, DeliveryRecord, DeliveryStatus, Prepared,
};
use relay_shared::domain::event::EventId;
use relay_shared::domain::smartemailing::Endpoint;
use relay_shared::ports::clock::ManualClock;
use relay_shared::ports::store::DeliveryCursor;
use relay_shared::ports::{DeliveryFilter, DeliveryStore};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

const START_MS: i64 = 1_795_000_000_000;
const DAYS: i64 = 30;
const CONTACTS: usize = 100_000;
const RULES: usize = 10;
const CHUNK: usize = 20_000;

fn deliveries_wanted() -> usize {
    std::env::var("CONSOLE_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn status_of(n: usize) -> DeliveryStatus {
    match n % 100 {
        0 | 1 => DeliveryStatus::Dead,
        2 => DeliveryStatus::Retrying,
        _ => DeliveryStatus::Sent,
    }
}

/// Delivery `n` of `total`, created in order over the simulated month.
fn delivery(n: usize, total: usize) -> DeliveryRecord {
    let email = format!("contact{}@example.com", n % CONTACTS);
    let rule = format!("rule-{}", n % RULES);
    let created_at = START_MS + (n as i64 * DAYS * 86_400_000) / total as i64;
    let event = EventId::from_stored(format!("evt-{n}"));
    let status = status_of(n);
    DeliveryRecord {
        id: DeliveryId::derive(&event, &rule, 0),
        event_id: event,
        action: "trigger_event".into(),
        action_index: 0,
        status,
        attempts: 1,
        last_error: None,
        last_response: Some("201 {\"status\":\"created\"}".into()),
        sent_at: None,
        next_attempt_at: None,
        request: Some(Prepared::SmartEmailing {
            endpoint: Endpoint::TriggerEvent,
            group: json!({}),
            item: json!({"emailaddress": email, "name": rule}),
        }),
        created_at,
        chain_depth: 0,
        email: Some(email),
        event_type: Some("contact.created".into()),
        attempt_log: vec![Attempt {
            at_ms: created_at,
            duration_ms: 120,
            status_code: Some(201),
            response: Some("201 {\"status\":\"created\"}".into()),
            class: AttemptClass::Success,
            reason: None,
        }],
        rule,
    }
}

/// The store, filled; the directory goes when it is dropped.
fn build(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, SqliteStore, usize) {
    let total = deliveries_wanted();
    let dir = tempfile::tempdir().expect("tempdir");
    let end = START_MS + DAYS * 86_400_000;
    let store = SqliteStore::open(dir.path(), Arc::new(ManualClock::at_ms(end))).expect("store");
    let began = Instant::now();
    for start in (0..total).step_by(CHUNK) {
        let chunk: Vec<DeliveryRecord> = (start..(start + CHUNK).min(total))
            .map(|n| delivery(n, total))
            .collect();
        rt.block_on(store.insert_new(&chunk)).expect("insert");
    }
    eprintln!(
        "built {total} deliveries in {:.1} s ({:.0} MB)",
        began.elapsed().as_secs_f64(),
        store.disk_usage() as f64 / 1e6
    );
    (dir, store, total)
}

/// What is measured: a name, the filter, and where the page starts.
type Case = (&'static str, DeliveryFilter, Option<DeliveryCursor>);

fn cases(total: usize) -> Vec<Case> {
    let page = |f: DeliveryFilter| DeliveryFilter { limit: 100, ..f };
    // The cursor of a page in the middle of the month: keyset paging reads no more there.
    let deep = DeliveryCursor::of(&delivery(total / 2, total));
    vec![
        ("unfiltered", page(DeliveryFilter::default()), None),
        (
            "unfiltered, mid-table",
            page(DeliveryFilter::default()),
            Some(deep),
        ),
        (
            "by e-mail",
            page(DeliveryFilter {
                email: Some("Contact4242@example.com".into()),
                ..Default::default()
            }),
            None,
        ),
        (
            "by status dead",
            page(DeliveryFilter {
                status: Some(DeliveryStatus::Dead),
                ..Default::default()
            }),
            None,
        ),
        (
            "by rule",
            page(DeliveryFilter {
                rule: Some("rule-3".into()),
                ..Default::default()
            }),
            None,
        ),
    ]
}

fn pages(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_dir, store, total) = build(&rt);
    let mut group = c.benchmark_group(format!("console page of 100 of {total}"));
    for (name, filter, after) in cases(total) {
        let after = after.as_ref();
        let found = rt.block_on(store.page(&filter, after)).expect("page");
        eprintln!("{name}: {} deliveries", found.deliveries.len());
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(store.page(black_box(&filter), after))
                    .expect("page")
            })
        });
    }
    let day_ago = START_MS + (DAYS - 1) * 86_400_000;
    group.bench_function("counts by status, last day", |b| {
        b.iter(|| {
            rt.block_on(store.count_by_status(black_box(day_ago)))
                .expect("count")
        })
    });
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
