//! Matching events against rules and rendering each action into a frozen request.

use crate::domain::delivery::{AuthRef, Prepared};
use crate::domain::event::{Email, Event};
use crate::domain::smartemailing::{self, Endpoint};
use crate::rules::config::{ActionBody, Config, Rule, WebhookAuth, WebhookBody};
use crate::rules::template::{context, TemplateError, TemplateSet};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tera::Context;

/// Why an action produced no request.
#[derive(Debug, Clone, PartialEq)]
pub enum NotRendered {
    /// A template or shape error: permanent until the config is fixed (the delivery is dead).
    Failed(String),
    /// Nothing to send to, e.g. no recipient address (the delivery is skipped).
    Skipped(String),
}

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
                result: render_action(&config.templates, &config.outbound, a, event, &ctx),
            });
        }
    }
    out
}

fn failed(e: TemplateError) -> NotRendered {
    NotRendered::Failed(e.to_string())
}

fn render_action(
    t: &TemplateSet,
    outbound: &crate::security::outbound::OutboundPolicy,
    action: &crate::rules::config::Action,
    event: &Event,
    ctx: &Context,
) -> Result<Prepared, NotRendered> {
    let needs_recipient = !matches!(
        action.body,
        ActionBody::Webhook { .. } | ActionBody::Order { .. }
    );
    let recipient_addr = if needs_recipient {
        Some(recipient(t, action, event, ctx)?)
    } else {
        None
    };
    let email = recipient_addr.unwrap_or_default();
    match &action.body {
        ActionBody::TriggerEvent { name, payload } => {
            let name = t.render_str(name, ctx).map_err(failed)?;
            if name.trim().is_empty() {
                return Err(NotRendered::Failed(format!(
                    "{}: the trigger name rendered empty",
                    action.kind
                )));
            }
            let payload = match payload {
                Some(p) => t.render_tree(p, ctx).map_err(failed)?,
                None => json!({}),
            };
            if !payload.is_object() {
                return Err(NotRendered::Failed(
                    "trigger_event.payload: must render to an object".into(),
                ));
            }
            Ok(Prepared::SmartEmailing {
                endpoint: Endpoint::TriggerEvent,
                group: Value::Null,
                item: json!({"emailaddress": email, "name": name, "payload": payload}),
            })
        }
        ActionBody::Import {
            from_contact,
            fields,
            lists,
            custom_fields,
            settings,
        } => {
            let mut item = Map::new();
            item.insert("emailaddress".into(), Value::String(email));
            if *from_contact {
                item.extend(smartemailing::contact_fields_from_event(&event.contact));
            }
            match t.render_tree(fields, ctx).map_err(failed)? {
                Value::Object(f) => {
                    for (k, v) in f {
                        if k == "birthday" || k == "nameday" {
                            item.insert(k, normalise_date(&v));
                        } else {
                            item.insert(k, v);
                        }
                    }
                }
                _ => {
                    return Err(NotRendered::Failed(
                        "upsert_contact.fields: must render to an object".into(),
                    ))
                }
            }
            if !lists.is_empty() {
                let mut out = Vec::new();
                for l in lists {
                    let id =
                        as_id(&t.render_tree(&l.id, ctx).map_err(failed)?).ok_or_else(|| {
                            NotRendered::Failed(format!(
                                "{}: the list id must be a whole number",
                                action.kind
                            ))
                        })?;
                    out.push(json!({"id": id, "status": l.status}));
                }
                item.insert("contactlists".into(), Value::Array(out));
            }
            if !custom_fields.is_empty() {
                let mut out = Vec::new();
                for (id, node) in custom_fields {
                    match t.render_tree(node, ctx).map_err(failed)? {
                        Value::Array(opts) => {
                            let ids: Option<Vec<i64>> = opts.iter().map(as_id).collect();
                            let ids = ids.ok_or_else(|| {
                                NotRendered::Failed(format!(
                                    "custom_fields.{id}: options must be whole numbers"
                                ))
                            })?;
                            out.push(json!({"id": id, "options": ids}));
                        }
                        v => out.push(json!({"id": id, "value": scalar_text(&v)})),
                    }
                }
                item.insert("customfields".into(), Value::Array(out));
            }
            Ok(Prepared::SmartEmailing {
                endpoint: Endpoint::Import,
                group: settings.clone(),
                item: Value::Object(item),
            })
        }
        ActionBody::Send {
            endpoint,
            group,
            replace,
            template_variables,
            cellphone,
        } => {
            let mut group = t.render_tree(group, ctx).map_err(failed)?;
            for key in ["email_id", "sms_id"] {
                if let Some(v) = group.get(key).cloned() {
                    let id = as_id(&v).ok_or_else(|| {
                        NotRendered::Failed(format!(
                            "{}.{key}: must be a whole number",
                            action.kind
                        ))
                    })?;
                    group[key] = json!(id);
                }
            }
            let mut recipient_obj = json!({"emailaddress": email});
            if *endpoint == Endpoint::CustomSms {
                let phone = match cellphone {
                    Some(p) => t.render_str(p, ctx).map_err(failed)?,
                    None => event
                        .contact
                        .get("phone")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                };
                if phone.trim().is_empty() {
                    return Err(NotRendered::Skipped(
                        "send_sms: the contact has no phone number".into(),
                    ));
                }
                recipient_obj["cellphone"] = Value::String(phone);
            }
            let mut rep = Vec::new();
            for (key, node) in replace {
                let v = t.render_tree(node, ctx).map_err(failed)?;
                rep.push(json!({"key": key, "content": scalar_text(&v)}));
            }
            let mut task = json!({"recipient": recipient_obj, "replace": rep});
            if let Some(tv) = template_variables {
                task["template_variables"] = t.render_tree(tv, ctx).map_err(failed)?;
            }
            Ok(Prepared::SmartEmailing {
                endpoint: *endpoint,
                group,
                item: task,
            })
        }
        ActionBody::Order { order } => {
            let mut order = match t.render_tree(order, ctx).map_err(failed)? {
                Value::Object(o) => o,
                _ => {
                    return Err(NotRendered::Failed(
                        "upsert_order: must render to an object".into(),
                    ))
                }
            };
            if !order.contains_key("emailaddress") {
                let e = recipient(t, action, event, ctx)?;
                order.insert("emailaddress".into(), Value::String(e));
            }
            if let Some(Value::String(st)) = order.get("status") {
                if !smartemailing::ORDER_STATUSES.contains(&st.as_str()) {
                    return Err(NotRendered::Failed(format!(
                        "upsert_order.status: `{st}` must be one of {}",
                        smartemailing::ORDER_STATUSES.join(", ")
                    )));
                }
            }
            Ok(Prepared::SmartEmailing {
                endpoint: Endpoint::ImportOrders,
                group: smartemailing::default_order_settings(),
                item: Value::Object(order),
            })
        }
        ActionBody::Webhook {
            method,
            url,
            static_host,
            headers,
            content_type,
            auth,
            body,
        } => {
            let url = t.render_str(url, ctx).map_err(failed)?;
            // No SSRF through event data: the scheme, the allow-list, and the template's own host.
            let url = crate::security::outbound::check_rendered_url(
                static_host.as_deref(),
                &url,
                outbound,
            )
            .map_err(|e| NotRendered::Failed(format!("webhook.url: {e}")))?
            .to_string();
            let mut out_headers = Vec::new();
            for (k, v) in headers {
                let v = t.render_str(v, ctx).map_err(failed)?;
                crate::security::outbound::check_header_value(&v)
                    .map_err(|e| NotRendered::Failed(format!("webhook.headers.{k}: {e}")))?;
                out_headers.push((k.clone(), v));
            }
            let body = match body {
                None => None,
                Some(WebhookBody::Json(node)) => Some(
                    serde_json::to_string(&t.render_tree(node, ctx).map_err(failed)?)
                        .map_err(|e| NotRendered::Failed(e.to_string()))?,
                ),
                Some(WebhookBody::Text(p)) => Some(t.render_str(p, ctx).map_err(failed)?),
            };
            if body.is_some() {
                out_headers.push(("Content-Type".into(), content_type.clone()));
            }
            let auth = match auth {
                None => None,
                Some(WebhookAuth::Basic {
                    username,
                    password_secret,
                }) => Some(AuthRef::Basic {
                    username: t.render_str(username, ctx).map_err(failed)?,
                    password_secret: password_secret.clone(),
                }),
                Some(WebhookAuth::Bearer { secret }) => Some(AuthRef::Bearer {
                    secret: secret.clone(),
                }),
            };
            Ok(Prepared::Http {
                method: method.clone(),
                url,
                headers: out_headers,
                body,
                auth,
            })
        }
    }
}

fn recipient(
    t: &TemplateSet,
    action: &crate::rules::config::Action,
    event: &Event,
    ctx: &Context,
) -> Result<String, NotRendered> {
    let raw = match &action.email {
        Some(p) => t.render_str(p, ctx).map_err(failed)?,
        None => match event.email() {
            Some(e) => e.to_string(),
            None => {
                return Err(NotRendered::Skipped(format!(
                    "{}: the event has no contact.email and the action names no email",
                    action.kind
                )))
            }
        },
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(NotRendered::Skipped(format!(
            "{}: the recipient rendered empty",
            action.kind
        )));
    }
    Email::parse(raw)
        .map(|e| e.as_str().to_string())
        .map_err(|m| NotRendered::Failed(format!("{}.email: {m}", action.kind)))
}

/// A whole-number id from a number or a numeric string.
fn as_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn scalar_text(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    }
}

fn normalise_date(v: &Value) -> Value {
    // SmartEmailing wants "YYYY-MM-DD HH:MM:SS"; a bare date gets a zero time.
    match v {
        Value::String(s) if s.len() == 10 => Value::String(format!("{s} 00:00:00")),
        other => other.clone(),
    }
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
