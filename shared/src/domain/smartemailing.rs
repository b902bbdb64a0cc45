//! SmartEmailing API v3: endpoints, bulk bodies and answer envelopes.
//!
//! Every shape that rests on public client libraries rather than the official reference
//! lives here, so a correction is a change to this one file (see SMARTEMAILING_API.md).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The production API base URL.
pub const DEFAULT_BASE_URL: &str = "https://app.smartemailing.cz/api/v3";

/// A SmartEmailing bulk endpoint the relay coalesces deliveries into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /trigger-event`: fire automation triggers.
    TriggerEvent,
    /// `POST /import`: upsert contacts and their list membership.
    Import,
    /// `POST /send/custom-emails-bulk`: send a stored e-mail.
    CustomEmails,
    /// `POST /send/transactional-emails-bulk`: send a transactional e-mail.
    TransactionalEmails,
    /// `POST /send/custom-sms-bulk`: send an SMS.
    CustomSms,
    /// `POST /import-orders`: record orders.
    ImportOrders,
}

impl Endpoint {
    /// The path below the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::TriggerEvent => "/trigger-event",
            Endpoint::Import => "/import",
            Endpoint::CustomEmails => "/send/custom-emails-bulk",
            Endpoint::TransactionalEmails => "/send/transactional-emails-bulk",
            Endpoint::CustomSms => "/send/custom-sms-bulk",
            Endpoint::ImportOrders => "/import-orders",
        }
    }

    /// The most items one call may carry.
    pub fn batch_limit(self) -> usize {
        match self {
            Endpoint::TransactionalEmails => 5,
            _ => 500,
        }
    }

    /// The body of one call carrying `items`, sharing the batch-level `group` settings.
    pub fn body(self, group: &Value, items: Vec<Value>) -> Value {
        match self {
            // One source only: a bare JSON array.
            Endpoint::TriggerEvent => Value::Array(items),
            Endpoint::Import | Endpoint::ImportOrders => json!({"settings": group, "data": items}),
            Endpoint::CustomEmails | Endpoint::TransactionalEmails | Endpoint::CustomSms => {
                let mut body = group.as_object().cloned().unwrap_or_default();
                body.insert("tasks".into(), Value::Array(items));
                Value::Object(body)
            }
        }
    }
}

/// The settings every `/import` call sends unless a rule overrides them.
pub fn default_import_settings() -> Value {
    json!({
        "update": true,
        "add_namedays": true,
        "add_genders": true,
        "add_salutions": true,
        "preserve_unsubscribed": true,
        "skip_invalid_emails": false
    })
}

/// The settings every `/import-orders` call sends.
pub fn default_order_settings() -> Value {
    json!({"skip_invalid_orders": false})
}

/// Contact fields `/import` accepts besides `emailaddress`, `contactlists` and `customfields`.
pub const CONTACT_FIELDS: &[&str] = &[
    "name",
    "surname",
    "titlesbefore",
    "titlesafter",
    "salution",
    "company",
    "street",
    "town",
    "postalcode",
    "country",
    "cellphone",
    "phone",
    "language",
    "notes",
    "gender",
    "birthday",
    "nameday",
    "purposes",
];

/// Keys the `/import` settings object accepts.
pub const IMPORT_SETTINGS: &[&str] = &[
    "update",
    "add_namedays",
    "add_genders",
    "add_salutions",
    "preserve_unsubscribed",
    "skip_invalid_emails",
];

/// Order statuses SmartEmailing knows.
pub const ORDER_STATUSES: &[&str] = &["placed", "processing", "shipped", "cancelled", "unknown"];

/// A list membership status in `/import`.
pub const LIST_STATUSES: &[&str] = &["confirmed", "unsubscribed", "removed"];

/// The answer envelope: `{"status": "ok" | "created" | "error", "message": ...}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    /// `ok`, `created` or `error`.
    pub status: Option<String>,
    /// A human message, present on errors.
    #[serde(default)]
    pub message: Option<Value>,
}

impl Envelope {
    /// Parses an answer body; `None` when it is not an envelope.
    pub fn parse(body: &[u8]) -> Option<Envelope> {
        serde_json::from_slice::<Envelope>(body).ok()
    }

    /// Whether the envelope reports an error.
    pub fn is_error(&self) -> bool {
        self.status.as_deref() == Some("error")
    }

    /// The message as text.
    pub fn message_text(&self) -> String {
        match &self.message {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }
}

/// Whether an answer's text says the account was rate limited.
pub fn says_rate_limited(text: &str) -> bool {
    text.to_ascii_lowercase().contains("rate limit")
}

/// Turns the event's contact into `/import` fields: `first_name` → `name`, and so on.
pub fn contact_fields_from_event(contact: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let pairs = [
        ("first_name", "name"),
        ("last_name", "surname"),
        ("phone", "cellphone"),
        ("language", "language"),
    ];
    for (from, to) in pairs {
        if let Some(Value::String(s)) = contact.get(from) {
            out.insert(to.into(), Value::String(s.clone()));
        }
    }
    if let Some(Value::String(b)) = contact.get("birthday") {
        out.insert("birthday".into(), Value::String(format!("{b} 00:00:00")));
    }
    out
}
