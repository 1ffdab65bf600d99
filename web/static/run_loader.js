// Loading one run: GET /runs/{id}, then the live stream until the run is done.
//
// GET /runs/{id} gives the record with every event so far; if the run is
// still going, the stream is opened with Last-Event-ID = the last seq
// rendered, so the server replays exactly what came after and continues live.
// On any reconnect the same rule applies.  A jump in seq restarts the stream
// from the last rendered seq (the trace refuses to render past a hole), so
// the trace is always 1..N.

import { api } from "./api.js";
import { el } from "./dom.js";
import { TERMINAL } from "./run_header.js";
import { traceEvent } from "./run_trace.js";
import { EventStream } from "./sse.js";

const MAX_GAP_RESTARTS = 5;

export class RunLoader {
  /**
   * @param {string} runId
   * @param {RunHeader} header
   * @param {Trace} trace
   * @param {HTMLElement} body — where the cards go once the record is here
   * @param {RunExtras} extras — schema warnings, operations and code
   */
  constructor(runId, header, trace, body, extras) {
    this.runId = runId;
    this.header = header;
    this.trace = trace;
    this.body = body;
    this.extras = extras;
    this._stream = null;
    this._gaps = 0;
    this._closed = false;
  }

  async load() {
    let record;
    try {
      record = await api("GET", `/runs/${encodeURIComponent(this.runId)}`);
    } catch (err) {
      if (!this._closed && err.status !== 401) this._showError(err);
      return;
    }
    if (this._closed) return;
    const { header, trace } = this;
    header.show(record);
    this.extras.show(record);
    this.body.replaceChildren(header.summaryCard, header.resultCard, ...this.extras.cards, trace.card);
    const events = [...record.events].sort((a, b) => a.seq - b.seq);
    for (const ev of events) {
      if (!trace.add(ev)) {
        // Should not happen; show what there is rather than nothing.
        console.warn(`runyard: the record skips from seq ${trace.lastSeq} to ${ev.seq}`);
        trace.lastSeq = ev.seq - 1;
        trace.add(ev);
      }
    }
    trace.flush();
    if (TERMINAL.has(header.summary.status)) {
      if (header.resultCard.hidden) header.showResult(header.summary.status, record.result, record.error);
      trace.setConnection("finished", "done");
    } else {
      this._follow();
    }
  }

  /** The run ended (its `done` event): show the result, stop following. */
  finish(done, ts) {
    this.header.finish(done, ts);
    this.extras.finish(done);
    this._stream?.close();
    this.trace.setConnection("finished", "done");
  }

  /** The run was deleted: stop following. */
  runDeleted() {
    this._stream?.close();
    this.trace.setConnection("deleted", "done");
  }

  /** The page is gone: drop the stream and any answer still on its way. */
  close() {
    this._closed = true;
    this._stream?.close();
  }

  _follow() {
    const trace = this.trace;
    this._stream = new EventStream(`/runs/${encodeURIComponent(this.runId)}/stream`, {
      lastEventId: () => trace.lastSeq,
      onFrame: (frame) => this._onFrame(frame),
      onBatch: () => trace.flush(),
      onState(state) {
        if (state === "open") trace.setConnection("live", "live");
        else if (state === "reconnecting") trace.setConnection("reconnecting…", "reconnecting");
        else if (state === "connecting") trace.setConnection("connecting…", "reconnecting");
      },
      onFatal: (err) => {
        if (err.status === 404 && this.header.deleted) return;
        trace.setConnection(err.message, "error");
      },
    }).start();
  }

  _onFrame(frame) {
    const trace = this.trace;
    const ev = traceEvent(frame);
    if (ev) {
      if (!trace.add(ev)) {
        // A jump in seq: never render past a hole; ask again from what we have.
        this._gaps += 1;
        console.warn(`runyard: expected seq ${trace.lastSeq + 1}, got ${ev.seq}; resuming`);
        if (this._gaps <= MAX_GAP_RESTARTS) this._stream.restart();
      }
      return;
    }
    let data = {};
    try {
      data = JSON.parse(frame.data);
    } catch {
      // ignore
    }
    if (frame.event === "done") {
      // A `done` without a seq: the record predates the done event.
      trace.flush();
      this.finish(data, null);
    } else if (frame.event === "lagged") {
      trace.setConnection("catching up…", "reconnecting");
    } else if (frame.event === "closing") {
      trace.setConnection("server restarting — will reconnect", "reconnecting");
    }
  }

  _showError(err) {
    const title =
      err.status === 403
        ? "This run belongs to another user"
        : err.status === 404
          ? "No such run"
          : "Could not load this run";
    this.body.replaceChildren(
      el(
        "div",
        { class: "card run-error", role: "alert" },
        el("h2", {}, title),
        el("p", { class: "error-message" }, err.message),
        el("p", {}, el("a", { href: "/" }, "Back to your runs")),
      ),
    );
    this.header.unavailable();
  }
}
