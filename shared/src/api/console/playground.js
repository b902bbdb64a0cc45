// Trying a rule before deploying it: an event, the YAML of one or more rules, and what they
// would send, rendered by the relay itself (POST /v1/preview stores and sends nothing).

import {api} from "./api.js";
import {badge, card, errorBox, h, jsonBlock, pageHead, replace} from "./dom.js";
import {ruleToYaml} from "./yaml.js";

const WAIT_MS = 350;
const SAMPLE = {
  id: "evt-playground-1",
  type: "contact.created",
  occurred_at: "2026-11-26T10:00:00Z",
  contact: {email: "jana@example.com", first_name: "Jana", last_name: "Nováková"},
  data: {source: "checkout"},
};
const STARTER = `- name: try-me
  on: [contact.created]
  actions:
    - trigger_event:
        name: welcome
        payload:
          first_name: "{{ contact.first_name | default(value='') }}"
`;

/** Renders the playground into `main`. */
export async function playground(main, ctx) {
  const carried = sessionStorage.getItem("relay.playgroundEvent");
  sessionStorage.removeItem("relay.playgroundEvent");
  const eventBox = h("textarea", {id: "pg-event", rows: "16", spellcheck: "false", "aria-describedby": "pg-event-error"},
    carried || JSON.stringify(SAMPLE, null, 2));
  const eventError = h("div", {class: "field-error", id: "pg-event-error", role: "alert"});
  const rulesBox = h("textarea", {id: "pg-rules", rows: "16", spellcheck: "false", "aria-describedby": "pg-rules-error"}, STARTER);
  const rulesError = h("div", {class: "field-error", id: "pg-rules-error", role: "alert"});
  const ruleSelect = h("select", {id: "pg-rule"}, h("option", {value: ""}, "A new rule"));
  const eventSelect = h("select", {id: "pg-pick"}, h("option", {value: ""}, "The sample event"));
  const output = h("div", {id: "pg-output"});
  const state = h("span", {class: "status-line", id: "pg-state"});
  const fields = {eventBox, eventError, rulesBox, rulesError, output, state};

  replace(main,
    pageHead("Playground", "Edit an event or a rule; the requests it would send appear as you type. Nothing is stored or sent."),
    h("div", {class: "playground"},
      card("Event",
        h("label", {for: "pg-pick"}, "Start from"), eventSelect,
        h("label", {for: "pg-event", class: "spaced"}, "Event JSON"), eventBox, eventError),
      card("Rules (YAML)",
        h("label", {for: "pg-rule"}, "Start from"), ruleSelect,
        h("label", {for: "pg-rules", class: "spaced"}, "One or more rules, as under rules: in the config"), rulesBox, rulesError)),
    h("section", {class: "card", id: "pg-results"},
      h("div", {class: "rule-head"}, h("h2", {}, "What it would send"), state), output));

  let timer = null;
  let inflight = null;
  const run = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (inflight) inflight.abort();
      inflight = new AbortController();
      preview(fields, inflight.signal).catch(() => {});
    }, WAIT_MS);
  };
  ctx.onLeave(() => { clearTimeout(timer); if (inflight) inflight.abort(); });
  eventBox.addEventListener("input", run);
  rulesBox.addEventListener("input", run);

  const loaded = await api("/v1/rules", {signal: ctx.signal}).then((r) => r.rules || []);
  for (const r of loaded) ruleSelect.append(h("option", {value: r.name}, r.name));
  ruleSelect.addEventListener("change", () => {
    const r = loaded.find((x) => x.name === ruleSelect.value);
    rulesBox.value = r ? ruleToYaml(r) : STARTER;
    run();
  });
  const wanted = ctx.params.get("rule");
  if (wanted && loaded.some((r) => r.name === wanted)) {
    ruleSelect.value = wanted;
    rulesBox.value = ruleToYaml(loaded.find((r) => r.name === wanted));
  }
  recentEvents(eventSelect, eventBox, run, ctx.signal);
  run();
}

/** Offers the events of the latest deliveries (best effort: the list may be empty). */
async function recentEvents(select, box, run, signal) {
  let answer;
  try {
    answer = await api("/v1/deliveries?limit=100", {signal});
  } catch {
    return;
  }
  const seen = new Set();
  for (const d of answer.deliveries || []) {
    if (!d.event_id || seen.has(d.event_id) || seen.size >= 20) continue;
    seen.add(d.event_id);
    select.append(h("option", {value: d.event_id}, `${d.event_id} (${d.event_type || d.rule})`));
  }
  select.addEventListener("change", async () => {
    if (!select.value) {
      box.value = JSON.stringify(SAMPLE, null, 2);
    } else {
      const ev = await api(`/v1/events/${encodeURIComponent(select.value)}`, {signal});
      box.value = JSON.stringify(ev.event ?? {}, null, 2);
    }
    run();
  });
}

async function preview(f, signal) {
  let event;
  try {
    event = JSON.parse(f.eventBox.value);
    f.eventBox.removeAttribute("aria-invalid");
    f.eventError.textContent = "";
  } catch (err) {
    f.eventBox.setAttribute("aria-invalid", "true");
    f.eventError.textContent = `Not JSON: ${err.message}`;
    f.state.textContent = "Waiting for a valid event";
    return;
  }
  f.state.textContent = "Rendering…";
  try {
    const answer = await api("/v1/preview", {method: "POST", body: {event, rules: f.rulesBox.value}, signal});
    f.rulesBox.removeAttribute("aria-invalid");
    f.rulesError.textContent = "";
    const list = answer.deliveries || [];
    f.state.textContent = `${list.length} ${list.length === 1 ? "delivery" : "deliveries"}`;
    replace(f.output, list.length ? list.map(result) : h("p", {class: "empty"}, "No rule matches this event."));
  } catch (err) {
    if (err.name === "AbortError" || signal.aborted || err.name === "KeyRefused") return;
    const onEvent = String(err.path || "").startsWith("/event");
    const box = onEvent ? f.eventBox : f.rulesBox;
    box.setAttribute("aria-invalid", "true");
    (onEvent ? f.eventError : f.rulesError).textContent = pointAt(err, onEvent ? "" : f.rulesBox.value);
    f.state.textContent = "Error";
    replace(f.output, errorBox(err, onEvent ? "The event" : "The rules"));
  }
}

/** The error with its field and, for the rules, the line of the YAML that names it. */
function pointAt(err, yaml) {
  const path = err.path && !String(err.message).includes(err.path) ? ` at ${err.path}` : "";
  const line = yaml && err.path ? lineOf(yaml, err.path) : 0;
  return `${line ? `Line ${line}: ` : ""}${err.message}${path}`;
}

function lineOf(yaml, path) {
  const names = String(path).split(/[/.[\]]+/).filter((p) => p && !/^\d+$/.test(p));
  const last = names[names.length - 1];
  if (!last || last === "rules") return 0;
  const lines = yaml.split("\n");
  const name = last.replace(/[^A-Za-z0-9_-]/g, "");
  // A key on its own line first, else one inside a flow mapping (`payload: {name: ...}`).
  const own = new RegExp(`^\\s*(- )?"?${name}"?\\s*:`);
  const inFlow = new RegExp(`[{,]\\s*"?${name}"?\\s*:`);
  let at = lines.findIndex((l) => own.test(l));
  if (at < 0) at = lines.findIndex((l) => inFlow.test(l));
  return at >= 0 ? at + 1 : 0;
}

function result(r) {
  const outcome = r.error ? "failed" : r.skipped ? "skipped" : "request";
  return h("div", {class: `result ${outcome}`},
    h("div", {class: "rule-head"},
      h("h3", {}, `${r.rule} · ${r.action}`),
      badge(r.error ? "error" : r.skipped ? "skipped" : "would_send")),
    r.error ? h("p", {class: "alert error"}, typeof r.error === "string" ? r.error : JSON.stringify(r.error))
      : r.skipped ? h("p", {class: "muted"}, typeof r.skipped === "string" ? r.skipped : JSON.stringify(r.skipped))
        : jsonBlock(r.request, `Request of ${r.rule}`));
}
