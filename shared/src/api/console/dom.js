// Building the page from data that may be hostile: every value becomes a text node or an
// attribute set one by one; nothing is ever parsed as markup.

/** An element: `h("a", {href: "#/x", class: "y", on: {click: f}}, "text", child, [more])`. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (key === "value" || key === "checked" || key === "disabled" || key === "hidden") {
      el[key] = value;
    } else if (key.startsWith("on")) {
      throw new Error(`event handler attribute ${key}: use {on: {...}}`);
    } else if (key === "href" && !safeHref(String(value))) {
      throw new Error(`refusing a link to ${value}`);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function safeHref(href) {
  return href.startsWith("#") || href.startsWith("/") || href.startsWith("console/");
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A status, circuit or attempt class as a coloured pill. */
export function badge(value) {
  const text = String(value ?? "unknown");
  return h("span", {class: `badge ${text.replace(/[^a-z_]/g, "")}`}, text.replace(/_/g, " "));
}

/** An `{error: {code, message, path}}` or a thrown error, as an alert. */
export function errorBox(err, prefix) {
  const message = err && err.message ? err.message : String(err);
  return h("p", {class: "alert error", role: "alert"},
    prefix ? h("strong", {}, `${prefix}: `) : null,
    message,
    err && err.path && !message.includes(err.path) ? h("span", {class: "error-path"}, ` (at ${err.path})`) : null);
}

/** JSON as indented text. */
export function jsonBlock(value, label) {
  return h("pre", {tabindex: "0", "aria-label": label || "JSON"}, JSON.stringify(value, null, 2));
}

/** A titled panel. */
export function card(title, ...children) {
  return h("section", {class: "card"}, title ? h("h2", {}, title) : null, ...children);
}

/** A table; each cell is `[label, content, className?]` so phones can show it as cards. */
export function table(headers, rows, empty) {
  if (!rows.length) return h("p", {class: "empty"}, empty || "Nothing here.");
  return h("div", {class: "table-wrap"},
    h("table", {class: headers.length > 3 ? "cards" : null},
      h("thead", {}, h("tr", {}, headers.map(([name, cls]) => h("th", {scope: "col", class: cls}, name)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map(([label, content, cls]) =>
        h("td", {"data-label": label, class: cls}, content)))))));
}

/** The heading of a view. */
export function pageHead(title, subtitle, ...aside) {
  document.title = `${title} · Relay console`;
  return h("div", {class: "page-head"},
    h("div", {}, h("h1", {}, title), subtitle ? h("p", {class: "muted"}, subtitle) : null),
    aside.length ? h("div", {class: "buttons"}, ...aside) : null);
}
