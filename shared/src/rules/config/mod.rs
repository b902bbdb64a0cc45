//! The rules file: parsed once, validated completely at load, then immutable.
//!
//! `raw` is the file as written, `settings` its settings sections, `model` the compiled rules,
//! and `compile` the checks from one to the other; each action kind compiles in
//! `rules::actions`.

mod compile;
mod model;
mod nesting;
mod raw;
mod service;
mod settings;
mod written;

pub use crate::rules::actions::{
    Action, ActionBody, ImportItem, ListEntry, OrderItem, SendTask, TriggerEvent, WebhookAuth,
    WebhookBody, WebhookRequest,
};
pub use crate::security::outbound::OutboundPolicy;
pub use model::{InboundSignatures, Rule, Schedules, ThenStep, TypePattern, Unless};
pub use service::{RetentionSettings, ServerSettings};
pub use settings::{BreakerSettings, DeliverySettings, SmartEmailingSettings};

use crate::rules::template::TemplateSet;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The largest rules file accepted, in bytes: about a hundred times the example config, and a
/// bound on what the YAML parser is given (its own limits bound nesting and alias expansion,
/// not the size of a scalar).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// The problem of a file over [`MAX_CONFIG_BYTES`].
fn too_large(size: u64) -> String {
    format!("the file is {size} bytes; a rules file may be at most {MAX_CONFIG_BYTES} bytes")
}

/// A config that failed to load; every problem found, each naming its place.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid config {source_name}:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// The file (or other source) the config came from.
    pub source_name: String,
    /// Each problem, naming the rule and field.
    pub problems: Vec<String>,
}

/// The loaded, validated, immutable config.
#[derive(Debug)]
pub struct Config {
    /// Where SmartEmailing is.
    pub smartemailing: SmartEmailingSettings,
    /// Delivery settings.
    pub delivery: DeliverySettings,
    /// The time-driven runs.
    pub schedules: Schedules,
    /// Where `webhook` actions may send.
    pub outbound: OutboundPolicy,
    /// Signed inbound routes.
    pub signatures: InboundSignatures,
    /// The bounds of `relay serve`'s HTTP server.
    pub server: ServerSettings,
    /// How long records are kept.
    pub retention: RetentionSettings,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// Every template, compiled.
    pub templates: TemplateSet,
    /// Names of the secrets webhook actions reference.
    pub secret_names: Vec<String>,
    by_name: HashMap<String, usize>,
    /// The text it was read from (rules and settings, never a secret's value): the rules as
    /// written for `GET /v1/rules`, and the base a trial of other rules is checked on.
    source: String,
}

impl Config {
    /// Reads and validates a config file; one larger than [`MAX_CONFIG_BYTES`] is refused
    /// without being read whole.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source_name = path.display().to_string();
        let fail = |problem: String| ConfigError {
            source_name: source_name.clone(),
            problems: vec![problem],
        };
        let file =
            std::fs::File::open(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
        // One byte past the limit is enough to know the file is too large.
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(format!("cannot read the file: {e}")))?;
        if bytes.len() > MAX_CONFIG_BYTES {
            let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
            return Err(fail(too_large(size)));
        }
        // The words `read_to_string` gave before the size check.
        let text = String::from_utf8(bytes)
            .map_err(|_| fail("cannot read the file: stream did not contain valid UTF-8".into()))?;
        Self::parse(&text, &source_name)
    }

    /// Validates a config given as YAML text.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            source_name: source_name.to_string(),
            problems,
        };
        if text.len() > MAX_CONFIG_BYTES {
            return Err(fail(vec![too_large(text.len() as u64)]));
        }
        nesting::check(text).map_err(|p| fail(vec![p]))?;
        let (raw, mut problems) = raw::read(text).map_err(fail)?;
        // The rules that could be read are checked too: every problem of the file at once.
        match compile::compile(raw) {
            Ok(config) if problems.is_empty() => Ok(Config {
                source: text.to_string(),
                ..config
            }),
            Ok(_) => Err(fail(problems)),
            Err(mut more) => {
                problems.append(&mut more);
                Err(fail(problems))
            }
        }
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.by_name.get(name).map(|&i| &self.rules[i])
    }

    /// Overrides the SmartEmailing base URL (the `SMARTEMAILING_API_URL` variable).
    pub fn override_base_url(&mut self, url: &str) {
        self.smartemailing.base_url = url.trim_end_matches('/').to_string();
    }

    /// The longest chain of `then` steps in the config.
    pub fn max_chain_depth(&self) -> usize {
        self.rules.len()
    }
}

#[cfg(test)]
mod tests {
    use super::compile::parse_pattern;
    use super::*;
    use crate::domain::smartemailing;
    use std::time::Duration;

    fn problems(yaml: &str) -> Vec<String> {
        Config::parse(yaml, "test").unwrap_err().problems
    }

    #[test]
    fn a_minimal_config_loads_with_defaults() {
        let c = Config::parse("rules: []", "t").unwrap();
        assert_eq!(c.smartemailing.base_url, smartemailing::DEFAULT_BASE_URL);
        assert_eq!(c.delivery.retry_schedule.len(), 7);
        assert_eq!(c.delivery.batch_window.get(), Duration::from_millis(200));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let p = problems("rules:\n  - name: a\n    on: [x]\n    actions: [{trigger_event: {name: a, colour: red}}]\n");
        assert!(p[0].contains("colour"), "{p:?}");
        let p = problems("delivery: {timeot: 3s}\n");
        assert!(p[0].contains("timeot"), "{p:?}");
        let p = problems("rules:\n  - name: a\n    actions: [{teleport: {}}]\n");
        assert!(p[0].contains("teleport"), "{p:?}");
    }

    #[test]
    fn missing_then_duplicates_and_loops_are_named() {
        let p = problems(
            "rules:\n  - {name: a, on: [x], actions: [{add_to_list: {list: 1}}], then: [b]}\n  - {name: b, actions: [{add_to_list: {list: 1}}], then: [a]}\n  - {name: b, actions: [{add_to_list: {list: 1}}], then: [zz]}\n",
        );
        let all = p.join("\n");
        assert!(all.contains("rules[b].name"), "{all}");
        assert!(all.contains("no rule is named `zz`"), "{all}");
        assert!(all.contains("the chain loops"), "{all}");
    }

    #[test]
    fn a_broken_template_names_rule_and_field() {
        let p = problems("rules:\n  - name: welcome\n    on: [x]\n    actions: [{trigger_event: {name: w, payload: {a: '{{ contact.first_name'}}}]\n");
        assert!(
            p[0].starts_with("rules[welcome].actions[0].trigger_event.payload.a"),
            "{p:?}"
        );
    }

    #[test]
    fn a_broken_replace_template_names_its_key_in_each_send_action() {
        for (action, extra) in [
            ("send_email", "email_id: 1, sender: {from: a@example.com, sender_name: A, reply_to: a@example.com}"),
            (
                "send_transactional_email",
                "email_id: 1, sender: {from: a@example.com, sender_name: A, reply_to: a@example.com}",
            ),
            ("send_sms", "sms_id: 1"),
        ] {
            let p = problems(&format!(
                "rules:\n  - name: r\n    on: [x]\n    actions: [{{{action}: {{{extra}, replace: {{first_name: '{{{{ contact.first_name'}}}}}}]\n"
            ));
            let place = format!("rules[r].actions[0].{action}.replace.first_name");
            assert!(p.iter().any(|e| e.starts_with(&place)), "{action}: {p:?}");
        }
    }

    #[test]
    fn webhooks_cannot_set_authorization_headers() {
        let p = problems("rules:\n  - name: a\n    on: [x]\n    actions: [{webhook: {url: 'https://x.example.com', headers: {Authorization: 'Bearer x'}}}]\n");
        assert!(p[0].contains("headers.Authorization"), "{p:?}");
    }

    #[test]
    fn a_bad_secret_name_is_reported_once_under_its_own_action() {
        let p = problems(
            "rules:\n  - name: a\n    on: [x]\n    actions:\n      - {webhook: {url: 'https://x.example.com', auth: {bearer_secret: 'bad name'}}}\n      - {webhook: {url: 'https://x.example.com', auth: {bearer_secret: good}}}\n",
        );
        let about_it: Vec<_> = p.iter().filter(|e| e.contains("`bad name`")).collect();
        assert_eq!(
            about_it,
            ["rules[a].actions[0].webhook.auth: secret name `bad name` must be letters, digits, `_` or `-`"],
            "{p:?}"
        );
    }

    #[test]
    fn every_problem_of_the_file_is_reported_with_the_rule_named() {
        let p = problems(
            "delivery: {timeot: 3s}\nrules:\n  - name: welcome\n    on: [x]\n    actions:\n      - trigger_event: {name: a, colour: red}\n      - add_to_list: {list: 1, status: x}\n    then: [broken]\n  - name: broken\n    on: [x]\n    colour: blue\n    actions: [{add_to_list: {list: 1}}]\n  - name: typo\n    on: [x]\n    actions: [{trigger_event: {name: a, payload: {n: '{{ contact.first_nam }}'}}}]\n",
        );
        let all = p.join("\n");
        assert_eq!(p.len(), 5, "{all}\n{p:?}");
        assert!(
            p[0].starts_with("delivery: unknown field `timeot`"),
            "{all}"
        );
        // The whole-file read stopped first here: that problem keeps its line and column.
        assert!(p[0].ends_with("at line 1 column 12"), "{all}");
        assert!(
            p[1].starts_with("rules[welcome].actions[0]: unknown field `colour`"),
            "{all}"
        );
        assert!(
            p[2].starts_with("rules[welcome].actions[1]: unknown field `status`"),
            "{all}"
        );
        assert!(
            p[3].starts_with("rules[broken]: unknown field `colour`"),
            "{all}"
        );
        assert!(
            p[4].starts_with("rules[typo].actions[0].trigger_event.payload.n: `contact.first_nam`: the contact has no field `first_nam`; did you mean first_name?"),
            "{all}"
        );
        // `then: [broken]` names a rule that exists, though it could not be read.
        assert!(!all.contains("no rule is named"), "{all}");
    }

    #[test]
    fn a_yaml_syntax_error_keeps_its_line_and_column() {
        let p = problems("rules:\n  - name: a\n    on: [x\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("line"), "{p:?}");
    }

    #[test]
    fn an_unless_path_into_the_contact_is_checked() {
        let p = problems("rules:\n  - {name: a, on: [x], after: 1h, unless: {event: y, match: contact.emial}, actions: [{add_to_list: {list: 1}}]}\n");
        assert!(
            p[0].starts_with("rules[a].unless.match: `contact.emial`"),
            "{p:?}"
        );
        assert!(p[0].contains("did you mean email?"), "{p:?}");
    }

    #[test]
    fn patterns_match() {
        assert!(parse_pattern("order.*").unwrap().matches("order.created"));
        assert!(!parse_pattern("order.*").unwrap().matches("orders"));
        assert!(parse_pattern("a*b").is_err());
    }
}
