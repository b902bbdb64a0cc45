// The console's shell: the key form, the hash routes and the view in place.

import {adminKey, forgetAdminKey, setAdminKey, whenKeyRefused, KeyRefused} from "./api.js";
import {errorBox, replace} from "./dom.js";
import {overview} from "./overview.js";
import {deliveries} from "./deliveries.js";
import {delivery} from "./delivery.js";
import {eventView} from "./event.js";
import {rules} from "./rules.js";
import {playground} from "./playground.js";

const routes = [
  [/^\/?$/, "overview", () => overview],
  [/^\/overview$/, "overview", () => overview],
  [/^\/deliveries$/, "deliveries", () => deliveries],
  [/^\/delivery\/(.+)$/, "deliveries", (id) => (main, ctx) => delivery(main, ctx, id)],
  [/^\/event\/(.+)$/, "deliveries", (id) => (main, ctx) => eventView(main, ctx, id)],
  [/^\/rules$/, "rules", () => rules],
  [/^\/playground$/, "playground", () => playground],
];

const main = document.getElementById("view");
const login = document.getElementById("login");
const loginForm = document.getElementById("login-form");
const loginReason = document.getElementById("login-reason");
const keyInput = document.getElementById("admin-key");
const signOut = document.getElementById("sign-out");
const nav = document.querySelector(".top nav");
let current = null;

/** The route of the hash: its path and its query. */
function location() {
  // Only `#/...` is a route; another fragment (the skip link's `#view`) is the overview.
  const hash = window.location.hash.startsWith("#/") ? window.location.hash.slice(1) : "/";
  const [path, q] = hash.split("?", 2);
  return {path: path || "/", params: new URLSearchParams(q || "")};
}

function stop() {
  if (current) {
    current.controller.abort();
    for (const f of current.cleanups) f();
  }
  current = null;
}

function showLogin(reason) {
  stop();
  main.hidden = true;
  signOut.hidden = true;
  nav.hidden = true;
  login.hidden = false;
  loginReason.hidden = !reason;
  loginReason.textContent = reason || "";
  document.title = "Sign in · Relay console";
  keyInput.focus();
}

async function render() {
  if (!adminKey()) return showLogin("");
  stop();
  login.hidden = true;
  main.hidden = false;
  signOut.hidden = false;
  nav.hidden = false;
  const {path, params} = location();
  const route = routes.find(([re]) => re.test(path));
  const ctx = {params, controller: new AbortController(), cleanups: []};
  ctx.signal = ctx.controller.signal;
  ctx.onLeave = (f) => ctx.cleanups.push(f);
  current = ctx;
  for (const a of document.querySelectorAll(".top nav a")) {
    if (route && a.dataset.section === route[1]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!route) {
    replace(main, errorBox({message: `No page at #${path}.`}));
    return;
  }
  const match = path.match(route[0]);
  const view = route[2](...match.slice(1).map(decodeURIComponent));
  replace(main);
  try {
    await view(main, ctx);
  } catch (err) {
    if (err instanceof KeyRefused || err.name === "AbortError" || ctx.signal.aborted) return;
    replace(main, errorBox(err, "Could not load this page"));
  }
}

whenKeyRefused((err) => {
  forgetAdminKey();
  const reasons = {
    403: `This key may not use the management API (403): ${err.message}`,
    401: `The key was refused (401): ${err.message}`,
  };
  showLogin(reasons[err.status] || err.message);
});

loginForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = keyInput.value.trim();
  if (!key) {
    loginReason.hidden = false;
    loginReason.textContent = "Enter an admin key.";
    keyInput.setAttribute("aria-invalid", "true");
    return;
  }
  keyInput.removeAttribute("aria-invalid");
  keyInput.value = "";
  setAdminKey(key);
  render();
});

signOut.addEventListener("click", () => {
  forgetAdminKey();
  showLogin("");
});

window.addEventListener("hashchange", () => {
  // The skip link moves the focus, not the page.
  if (window.location.hash.startsWith("#/") || !current) render();
});
render();
