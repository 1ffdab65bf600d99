// A run's trace card: every event kept 1..N, shown through a windowed list
// (trace_window.js), with a filter by type, a search box, "jump to the first
// error", a detail pane for the picked event and a JSON Lines download.
//
// Events are queued by add() and shown by flush() (once per network chunk),
// so a burst costs one window render.  Each event is taken only if its seq is
// the next one: older seqs are dropped as duplicates, a jump is refused so the
// caller can ask the server again from lastSeq.

import { el } from "./dom.js";
import { downloadJsonLines } from "./trace_export.js";
import { eventDetail, eventText, isErrorEvent } from "./trace_rows.js";
import { TraceWindow } from "./trace_window.js";

const SEARCH_DELAY_MS = 150;

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
   * @param {string} runId — names the download
   */
  constructor({ onFlush, onDone }, runId = "run") {
    this.lastSeq = 0;
    this.events = []; // events[i].seq === i + 1
    this._onFlush = onFlush;
    this._onDone = onDone;
    this._shown = 0; // events already flushed to the view
    this._view = null; // indices into events that pass the filter; null: all
    this._types = new Set();
    this._texts = []; // eventText() per event, filled on the first search
    this._firstError = -1;
    this._type = "";
    this._query = "";
    this._searchTimer = 0;

    this.window = new TraceWindow({
      size: () => (this._view ? this._view.length : this._shown),
      at: (i) => this.events[this._view ? this._view[i] : i],
      onPick: (ev) => this._pick(ev),
    });
    this.list = this.window.list;
    this.box = this.window.box;

    this._typeSelect = el("select", { id: "trace-type", name: "type" }, el("option", { value: "" }, "All types"));
    this._typeSelect.addEventListener("change", () => {
      this._type = this._typeSelect.value;
      this._applyFilter();
    });
    this._search = el("input", {
      id: "trace-search",
      type: "search",
      name: "search",
      placeholder: "Search events",
      autocomplete: "off",
      spellcheck: "false",
    });
    this._search.addEventListener("input", () => {
      clearTimeout(this._searchTimer);
      this._searchTimer = setTimeout(() => {
        this._query = this._search.value.trim().toLowerCase();
        this._applyFilter();
      }, SEARCH_DELAY_MS);
    });
    this._errorButton = el(
      "button",
      { type: "button", class: "secondary small", id: "jump-error", disabled: true, title: "No error in this trace" },
      "Jump to first error",
    );
    this._errorButton.addEventListener("click", () => this.jumpToFirstError());
    this._download = el("button", { type: "button", class: "secondary small", id: "download-trace" }, "Download JSONL");
    this._download.addEventListener("click", () => downloadJsonLines(this.events, `run-${runId}.jsonl`));
    this._matches = el("span", { class: "trace-matches muted", "aria-live": "polite" });

    this._detail = el("div", { class: "trace-detail", id: "trace-detail", hidden: true, "aria-live": "polite" });

    this.count = el("span", { class: "count" }, "(0)");
    this.conn = el("span", { class: "conn", "aria-live": "polite" });
    this.card = el(
      "section",
      { class: "card trace-card", "aria-labelledby": "trace-title" },
      el("div", { class: "card-head" }, el("h2", { id: "trace-title" }, "Trace ", this.count), this.conn),
      el(
        "div",
        { class: "trace-tools", role: "group", "aria-label": "Find events" },
        el("label", { class: "visually-hidden", for: "trace-type" }, "Event type"),
        this._typeSelect,
        el("label", { class: "visually-hidden", for: "trace-search" }, "Search events"),
        this._search,
        this._matches,
        el("span", { class: "tools-gap" }),
        this._errorButton,
        this._download,
      ),
      el("div", { class: "trace-wrap" }, this.box, this.window.jump),
      this._detail,
    );
  }

  /** Queue one event; false if it is not the next seq (a gap). */
  add(ev) {
    if (ev.seq <= this.lastSeq) return true; // already shown: a duplicate, drop it
    if (ev.seq !== this.lastSeq + 1) return false;
    this.lastSeq = ev.seq;
    this.events.push(ev);
    if (ev.type === "done") {
      this.flush(); // before onDone() closes the stream, which ends its batch early
      this._onDone(ev.data || {}, ev.ts);
    }
    return true;
  }

  flush() {
    const from = this._shown;
    const to = this.events.length;
    if (from === to) return;
    this._shown = to;
    let added = to - from;
    let newType = false;
    for (let i = from; i < to; i += 1) {
      const ev = this.events[i];
      if (!this._types.has(ev.type)) {
        this._types.add(ev.type);
        newType = true;
      }
      if (this._firstError < 0 && isErrorEvent(ev)) this._firstError = i;
    }
    if (newType) this._fillTypes();
    if (this._view) {
      const before = this._view.length;
      for (let i = from; i < to; i += 1) if (this._passes(i)) this._view.push(i);
      added = this._view.length - before;
      this._showMatches();
    }
    this._errorButton.disabled = this._firstError < 0;
    this._errorButton.title = this._firstError < 0 ? "No error in this trace" : "Show the first error event";
    this.window.setLastSeq(this.lastSeq);
    this.window.appended(added);
    this.count.textContent = `(${this.lastSeq})`;
    this._onFlush();
  }

  /** Clear a filter that hides it, then scroll to the first error and open it. */
  jumpToFirstError() {
    const index = this._firstError;
    if (index < 0) return;
    if (this._view && !this._passes(index)) {
      this._typeSelect.value = "";
      this._search.value = "";
      this._type = "";
      this._query = "";
      this._applyFilter();
    }
    const row = this._view ? lowerBound(this._view, index) : index;
    this._pick(this.events[index]);
    this.window.scrollToRow(row);
  }

  /** The stream's state beside the title: text, and kind ("live" | "reconnecting" | "done" | "error"). */
  setConnection(text, kind) {
    this.conn.textContent = text;
    this.conn.dataset.state = kind;
  }

  destroy() {
    clearTimeout(this._searchTimer);
    this.window.destroy();
  }

  _passes(i) {
    const ev = this.events[i];
    if (this._type && ev.type !== this._type) return false;
    if (!this._query) return true;
    this._texts[i] ??= eventText(ev);
    return this._texts[i].includes(this._query);
  }

  _applyFilter() {
    if (!this._type && !this._query) {
      this._view = null;
    } else {
      const view = [];
      for (let i = 0; i < this._shown; i += 1) if (this._passes(i)) view.push(i);
      this._view = view;
    }
    this._showMatches();
    this.window.reset();
  }

  _showMatches() {
    const n = this._view?.length;
    this._matches.textContent = this._view ? `${n} of ${this._shown} event${this._shown === 1 ? "" : "s"}` : "";
    this.box.dataset.filtered = this._view ? "on" : "off";
  }

  _fillTypes() {
    const value = this._typeSelect.value;
    const types = [...this._types].sort();
    this._typeSelect.replaceChildren(
      el("option", { value: "" }, "All types"),
      ...types.map((t) => el("option", { value: t }, t)),
    );
    this._typeSelect.value = value;
  }

  _pick(ev) {
    this.window.select(ev.seq);
    const close = el("button", { type: "button", class: "secondary small close", "aria-label": "Close event details" }, "Close");
    close.addEventListener("click", () => {
      this._detail.hidden = true;
      this.window.select(null);
      this.box.focus({ preventScroll: true });
    });
    this._detail.dataset.seq = String(ev.seq);
    this._detail.replaceChildren(close, ...eventDetail(ev));
    this._detail.hidden = false;
  }
}

/** The first position in sorted `arr` whose value is >= `value`. */
function lowerBound(arr, value) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
