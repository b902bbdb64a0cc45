// The management API, with the admin key of this tab. The key lives in sessionStorage (gone
// when the tab closes) and travels only as a Bearer header: no cookie, so no CSRF.

const KEY = "relay.adminKey";

/** The key of this tab, or null. */
export function adminKey() {
  return sessionStorage.getItem(KEY);
}

/** Keeps the key for this tab. */
export function setAdminKey(key) {
  sessionStorage.setItem(KEY, key);
}

/** Forgets the key. */
export function forgetAdminKey() {
  sessionStorage.removeItem(KEY);
}

/** An answer that is not 2xx: the API's `{error: {code, message, path}}`. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.name = new.target.name;
    this.status = status;
    this.code = error.code || "error";
    this.path = error.path;
  }
}

/** The key was refused: the page asks for another. */
export class KeyRefused extends ApiError {}

let onRefused = () => {};

/** Where a refused key is reported (the key form). */
export function whenKeyRefused(handler) {
  onRefused = handler;
}

/** Where the API path `path` ("/v1/…") is: beside the page, so a relay behind a gateway's
 * prefix (`https://host/prod/console` → `https://host/prod/v1/…`) is reached under it. */
export function apiUrl(path) {
  return new URL(path.replace(/^\/+/, ""), document.baseURI).href;
}

/** Calls the API: `api("/v1/status")`, `api("/v1/preview", {method: "POST", body})`. */
export async function api(path, options = {}) {
  const key = adminKey();
  if (!key) {
    const err = new KeyRefused(0, {code: "no_key", message: "Enter an admin key to continue."});
    onRefused(err);
    throw err;
  }
  const headers = {Authorization: `Bearer ${key}`, Accept: "application/json"};
  let body;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  let resp;
  try {
    resp = await fetch(apiUrl(path), {method: options.method || "GET", headers, body, cache: "no-store", signal: options.signal});
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, {code: "network", message: "The relay cannot be reached."});
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (resp.ok) return data;
  const error = (data && data.error) || {message: `HTTP ${resp.status}`};
  if (resp.status === 401 || resp.status === 403) {
    const err = new KeyRefused(resp.status, error);
    onRefused(err);
    throw err;
  }
  throw new ApiError(resp.status, error);
}

/** A query string from the non-empty fields of an object. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
