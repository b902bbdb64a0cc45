//! The rules as written, for the operator's window: shown by `GET /v1/rules`, and a trial of
//! other rules (`POST /v1/preview` with `rules`) checked on the loaded file's settings by the
//! same code as `relay check`.

use super::{Config, ConfigError};
use serde_json::{json, Map, Value};
use yaml_serde::Value as Yaml;

/// Where trial rules come from, in their problems.
const TRIAL: &str = "the rules given";

impl Config {
    /// The loaded rules as written (`name`, `on`, `if`, `actions` as `{"kind", ...}` with
    /// their templates as text, `then`, `after`, `unless`), in file order.
    pub fn written_rules(&self) -> Vec<Value> {
        let Ok(doc) = yaml_serde::from_str::<Yaml>(&self.source) else {
            return Vec::new();
        };
        let Some(Yaml::Sequence(rules)) = doc.get("rules") else {
            return Vec::new();
        };
        rules.iter().map(written_rule).collect()
    }

    /// This config with `yaml`'s rules (one rule, or a list) in place of the loaded rules of
    /// the same names (the others are kept, so a `then` may name them), checked as `relay
    /// check` checks a file; with the names of the rules given.
    pub fn with_trial_rules(&self, yaml: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let fail = |problem: String| ConfigError {
            source_name: TRIAL.into(),
            problems: vec![problem],
        };
        // Parsed alone first, so a syntax error's line and column are in the text given.
        let given: Yaml = yaml_serde::from_str(yaml).map_err(|e| fail(e.to_string()))?;
        let given = match given {
            Yaml::Sequence(list) => list,
            one @ Yaml::Mapping(_) => vec![one],
            _ => return Err(fail("must be a rule, or a list of rules".into())),
        };
        let mut names = Vec::new();
        for (i, rule) in given.iter().enumerate() {
            match rule.get("name").and_then(Yaml::as_str) {
                Some(n) => names.push(n.to_string()),
                None => return Err(fail(format!("rules[{i}].name: every rule needs a name"))),
            }
        }
        let mut doc: Yaml = yaml_serde::from_str(&self.source).map_err(|e| fail(e.to_string()))?;
        let mut rules = match doc.get("rules") {
            Some(Yaml::Sequence(r)) => r.clone(),
            _ => Vec::new(),
        };
        rules.retain(|r| {
            r.get("name")
                .and_then(Yaml::as_str)
                .is_none_or(|n| !names.iter().any(|g| g == n))
        });
        rules.extend(given);
        if let Some(m) = doc.as_mapping_mut() {
            m.insert("rules".into(), Yaml::Sequence(rules));
        }
        let text = yaml_serde::to_string(&doc).map_err(|e| fail(e.to_string()))?;
        let mut trial = Config::parse(&text, TRIAL)?;
        // Set after load (SMARTEMAILING_API_URL), so not in the text.
        trial.smartemailing.base_url = self.smartemailing.base_url.clone();
        Ok((trial, names))
    }
}

/// One rule as written, its keys in the order the API shows them.
fn written_rule(rule: &Yaml) -> Value {
    let field = |k: &str| {
        rule.get(k)
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(Value::Null)
    };
    let list = |k: &str| match field(k) {
        Value::Null => json!([]),
        v => v,
    };
    let actions: Vec<Value> = match rule.get("actions") {
        Some(Yaml::Sequence(a)) => a.iter().map(written_action).collect(),
        _ => Vec::new(),
    };
    json!({
        "name": field("name"),
        "on": list("on"),
        "if": field("if"),
        "actions": actions,
        "then": list("then"),
        "after": field("after"),
        "unless": field("unless"),
    })
}

/// `- kind: {...}` as `{"kind": kind, ...}`.
fn written_action(action: &Yaml) -> Value {
    let Some((kind, spec)) = action.as_mapping().and_then(|m| m.iter().next()) else {
        return Value::Null;
    };
    let mut out = Map::new();
    out.insert(
        "kind".into(),
        serde_json::to_value(kind).unwrap_or(Value::Null),
    );
    match serde_json::to_value(spec) {
        Ok(Value::Object(fields)) => out.extend(fields),
        Ok(Value::Null) | Err(_) => {}
        Ok(other) => {
            out.insert("value".into(), other);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "delivery: {retry_schedule: [1s]}\nrules:\n  - name: welcome\n    on: [contact.created]\n    if: \"contact.email != ''\"\n    actions:\n      - trigger_event: {name: welcome, payload: {first: '{{ contact.first_name }}'}}\n    then: [{rule: later, after: 1h}]\n  - name: later\n    actions: [{add_to_list: {list: 3}}]\n";

    #[test]
    fn the_rules_are_shown_as_written_with_their_templates() {
        let c = Config::parse(FILE, "t").unwrap();
        let rules = c.written_rules();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["name"], "welcome");
        assert_eq!(rules[0]["on"], json!(["contact.created"]));
        assert_eq!(rules[0]["if"], "contact.email != ''");
        assert_eq!(
            rules[0]["actions"][0],
            json!({"kind": "trigger_event", "name": "welcome", "payload": {"first": "{{ contact.first_name }}"}})
        );
        assert_eq!(rules[0]["then"], json!([{"rule": "later", "after": "1h"}]));
        assert_eq!(rules[1]["on"], json!([]));
        assert_eq!(rules[1]["after"], Value::Null);
    }

    #[test]
    fn trial_rules_replace_their_namesakes_and_keep_the_settings() {
        let mut c = Config::parse(FILE, "t").unwrap();
        c.override_base_url("http://se.test");
        let (t, names) = c
            .with_trial_rules("name: welcome\non: [order.created]\nactions: [{add_to_list: {list: 1}}]\nthen: [later]\n")
            .unwrap();
        assert_eq!(names, ["welcome"]);
        assert_eq!(t.rules.len(), 2);
        assert!(t.rule("welcome").unwrap().listens_for("order.created"));
        assert_eq!(t.smartemailing.base_url, "http://se.test");
        assert_eq!(t.delivery.retry_schedule.len(), 1);
    }

    #[test]
    fn a_broken_trial_template_is_named_as_relay_check_names_it() {
        let c = Config::parse(FILE, "t").unwrap();
        let err = c
            .with_trial_rules("- name: try\n  on: [x]\n  actions: [{trigger_event: {name: t, payload: {a: '{{ contact.first_nam }}'}}}]\n")
            .unwrap_err();
        assert!(
            err.problems[0].starts_with("rules[try].actions[0].trigger_event.payload.a: "),
            "{err}"
        );
        let err = c.with_trial_rules("[unclosed").unwrap_err();
        assert!(err.problems[0].contains("at line "), "{err}");
        let err = c.with_trial_rules("- on: [x]\n").unwrap_err();
        assert_eq!(err.problems[0], "rules[0].name: every rule needs a name");
    }
}
