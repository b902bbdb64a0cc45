//! `upsert_contact`: creates or updates a contact through `/import`. The list actions
//! (`lists.rs`) are narrower imports and render through the same [`ImportItem`].

use super::{as_id, scalar_text, Compiler, NotRendered, Scope};
use crate::domain::delivery::Prepared;
use crate::domain::smartemailing::{self, Endpoint};
use crate::rules::dates;
use crate::rules::template::Node;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The action as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpsertContactSpec {
    #[serde(default)]
    pub(super) email: Option<String>,
    #[serde(default)]
    fields: Map<String, Value>,
    #[serde(default)]
    lists: Vec<Value>,
    #[serde(default)]
    custom_fields: Map<String, Value>,
    #[serde(default)]
    settings: Option<Map<String, Value>>,
}

/// One list entry of an `/import`: a list id and the status to set.
#[derive(Debug, Clone)]
pub struct ListEntry {
    /// The list id (rendered; must give an integer).
    pub id: Node,
    /// `confirmed`, `unsubscribed` or `removed`.
    pub status: &'static str,
}

/// An item of `/import`.
#[derive(Debug, Clone)]
pub struct ImportItem {
    /// Whether to start from the event's contact fields.
    pub from_contact: bool,
    /// Contact fields, overriding the event's.
    pub fields: Node,
    /// List memberships.
    pub lists: Vec<ListEntry>,
    /// Custom fields by id: a value, or a list of option ids.
    pub custom_fields: Vec<(i64, Node)>,
    /// The ids among them whose value is a date (`{7: {date: ...}}`, or declared in
    /// `smartemailing.date_custom_fields`).
    pub date_custom_fields: Vec<i64>,
    /// The call's settings.
    pub settings: Value,
}

/// Checks and compiles the spec; `p` is the action's place with its kind.
pub(super) fn compile(c: &mut Compiler, p: &str, a: &UpsertContactSpec) -> ImportItem {
    for key in a.fields.keys() {
        if !smartemailing::CONTACT_FIELDS.contains(&key.as_str()) {
            c.problem(format!(
                "{p}.fields.{key}: SmartEmailing has no such contact field (known: {})",
                smartemailing::CONTACT_FIELDS.join(", ")
            ));
        }
    }
    let fields = c.tree(&format!("{p}.fields"), &Value::Object(a.fields.clone()));
    let lists = a
        .lists
        .iter()
        .enumerate()
        .filter_map(|(j, l)| list_entry(c, &format!("{p}.lists[{j}]"), l))
        .collect();
    let mut custom_fields = Vec::new();
    let mut date_custom_fields = Vec::new();
    for (k, v) in &a.custom_fields {
        match k.parse::<i64>() {
            Ok(id) => {
                let place = format!("{p}.custom_fields.{k}");
                // `{date: "{{ data.signup }}"}` declares the field a date in the rule itself.
                let value = match v.as_object().and_then(|o| o.get("date")) {
                    Some(inner) if v.as_object().is_some_and(|o| o.len() == 1) => {
                        date_custom_fields.push(id);
                        c.tree(&format!("{place}.date"), inner)
                    }
                    _ => c.tree(&place, v),
                };
                if c.templates.dates().custom_fields.contains(&id)
                    && !date_custom_fields.contains(&id)
                {
                    date_custom_fields.push(id);
                }
                custom_fields.push((id, value));
            }
            Err(_) => c.problem(format!(
                "{p}.custom_fields.{k}: custom fields are keyed by their numeric SmartEmailing id"
            )),
        }
    }
    let settings = import_settings(c, p, a.settings.as_ref());
    ImportItem {
        from_contact: true,
        fields,
        lists,
        custom_fields,
        date_custom_fields,
        settings,
    }
}

/// One entry of `lists`: a bare id (confirmed), or `{id, status}`.
fn list_entry(c: &mut Compiler, lp: &str, l: &Value) -> Option<ListEntry> {
    let Value::Object(o) = l else {
        return Some(ListEntry {
            id: c.tree(lp, l),
            status: "confirmed",
        });
    };
    let status = match o
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("confirmed")
    {
        "confirmed" => "confirmed",
        "unsubscribed" => "unsubscribed",
        "removed" => "removed",
        other => {
            c.problem(format!(
                "{lp}.status: `{other}` must be confirmed, unsubscribed or removed"
            ));
            "confirmed"
        }
    };
    for k in o.keys() {
        if k != "id" && k != "status" {
            c.problem(format!(
                "{lp}.{k}: unknown field (a list entry has id and status)"
            ));
        }
    }
    match o.get("id") {
        Some(id) => Some(ListEntry {
            id: c.tree(&format!("{lp}.id"), id),
            status,
        }),
        None => {
            c.problem(format!("{lp}.id: is required"));
            None
        }
    }
}

/// The import settings: SmartEmailing's defaults, overridden by known boolean keys.
fn import_settings(c: &mut Compiler, p: &str, given: Option<&Map<String, Value>>) -> Value {
    let mut settings = smartemailing::default_import_settings();
    for (k, v) in given.into_iter().flatten() {
        if !smartemailing::IMPORT_SETTINGS.contains(&k.as_str()) {
            c.problem(format!(
                "{p}.settings.{k}: unknown import setting (known: {})",
                smartemailing::IMPORT_SETTINGS.join(", ")
            ));
        } else if !v.is_boolean() {
            c.problem(format!("{p}.settings.{k}: must be true or false"));
        } else {
            settings[k] = v.clone();
        }
    }
    settings
}

impl ImportItem {
    /// Renders the item for the event in scope.
    pub(super) fn render(&self, s: &Scope) -> Result<Prepared, NotRendered> {
        let mut item = Map::new();
        item.insert("emailaddress".into(), Value::String(s.recipient()?));
        if self.from_contact {
            item.extend(smartemailing::contact_fields_from_event(&s.event.contact));
        }
        match s.tree(&self.fields)? {
            Value::Object(f) => item.extend(f),
            _ => {
                return Err(NotRendered::Failed(
                    "upsert_contact.fields: must render to an object".into(),
                ))
            }
        }
        contact_dates(&mut item, s.templates.dates().zone).map_err(NotRendered::Failed)?;
        if !self.lists.is_empty() {
            item.insert("contactlists".into(), self.render_lists(s)?);
        }
        if !self.custom_fields.is_empty() {
            item.insert("customfields".into(), self.render_custom_fields(s)?);
        }
        Ok(Prepared::SmartEmailing {
            endpoint: Endpoint::Import,
            group: self.settings.clone(),
            item: Value::Object(item),
        })
    }

    fn render_lists(&self, s: &Scope) -> Result<Value, NotRendered> {
        let mut out = Vec::new();
        for l in &self.lists {
            let id = as_id(&s.tree(&l.id)?).ok_or_else(|| {
                NotRendered::Failed(format!(
                    "{}: the list id must be a whole number",
                    s.action.kind
                ))
            })?;
            out.push(json!({"id": id, "status": l.status}));
        }
        Ok(Value::Array(out))
    }

    fn render_custom_fields(&self, s: &Scope) -> Result<Value, NotRendered> {
        let mut out = Vec::new();
        for (id, node) in &self.custom_fields {
            let value = s.tree(node)?;
            if self.date_custom_fields.contains(id) {
                match dates::to_smartemailing(&value, s.templates.dates().zone) {
                    Ok(Some(date)) => out.push(json!({"id": id, "value": date})),
                    // An empty date is left out: the field keeps what it holds.
                    Ok(None) => {}
                    Err(m) => {
                        return Err(NotRendered::Failed(format!(
                            "{}.custom_fields.{id}: {m}",
                            s.action.kind
                        )))
                    }
                }
                continue;
            }
            match value {
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
        Ok(Value::Array(out))
    }
}

/// The contact's dates as SmartEmailing takes them: `birthday`, `nameday` and each purpose's
/// `valid_from`/`valid_to`; an empty one is left out, one that is not a date names its field.
fn contact_dates(item: &mut Map<String, Value>, zone: chrono_tz::Tz) -> Result<(), String> {
    let place = "upsert_contact.fields";
    for key in ["birthday", "nameday"] {
        dates::convert_field(item, key, zone, place)?;
    }
    if let Some(Value::Array(purposes)) = item.get_mut("purposes") {
        for (i, purpose) in purposes.iter_mut().enumerate() {
            if let Value::Object(p) = purpose {
                for key in ["valid_from", "valid_to"] {
                    dates::convert_field(p, key, zone, &format!("{place}.purposes[{i}]"))?;
                }
            }
        }
    }
    Ok(())
}
