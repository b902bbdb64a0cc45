//! From the file as written to the validated config: every check, every template compiled,
//! every problem collected (in file order) rather than the first one only.

use super::model::{InboundSignatures, Rule, Schedules, ThenStep, TypePattern, Unless};
use super::raw::{RawConfig, RawRule, RawSchedules, RawSignatures, RawThen, RawUnless};
use super::settings::SmartEmailingSettings;
use super::Config;
use crate::domain::event::EventType;
use crate::rules::actions::{self, Action, ActionBody, WebhookRequest};
use crate::rules::dates::AccountDates;
use crate::rules::references;
use crate::rules::template::{Piece, TemplateSet};
use crate::security::outbound::{self, OutboundPolicy};
use std::collections::HashMap;

/// Compiles the whole file; the config, or every problem found.
pub(super) fn compile(raw: RawConfig) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let base = raw.smartemailing.base_url.trim_end_matches('/').to_string();
    check_settings(&raw, &base, &mut problems);

    let dates = account_dates(&raw.smartemailing, &mut problems);
    let mut templates = TemplateSet::with_dates(dates);
    let mut by_name = HashMap::new();
    let rules: Vec<Rule> = raw
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| compile_rule(&mut templates, &mut by_name, i, r, &mut problems))
        .collect();
    check_chains(&rules, &by_name, &raw.unreadable_rules, &mut problems);
    check_webhook_hosts(&rules, &raw.outbound, &mut problems);
    check_signature_names(&raw.inbound.signatures, &mut problems);
    let schedules = compile_schedules(&raw.schedules, &mut problems);
    super::service::check(&raw.server, &raw.retention, &mut problems);

    if !problems.is_empty() {
        return Err(problems);
    }
    let secret_names = secret_names(&rules, &raw.inbound.signatures);
    Ok(Config {
        smartemailing: SmartEmailingSettings {
            base_url: base,
            ..raw.smartemailing
        },
        delivery: raw.delivery,
        schedules,
        outbound: raw.outbound,
        signatures: InboundSignatures {
            events: raw.inbound.signatures.events,
            smartemailing: raw.inbound.signatures.smartemailing,
        },
        server: raw.server,
        retention: raw.retention,
        rules,
        templates,
        secret_names,
        by_name,
        source: String::new(),
    })
}

/// The SmartEmailing and delivery settings.
fn check_settings(raw: &RawConfig, base: &str, problems: &mut Vec<String>) {
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        problems.push(format!("smartemailing.base_url: `{base}` must start with https:// (or http:// for local tests)"));
    }
    let delivery = &raw.delivery;
    if delivery.timeout.get().is_zero() {
        problems.push("delivery.timeout: must be more than zero".into());
    }
    if !(delivery.max_requests_per_second >= 0.0 && delivery.max_requests_per_second.is_finite()) {
        problems.push("delivery.max_requests_per_second: must be a number of calls per second (0 for no limit)".into());
    }
    if delivery.breaker.open_after == 0 {
        problems.push("delivery.breaker.open_after: must be at least 1".into());
    }
    let schedule: std::time::Duration = delivery.retry_schedule.iter().map(|d| d.get()).sum();
    if delivery.max_age.get() <= schedule {
        problems.push(format!("delivery.max_age: must be longer than the whole retry_schedule ({}), or deliveries die before their retries are spent", humantime::format_duration(schedule)));
    }
}

/// The account's time zone and date custom fields.
fn account_dates(se: &SmartEmailingSettings, problems: &mut Vec<String>) -> AccountDates {
    let mut dates = AccountDates {
        custom_fields: se.date_custom_fields.clone(),
        ..AccountDates::default()
    };
    match se.time_zone.parse::<chrono_tz::Tz>() {
        Ok(z) => dates.zone = z,
        Err(_) => problems.push(format!(
            "smartemailing.time_zone: `{}` is not an IANA time zone such as Europe/Prague",
            se.time_zone
        )),
    }
    if let Some(bad) = se.date_custom_fields.iter().find(|id| **id <= 0) {
        problems.push(format!(
            "smartemailing.date_custom_fields: `{bad}` is not a custom-field id"
        ));
    }
    dates
}

/// Compiles rule number `i`, registering its name; its problems are named `rules[name]`.
fn compile_rule(
    templates: &mut TemplateSet,
    by_name: &mut HashMap<String, usize>,
    i: usize,
    r: &RawRule,
    problems: &mut Vec<String>,
) -> Rule {
    let label = if r.name.is_empty() {
        format!("rules[{i}]")
    } else {
        format!("rules[{}]", r.name)
    };
    check_rule_name(&label, &r.name, problems);
    if by_name.contains_key(&r.name) {
        problems.push(format!(
            "{label}.name: the name `{}` is used by more than one rule",
            r.name
        ));
    } else {
        by_name.insert(r.name.clone(), i);
    }
    let on = compile_on(&label, &r.on, problems);
    let condition = compile_condition(templates, &label, r.condition.as_deref(), problems);
    let actions = compile_actions(templates, &label, r, problems);
    let then = r.then.iter().map(then_step).collect();
    let unless = r
        .unless
        .as_ref()
        .map(|u| compile_unless(&label, r, u, problems));
    if r.after.is_some() && r.on.is_empty() {
        problems.push(format!("{label}.after: a rule without `on` is delayed by the `after` of the step that chains to it"));
    }
    Rule {
        name: r.name.clone(),
        on,
        condition,
        actions,
        then,
        after: r.after.map(|a| a.get()),
        unless,
    }
}

fn check_rule_name(label: &str, name: &str, problems: &mut Vec<String>) {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push(format!(
            "{label}.name: `{name}` must be lowercase letters, digits and `-`"
        ));
    }
}

fn compile_on(label: &str, on: &[String], problems: &mut Vec<String>) -> Vec<TypePattern> {
    let mut patterns = Vec::new();
    for (j, pat) in on.iter().enumerate() {
        match parse_pattern(pat) {
            Ok(p) => patterns.push(p),
            Err(m) => problems.push(format!("{label}.on[{j}]: {m}")),
        }
    }
    patterns
}

fn compile_condition(
    templates: &mut TemplateSet,
    label: &str,
    condition: Option<&str>,
    problems: &mut Vec<String>,
) -> Option<Piece> {
    let expr = condition?;
    match templates.compile_condition(&format!("{label}.if"), expr) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    }
}

fn compile_actions(
    templates: &mut TemplateSet,
    label: &str,
    r: &RawRule,
    problems: &mut Vec<String>,
) -> Vec<Action> {
    if r.actions.is_empty() {
        problems.push(format!("{label}.actions: a rule needs at least one action"));
    }
    let mut compiled = Vec::new();
    for (j, a) in r.actions.iter().enumerate() {
        match actions::compile(templates, &format!("{label}.actions[{j}]"), a) {
            Ok(action) => compiled.push(action),
            Err(mut errs) => problems.append(&mut errs),
        }
    }
    compiled
}

fn then_step(t: &RawThen) -> ThenStep {
    match t {
        RawThen::Name(n) => ThenStep {
            rule: n.clone(),
            after: None,
        },
        RawThen::Step(s) => ThenStep {
            rule: s.rule.clone(),
            after: s.after.map(|a| a.get()),
        },
    }
}

fn compile_unless(label: &str, r: &RawRule, u: &RawUnless, problems: &mut Vec<String>) -> Unless {
    if let Err(m) = EventType::parse(&u.event) {
        problems.push(format!("{label}.unless.event: {m}"));
    }
    if !valid_path(&u.match_path) {
        problems.push(format!(
            "{label}.unless.match: `{}` must be a dotted path into the event such as data.cart_id or contact.email",
            u.match_path
        ));
    } else if let Err(m) = references::check_path(&u.match_path) {
        problems.push(format!("{label}.unless.match: {m}"));
    }
    if r.after.is_none() {
        problems.push(format!(
            "{label}.unless: only a delayed rule can be cancelled; give the rule an `after`"
        ));
    }
    Unless {
        event: u.event.clone(),
        match_path: u.match_path.clone(),
    }
}

/// Every `then` names a rule (one that could not be read counts: its problem is reported),
/// and no chain comes back to where it started.
fn check_chains(
    rules: &[Rule],
    by_name: &HashMap<String, usize>,
    unreadable: &[String],
    problems: &mut Vec<String>,
) {
    for rule in rules {
        for (j, step) in rule.then.iter().enumerate() {
            let next = &step.rule;
            if !by_name.contains_key(next) && !unreadable.contains(next) {
                problems.push(format!(
                    "rules[{}].then[{j}]: no rule is named `{next}`",
                    rule.name
                ));
            }
        }
    }
    if let Some(cycle) = find_chain_loop(rules, by_name) {
        problems.push(format!(
            "rules[{}].then: the chain loops: {}",
            cycle[0],
            cycle.join(" → ")
        ));
    }
}

/// Webhook targets written out in the config must be allowed (templated hosts are checked
/// when rendered).
fn check_webhook_hosts(rules: &[Rule], policy: &OutboundPolicy, problems: &mut Vec<String>) {
    for rule in rules {
        for (j, a) in rule.actions.iter().enumerate() {
            if let ActionBody::Webhook(WebhookRequest {
                static_host: Some(host),
                ..
            }) = &a.body
            {
                let probe = format!("https://{host}/");
                if let Err(e) = outbound::check_rendered_url(Some(host), &probe, policy) {
                    problems.push(format!(
                        "rules[{}].actions[{j}].webhook.url: {e}",
                        rule.name
                    ));
                }
            }
        }
    }
}

fn check_signature_names(signatures: &RawSignatures, problems: &mut Vec<String>) {
    for (route, names) in [
        ("events", &signatures.events),
        ("smartemailing", &signatures.smartemailing),
    ] {
        for n in names {
            if !actions::valid_secret_name(n) {
                problems.push(format!("inbound.signatures.{route}: secret name `{n}` must be letters, digits, `_` or `-`"));
            }
        }
    }
}

/// Every secret the config names: the webhooks' credentials and the inbound signing keys.
fn secret_names(rules: &[Rule], signatures: &RawSignatures) -> Vec<String> {
    let mut names: Vec<String> = rules
        .iter()
        .flat_map(|r| &r.actions)
        .filter_map(Action::secret_name)
        .chain(signatures.events.iter().map(String::as_str))
        .chain(signatures.smartemailing.iter().map(String::as_str))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn compile_schedules(raw: &RawSchedules, problems: &mut Vec<String>) -> Schedules {
    let mut schedules = Schedules::default();
    if let Some(tz) = &raw.time_zone {
        match tz.parse::<chrono_tz::Tz>() {
            Ok(z) => schedules.time_zone = z,
            Err(_) => problems.push(format!(
                "schedules.time_zone: `{tz}` is not an IANA time zone such as Europe/Prague"
            )),
        }
    }
    if let Some(at) = &raw.birthday_at {
        match chrono::NaiveTime::parse_from_str(at, "%H:%M") {
            Ok(t) => schedules.birthday_at = t,
            Err(_) => problems.push(format!(
                "schedules.birthday_at: `{at}` must be a time written HH:MM"
            )),
        }
    }
    schedules
}

/// Whether `p` is a dotted path into the event: `data.x`, `contact.y`, `event.z`, ...
fn valid_path(p: &str) -> bool {
    let mut parts = p.split('.');
    matches!(parts.next(), Some("data" | "contact" | "event"))
        && p.split('.').count() >= 2
        && p.split('.').all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
}

/// Parses one `on` pattern: an event type, or a prefix ending in `*`.
pub(super) fn parse_pattern(p: &str) -> Result<TypePattern, String> {
    let (body, prefix) = match p.strip_suffix('*') {
        Some(b) => (b, true),
        None => (p, false),
    };
    if body.contains('*') {
        return Err(format!("`{p}`: only a trailing `*` is allowed"));
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "`{p}` is not an event type (lowercase letters, digits, `_`, `.`, `-`)"
        ));
    }
    if prefix {
        Ok(TypePattern::Prefix(body.to_string()))
    } else if body.is_empty() {
        Err("an empty event type".into())
    } else {
        Ok(TypePattern::Exact(body.to_string()))
    }
}

fn find_chain_loop(rules: &[Rule], by_name: &HashMap<String, usize>) -> Option<Vec<String>> {
    // Depth-first search with colours; a grey node met again closes a loop.
    fn visit(
        i: usize,
        rules: &[Rule],
        by_name: &HashMap<String, usize>,
        colour: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        colour[i] = 1;
        stack.push(i);
        for step in &rules[i].then {
            let Some(&j) = by_name.get(&step.rule) else {
                continue;
            };
            if colour[j] == 1 {
                let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                let mut names: Vec<String> = stack[start..]
                    .iter()
                    .map(|&k| rules[k].name.clone())
                    .collect();
                names.push(rules[j].name.clone());
                return Some(names);
            }
            if colour[j] == 0 {
                if let Some(c) = visit(j, rules, by_name, colour, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        colour[i] = 2;
        None
    }
    let mut colour = vec![0u8; rules.len()];
    for i in 0..rules.len() {
        if colour[i] == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(i, rules, by_name, &mut colour, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}
