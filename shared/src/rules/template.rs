//! Tera templates, compiled once at load and rendered structurally.
//!
//! A JSON body is never one big template: each string leaf is its own template, rendered
//! and then encoded by serde_json, so event data can neither break the JSON nor add fields.
//! A leaf that is exactly one `{{ expression }}` keeps the JSON type of its value.

use crate::rules::dates::{self, AccountDates};
use crate::rules::references;
use crate::rules::shortcut::Shortcut;
use serde_json::{Map, Value};
use std::collections::HashMap;
use tera::{Context, Tera};

/// The most items `range` may produce in a template.
pub const MAX_RANGE: usize = 10_000;

/// The largest output one template may produce.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

/// A template error, naming the template's place in the config.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{place}: {message}")]
pub struct TemplateError {
    /// Where the template sits, e.g. `rules[welcome].actions[0].trigger_event.payload.first_name`.
    pub place: String,
    /// What went wrong.
    pub message: String,
}

/// One string of the config: a literal, or a compiled template.
#[derive(Debug, Clone)]
pub enum Piece {
    /// A string with no template syntax.
    Literal(String),
    /// A template producing a string; the name of the compiled template and its place.
    Template { name: String, place: String },
}

/// A JSON tree of the config whose string leaves are templates.
#[derive(Debug, Clone)]
pub enum Node {
    /// A non-string JSON value, kept as is.
    Value(Value),
    /// A string leaf rendered to a string.
    Text(Piece),
    /// A leaf that is exactly one `{{ expression }}`: keeps the JSON type of its value.
    Typed { name: String, place: String },
    /// An object; keys are literal.
    Map(Vec<(String, Node)>),
    /// An array.
    List(Vec<Node>),
}

/// Every template of a config, compiled into one sandboxed Tera instance.
pub struct TemplateSet {
    tera: Tera,
    count: usize,
    dates: AccountDates,
    /// The templates rendered without Tera, by name.
    shortcuts: HashMap<String, Shortcut>,
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TemplateSet({} templates)", self.count)
    }
}

impl Default for TemplateSet {
    fn default() -> Self {
        Self::new()
    }
}

/// Template syntax that could reach outside the event: refused at load.
const FORBIDDEN: &[(&str, &str)] = &[
    ("get_env", "templates cannot read environment variables"),
    ("include", "templates cannot include other templates"),
    ("extends", "templates cannot extend other templates"),
    ("import", "templates cannot import macros"),
    (
        "get_random",
        "templates must render the same way every time",
    ),
];

impl TemplateSet {
    /// An empty set with Tera's environment access removed, for an account in the default
    /// time zone.
    pub fn new() -> Self {
        Self::with_dates(AccountDates::default())
    }

    /// An empty set whose `se_datetime` filter and date fields use the account's `dates`.
    pub fn with_dates(dates: AccountDates) -> Self {
        let mut tera = Tera::default();
        // Tera ships `get_env`, which in Lambda would hand out the AWS credentials.
        tera.functions.remove("get_env");
        tera.functions.remove("get_random");
        tera.register_function("get_env", |_: &HashMap<String, Value>| {
            Err(tera::Error::msg("get_env is disabled in the relay"))
        });
        // `range` is the one way a template can loop without data; bound it.
        tera.register_function("range", bounded_range);
        // Deterministic codes (reward codes, pseudonymous ids) without reaching outside.
        tera.register_filter("sha256", sha256_filter);
        // SmartEmailing's date format for the dates the relay does not know are dates.
        tera.register_filter("se_datetime", dates::filter(dates.zone));
        tera.autoescape_on(vec![]);
        Self {
            tera,
            count: 0,
            dates,
            shortcuts: HashMap::new(),
        }
    }

    /// How dates go to the account.
    pub fn dates(&self) -> &AccountDates {
        &self.dates
    }

    /// Compiles `source` (what the user `wrote`, maybe wrapped by us) and checks what it reads.
    fn add(&mut self, place: &str, source: &str, wrote: Written) -> Result<String, TemplateError> {
        let fail = |message: String| TemplateError {
            place: place.to_string(),
            message,
        };
        for (word, why) in FORBIDDEN {
            if mentions_call(source, word) {
                return Err(fail(format!("`{word}` is not allowed: {why}")));
            }
        }
        self.count += 1;
        let name = format!("t{}", self.count);
        if let Err(e) = self.tera.add_raw_template(&name, source) {
            // Shown against the user's own text: our wrappers and names mean nothing to them.
            return Err(fail(
                wrote.syntax_error().unwrap_or_else(|| tera_message(&e)),
            ));
        }
        let problems = match self.tera.get_template(&name) {
            Ok(t) => {
                if let Some(s) = Shortcut::of(&t.ast) {
                    self.shortcuts.insert(name.clone(), s);
                }
                references::unknown_references(&t.ast)
            }
            Err(e) => vec![tera_message(&e)],
        };
        if !problems.is_empty() {
            return Err(fail(problems.join("; ")));
        }
        Ok(name)
    }

    /// Compiles a string that must render to a string (URLs, headers, names).
    pub fn compile_str(&mut self, place: &str, source: &str) -> Result<Piece, TemplateError> {
        if !has_syntax(source) {
            return Ok(Piece::Literal(source.to_string()));
        }
        let name = self.add(place, source, Written::Template(source))?;
        Ok(Piece::Template {
            name,
            place: place.to_string(),
        })
    }

    /// Compiles a condition: a Tera expression that is true or false.
    pub fn compile_condition(&mut self, place: &str, expr: &str) -> Result<Piece, TemplateError> {
        if expr.contains("%}") || expr.contains("{%") || expr.contains("{{") {
            return Err(TemplateError {
                place: place.to_string(),
                message: "write a bare expression, e.g. contact.language == 'cs_CZ'".into(),
            });
        }
        let name = self.add(
            place,
            &format!("{{% if {expr} %}}true{{% endif %}}"),
            Written::Condition(expr),
        )?;
        Ok(Piece::Template {
            name,
            place: place.to_string(),
        })
    }

    /// Compiles a JSON tree whose string leaves are templates.
    pub fn compile_tree(&mut self, place: &str, value: &Value) -> Result<Node, TemplateError> {
        Ok(match value {
            Value::String(s) => {
                if let Some(expr) = sole_expression(s) {
                    let name = self.add(
                        place,
                        &format!(
                            "{{% set relay_value = {expr} %}}{{{{ relay_value | json_encode() }}}}"
                        ),
                        Written::Template(s),
                    )?;
                    Node::Typed {
                        name,
                        place: place.to_string(),
                    }
                } else {
                    Node::Text(self.compile_str(place, s)?)
                }
            }
            Value::Object(map) => {
                let mut out = Vec::with_capacity(map.len());
                for (k, v) in map {
                    out.push((k.clone(), self.compile_tree(&format!("{place}.{k}"), v)?));
                }
                Node::Map(out)
            }
            Value::Array(items) => Node::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.compile_tree(&format!("{place}[{i}]"), v))
                    .collect::<Result<_, _>>()?,
            ),
            other => Node::Value(other.clone()),
        })
    }

    /// Renders a string piece.
    pub fn render_str(&self, piece: &Piece, ctx: &Vars) -> Result<String, TemplateError> {
        match piece {
            Piece::Literal(s) => Ok(s.clone()),
            Piece::Template { name, place } => self.run(name, place, ctx),
        }
    }

    /// Evaluates a condition piece.
    pub fn render_condition(&self, piece: &Piece, ctx: &Vars) -> Result<bool, TemplateError> {
        Ok(self.render_str(piece, ctx)? == "true")
    }

    /// Renders a tree into JSON.
    pub fn render_tree(&self, node: &Node, ctx: &Vars) -> Result<Value, TemplateError> {
        Ok(match node {
            Node::Value(v) => v.clone(),
            Node::Text(p) => Value::String(self.render_str(p, ctx)?),
            Node::Typed { name, place } => {
                let quick = self.shortcuts.get(name.as_str());
                if let Some(v) = quick.and_then(|s| s.value(ctx, MAX_RENDERED_BYTES)) {
                    return Ok(v);
                }
                let text = self.run(name, place, ctx)?;
                serde_json::from_str(&text).map_err(|e| TemplateError {
                    place: place.clone(),
                    message: format!("the expression did not give a JSON value: {e}"),
                })?
            }
            Node::Map(entries) => {
                let mut out = Map::new();
                for (k, v) in entries {
                    out.insert(k.clone(), self.render_tree(v, ctx)?);
                }
                Value::Object(out)
            }
            Node::List(items) => Value::Array(
                items
                    .iter()
                    .map(|n| self.render_tree(n, ctx))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn run(&self, name: &str, place: &str, ctx: &Vars) -> Result<String, TemplateError> {
        let quick = self.shortcuts.get(name);
        if let Some(out) = quick.and_then(|s| s.text(ctx, MAX_RENDERED_BYTES)) {
            return Ok(out);
        }
        let out = self
            .tera
            .render(name, ctx.context())
            .map_err(|e| TemplateError {
                place: place.to_string(),
                message: tera_message(&e),
            })?;
        if out.len() > MAX_RENDERED_BYTES {
            return Err(TemplateError {
                place: place.to_string(),
                message: format!(
                    "rendered {} bytes; at most {MAX_RENDERED_BYTES} are allowed",
                    out.len()
                ),
            });
        }
        Ok(out)
    }
}

/// Tera's `range(start=0, end, step_by=1)`, refusing more than [`MAX_RANGE`] items.
fn bounded_range(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let int = |k: &str, default: Option<i64>| -> tera::Result<i64> {
        match args.get(k) {
            Some(v) => v
                .as_i64()
                .ok_or_else(|| tera::Error::msg(format!("range: `{k}` must be an integer"))),
            None => default.ok_or_else(|| tera::Error::msg(format!("range: `{k}` is required"))),
        }
    };
    let (start, end, step) = (
        int("start", Some(0))?,
        int("end", None)?,
        int("step_by", Some(1))?,
    );
    if step <= 0 {
        return Err(tera::Error::msg("range: `step_by` must be positive"));
    }
    let len = if end > start {
        (end - start + step - 1) / step
    } else {
        0
    };
    if len > MAX_RANGE as i64 {
        return Err(tera::Error::msg(format!(
            "range: at most {MAX_RANGE} items"
        )));
    }
    Ok(Value::Array(
        (0..len).map(|i| Value::from(start + i * step)).collect(),
    ))
}

/// The `sha256` filter: the hex SHA-256 of the value's text.
fn sha256_filter(value: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    use sha2::{Digest, Sha256};
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(Value::String(hex::encode(Sha256::digest(text.as_bytes()))))
}

/// The variables every template sees (`event`, `contact`, `data`, `now`), read where they
/// are. A shortcut borrows them from the event; Tera's own `Context`, which owns copies of
/// them all, is built only when a template needs Tera, and `event` and `now` as values only
/// when a shortcut reads them whole (BENCHMARKS.md, issue 16).
pub struct Vars<'a> {
    source: Source<'a>,
    event_value: std::cell::OnceCell<Value>,
    now_value: std::cell::OnceCell<Value>,
    context: std::cell::OnceCell<Context>,
}

/// Where the variables come from.
enum Source<'a> {
    /// An event rendered at `now`.
    Event {
        event: &'a crate::domain::event::Event,
        now: chrono::DateTime<chrono::Utc>,
    },
    /// A context given whole (tests, with variables of their own).
    #[cfg(test)]
    Context,
}

impl<'a> Vars<'a> {
    /// The variables of `event` rendered at `now`.
    pub fn new(event: &'a crate::domain::event::Event, now: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            source: Source::Event { event, now },
            event_value: Default::default(),
            now_value: Default::default(),
            context: Default::default(),
        }
    }

    /// Variables that are exactly `context`'s.
    #[cfg(test)]
    pub(crate) fn of_context(context: Context) -> Self {
        Self {
            source: Source::Context,
            event_value: Default::default(),
            now_value: Default::default(),
            context: context.into(),
        }
    }

    /// Tera's context, built on first use.
    pub fn context(&self) -> &Context {
        self.context.get_or_init(|| match &self.source {
            Source::Event { event, now } => context(event, *now),
            #[cfg(test)]
            Source::Context => unreachable!("given at construction"),
        })
    }

    /// Where a dotted path starts: the value its first segments name, taken off `segments`
    /// (one, two or three of them; the caller walks the rest). `None` for a variable no
    /// template sees. What it gives is what Tera's context holds at that place.
    pub(crate) fn start<'s, 'p>(
        &'s self,
        segments: &mut std::str::Split<'p, char>,
    ) -> Option<&'s Value> {
        let (event, now) = match &self.source {
            Source::Event { event, now } => (*event, *now),
            #[cfg(test)]
            Source::Context => return self.context().get(segments.next()?),
        };
        // `event` as a value, made once and only when read whole or for its own fields.
        let whole = || self.event_value.get_or_init(|| event.to_value());
        let (map, name) = match segments.next()? {
            "contact" => (&event.contact, "contact"),
            "data" => (&event.data, "data"),
            "now" => return Some(self.now_value.get_or_init(|| now_value(now))),
            "event" => match segments.next() {
                Some("contact") => (&event.contact, "contact"),
                Some("data") => (&event.data, "data"),
                Some(other) => return whole().get(other),
                None => return Some(whole()),
            },
            _ => return None,
        };
        match segments.next() {
            Some(key) => map.get(key),
            // The whole map, as a value: the copy inside `event`.
            None => whole().get(name),
        }
    }
}

/// `now` as templates see it: RFC 3339, to the second, in UTC.
fn now_value(now: chrono::DateTime<chrono::Utc>) -> Value {
    Value::String(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Builds the context every template sees: `event`, `contact`, `data` and `now`.
pub fn context(event: &crate::domain::event::Event, now: chrono::DateTime<chrono::Utc>) -> Context {
    // Moved in, not `insert`ed: `Context::insert` copies each value through serde's
    // serializer, which was a seventh of an event's render (BENCHMARKS.md, issue 16).
    let mut root = Map::new();
    root.insert("event".into(), event.to_value());
    root.insert("contact".into(), Value::Object(event.contact.clone()));
    root.insert("data".into(), Value::Object(event.data.clone()));
    root.insert("now".into(), now_value(now));
    // `from_value` refuses only what is not an object.
    Context::from_value(Value::Object(root)).unwrap_or_default()
}

fn has_syntax(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// `Some(expr)` when the string is exactly one `{{ expr }}` and nothing else.
fn sole_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_start_matches('-').trim_end_matches('-').trim();
    if inner.is_empty() || inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner)
}

fn mentions_call(source: &str, word: &str) -> bool {
    // Only inside template tags; plain text may say anything.
    let mut rest = source;
    while let Some(start) = rest.find(['{']) {
        let after = &rest[start..];
        if after.starts_with("{{") || after.starts_with("{%") {
            let end = after
                .find("}}")
                .or_else(|| after.find("%}"))
                .unwrap_or(after.len());
            let tag = &after[..end];
            if tag
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == word)
            {
                return true;
            }
            rest = &after[end.min(after.len())..];
            if rest.len() >= 2 {
                rest = &rest[2..];
            } else {
                break;
            }
        } else {
            rest = &after[1..];
        }
    }
    false
}

/// A template as the user wrote it in the config, for syntax errors.
#[derive(Clone, Copy)]
enum Written<'a> {
    /// A string that is a template as it stands.
    Template(&'a str),
    /// A bare expression (a rule's `if`), compiled inside `{% if ... %}`.
    Condition(&'a str),
}

impl Written<'_> {
    /// Where the user's text fails to parse and why, quoting the line that fails; `None`
    /// when it parses on its own or Tera's message is not in the form expected.
    fn syntax_error(self) -> Option<String> {
        // A condition is parsed as `{{ expr }}`: the same expression grammar, 3 columns in.
        let (text, shift) = match self {
            Written::Template(t) => (t.to_string(), 0),
            Written::Condition(e) => (format!("{{{{ {e} }}}}"), 3),
        };
        let err = tera::Template::new("template", None, &text).err()?;
        let full = tera_chain(&err);
        let at = full.split("--> ").nth(1)?;
        let (line, col) = at.split_whitespace().next()?.split_once(':')?;
        let (line, col): (usize, usize) = (line.parse().ok()?, col.parse().ok()?);
        let expected = full.rsplit("= ").next()?.trim();
        let mut shown: String = text.lines().nth(line.checked_sub(1)?)?.to_string();
        let mut col = col;
        if line == 1 && shift > 0 {
            shown = match self {
                Written::Condition(e) => e.lines().next().unwrap_or_default().to_string(),
                Written::Template(_) => shown,
            };
            // Past the user's text is our closing `}}`: point just after their text.
            col = col
                .saturating_sub(shift)
                .clamp(1, shown.chars().count() + 1);
        }
        let where_ = if text.lines().count() > 1 {
            format!("line {line}, column {col}")
        } else {
            format!("column {col}")
        };
        Some(format!(
            "template syntax error at {where_} of `{}`: {expected}",
            truncate_chars(&shown, 120)
        ))
    }
}

/// At most `max` characters of `s`, with `…` when cut.
fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// An error and its sources, joined.
fn tera_chain(e: &tera::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Tera's message without our internal template names (`'t7'`), which mean nothing to a
/// user: the error's place already says which template it is.
fn tera_message(e: &tera::Error) -> String {
    let msg = tera_chain(e);
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg.as_str();
    // "Failed to render 't7': Variable `x` not found in context while rendering 't7'"
    for prefix in ["Failed to render '", "Failed to parse '"] {
        if let Some(r) = rest.strip_prefix(prefix) {
            if let Some((_, after)) = r.split_once("': ") {
                rest = after;
            }
        }
    }
    while let Some(i) = rest.find(" while rendering '") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " while rendering '".len()..];
        rest = after.split_once('\'').map_or("", |(_, r)| r);
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Value) -> Vars<'static> {
        Vars::of_context(Context::from_value(v).unwrap())
    }

    #[test]
    fn vars_give_what_teras_context_holds_at_every_path() {
        // The shortcuts read the event through `Vars::start`; Tera reads the context built
        // from it. For every kind of path they must find the same value (or both none).
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:11:12Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let event = crate::domain::event::parse_event(
            &json!({"id": "e-1", "type": "order.status_changed",
                    "occurred_at": "2026-12-01T08:00:00.250Z",
                    "contact": {"email": "jan@example.com", "tags": ["a", "b"], "none": null},
                    "data": {"items": [{"id": "SKU-1"}], "status": "shipped", "0": "zero"}}),
            "",
            now,
        )
        .unwrap();
        let vars = Vars::new(&event, now);
        let full = context(&event, now).into_json();
        for path in [
            "contact",
            "contact.email",
            "contact.tags.1",
            "contact.none",
            "contact.missing",
            "data",
            "data.items.0.id",
            "data.0",
            "data.status.x",
            "event",
            "event.id",
            "event.type",
            "event.occurred_at",
            "event.contact",
            "event.contact.email",
            "event.data.items",
            "event.missing",
            "now",
            "now.x",
            "nothing",
            "nothing.x",
        ] {
            let mut segments = path.split('.');
            let found = vars.start(&mut segments).and_then(|v| {
                segments.try_fold(v, |v, seg| match v {
                    Value::Object(m) => m.get(seg),
                    Value::Array(l) => seg.parse::<usize>().ok().and_then(|i| l.get(i)),
                    _ => None,
                })
            });
            let pointer = format!("/{}", path.replace('.', "/"));
            assert_eq!(found, full.pointer(&pointer), "{path}");
        }
        // Nothing read needed Tera's context.
        assert!(vars.context.get().is_none());
    }

    #[test]
    fn a_sole_expression_keeps_its_type() {
        let mut set = TemplateSet::new();
        let node = set
            .compile_tree(
                "p",
                &json!({"n": "{{ data.n }}", "list": "{{ data.items }}", "s": "x{{ data.n }}"}),
            )
            .unwrap();
        let out = set
            .render_tree(
                &node,
                &ctx(json!({"data": {"n": 5, "items": [1, {"a": "b"}]}})),
            )
            .unwrap();
        assert_eq!(out, json!({"n": 5, "list": [1, {"a": "b"}], "s": "x5"}));
    }

    #[test]
    fn hostile_data_cannot_break_the_json() {
        let mut set = TemplateSet::new();
        let node = set
            .compile_tree(
                "p",
                &json!({"name": "Hi {{ data.name }}", "raw": "{{ data.name }}"}),
            )
            .unwrap();
        let evil = "\", \"admin\": true, \"x\": \"{{ 7*7 }}\n\u{0}ž";
        let out = set
            .render_tree(&node, &ctx(json!({"data": {"name": evil}})))
            .unwrap();
        assert_eq!(out["name"], json!(format!("Hi {evil}")));
        assert_eq!(out["raw"], json!(evil));
        assert_eq!(out.as_object().unwrap().len(), 2);
    }

    #[test]
    fn get_env_is_refused_at_compile_time() {
        let mut set = TemplateSet::new();
        let err = set
            .compile_str("url", "{{ get_env(name=\"AWS_SECRET_ACCESS_KEY\") }}")
            .unwrap_err();
        assert!(err.message.contains("get_env"), "{err}");
        let err = set
            .compile_tree("b", &json!("{{ get_env(name='HOME') }}"))
            .unwrap_err();
        assert!(err.message.contains("environment"), "{err}");
    }

    #[test]
    fn sha256_gives_stable_codes() {
        let mut set = TemplateSet::new();
        let p = set
            .compile_str(
                "code",
                "{% set seed = contact.email ~ ':' ~ data.year %}{{ seed | sha256 | truncate(length=8, end='') | upper }}",
            )
            .unwrap();
        let out = set
            .render_str(
                &p,
                &ctx(json!({"contact": {"email": "jan@example.com"}, "data": {"year": 2026}})),
            )
            .unwrap();
        // sha256("jan@example.com:2026"), first 8 hex digits, upper case.
        use sha2::{Digest, Sha256};
        let expected = hex::encode(Sha256::digest(b"jan@example.com:2026"))[..8].to_uppercase();
        assert_eq!(out, expected);
    }

    #[test]
    fn range_is_bounded() {
        let mut set = TemplateSet::new();
        let ok = set
            .compile_str(
                "r",
                "{% for i in range(start=1, end=7, step_by=2) %}{{ i }}{% endfor %}",
            )
            .unwrap();
        assert_eq!(set.render_str(&ok, &ctx(json!({}))).unwrap(), "135");
        let big = set
            .compile_str("r", "{% for i in range(end=100000000) %}x{% endfor %}")
            .unwrap();
        let err = set.render_str(&big, &ctx(json!({}))).unwrap_err();
        assert!(err.message.contains("at most"), "{err}");
    }

    #[test]
    fn conditions_evaluate() {
        let mut set = TemplateSet::new();
        let c = set
            .compile_condition("if", "contact.language == 'cs_CZ'")
            .unwrap();
        assert!(set
            .render_condition(&c, &ctx(json!({"contact": {"language": "cs_CZ"}})))
            .unwrap());
        assert!(!set
            .render_condition(&c, &ctx(json!({"contact": {"language": "en"}})))
            .unwrap());
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_the_place() {
        let mut set = TemplateSet::new();
        let p = set
            .compile_str("rules[a].url", "https://x/{{ data.nope }}")
            .unwrap();
        let err = set.render_str(&p, &ctx(json!({"data": {}}))).unwrap_err();
        assert_eq!(err.place, "rules[a].url");
    }

    #[test]
    fn a_syntax_error_quotes_the_users_template_not_an_internal_name() {
        let mut set = TemplateSet::new();
        let err = set
            .compile_str("rules[a].url", "https://x/{{ data.id")
            .unwrap_err();
        assert_eq!(err.place, "rules[a].url");
        assert!(
            err.message.starts_with(
                "template syntax error at column 21 of `https://x/{{ data.id`: expected"
            ),
            "{err}"
        );
        assert!(!err.message.contains("'t1'"), "{err}");
        // A sole expression is compiled inside our own wrapper; the user sees their text.
        let err = set
            .compile_tree("p", &json!("{{ data.id | }}"))
            .unwrap_err();
        assert!(err.message.contains("of `{{ data.id | }}`"), "{err}");
        assert!(!err.message.contains("relay_value"), "{err}");
        // A condition is a bare expression; the column counts in it.
        let err = set
            .compile_condition("rules[a].if", "data.x ==")
            .unwrap_err();
        assert!(
            err.message
                .starts_with("template syntax error at column 10 of `data.x ==`"),
            "{err}"
        );
    }

    #[test]
    fn a_misspelled_contact_field_is_refused_at_compile_time() {
        let mut set = TemplateSet::new();
        let err = set
            .compile_str("rules[w].payload.n", "Hi {{ contact.first_nam }}")
            .unwrap_err();
        assert!(err.message.contains("did you mean first_name?"), "{err}");
        let err = set
            .compile_condition("rules[w].if", "contact.langauge == 'cs_CZ'")
            .unwrap_err();
        assert!(err.message.contains("did you mean language?"), "{err}");
    }

    #[test]
    fn a_render_error_names_no_internal_template() {
        let mut set = TemplateSet::new();
        let p = set
            .compile_str("rules[a].name", "x-{{ data.nope }}")
            .unwrap();
        let err = set.render_str(&p, &ctx(json!({"data": {}}))).unwrap_err();
        assert!(err.message.contains("`data.nope` not found"), "{err}");
        assert!(!err.message.contains("'t"), "{err}");
    }
}
