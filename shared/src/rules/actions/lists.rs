//! The list actions: `add_to_list`, `remove_from_list`, `unsubscribe` and `move_to_list`.
//! Each is an `/import` of the contact with list statuses only, rendered as an [`ImportItem`].

use super::upsert_contact::{ImportItem, ListEntry};
use super::Compiler;
use crate::domain::smartemailing;
use crate::rules::template::Node;
use serde::Deserialize;
use serde_json::{json, Value};

/// `add_to_list`, `remove_from_list` or `unsubscribe` as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListSpec {
    list: Value,
    #[serde(default)]
    pub(super) email: Option<String>,
}

/// `move_to_list` as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveSpec {
    from: Value,
    to: Value,
    #[serde(default)]
    pub(super) email: Option<String>,
}

/// Compiles a one-list action that sets `status` on its list.
pub(super) fn compile(c: &mut Compiler, p: &str, a: &ListSpec, status: &'static str) -> ImportItem {
    let id = c.tree(&format!("{p}.list"), &a.list);
    statuses_only(vec![ListEntry { id, status }])
}

/// Compiles `move_to_list`: removed from one list, confirmed in the other.
pub(super) fn compile_move(c: &mut Compiler, p: &str, a: &MoveSpec) -> ImportItem {
    let from = c.tree(&format!("{p}.from"), &a.from);
    let to = c.tree(&format!("{p}.to"), &a.to);
    statuses_only(vec![
        ListEntry {
            id: from,
            status: "removed",
        },
        ListEntry {
            id: to,
            status: "confirmed",
        },
    ])
}

/// An import that touches list memberships and nothing else of the contact.
fn statuses_only(lists: Vec<ListEntry>) -> ImportItem {
    ImportItem {
        from_contact: false,
        fields: Node::Value(json!({})),
        lists,
        custom_fields: vec![],
        date_custom_fields: vec![],
        settings: smartemailing::default_import_settings(),
    }
}
