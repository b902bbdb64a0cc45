// The loaded rules, each with a way into the playground.

import {api} from "./api.js";
import {card, h, pageHead, replace} from "./dom.js";
import {ruleToYaml} from "./yaml.js";

/** Renders the rules into `main`. */
export async function rules(main, ctx) {
  const answer = await api("/v1/rules", {signal: ctx.signal});
  const list = answer.rules || [];
  replace(main,
    pageHead("Rules", `${list.length} rules loaded from the config.`,
      h("a", {class: "button primary", href: "#/playground"}, "Open the playground")),
    list.length ? h("div", {class: "stack", id: "rules"}, list.map(ruleCard)) : h("p", {class: "empty"}, "No rules."));
}

function ruleCard(r) {
  const on = Array.isArray(r.on) ? r.on : r.on ? [r.on] : [];
  return card(null,
    h("div", {class: "rule-head"},
      h("h2", {}, r.name),
      h("a", {class: "button", href: `#/playground?rule=${encodeURIComponent(r.name)}`}, "Try it")),
    h("p", {class: "tags"}, on.length
      ? on.map((t) => h("span", {class: "badge"}, t))
      : h("span", {class: "muted"}, "No `on`: runs only when a rule chains to it."),
    r.after ? h("span", {class: "badge scheduled"}, `after ${r.after}`) : null),
    h("pre", {tabindex: "0", "aria-label": `Rule ${r.name}`}, ruleToYaml(r)));
}
