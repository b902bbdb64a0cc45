//! `upsert_order`: creates or updates an e-shop order (`/import-orders`).

use super::{Compiler, NotRendered, Scope};
use crate::domain::delivery::Prepared;
use crate::domain::smartemailing::{self, Endpoint};
use crate::rules::template::Node;
use serde_json::{Map, Value};

/// An order of `/import-orders`.
#[derive(Debug, Clone)]
pub struct OrderItem {
    /// The order object.
    pub order: Node,
}

/// Checks and compiles the order as written; `p` is the action's place with its kind.
pub(super) fn compile(c: &mut Compiler, p: &str, order: &Map<String, Value>) -> OrderItem {
    for key in ["eshop_name", "eshop_code"] {
        if !order.contains_key(key) {
            c.problem(format!("{p}.{key}: is required"));
        }
    }
    if let Some(Value::String(st)) = order.get("status") {
        // A templated status is checked when rendered.
        if !st.contains("{{") && !smartemailing::ORDER_STATUSES.contains(&st.as_str()) {
            c.problem(format!(
                "{p}.status: `{st}` must be one of {}",
                smartemailing::ORDER_STATUSES.join(", ")
            ));
        }
    }
    OrderItem {
        order: c.tree(p, &Value::Object(order.clone())),
    }
}

impl OrderItem {
    /// Renders the order for the event in scope.
    pub(super) fn render(&self, s: &Scope) -> Result<Prepared, NotRendered> {
        let mut order = match s.tree(&self.order)? {
            Value::Object(o) => o,
            _ => {
                return Err(NotRendered::Failed(
                    "upsert_order: must render to an object".into(),
                ))
            }
        };
        // The order may name its customer; only without one is the recipient needed.
        if !order.contains_key("emailaddress") {
            order.insert("emailaddress".into(), Value::String(s.recipient()?));
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
}
