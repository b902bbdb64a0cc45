//! SmartEmailing's own webhooks turned into events of type `smartemailing.<name>`.

use crate::domain::event::{hash_value, Email, Event, EventId, EventType, FieldError};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Builds the event for a webhook call. `body` is the JSON object SmartEmailing sent (a form
/// body is turned into an object of strings first). The id is a hash of name and body, so
/// SmartEmailing's retries of the same call are duplicates.
pub fn event_from_webhook(
    name: &str,
    body: Value,
    now: DateTime<Utc>,
) -> Result<(Event, String), FieldError> {
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err(FieldError::new(
            "/event_name",
            "the query parameter event_name is required, e.g. ?event_name=new_contact",
        ));
    }
    let kind = EventType::parse(&format!("smartemailing.{name}"))
        .map_err(|m| FieldError::new("/event_name", m))?;
    let data = match body {
        Value::Object(map) => map,
        _ => {
            return Err(FieldError::new(
                "",
                "the webhook body must be a JSON object or a form",
            ))
        }
    };
    let envelope = serde_json::json!({"event_name": name, "body": data});
    let hash = hash_value(&envelope);
    let id = EventId::parse(&format!("se-{name}-{}", &hash[..32]))
        .map_err(|m| FieldError::new("/event_name", m))?;
    let mut contact = Map::new();
    if let Some(email) = find_email(&data) {
        contact.insert("email".into(), Value::String(email));
    }
    Ok((
        Event {
            id,
            kind,
            occurred_at: now,
            contact,
            data,
        },
        hash,
    ))
}

fn find_email(data: &Map<String, Value>) -> Option<String> {
    let candidates = [
        data.get("emailaddress"),
        data.get("email"),
        data.get("contact").and_then(|c| c.get("emailaddress")),
        data.get("contact").and_then(|c| c.get("email")),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|s| Email::parse(s.trim()).ok())
        .map(|e| e.as_str().to_string())
}

/// Turns `a=1&b=2` into `{"a": "1", "b": "2"}` (a repeated key keeps its last value).
pub fn form_to_object(pairs: Vec<(String, String)>) -> Value {
    let mut map = Map::new();
    for (k, v) in pairs {
        map.insert(k, Value::String(v));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn email_is_found_in_the_known_places() {
        let now = Utc::now();
        for body in [
            json!({"emailaddress": "a@example.com"}),
            json!({"email": "a@example.com"}),
            json!({"contact": {"emailaddress": "a@example.com"}}),
        ] {
            let (e, _) = event_from_webhook("new_contact", body, now).unwrap();
            assert_eq!(e.email(), Some("a@example.com"));
            assert_eq!(e.kind.as_str(), "smartemailing.new_contact");
        }
    }

    #[test]
    fn the_same_call_gets_the_same_id() {
        let now = Utc::now();
        let (a, _) =
            event_from_webhook("click", json!({"email": "a@example.com", "link": "x"}), now)
                .unwrap();
        let (b, _) =
            event_from_webhook("click", json!({"link": "x", "email": "a@example.com"}), now)
                .unwrap();
        let (c, _) =
            event_from_webhook("open", json!({"link": "x", "email": "a@example.com"}), now)
                .unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn a_bad_name_is_refused() {
        let err = event_from_webhook("", json!({}), Utc::now()).unwrap_err();
        assert_eq!(err.path, "/event_name");
        assert!(event_from_webhook("no spaces", json!({}), Utc::now()).is_err());
    }
}
