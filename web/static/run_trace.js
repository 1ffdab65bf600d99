// A run's trace card: the event rows, kept 1..N, and the box that follows the end.
//
// Events are queued by add() and appended by flush() (once per network chunk),
// so a burst costs one layout.  Each event is taken only if its seq is the next
// one: older seqs are dropped as duplicates, a jump is refused so the caller
// can ask the server again from lastSeq.  While the box is scrolled to the end
// it stays there; scrolled up, it stays put and counts what arrived below.

import { el, fmtClock, fmtFull, json } from "./dom.js";

const STICK_SLACK_PX = 24;
const LONG_DATA = 400;

/** How one event's data reads best: printed text as text, tracebacks folded, else JSON. */
function eventData(ev) {
  const d = ev.data || {};
  const keys = Object.keys(d);
  if (typeof d.text === "string" && keys.every((k) => k === "text" || k === "stream")) {
    return el("span", { class: "ev-data ev-text mono" }, d.text.replace(/\n$/, ""));
  }
  if (typeof d.traceback === "string") {
    const head = [d.type, d.message].filter((x) => typeof x === "string" && x).join(": ") || "traceback";
    return el(
      "details",
      { class: "ev-data" },
      el("summary", { class: "mono" }, head),
      el("pre", { class: "mono" }, d.traceback),
    );
  }
  const text = keys.length ? json(d) : "";
  if (text.length > LONG_DATA) {
    return el(
      "details",
      { class: "ev-data" },
      el("summary", { class: "mono" }, `${text.slice(0, 120)}… (${text.length} chars)`),
      el("pre", { class: "mono" }, json(d, 2)),
    );
  }
  return el("code", { class: "ev-data mono" }, text);
}

function eventRow(ev) {
  return el(
    "li",
    { class: `ev ev-type-${/^[\w-]+$/.test(ev.type) ? ev.type : "other"}`, dataset: { seq: String(ev.seq), type: ev.type } },
    el("span", { class: "ev-seq mono" }, String(ev.seq)),
    el("time", { class: "ev-time mono", datetime: ev.ts, title: fmtFull(ev.ts) }, fmtClock(ev.ts)),
    el("span", { class: "ev-type" }, ev.type),
    eventData(ev),
  );
}

/** A trace event frame: `id` equals data.seq and the event name equals data.type. */
export function traceEvent(frame) {
  if (frame.id === null) return null;
  let data;
  try {
    data = JSON.parse(frame.data);
  } catch {
    return null;
  }
  if (data && typeof data.seq === "number" && String(data.seq) === frame.id && data.type === frame.event) {
    return data;
  }
  return null;
}

export class Trace {
  /**
   * @param {object} hooks
   *   onFlush() — after rows were appended (the header shows the new count)
   *   onDone(data, ts) — the `done` event was taken, after its row was flushed
   */
  constructor({ onFlush, onDone }) {
    this.lastSeq = 0;
    this._onFlush = onFlush;
    this._onDone = onDone;
    this._pending = [];
    this._unseen = 0;
    this._stick = true;

    this.list = el("ol", { class: "trace-list", "aria-label": "Events" });
    this.box = el("div", { class: "trace", tabindex: "0", dataset: { autoscroll: "on" } }, this.list);
    this.jump = el("button", { type: "button", class: "jump", hidden: true }, "↓ Jump to latest");
    this.jump.addEventListener("click", () => {
      this._stick = true;
      this._scrollToEnd();
      this._updateJump();
      this.box.focus({ preventScroll: true });
    });
    this.box.addEventListener("scroll", () => {
      const end = this._atEnd();
      if (end !== this._stick) {
        this._stick = end;
        if (this._stick) this._unseen = 0;
        this._updateJump();
      }
    });
    // Keep following the end when the box changes size (window resized, rotated).
    this._resize = new ResizeObserver(() => {
      if (this._stick) this._scrollToEnd();
    });
    this._resize.observe(this.box);
    this.count = el("span", { class: "count" }, "(0)");
    this.conn = el("span", { class: "conn", "aria-live": "polite" });
    this.card = el(
      "section",
      { class: "card trace-card", "aria-labelledby": "trace-title" },
      el("div", { class: "card-head" }, el("h2", { id: "trace-title" }, "Trace ", this.count), this.conn),
      el("div", { class: "trace-wrap" }, this.box, this.jump),
    );
  }

  /** Queue one event; false if it is not the next seq (a gap). */
  add(ev) {
    if (ev.seq <= this.lastSeq) return true; // already shown: a duplicate, drop it
    if (ev.seq !== this.lastSeq + 1) return false;
    this.lastSeq = ev.seq;
    this._pending.push(eventRow(ev));
    if (ev.type === "done") {
      this.flush(); // before onDone() closes the stream, which ends its batch early
      this._onDone(ev.data || {}, ev.ts);
    }
    return true;
  }

  flush() {
    if (!this._pending.length) return;
    const rows = this._pending;
    this._pending = [];
    // The user may have scrolled away since the last (asynchronous) scroll
    // event: trust where the view is now, or we would yank it back down.
    if (this._stick && !this._atEnd()) this._stick = false;
    this.list.append(...rows);
    if (this._stick) this._scrollToEnd();
    else this._unseen += rows.length;
    this._updateJump();
    this.count.textContent = `(${this.lastSeq})`;
    this._onFlush();
  }

  /** The stream's state beside the title: text, and kind ("live" | "reconnecting" | "done" | "error"). */
  setConnection(text, kind) {
    this.conn.textContent = text;
    this.conn.dataset.state = kind;
  }

  destroy() {
    this._resize.disconnect();
  }

  _scrollToEnd() {
    this.box.scrollTop = this.box.scrollHeight;
  }

  _atEnd() {
    return this.box.scrollHeight - this.box.scrollTop - this.box.clientHeight <= STICK_SLACK_PX;
  }

  _updateJump() {
    this.box.dataset.autoscroll = this._stick ? "on" : "off";
    this.jump.hidden = this._stick;
    this.jump.textContent = this._unseen
      ? `↓ ${this._unseen} new event${this._unseen === 1 ? "" : "s"}`
      : "↓ Jump to latest";
  }
}
