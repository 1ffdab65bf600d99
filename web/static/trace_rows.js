// How one trace event reads: a one-line row for the windowed list, and the
// full event for the detail pane once a row is chosen.
//
// Rows are all one height (the windowed list computes positions from it), so
// a row shows a single line and the detail pane shows the rest.

import { el, fmtClock, fmtFull, json } from "./dom.js";

const LINE_CHARS = 400; // more never fits on one line; the row ellipsises anyway

/** The row's one-line summary of the event's data. */
function oneLine(ev) {
  const d = ev.data || {};
  const keys = Object.keys(d);
  if (typeof d.text === "string" && keys.every((k) => k === "text" || k === "stream")) {
    return d.text.replace(/\n$/, "").split("\n", 1)[0];
  }
  if (typeof d.traceback === "string") {
    return [d.type, d.message].filter((x) => typeof x === "string" && x).join(": ") || "traceback";
  }
  return keys.length ? json(d).slice(0, LINE_CHARS) : "";
}

/** A class-safe event type ("other" for anything that is not a plain word). */
function typeClass(ev) {
  return /^[\w-]+$/.test(ev.type) ? ev.type : "other";
}

/** An error the reader wants to find: an `error` event, a traceback, or a `done` that failed. */
export function isErrorEvent(ev) {
  if (ev.type === "error") return true;
  if (ev.type === "done") return ev.data?.status === "error";
  return typeof ev.data?.traceback === "string";
}

/** What the search box matches against: type and data, lower-cased. */
export function eventText(ev) {
  return `${ev.type} ${json(ev.data || {})}`.toLowerCase();
}

/** One `<li>` row; `data-seq`/`data-type` name it for styles and tests. */
export function eventRow(ev) {
  const done = ev.type === "done" && typeof ev.data?.status === "string" ? ` ev-done-${typeClass({ type: ev.data.status })}` : "";
  return el(
    "li",
    {
      class: `ev ev-type-${typeClass(ev)}${done}${isErrorEvent(ev) ? " ev-is-error" : ""}`,
      dataset: { seq: String(ev.seq), type: ev.type },
      tabindex: "-1",
    },
    el("span", { class: "ev-seq mono" }, String(ev.seq)),
    el("time", { class: "ev-time mono", datetime: ev.ts }, fmtClock(ev.ts)),
    el("span", { class: "ev-type" }, ev.type),
    el("span", { class: "ev-data mono" }, oneLine(ev)),
  );
}

/** The whole event (nodes for replaceChildren): printed text as text, a traceback as written, else indented JSON. */
export function eventDetail(ev) {
  const d = ev.data || {};
  const keys = Object.keys(d);
  let body;
  if (typeof d.text === "string" && keys.every((k) => k === "text" || k === "stream")) {
    body = el("pre", { class: "mono ev-text" }, d.text);
  } else if (typeof d.traceback === "string") {
    body = el(
      "div",
      {},
      el("p", { class: "mono ev-error-head" }, oneLine(ev)),
      el("pre", { class: "mono" }, d.traceback),
    );
  } else {
    body = el("pre", { class: "mono" }, keys.length ? json(d, 2) : "(no data)");
  }
  return [
    el(
      "p",
      { class: "detail-head" },
      el("strong", {}, `#${ev.seq}`),
      " ",
      el("span", { class: "ev-type" }, ev.type),
      " ",
      el("time", { class: "muted", datetime: ev.ts, title: fmtFull(ev.ts) }, fmtClock(ev.ts)),
    ),
    body,
  ];
}
