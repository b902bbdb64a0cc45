// Rules as the YAML of the config file, for the playground's editor. Strings are written
// double-quoted (JSON's escapes are YAML's), so a template's braces need no care.

const PLAIN = /^[A-Za-z0-9_][A-Za-z0-9_.\-]*$/;
const NUMBER = /^[-+.\d][\d_.eE+-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|null|y|n|~)$/i;
/** The order a rule is written in the config (the API's JSON is in key order). */
const RULE_KEYS = ["name", "on", "if", "unless", "after", "actions", "then"];

function scalar(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  const s = String(v);
  return PLAIN.test(s) && !NUMBER.test(s) && !RESERVED.test(s) ? s : JSON.stringify(s);
}

function key(k) {
  // A rule's `on` is a key the relay reads as a string (YAML 1.2), as the config writes it.
  return PLAIN.test(k) ? k : JSON.stringify(k);
}

function isFlat(v) {
  return Array.isArray(v) && v.every((x) => x === null || typeof x !== "object") && v.length <= 8;
}

function lines(v, indent) {
  const pad = " ".repeat(indent);
  if (Array.isArray(v)) {
    if (!v.length) return [`${pad}[]`];
    return v.flatMap((item) => {
      if (item !== null && typeof item === "object" && !(Array.isArray(item) && !item.length)) {
        const inner = lines(item, indent + 2);
        inner[0] = `${pad}- ${inner[0].slice(indent + 2)}`;
        return inner;
      }
      return [`${pad}- ${scalar(item)}`];
    });
  }
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v);
    if (!entries.length) return [`${pad}{}`];
    return entries.flatMap(([k, val]) => {
      if (isFlat(val)) return [`${pad}${key(k)}: [${val.map(scalar).join(", ")}]`];
      if (val !== null && typeof val === "object" && Object.keys(val).length) {
        return [`${pad}${key(k)}:`, ...lines(val, indent + 2)];
      }
      return [`${pad}${key(k)}: ${val !== null && typeof val === "object" ? (Array.isArray(val) ? "[]" : "{}") : scalar(val)}`];
    });
  }
  return [`${pad}${scalar(v)}`];
}

/** A rule from `GET /v1/rules` as it is written in the config: empty keys left out, each
 * action `{kind, ...}` written `{kind: {...}}`. */
export function ruleToYaml(rule) {
  const out = {};
  const keys = [...RULE_KEYS.filter((k) => k in rule), ...Object.keys(rule).filter((k) => !RULE_KEYS.includes(k))];
  for (const k of keys) {
    const v = rule[k];
    if (v === null || v === undefined || (Array.isArray(v) && !v.length)) continue;
    out[k] = k === "actions" && Array.isArray(v) ? v.map(actionShape) : v;
  }
  return lines([out], 0).join("\n") + "\n";
}

function actionShape(a) {
  if (!a || typeof a !== "object" || typeof a.kind !== "string") return a;
  const {kind, ...rest} = a;
  return {[kind]: rest};
}
