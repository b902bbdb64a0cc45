//! Newest-first pages of deliveries and counts by status, read from the indexes.
//!
//! A page is read from the partitions a filter names: the contact's in `gsi3` when it names
//! an e-mail (the common question, and the narrowest), its status's in `gsi2` when it names
//! one, and otherwise every status's partition of `gsi2`, merged. Each partition is read
//! newest first (`ScanIndexForward=false`) below the cursor, the other fields of the filter
//! applied to each delivery, until it gives one more than the page (or runs out); the union
//! then holds the page and tells whether another follows. A table-wide index keyed by time
//! alone would be one hot partition for every write; eight status partitions are read
//! instead, at most `8 × (page + 1)` deliveries. A filter naming an event reads that
//! event's few deliveries from `gsi1` instead.

use super::{
    created_sk, delivery_from_item, delivery_ids, email_pk, more, s, status_pk, unavailable,
    DynamoStore, Item, BY_EMAIL_INDEX, BY_STATUS_INDEX,
};
use crate::domain::delivery::{DeliveryRecord, DeliveryStatus};
use crate::ports::store::{DeliveryCursor, DeliveryPage};
use crate::ports::{DeliveryFilter, DeliveryStore, StoreError};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use std::collections::HashSet;

/// The most keys one query of a page asks for.
const QUERY_LIMIT: usize = 1000;

/// One partition of an index, read newest first.
struct Partition {
    index: &'static str,
    pk_name: &'static str,
    sk_name: &'static str,
    pk: String,
    /// The index holds only keys: the deliveries are then read from the table, consistently.
    keys_only: bool,
}

impl Partition {
    fn of_status(status: DeliveryStatus) -> Self {
        Self {
            index: BY_STATUS_INDEX,
            pk_name: "gsi2pk",
            sk_name: "gsi2sk",
            pk: status_pk(status),
            keys_only: false,
        }
    }

    fn of_email(email: &str) -> Self {
        Self {
            index: BY_EMAIL_INDEX,
            pk_name: "gsi3pk",
            sk_name: "gsi3sk",
            pk: email_pk(email),
            keys_only: true,
        }
    }
}

/// The partitions a filter's page is read from.
fn partitions_for(f: &DeliveryFilter) -> Vec<Partition> {
    if let Some(email) = f.email_key() {
        return vec![Partition::of_email(&email)];
    }
    match f.status {
        Some(status) => vec![Partition::of_status(status)],
        None => DeliveryStatus::ALL
            .into_iter()
            .map(Partition::of_status)
            .collect(),
    }
}

/// The sort keys a page may come from, both bounds inclusive (each delivery is checked
/// against the filter and the cursor again); `None` when the range is empty.
type SkRange = (Option<String>, Option<String>);

fn sk_range(f: &DeliveryFilter, after: Option<&DeliveryCursor>) -> Option<SkRange> {
    let lo = f.since_ms.map(|t| format!("{:015}", t.max(0)));
    let until = f.until_ms.map(|t| format!("{:015}", t.max(0)));
    let cursor = after.map(|c| created_sk(c.created_at, c.id.as_str()));
    let hi = match (until, cursor) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match (&lo, &hi) {
        (Some(l), Some(h)) if l > h => None,
        _ => Some((lo, hi)),
    }
}

/// The key condition of a partition's query over `range`, with its values.
fn key_condition(part: &Partition, range: &SkRange) -> (String, Vec<(&'static str, String)>) {
    let sk = part.sk_name;
    let mut values = vec![(":pk", part.pk.clone())];
    let bound = match range {
        (Some(lo), Some(hi)) => {
            values.extend([(":lo", lo.clone()), (":hi", hi.clone())]);
            format!(" AND {sk} BETWEEN :lo AND :hi")
        }
        (Some(lo), None) => {
            values.push((":lo", lo.clone()));
            format!(" AND {sk} >= :lo")
        }
        (None, Some(hi)) => {
            values.push((":hi", hi.clone()));
            format!(" AND {sk} <= :hi")
        }
        (None, None) => String::new(),
    };
    (format!("{} = :pk{bound}", part.pk_name), values)
}

impl DynamoStore {
    /// One page of the deliveries matching `f`, newest first, after `after`.
    pub(super) async fn newest_page(
        &self,
        f: &DeliveryFilter,
        after: Option<&DeliveryCursor>,
    ) -> Result<DeliveryPage, StoreError> {
        let size = f.page_size();
        if let Some(event_id) = &f.event_id {
            // One event's deliveries are few (its rules' actions and their chains), and
            // `gsi1` finds them all; the rest of the filter and the cursor apply after.
            let mut found: Vec<DeliveryRecord> = self
                .for_event(event_id)
                .await?
                .into_iter()
                .filter(|d| f.matches(d) && after.is_none_or(|c| c.precedes(d)))
                .collect();
            found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
            return Ok(DeliveryPage::collect(found, size));
        }
        let Some(range) = sk_range(f, after) else {
            return Ok(DeliveryPage::default());
        };
        let mut found = Vec::new();
        for part in partitions_for(f) {
            found.extend(self.newest_of(&part, f, after, &range, size + 1).await?);
        }
        found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        // An index is eventually consistent: a delivery that just changed status may still
        // be listed under its old one too.
        let mut seen = HashSet::new();
        found.retain(|d| seen.insert(d.id.clone()));
        Ok(DeliveryPage::collect(found, size))
    }

    /// Up to `want` deliveries of one partition that match the filter and follow the cursor,
    /// newest first.
    async fn newest_of(
        &self,
        part: &Partition,
        f: &DeliveryFilter,
        after: Option<&DeliveryCursor>,
        range: &SkRange,
        want: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self.query_newest(part, range, start.take(), want).await?;
            let records = self
                .records_of(part, page.items.unwrap_or_default())
                .await?;
            out.extend(
                records
                    .into_iter()
                    .filter(|d| f.matches(d) && after.is_none_or(|c| c.precedes(d))),
            );
            start = more(page.last_evaluated_key);
            if out.len() >= want || start.is_none() {
                out.truncate(want);
                return Ok(out);
            }
        }
    }

    /// One query of a partition, newest first.
    async fn query_newest(
        &self,
        part: &Partition,
        range: &SkRange,
        start: Option<Item>,
        want: usize,
    ) -> Result<QueryOutput, StoreError> {
        let (condition, values) = key_condition(part, range);
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(part.index)
            .key_condition_expression(condition)
            .scan_index_forward(false)
            .limit(want.clamp(1, QUERY_LIMIT) as i32)
            .set_exclusive_start_key(start);
        for (k, v) in values {
            q = q.expression_attribute_values(k, s(v));
        }
        q.send().await.map_err(unavailable)
    }

    /// The deliveries a query's items stand for, in the items' order.
    async fn records_of(
        &self,
        part: &Partition,
        items: Vec<Item>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        if part.keys_only {
            return self.get_many(&delivery_ids(&items)).await;
        }
        items.iter().map(delivery_from_item).collect()
    }

    /// How many deliveries in `status` were created at or after `since_ms`: a count of the
    /// status's partition of `gsi2`, which reads no item out.
    pub(super) async fn count_status(
        &self,
        status: DeliveryStatus,
        since_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut total = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_STATUS_INDEX)
                .key_condition_expression("gsi2pk = :pk AND gsi2sk >= :since")
                .expression_attribute_values(":pk", s(status_pk(status)))
                .expression_attribute_values(
                    ":since",
                    AttributeValue::S(format!("{:015}", since_ms.max(0))),
                )
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            total += page.count.max(0) as u64;
            start = more(page.last_evaluated_key);
            if start.is_none() {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::DeliveryId;

    #[test]
    fn the_range_is_bounded_by_since_until_and_the_cursor() {
        let f = DeliveryFilter {
            since_ms: Some(1_000),
            until_ms: Some(9_000),
            ..DeliveryFilter::default()
        };
        let cursor = DeliveryCursor {
            created_at: 5_000,
            id: DeliveryId::from_stored("dlv_b"),
        };
        let (lo, hi) = sk_range(&f, Some(&cursor)).unwrap();
        assert_eq!(lo.as_deref(), Some("000000000001000"));
        assert_eq!(hi.as_deref(), Some("000000000005000#dlv_b"));
        let empty = DeliveryFilter {
            since_ms: Some(9_000),
            until_ms: Some(1_000),
            ..DeliveryFilter::default()
        };
        assert_eq!(sk_range(&empty, None), None);
    }

    #[test]
    fn an_email_is_read_from_its_own_partition_and_no_filter_from_every_status() {
        let by_email = DeliveryFilter {
            email: Some(" Jana@Example.com".into()),
            status: Some(DeliveryStatus::Dead),
            ..DeliveryFilter::default()
        };
        let parts = partitions_for(&by_email);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            (parts[0].index, parts[0].pk.as_str()),
            ("gsi3", "EMAIL#jana@example.com")
        );
        assert_eq!(
            partitions_for(&DeliveryFilter::default()).len(),
            DeliveryStatus::ALL.len()
        );
        let (condition, _) = key_condition(&parts[0], &(None, Some("x".into())));
        assert_eq!(condition, "gsi3pk = :pk AND gsi3sk <= :hi");
    }
}
