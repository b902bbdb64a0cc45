// One event: its JSON, its deliveries, and the chain of rules it started.

import {api} from "./api.js";
import {badge, card, h, jsonBlock, pageHead, replace} from "./dom.js";
import {relative, span, when} from "./format.js";
import {deliveryTable} from "./deliveries.js";

/** Renders event `id` into `main`. */
export async function eventView(main, ctx, id) {
  const [ev, rules] = await Promise.all([
    api(`/v1/events/${encodeURIComponent(id)}`, {signal: ctx.signal}),
    api("/v1/rules", {signal: ctx.signal}).then((r) => r.rules || []).catch((err) => {
      if (err.name === "KeyRefused") throw err;
      return [];
    }),
  ]);
  // The event's own deliveries may leave out the contact: it is the event's.
  const contact = ev.event && ev.event.contact && ev.event.contact.email;
  const list = (ev.deliveries || []).map((d) => ({...d, email: d.email || contact}));
  const tryIt = h("a", {class: "button", href: "#/playground", id: "try-event", on: {click: () => {
    sessionStorage.setItem("relay.playgroundEvent", JSON.stringify(ev.event ?? {}, null, 2));
  }}}, "Try in the playground");
  replace(main,
    pageHead(`Event ${ev.id}`, `${ev.type} · received ${when(ev.received_at)}`, tryIt),
    h("div", {class: "grid two"},
      card("The chain", chain(list, rules, ev.received_at)),
      card("The event", jsonBlock(ev.event ?? ev, "The event"))),
    h("div", {class: "card", id: "event-deliveries"}, h("h2", {}, "Deliveries"),
      deliveryTable(list, "No delivery: no rule matched this event.", {event: false})));
}

/** Each rule the event ran, in the order of the chain, with its delays and outcomes. */
function chain(list, rules, receivedAt) {
  if (!list.length) return h("p", {class: "muted"}, "No rule ran.");
  const steps = new Map();
  const depth = depths(list, rules);
  for (const d of list) {
    const level = d.chain_depth ?? depth(d.rule);
    const key = `${level}\u0000${d.rule}`;
    if (!steps.has(key)) steps.set(key, {rule: d.rule, depth: level, deliveries: []});
    steps.get(key).deliveries.push(d);
  }
  const ordered = [...steps.values()].sort((a, b) => a.depth - b.depth || first(a).localeCompare(first(b)));
  return h("ol", {class: "chain", id: "chain"}, ordered.map((s) => h("li", {class: `indent-${Math.min(s.depth, 3)}`},
    h("div", {class: "step-head"},
      h("strong", {}, s.rule),
      h("span", {class: "depth"}, s.depth ? `step ${s.depth + 1} · ${parentOf(s, rules)}` : "matched the event"),
    ),
    h("ul", {}, s.deliveries.map((d) => h("li", {},
      h("a", {href: `#/delivery/${encodeURIComponent(d.id)}`}, d.action), " ", badge(d.status), " ",
      h("span", {class: "muted"}, timing(d, receivedAt))))))));
}

/** Where `chain_depth` is not in the answer, a rule's place in the chain from the loaded
 * rules' `then`: one below the rule of this event that chains to it. */
function depths(list, rules) {
  const ran = new Set(list.map((d) => d.rule));
  const parent = (name) => rules.find((r) => ran.has(r.name) && (r.then || []).some((t) => (typeof t === "string" ? t : t && t.rule) === name));
  return (name) => {
    let level = 0;
    for (let p = parent(name), seen = new Set([name]); p && !seen.has(p.name) && level < 16; p = parent(p.name)) {
      seen.add(p.name);
      level += 1;
    }
    return level;
  };
}

function first(step) {
  const d = step.deliveries[0];
  return String(d.created_at || d.due_at || "");
}

/** "after welcome, +3d" from the loaded rules' `then`. */
function parentOf(step, rules) {
  for (const r of rules) {
    for (const t of r.then || []) {
      const name = typeof t === "string" ? t : t && t.rule;
      if (name === step.rule) return t.after ? `after ${r.name}, ${t.after} later` : `after ${r.name}`;
    }
  }
  return "chained";
}

function timing(d, receivedAt) {
  if (d.status === "scheduled" && d.due_at) {
    const after = receivedAt ? ` · ${relativeTo(d.due_at, receivedAt)} after the event` : "";
    return `due ${when(d.due_at)} (${relative(d.due_at)})${after}`;
  }
  if (d.status === "cancelled") return d.last_error ? `cancelled: ${d.last_error}` : "cancelled before it was due";
  if (d.sent_at) return `sent ${when(d.sent_at)}`;
  if (d.last_error) return d.last_error;
  return "";
}

function relativeTo(iso, baseIso) {
  const ms = new Date(iso).getTime() - new Date(baseIso).getTime();
  if (Number.isNaN(ms)) return "";
  return `${ms < 0 ? "-" : "+"}${span(Math.abs(ms))}`;
}
