//! The local store's size over a simulated two months at a steady rate, with and without
//! the sweeper (retention: events 7 days, finished deliveries 30 days).
//!
//! In process, on a fixed clock: each simulated day `RETENTION_EVENTS_PER_DAY` (default
//! 2 000) `contact.created` events go through the real inbound, render and dispatch steps of
//! the example config in dry-run (every delivery rendered, frozen and finished, as a
//! delivered one would be), on SQLite; with the sweeper on, one sweep runs each simulated
//! hour. The size of the database and its WAL is printed at days 7, 30, 45 and 60.
//!
//! `cargo bench --bench retention`. Results: a table on stdout and JSON lines in
//! `$BENCH_RESULTS_DIR/retention.jsonl` (default `target/bench-results`).

use relay_shared::adapters::env_credentials::StaticCredentials;
use relay_shared::adapters::reqwest::ReqwestTransport;
use relay_shared::adapters::sqlite::SqliteStore;
use relay_shared::domain::event::parse_submission;
use relay_shared::domain::secret::SecretBundle;
use relay_shared::pipeline::dispatch::Dispatcher;
use relay_shared::pipeline::inbound::Inbound;
use relay_shared::pipeline::render::{RenderPorts, RenderStep};
use relay_shared::ports::clock::{Clock, ManualClock};
use relay_shared::ports::queue::QueueName;
use relay_shared::ports::Queue;
use relay_shared::rules::config::Config;
use serde_json::json;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

const HOUR: u64 = 3600;

async fn drain(store: &SqliteStore, render: &RenderStep, dispatch: &Dispatcher) {
    loop {
        let jobs = store
            .receive(QueueName::Render, 500, Duration::from_secs(60))
            .await
            .expect("receive render jobs");
        if jobs.is_empty() {
            break;
        }
        render.handle_batch(&jobs).await.expect("render");
        let handles: Vec<String> = jobs.iter().map(|m| m.handle.clone()).collect();
        store.ack(QueueName::Render, &handles).await.expect("ack");
    }
    loop {
        let jobs = store
            .receive(QueueName::Dispatch, 1000, Duration::from_secs(60))
            .await
            .expect("receive dispatch jobs");
        if jobs.is_empty() {
            break;
        }
        dispatch.handle(jobs).await.expect("dispatch");
    }
}

async fn run(sweep: bool, per_day: usize, days: u64) -> Vec<(u64, u64)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::at_ms(1_795_000_000_000));
    let text = std::fs::read_to_string("config/relay.yaml").expect("config/relay.yaml");
    let config = Arc::new(Config::parse(&text, "config/relay.yaml").expect("example config"));
    let store = SqliteStore::open(dir.path(), clock.clone())
        .expect("store")
        .with_retention(config.retention.windows());
    let shared = Arc::new(store.clone());
    let inbound = Inbound::new(shared.clone(), shared.clone(), clock.clone(), None)
        .with_atomic(shared.clone())
        .with_event_retention(config.retention.events.get());
    let render = RenderStep::new(
        config.clone(),
        RenderPorts {
            deliveries: shared.clone(),
            queue: shared.clone(),
            timers: shared.clone(),
            contacts: shared.clone(),
        },
        clock.clone(),
        None,
    );
    let dispatch = Dispatcher::new(
        config.clone(),
        shared.clone(),
        shared.clone(),
        shared.clone(),
        Arc::new(StaticCredentials::new(SecretBundle::default())),
        Arc::new(ReqwestTransport::new().expect("transport")),
        clock.clone(),
        Some(1),
    );
    let mut sizes = Vec::new();
    let mut n = 0usize;
    for day in 1..=days {
        for hour in 0..24 {
            let batch = per_day / 24 + usize::from(hour < per_day % 24);
            let events: Vec<_> = (0..batch)
                .map(|_| {
                    n += 1;
                    json!({"id": format!("ret-{n}"), "type": "contact.created",
                           "contact": {"email": format!("c{n}@example.com"), "first_name": "Jana"},
                           "data": {"source": "signup-form"}})
                })
                .collect();
            let subs =
                parse_submission(json!({ "events": events }), clock.now()).expect("valid events");
            inbound.accept(subs).await.expect("accept");
            drain(&store, &render, &dispatch).await;
            if sweep {
                store.sweep().await.expect("sweep");
            }
            clock.advance(Duration::from_secs(HOUR));
        }
        if [7, 30, 45, 60].contains(&day) {
            sizes.push((day, store.disk_usage()));
        }
    }
    sizes
}

fn main() {
    let per_day: usize = std::env::var("RETENTION_EVENTS_PER_DAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let out_dir =
        std::env::var("BENCH_RESULTS_DIR").unwrap_or_else(|_| "target/bench-results".into());
    std::fs::create_dir_all(&out_dir).expect("results dir");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{out_dir}/retention.jsonl"))
        .expect("results file");
    println!("events/day {per_day}: state size (database + WAL) by simulated day");
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12}",
        "sweeper", "day 7", "day 30", "day 45", "day 60"
    );
    for sweep in [false, true] {
        let sizes = rt.block_on(run(sweep, per_day, 60));
        let mb: Vec<String> = sizes
            .iter()
            .map(|(_, b)| format!("{:.1} MB", *b as f64 / 1e6))
            .collect();
        println!(
            "{:<10} {:>12} {:>12} {:>12} {:>12}",
            if sweep { "on" } else { "off" },
            mb[0],
            mb[1],
            mb[2],
            mb[3]
        );
        let _ = writeln!(
            out,
            "{}",
            json!({"bench": "retention", "sweeper": sweep, "events_per_day": per_day,
                   "bytes_by_day": sizes.iter().map(|(d, b)| json!({"day": d, "bytes": b})).collect::<Vec<_>>()})
        );
    }
}
