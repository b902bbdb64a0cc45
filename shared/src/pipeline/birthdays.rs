//! Time-driven runs: the daily birthday pass.

use crate::domain::event::{hash_value, EventId, EventType, Submitted};
use crate::pipeline::inbound::{Accepted, Inbound, InboundError};
use crate::ports::{ContactStore, StoreError};
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Contacts read (and events submitted) per page.
pub const BIRTHDAY_PAGE: usize = 500;

/// What a birthday pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BirthdayReport {
    /// Contacts whose birthday it is.
    pub found: usize,
    /// `contact.birthday` events accepted now.
    pub accepted: usize,
    /// Events already sent by an earlier (or overlapping) run.
    pub duplicates: usize,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum BirthdayError {
    /// The contact store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Events could not be accepted.
    #[error(transparent)]
    Inbound(#[from] InboundError),
}

/// The month-days whose contacts celebrate on `date`: 29 February birthdays are
/// celebrated on 28 February in common years.
pub fn celebrating_days(date: NaiveDate) -> Vec<(u32, u32)> {
    let mut days = vec![(date.month(), date.day())];
    if date.month() == 2
        && date.day() == 28
        && NaiveDate::from_ymd_opt(date.year(), 2, 29).is_none()
    {
        days.push((2, 29));
    }
    days
}

/// The idempotency key of a contact's birthday in a year: `birthday:<email>:<year>`, so a
/// re-run or an overlapping run never congratulates twice.
pub fn birthday_event_id(email: &str, year: i32) -> EventId {
    let plain = format!("birthday:{email}:{year}");
    EventId::parse(&plain).unwrap_or_else(|_| {
        // Only for addresses too long for an id: the address's hash stands in for it.
        let h = hex::encode(Sha256::digest(email.as_bytes()));
        EventId::from_stored(format!("birthday:{}:{year}", &h[..40]))
    })
}

/// Emits a `contact.birthday` event for every contact born on `date`'s month and day,
/// page by page.
pub async fn run_birthdays(
    date: NaiveDate,
    contacts: &dyn ContactStore,
    inbound: &Inbound,
    now: DateTime<Utc>,
) -> Result<BirthdayReport, BirthdayError> {
    let mut report = BirthdayReport::default();
    let kind = EventType::parse("contact.birthday").map_err(StoreError::Corrupt)?;
    for (month, day) in celebrating_days(date) {
        let mut after: Option<String> = None;
        loop {
            let page = contacts
                .birthdays_on(month, day, after.as_deref(), BIRTHDAY_PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            report.found += page.len();
            after = page.last().map(|(e, _)| e.clone());
            let subs = page
                .iter()
                .map(|(email, born)| birthday_event(email, *born, date, &kind, now))
                .collect();
            accept_page(inbound, subs, &mut report).await?;
            if page.len() < BIRTHDAY_PAGE {
                break;
            }
        }
    }
    tracing::info!(date = %date.format("%Y-%m-%d"), found = report.found, accepted = report.accepted,
        duplicates = report.duplicates, at = %now.to_rfc3339_opts(SecondsFormat::Secs, true), "birthday run");
    Ok(report)
}

/// The birthday event of one contact born on `born`, celebrated on `date`.
fn birthday_event(
    email: &str,
    born: NaiveDate,
    date: NaiveDate,
    kind: &EventType,
    now: DateTime<Utc>,
) -> Submitted {
    let id = birthday_event_id(email, date.year());
    let mut contact = Map::new();
    contact.insert("email".into(), Value::String(email.to_string()));
    contact.insert(
        "birthday".into(),
        Value::String(born.format("%Y-%m-%d").to_string()),
    );
    let mut data = Map::new();
    data.insert(
        "date".into(),
        Value::String(date.format("%Y-%m-%d").to_string()),
    );
    data.insert("year".into(), json!(date.year()));
    if born.year() > 1800 && born.year() <= date.year() {
        data.insert("age".into(), json!(date.year() - born.year()));
    }
    Submitted {
        payload_hash: hash_value(&json!({"id": id})),
        event: crate::domain::event::Event {
            id,
            kind: kind.clone(),
            occurred_at: now,
            contact,
            data,
        },
    }
}

/// Accepts one page of birthday events. An id someone else used for another event is
/// skipped, not a reason to stop.
async fn accept_page(
    inbound: &Inbound,
    mut subs: Vec<Submitted>,
    report: &mut BirthdayReport,
) -> Result<(), BirthdayError> {
    loop {
        match inbound.accept(subs.clone()).await {
            Ok(outcomes) => {
                for (_, o) in outcomes {
                    match o {
                        Accepted::Accepted => report.accepted += 1,
                        Accepted::Duplicate => report.duplicates += 1,
                        Accepted::Failed => {
                            return Err(StoreError::Unavailable(
                                "the render queue refused birthday events".into(),
                            )
                            .into())
                        }
                    }
                }
                return Ok(());
            }
            Err(InboundError::KeyReused { index, id }) => {
                tracing::warn!(event = %id, "an event with a birthday id but another body exists; skipped");
                subs.remove(index);
                report.duplicates += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leap_day_birthdays_are_celebrated_on_the_28th_in_common_years() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(celebrating_days(d(2027, 2, 28)), vec![(2, 28), (2, 29)]);
        assert_eq!(celebrating_days(d(2028, 2, 28)), vec![(2, 28)]);
        assert_eq!(celebrating_days(d(2028, 2, 29)), vec![(2, 29)]);
        assert_eq!(celebrating_days(d(2027, 3, 1)), vec![(3, 1)]);
    }

    #[test]
    fn birthday_ids_are_per_contact_and_year() {
        assert_eq!(
            birthday_event_id("jan@example.com", 2026).as_str(),
            "birthday:jan@example.com:2026"
        );
        let long = format!("{}@example.com", "x".repeat(190));
        let id = birthday_event_id(&long, 2026);
        assert!(id.as_str().len() <= 200 && id.as_str().ends_with(":2026"));
    }
}
