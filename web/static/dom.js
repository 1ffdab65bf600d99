// DOM building and display formats.  Everything from the server is inserted
// as text (textContent / attributes), never as HTML.

/**
 * el("a", {href: "/x", class: "link", onclick: fn}, "text", childNode, [more])
 * Attributes starting with "on" become listeners; `dataset` is an object;
 * null/undefined/false attributes and children are skipped.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key === "class") {
      node.className = value;
    } else if (key === "text") {
      node.textContent = value;
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

// ---------------------------------------------------------------------------
// Times: the API sends UTC ISO-8601 with Z; show them in the viewer's zone.

const TIME = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const DATE_TIME = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const FULL = new Intl.DateTimeFormat(undefined, {
  dateStyle: "full",
  timeStyle: "long",
});
export const TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

export function parseTime(iso) {
  if (!iso) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

/** "14:05:09" today, "Nov 24, 14:05:09" on other days (viewer's zone). */
export function fmtTime(iso) {
  const ms = parseTime(iso);
  if (ms === null) return "—";
  const date = new Date(ms);
  const today = new Date();
  const sameDay =
    date.getFullYear() === today.getFullYear() &&
    date.getMonth() === today.getMonth() &&
    date.getDate() === today.getDate();
  return (sameDay ? TIME : DATE_TIME).format(date);
}

/** Long form for tooltips: "Wednesday, November 25, 2026 at 3:05:09 PM GMT+1". */
export function fmtFull(iso) {
  const ms = parseTime(iso);
  return ms === null ? "" : FULL.format(new Date(ms));
}

const CLOCK = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  fractionalSecondDigits: 3,
});

/** "15:05:09.123" (or "03:05:09.123 PM", as the viewer's locale writes it) for trace rows. */
export function fmtClock(iso) {
  const ms = parseTime(iso);
  return ms === null ? "" : CLOCK.format(new Date(ms));
}

/** 0.0865 -> "86 ms", 12.34 -> "12.3 s", 245 -> "4 m 05 s", 7300 -> "2 h 01 m". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
  const total = Math.floor(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (h > 0) return `${h} h ${String(m).padStart(2, "0")} m`;
  return `${m} m ${String(sec).padStart(2, "0")} s`;
}

/** Duration of a summary; a running one counts up from started_at. */
export function runDuration(summary) {
  if (summary.duration_s !== null && summary.duration_s !== undefined) return summary.duration_s;
  const start = parseTime(summary.started_at);
  if (start === null) return null;
  const end = parseTime(summary.finished_at) ?? Date.now();
  return (end - start) / 1000;
}

export function fmtBytes(n) {
  if (typeof n !== "number" || n < 0) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function shortId(runId) {
  return runId.length > 10 ? runId.slice(0, 8) : runId;
}

export const STATUSES = ["running", "success", "error", "stopped"];

/** A status badge; "stopping" is running with a stop requested. */
export function statusBadge(status, { stopping = false } = {}) {
  const shown = status === "running" && stopping ? "stopping" : status;
  return el(
    "span",
    { class: `badge status-${shown}`, dataset: { status: shown } },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("span", { class: "status-text" }, shown),
  );
}

export function json(value, indent = 0) {
  try {
    return JSON.stringify(value, null, indent);
  } catch {
    return String(value);
  }
}
