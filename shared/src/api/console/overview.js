// The overview: the targets' health, the queues, the counts by status, refreshed every 5 s
// while the tab is visible.

import {api} from "./api.js";
import {badge, card, errorBox, h, pageHead, replace, table} from "./dom.js";
import {relative, span, when} from "./format.js";

const EVERY_MS = 5000;
const STATUSES = ["pending", "retrying", "scheduled", "sent", "dry_run", "skipped", "cancelled", "dead"];

/** Renders the overview into `main` and keeps it fresh until the page moves on. */
export async function overview(main, ctx) {
  const body = h("div", {});
  const stamp = h("span", {class: "status-line", id: "refreshed"});
  replace(main, pageHead("Overview", "The relay's health right now.", stamp), body);
  let timer = null;
  const tick = async () => {
    clearTimeout(timer);
    if (ctx.signal.aborted) return;
    if (!document.hidden) {
      try {
        const status = await api("/v1/status", {signal: ctx.signal});
        replace(body, ...view(status));
        stamp.textContent = `Updated ${new Date().toLocaleTimeString()} · every ${EVERY_MS / 1000} s`;
      } catch (err) {
        if (ctx.signal.aborted || err.name === "AbortError") return;
        if (err.name === "KeyRefused" || err.status === 401 || err.status === 403) throw err;
        stamp.textContent = "";
        replace(body, errorBox(err, "Cannot read /v1/status"));
      }
    }
    timer = setTimeout(() => tick().catch(() => {}), EVERY_MS);
  };
  const wake = () => { if (!document.hidden) tick().catch(() => {}); };
  document.addEventListener("visibilitychange", wake);
  ctx.onLeave(() => {
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", wake);
  });
  await tick();
}

function view(s) {
  return [
    s.dry_run ? h("p", {class: "alert warn", role: "status", id: "dry-run"},
      h("strong", {}, "Dry run. "),
      "No SmartEmailing credentials are set: everything is rendered and recorded, nothing is sent (deliveries show dry_run).") : null,
    stats(s),
    h("div", {class: "grid", id: "targets"}, card("Targets", targets(s.targets || []))),
    h("div", {class: "grid three", id: "counts"},
      card("Queues", queues(s.queues || [])),
      card("Last hour", counts(s.deliveries && s.deliveries.last_hour)),
      card("Last day", counts(s.deliveries && s.deliveries.last_day))),
    h("p", {class: "status-line"},
      `Version ${s.version || "?"}`, s.platform ? ` · ${s.platform}` : "",
      ` · ${(s.rules || []).length} rules loaded`, s.note ? ` · ${s.note}` : ""),
  ];
}

function stats(s) {
  const day = (s.deliveries && s.deliveries.last_day) || {};
  const total = Object.values(day).reduce((a, b) => a + (Number(b) || 0), 0);
  const dead = Number(s.dead_last_day) || 0;
  const open = (s.targets || []).filter((t) => t.circuit && t.circuit !== "closed").length;
  const waiting = (s.queues || []).reduce((a, q) => a + (Number(q.depth) || 0), 0);
  return h("div", {class: "grid stats"},
    h("a", {class: `card stat${dead ? " alarm" : ""}`, href: "#/deliveries?status=dead", id: "dead-count"},
      h("div", {class: "label"}, "Dead letters, last day"), h("div", {class: "value"}, String(dead)),
      h("div", {class: "label"}, dead ? "Open the list →" : "None")),
    stat("Deliveries, last day", total, "#/deliveries"),
    stat("Sent, last day", Number(day.sent || 0) + Number(day.dry_run || 0), "#/deliveries?status=sent"),
    stat("Waiting in queues", waiting),
    stat("Circuits not closed", open));
}

function stat(label, value, href) {
  const inner = [h("div", {class: "label"}, label), h("div", {class: "value"}, String(value))];
  return href ? h("a", {class: "card stat", href}, ...inner) : h("div", {class: "card stat"}, ...inner);
}

function targets(list) {
  return table([["Target"], ["Circuit"], ["Calls/min", "num"], ["Last success"], ["Last error"]],
    list.map((t) => [
      ["Target", h("span", {class: "mono"}, t.target)],
      ["Circuit", [badge(t.circuit), t.open_until ? h("div", {class: "muted"}, `until ${when(t.open_until)}`) : null]],
      ["Calls/min", String(t.calls_last_minute ?? 0), "num"],
      ["Last success", t.last_success_at ? h("span", {title: when(t.last_success_at)}, relative(t.last_success_at)) : "—"],
      ["Last error", t.last_error
        ? [h("div", {}, t.last_error.message), h("div", {class: "muted"}, relative(t.last_error.at))]
        : "—", "wrap"],
    ]), "No target called yet.");
}

function queues(list) {
  return table([["Queue"], ["Depth", "num"], ["Oldest due", "num"]],
    list.map((q) => [
      ["Queue", q.queue],
      ["Depth", String(q.depth ?? 0), "num"],
      ["Oldest due", q.oldest_due_age_seconds ? span(q.oldest_due_age_seconds * 1000) : "—", "num"],
    ]), "No queues.");
}

function counts(byStatus) {
  const c = byStatus || {};
  const known = STATUSES.filter((s) => c[s]);
  const other = Object.keys(c).filter((s) => !STATUSES.includes(s) && c[s]);
  const rows = [...known, ...other].map((s) => [
    ["Status", h("a", {href: `#/deliveries?status=${encodeURIComponent(s)}`}, badge(s))],
    ["Deliveries", String(c[s]), "num"],
  ]);
  return table([["Status"], ["Deliveries", "num"]], rows, "No deliveries.");
}
