//! What a template may read, checked at load: the variables of the context (`event`,
//! `contact`, `data`, `now`) and the fixed fields of `contact` and `event`. A misspelled
//! `{{ contact.first_nam }}` is refused with a suggestion when the config loads, not found at
//! 3 a.m. by the first event that renders it. `data` is the caller's own: it is not checked.

use tera::ast::{Expr, ExprVal, FunctionCall, Node};

/// The variables every template sees (`rules::template::Vars`, or `context` for Tera).
pub const CONTEXT_VARIABLES: &[&str] = &["event", "contact", "data", "now"];

/// The fields of an event's contact that templates may read. `domain::event` validates these
/// (the address, the names, the phone, the `YYYY-MM-DD` birthday, the language and the
/// custom-field object); anything else a caller knows goes in `custom_fields` or `data`.
pub const CONTACT_FIELDS: &[&str] = &[
    "email",
    "first_name",
    "last_name",
    "phone",
    "birthday",
    "language",
    "custom_fields",
];

/// The fields of `event` (`Event::to_value`).
pub const EVENT_FIELDS: &[&str] = &["id", "type", "occurred_at", "contact", "data"];

/// Every reference a parsed template makes that the context cannot have, one message each.
pub fn unknown_references(ast: &[Node]) -> Vec<String> {
    let mut walk = Walk::default();
    walk.nodes(ast);
    walk.problems
}

/// Checks one dotted path into the event (`contact.email`, `event.data.x`, `data.cart_id`).
pub fn check_path(path: &str) -> Result<(), String> {
    let mut parts = path.split('.');
    let root = parts.next().unwrap_or_default();
    let first = parts.next();
    let second = parts.next();
    check_fields(path, root, first, second)
}

/// The variables bound inside the template (`set`, `for`, macro arguments) and the problems.
#[derive(Default)]
struct Walk {
    bound: Vec<String>,
    problems: Vec<String>,
}

impl Walk {
    fn nodes(&mut self, nodes: &[Node]) {
        for n in nodes {
            self.node(n);
        }
    }

    fn node(&mut self, node: &Node) {
        match node {
            Node::VariableBlock(_, e) => self.expr(e),
            Node::Set(_, s) => {
                self.expr(&s.value);
                // Bound from here on (a `set` inside a loop stays bound after it: lenient).
                self.bound.push(s.key.clone());
            }
            Node::FilterSection(_, f, _) => {
                self.call(&f.filter);
                self.nodes(&f.body);
            }
            Node::Block(_, b, _) => self.nodes(&b.body),
            Node::MacroDefinition(_, m, _) => {
                let mark = self.bound.len();
                self.bound.extend(m.args.keys().cloned());
                self.nodes(&m.body);
                self.bound.truncate(mark);
            }
            Node::Forloop(_, f, _) => {
                self.expr(&f.container);
                let mark = self.bound.len();
                self.bound.push(f.value.clone());
                self.bound.extend(f.key.clone());
                self.bound.push("loop".into());
                self.nodes(&f.body);
                self.bound.truncate(mark);
                if let Some(empty) = &f.empty_body {
                    self.nodes(empty);
                }
            }
            Node::If(i, _) => {
                for (_, cond, body) in &i.conditions {
                    self.expr(cond);
                    self.nodes(body);
                }
                if let Some((_, body)) = &i.otherwise {
                    self.nodes(body);
                }
            }
            Node::Super
            | Node::Text(_)
            | Node::Extends(..)
            | Node::Include(..)
            | Node::ImportMacro(..)
            | Node::Raw(..)
            | Node::Break(_)
            | Node::Continue(_)
            | Node::Comment(..) => {}
        }
    }

    fn expr(&mut self, e: &Expr) {
        self.value(&e.val);
        for f in &e.filters {
            self.call(f);
        }
    }

    fn call(&mut self, f: &FunctionCall) {
        for arg in f.args.values() {
            self.expr(arg);
        }
    }

    fn value(&mut self, v: &ExprVal) {
        match v {
            ExprVal::Ident(ident) => self.ident(ident),
            ExprVal::Math(m) => {
                self.expr(&m.lhs);
                self.expr(&m.rhs);
            }
            ExprVal::Logic(l) => {
                self.expr(&l.lhs);
                self.expr(&l.rhs);
            }
            ExprVal::In(i) => {
                self.expr(&i.lhs);
                self.expr(&i.rhs);
            }
            ExprVal::Test(t) => {
                self.ident(&t.ident);
                for a in &t.args {
                    self.expr(a);
                }
            }
            ExprVal::MacroCall(m) => {
                for a in m.args.values() {
                    self.expr(a);
                }
            }
            ExprVal::FunctionCall(f) => self.call(f),
            ExprVal::Array(items) => {
                for i in items {
                    self.expr(i);
                }
            }
            ExprVal::StringConcat(c) => {
                for v in &c.values {
                    self.value(v);
                }
            }
            ExprVal::String(_) | ExprVal::Int(_) | ExprVal::Float(_) | ExprVal::Bool(_) => {}
        }
    }

    fn ident(&mut self, ident: &str) {
        let (root, rest) = split_segment(ident);
        if self.bound.iter().any(|b| b == root) || root == "__tera_context" {
            return;
        }
        let (first, rest) = rest.map(split_segment).unzip();
        let second = rest.flatten().map(|r| split_segment(r).0);
        if let Err(problem) = check_fields(ident, root, first, second) {
            self.problems.push(problem);
        }
    }
}

/// Checks a root variable and, for `contact` and `event`, the field read from it (and for
/// `event.contact.x`, the contact's field). `None` is a segment that is absent or computed.
fn check_fields(
    written: &str,
    root: &str,
    first: Option<&str>,
    second: Option<&str>,
) -> Result<(), String> {
    if !CONTEXT_VARIABLES.contains(&root) {
        return Err(unknown(
            written,
            &format!("`{root}` is not a variable"),
            root,
            CONTEXT_VARIABLES,
            "templates see",
        ));
    }
    let contact_field = match (root, first) {
        ("contact", Some(f)) => Some(f),
        ("event", Some(f)) if !EVENT_FIELDS.contains(&f) => {
            return Err(unknown(
                written,
                &format!("the event has no field `{f}`"),
                f,
                EVENT_FIELDS,
                "it has",
            ))
        }
        ("event", Some("contact")) => second,
        _ => None,
    };
    match contact_field {
        Some(f) if !CONTACT_FIELDS.contains(&f) => Err(format!(
            "{}; other fields go in contact.custom_fields or data",
            unknown(
                written,
                &format!("the contact has no field `{f}`"),
                f,
                CONTACT_FIELDS,
                "it has",
            )
        )),
        _ => Ok(()),
    }
}

/// `` `contact.first_nam`: the contact has no field `first_nam`; did you mean first_name? (it has ...) ``
fn unknown(written: &str, what: &str, word: &str, known: &[&str], has: &str) -> String {
    let hint = match closest(word, known) {
        Some(k) => format!("; did you mean {k}?"),
        None => String::new(),
    };
    format!("`{written}`: {what}{hint} ({has} {})", known.join(", "))
}

/// The first segment of a Tera identifier and what follows it: `contact.first_name` gives
/// `contact` and `first_name`; `contact["first_name"].x` gives `contact` and `first_name"].x`
/// read as `first_name`; a computed subscript (`contact[data.k]`) gives no segment.
fn split_segment(ident: &str) -> (&str, Option<&str>) {
    let end = ident.find(['.', '[']).unwrap_or(ident.len());
    let (head, tail) = ident.split_at(end);
    let head = head.trim_end_matches(['"', '\'', ']']);
    let rest = if let Some(r) = tail.strip_prefix('.') {
        Some(r)
    } else if let Some(r) = tail.strip_prefix('[') {
        // Only a quoted key names a field; an expression or a number is not checked.
        r.strip_prefix(['"', '\''])
    } else {
        None
    };
    (head, rest)
}

/// The known word nearest to `word`, when it is near enough to be a typo of it.
fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = 1 + word.chars().count() / 3;
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(here)
            };
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(source: &str) -> Vec<String> {
        let t = tera::Template::new("t", None, source).unwrap();
        unknown_references(&t.ast)
    }

    #[test]
    fn a_misspelled_contact_field_is_named_with_a_suggestion() {
        let p = problems("Hi {{ contact.first_nam | default(value='') }}");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("`contact.first_nam`: the contact has no field `first_nam`; did you mean first_name?"),
            "{p:?}"
        );
    }

    #[test]
    fn every_known_field_and_data_pass() {
        let ok = "{{ contact.email }}{{ contact.custom_fields.tier }}{{ contact['language'] }}\
                  {{ event.type }}{{ event.contact.phone }}{{ event.data.x }}{{ data.anything.at.all }}\
                  {{ now }}{% set seed = contact.email ~ data.y %}{{ seed }}\
                  {% for k, v in data.items %}{{ loop.index }}{{ k }}{{ v.name }}{% endfor %}\
                  {% if data.link is starting_with('https://') %}x{% endif %}";
        assert_eq!(problems(ok), Vec::<String>::new());
    }

    #[test]
    fn event_fields_roots_and_nested_references_are_checked() {
        let p = problems(
            "{{ event.tpye }}{{ event.contact.frist_name }}{{ contatc.email }}\
             {{ data.x | default(value=contact.phnoe) }}{% if contact.langauge == 'cs' %}{% endif %}",
        );
        let all = p.join("\n");
        assert_eq!(p.len(), 5, "{all}");
        assert!(all.contains("did you mean type?"), "{all}");
        assert!(all.contains("`event.contact.frist_name`"), "{all}");
        assert!(
            all.contains("`contatc` is not a variable; did you mean contact?"),
            "{all}"
        );
        assert!(all.contains("did you mean phone?"), "{all}");
        assert!(all.contains("did you mean language?"), "{all}");
    }

    #[test]
    fn a_loop_variable_may_shadow_contact() {
        assert!(
            problems("{% for contact in data.people %}{{ contact.city }}{% endfor %}").is_empty()
        );
        assert_eq!(
            problems("{% for c in data.people %}{% endfor %}{{ c.x }}").len(),
            1
        );
    }

    #[test]
    fn paths_are_checked_like_templates() {
        assert!(check_path("data.cart_id").is_ok());
        assert!(check_path("contact.email").is_ok());
        assert!(check_path("contact.emial")
            .unwrap_err()
            .contains("did you mean email?"));
    }

    #[test]
    fn the_event_fields_are_those_templates_see() {
        use crate::domain::event::{Event, EventId, EventType};
        let e = Event {
            id: EventId::parse("a").unwrap(),
            kind: EventType::parse("t").unwrap(),
            occurred_at: chrono::Utc::now(),
            contact: Default::default(),
            data: Default::default(),
        };
        let mut keys: Vec<String> = e.to_value().as_object().unwrap().keys().cloned().collect();
        let mut known: Vec<String> = EVENT_FIELDS.iter().map(|s| s.to_string()).collect();
        keys.sort();
        known.sort();
        assert_eq!(keys, known);
    }
}
