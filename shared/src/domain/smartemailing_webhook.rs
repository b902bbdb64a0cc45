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

/// The deepest a PHP-style form key may nest (`a[b][c]...`); deeper segments stay in the
/// last key's name, as text.
pub const MAX_FORM_DEPTH: usize = 32;

/// Turns a form body into an object, reading PHP-style keys as PHP does:
/// `contact[emailaddress]=x&contact[name]=y` becomes `{"contact": {"emailaddress": "x",
/// "name": "y"}}`, `tags[]=a&tags[]=b` becomes `{"tags": ["a", "b"]}`, and an object whose
/// keys are exactly 0, 1, 2, ... becomes an array. A repeated key keeps its last value.
pub fn form_to_object(pairs: Vec<(String, String)>) -> Value {
    let mut root = Value::Object(Map::new());
    for (k, v) in pairs {
        insert_form_value(&mut root, &form_key_path(&k), Value::String(v));
    }
    listify(root)
}

/// `a[b][]` → `["a", "b", ""]`; a key without well-formed brackets is taken whole.
fn form_key_path(key: &str) -> Vec<String> {
    let Some(open) = key.find('[').filter(|&i| i > 0 && key.ends_with(']')) else {
        return vec![key.to_string()];
    };
    let mut path = vec![key[..open].to_string()];
    let mut rest = &key[open..];
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return vec![key.to_string()];
        };
        if path.len() == MAX_FORM_DEPTH {
            // Too deep: what is left stays part of the last segment's name.
            if let Some(last) = path.last_mut() {
                last.push_str(rest);
            }
            return path;
        }
        path.push(inner[..close].to_string());
        rest = &inner[close + 1..];
    }
    if rest.is_empty() {
        path
    } else {
        vec![key.to_string()]
    }
}

fn insert_form_value(node: &mut Value, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *node = value;
        return;
    };
    if first.is_empty() {
        // `[]`: append to a list.
        if !node.is_array() {
            *node = Value::Array(Vec::new());
        }
        if let Value::Array(items) = node {
            let mut slot = Value::Null;
            insert_form_value(&mut slot, rest, value);
            items.push(slot);
        }
        return;
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        let child = map.entry(first.clone()).or_insert(Value::Null);
        insert_form_value(child, rest, value);
    }
}

/// Objects keyed exactly `0..n` become arrays, as PHP's `json_encode` would show them.
fn listify(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut indices: Vec<usize> = map
                .keys()
                .filter_map(|k| k.parse::<usize>().ok().filter(|n| n.to_string() == *k))
                .collect();
            indices.sort_unstable();
            let sequential = !map.is_empty()
                && indices.len() == map.len()
                && indices.iter().enumerate().all(|(i, n)| i == *n);
            let mut entries: Vec<(String, Value)> =
                map.into_iter().map(|(k, v)| (k, listify(v))).collect();
            if sequential {
                entries.sort_by_key(|(k, _)| k.parse::<usize>().unwrap_or(usize::MAX));
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(entries.into_iter().collect())
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(listify).collect()),
        other => other,
    }
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
        let (a, _) = event_from_webhook(
            "updated_contact",
            json!({"email": "a@example.com", "x": "1"}),
            now,
        )
        .unwrap();
        let (b, _) = event_from_webhook(
            "updated_contact",
            json!({"x": "1", "email": "a@example.com"}),
            now,
        )
        .unwrap();
        let (c, _) = event_from_webhook(
            "new_contact",
            json!({"x": "1", "email": "a@example.com"}),
            now,
        )
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

    fn form(body: &str) -> Value {
        form_to_object(serde_urlencoded::from_str::<Vec<(String, String)>>(body).unwrap())
    }

    #[test]
    fn php_style_form_keys_become_nested_objects_and_the_email_is_found() {
        let body = form(
            "contact%5Bemailaddress%5D=jan%40example.com&contact%5Bname%5D=Jan&status=confirmed",
        );
        assert_eq!(
            body,
            json!({"contact": {"emailaddress": "jan@example.com", "name": "Jan"}, "status": "confirmed"})
        );
        let (e, _) = event_from_webhook("new_contact", body, Utc::now()).unwrap();
        assert_eq!(e.email(), Some("jan@example.com"));
    }

    #[test]
    fn php_style_lists_and_numbered_keys_become_arrays() {
        assert_eq!(form("tags[]=a&tags[]=b"), json!({"tags": ["a", "b"]}));
        let many: Vec<String> = (0..12).map(|i| format!("l[{i}][id]={i}")).collect();
        let got = form(&many.join("&"));
        assert_eq!(got["l"].as_array().map(Vec::len), Some(12));
        assert_eq!(got["l"][10]["id"], "10");
        // Not 0..n: stays an object.
        assert_eq!(form("m[1]=a&m[2]=b"), json!({"m": {"1": "a", "2": "b"}}));
        assert_eq!(form("m[01]=a"), json!({"m": {"01": "a"}}));
    }

    #[test]
    fn malformed_or_too_deep_form_keys_stay_text() {
        assert_eq!(
            form("a[b=1&c]=2&[x]=3"),
            json!({"a[b": "1", "c]": "2", "[x]": "3"})
        );
        let deep = format!("k{}=v", "[x]".repeat(40));
        let got = form(&deep);
        let mut node = &got["k"];
        let mut depth = 1;
        while let Some(next) = node.get("x") {
            node = next;
            depth += 1;
        }
        assert_eq!(depth, MAX_FORM_DEPTH - 1);
        assert!(node
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.starts_with("x["))));
        // A scalar and then a nested key under the same name: the later one wins.
        assert_eq!(form("a=1&a[b]=2"), json!({"a": {"b": "2"}}));
    }
}
