//! The actions a rule can take, one module per kind. Each module holds the kind's spec as
//! written in the YAML, its compile (spec → compiled body, every template compiled and every
//! problem named) and its render (compiled body + event → frozen request). This module
//! dispatches on the kind and holds what the kinds share.

mod lists;
mod send;
mod send_email;
mod send_sms;
mod send_transactional_email;
mod trigger_event;
mod upsert_contact;
mod upsert_order;
mod webhook;

pub use send::SendTask;
pub use trigger_event::TriggerEvent;
pub use upsert_contact::{ImportItem, ListEntry};
pub use upsert_order::{OrderItem, CANCELLED};
pub(crate) use webhook::valid_secret_name;
pub use webhook::{WebhookAuth, WebhookBody, WebhookRequest};

use crate::domain::delivery::Prepared;
use crate::domain::event::{Email, Event};
use crate::rules::template::{Node, Piece, TemplateError, TemplateSet, Vars};
use crate::security::outbound::OutboundPolicy;
use serde::Deserialize;
use serde_json::{Map, Value};

/// One compiled action of a rule.
#[derive(Debug, Clone)]
pub struct Action {
    /// The action's kind as written in the config, e.g. `add_to_list`.
    pub kind: &'static str,
    /// The recipient's address (defaults to `contact.email`).
    pub email: Option<Piece>,
    /// What it renders into.
    pub body: ActionBody,
}

impl Action {
    /// The secret the action authenticates with, if any (only webhooks name one).
    pub(crate) fn secret_name(&self) -> Option<&str> {
        match &self.body {
            ActionBody::Webhook(w) => w.auth.as_ref().map(WebhookAuth::secret_name),
            _ => None,
        }
    }
}

/// What an action renders into.
#[derive(Debug, Clone)]
pub enum ActionBody {
    /// An item of `/trigger-event`.
    TriggerEvent(TriggerEvent),
    /// An item of `/import`.
    Import(ImportItem),
    /// A task of one of the send endpoints.
    Send(SendTask),
    /// An order of `/import-orders`.
    Order(OrderItem),
    /// A request to any HTTP endpoint.
    Webhook(WebhookRequest),
}

/// Why an action produced no request.
#[derive(Debug, Clone, PartialEq)]
pub enum NotRendered {
    /// A template or shape error: permanent until the config is fixed (the delivery is dead).
    Failed(String),
    /// Nothing to send to, e.g. no recipient address (the delivery is skipped).
    Skipped(String),
}

// The variants' order and the specs' names show in serde's messages ("expected one of ...",
// "expected struct ListSpec"): they are part of what a user reads.
/// An action as written in the config: `- kind: {...}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum RawAction {
    TriggerEvent(trigger_event::TriggerEventSpec),
    UpsertContact(upsert_contact::UpsertContactSpec),
    AddToList(lists::ListSpec),
    RemoveFromList(lists::ListSpec),
    Unsubscribe(lists::ListSpec),
    MoveToList(lists::MoveSpec),
    SendEmail(send_email::SendEmailSpec),
    SendTransactionalEmail(send_transactional_email::SendTransactionalSpec),
    SendSms(send_sms::SendSmsSpec),
    UpsertOrder(Map<String, Value>),
    Webhook(webhook::WebhookSpec),
}

impl RawAction {
    /// The kind as written in the config.
    fn kind(&self) -> &'static str {
        match self {
            RawAction::TriggerEvent(_) => "trigger_event",
            RawAction::UpsertContact(_) => "upsert_contact",
            RawAction::AddToList(_) => "add_to_list",
            RawAction::RemoveFromList(_) => "remove_from_list",
            RawAction::Unsubscribe(_) => "unsubscribe",
            RawAction::MoveToList(_) => "move_to_list",
            RawAction::SendEmail(_) => "send_email",
            RawAction::SendTransactionalEmail(_) => "send_transactional_email",
            RawAction::SendSms(_) => "send_sms",
            RawAction::UpsertOrder(_) => "upsert_order",
            RawAction::Webhook(_) => "webhook",
        }
    }

    /// The recipient template, for the kinds that send to a contact.
    fn email(&self) -> Option<&str> {
        match self {
            RawAction::TriggerEvent(a) => a.email.as_deref(),
            RawAction::UpsertContact(a) => a.email.as_deref(),
            RawAction::AddToList(a) | RawAction::RemoveFromList(a) | RawAction::Unsubscribe(a) => {
                a.email.as_deref()
            }
            RawAction::MoveToList(a) => a.email.as_deref(),
            RawAction::SendEmail(a) => a.email.as_deref(),
            RawAction::SendTransactionalEmail(a) => a.email.as_deref(),
            RawAction::SendSms(a) => a.email.as_deref(),
            RawAction::UpsertOrder(_) | RawAction::Webhook(_) => None,
        }
    }
}

/// Compiles one action; `place` names it, e.g. `rules[welcome].actions[0]`. Every problem is
/// returned, each naming its field.
pub(crate) fn compile(
    templates: &mut TemplateSet,
    place: &str,
    raw: &RawAction,
) -> Result<Action, Vec<String>> {
    let mut c = Compiler {
        templates,
        problems: Vec::new(),
    };
    let kind = raw.kind();
    let p = format!("{place}.{kind}");
    let body = match raw {
        RawAction::TriggerEvent(a) => {
            ActionBody::TriggerEvent(trigger_event::compile(&mut c, &p, a))
        }
        RawAction::UpsertContact(a) => ActionBody::Import(upsert_contact::compile(&mut c, &p, a)),
        RawAction::AddToList(a) => ActionBody::Import(lists::compile(&mut c, &p, a, "confirmed")),
        RawAction::RemoveFromList(a) => {
            ActionBody::Import(lists::compile(&mut c, &p, a, "removed"))
        }
        RawAction::Unsubscribe(a) => {
            ActionBody::Import(lists::compile(&mut c, &p, a, "unsubscribed"))
        }
        RawAction::MoveToList(a) => ActionBody::Import(lists::compile_move(&mut c, &p, a)),
        RawAction::SendEmail(a) => ActionBody::Send(send_email::compile(&mut c, &p, a)),
        RawAction::SendTransactionalEmail(a) => {
            ActionBody::Send(send_transactional_email::compile(&mut c, &p, a))
        }
        RawAction::SendSms(a) => ActionBody::Send(send_sms::compile(&mut c, &p, a)),
        RawAction::UpsertOrder(a) => ActionBody::Order(upsert_order::compile(&mut c, &p, a)),
        RawAction::Webhook(a) => ActionBody::Webhook(webhook::compile(&mut c, &p, a)),
    };
    // After the body, so the templates keep the numbers they had (they show in render errors).
    let email = raw.email().map(|e| c.text(&format!("{p}.email"), e));
    if c.problems.is_empty() {
        Ok(Action { kind, email, body })
    } else {
        Err(c.problems)
    }
}

/// Renders one compiled action for one event into a frozen request.
pub(crate) fn render(
    templates: &TemplateSet,
    outbound: &OutboundPolicy,
    action: &Action,
    event: &Event,
    ctx: &Vars,
) -> Result<Prepared, NotRendered> {
    let s = Scope {
        templates,
        outbound,
        action,
        event,
        ctx,
    };
    match &action.body {
        ActionBody::TriggerEvent(b) => b.render(&s),
        ActionBody::Import(b) => b.render(&s),
        ActionBody::Send(b) => b.render(&s),
        ActionBody::Order(b) => b.render(&s),
        ActionBody::Webhook(b) => b.render(&s),
    }
}

/// Compiles the templates of one action, collecting every problem instead of stopping at
/// the first: a failed template leaves an empty placeholder and a problem naming its place.
struct Compiler<'t> {
    templates: &'t mut TemplateSet,
    problems: Vec<String>,
}

impl Compiler<'_> {
    /// Records a problem with the action.
    fn problem(&mut self, message: String) {
        self.problems.push(message);
    }

    /// Compiles a string template.
    fn text(&mut self, place: &str, source: &str) -> Piece {
        match self.templates.compile_str(place, source) {
            Ok(p) => p,
            Err(e) => {
                self.problems.push(e.to_string());
                Piece::Literal(String::new())
            }
        }
    }

    /// Compiles a JSON tree of templates.
    fn tree(&mut self, place: &str, value: &Value) -> Node {
        match self.templates.compile_tree(place, value) {
            Ok(n) => n,
            Err(e) => {
                self.problems.push(e.to_string());
                Node::Value(Value::Null)
            }
        }
    }
}

/// What rendering one action sees: the templates, where webhooks may go, the action, and the
/// event with its template context.
struct Scope<'a> {
    templates: &'a TemplateSet,
    outbound: &'a OutboundPolicy,
    action: &'a Action,
    event: &'a Event,
    ctx: &'a Vars<'a>,
}

impl Scope<'_> {
    /// Renders a string piece.
    fn text(&self, piece: &Piece) -> Result<String, NotRendered> {
        self.templates.render_str(piece, self.ctx).map_err(failed)
    }

    /// Renders a tree into JSON.
    fn tree(&self, node: &Node) -> Result<Value, NotRendered> {
        self.templates.render_tree(node, self.ctx).map_err(failed)
    }

    /// The recipient's address: the action's `email`, else the event's `contact.email`.
    fn recipient(&self) -> Result<String, NotRendered> {
        let kind = self.action.kind;
        let raw = match &self.action.email {
            Some(p) => self.text(p)?,
            None => match self.event.email() {
                Some(e) => e.to_string(),
                None => {
                    return Err(NotRendered::Skipped(format!(
                        "{kind}: the event has no contact.email and the action names no email"
                    )))
                }
            },
        };
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(NotRendered::Skipped(format!(
                "{kind}: the recipient rendered empty"
            )));
        }
        Email::parse(raw)
            .map(|e| e.as_str().to_string())
            .map_err(|m| NotRendered::Failed(format!("{kind}.email: {m}")))
    }
}

fn failed(e: TemplateError) -> NotRendered {
    NotRendered::Failed(e.to_string())
}

/// A JSON object of `entries`, moved in: `json!` would copy each rendered value through
/// serde's serializer.
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// A whole-number id from a number or a numeric string.
fn as_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A rendered value as SmartEmailing's text fields want it.
fn scalar_text(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    }
}
