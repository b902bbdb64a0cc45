//! Events and deliveries in one DynamoDB table (`pk`/`sk`, TTL `expires_at`, Unix seconds).
//! The TTLs follow the config's `retention:` (`domain::retention`, the rule `relay serve`'s
//! sweeper applies): an event's from its record, a finished delivery's `deliveries` after it
//! finished, a dead one's `dead` after it died; a delivery with work left has none.
//!
//! Item families:
//! - an event (its idempotency record): `pk = EVENT#<id>`, `sk = EVENT`;
//! - a delivery: `pk = DELIVERY#<id>`, `sk = DELIVERY`, keyed by its own id so the dispatch
//!   step reads it with a strongly consistent read (a delivery held as sent is never sent
//!   again). Index `gsi1` (`gsi1pk = EVENT#<event id>`, keys only) finds an event's
//!   deliveries, which are then read consistently; index `gsi2` (`gsi2pk = DSTATUS#<status>`,
//!   `gsi2sk = <created_at>#<id>`) lists them by status; index `gsi3` (`gsi3pk =
//!   EMAIL#<lower-case e-mail>`, `gsi3sk = <created_at>#<id>`, keys only) finds a contact's
//!   (see `page`);
//! - a timer (a held delivery a later event may cancel): `pk = TIMER#<correlation>`,
//!   `sk = <delivery id>`;
//! - a contact's birthday: `pk = CONTACT#<email>`, `sk = BIRTHDAY`, indexed in `gsi2` under
//!   `BIRTHDAY#<MM-DD>` by e-mail.
//!
//! Idempotency follows AWS Lambda Powertools: one conditional PutItem claims a key, and
//! `ReturnValuesOnConditionCheckFailure=ALL_OLD` returns the holder without a second call.
//!
//! A send lease (`SendLeases`) is two attributes of the delivery's item, `lease_holder` and
//! `lease_until` (Unix ms), set by one conditional UpdateItem per delivery. Recording an
//! outcome is a PutItem of the whole item, which has no lease attributes: the lease goes in
//! the same write.

use crate::domain::delivery::{Attempt, DeliveryId, DeliveryRecord, DeliveryStatus, Prepared};
use crate::domain::event::EventId;
use crate::domain::idempotency::{Begin, EventRecord, RecordStatus};
use crate::domain::retention::Retention;
use crate::pipeline::dispatch::target_of;
use crate::ports::clock::Clock;
use crate::ports::store::{DeliveryCursor, DeliveryPage};
use crate::ports::{
    ContactStore, DeliveryFilter, DeliveryStore, EventStore, SendLeases, StoreError, TimerStore,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValuesOnConditionCheckFailure,
};
use aws_sdk_dynamodb::Client;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

mod page;

/// The index that finds an event's deliveries.
pub const BY_EVENT_INDEX: &str = "gsi1";
/// The index that lists deliveries by status.
pub const BY_STATUS_INDEX: &str = "gsi2";
/// The index that finds a contact's deliveries by e-mail.
pub const BY_EMAIL_INDEX: &str = "gsi3";
/// BatchGetItem takes at most this many keys.
const BATCH_GET_LIMIT: usize = 100;
/// How often unprocessed keys of a BatchGetItem are asked for again.
const BATCH_GET_RETRIES: u32 = 5;

/// How long a timer stays after it was due (it is only needed until then).
const TIMER_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB store.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// The time a delivery's TTL counts from.
    clock: Arc<dyn Clock>,
    retention: Retention,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .field("retention", &self.retention)
            .finish()
    }
}

fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(format!("DynamoDB: {}", DisplayErrorContext(&e)))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn event_pk(id: &str) -> String {
    format!("EVENT#{id}")
}

fn delivery_pk(id: &str) -> String {
    format!("DELIVERY#{id}")
}

fn timer_pk(correlation: &str) -> String {
    format!("TIMER#{correlation}")
}

fn birthday_pk(month: u32, day: u32) -> String {
    format!("BIRTHDAY#{month:02}-{day:02}")
}

fn is_condition_failure<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

fn status_pk(status: DeliveryStatus) -> String {
    format!("DSTATUS#{}", status.as_str())
}

fn email_pk(email: &str) -> String {
    format!("EMAIL#{email}")
}

/// The sort key of a delivery in `gsi2` and `gsi3`: by creation, then id, as text.
fn created_sk(created_at: i64, id: &str) -> String {
    format!("{created_at:015}#{id}")
}

/// Where a query goes on: its last evaluated key, when there is more to read.
fn more(last_evaluated_key: Option<Item>) -> Option<Item> {
    last_evaluated_key.filter(|k| !k.is_empty())
}

/// The ids of the deliveries a keys-only index found.
fn delivery_ids(keys: &[Item]) -> Vec<DeliveryId> {
    keys.iter()
        .filter_map(|k| match k.get("pk") {
            Some(AttributeValue::S(pk)) => {
                pk.strip_prefix("DELIVERY#").map(DeliveryId::from_stored)
            }
            _ => None,
        })
        .collect()
}

/// Sorts deliveries the way every store returns an event's deliveries.
fn by_event_order(a: &DeliveryRecord, b: &DeliveryRecord) -> std::cmp::Ordering {
    (a.created_at, a.chain_depth, &a.rule, a.action_index).cmp(&(
        b.created_at,
        b.chain_depth,
        &b.rule,
        b.action_index,
    ))
}

struct Reader<'a> {
    item: &'a Item,
    what: &'static str,
}

impl Reader<'_> {
    fn corrupt(&self, field: &str) -> StoreError {
        StoreError::Corrupt(format!("{}: `{field}` is missing or malformed", self.what))
    }

    fn opt_s(&self, field: &str) -> Option<String> {
        match self.item.get(field) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        }
    }

    fn s(&self, field: &str) -> Result<String, StoreError> {
        self.opt_s(field).ok_or_else(|| self.corrupt(field))
    }

    fn opt_n(&self, field: &str) -> Result<Option<i64>, StoreError> {
        match self.item.get(field) {
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| self.corrupt(field)),
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(_) => Err(self.corrupt(field)),
        }
    }

    fn n(&self, field: &str) -> Result<i64, StoreError> {
        self.opt_n(field)?.ok_or_else(|| self.corrupt(field))
    }
}

fn event_to_item(r: &EventRecord) -> Item {
    HashMap::from([
        ("pk".into(), s(event_pk(r.id.as_str()))),
        ("sk".into(), s("EVENT")),
        ("id".into(), s(r.id.as_str())),
        ("type".into(), s(&r.kind)),
        ("payload_hash".into(), s(&r.payload_hash)),
        ("event".into(), s(r.event.to_string())),
        ("received_at".into(), n(r.received_at)),
        ("status".into(), s(r.status.as_str())),
        ("in_progress_until".into(), n(r.in_progress_until)),
        ("expires_at".into(), n(r.expires_at)),
    ])
}

fn event_from_item(item: &Item) -> Result<EventRecord, StoreError> {
    let r = Reader {
        item,
        what: "an event record",
    };
    let status = r.s("status")?;
    Ok(EventRecord {
        id: EventId::from_stored(r.s("id")?),
        kind: r.s("type")?,
        payload_hash: r.s("payload_hash")?,
        event: serde_json::from_str(&r.s("event")?).map_err(|_| r.corrupt("event"))?,
        received_at: r.n("received_at")?,
        status: RecordStatus::parse(&status).ok_or_else(|| r.corrupt("status"))?,
        in_progress_until: r.n("in_progress_until")?,
        expires_at: r.n("expires_at")?,
    })
}

/// A delivery's item; `expires_at` (Unix seconds) is its TTL, none while it has work left.
fn delivery_to_item(d: &DeliveryRecord, expires_at: Option<i64>) -> Item {
    let mut item: Item = HashMap::from([
        ("pk".into(), s(delivery_pk(d.id.as_str()))),
        ("sk".into(), s("DELIVERY")),
        ("id".into(), s(d.id.as_str())),
        ("event_id".into(), s(d.event_id.as_str())),
        ("rule".into(), s(&d.rule)),
        ("action".into(), s(&d.action)),
        ("action_index".into(), n(d.action_index)),
        ("status".into(), s(d.status.as_str())),
        ("attempts".into(), n(d.attempts)),
        ("created_at".into(), n(d.created_at)),
        ("chain_depth".into(), n(d.chain_depth)),
        ("gsi1pk".into(), s(event_pk(d.event_id.as_str()))),
        (
            "gsi1sk".into(),
            s(format!(
                "DELIVERY#{:015}#{:05}#{}#{:05}",
                d.created_at, d.chain_depth, d.rule, d.action_index
            )),
        ),
        ("gsi2pk".into(), s(status_pk(d.status))),
        ("gsi2sk".into(), s(created_sk(d.created_at, d.id.as_str()))),
    ]);
    let mut opt = |k: &str, v: Option<AttributeValue>| {
        if let Some(v) = v {
            item.insert(k.into(), v);
        }
    };
    opt("last_error", d.last_error.as_deref().map(s));
    opt("last_response", d.last_response.as_deref().map(s));
    opt("sent_at", d.sent_at.as_deref().map(s));
    opt("next_attempt_at", d.next_attempt_at.map(n));
    opt("expires_at", expires_at.map(n));
    opt(
        "request",
        d.request
            .as_ref()
            .and_then(|p| serde_json::to_string(p).ok())
            .map(s),
    );
    add_console_attributes(&mut item, d);
    item
}

/// What the operator's window reads of a delivery: its event type, its contact (and its key
/// in `gsi3`) and its attempt log (as JSON).
fn add_console_attributes(item: &mut Item, d: &DeliveryRecord) {
    if let Some(kind) = &d.event_type {
        item.insert("event_type".into(), s(kind));
    }
    // An index key cannot be empty: a delivery without an address is in no contact's list.
    if let Some(email) = d.email.as_deref().filter(|e| !e.is_empty()) {
        item.insert("email".into(), s(email));
        item.insert("gsi3pk".into(), s(email_pk(email)));
        item.insert("gsi3sk".into(), s(created_sk(d.created_at, d.id.as_str())));
    }
    if !d.attempt_log.is_empty() {
        if let Ok(log) = serde_json::to_string(&d.attempt_log) {
            item.insert("attempt_log".into(), s(log));
        }
    }
}

fn delivery_from_item(item: &Item) -> Result<DeliveryRecord, StoreError> {
    let r = Reader {
        item,
        what: "a delivery record",
    };
    let status = r.s("status")?;
    let request = match r.opt_s("request") {
        Some(text) => {
            Some(serde_json::from_str::<Prepared>(&text).map_err(|_| r.corrupt("request"))?)
        }
        None => None,
    };
    let attempt_log = match r.opt_s("attempt_log") {
        Some(text) => {
            serde_json::from_str::<Vec<Attempt>>(&text).map_err(|_| r.corrupt("attempt_log"))?
        }
        None => Vec::new(),
    };
    Ok(DeliveryRecord {
        id: DeliveryId::from_stored(r.s("id")?),
        event_id: EventId::from_stored(r.s("event_id")?),
        rule: r.s("rule")?,
        action: r.s("action")?,
        action_index: r.n("action_index")? as usize,
        status: DeliveryStatus::parse(&status).ok_or_else(|| r.corrupt("status"))?,
        attempts: r.n("attempts")? as u32,
        last_error: r.opt_s("last_error"),
        last_response: r.opt_s("last_response"),
        sent_at: r.opt_s("sent_at"),
        next_attempt_at: r.opt_n("next_attempt_at")?,
        request,
        created_at: r.n("created_at")?,
        chain_depth: r.n("chain_depth")? as u32,
        email: r.opt_s("email"),
        event_type: r.opt_s("event_type"),
        attempt_log,
    })
}

impl DynamoStore {
    /// Puts each delivery unless its id is stored; says, per record, whether it was stored
    /// now (false: stored by an earlier render of the same event, and left as it is).
    async fn put_new(&self, records: &[DeliveryRecord]) -> Result<Vec<bool>, StoreError> {
        let mut fresh = Vec::with_capacity(records.len());
        for r in records {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(self.item_of(r)))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match result {
                Ok(_) => fresh.push(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                {
                    fresh.push(false)
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(fresh)
    }

    /// A store on `table`, keeping records for the default windows.
    pub fn new(client: Client, table: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            table: table.into(),
            clock,
            retention: Retention::default(),
        }
    }

    /// Keeps finished deliveries for these windows (the config's `retention:`).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The write that cancels the delivery `id` while it is `scheduled` and `condition`
    /// holds (its values are the caller's to add), with `why` as its last error.
    fn cancel_write(
        &self,
        id: &str,
        why: &str,
        condition: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(delivery_pk(id), "DELIVERY")))
            .update_expression(
                "SET #status = :cancelled, gsi2pk = :gsi2pk, last_error = :why, expires_at = :expires REMOVE next_attempt_at",
            )
            .condition_expression(format!("#status = :scheduled AND {condition}"))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":cancelled", s(DeliveryStatus::Cancelled.as_str()))
            .expression_attribute_values(":gsi2pk", s(status_pk(DeliveryStatus::Cancelled)))
            .expression_attribute_values(":why", s(why))
            .expression_attribute_values(
                ":expires",
                n(self.expires_at(DeliveryStatus::Cancelled).unwrap_or(0)),
            )
            .expression_attribute_values(":scheduled", s(DeliveryStatus::Scheduled.as_str()))
    }

    /// When a delivery written now in `status` may go (Unix seconds, DynamoDB's TTL unit).
    fn expires_at(&self, status: DeliveryStatus) -> Option<i64> {
        self.retention
            .delivery_expires_at(status, self.clock.now_ms())
            .map(|ms| ms.div_euclid(1000))
    }

    /// A delivery's item as written now.
    fn item_of(&self, d: &DeliveryRecord) -> Item {
        delivery_to_item(d, self.expires_at(d.status))
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(pk: String, sk: &str) -> Item {
        HashMap::from([("pk".into(), s(pk)), ("sk".into(), s(sk))])
    }

    /// Pages through a query, collecting its items.
    async fn query_all(
        &self,
        index: &str,
        key_condition: &str,
        values: Vec<(&str, AttributeValue)>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(key_condition)
                .set_exclusive_start_key(start.take());
            for (k, v) in &values {
                q = q.expression_attribute_values(*k, v.clone());
            }
            let page = q.send().await.map_err(unavailable)?;
            out.extend(page.items.unwrap_or_default());
            if limit > 0 && out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
            start = more(page.last_evaluated_key);
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Lists the deliveries in one status, oldest first.
    async fn list_status(
        &self,
        status: DeliveryStatus,
        since_ms: Option<i64>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut values = vec![(":pk", s(status_pk(status)))];
        let condition = match since_ms {
            Some(since) => {
                values.push((":since", s(format!("{:015}", since.max(0)))));
                "gsi2pk = :pk AND gsi2sk >= :since"
            }
            None => "gsi2pk = :pk",
        };
        self.query_all(BY_STATUS_INDEX, condition, values, 0)
            .await?
            .iter()
            .map(delivery_from_item)
            // The index is eventually consistent: a record that changed status since may
            // still be listed under its old one.
            .filter(|r| !matches!(r, Ok(d) if d.status != status))
            .collect()
    }
}

#[async_trait]
impl EventStore for DynamoStore {
    async fn begin(&self, record: &EventRecord, now_ms: i64) -> Result<Begin, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_to_item(record)))
            .condition_expression(
                "attribute_not_exists(pk) OR expires_at < :now OR (#status = :inprogress AND in_progress_until < :now_ms)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", n(now_ms.div_euclid(1000)))
            .expression_attribute_values(":now_ms", n(now_ms))
            .expression_attribute_values(":inprogress", s(RecordStatus::InProgress.as_str()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Begin::Started),
            Err(e) => e,
        };
        let held = match err.as_service_error() {
            Some(se) if se.is_conditional_check_failed_exception() => match se {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                    c.item().cloned()
                }
                _ => None,
            },
            _ => return Err(unavailable(err)),
        };
        let held = match held {
            Some(item) => event_from_item(&item)?,
            // An emulator that does not return the old item: read it.
            None => match self.get(record.id.as_str()).await? {
                Some(r) => r,
                None => {
                    return Err(StoreError::Unavailable(
                        "DynamoDB refused the claim but the record is gone; retry".into(),
                    ))
                }
            },
        };
        Ok(Begin::Existing(held))
    }

    async fn complete(&self, id: &EventId) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(event_pk(id.as_str()), "EVENT")))
            .update_expression("SET #status = :completed")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":completed", s(RecordStatus::Completed.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn release(&self, id: &EventId) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(event_pk(id.as_str()), "EVENT")))
            .condition_expression("#status = :inprogress")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":inprogress", s(RecordStatus::InProgress.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already completed (or gone): nothing to free.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(event_pk(id), "EVENT")))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item.as_ref().map(event_from_item).transpose()
    }
}

#[async_trait]
impl DeliveryStore for DynamoStore {
    async fn insert_new(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        self.put_new(records).await.map(|_| ())
    }

    async fn insert_new_stored(
        &self,
        records: &[DeliveryRecord],
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let fresh = self.put_new(records).await?;
        // One per id, the first given (a later copy's put found it stored just now).
        let mut seen = HashSet::new();
        let first: Vec<(&DeliveryRecord, bool)> = records
            .iter()
            .zip(fresh)
            .filter(|(r, _)| seen.insert(r.id.as_str()))
            .collect();
        // Only the ids stored before are read: the others are stored as given.
        let before: Vec<DeliveryId> = first
            .iter()
            .filter(|(_, fresh)| !fresh)
            .map(|(r, _)| r.id.clone())
            .collect();
        let mut read: HashMap<String, DeliveryRecord> = if before.is_empty() {
            HashMap::new()
        } else {
            self.get_many(&before)
                .await?
                .into_iter()
                .map(|r| (r.id.as_str().to_string(), r))
                .collect()
        };
        Ok(first
            .into_iter()
            .filter_map(|(r, fresh)| {
                if fresh {
                    Some(r.clone())
                } else {
                    read.remove(r.id.as_str())
                }
            })
            .collect())
    }

    async fn get_many(&self, ids: &[DeliveryId]) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut wanted: Vec<&DeliveryId> = Vec::with_capacity(ids.len());
        for id in ids {
            // BatchGetItem refuses a request that names a key twice.
            if !wanted.contains(&id) {
                wanted.push(id);
            }
        }
        let mut found: HashMap<String, DeliveryRecord> = HashMap::new();
        for chunk in wanted.chunks(BATCH_GET_LIMIT) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| Self::key(delivery_pk(id.as_str()), "DELIVERY"))
                .collect();
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut tries = 0;
            loop {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(unavailable)?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    let d = delivery_from_item(&item)?;
                    found.insert(d.id.as_str().to_string(), d);
                }
                match out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    Some(rest) if !rest.keys.is_empty() => {
                        tries += 1;
                        if tries > BATCH_GET_RETRIES {
                            return Err(StoreError::Unavailable(
                                "DynamoDB kept some keys of a batch read unprocessed".into(),
                            ));
                        }
                        tokio::time::sleep(Duration::from_millis(50 << tries)).await;
                        request = rest;
                    }
                    _ => break,
                }
            }
        }
        Ok(wanted
            .into_iter()
            .filter_map(|id| found.remove(id.as_str()))
            .collect())
    }

    async fn save(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        // The whole item is replaced, and `delivery_to_item` writes no lease: a send lease is
        // released by the write that records the outcome.
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.item_of(record)));
        put = if record.status == DeliveryStatus::Sent {
            put.condition_expression("attribute_exists(pk)")
        } else {
            // A delivery stored as sent stays sent: a late or concurrent writer never turns
            // it back into one that would be sent again.
            put.condition_expression("attribute_exists(pk) AND #status <> :sent")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":sent", s(DeliveryStatus::Sent.as_str()))
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                let target = record
                    .request
                    .as_ref()
                    .map_or_else(|| "none".into(), target_of);
                tracing::warn!(delivery = %record.id, event = %record.event_id, rule = %record.rule, target = %target, status = record.status.as_str(), "not saved: the delivery is already sent (or unknown)");
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// One conditional PutItem per delivery, all in flight at once: BatchWriteItem cannot
    /// carry the condition that keeps a sent delivery sent, and a transaction costs twice
    /// the write units and fails whole. A delivery named twice is written in order instead.
    async fn save_many(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        let mut ids = std::collections::HashSet::new();
        if records.len() < 2 || !records.iter().all(|r| ids.insert(&r.id)) {
            for r in records {
                self.save(r).await?;
            }
            return Ok(());
        }
        let mut writes = tokio::task::JoinSet::new();
        for r in records {
            let (store, record) = (self.clone(), r.clone());
            writes.spawn(async move { store.save(&record).await });
        }
        let mut failure = None;
        while let Some(joined) = writes.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(e) => failure = Some(StoreError::Unavailable(format!("a delivery write: {e}"))),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn cancel_scheduled(
        &self,
        id: &DeliveryId,
        now_ms: i64,
        why: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let result = self
            .cancel_write(id.as_str(), why, "next_attempt_at > :now")
            .expression_attribute_values(":now", n(now_ms))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => out.attributes.as_ref().map(delivery_from_item).transpose(),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn for_event(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        let keys = self
            .query_all(
                BY_EVENT_INDEX,
                "gsi1pk = :pk",
                vec![(":pk", s(event_pk(event_id)))],
                0,
            )
            .await?;
        let ids = delivery_ids(&keys);
        // The index only finds them; their state is read consistently from the table.
        let mut out = self.get_many(&ids).await?;
        out.sort_by(by_event_order);
        Ok(out)
    }

    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut out = Vec::new();
        if let Some(event_id) = &filter.event_id {
            // An event's few deliveries, found in `gsi1`.
            out = self.for_event(event_id).await?;
        } else {
            let statuses: Vec<DeliveryStatus> = match filter.status {
                Some(st) => vec![st],
                None => DeliveryStatus::ALL.to_vec(),
            };
            for st in statuses {
                out.extend(self.list_status(st, filter.since_ms).await?);
            }
        }
        out.retain(|d| filter.matches(d));
        out.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        if filter.limit > 0 {
            out.truncate(filter.limit);
        }
        Ok(out)
    }

    async fn page(
        &self,
        filter: &DeliveryFilter,
        after: Option<&DeliveryCursor>,
    ) -> Result<DeliveryPage, StoreError> {
        self.newest_page(filter, after).await
    }

    async fn count_by_status(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(DeliveryStatus, u64)>, StoreError> {
        let mut out = Vec::new();
        for status in DeliveryStatus::ALL {
            let count = self.count_status(status, since_ms).await?;
            if count > 0 {
                out.push((status, count));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl TimerStore for DynamoStore {
    async fn hold(
        &self,
        correlation: &str,
        deliveries: &[DeliveryId],
        due_ms: i64,
    ) -> Result<(), StoreError> {
        for id in deliveries {
            let item: Item = HashMap::from([
                ("pk".into(), s(timer_pk(correlation))),
                ("sk".into(), s(id.as_str())),
                ("delivery".into(), s(id.as_str())),
                ("due_at".into(), n(due_ms)),
                (
                    "expires_at".into(),
                    n(due_ms / 1000 + TIMER_RETENTION.as_secs() as i64),
                ),
            ]);
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn cancel(
        &self,
        correlation: &str,
        except_event: &str,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        let mut held = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(timer_pk(correlation)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items.unwrap_or_default() {
                if let Some(AttributeValue::S(id)) = item.get("sk") {
                    held.push(id.clone());
                }
            }
            start = more(page.last_evaluated_key);
            if start.is_none() {
                break;
            }
        }
        let mut cancelled = Vec::new();
        for id in held {
            // Only a delivery still waiting, and not one of the cancelling event's own.
            let result = self
                .cancel_write(&id, "cancelled by a later event", "event_id <> :except")
                .expression_attribute_values(":except", s(except_event))
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(e) if is_condition_failure(&e) => continue,
                Err(e) => return Err(unavailable(e)),
            }
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(timer_pk(correlation), &id)))
                .send()
                .await
                .map_err(unavailable)?;
            cancelled.push(DeliveryId::from_stored(id));
        }
        Ok(cancelled)
    }
}

#[async_trait]
impl ContactStore for DynamoStore {
    async fn remember_birthday(
        &self,
        email: &str,
        birthday: chrono::NaiveDate,
    ) -> Result<(), StoreError> {
        use chrono::Datelike;
        let email = email.to_lowercase();
        let item: Item = HashMap::from([
            ("pk".into(), s(format!("CONTACT#{email}"))),
            ("sk".into(), s("BIRTHDAY")),
            ("email".into(), s(&email)),
            (
                "birthday".into(),
                s(birthday.format("%Y-%m-%d").to_string()),
            ),
            (
                "gsi2pk".into(),
                s(birthday_pk(birthday.month(), birthday.day())),
            ),
            ("gsi2sk".into(), s(&email)),
        ]);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn birthdays_on(
        &self,
        month: u32,
        day: u32,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, chrono::NaiveDate)>, StoreError> {
        let mut values = vec![(":pk", s(birthday_pk(month, day)))];
        let condition = match after {
            Some(a) => {
                values.push((":after", s(a)));
                "gsi2pk = :pk AND gsi2sk > :after"
            }
            None => "gsi2pk = :pk",
        };
        self.query_all(BY_STATUS_INDEX, condition, values, limit)
            .await?
            .iter()
            .map(|item| {
                let r = Reader {
                    item,
                    what: "a birthday",
                };
                let email = r.s("email")?;
                let date = chrono::NaiveDate::parse_from_str(&r.s("birthday")?, "%Y-%m-%d")
                    .map_err(|_| r.corrupt("birthday"))?;
                Ok((email, date))
            })
            .collect()
    }
}

/// Takes one delivery's lease: true when taken, false when it is sent, unknown, or leased
/// to another holder until after `now_ms`.
async fn take_lease(
    client: Client,
    table: String,
    id: DeliveryId,
    holder: String,
    now_ms: i64,
    until_ms: i64,
) -> Result<bool, StoreError> {
    let result = client
        .update_item()
        .table_name(table)
        .set_key(Some(DynamoStore::key(delivery_pk(id.as_str()), "DELIVERY")))
        .update_expression("SET lease_holder = :holder, lease_until = :until")
        .condition_expression(
            "attribute_exists(pk) AND #status <> :sent AND (attribute_not_exists(lease_until) OR lease_until <= :now OR lease_holder = :holder)",
        )
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":sent", s(DeliveryStatus::Sent.as_str()))
        .expression_attribute_values(":holder", s(holder))
        .expression_attribute_values(":until", n(until_ms))
        .expression_attribute_values(":now", n(now_ms))
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(unavailable(e)),
    }
}

/// One conditional UpdateItem per delivery, all in flight at once, rather than one
/// TransactWriteItems: a transaction fails whole when one delivery is leased elsewhere, and
/// what is wanted is the subset that is free; the writes are independent, so a batch of 100
/// still takes about one round trip.
#[async_trait]
impl SendLeases for DynamoStore {
    async fn take(
        &self,
        ids: &[DeliveryId],
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        let mut writes = tokio::task::JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            let write = take_lease(
                self.client.clone(),
                self.table.clone(),
                id.clone(),
                holder.to_string(),
                now_ms,
                until_ms,
            );
            writes.spawn(async move { (i, write.await) });
        }
        let mut taken = Vec::with_capacity(ids.len());
        let mut failure = None;
        while let Some(joined) = writes.join_next().await {
            match joined {
                Ok((i, Ok(true))) => taken.push(i),
                Ok((_, Ok(false))) => {}
                Ok((_, Err(e))) => failure = Some(e),
                Err(e) => failure = Some(StoreError::Unavailable(format!("a lease write: {e}"))),
            }
        }
        taken.sort_unstable();
        let taken: Vec<DeliveryId> = taken.into_iter().map(|i| ids[i].clone()).collect();
        if let Some(e) = failure {
            // Nothing is sent on a partial answer; what was taken is given back now rather
            // than held until it runs out.
            if let Err(again) = SendLeases::release(self, &taken, holder).await {
                tracing::warn!(error = %again, "could not give back leases; they run out on their own");
            }
            return Err(e);
        }
        Ok(taken)
    }

    async fn release(&self, ids: &[DeliveryId], holder: &str) -> Result<(), StoreError> {
        for id in ids {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(delivery_pk(id.as_str()), "DELIVERY")))
                .update_expression("REMOVE lease_holder, lease_until")
                .condition_expression("lease_holder = :holder")
                .expression_attribute_values(":holder", s(holder))
                .send()
                .await;
            match result {
                // Released already (an outcome was recorded), or taken over since: not ours.
                Ok(_) => {}
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn delivery() -> DeliveryRecord {
        DeliveryRecord {
            id: DeliveryId::from_stored("dlv_1"),
            event_id: EventId::from_stored("evt-1"),
            rule: "welcome".into(),
            action: "trigger_event".into(),
            action_index: 1,
            status: DeliveryStatus::Retrying,
            attempts: 2,
            last_error: Some("the target answered 503".into()),
            last_response: None,
            sent_at: None,
            next_attempt_at: Some(1_800_000_000_000),
            request: Some(Prepared::Http {
                method: "POST".into(),
                url: "https://example.com/hook".into(),
                headers: vec![("X-A".into(), "1".into())],
                body: Some("{}".into()),
                auth: None,
            }),
            created_at: 1_700_000_000_123,
            chain_depth: 0,
            email: None,
            event_type: None,
            attempt_log: Vec::new(),
        }
    }

    #[test]
    fn deliveries_round_trip_through_items() {
        let d = delivery();
        let item = delivery_to_item(&d, None);
        assert_eq!(delivery_from_item(&item).unwrap(), d);
        assert_eq!(item["gsi2pk"], s("DSTATUS#retrying"));
        assert!(
            !item.contains_key("sent_at"),
            "absent fields are not stored"
        );
    }

    #[test]
    fn a_delivery_expires_after_its_window_from_when_it_finished_and_never_while_it_waits() {
        let clock = Arc::new(crate::ports::clock::ManualClock::at_ms(1_800_000_000_500));
        let sdk = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .build();
        let store =
            DynamoStore::new(Client::from_conf(sdk), "relay", clock).with_retention(Retention {
                events: Duration::from_secs(3600),
                deliveries: Duration::from_secs(7200),
                dead: Duration::from_secs(86_400),
            });
        let mut d = delivery();
        for waiting in [
            DeliveryStatus::Pending,
            DeliveryStatus::Retrying,
            DeliveryStatus::Scheduled,
        ] {
            d.status = waiting;
            assert!(!store.item_of(&d).contains_key("expires_at"), "{waiting:?}");
        }
        d.status = DeliveryStatus::Sent;
        assert_eq!(store.item_of(&d)["expires_at"], n(1_800_000_000 + 7200));
        d.status = DeliveryStatus::Dead;
        assert_eq!(store.item_of(&d)["expires_at"], n(1_800_000_000 + 86_400));
    }

    #[test]
    fn events_round_trip_through_items() {
        let r = EventRecord {
            id: EventId::from_stored("evt-1"),
            kind: "contact.created".into(),
            payload_hash: "abc".into(),
            event: json!({"id": "evt-1", "data": {"n": 1}}),
            received_at: 1,
            status: RecordStatus::InProgress,
            in_progress_until: 2,
            expires_at: 3,
        };
        assert_eq!(event_from_item(&event_to_item(&r)).unwrap(), r);
    }

    #[test]
    fn a_damaged_item_is_reported_not_guessed() {
        let mut item = delivery_to_item(&delivery(), None);
        item.insert("status".into(), s("shipped"));
        let err = delivery_from_item(&item).unwrap_err();
        assert!(err.to_string().contains("`status`"), "{err}");
    }
}
