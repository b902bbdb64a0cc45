//! Templates simple enough to render by looking values up: most of a config's templates
//! are `{{ data.x }}`, `Hi {{ contact.first_name | default(value='') }}`, a condition
//! `data.status == 'shipped'` or an `{% if data.status in [...] %}` mapping, and a Tera
//! render of one costs more than the whole rest of an event's work (BENCHMARKS.md, issue 16).
//!
//! A shortcut is recognised in the template's Tera syntax tree, so it is exactly what Tera
//! parsed, whitespace control included. It looks a value up with Tera's own rules (the
//! context's root, then `tera::dotted_pointer`) and gives up — `None`, so Tera renders
//! the template after all — wherever Tera would do anything else: a missing variable
//! (Tera's error names it), a value whose output would differ or exceed the size limit.

use crate::rules::template::Vars;
use serde_json::Value;
use tera::ast::{Expr, ExprVal, LogicOperator, Node};

/// A compiled template's shape, when it is one the relay renders without Tera.
#[derive(Debug, Clone)]
pub(crate) enum Shortcut {
    /// Text, `{{ lookup }}` blocks and `{% if %}` on simple tests (a rule's condition is
    /// `{% if test %}true{% endif %}`).
    Text(Vec<Part>),
    /// The typed leaf `{% set relay_value = lookup %}{{ relay_value | json_encode() }}`.
    Typed(Lookup),
}

/// A piece of a text shortcut.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    /// Literal text.
    Text(String),
    /// A value, rendered as Tera renders it.
    Value(Lookup),
    /// `{{ lookup | replace(from='a', to='b') }}`, of a string.
    Replaced {
        lookup: Lookup,
        from: String,
        to: String,
    },
    /// `{% if %}`, `{% elif %}`s and maybe `{% else %}`.
    If {
        branches: Vec<(Test, Vec<Part>)>,
        otherwise: Vec<Part>,
    },
}

/// A condition of an `{% if %}`.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    /// `lookup == 'text'`, or with `!=`.
    Compare {
        lookup: Lookup,
        equal: bool,
        text: String,
    },
    /// `lookup in [literals]`, or `not in`.
    Within {
        lookup: Lookup,
        items: Vec<Value>,
        negated: bool,
    },
}

/// A variable, with the literal of a `default(value=...)` filter if it has one.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    path: String,
    default: Option<Value>,
}

impl Shortcut {
    /// The shortcut for a compiled template's syntax tree, if it has one of the shapes.
    pub(crate) fn of(ast: &[Node]) -> Option<Self> {
        if let [Node::Set(_, set), Node::VariableBlock(_, out)] = ast {
            let encodes = matches!(&out.val, ExprVal::Ident(i) if *i == set.key)
                && matches!(out.filters.as_slice(), [f] if f.name == "json_encode" && f.args.is_empty())
                && !out.negated;
            return (set.key == "relay_value" && encodes)
                .then(|| Lookup::of(&set.value))
                .flatten()
                .map(Shortcut::Typed);
        }
        parts(ast).map(Shortcut::Text)
    }

    /// What Tera would render, if it is sure to be that and at most `max` bytes.
    pub(crate) fn text(&self, ctx: &Vars, max: usize) -> Option<String> {
        let Shortcut::Text(parts) = self else {
            return None;
        };
        let mut out = String::new();
        render_parts(parts, ctx, &mut out)?;
        (out.len() <= max).then_some(out)
    }

    /// The value a typed leaf gives, when its JSON text would come back as the same value
    /// and stay within `max` bytes.
    pub(crate) fn value(&self, ctx: &Vars, max: usize) -> Option<Value> {
        let Shortcut::Typed(lookup) = self else {
            return None;
        };
        let v = lookup.find(ctx)?;
        let mut budget = max;
        round_trips(v, 0, &mut budget).then(|| v.clone())
    }
}

/// The parts of a run of nodes, if every one has a shortcut.
fn parts(nodes: &[Node]) -> Option<Vec<Part>> {
    nodes
        .iter()
        .map(|n| match n {
            Node::Text(t) => Some(Part::Text(t.clone())),
            Node::VariableBlock(_, e) => value_part(e),
            Node::If(cond, _) => {
                let branches = cond
                    .conditions
                    .iter()
                    .map(|(_, e, body)| Some((Test::of(e)?, parts(body)?)))
                    .collect::<Option<Vec<_>>>()?;
                let otherwise = match &cond.otherwise {
                    Some((_, body)) => parts(body)?,
                    None => Vec::new(),
                };
                Some(Part::If {
                    branches,
                    otherwise,
                })
            }
            _ => None,
        })
        .collect()
}

/// `{{ lookup }}`, or `{{ lookup | replace(from='a', to='b') }}` with literal arguments.
fn value_part(e: &Expr) -> Option<Part> {
    let Some((last, rest)) = e.filters.split_last() else {
        return Lookup::of(e).map(Part::Value);
    };
    if last.name != "replace" {
        return Lookup::of(e).map(Part::Value);
    }
    let arg = |k: &str| match literal(last.args.get(k)?)? {
        Value::String(s) => Some(s),
        _ => None,
    };
    if last.args.len() != 2 {
        return None;
    }
    let (from, to) = (arg("from")?, arg("to")?);
    let inner = Expr {
        val: e.val.clone(),
        negated: e.negated,
        filters: rest.to_vec(),
    };
    Some(Part::Replaced {
        lookup: Lookup::of(&inner)?,
        from,
        to,
    })
}

/// Appends what Tera renders for `parts`; `None` where Tera would do something else.
fn render_parts(parts: &[Part], ctx: &Vars, out: &mut String) -> Option<()> {
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Value(l) => render_scalar(l.find(ctx)?, out)?,
            // Tera's `replace` filter takes strings only; anything else is its error.
            Part::Replaced { lookup, from, to } => {
                out.push_str(&lookup.find(ctx)?.as_str()?.replace(from.as_str(), to))
            }
            Part::If {
                branches,
                otherwise,
            } => {
                let mut body = otherwise;
                for (test, then) in branches {
                    if test.holds(ctx)? {
                        body = then;
                        break;
                    }
                }
                render_parts(body, ctx, out)?;
            }
        }
    }
    Some(())
}

impl Test {
    /// `lookup ==/!= 'text'` or `lookup (not) in [literals]`, with nothing else around it.
    fn of(e: &Expr) -> Option<Self> {
        if e.negated || !e.filters.is_empty() {
            return None;
        }
        match &e.val {
            ExprVal::Logic(logic) => {
                let equal = match logic.operator {
                    LogicOperator::Eq => true,
                    LogicOperator::NotEq => false,
                    _ => return None,
                };
                let (side, other) = (&logic.lhs, &logic.rhs);
                let (lookup, text) = match (&side.val, &other.val) {
                    (ExprVal::String(t), _) if plain_literal(side) => (Lookup::of(other)?, t),
                    (_, ExprVal::String(t)) if plain_literal(other) => (Lookup::of(side)?, t),
                    _ => return None,
                };
                Some(Test::Compare {
                    lookup,
                    equal,
                    text: text.clone(),
                })
            }
            ExprVal::In(within) => match literal(&within.rhs)? {
                Value::Array(items) => Some(Test::Within {
                    lookup: Lookup::of(&within.lhs)?,
                    items,
                    negated: within.negated,
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the test holds, as Tera decides it; `None` where Tera would fail.
    fn holds(&self, ctx: &Vars) -> Option<bool> {
        Some(match self {
            Test::Compare {
                lookup,
                equal,
                text,
            } => {
                let v = lookup.find(ctx)?;
                // Tera compares a number with anything else as false, for `!=` too.
                !v.is_number() && (v.as_str() == Some(text.as_str())) == *equal
            }
            Test::Within {
                lookup,
                items,
                negated,
            } => items.contains(lookup.find(ctx)?) != *negated,
        })
    }
}

impl Lookup {
    /// A bare variable, maybe with `| default(value=literal)`, and nothing else.
    fn of(e: &Expr) -> Option<Self> {
        let ExprVal::Ident(path) = &e.val else {
            return None;
        };
        // `[` makes Tera evaluate sub-variables; `__tera_context` is its context dump.
        let plain = !path.starts_with("__")
            && path.split('.').all(|seg| {
                !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if e.negated || !plain {
            return None;
        }
        let default = match e.filters.as_slice() {
            [] => None,
            [f] if f.name == "default" && f.args.len() == 1 => Some(literal(f.args.get("value")?)?),
            _ => return None,
        };
        Some(Self {
            path: path.clone(),
            default,
        })
    }

    /// The value as Tera's `lookup_ident` finds it, the default standing in for a missing
    /// or null one; `None` when missing without a default (Tera's error says so).
    fn find<'c>(&'c self, ctx: &'c Vars) -> Option<&'c Value> {
        let mut segments = self.path.split('.');
        let root = ctx.start(&mut segments);
        // `tera::dotted_pointer`'s walk, without its two allocations a segment: a plain
        // path has no quotes, brackets or `~` for it to unescape.
        let found = segments.try_fold(root?, |v, seg| match v {
            Value::Object(map) => map.get(seg),
            Value::Array(list) => index(seg).and_then(|i| list.get(i)),
            _ => None,
        });
        match (found, &self.default) {
            (Some(v), Some(d)) if v.is_null() => Some(d),
            (Some(v), _) => Some(v),
            (None, d) => d.as_ref(),
        }
    }
}

/// An array index as Tera (and serde_json's pointer) reads one: no sign, no leading zero.
fn index(seg: &str) -> Option<usize> {
    if seg.starts_with('+') || (seg.starts_with('0') && seg.len() != 1) {
        return None;
    }
    seg.parse().ok()
}

fn plain_literal(e: &Expr) -> bool {
    !e.negated && e.filters.is_empty()
}

/// A literal as Tera evaluates it: strings, integers, booleans and lists of them.
fn literal(e: &Expr) -> Option<Value> {
    if !plain_literal(e) {
        return None;
    }
    Some(match &e.val {
        ExprVal::String(s) => Value::String(s.clone()),
        ExprVal::Int(i) => Value::from(*i),
        ExprVal::Bool(b) => Value::Bool(*b),
        ExprVal::Array(items) => Value::Array(items.iter().map(literal).collect::<Option<_>>()?),
        _ => return None,
    })
}

/// Appends a scalar as Tera writes it (`ValueRender`); lists and objects are left to Tera.
fn render_scalar(v: &Value, out: &mut String) -> Option<()> {
    use std::fmt::Write as _;
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let written = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => write!(out, "{i}"),
                (None, Some(u), _) => write!(out, "{u}"),
                (None, None, Some(f)) => write!(out, "{f}"),
                (None, None, None) => return None,
            };
            written.ok()?;
        }
        Value::Array(_) | Value::Object(_) => return None,
    }
    Some(())
}

/// Whether `v`'s JSON text parses back into `v` and fits `budget` bytes: floats may not
/// (serde_json parses without `float_roundtrip`), nor nesting past serde_json's recursion
/// limit. The size is bounded from above: a string byte takes at most 6 bytes escaped.
fn round_trips(v: &Value, depth: usize, budget: &mut usize) -> bool {
    match v {
        Value::Null | Value::Bool(_) => spend(budget, 5),
        Value::Number(n) => !n.is_f64() && spend(budget, 20),
        Value::String(s) => spend(budget, 2 + 6 * s.len()),
        Value::Array(items) => {
            depth < 100
                && spend(budget, 2 + items.len())
                && items.iter().all(|i| round_trips(i, depth + 1, budget))
        }
        Value::Object(map) => {
            depth < 100
                && spend(budget, 2 + map.len())
                && map.iter().all(|(k, i)| {
                    spend(budget, 3 + 6 * k.len()) && round_trips(i, depth + 1, budget)
                })
        }
    }
}

/// Takes `n` bytes from `budget`, if it has them.
fn spend(budget: &mut usize, n: usize) -> bool {
    match budget.checked_sub(n) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tera::{Context, Tera};

    fn ctx() -> Vars<'static> {
        Vars::of_context(Context::from_value(json!({
            "contact": {"first_name": "Jan", "none": null, "n": 7, "big": 18446744073709551615u64,
                        "neg": -3, "f": 1.5, "yes": true, "tags": ["a", 1], "obj": {"a": 1}},
            "data": {"items": [{"id": "SKU-1", "q": 2}], "status": "shipped", "f": 0.1,
                     "deep": {"x": {"y": "z"}}, "0": "zero"},
        }))
        .unwrap())
    }

    /// What Tera renders, and what the shortcut does, when it takes the template.
    fn both(source: &str) -> (Result<String, String>, Option<String>) {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        tera.add_raw_template("t", source).unwrap();
        let ast = &tera.get_template("t").unwrap().ast;
        let quick = Shortcut::of(ast).and_then(|s| s.text(&ctx(), 1 << 20));
        (
            tera.render("t", ctx().context()).map_err(|e| e.to_string()),
            quick,
        )
    }

    #[test]
    fn a_text_shortcut_renders_what_tera_renders() {
        for source in [
            "{{ contact.first_name }}",
            "Hi {{ contact.first_name | default(value='friend') }}!",
            "{{ contact.nope | default(value='friend') }}",
            "{{ contact.none | default(value='x') }}",
            "{{ contact.none }}|{{ contact.n }}|{{ contact.big }}|{{ contact.neg }}|{{ contact.f }}|{{ contact.yes }}",
            "{{ data.deep.x.y }} {{ data.items.0.id }} {{ data.0 }}",
            "{{ data.items.00.id | default(value='lead') }}{{ data.status.x | default(value='s') }}",
            "a {{- contact.first_name -}} b\n  {{ contact.n }}  ",
            "{# note #}{{ contact.first_name }}",
            "{{ contact.nope | default(value=3) }}{{ contact.nope | default(value=true) }}",
            "{% if data.status in ['placed', 'shipped'] %}{{ data.status }}{% elif data.status == 'paid' %}processing{% else %}unknown{% endif %}",
            "{% if data.status not in ['placed'] %}a{% endif %}{% if contact.n in [7] %}b{% endif %}{% if contact.n in ['7'] %}c{% else %}d{% endif %}",
            "{% if data.status == 'paid' %}x{% elif data.status != 'shipped' %}y{% endif %}-",
            "order-{{ data.status | replace(from='ship', to='send') }}",
            "{{ contact.nope | default(value='a-b') | replace(from='-', to='') }}",
        ] {
            let (tera, quick) = both(source);
            assert_eq!(quick.as_ref(), tera.as_ref().ok(), "{source}");
            assert!(quick.is_some(), "{source}");
        }
    }

    #[test]
    fn what_only_tera_can_render_is_left_to_it() {
        for source in [
            // Errors: Tera's message names the variable.
            "{{ contact.nope }}",
            "{{ data.items.5.id }}",
            // Lists and objects as text, filters, tests and anything with logic.
            "{{ contact.tags }}",
            "{{ contact.obj }}",
            "{{ contact.first_name | upper }}",
            "{{ contact.nope | default(value=contact.first_name) }}",
            "{% if contact.n > 3 %}true{% endif %}",
            "{{ __tera_context }}",
            "{{ not contact.yes }}",
            "{% if contact.nope in ['a'] %}a{% endif %}",
            "{{ contact.n | replace(from='7', to='8') }}",
            "{{ data.status | replace(from='s', to=contact.first_name) }}",
            "{% if data.status is starting_with('s') %}a{% endif %}",
            "{% for i in data.items %}{{ i.id }}{% endfor %}",
        ] {
            let (_, quick) = both(source);
            assert_eq!(quick, None, "{source}");
        }
    }

    #[test]
    fn a_condition_shortcut_decides_as_tera_does() {
        for expr in [
            "data.status == 'shipped'",
            "data.status == 'placed'",
            "data.status != 'placed'",
            "data.status != 'shipped'",
            "'shipped' == data.status",
            // A number against a string is false for both operators in Tera.
            "contact.n == '7'",
            "contact.n != '7'",
            "contact.none == ''",
            "contact.none != ''",
            "contact.nope | default(value='x') == 'x'",
            "contact.tags != 'a'",
        ] {
            let (tera, quick) = both(&format!("{{% if {expr} %}}true{{% endif %}}"));
            assert_eq!(quick.as_ref(), tera.as_ref().ok(), "{expr}");
            assert!(quick.is_some(), "{expr}");
        }
        let (tera, quick) = both("{% if contact.nope == 'x' %}true{% endif %}");
        assert!(tera.is_err() && quick.is_none());
    }

    #[test]
    fn a_typed_shortcut_gives_the_value_tera_encodes() {
        let mut tera = Tera::default();
        for (i, expr) in [
            "data.items",
            "contact.n",
            "contact.big",
            "contact.none | default(value=[])",
            "contact.nope | default(value='')",
            "data.deep",
            "contact.tags",
        ]
        .iter()
        .enumerate()
        {
            let name = format!("t{i}");
            let source =
                format!("{{% set relay_value = {expr} %}}{{{{ relay_value | json_encode() }}}}");
            tera.add_raw_template(&name, &source).unwrap();
            let shortcut = Shortcut::of(&tera.get_template(&name).unwrap().ast);
            let quick = shortcut.and_then(|s| s.value(&ctx(), 1 << 20));
            let text = tera.render(&name, ctx().context()).unwrap();
            let slow: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(quick, Some(slow), "{expr}");
        }
    }

    #[test]
    fn a_typed_value_that_might_not_round_trip_or_fit_is_left_to_tera() {
        let mut tera = Tera::default();
        tera.add_raw_template(
            "f",
            "{% set relay_value = data.f %}{{ relay_value | json_encode() }}",
        )
        .unwrap();
        tera.add_raw_template(
            "i",
            "{% set relay_value = data.items %}{{ relay_value | json_encode() }}",
        )
        .unwrap();
        let f = Shortcut::of(&tera.get_template("f").unwrap().ast).unwrap();
        assert_eq!(f.value(&ctx(), 1 << 20), None);
        let i = Shortcut::of(&tera.get_template("i").unwrap().ast).unwrap();
        assert!(i.value(&ctx(), 1 << 20).is_some());
        assert_eq!(i.value(&ctx(), 10), None);
    }
}
