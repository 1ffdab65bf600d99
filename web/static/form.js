// Form building blocks: a labelled field with its hint and error line, the
// JSON-object input box's parser, and which field a server refusal is about.
//
// Errors are shown next to the field that caused them (aria-describedby), so a
// screen reader reads the reason with the field and a person knows what to fix.

import { el } from "./dom.js";

let formIds = 0;

/** A labelled control with its hint and its error line (aria-describedby both). */
export function field({ label, control, hint, optional }) {
  const n = ++formIds;
  const id = control.id || `f${n}`;
  control.id = id;
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  control.setAttribute("aria-describedby", hint ? `${hintId} ${errorId}` : errorId);
  const error = el("p", { class: "field-error", id: errorId, role: "alert", hidden: true });
  const wrap = el(
    "div",
    { class: "field" },
    el("label", { for: id }, label, optional ? el("span", { class: "optional" }, " (optional)") : null),
    control,
    hint ? el("p", { class: "hint", id: hintId }, hint) : null,
    error,
  );
  return {
    wrap,
    control,
    hintEl: hint ? wrap.querySelector(".hint") : null,
    setError(message) {
      error.textContent = message || "";
      error.hidden = !message;
      if (message) control.setAttribute("aria-invalid", "true");
      else control.removeAttribute("aria-invalid");
    },
  };
}

/** Parse a JSON-object textarea; returns {value} or {error}. */
export function parseInput(text) {
  const trimmed = text.trim();
  if (trimmed === "") return { value: {} };
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (err) {
    return { error: `Invalid JSON: ${err.message}` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { error: "The input must be a JSON object, like {\"n\": 5}." };
  }
  return { value };
}

/** Which field a server refusal is about (validation messages name it). */
export function fieldOf(err, names) {
  const msg = err.message || "";
  if (err.code === "unknown_agent") return "agent";
  if (err.code === "invalid_code") return "code";
  if (err.code === "malformed_json") return "input";
  for (const name of names) {
    const re = new RegExp(`(^|[\\s:;])${name}([.\\[:]|$)`);
    if (re.test(msg.replace(/^invalid input:\s*/, ""))) return name;
  }
  return null;
}

/** Show a form-wide message (or hide it when `message` is empty). */
export function showFormError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}
