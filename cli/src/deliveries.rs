//! `relay deliveries` (list) and `relay replay` (send again with the original ids), on the
//! local SQLite state or, with `--aws` (a build with feature `aws`), on the deployed relay.

use crate::config::locate_and_load;
use crate::{internal, user, Failure};
use anyhow::anyhow;
use chrono::Utc;
use relay_shared::adapters::sqlite::SqliteStore;
use relay_shared::domain::delivery::{DeliveryId, DeliveryStatus};
use relay_shared::pipeline::replay::{self, ReplayPorts};
use relay_shared::ports::clock::{Clock, SystemClock};
use relay_shared::ports::{DeliveryFilter, DeliveryStore, EventStore, Queue};
use relay_shared::rules::config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// `--since`: an RFC 3339 time, or a duration ago; in Unix ms.
fn parse_since(since: Option<String>) -> Result<Option<i64>, Failure> {
    let Some(s) = since else { return Ok(None) };
    match replay::parse_since(&s, Utc::now()) {
        Some(ms) => Ok(Some(ms)),
        None => Err(user(anyhow!(
            "--since: `{s}` is neither an RFC 3339 time nor a duration like 2h"
        ))),
    }
}

/// The local SQLite state; a missing one is the user's mistake (no `serve` ran there yet).
pub(crate) fn open_store(state: &Path) -> Result<SqliteStore, Failure> {
    if !state.join("relay.db").exists() {
        return Err(user(anyhow!(
            "no relay state in {} (run `relay serve` first, or pass --state)",
            state.display()
        )));
    }
    SqliteStore::open(state, Arc::new(SystemClock)).map_err(internal)
}

/// The stores a command works on: the local SQLite state, or the deployed relay's.
pub(crate) struct Stores {
    events: Arc<dyn EventStore>,
    deliveries: Arc<dyn DeliveryStore>,
    queue: Arc<dyn Queue>,
    /// How far back the store can show: when its oldest record is from (Unix ms), where
    /// the store can tell.
    oldest_ms: Option<i64>,
}

/// The local state, or with `aws` the deployed relay's table and queues.
pub(crate) async fn open_stores(state: &Path, aws: bool) -> Result<Stores, Failure> {
    if aws {
        return open_aws_stores().await;
    }
    let store = Arc::new(open_store(state)?);
    let oldest_ms = store.oldest_record_ms().unwrap_or(None);
    Ok(Stores {
        events: store.clone(),
        deliveries: store.clone(),
        queue: store,
        oldest_ms,
    })
}

#[cfg(feature = "aws")]
async fn open_aws_stores() -> Result<Stores, Failure> {
    use relay_shared::adapters::aws::{sdk_config, AwsStores};
    let sdk = sdk_config().await.map_err(|e| user(anyhow!(e)))?;
    // The table and the queues only: these commands read no secret, so need no SECRET_ID.
    let aws = AwsStores::from_env(&sdk).map_err(|e| {
        user(anyhow!(
            "{e}: export it from the stack's outputs (see docs/aws.md)"
        ))
    })?;
    Ok(Stores {
        events: aws.store.clone(),
        deliveries: aws.store,
        queue: aws.queue,
        oldest_ms: None,
    })
}

#[cfg(not(feature = "aws"))]
async fn open_aws_stores() -> Result<Stores, Failure> {
    Err(user(anyhow!(
        "this relay was built without AWS support: run it as `cargo run --features aws -- <command> --aws`"
    )))
}

/// `relay deliveries`' filters, as given on the command line.
pub(crate) struct Filter {
    pub(crate) status: Option<DeliveryStatus>,
    pub(crate) rule: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) event_id: Option<String>,
    pub(crate) limit: usize,
}

/// Lists the deliveries matching the filters, as a table or as JSON lines.
pub(crate) async fn deliveries(
    given: Filter,
    json: bool,
    stores: &Stores,
) -> Result<ExitCode, Failure> {
    let filter = DeliveryFilter {
        status: given.status,
        rule: given.rule,
        since_ms: parse_since(given.since)?,
        event_id: given.event_id,
        limit: given.limit,
        ..DeliveryFilter::default()
    };
    let list = stores.deliveries.list(&filter).await.map_err(internal)?;
    if json {
        for d in &list {
            let mut v = d.to_api();
            v["event_id"] = serde_json::json!(d.event_id);
            v["last_response"] = serde_json::json!(d.last_response);
            println!("{v}");
        }
    } else {
        println!(
            "{:<28} {:<9} {:>3}  {:<20} {:<24} {:<24} LAST ERROR",
            "ID", "STATUS", "TRY", "RULE", "ACTION", "EVENT"
        );
        for d in &list {
            println!(
                "{:<28} {:<9} {:>3}  {:<20} {:<24} {:<24} {}",
                d.id,
                d.status.as_str(),
                d.attempts,
                d.rule,
                d.action,
                d.event_id,
                d.last_error.as_deref().unwrap_or("")
            );
            if filter.status == Some(DeliveryStatus::Dead) {
                if let Some(resp) = &d.last_response {
                    println!("{:<28} last response: {resp}", "");
                }
            }
        }
        eprintln!("{} deliveries", list.len());
        eprintln!("{}", horizon(stores.oldest_ms));
    }
    Ok(ExitCode::SUCCESS)
}

/// How far back a listing can see: finished and dead deliveries are swept after their
/// retention window (`retention:` in the config; 30 days by default).
fn horizon(oldest_ms: Option<i64>) -> String {
    let oldest = oldest_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            format!(
                "the oldest record held is from {}; ",
                t.format("%Y-%m-%d %H:%M UTC")
            )
        })
        .unwrap_or_default();
    format!(
        "{oldest}finished and dead deliveries are kept for their retention window (retention: in the config, 30 days by default), pending and scheduled ones until they finish"
    )
}

/// Replays the named deliveries and/or every dead one, in chunks. An id that names no
/// delivery is a mistake (a typo, another state): nothing is replayed and it exits 1.
pub(crate) async fn replay(
    ids: Vec<String>,
    all_dead: bool,
    rule: Option<String>,
    since: Option<String>,
    config: Option<PathBuf>,
    state: &Path,
    stores: &Stores,
) -> Result<ExitCode, Failure> {
    if ids.is_empty() && !all_dead {
        return Err(user(anyhow!(
            "name delivery ids to replay, or pass --all-dead"
        )));
    }
    let (_, config) = locate_and_load(config, state)?;
    let mut targets: Vec<DeliveryId> = ids.into_iter().map(DeliveryId::from_stored).collect();
    refuse_unknown(&targets, stores).await?;
    if all_dead {
        let filter = DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            rule,
            since_ms: parse_since(since)?,
            ..DeliveryFilter::default()
        };
        targets.extend(
            replay::matching_ids(stores.deliveries.as_ref(), &filter)
                .await
                .map_err(internal)?,
        );
    }
    let total = targets.len();
    let queued = replay_in_chunks(&config, &targets, stores).await?;
    println!("{queued} of {total} deliveries queued for sending (already-sent ones are never resent); a running `relay serve` picks them up");
    Ok(ExitCode::SUCCESS)
}

/// Fails, naming them, when some of the ids name no delivery.
async fn refuse_unknown(ids: &[DeliveryId], stores: &Stores) -> Result<(), Failure> {
    let unknown = replay::unknown_ids(stores.deliveries.as_ref(), ids)
        .await
        .map_err(internal)?;
    let unknown: Vec<&str> = unknown.iter().map(DeliveryId::as_str).collect();
    match unknown.as_slice() {
        [] => Ok(()),
        [one] => Err(user(anyhow!(
            "no delivery has the id {one}, so nothing was replayed (`relay deliveries` lists them)"
        ))),
        many => Err(user(anyhow!(
            "no delivery has the ids {}, so nothing was replayed (`relay deliveries` lists them)",
            many.join(", ")
        ))),
    }
}

/// Replays the targets a chunk at a time, reporting progress on stderr; how many were queued.
async fn replay_in_chunks(
    config: &Config,
    targets: &[DeliveryId],
    stores: &Stores,
) -> Result<usize, Failure> {
    let total = targets.len();
    let ports = ReplayPorts {
        config,
        events: stores.events.as_ref(),
        deliveries: stores.deliveries.as_ref(),
        queue: stores.queue.as_ref(),
    };
    let done = replay::replay_in_chunks(&ports, targets, SystemClock.now(), |seen, queued| {
        eprintln!("replay: {seen}/{total} looked at, {queued} queued");
    })
    .await
    .map_err(internal)?;
    Ok(done.queued.len())
}
