//! Matching events against rules and rendering each action into a frozen request (each
//! kind renders in `rules::actions`).

use crate::domain::delivery::Prepared;
use crate::domain::event::Event;
use crate::rules::actions;
pub use crate::rules::actions::NotRendered;
use crate::rules::config::{Config, Rule};
use crate::rules::template::Vars;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

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
    let ctx = Vars::new(event, now);
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
                result: actions::render(&config.templates, &config.outbound, a, event, &ctx),
            });
        }
    }
    out
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
                let shown = if is_credential_header(k) { "***" } else { v };
                h.insert(k.clone(), Value::String(shown.to_string()));
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

/// Whether a header carries a credential by its name (a key, a token, a cookie): shown as
/// `***` wherever a request is shown, whatever the config wrote in it.
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["key", "token", "secret", "password", "signature", "auth"]
        .iter()
        .any(|w| n.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::parse_event;

    #[test]
    fn credential_headers_are_shown_masked() {
        for h in [
            "Authorization",
            "X-Api-Key",
            "cookie",
            "X-Auth-Token",
            "Webhook-Signature",
        ] {
            assert!(is_credential_header(h), "{h}");
        }
        for h in ["Content-Type", "Accept", "X-Request-Id"] {
            assert!(!is_credential_header(h), "{h}");
        }
    }

    fn render(rules: &str, event: Value) -> Vec<Result<Value, NotRendered>> {
        let config = Config::parse(&format!("smartemailing: {{time_zone: Europe/Prague, date_custom_fields: [9]}}\nrules:\n{rules}"), "t")
            .unwrap_or_else(|e| panic!("{e}"));
        let now = Utc::now();
        let event = parse_event(&event, "", now).unwrap();
        render_event(&config, &event, None, now)
            .into_iter()
            .map(|r| {
                r.result.map(|p| match p {
                    Prepared::SmartEmailing { item, .. } => item,
                    Prepared::Http { .. } => Value::Null,
                })
            })
            .collect()
    }

    fn order_event(data: Value) -> Value {
        json!({"id": "o-1", "type": "order.x", "contact": {"email": "eva@example.com"}, "data": data})
    }

    const ORDER_RULE: &str = "  - name: o\n    on: [order.x]\n    actions:\n      - upsert_order: {eshop_name: s, eshop_code: A-1, status: \"{{ data.status }}\", created_at: \"{{ data.created_at }}\", paid_at: \"{{ data.paid_at | default(value='') }}\", items: \"{{ data.items }}\"}\n";

    fn item(url: Option<&str>) -> Value {
        let mut i = json!({"id": "SKU-1", "name": "Mug", "price": {"without_vat": 200, "with_vat": 242, "currency": "CZK"}, "quantity": 1});
        if let Some(u) = url {
            i["url"] = json!(u);
        }
        i
    }

    #[test]
    fn order_dates_go_in_the_accounts_zone_and_an_empty_one_is_left_out() {
        let out = render(
            ORDER_RULE,
            order_event(
                json!({"status": "placed", "created_at": "2026-11-26T10:00:00Z", "items": [item(Some("https://shop/1"))]}),
            ),
        );
        let order = out[0].as_ref().unwrap();
        assert_eq!(order["created_at"], "2026-11-26 11:00:00");
        assert!(order.get("paid_at").is_none(), "{order}");
    }

    #[test]
    fn an_order_date_that_is_not_a_date_is_dead_with_its_field() {
        let out = render(
            ORDER_RULE,
            order_event(json!({"status": "placed", "created_at": "yesterday", "items": []})),
        );
        match &out[0] {
            Err(NotRendered::Failed(why)) => {
                assert!(
                    why.starts_with("upsert_order.created_at: `yesterday` is not a date"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_item_without_a_url_is_dead_naming_the_item_and_field() {
        let out = render(
            ORDER_RULE,
            order_event(
                json!({"status": "placed", "created_at": "2026-11-26", "items": [item(Some("https://shop/1")), item(Some("https://shop/2")), item(None)]}),
            ),
        );
        assert_eq!(
            out[0],
            Err(NotRendered::Failed(
                "upsert_order.items[2].url is required".into()
            ))
        );
    }

    #[test]
    fn both_spellings_of_cancelled_send_one() {
        for spelling in ["cancelled", "canceled"] {
            let out = render(
                ORDER_RULE,
                order_event(json!({"status": spelling, "created_at": "2026-11-26", "items": []})),
            );
            assert_eq!(
                out[0].as_ref().unwrap()["status"],
                actions::CANCELLED,
                "{spelling}"
            );
        }
        assert!(Config::parse("rules:\n  - {name: o, on: [x], actions: [{upsert_order: {eshop_name: s, eshop_code: c, status: canceled}}]}\n", "t").is_ok());
        let err = Config::parse("rules:\n  - {name: o, on: [x], actions: [{upsert_order: {eshop_name: s, eshop_code: c, status: gone}}]}\n", "t").unwrap_err();
        assert!(
            err.problems[0]
                .starts_with("rules[o].actions[0].upsert_order.status: `gone` must be one of"),
            "{err}"
        );
    }

    #[test]
    fn contact_dates_purposes_and_date_custom_fields_are_converted() {
        let rules = "  - name: c\n    on: [c.x]\n    actions:\n      - upsert_contact:\n          fields: {nameday: \"{{ data.nameday }}\", purposes: [{id: 1, valid_from: \"{{ data.from }}\", valid_to: \"\"}]}\n          custom_fields: {7: {date: \"{{ data.signup }}\"}, 9: \"{{ data.renewal }}\", 10: \"{{ data.signup }}\", 11: {date: \"\"}}\n";
        let out = render(
            rules,
            json!({"id": "c-1", "type": "c.x", "contact": {"email": "jan@example.com", "birthday": "1990-05-17"},
                   "data": {"nameday": "2026-06-24", "from": "2026-07-01T08:00:00Z", "signup": "2026-11-26T10:00:00Z", "renewal": "2027-01-01"}}),
        );
        let c = out[0].as_ref().unwrap();
        assert_eq!(c["birthday"], "1990-05-17 00:00:00");
        assert_eq!(c["nameday"], "2026-06-24 00:00:00");
        assert_eq!(
            c["purposes"],
            json!([{"id": 1, "valid_from": "2026-07-01 10:00:00"}])
        );
        assert_eq!(
            c["customfields"],
            // In the keys' order as text; 10 is not declared a date: sent as written.
            json!([
                {"id": 10, "value": "2026-11-26T10:00:00Z"},
                {"id": 7, "value": "2026-11-26 11:00:00"},
                {"id": 9, "value": "2027-01-01 00:00:00"}
            ])
        );
    }

    #[test]
    fn the_se_datetime_filter_uses_the_accounts_zone() {
        let rules = "  - name: t\n    on: [t.x]\n    actions:\n      - trigger_event: {name: t, payload: {when: \"{{ data.when | se_datetime }}\", none: \"{{ data.none | se_datetime }}\"}}\n";
        let out = render(
            rules,
            json!({"id": "t-1", "type": "t.x", "contact": {"email": "jan@example.com"}, "data": {"when": "2026-07-01T22:00:00Z", "none": ""}}),
        );
        assert_eq!(
            out[0].as_ref().unwrap()["payload"],
            json!({"when": "2026-07-02 00:00:00", "none": ""})
        );
    }

    #[test]
    fn a_bad_time_zone_is_refused_at_load() {
        let err = Config::parse("smartemailing: {time_zone: Mars/Olympus}\n", "t").unwrap_err();
        assert!(
            err.problems[0].starts_with("smartemailing.time_zone: `Mars/Olympus`"),
            "{err}"
        );
    }
}
