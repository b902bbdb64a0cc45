//! Deliveries: one rendered, frozen request per matched rule action, and its state.

use crate::domain::event::EventId;
use crate::domain::smartemailing::Endpoint;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;

/// A delivery id: derived from the event, the rule and the action, so a re-render of the
/// same event gives the same ids and the idempotency of sending carries over.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryId(String);

impl DeliveryId {
    /// The id of action `index` of `rule` for `event`.
    pub fn derive(event: &EventId, rule: &str, index: usize) -> Self {
        let mut h = Sha256::new();
        h.update(event.as_str().as_bytes());
        h.update([0]);
        h.update(rule.as_bytes());
        h.update([0]);
        h.update(index.to_string().as_bytes());
        Self(format!("dlv_{}", &hex::encode(h.finalize())[..24]))
    }

    /// Wraps a stored id.
    pub fn from_stored(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a webhook request authenticates; secrets are referenced by name, never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum AuthRef {
    /// HTTP Basic with a password from the named secret.
    Basic {
        /// The user name (rendered).
        username: String,
        /// The secret holding the password.
        password_secret: String,
    },
    /// `Authorization: Bearer` with the named secret.
    Bearer {
        /// The secret holding the token.
        secret: String,
    },
}

/// A rendered request, frozen so a retry sends exactly the same thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Prepared {
    /// One item of a SmartEmailing bulk call.
    SmartEmailing {
        /// The bulk endpoint.
        endpoint: Endpoint,
        /// Batch-level settings; only items with equal groups share a call.
        group: Value,
        /// This delivery's item of the call.
        item: Value,
    },
    /// A request to any HTTP endpoint.
    Http {
        /// The method, upper case.
        method: String,
        /// The full URL.
        url: String,
        /// Headers, in order (no credentials).
        headers: Vec<(String, String)>,
        /// The body, when there is one.
        body: Option<String>,
        /// How to authenticate.
        auth: Option<AuthRef>,
    },
}

impl Prepared {
    /// The key deliveries are coalesced by: equal keys may share one call.
    pub fn bulk_key(&self, own_id: &DeliveryId) -> String {
        match self {
            Prepared::SmartEmailing {
                endpoint, group, ..
            } => {
                format!("se:{}:{}", endpoint.path(), group)
            }
            Prepared::Http { .. } => format!("http:{own_id}"),
        }
    }

    /// The row a SmartEmailing item writes, which no call carries twice: no public client
    /// sends two rows for one contact in a call, and what SmartEmailing does with two is
    /// unknown (it may keep one, and a change is lost). The e-mail address for `/import`
    /// and the send endpoints, e-mail and trigger name for `/trigger-event`, the order code
    /// for `/import-orders`; prefixed with the endpoint. `None` for a webhook, or an item
    /// without one.
    pub fn row_key(&self) -> Option<String> {
        let Prepared::SmartEmailing { endpoint, item, .. } = self else {
            return None;
        };
        let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_string);
        let row = match endpoint {
            Endpoint::TriggerEvent => {
                let (address, name) = self.email().zip(text("name"))?;
                format!("{address}\u{0}{name}")
            }
            Endpoint::ImportOrders => text("eshop_code")?,
            _ => self.email()?,
        };
        Some(format!("{}:{row}", endpoint.path()))
    }

    /// The contact's address a SmartEmailing item names (`emailaddress`, or the recipient's
    /// for the send endpoints), trimmed and lower case: SmartEmailing knows a contact by its
    /// address whatever its case. `None` for a webhook, or an item without one.
    pub fn email(&self) -> Option<String> {
        let Prepared::SmartEmailing { endpoint, item, .. } = self else {
            return None;
        };
        let holder = match endpoint {
            Endpoint::CustomEmails | Endpoint::TransactionalEmails | Endpoint::CustomSms => {
                item.get("recipient")?
            }
            Endpoint::TriggerEvent | Endpoint::Import | Endpoint::ImportOrders => item,
        };
        let address = holder.get("emailaddress").and_then(Value::as_str)?;
        Some(address.trim().to_lowercase())
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt.
    Pending,
    /// Failed at least once; another attempt is scheduled.
    Retrying,
    /// Accepted by the target.
    Sent,
    /// Given up: a permanent error, the retries exhausted, or a template error.
    Dead,
    /// Not sent because there was nothing to send to (e.g. no recipient).
    Skipped,
    /// Rendered and recorded in dry-run mode; nothing was sent.
    DryRun,
    /// Held by a timer until its due time (a delayed rule or chain step).
    Scheduled,
    /// A timer cancelled by a later event (`unless`); never sent.
    Cancelled,
}

impl DeliveryStatus {
    /// Every status, in the order counts are given.
    pub const ALL: [DeliveryStatus; 8] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Retrying,
        DeliveryStatus::Scheduled,
        DeliveryStatus::Sent,
        DeliveryStatus::DryRun,
        DeliveryStatus::Skipped,
        DeliveryStatus::Cancelled,
        DeliveryStatus::Dead,
    ];

    /// The status as written in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::DryRun => "dry_run",
            DeliveryStatus::Scheduled => "scheduled",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "retrying" => DeliveryStatus::Retrying,
            "sent" => DeliveryStatus::Sent,
            "dead" => DeliveryStatus::Dead,
            "skipped" => DeliveryStatus::Skipped,
            "dry_run" => DeliveryStatus::DryRun,
            "scheduled" => DeliveryStatus::Scheduled,
            "cancelled" => DeliveryStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether nothing more will happen to it without a replay.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            DeliveryStatus::Pending | DeliveryStatus::Retrying | DeliveryStatus::Scheduled
        )
    }

    /// Whether it counts as done for chaining.
    pub fn is_success(self) -> bool {
        matches!(self, DeliveryStatus::Sent | DeliveryStatus::DryRun)
    }
}

/// What an attempt came to, for each delivery it carried (`policy::classify` reads it off
/// the answer).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted.
    Success {
        /// Status and the start of the body.
        response: String,
    },
    /// Worth another try later.
    Retry {
        /// Why it failed.
        reason: String,
        /// Status and the start of the body, if there was an answer.
        response: Option<String>,
        /// What the target asked for in `Retry-After`.
        retry_after: Option<Duration>,
        /// The target is overloaded (429, a timeout, a rate-limit message): wait at least
        /// `min_overload_delay`.
        overload: bool,
    },
    /// Will never work as it is.
    Permanent {
        /// Why.
        reason: String,
        /// Status and the start of the body.
        response: Option<String>,
        /// The status code, if there was an answer.
        status: Option<u16>,
    },
}

/// A delivery and its state, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The delivery id.
    pub id: DeliveryId,
    /// The event it came from.
    pub event_id: EventId,
    /// The rule that matched.
    pub rule: String,
    /// The action's kind, e.g. `trigger_event`.
    pub action: String,
    /// The action's position in the rule.
    pub action_index: usize,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why the last attempt failed (or why it is dead or skipped).
    pub last_error: Option<String>,
    /// The last answer's status code and the start of its body.
    pub last_response: Option<String>,
    /// When it was sent (RFC 3339).
    pub sent_at: Option<String>,
    /// When the next attempt is due (Unix ms), while retrying.
    pub next_attempt_at: Option<i64>,
    /// The frozen request; `None` when rendering failed.
    pub request: Option<Prepared>,
    /// When it was created (Unix ms), or last replayed: when its wait began, which
    /// `delivery.max_age` counts from.
    pub created_at: i64,
    /// How many chained steps led here (0 for a rule matched directly).
    pub chain_depth: u32,
    /// The contact's e-mail address (trimmed, lower case) when the request names one: what
    /// an operator searches by.
    #[serde(default)]
    pub email: Option<String>,
    /// The type of the event it came from.
    #[serde(default)]
    pub event_type: Option<String>,
    /// The newest attempts, oldest first (at most [`ATTEMPTS_KEPT`]).
    #[serde(default)]
    pub attempt_log: Vec<Attempt>,
}

/// How many attempts a delivery keeps: the newest, so a long outage cannot grow a record
/// without bound.
pub const ATTEMPTS_KEPT: usize = 20;

/// How an attempt was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptClass {
    /// Accepted by the target.
    Success,
    /// Failed; worth another try.
    Retry,
    /// Failed for good.
    Permanent,
    /// A call made while the target's circuit was half open failed; no attempt was spent.
    FailedProbe,
}

/// One call made for a delivery, as the operator's window shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the call started (Unix ms).
    pub at_ms: i64,
    /// How long the call took, in milliseconds.
    pub duration_ms: u64,
    /// The target's status code, when it answered.
    pub status_code: Option<u16>,
    /// A bounded excerpt of the answer.
    pub response: Option<String>,
    /// How it was classified.
    pub class: AttemptClass,
    /// Why it was classified so, when it failed.
    pub reason: Option<String>,
}

impl DeliveryRecord {
    /// Records one attempt and its outcome: the attempt counts, and the delivery is sent,
    /// retrying (due `retry_in` from `now`) or dead. A retry without `retry_in` means the
    /// retry schedule is spent, so the delivery is given up.
    pub fn record(&mut self, outcome: &Outcome, now: DateTime<Utc>, retry_in: Option<Duration>) {
        self.attempts += 1;
        match outcome {
            Outcome::Success { response } => {
                self.status = DeliveryStatus::Sent;
                self.sent_at = Some(now.to_rfc3339_opts(SecondsFormat::Millis, true));
                self.last_response = Some(response.clone());
                self.last_error = None;
                self.next_attempt_at = None;
            }
            Outcome::Retry {
                reason, response, ..
            } => {
                self.last_response = response.clone();
                match retry_in {
                    Some(delay) => {
                        self.status = DeliveryStatus::Retrying;
                        self.last_error = Some(reason.clone());
                        self.next_attempt_at =
                            Some(now.timestamp_millis() + delay.as_millis() as i64);
                    }
                    None => {
                        self.status = DeliveryStatus::Dead;
                        self.last_error = Some(format!(
                            "gave up after {} attempts: {reason}",
                            self.attempts
                        ));
                        self.next_attempt_at = None;
                    }
                }
            }
            Outcome::Permanent {
                reason, response, ..
            } => {
                self.status = DeliveryStatus::Dead;
                self.last_error = Some(reason.clone());
                self.last_response = response.clone();
                self.next_attempt_at = None;
            }
        }
    }

    /// Records a failed probe (a call made while the target's circuit was half open): the
    /// outage is the target's fault, so no attempt is spent; the error is kept, and the
    /// caller puts the delivery back with the waiting ones.
    pub fn record_failed_probe(&mut self, outcome: &Outcome) {
        if let Outcome::Retry {
            reason, response, ..
        } = outcome
        {
            self.last_error = Some(reason.clone());
            self.last_response = response.clone();
        }
    }

    /// Adds an attempt to the log, dropping the oldest beyond [`ATTEMPTS_KEPT`].
    pub fn push_attempt(&mut self, attempt: Attempt) {
        self.attempt_log.push(attempt);
        let over = self.attempt_log.len().saturating_sub(ATTEMPTS_KEPT);
        self.attempt_log.drain(..over);
    }

    /// Gives the delivery up without a call (it waited longer than `delivery.max_age`).
    pub fn give_up(&mut self, reason: String) {
        self.status = DeliveryStatus::Dead;
        self.last_error = Some(reason);
        self.next_attempt_at = None;
    }

    /// Cancels a scheduled delivery (a later event's `unless`, or an operator), with `why`.
    pub fn cancel(&mut self, why: &str) {
        self.status = DeliveryStatus::Cancelled;
        self.next_attempt_at = None;
        self.last_error = Some(why.to_string());
    }

    /// Records that the delivery was not sent because the relay runs dry (no SmartEmailing
    /// credentials); no attempt is spent.
    pub fn record_dry_run(&mut self) {
        self.status = DeliveryStatus::DryRun;
        self.last_error = None;
    }

    /// The record as `GET /v1/events/{id}` shows it.
    pub fn to_api(&self) -> Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "rule": self.rule,
            "action": self.action,
            "status": self.status.as_str(),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "sent_at": self.sent_at,
        });
        if self.status == DeliveryStatus::Scheduled {
            v["due_at"] = self
                .next_attempt_at
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
                .unwrap_or(Value::Null);
        }
        v
    }
}

/// Deliveries for the tests of the modules that handle them.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A pending delivery of action 0 of rule `welcome` for `event`, with no request yet.
    pub(crate) fn pending(event: &str) -> DeliveryRecord {
        let event = EventId::parse(event).unwrap_or_else(|e| panic!("{e}"));
        DeliveryRecord {
            id: DeliveryId::derive(&event, "welcome", 0),
            event_id: event,
            rule: "welcome".into(),
            action: "trigger_event".into(),
            action_index: 0,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_error: None,
            last_response: None,
            sent_at: None,
            next_attempt_at: None,
            request: None,
            created_at: 0,
            chain_depth: 0,
            email: None,
            event_type: None,
            attempt_log: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> DeliveryRecord {
        let mut d = fixtures::pending("evt-1");
        d.last_error = Some("an earlier failure".into());
        d
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn retry(reason: &str) -> Outcome {
        Outcome::Retry {
            reason: reason.into(),
            response: Some("503 busy".into()),
            retry_after: None,
            overload: false,
        }
    }

    #[test]
    fn a_success_marks_the_delivery_sent_and_clears_the_last_error() {
        let mut d = pending();
        let ok = Outcome::Success {
            response: "201 created".into(),
        };
        d.record(&ok, at(1_000), None);
        assert_eq!(d.status, DeliveryStatus::Sent);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.sent_at.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(d.last_response.as_deref(), Some("201 created"));
        assert_eq!(d.last_error, None);
        assert_eq!(d.next_attempt_at, None);
    }

    #[test]
    fn a_retry_with_a_delay_is_due_that_long_after_now() {
        let mut d = pending();
        d.record(
            &retry("the target answered 503"),
            at(1_000),
            Some(Duration::from_secs(10)),
        );
        assert_eq!(d.status, DeliveryStatus::Retrying);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.next_attempt_at, Some(11_000));
        assert_eq!(d.last_error.as_deref(), Some("the target answered 503"));
        assert_eq!(d.last_response.as_deref(), Some("503 busy"));
    }

    #[test]
    fn a_retry_without_a_delay_gives_the_delivery_up_and_says_after_how_many_attempts() {
        let mut d = pending();
        d.attempts = 2;
        d.next_attempt_at = Some(5);
        d.record(&retry("timed out"), at(1_000), None);
        assert_eq!(d.status, DeliveryStatus::Dead);
        assert_eq!(
            d.last_error.as_deref(),
            Some("gave up after 3 attempts: timed out")
        );
        assert_eq!(d.next_attempt_at, None);
    }

    #[test]
    fn a_permanent_failure_is_dead_at_once() {
        let mut d = pending();
        let bad = Outcome::Permanent {
            reason: "the target answered 422".into(),
            response: Some("422 invalid".into()),
            status: Some(422),
        };
        d.record(&bad, at(1_000), Some(Duration::from_secs(10)));
        assert_eq!(d.status, DeliveryStatus::Dead);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.last_error.as_deref(), Some("the target answered 422"));
        assert_eq!(d.next_attempt_at, None);
    }

    #[test]
    fn a_failed_probe_spends_no_attempt_and_keeps_the_error() {
        let mut d = pending();
        d.attempts = 3;
        d.record_failed_probe(&retry("the target answered 503"));
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts, 3);
        assert_eq!(d.last_error.as_deref(), Some("the target answered 503"));
        assert_eq!(d.last_response.as_deref(), Some("503 busy"));
    }

    #[test]
    fn giving_up_is_dead_with_the_reason_and_spends_no_attempt() {
        let mut d = pending();
        d.next_attempt_at = Some(5);
        d.give_up("waited too long".into());
        assert_eq!(d.status, DeliveryStatus::Dead);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.last_error.as_deref(), Some("waited too long"));
        assert_eq!(d.next_attempt_at, None);
    }

    fn se(endpoint: Endpoint, item: Value) -> Prepared {
        Prepared::SmartEmailing {
            endpoint,
            group: Value::Null,
            item,
        }
    }

    #[test]
    fn a_row_is_the_contact_the_trigger_or_the_order() {
        let trigger = |e: &str, n: &str| {
            se(
                Endpoint::TriggerEvent,
                serde_json::json!({"emailaddress": e, "name": n}),
            )
        };
        assert_eq!(
            trigger("Jan@Example.com ", "welcome").row_key(),
            trigger("jan@example.com", "welcome").row_key()
        );
        assert_ne!(
            trigger("jan@example.com", "welcome").row_key(),
            trigger("jan@example.com", "bye").row_key()
        );
        let import = se(
            Endpoint::Import,
            serde_json::json!({"emailaddress": "JAN@example.com", "name": "Jan"}),
        );
        assert_eq!(import.row_key().as_deref(), Some("/import:jan@example.com"));
        let task = se(
            Endpoint::CustomSms,
            serde_json::json!({"recipient": {"emailaddress": "jan@example.com", "cellphone": "+420"}, "replace": []}),
        );
        assert_eq!(
            task.row_key().as_deref(),
            Some("/send/custom-sms-bulk:jan@example.com")
        );
        let order = se(
            Endpoint::ImportOrders,
            serde_json::json!({"eshop_name": "s", "eshop_code": "A-1"}),
        );
        assert_eq!(order.row_key().as_deref(), Some("/import-orders:A-1"));
        let http = Prepared::Http {
            method: "POST".into(),
            url: "https://x".into(),
            headers: vec![],
            body: None,
            auth: None,
        };
        assert_eq!(http.row_key(), None);
        assert_eq!(se(Endpoint::Import, serde_json::json!({})).row_key(), None);
    }

    #[test]
    fn the_email_is_the_item_s_or_the_recipient_s_trimmed_and_lower_case() {
        let import = se(
            Endpoint::Import,
            serde_json::json!({"emailaddress": " Jan@Example.COM "}),
        );
        assert_eq!(import.email().as_deref(), Some("jan@example.com"));
        let order = se(
            Endpoint::ImportOrders,
            serde_json::json!({"emailaddress": "eva@example.com", "eshop_code": "A-1"}),
        );
        assert_eq!(order.email().as_deref(), Some("eva@example.com"));
        let mail = se(
            Endpoint::TransactionalEmails,
            serde_json::json!({"recipient": {"emailaddress": "Petr@example.com"}}),
        );
        assert_eq!(mail.email().as_deref(), Some("petr@example.com"));
        let stray = se(
            Endpoint::CustomSms,
            serde_json::json!({"emailaddress": "not-the-recipient@example.com"}),
        );
        assert_eq!(stray.email(), None);
    }

    fn attempt(at_ms: i64) -> Attempt {
        Attempt {
            at_ms,
            duration_ms: 1,
            status_code: Some(503),
            response: None,
            class: AttemptClass::Retry,
            reason: None,
        }
    }

    #[test]
    fn the_attempt_log_keeps_only_the_newest_attempts_oldest_first() {
        let mut d = pending();
        for at in 0..(ATTEMPTS_KEPT as i64 + 5) {
            d.push_attempt(attempt(at));
        }
        assert_eq!(d.attempt_log.len(), ATTEMPTS_KEPT);
        assert_eq!(d.attempt_log.first().map(|a| a.at_ms), Some(5));
        assert_eq!(
            d.attempt_log.last().map(|a| a.at_ms),
            Some(ATTEMPTS_KEPT as i64 + 4)
        );
    }

    #[test]
    fn a_dry_run_spends_no_attempt() {
        let mut d = pending();
        d.record_dry_run();
        assert_eq!(d.status, DeliveryStatus::DryRun);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.last_error, None);
    }
}
