//! Property tests for structural rendering: whatever the event data holds, a rendered body
//! is valid JSON with exactly the template's keys, and string data lands verbatim where the
//! template put it.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use relay_shared::domain::event::{Event, EventId, EventType};
use relay_shared::rules::template::{Node, TemplateSet, Vars};
use serde_json::{json, Map, Value};

/// Strings made to hurt: template syntax, JSON syntax, escapes, control characters, unicode.
fn hostile_string() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{%".to_string()),
        Just("%}".to_string()),
        Just("{#".to_string()),
        Just("{{ 7*7 }}".to_string()),
        Just("{% if true %}x{% endif %}".to_string()),
        Just("\", \"admin\": true, \"x\": \"".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\\u0000".to_string()),
        Just("\u{0}".to_string()),
        Just("\r\n".to_string()),
        Just("\t".to_string()),
        Just("\u{7f}\u{85}\u{2028}".to_string()),
        Just("ž😀\u{feff}".to_string()),
        any::<char>().prop_map(String::from),
        "[a-zA-Z0-9 ]{1,6}",
    ];
    prop::collection::vec(fragment, 0..10).prop_map(|parts| parts.concat())
}

/// Numbers that survive a trip through JSON text exactly.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (any::<i32>(), 0..8i32).prop_map(|(m, e)| json!(f64::from(m) / 2f64.powi(e))),
    ]
}

/// Any JSON value, nested a few levels, with hostile strings as keys and leaves.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn template() -> Value {
    json!({
        "greeting": "Hi {{ data.name }}!",
        "raw": "{{ data.name }}",
        "pair": "{{ data.name }}|{{ data.other }}",
        "any": "{{ data.any }}",
        "nested": {
            "list": ["{{ data.name }}", "literal {", 7],
            "n": 5,
            "yes": true,
            "none": null
        }
    })
}

fn compiled() -> (TemplateSet, Node) {
    let mut set = TemplateSet::new();
    let node = set
        .compile_tree("properties.body", &template())
        .expect("the template compiles");
    (set, node)
}

fn event_with(data: Map<String, Value>) -> Event {
    Event {
        id: EventId::parse("prop-1").expect("valid id"),
        kind: EventType::parse("prop.test").expect("valid type"),
        occurred_at: Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap(),
        contact: Map::new(),
        data,
    }
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

proptest! {
    #[test]
    fn rendered_bodies_are_json_with_exactly_the_templates_keys(
        name in hostile_string(),
        other in hostile_string(),
        any in json_value(),
    ) {
        let (set, node) = compiled();
        let mut data = Map::new();
        data.insert("name".into(), Value::String(name.clone()));
        data.insert("other".into(), Value::String(other.clone()));
        data.insert("any".into(), any.clone());
        let event = event_with(data);
        let out = set
            .render_tree(&node, &Vars::new(&event, event.occurred_at))
            .expect("string and JSON data always render");

        // What goes on the wire parses back to the same document.
        let wire = serde_json::to_string(&out).unwrap();
        let back: Value = serde_json::from_str(&wire).unwrap();
        prop_assert_eq!(&back, &out);

        prop_assert_eq!(keys(&back), ["any", "greeting", "nested", "pair", "raw"]);
        prop_assert_eq!(keys(&back["nested"]), ["list", "n", "none", "yes"]);
        prop_assert_eq!(&back["greeting"], &json!(format!("Hi {name}!")));
        prop_assert_eq!(&back["pair"], &json!(format!("{name}|{other}")));
        prop_assert_eq!(&back["raw"], &json!(name));
        prop_assert_eq!(&back["nested"]["list"], &json!([name, "literal {", 7]));
        prop_assert_eq!(&back["nested"]["n"], &json!(5));
        prop_assert_eq!(&back["nested"]["yes"], &json!(true));
        prop_assert_eq!(&back["nested"]["none"], &Value::Null);
        // A sole expression keeps the JSON type and value of what it names.
        prop_assert_eq!(&back["any"], &any);
    }

    #[test]
    fn any_json_data_renders_into_text_without_changing_the_shape(any in json_value()) {
        let mut set = TemplateSet::new();
        let node = set
            .compile_tree("properties.text", &json!({"text": "<{{ data.any | json_encode() }}>", "k": "v"}))
            .expect("the template compiles");
        let mut data = Map::new();
        data.insert("any".into(), any.clone());
        let event = event_with(data);
        let out = set
            .render_tree(&node, &Vars::new(&event, event.occurred_at))
            .expect("json_encode renders any value");
        prop_assert_eq!(keys(&out), ["k", "text"]);
        let text = out["text"].as_str().expect("a string leaf stays a string");
        let inner = text.strip_prefix('<').and_then(|t| t.strip_suffix('>')).expect("the literal text is kept");
        let decoded: Value = serde_json::from_str(inner).expect("json_encode gives JSON");
        prop_assert_eq!(decoded, any);
    }
}
