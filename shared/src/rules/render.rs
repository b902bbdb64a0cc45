//! Matching events against rules and rendering each action into a frozen request (each
//! kind renders in `rules::actions`).

use crate::domain::delivery::Prepared;
use crate::domain::event::Event;
use crate::rules::actions;
pub use crate::rules::actions::NotRendered;
use crate::rules::config::{Config, Rule};
use crate::rules::template::context;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// One action of one matched rule, rendered (or not).
#[derive(Debug, Clone)]
pub struct RenderedAction {
    /// The rule's name.
    pub rule: String,
    /// The action's kind.
    pub action: &'static str,
    /// The action's position in the rule.
    pub index: usize,
    /// The frozen request, or why there is none.
    pub result: Result<Prepared, NotRendered>,
}

/// The rules an event runs: the named ones (a chain step), or those listening for its type.
pub fn matching_rules<'a>(
    config: &'a Config,
    event: &Event,
    only: Option<&[String]>,
) -> Vec<&'a Rule> {
    match only {
        Some(names) => names.iter().filter_map(|n| config.rule(n)).collect(),
        None => config
            .rules
            .iter()
            .filter(|r| r.listens_for(event.kind.as_str()))
            .collect(),
    }
}

/// Renders every action of every rule the event runs whose condition holds.
pub fn render_event(
    config: &Config,
    event: &Event,
    only: Option<&[String]>,
    now: DateTime<Utc>,
) -> Vec<RenderedAction> {
    let ctx = context(event, now);
    let mut out = Vec::new();
    for rule in matching_rules(config, event, only) {
        if let Some(cond) = &rule.condition {
            match config.templates.render_condition(cond, &ctx) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    // A broken condition fails every action of the rule, visibly.
                    for (index, a) in rule.actions.iter().enumerate() {
                        out.push(RenderedAction {
                            rule: rule.name.clone(),
                            action: a.kind,
                            index,
                            result: Err(NotRendered::Failed(e.to_string())),
                        });
                    }
                    continue;
                }
            }
        }
        for (index, a) in rule.actions.iter().enumerate() {
            out.push(RenderedAction {
                rule: rule.name.clone(),
                action: a.kind,
                index,
                result: actions::render(&config.templates, &config.outbound, a, event, &ctx),
            });
        }
    }
    out
}

/// A rendered request as `POST /v1/preview` and `relay render` show it, credentials masked.
pub fn preview_request(config: &Config, prepared: &Prepared) -> Value {
    match prepared {
        Prepared::SmartEmailing {
            endpoint,
            group,
            item,
        } => json!({
            "method": "POST",
            "url": format!("{}{}", config.smartemailing.base_url, endpoint.path()),
            "headers": {"Content-Type": "application/json", "Accept": "application/json", "Authorization": "***"},
            "body": endpoint.body(group, vec![item.clone()]),
        }),
        Prepared::Http {
            method,
            url,
            headers,
            body,
            auth,
        } => {
            let mut h = Map::new();
            for (k, v) in headers {
                h.insert(k.clone(), Value::String(v.clone()));
            }
            if auth.is_some() {
                h.insert("Authorization".into(), Value::String("***".into()));
            }
            let body = match body {
                Some(text) => serde_json::from_str::<Value>(text)
                    .unwrap_or_else(|_| Value::String(text.clone())),
                None => Value::Null,
            };
            json!({"method": method, "url": url, "headers": h, "body": body})
        }
    }
}
