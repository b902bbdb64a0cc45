//! Structural rendering with hostile data: any JSON value, placed in the event's data, is
//! rendered through a fixed body template. When rendering succeeds, the output must be valid
//! JSON with exactly the template's keys, literal leaves unchanged, and string data spliced
//! in verbatim.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use relay_shared::domain::event::{Event, EventId, EventType};
use relay_shared::security::limits::{check_json, InputLimits};
use relay_shared::rules::template::{TemplateSet, Vars};
use serde_json::{json, Map, Value};

fuzz_target!(|data: &[u8]| {
    // Valid JSON is used as it is; anything else becomes one string of its text.
    let value = check_json(data, &InputLimits::default())
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
    let template = json!({
        "greeting": "Hi {{ data.name }}!",
        "raw": "{{ data.name }}",
        "nested": {"list": ["{{ data.name }}", "<{{ data.name }}>"], "n": 5, "lit": "{ \"x\": 1 }"},
        "plain": "no template here"
    });
    let mut set = TemplateSet::new();
    let tree = set
        .compile_tree("fuzz.body", &template)
        .expect("the template compiles");
    let mut fields = Map::new();
    fields.insert("name".into(), value.clone());
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
    let event = Event {
        id: EventId::parse("fuzz").unwrap(),
        kind: EventType::parse("fuzz").unwrap(),
        occurred_at: now,
        contact: Map::new(),
        data: fields,
    };
    let Ok(out) = set.render_tree(&tree, &Vars::new(&event, now)) else {
        return;
    };
    let text = serde_json::to_string(&out).expect("rendered JSON serialises");
    let back: Value = serde_json::from_str(&text).expect("rendered JSON parses");
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&back).unwrap(), ["greeting", "nested", "plain", "raw"]);
    assert_eq!(keys(&back["nested"]).unwrap(), ["list", "lit", "n"]);
    assert_eq!(back["nested"]["list"].as_array().map(Vec::len), Some(2));
    assert_eq!(back["nested"]["n"], json!(5));
    assert_eq!(back["nested"]["lit"], json!("{ \"x\": 1 }"));
    assert_eq!(back["plain"], json!("no template here"));
    if let Value::String(s) = &value {
        assert_eq!(back["greeting"], json!(format!("Hi {s}!")));
        assert_eq!(back["raw"], value);
        assert_eq!(back["nested"]["list"][1], json!(format!("<{s}>")));
    }
});
