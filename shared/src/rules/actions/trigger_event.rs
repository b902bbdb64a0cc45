//! `trigger_event`: starts a SmartEmailing automation listening for a named event.

use super::{object, Compiler, NotRendered, Scope};
use crate::domain::delivery::Prepared;
use crate::domain::smartemailing::Endpoint;
use crate::rules::template::{Node, Piece};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The action as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerEventSpec {
    name: String,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    pub(super) email: Option<String>,
}

/// An item of `/trigger-event`.
#[derive(Debug, Clone)]
pub struct TriggerEvent {
    /// The event name the automation listens for.
    pub name: Piece,
    /// The payload object.
    pub payload: Option<Node>,
}

/// Checks and compiles the spec; `p` is the action's place with its kind.
pub(super) fn compile(c: &mut Compiler, p: &str, a: &TriggerEventSpec) -> TriggerEvent {
    if a.name.trim().is_empty() {
        c.problem(format!("{p}.name: must not be empty"));
    }
    if let Some(payload) = &a.payload {
        if !payload.is_object() && !payload.is_string() {
            c.problem(format!("{p}.payload: must be an object"));
        }
    }
    let name = c.text(&format!("{p}.name"), &a.name);
    let payload = a
        .payload
        .as_ref()
        .map(|v| c.tree(&format!("{p}.payload"), v));
    TriggerEvent { name, payload }
}

impl TriggerEvent {
    /// Renders the item for the event in scope.
    pub(super) fn render(&self, s: &Scope) -> Result<Prepared, NotRendered> {
        let email = s.recipient()?;
        let name = s.text(&self.name)?;
        if name.trim().is_empty() {
            return Err(NotRendered::Failed(format!(
                "{}: the trigger name rendered empty",
                s.action.kind
            )));
        }
        let payload = match &self.payload {
            Some(p) => s.tree(p)?,
            None => Value::Object(Map::new()),
        };
        if !payload.is_object() {
            return Err(NotRendered::Failed(
                "trigger_event.payload: must render to an object".into(),
            ));
        }
        Ok(Prepared::SmartEmailing {
            endpoint: Endpoint::TriggerEvent,
            group: Value::Null,
            item: object([
                ("emailaddress", Value::String(email)),
                ("name", Value::String(name)),
                ("payload", payload),
            ]),
        })
    }
}
