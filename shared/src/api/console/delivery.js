// One delivery: what was sent, every attempt and how it was judged, Replay and Cancel.

import {api} from "./api.js";
import {badge, card, errorBox, h, jsonBlock, pageHead, replace} from "./dom.js";
import {relative, when} from "./format.js";

const IN_FLIGHT = ["pending", "retrying"];
const EVERY_MS = 2000;

/** Renders delivery `id` into `main`; while it is in flight, again every 2 s. */
export async function delivery(main, ctx, id, said) {
  const d = await api(`/v1/deliveries/${encodeURIComponent(id)}`, {signal: ctx.signal});
  if (ctx.signal.aborted) return;
  const notice = h("div", {id: "notice"}, said ? h("p", {class: "alert ok", role: "status"}, said) : null);
  const again = (message) => delivery(main, ctx, id, message);
  clearTimeout(ctx.deliveryTimer);
  if (IN_FLIGHT.includes(d.status)) {
    ctx.deliveryTimer = setTimeout(() => again(notice.textContent).catch(() => {}), EVERY_MS);
    if (!ctx.deliveryTimerCleared) {
      ctx.deliveryTimerCleared = true;
      ctx.onLeave(() => clearTimeout(ctx.deliveryTimer));
    }
  }
  replace(main,
    pageHead("Delivery", `${d.rule} · ${d.action}`, ...buttons(d, notice, again)),
    notice,
    h("div", {class: "grid two"},
      card("Summary", facts(d)),
      card("Attempts", timeline(d.attempt_log || []))),
    h("div", {class: "stack"},
      card("Request as sent", d.request ? jsonBlock(d.request, "The request") : h("p", {class: "muted"}, "Not rendered yet.")),
      d.last_response !== undefined && d.last_response !== null
        ? card("Last response", typeof d.last_response === "string" ? h("pre", {tabindex: "0"}, d.last_response) : jsonBlock(d.last_response))
        : null));
}

function buttons(d, notice, reload) {
  const out = [h("a", {class: "button", href: `#/event/${encodeURIComponent(d.event_id)}`, id: "to-event"}, "Open the event")];
  if (d.status === "dead") {
    out.push(h("button", {type: "button", class: "primary", id: "replay", on: {click: (e) => act(e.target, notice, async () => {
      const r = await api("/v1/deliveries/replay", {method: "POST", body: {ids: [d.id]}});
      return r.queued ? `Queued again (${r.queued}).` : r.already_sent ? "Already sent: not sent again." : "Nothing to replay.";
    }, reload)}}, "Replay"));
  }
  if (d.status === "scheduled") {
    out.push(h("button", {type: "button", class: "danger", id: "cancel", on: {click: (e) => act(e.target, notice, async () => {
      await api(`/v1/deliveries/${encodeURIComponent(d.id)}/cancel`, {method: "POST", body: {}});
      return "Cancelled: the timer will not fire.";
    }, reload)}}, "Cancel"));
  }
  return out;
}

async function act(button, notice, run, reload) {
  button.disabled = true;
  try {
    await reload(await run());
  } catch (err) {
    button.disabled = false;
    replace(notice, errorBox(err, "Refused"));
  }
}

function facts(d) {
  const rows = [
    ["Id", h("span", {class: "mono", id: "delivery-id"}, d.id)],
    ["Status", h("span", {id: "delivery-status"}, badge(d.status))],
    ["Rule", d.rule],
    ["Action", d.action],
    ["Contact", d.email || "—"],
    ["Event", [h("a", {href: `#/event/${encodeURIComponent(d.event_id)}`, class: "mono"}, d.event_id), d.event_type ? ` (${d.event_type})` : ""]],
    ["Chain depth", String(d.chain_depth ?? 0)],
    ["Created", when(d.created_at)],
    d.due_at ? ["Due", `${when(d.due_at)} (${relative(d.due_at)})`] : null,
    d.next_attempt_at && d.status === "retrying" ? ["Next attempt", `${when(d.next_attempt_at)} (${relative(d.next_attempt_at)})`] : null,
    ["Sent", when(d.sent_at)],
    ["Attempts", String(d.attempts ?? 0)],
    d.last_error ? ["Last error", h("span", {class: "field-error"}, d.last_error)] : null,
  ].filter(Boolean);
  return h("dl", {class: "facts"}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function timeline(log) {
  if (!log.length) return h("p", {class: "muted"}, "No attempt yet.");
  return h("ol", {class: "timeline", id: "attempts"}, log.map((a, i) => h("li", {class: (a.class || "").replace(/[^a-z_]/g, "")},
    h("div", {class: "when"},
      h("strong", {}, `#${i + 1}`), badge(a.class), a.status_code ? h("span", {class: "mono"}, `HTTP ${a.status_code}`) : null,
      h("span", {class: "muted"}, when(a.at)), a.duration_ms !== undefined ? h("span", {class: "muted"}, `${a.duration_ms} ms`) : null),
    a.reason ? h("div", {}, a.reason) : null,
    a.response ? h("pre", {tabindex: "0", "aria-label": "The answer"}, typeof a.response === "string" ? a.response : JSON.stringify(a.response, null, 2)) : null)));
}
