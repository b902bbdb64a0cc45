// The deliveries: filters in the hash (so a view can be linked), newest first, "Older" pages
// with the cursor the API hands back.

import {api, query} from "./api.js";
import {badge, card, errorBox, h, pageHead, replace, table} from "./dom.js";
import {fromLocalInput, relative, toLocalInput, when} from "./format.js";

const STATUSES = ["pending", "retrying", "scheduled", "sent", "dead", "dry_run", "skipped", "cancelled"];
const FIELDS = ["status", "email", "rule", "action", "event_type", "event_id", "since", "until"];

/** Renders the filtered list into `main`. */
export async function deliveries(main, ctx) {
  const filters = {};
  for (const f of FIELDS) filters[f] = ctx.params.get(f) || "";
  const list = h("div", {id: "delivery-list"});
  const more = h("div", {class: "buttons"});
  replace(main,
    pageHead("Deliveries", "Every request the rules produced, newest first."),
    card(null, chips(filters), form(filters, ruleNames(ctx.signal))),
    h("div", {class: "card", id: "results"}, list, more));
  const rows = [];
  const page = async (cursor) => {
    const q = query({...filters, limit: 50, cursor});
    const answer = await api(`/v1/deliveries${q}`, {signal: ctx.signal});
    rows.push(...(answer.deliveries || []));
    replace(list, deliveryTable(rows, "No delivery matches these filters."));
    const next = answer.next_cursor;
    replace(more, next
      ? h("button", {type: "button", id: "older", on: {click: async (e) => {
        e.target.disabled = true;
        try { await page(next); } catch (err) { if (!ctx.signal.aborted) more.append(errorBox(err)); }
      }}}, "Older")
      : rows.length ? h("span", {class: "status-line"}, `${rows.length} shown · no older ones`) : null);
  };
  try {
    await page("");
  } catch (err) {
    // A filter the API refuses is shown under the filters, which stay to be corrected.
    if (err.name === "KeyRefused" || ctx.signal.aborted) throw err;
    replace(list, errorBox(err, "The relay refused this search"));
  }
}

/** The table of deliveries (also used by the event view). */
export function deliveryTable(rows, empty, columns = {event: true}) {
  return table(
    [["Delivery"], ["Status"], ["Rule · action"], ["Contact"], columns.event ? ["Event"] : null, ["Attempts", "num"], ["When"], ["Last error"]]
      .filter(Boolean),
    rows.map((d) => [
      ["Delivery", h("a", {href: `#/delivery/${encodeURIComponent(d.id)}`, class: "mono id", title: d.id}, d.id)],
      ["Status", badge(d.status)],
      ["Rule · action", [h("div", {}, d.rule), h("div", {class: "muted"}, d.action)]],
      ["Contact", d.email || "—", "email"],
      columns.event ? ["Event", d.event_id
        ? [h("a", {href: `#/event/${encodeURIComponent(d.event_id)}`, class: "mono id", title: d.event_id}, d.event_id), h("div", {class: "muted"}, d.event_type || "")]
        : "—", "wrap"] : null,
      ["Attempts", String(d.attempts ?? 0), "num"],
      ["When", whenCell(d)],
      ["Last error", d.last_error || "—", "wrap"],
    ].filter(Boolean)),
    empty);
}

function whenCell(d) {
  const due = d.due_at || (d.status === "retrying" ? d.next_attempt_at : null);
  if (due) return [h("div", {}, `due ${relative(due)}`), h("div", {class: "muted"}, when(due))];
  const t = d.sent_at || d.created_at;
  return t ? h("span", {title: when(t)}, relative(t)) : "—";
}

function chips(filters) {
  const link = (status, label) => {
    const pressed = (filters.status || "") === status;
    return h("a", {class: "button chip", "aria-current": pressed ? "true" : null,
      href: `#/deliveries${query({...filters, status})}`}, label);
  };
  return h("nav", {class: "chips", "aria-label": "Status"},
    link("", "All"), STATUSES.map((s) => link(s, s.replace("_", " "))));
}

/** The loaded rules' names, as suggestions for the rule filter (none when they cannot be read). */
function ruleNames(signal) {
  const list = h("datalist", {id: "rule-names"});
  api("/v1/rules", {signal})
    .then((r) => list.append(...(r.rules || []).map((x) => h("option", {value: x.name}))))
    .catch(() => {});
  return list;
}

function form(filters, names) {
  const field = (name, label, attrs = {}) => h("div", {class: attrs.wide ? "wide" : null},
    h("label", {for: `f-${name}`}, label),
    h("input", {id: `f-${name}`, name, value: attrs.value ?? filters[name], type: attrs.type || "text",
      placeholder: attrs.placeholder, autocomplete: "off", spellcheck: "false", list: attrs.list}));
  const el = h("form", {class: "filters", role: "search", id: "filters"},
    field("email", "Contact e-mail", {type: "search", placeholder: "jana@example.com", wide: true}),
    field("rule", "Rule", {list: "rule-names"}), names,
    field("action", "Action", {placeholder: "trigger_event"}),
    field("event_type", "Event type", {placeholder: "contact.created"}),
    field("event_id", "Event id", {placeholder: "evt-2026-0001"}),
    field("since", "Since", {type: "datetime-local", value: toLocalInput(filters.since)}),
    field("until", "Until", {type: "datetime-local", value: toLocalInput(filters.until)}),
    h("div", {class: "buttons"},
      h("button", {type: "submit", class: "primary"}, "Search"),
      h("a", {class: "button quiet", href: "#/deliveries"}, "Clear")));
  el.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(el);
    const next = {status: filters.status};
    for (const f of ["email", "rule", "action", "event_type", "event_id"]) next[f] = String(data.get(f) || "").trim();
    next.since = fromLocalInput(String(data.get("since") || ""));
    next.until = fromLocalInput(String(data.get("until") || ""));
    window.location.hash = `#/deliveries${query(next)}`;
  });
  return el;
}
