//! Domain events: the envelope the CDP or shop sends, validated once at the edge.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;

/// The most events one `POST /v1/events` call may carry.
pub const MAX_BATCH: usize = 500;
/// The longest event id.
pub const MAX_ID_CHARS: usize = 200;
/// The longest event type.
pub const MAX_TYPE_CHARS: usize = 100;

/// A field that failed validation: where (a JSON pointer) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// JSON pointer of the offending field, e.g. `/events/3/contact/email`.
    pub path: String,
    /// What is wrong with it, in words a user can act on.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// An event id: 1–200 characters, the caller's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// Validates an id.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let n = raw.chars().count();
        if n == 0 || n > MAX_ID_CHARS {
            return Err(format!("must be 1 to {MAX_ID_CHARS} characters (got {n})"));
        }
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(raw.to_string()))
    }

    /// Wraps an id read back from the store (validated when it was received).
    pub fn from_stored(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event type such as `contact.created`: `[a-z0-9_.-]+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    /// Validates a type.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_TYPE_CHARS {
            return Err(format!("must be 1 to {MAX_TYPE_CHARS} characters"));
        }
        if !raw.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        }) {
            return Err(format!(
                "`{raw}` is not a valid type: use lowercase letters, digits, `_`, `.` and `-`"
            ));
        }
        Ok(Self(raw.to_string()))
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A syntactically valid e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Validates an address: one `@`, a sensible local part, a dotted domain.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = || format!("`{}` is not a valid e-mail address", truncate(raw, 80));
        if raw.len() > 254 {
            return Err("an e-mail address is at most 254 characters".into());
        }
        let (local, domain) = raw.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || local.len() > 64
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || local.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || matches!(
                        c,
                        '@' | '<' | '>' | '(' | ')' | ',' | ';' | ':' | '\\' | '"' | '[' | ']'
                    )
            })
        {
            return Err(bad());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return Err(bad());
        }
        Ok(Self(raw.to_string()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The caller's id, also the idempotency key.
    pub id: EventId,
    /// What happened, e.g. `contact.created`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it happened (defaults to when it was received).
    pub occurred_at: DateTime<Utc>,
    /// The contact it concerns: `email`, names, `phone`, `birthday`, `language`, `custom_fields`, ...
    #[serde(default)]
    pub contact: Map<String, Value>,
    /// Anything else the rules may use.
    #[serde(default)]
    pub data: Map<String, Value>,
}

impl Event {
    /// The contact's e-mail address, when the event has one.
    pub fn email(&self) -> Option<&str> {
        self.contact.get("email").and_then(Value::as_str)
    }

    /// The text at a dotted path such as `data.cart_id` or `contact.email` (strings and
    /// numbers; `None` when absent or of another type).
    pub fn lookup(&self, path: &str) -> Option<String> {
        let mut parts = path.split('.');
        let mut cur: Value = match parts.next()? {
            "data" => Value::Object(self.data.clone()),
            "contact" => Value::Object(self.contact.clone()),
            "event" => self.to_value(),
            _ => return None,
        };
        for p in parts {
            cur = cur.get(p)?.clone();
        }
        match cur {
            Value::String(s) if !s.is_empty() => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The contact's birthday, when the event has a valid one.
    pub fn birthday(&self) -> Option<NaiveDate> {
        let b = self.contact.get("birthday")?.as_str()?;
        NaiveDate::parse_from_str(b, "%Y-%m-%d").ok()
    }

    /// The event as the JSON object templates see as `event`.
    pub fn to_value(&self) -> Value {
        // Built by hand: `json!` would copy the maps through serde's serializer, several
        // times slower than a clone (BENCHMARKS.md, issue 16).
        let mut out = Map::new();
        out.insert("id".into(), Value::String(self.id.0.clone()));
        out.insert("type".into(), Value::String(self.kind.0.clone()));
        out.insert(
            "occurred_at".into(),
            Value::String(
                self.occurred_at
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        );
        out.insert("contact".into(), Value::Object(self.contact.clone()));
        out.insert("data".into(), Value::Object(self.data.clone()));
        Value::Object(out)
    }
}

/// An event as received: the validated event and the hash of the submitted JSON.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The validated event.
    pub event: Event,
    /// SHA-256 of the canonical JSON the caller sent (keys sorted), for the idempotency check.
    pub payload_hash: String,
}

/// SHA-256 (hex) of a JSON value's canonical form (object keys sorted).
pub fn hash_value(value: &Value) -> String {
    // serde_json's Map is a BTreeMap here (no preserve_order), so keys come out sorted.
    // A `Value` always serialises (its keys are strings); nothing is hidden here.
    let mut sink = HashSink {
        hasher: Sha256::new(),
        buf: [0; 512],
        len: 0,
    };
    let _ = serde_json::to_writer(&mut sink, value);
    sink.flush_buf();
    hex::encode(sink.hasher.finalize())
}

/// Hashes what is written to it, in chunks: the canonical JSON was a growing `Vec` whose
/// reallocations cost a sixth of an event's core (BENCHMARKS.md, issue 16).
struct HashSink {
    hasher: Sha256,
    buf: [u8; 512],
    len: usize,
}

impl HashSink {
    fn flush_buf(&mut self) {
        self.hasher.update(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl std::io::Write for HashSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.len + bytes.len() > self.buf.len() {
            self.flush_buf();
        }
        if bytes.len() > self.buf.len() {
            self.hasher.update(bytes);
        } else {
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parses a `POST /v1/events` body that is already JSON: one event, or `{"events": [...]}`.
pub fn parse_submission(body: Value, now: DateTime<Utc>) -> Result<Vec<Submitted>, FieldError> {
    let Value::Object(mut obj) = body else {
        return Err(FieldError::new(
            "",
            "the body must be a JSON object: one event, or {\"events\": [...]}",
        ));
    };
    if obj.contains_key("events") && !obj.contains_key("type") {
        if obj.len() != 1 {
            let extra = obj
                .keys()
                .find(|k| *k != "events")
                .cloned()
                .unwrap_or_default();
            return Err(FieldError::new(
                format!("/{}", escape_pointer(&extra)),
                "unknown field beside `events`",
            ));
        }
        let Some(Value::Array(list)) = obj.remove("events") else {
            return Err(FieldError::new("/events", "must be an array of events"));
        };
        if list.is_empty() {
            return Err(FieldError::new("/events", "must hold at least one event"));
        }
        if list.len() > MAX_BATCH {
            return Err(FieldError::new(
                "/events",
                format!(
                    "holds {} events; at most {MAX_BATCH} are taken in one call",
                    list.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(list.len());
        let mut seen = std::collections::HashSet::new();
        for (i, raw) in list.into_iter().enumerate() {
            let path = format!("/events/{i}");
            let payload_hash = hash_value(&raw);
            let event = take_event(raw, &path, now)?;
            if !seen.insert(event.id.clone()) {
                return Err(FieldError::new(
                    format!("{path}/id"),
                    format!("`{}` appears twice in this batch", event.id),
                ));
            }
            out.push(Submitted {
                event,
                payload_hash,
            });
        }
        Ok(out)
    } else {
        let body = Value::Object(obj);
        let payload_hash = hash_value(&body);
        let event = take_event(body, "", now)?;
        Ok(vec![Submitted {
            event,
            payload_hash,
        }])
    }
}

/// Validates one event object; `path` is its JSON pointer for error messages.
pub fn parse_event(raw: &Value, path: &str, now: DateTime<Utc>) -> Result<Event, FieldError> {
    take_event(raw.clone(), path, now)
}

/// [`parse_event`] taking the object by value: `contact` and `data` are moved out of it, not
/// copied (the inbound path, BENCHMARKS.md, issue 16).
fn take_event(raw: Value, path: &str, now: DateTime<Utc>) -> Result<Event, FieldError> {
    let Value::Object(mut obj) = raw else {
        return Err(FieldError::new(path, "an event must be a JSON object"));
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "id" | "type" | "occurred_at" | "contact" | "data"
        ) {
            return Err(FieldError::new(
                format!("{path}/{}", escape_pointer(key)),
                "unknown field; an event has id, type, occurred_at, contact and data",
            ));
        }
    }
    let id = match obj.get("id") {
        Some(Value::String(s)) => {
            EventId::parse(s).map_err(|m| FieldError::new(format!("{path}/id"), m))?
        }
        Some(_) => return Err(FieldError::new(format!("{path}/id"), "must be a string")),
        None => return Err(FieldError::new(format!("{path}/id"), "is required")),
    };
    let kind = match obj.get("type") {
        Some(Value::String(s)) => {
            EventType::parse(s).map_err(|m| FieldError::new(format!("{path}/type"), m))?
        }
        Some(_) => return Err(FieldError::new(format!("{path}/type"), "must be a string")),
        None => return Err(FieldError::new(format!("{path}/type"), "is required")),
    };
    let occurred_at = match obj.get("occurred_at") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| {
                FieldError::new(
                    format!("{path}/occurred_at"),
                    "must be an RFC 3339 timestamp such as 2026-11-26T10:00:00Z",
                )
            })?,
        Some(_) => {
            return Err(FieldError::new(
                format!("{path}/occurred_at"),
                "must be a string",
            ))
        }
    };
    let contact = match obj.remove("contact") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(c)) => {
            validate_contact(&c, &format!("{path}/contact"))?;
            c
        }
        Some(_) => {
            return Err(FieldError::new(
                format!("{path}/contact"),
                "must be an object",
            ))
        }
    };
    let data = match obj.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => d,
        Some(_) => return Err(FieldError::new(format!("{path}/data"), "must be an object")),
    };
    Ok(Event {
        id,
        kind,
        occurred_at,
        contact,
        data,
    })
}

fn validate_contact(c: &Map<String, Value>, path: &str) -> Result<(), FieldError> {
    for (key, value) in c {
        let field = format!("{path}/{}", escape_pointer(key));
        match key.as_str() {
            "email" => match value {
                Value::String(s) => {
                    Email::parse(s).map_err(|m| FieldError::new(&field, m))?;
                }
                Value::Null => {}
                _ => return Err(FieldError::new(field, "must be a string")),
            },
            "first_name" | "last_name" | "phone" | "language"
                if !matches!(value, Value::String(_) | Value::Null) =>
            {
                return Err(FieldError::new(field, "must be a string"));
            }
            "birthday" => match value {
                Value::String(s) => {
                    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                        FieldError::new(&field, "must be a date written YYYY-MM-DD")
                    })?;
                }
                Value::Null => {}
                _ => return Err(FieldError::new(field, "must be a date written YYYY-MM-DD")),
            },
            "custom_fields" if !matches!(value, Value::Object(_) | Value::Null) => {
                return Err(FieldError::new(field, "must be an object"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_full_event_parses() {
        let subs = parse_submission(
            json!({"id": "evt-1", "type": "contact.created", "occurred_at": "2026-11-26T09:00:00+01:00",
                    "contact": {"email": "jan@example.com", "birthday": "1990-05-17"}, "data": {"x": 1}}),
            now(),
        )
        .unwrap();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].event.email(), Some("jan@example.com"));
        assert_eq!(
            subs[0].event.occurred_at.to_rfc3339(),
            "2026-11-26T08:00:00+00:00"
        );
    }

    #[test]
    fn occurred_at_defaults_to_now() {
        let subs = parse_submission(json!({"id": "a", "type": "t"}), now()).unwrap();
        assert_eq!(subs[0].event.occurred_at, now());
    }

    #[test]
    fn a_bad_email_in_a_batch_names_its_path() {
        let err = parse_submission(
            json!({"events": [{"id": "a", "type": "t"}, {"id": "b", "type": "t", "contact": {"email": "nope"}}]}),
            now(),
        )
        .unwrap_err();
        assert_eq!(err.path, "/events/1/contact/email");
    }

    #[test]
    fn ids_and_types_are_checked() {
        assert_eq!(
            parse_event(&json!({"type": "t"}), "", now())
                .unwrap_err()
                .path,
            "/id"
        );
        assert_eq!(
            parse_event(&json!({"id": "", "type": "t"}), "", now())
                .unwrap_err()
                .path,
            "/id"
        );
        let long = "x".repeat(201);
        assert_eq!(
            parse_event(&json!({"id": long, "type": "t"}), "", now())
                .unwrap_err()
                .path,
            "/id"
        );
        assert_eq!(
            parse_event(&json!({"id": "a", "type": "Contact"}), "", now())
                .unwrap_err()
                .path,
            "/type"
        );
        assert_eq!(
            parse_event(&json!({"id": "a", "type": "t", "extra": 1}), "", now())
                .unwrap_err()
                .path,
            "/extra"
        );
    }

    #[test]
    fn email_validation() {
        for ok in ["jan@example.com", "j.a+n@mail.example.cz", "ž@příklad.cz"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "jan",
            "jan@",
            "@example.com",
            "jan@example",
            "ja n@example.com",
            "jan@exa_mple.com",
            "a..b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_hash_is_sha256_of_the_canonical_json() {
        let long = "ž".repeat(700);
        let v = json!({"id": "a", "type": "t", "data": {"long": long, "n": [1, 2.5, null]}});
        let canonical = serde_json::to_vec(&v).unwrap();
        assert_eq!(hash_value(&v), hex::encode(Sha256::digest(&canonical)));
    }

    #[test]
    fn hash_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"id":"a","type":"t","data":{"x":1,"y":2}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"data":{"y":2,"x":1},"type":"t","id":"a"}"#).unwrap();
        assert_eq!(hash_value(&a), hash_value(&b));
    }

    #[test]
    fn a_batch_with_a_repeated_id_is_refused() {
        let err = parse_submission(
            json!({"events": [{"id": "a", "type": "t"}, {"id": "a", "type": "t"}]}),
            now(),
        )
        .unwrap_err();
        assert_eq!(err.path, "/events/1/id");
    }
}
