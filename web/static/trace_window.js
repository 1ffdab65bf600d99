// The trace's scroll box, windowed: only the rows in view plus a margin are
// in the page, whatever the run's length.
//
// A 20,000-event run rendered row by row took ~8 s and left ~100k elements;
// here every row is ROW_PX high, so the box holds a spacer as tall as all
// rows and the list is moved to the first row in view: a 100,000-event run
// keeps ~100 rows in the DOM, and scrolling, appending or filtering costs the
// window, not the run.  While the box is scrolled to the end it follows new
// rows; scrolled up, it stays put and counts what arrived below.

import { el } from "./dom.js";
import { eventRow } from "./trace_rows.js";

export const ROW_PX = 26;
const MARGIN_ROWS = 40; // above and below the view, so a fast scroll rarely shows blank
const STICK_SLACK_PX = 24;

export class TraceWindow {
  /**
   * @param {object} source
   *   size() — how many rows the current view has
   *   at(i) — the event of row i (0-based)
   *   onPick(ev) — a row was clicked or opened with Enter
   */
  constructor(source) {
    this._source = source;
    this._rows = new Map(); // seq -> the <li> in the window now
    this._first = -1;
    this._last = -1;
    this._size = 0;
    this._stick = true;
    this._unseen = 0;
    this._frame = 0;
    this.selected = null; // the picked event's seq

    this.list = el("ol", { class: "trace-list", "aria-label": "Events" });
    this._spacer = el("div", { class: "trace-spacer" }, this.list);
    this.box = el("div", { class: "trace", tabindex: "0", dataset: { autoscroll: "on", lastSeq: "0" } }, this._spacer);
    this.box.style.setProperty("--row-px", `${ROW_PX}px`);
    this.jump = el("button", { type: "button", class: "jump", hidden: true }, "↓ Jump to latest");
    this.jump.addEventListener("click", () => {
      this._stick = true;
      this._unseen = 0;
      this._scrollToEnd();
      this._updateJump();
      this.box.focus({ preventScroll: true });
    });
    this.box.addEventListener("scroll", () => {
      const end = this._atEnd();
      if (end !== this._stick) {
        this._stick = end;
        if (end) this._unseen = 0;
        this._updateJump();
      }
      this._schedule();
    });
    this.list.addEventListener("click", (event) => this._pickFrom(event.target));
    this.list.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this._pickFrom(event.target);
      } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        this._moveFocus(event.target, event.key === "ArrowDown" ? 1 : -1);
      }
    });
    // From the box itself, an arrow key enters the rows at the first one in view.
    this.box.addEventListener("keydown", (event) => {
      if (event.target !== this.box || (event.key !== "ArrowDown" && event.key !== "ArrowUp")) return;
      const i = Math.min(this._size - 1, Math.ceil(this.box.scrollTop / ROW_PX));
      if (i < 0) return;
      event.preventDefault();
      this._rows.get(this._source.at(i).seq)?.focus({ preventScroll: true });
    });
    // Keep following the end when the box changes size (window resized, rotated).
    this._resize = new ResizeObserver(() => {
      if (this._stick) this._scrollToEnd();
      this._schedule();
    });
    this._resize.observe(this.box);
  }

  /** Rows were added at the end of the view (`added` of them); follow or count them. */
  appended(added) {
    // The user may have scrolled away since the last (asynchronous) scroll
    // event: trust where the view is now, or we would yank it back down.
    if (this._stick && !this._atEnd()) this._stick = false;
    this._setSize();
    if (this._stick) this._scrollToEnd();
    else this._unseen += added;
    this._updateJump();
    this.render(true);
  }

  /** The view changed wholesale (a filter): start over at the end, or the top. */
  reset() {
    this._setSize();
    this._unseen = 0;
    if (this._stick) this._scrollToEnd();
    else this.box.scrollTop = 0;
    this._updateJump();
    this.render(true);
  }

  /** Bring row `i` into view (a third from the top) and stop following the end. */
  scrollToRow(i) {
    this._stick = false;
    this._setSize();
    this.box.scrollTop = Math.max(0, i * ROW_PX - this.box.clientHeight / 3);
    this._updateJump();
    this.render(true);
    // Focus scrolls the page too, should the box itself be out of view.
    this._rows.get(this._source.at(i)?.seq)?.focus();
  }

  /** Mark the picked row (kept across re-renders). */
  select(seq) {
    this.selected = seq;
    for (const [rowSeq, row] of this._rows) row.classList.toggle("selected", rowSeq === seq);
  }

  setLastSeq(seq) {
    this.box.dataset.lastSeq = String(seq);
  }

  destroy() {
    this._resize.disconnect();
    cancelAnimationFrame(this._frame);
  }

  /** Put the rows in view (plus the margin) in the list; reuses the rows still in it. */
  render(force = false) {
    const size = this._size;
    const top = this.box.scrollTop;
    const height = this.box.clientHeight || 600; // not laid out yet: assume a screenful
    const first = Math.max(0, Math.floor(top / ROW_PX) - MARGIN_ROWS);
    const last = Math.min(size, Math.ceil((top + height) / ROW_PX) + MARGIN_ROWS);
    if (!force && first === this._first && last === this._last) return;
    this._first = first;
    this._last = last;
    const rows = new Map();
    const nodes = [];
    for (let i = first; i < last; i += 1) {
      const ev = this._source.at(i);
      const row = this._rows.get(ev.seq) || eventRow(ev);
      row.classList.toggle("selected", ev.seq === this.selected);
      rows.set(ev.seq, row);
      nodes.push(row);
    }
    this._rows = rows;
    this.list.style.transform = `translateY(${first * ROW_PX}px)`;
    this.list.replaceChildren(...nodes);
  }

  _schedule() {
    if (this._frame) return;
    this._frame = requestAnimationFrame(() => {
      this._frame = 0;
      this.render();
    });
  }

  _setSize() {
    this._size = this._source.size();
    this._spacer.style.height = `${this._size * ROW_PX}px`;
  }

  /** The view index of the row `target` is in, or -1. */
  _indexOf(target) {
    const row = target.closest?.("li[data-seq]");
    if (!row) return -1;
    const seq = Number(row.dataset.seq);
    for (let i = this._first; i < this._last; i += 1) {
      if (this._source.at(i)?.seq === seq) return i;
    }
    return -1;
  }

  _pickFrom(target) {
    const i = this._indexOf(target);
    if (i >= 0) this._source.onPick(this._source.at(i));
  }

  /** Arrow keys walk the rows; the window follows, since the next row may not exist yet. */
  _moveFocus(target, step) {
    const i = this._indexOf(target);
    const j = i + step;
    if (i < 0 || j < 0 || j >= this._size) return;
    const top = j * ROW_PX;
    if (top < this.box.scrollTop) this.box.scrollTop = top;
    else if (top + ROW_PX > this.box.scrollTop + this.box.clientHeight) {
      this.box.scrollTop = top + ROW_PX - this.box.clientHeight;
    }
    this.render();
    this._rows.get(this._source.at(j).seq)?.focus({ preventScroll: true });
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
