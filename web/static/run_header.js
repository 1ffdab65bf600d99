// A run page's header and actions: title and status badge, the details card
// with Stop and Delete (and their outcomes), and the result card.
//
// The status shown here changes only through finish() (the trace's `done`
// event) or markDeleted(), so the badge never says "finished" before the
// trace has caught up.

import { api } from "./api.js";
import { copyButton } from "./copy_button.js";
import {
  el,
  fmtDuration,
  fmtFull,
  fmtTime,
  json,
  parseTime,
  runDuration,
  shortId,
  statusBadge,
} from "./dom.js";

export const TERMINAL = new Set(["success", "error", "stopped"]);

export class RunHeader {
  /**
   * @param {App} app — for the runs store (stopping marks, the deleted change)
   * @param {string} runId
   * @param {HTMLElement} page — gets data-status, for styles and tests
   * @param {object} hooks
   *   eventCount() — events rendered so far
   *   onDeleted() — the run is gone: stop following it
   */
  constructor(app, runId, page, { eventCount, onDeleted }) {
    this.app = app;
    this.runId = runId;
    this.page = page;
    this._eventCount = eventCount;
    this._onDeleted = onDeleted;
    this.summary = null; // the record without its events, once loaded
    this.deleted = false;
    this._stopRequested = false;

    this.heading = el("h1", { tabindex: "-1" }, "Run ", el("span", { class: "mono" }, shortId(runId)));
    this._badge = el("span", { class: "badge-slot" });
    this.head = el("div", { class: "run-head" }, el("div", { class: "title-row" }, this.heading, this._badge));

    this._meta = el("dl", { class: "meta" });
    this._stop = el("button", { type: "button", class: "danger-outline", id: "stop-run" }, "Stop");
    this._del = el("button", { type: "button", class: "danger", id: "delete-run", "aria-describedby": "delete-hint" }, "Delete");
    // A disabled button gets no pointer events, so its tooltip sits on a wrapper too.
    this._delWrap = el("span", { class: "delete-wrap" }, this._del);
    this._delHint = el("span", { class: "visually-hidden", id: "delete-hint" });
    this._copyId = copyButton({ id: "copy-run-id", label: "Copy id", title: "Copy the run id", text: () => runId });
    this._copyUrl = copyButton({
      id: "copy-run-url",
      label: "Copy link",
      title: "Copy this page's address",
      text: () => `${location.origin}/ui/runs/${encodeURIComponent(runId)}`,
    });
    this._outcome = el("p", { class: "outcome", id: "action-outcome", role: "status", "aria-live": "polite" });
    this._confirm = el(
      "div",
      { class: "confirm", hidden: true, role: "group", "aria-label": "Confirm delete" },
      el("span", {}, "Delete this run and its trace for good?"),
      el("button", { type: "button", class: "danger", id: "confirm-delete", onclick: () => this._doDelete() }, "Delete permanently"),
      el("button", { type: "button", class: "secondary", onclick: () => this._showConfirm(false) }, "Cancel"),
    );
    this._stop.addEventListener("click", () => this._doStop());
    this._del.addEventListener("click", () => this._showConfirm(true));
    this._input = el("pre", { class: "mono" });
    this.summaryCard = el(
      "section",
      { class: "card summary-card", "aria-label": "Run details" },
      this._meta,
      el(
        "div",
        { class: "actions" },
        this._stop,
        this._delWrap,
        this._delHint,
        this._confirm,
        el("span", { class: "copy-row" }, this._copyId, this._copyUrl),
      ),
      this._outcome,
      el("details", { class: "input" }, el("summary", {}, "Input"), this._input),
    );
    this.resultCard = el("section", { class: "card result-card", hidden: true, "aria-labelledby": "result-title" });
  }

  /** The loaded record: fill in the details. */
  show(record) {
    this.summary = record;
    this._input.textContent = json(record.input_dict, 2);
    this.render();
  }

  render() {
    const summary = this.summary;
    if (!summary) return;
    const stopping = this._stopRequested || this.app.store.stopping.has(this.runId);
    this._badge.replaceChildren(this.deleted ? statusBadge("deleted") : statusBadge(summary.status, { stopping }));
    const running = summary.status === "running";
    const item = (label, ...value) => [el("div", { class: "meta-item" }, el("dt", {}, label), el("dd", {}, ...value))];
    const time = (iso) => el("time", { datetime: iso, title: fmtFull(iso) }, fmtTime(iso));
    this._meta.replaceChildren(
      ...item("Agent", el("strong", {}, summary.agent)),
      ...item("Run id", el("span", { class: "mono run-id-full" }, summary.run_id)),
      ...item("Started", time(summary.started_at)),
      ...item("Finished", summary.finished_at ? time(summary.finished_at) : el("span", { class: "muted" }, "still running")),
      ...item("Duration", el("span", { class: "duration" }, fmtDuration(runDuration(summary)))),
      ...item("Events", el("span", { class: "event-count" }, String(this._eventCount()))),
    );
    this._stop.disabled = !running || this.deleted || stopping; // a second stop would change nothing
    // The server refuses to delete a running run (409): say so before the click.
    const why = this.deleted ? "This run was deleted." : running ? "Stop the run first: a running run cannot be deleted." : "";
    this._del.disabled = this.deleted || running;
    this._del.title = why || "Delete this run and its trace";
    this._delWrap.title = this._del.title;
    this._delHint.textContent = why;
    this.page.dataset.status = this.deleted ? "deleted" : summary.status;
  }

  /** Count a running run's duration up (once a second). */
  tick() {
    if (this.summary?.status !== "running") return;
    const node = this._meta.querySelector(".duration");
    if (node) node.textContent = fmtDuration(runDuration(this.summary));
  }

  /** The run ended: `done` is its done event's data, `ts` its time (null if unknown). */
  finish(done, ts) {
    const summary = this.summary;
    const status = done.status || summary.status;
    const finishedAt = summary.finished_at || ts || null;
    const duration = finishedAt ? (parseTime(finishedAt) - parseTime(summary.started_at)) / 1000 : summary.duration_s;
    this.summary = { ...summary, status, finished_at: finishedAt, duration_s: summary.duration_s ?? duration, error: done.error ?? null, result: done.result };
    this.showResult(status, done.result, done.error);
    if (this._stopRequested && status === "stopped") this._setOutcome("The run stopped.", "ok");
    this.render();
  }

  /** The feed's summary of this finished run brings the server's exact finish time. */
  takeFinishTime(feedSummary) {
    if (feedSummary && TERMINAL.has(feedSummary.status) && TERMINAL.has(this.summary.status) && feedSummary.finished_at) {
      this.summary = { ...this.summary, finished_at: feedSummary.finished_at, duration_s: feedSummary.duration_s };
    }
    this.render();
  }

  showResult(status, result, error) {
    const parts = [];
    if (status === "success") {
      parts.push(el("h2", { id: "result-title" }, "Result"));
      parts.push(el("pre", { class: "mono result" }, json(result, 2)));
    } else {
      parts.push(el("h2", { id: "result-title" }, status === "stopped" ? "Stopped" : "Error"));
      parts.push(el("p", { class: `run-error-text status-${status}` }, error || (status === "stopped" ? "The run was stopped." : "The run failed.")));
      if (result !== null && result !== undefined) {
        parts.push(el("h3", {}, "Result"), el("pre", { class: "mono result" }, json(result, 2)));
      }
    }
    this.resultCard.className = `card result-card result-${status}`;
    this.resultCard.replaceChildren(...parts);
    this.resultCard.hidden = false;
  }

  markDeleted(message) {
    this.deleted = true;
    this._onDeleted();
    this._setOutcome(message, "ok");
    this.app.store.apply("deleted", { run_id: this.runId });
    this.render();
  }

  /** The run could not be loaded: no badge. */
  unavailable() {
    this._badge.replaceChildren();
    this.page.dataset.status = "unavailable";
  }

  _setOutcome(text, kind) {
    this._outcome.textContent = text;
    this._outcome.dataset.kind = kind;
  }

  async _doStop() {
    this._stop.disabled = true;
    this._setOutcome("Asking the run to stop…", "pending");
    try {
      await api("POST", `/runs/${encodeURIComponent(this.runId)}/stop`);
      this._stopRequested = true;
      if (TERMINAL.has(this.summary.status)) this._setOutcome("The run stopped.", "ok");
      else this._setOutcome("Stop requested: the run is finishing.", "ok");
    } catch (err) {
      this._setOutcome(err.message, "error");
    }
    this.render();
  }

  _showConfirm(show) {
    this._confirm.hidden = !show;
    this._del.hidden = show;
    if (show) this._confirm.querySelector("#confirm-delete").focus();
    else this._del.focus();
  }

  async _doDelete() {
    this._confirm.hidden = true;
    this._del.hidden = false;
    this._del.disabled = true;
    this._setOutcome("Deleting…", "pending");
    try {
      await api("DELETE", `/runs/${encodeURIComponent(this.runId)}`);
      this.markDeleted("Run deleted.");
    } catch (err) {
      this._setOutcome(err.message, "error");
      this._del.disabled = false;
      this._del.focus();
    }
  }
}
