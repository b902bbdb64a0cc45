//! The config file as written: the serde shapes, before any check. The type names show in
//! serde's messages ("expected struct RawRule"), so they stay as they are.

use super::settings::{DeliverySettings, SmartEmailingSettings};
use crate::domain::duration::HumanDuration;
use crate::rules::actions::RawAction;
use crate::security::outbound::OutboundPolicy;
use serde::Deserialize;
use yaml_serde::{Mapping, Value};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) smartemailing: SmartEmailingSettings,
    #[serde(default)]
    pub(super) delivery: DeliverySettings,
    #[serde(default)]
    pub(super) schedules: RawSchedules,
    #[serde(default)]
    pub(super) outbound: OutboundPolicy,
    #[serde(default)]
    pub(super) inbound: RawInbound,
    #[serde(default)]
    pub(super) server: super::ServerSettings,
    #[serde(default)]
    pub(super) retention: super::RetentionSettings,
    #[serde(default)]
    pub(super) rules: Vec<RawRule>,
    /// The names of rules that could not be read (their problems are already reported):
    /// other rules may still chain to them without a second, misleading problem.
    #[serde(skip)]
    pub(super) unreadable_rules: Vec<String>,
}

/// Reads the file. A YAML syntax error stops here, with its line and column; otherwise every
/// section and every rule is read on its own, so that each shape problem of the file is
/// reported (rules named by their name), and the rules that could be read are returned to be
/// checked further.
pub(super) fn read(text: &str) -> Result<(RawConfig, Vec<String>), Vec<String>> {
    // The whole file at once: the common case, and the YAML parser's line and column for the
    // first problem.
    let first = match from_value_or_text(Source::Text(text)) {
        Ok(raw) => return Ok((raw, Vec::new())),
        Err(e) => e,
    };
    let doc: Value = match yaml_serde::from_str(text) {
        Ok(Value::Mapping(m)) => Value::Mapping(m),
        // Not YAML, or not a mapping: the YAML parser's message says where.
        _ => return Err(vec![first.to_string()]),
    };
    let located = Located::from(&first);
    let mut problems = Vec::new();
    let mut settings = Mapping::new();
    let mut rules = Vec::new();
    let mut unreadable_rules = Vec::new();
    for (key, value) in doc.as_mapping().into_iter().flatten() {
        if key.as_str() == Some("rules") {
            match value {
                Value::Sequence(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match read_rule(i, item, &located) {
                            Ok(r) => rules.push(r),
                            Err((name, mut p)) => {
                                unreadable_rules.extend(name);
                                problems.append(&mut p);
                            }
                        }
                    }
                }
                Value::Null => {}
                _ => problems.push(located.problem("rules", "must be a list of rules".into())),
            }
            continue;
        }
        // Each section alone, so that one bad section does not hide another.
        let mut one = Mapping::new();
        one.insert(key.clone(), value.clone());
        match from_value_or_text(Source::Value(Value::Mapping(one))) {
            Ok(_) => {
                settings.insert(key.clone(), value.clone());
            }
            Err(e) => {
                let section = key
                    .as_str()
                    .map_or_else(|| format!("{key:?}"), str::to_string);
                problems.push(located.problem(&section, e.to_string()));
            }
        }
    }
    let mut raw = match from_value_or_text(Source::Value(Value::Mapping(settings))) {
        Ok(raw) => raw,
        Err(e) => return Err(vec![first.to_string(), e.to_string()]),
    };
    raw.rules = rules;
    raw.unreadable_rules = unreadable_rules;
    if problems.is_empty() {
        // Read in parts, the file is fine: the whole-file error was about something else.
        problems.push(first.to_string());
    }
    Ok((raw, problems))
}

/// Reads rule number `i`; its problems name it by its name (by its number when it has none)
/// and each action on its own.
fn read_rule(
    i: usize,
    item: &Value,
    located: &Located,
) -> Result<RawRule, (Option<String>, Vec<String>)> {
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let label = match &name {
        Some(n) => format!("rules[{n}]"),
        None => format!("rules[{i}]"),
    };
    let at = format!("rules[{i}]");
    let mut problems = Vec::new();
    // The actions are read one by one, the rest of the rule with none.
    let mut rest = item.clone();
    let actions = match rest.as_mapping_mut().and_then(|m| m.remove("actions")) {
        Some(Value::Sequence(a)) => a,
        Some(other) => {
            if let Some(m) = rest.as_mapping_mut() {
                m.insert("actions".into(), other);
            }
            Vec::new()
        }
        None => Vec::new(),
    };
    if let Some(m) = rest.as_mapping_mut() {
        m.entry("actions".into())
            .or_insert_with(|| Value::Sequence(Vec::new()));
    }
    let rule: Option<RawRule> = match from_value(rest) {
        Ok(r) => Some(r),
        Err(e) => {
            problems.push(located.relabel(&at, &label, e.to_string()));
            None
        }
    };
    let mut read = Vec::new();
    for (j, a) in actions.into_iter().enumerate() {
        match from_value::<RawAction>(a) {
            Ok(a) => read.push(a),
            Err(e) => problems.push(located.relabel(
                &format!("{at}.actions[{j}]"),
                &format!("{label}.actions[{j}]"),
                e.to_string(),
            )),
        }
    }
    match rule {
        Some(mut r) if problems.is_empty() => {
            r.actions = read;
            Ok(r)
        }
        _ => Err((name, problems)),
    }
}

/// Where the whole-file read stopped: its path (`rules[2].actions[0].trigger_event`) and
/// position, given to the problem found again at that place when read in parts.
struct Located {
    path: String,
    position: String,
}

impl Located {
    fn from(e: &yaml_serde::Error) -> Located {
        let text = e.to_string();
        let path = text.split_once(": ").map_or("", |(p, _)| p).to_string();
        let position = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        Located { path, position }
    }

    /// `{label}: {message}`, with the position when the whole-file read stopped at `at`.
    fn relabel(&self, at: &str, label: &str, message: String) -> String {
        let here = self.path == at
            || self
                .path
                .strip_prefix(at)
                .is_some_and(|r| r.starts_with('.') || r.starts_with('['));
        let position = if here { self.position.as_str() } else { "" };
        format!("{label}: {message}{position}")
    }

    /// A problem of a section, named by it.
    fn problem(&self, section: &str, message: String) -> String {
        self.relabel(section, section, message)
    }
}

/// Reads a value, actions written `- kind: {...}` as single-key maps rather than YAML tags.
fn from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, yaml_serde::Error> {
    yaml_serde::with::singleton_map_recursive::deserialize(v)
}

/// The file as text, or a part of it as a value.
enum Source<'a> {
    Text(&'a str),
    Value(Value),
}

fn from_value_or_text(s: Source) -> Result<RawConfig, yaml_serde::Error> {
    match s {
        Source::Text(t) => yaml_serde::with::singleton_map_recursive::deserialize(
            yaml_serde::Deserializer::from_str(t),
        ),
        Source::Value(v) => from_value(v),
    }
}

/// `inbound:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbound {
    #[serde(default)]
    pub(super) signatures: RawSignatures,
}

/// `inbound.signatures:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignatures {
    #[serde(default)]
    pub(super) events: Vec<String>,
    #[serde(default)]
    pub(super) smartemailing: Vec<String>,
}

/// `schedules:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedules {
    #[serde(default)]
    pub(super) time_zone: Option<String>,
    #[serde(default)]
    pub(super) birthday_at: Option<String>,
}

/// One entry of `rules:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: String,
    #[serde(default)]
    pub(super) on: Vec<String>,
    #[serde(rename = "if", default)]
    pub(super) condition: Option<String>,
    pub(super) actions: Vec<RawAction>,
    #[serde(default)]
    pub(super) then: Vec<RawThen>,
    #[serde(default)]
    pub(super) after: Option<HumanDuration>,
    #[serde(default)]
    pub(super) unless: Option<RawUnless>,
}

/// A rule's `unless:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnless {
    pub(super) event: String,
    #[serde(rename = "match")]
    pub(super) match_path: String,
}

/// One entry of a rule's `then:`: a rule name, or `{rule, after}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawThen {
    Name(String),
    Step(RawThenStep),
}

/// `{rule, after}` in a rule's `then:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThenStep {
    pub(super) rule: String,
    #[serde(default)]
    pub(super) after: Option<HumanDuration>,
}
