//! What the send actions (`send_email`, `send_transactional_email`, `send_sms`) share: the
//! compiled [`SendTask`], its compile steps and its render.

use super::{as_id, object, scalar_text, Compiler, NotRendered, Scope};
use crate::domain::delivery::Prepared;
use crate::domain::smartemailing::Endpoint;
use crate::rules::template::{Node, Piece};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The sender of an e-mail action, as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SenderSpec {
    from: String,
    sender_name: String,
    #[serde(default)]
    reply_to: Option<String>,
}

/// A task of one of the send endpoints.
#[derive(Debug, Clone)]
pub struct SendTask {
    /// Which send endpoint.
    pub endpoint: Endpoint,
    /// Batch-level fields: sender, tag, e-mail or SMS id, message contents.
    pub group: Node,
    /// `replace` keys and their content.
    pub replace: Vec<(String, Node)>,
    /// `template_variables`.
    pub template_variables: Option<Node>,
    /// The SMS recipient's number (defaults to `contact.phone`).
    pub cellphone: Option<Piece>,
}

/// The batch-level fields every e-mail action starts from: its sender and tag.
pub(super) fn email_group(sender: &SenderSpec, tag: &Option<String>) -> Value {
    json!({
        "sender_credentials": {
            "from": sender.from,
            "sender_name": sender.sender_name,
            "reply_to": sender.reply_to.clone().unwrap_or_else(|| sender.from.clone()),
        },
        "tag": tag.clone().unwrap_or_default(),
    })
}

/// Compiles a task's `group` (at `p` itself) and each `replace` value at its own place.
pub(super) fn compile_task(
    c: &mut Compiler,
    p: &str,
    endpoint: Endpoint,
    group: &Value,
    replace: &Map<String, Value>,
) -> SendTask {
    let group = c.tree(p, group);
    let replace = replace
        .iter()
        .map(|(k, v)| (k.clone(), c.tree(&format!("{p}.replace.{k}"), v)))
        .collect();
    SendTask {
        endpoint,
        group,
        replace,
        template_variables: None,
        cellphone: None,
    }
}

/// Compiles an e-mail task: the group and `replace`, then `template_variables`.
pub(super) fn compile_email_task(
    c: &mut Compiler,
    p: &str,
    endpoint: Endpoint,
    group: &Value,
    replace: &Map<String, Value>,
    template_variables: Option<&Value>,
) -> SendTask {
    let mut task = compile_task(c, p, endpoint, group, replace);
    task.template_variables =
        template_variables.map(|v| c.tree(&format!("{p}.template_variables"), v));
    task
}

impl SendTask {
    /// Renders the task for the event in scope.
    pub(super) fn render(&self, s: &Scope) -> Result<Prepared, NotRendered> {
        let email = s.recipient()?;
        let mut group = s.tree(&self.group)?;
        for key in ["email_id", "sms_id"] {
            if let Some(v) = group.get(key).cloned() {
                let id = as_id(&v).ok_or_else(|| {
                    NotRendered::Failed(format!("{}.{key}: must be a whole number", s.action.kind))
                })?;
                group[key] = json!(id);
            }
        }
        let mut recipient = object([("emailaddress", Value::String(email))]);
        if self.endpoint == Endpoint::CustomSms {
            recipient["cellphone"] = Value::String(self.phone(s)?);
        }
        let mut rep = Vec::new();
        for (key, node) in &self.replace {
            let v = s.tree(node)?;
            rep.push(object([
                ("key", Value::String(key.clone())),
                ("content", scalar_text(&v)),
            ]));
        }
        let mut task = object([("recipient", recipient), ("replace", Value::Array(rep))]);
        if let Some(tv) = &self.template_variables {
            task["template_variables"] = s.tree(tv)?;
        }
        Ok(Prepared::SmartEmailing {
            endpoint: self.endpoint,
            group,
            item: task,
        })
    }

    /// The SMS recipient's number: the `cellphone` template, else `contact.phone`.
    fn phone(&self, s: &Scope) -> Result<String, NotRendered> {
        let phone = match &self.cellphone {
            Some(p) => s.text(p)?,
            None => s
                .event
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
        Ok(phone)
    }
}
