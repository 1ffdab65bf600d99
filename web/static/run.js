// One run's page (/ui/runs/{run_id}): status, live trace, result, stop, delete.
//
// Loading: GET /runs/{id} gives the record with every event so far; if the
// run is still going, the stream is opened with Last-Event-ID = the last seq
// rendered, so the server replays exactly what came after and continues live.
// On any reconnect the same rule applies.  Each event is rendered only if its
// seq is the next one (older seqs are dropped as duplicates; a jump restarts
// the stream from the last rendered seq), so the trace is always 1..N.

import { api } from "./api.js";
import {
  el,
  fmtClock,
  fmtDuration,
  fmtFull,
  fmtTime,
  json,
  parseTime,
  runDuration,
  shortId,
  statusBadge,
} from "./dom.js";
import { EventStream } from "./sse.js";

const TERMINAL = new Set(["success", "error", "stopped"]);
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
function traceEvent(frame) {
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

export function runView(app, { runId }) {
  const root = el("div", { class: "run-page" });
  const heading = el("h1", { tabindex: "-1" }, "Run ", el("span", { class: "mono" }, shortId(runId)));
  const badgeSlot = el("span", { class: "badge-slot" });
  const back = el("a", { href: "/", class: "back" }, "← All runs");
  const header = el("div", { class: "run-head" }, el("div", { class: "title-row" }, heading, badgeSlot));
  const body = el("div", { class: "run-body" }, el("p", { class: "muted" }, "Loading run…"));
  root.append(back, header, body);
  document.title = `Run ${shortId(runId)} · runyard`;

  let summary = null;
  let stream = null;
  let destroyed = false;
  let lastSeq = 0;
  let gaps = 0;
  let stopRequested = false;
  let deleted = false;
  let pending = [];
  let unseen = 0;
  let stick = true;
  const ui = {};

  // ---------------------------------------------------------------- render
  function build(record) {
    summary = record;
    ui.meta = el("dl", { class: "meta" });
    ui.stop = el("button", { type: "button", class: "danger-outline", id: "stop-run" }, "Stop");
    ui.del = el("button", { type: "button", class: "danger", id: "delete-run" }, "Delete");
    ui.outcome = el("p", { class: "outcome", id: "action-outcome", role: "status", "aria-live": "polite" });
    ui.confirm = el(
      "div",
      { class: "confirm", hidden: true, role: "group", "aria-label": "Confirm delete" },
      el("span", {}, "Delete this run and its trace for good?"),
      el("button", { type: "button", class: "danger", id: "confirm-delete", onclick: doDelete }, "Delete permanently"),
      el("button", { type: "button", class: "secondary", onclick: () => showConfirm(false) }, "Cancel"),
    );
    ui.stop.addEventListener("click", doStop);
    ui.del.addEventListener("click", () => showConfirm(true));
    ui.conn = el("span", { class: "conn", "aria-live": "polite" });

    ui.list = el("ol", { class: "trace-list", "aria-label": "Events" });
    ui.trace = el("div", { class: "trace", tabindex: "0", dataset: { autoscroll: "on" } }, ui.list);
    ui.jump = el("button", { type: "button", class: "jump", hidden: true }, "↓ Jump to latest");
    ui.jump.addEventListener("click", () => {
      stick = true;
      scrollToEnd();
      updateJump();
      ui.trace.focus({ preventScroll: true });
    });
    ui.trace.addEventListener("scroll", () => {
      const end = atEnd();
      if (end !== stick) {
        stick = end;
        if (stick) unseen = 0;
        updateJump();
      }
    });
    // Keep following the end when the box changes size (window resized, rotated).
    ui.resize = new ResizeObserver(() => {
      if (stick) scrollToEnd();
    });
    ui.resize.observe(ui.trace);
    ui.count = el("span", { class: "count" });
    ui.outcomePanel = el("section", { class: "card result-card", hidden: true, "aria-labelledby": "result-title" });

    const inputText = json(record.input_dict, 2);
    body.replaceChildren(
      el(
        "section",
        { class: "card summary-card", "aria-label": "Run details" },
        ui.meta,
        el("div", { class: "actions" }, ui.stop, ui.del, ui.confirm),
        ui.outcome,
        el("details", { class: "input" }, el("summary", {}, "Input"), el("pre", { class: "mono" }, inputText)),
      ),
      ui.outcomePanel,
      el(
        "section",
        { class: "card trace-card", "aria-labelledby": "trace-title" },
        el("div", { class: "card-head" }, el("h2", { id: "trace-title" }, "Trace ", ui.count), ui.conn),
        el("div", { class: "trace-wrap" }, ui.trace, ui.jump),
      ),
    );
    renderSummary();
  }

  function renderSummary() {
    if (!summary) return;
    const stopping = stopRequested || app.store.stopping.has(runId);
    badgeSlot.replaceChildren(deleted ? statusBadge("deleted") : statusBadge(summary.status, { stopping }));
    const running = summary.status === "running";
    const item = (label, ...value) => [el("div", { class: "meta-item" }, el("dt", {}, label), el("dd", {}, ...value))];
    ui.meta.replaceChildren(
      ...item("Agent", el("strong", {}, summary.agent)),
      ...item("Run id", el("span", { class: "mono run-id-full" }, summary.run_id)),
      ...item("Started", el("time", { datetime: summary.started_at, title: fmtFull(summary.started_at) }, fmtTime(summary.started_at))),
      ...item(
        "Finished",
        summary.finished_at
          ? el("time", { datetime: summary.finished_at, title: fmtFull(summary.finished_at) }, fmtTime(summary.finished_at))
          : el("span", { class: "muted" }, "still running"),
      ),
      ...item("Duration", el("span", { class: "duration" }, fmtDuration(runDuration(summary)))),
      ...item("Events", el("span", { class: "event-count" }, String(lastSeq))),
    );
    ui.stop.disabled = !running || deleted || stopping; // a second stop would change nothing
    ui.del.disabled = deleted;
    root.dataset.status = deleted ? "deleted" : summary.status;
    ui.count.textContent = `(${lastSeq})`;
  }

  function renderOutcome(status, result, error) {
    const panel = ui.outcomePanel;
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
    panel.className = `card result-card result-${status}`;
    panel.replaceChildren(...parts);
    panel.hidden = false;
  }

  function setConn(text, kind) {
    if (!ui.conn) return;
    ui.conn.textContent = text;
    ui.conn.dataset.state = kind;
  }

  // ----------------------------------------------------------------- trace
  function scrollToEnd() {
    ui.trace.scrollTop = ui.trace.scrollHeight;
  }

  function updateJump() {
    ui.trace.dataset.autoscroll = stick ? "on" : "off";
    ui.jump.hidden = stick;
    ui.jump.textContent = unseen ? `↓ ${unseen} new event${unseen === 1 ? "" : "s"}` : "↓ Jump to latest";
  }

  /** Queue one event; false if it is not the next seq (a gap). */
  function addEvent(ev) {
    if (ev.seq <= lastSeq) return true; // already shown: a duplicate, drop it
    if (ev.seq !== lastSeq + 1) return false;
    lastSeq = ev.seq;
    pending.push(eventRow(ev));
    if (ev.type === "done") {
      flush(); // before finish() closes the stream, which ends its batch early
      finish(ev.data || {}, ev.ts);
    }
    return true;
  }

  function atEnd() {
    return ui.trace.scrollHeight - ui.trace.scrollTop - ui.trace.clientHeight <= STICK_SLACK_PX;
  }

  function flush() {
    if (!pending.length) return;
    const rows = pending;
    pending = [];
    // The user may have scrolled away since the last (asynchronous) scroll
    // event: trust where the view is now, or we would yank it back down.
    if (stick && !atEnd()) stick = false;
    ui.list.append(...rows);
    if (stick) scrollToEnd();
    else unseen += rows.length;
    updateJump();
    renderSummary();
  }

  function finish(done, ts) {
    const status = done.status || summary.status;
    const finishedAt = summary.finished_at || ts || null;
    const duration = finishedAt ? (parseTime(finishedAt) - parseTime(summary.started_at)) / 1000 : summary.duration_s;
    summary = { ...summary, status, finished_at: finishedAt, duration_s: summary.duration_s ?? duration, error: done.error ?? null, result: done.result };
    renderOutcome(status, done.result, done.error);
    if (stopRequested && status === "stopped") setOutcome("The run stopped.", "ok");
    stream?.close();
    setConn("finished", "done");
    renderSummary();
  }

  // ---------------------------------------------------------------- stream
  function follow() {
    stream = new EventStream(`/runs/${encodeURIComponent(runId)}/stream`, {
      lastEventId: () => lastSeq,
      onFrame(frame) {
        const ev = traceEvent(frame);
        if (ev) {
          if (!addEvent(ev)) {
            // A jump in seq: never render past a hole; ask again from what we have.
            gaps += 1;
            console.warn(`runyard: expected seq ${lastSeq + 1}, got ${ev.seq}; resuming`);
            if (gaps <= 5) stream.restart();
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
          flush();
          finish(data, null);
        } else if (frame.event === "lagged") {
          setConn("catching up…", "reconnecting");
        } else if (frame.event === "closing") {
          setConn("server restarting — will reconnect", "reconnecting");
        }
      },
      onBatch: flush,
      onState(state) {
        if (state === "open") setConn("live", "live");
        else if (state === "reconnecting") setConn("reconnecting…", "reconnecting");
        else if (state === "connecting") setConn("connecting…", "reconnecting");
      },
      onFatal(err) {
        if (err.status === 404 && deleted) return;
        setConn(err.message, "error");
      },
    }).start();
  }

  // --------------------------------------------------------------- actions
  function setOutcome(text, kind) {
    ui.outcome.textContent = text;
    ui.outcome.dataset.kind = kind;
  }

  async function doStop() {
    ui.stop.disabled = true;
    setOutcome("Asking the run to stop…", "pending");
    try {
      await api("POST", `/runs/${encodeURIComponent(runId)}/stop`);
      stopRequested = true;
      if (TERMINAL.has(summary.status)) setOutcome("The run stopped.", "ok");
      else setOutcome("Stop requested: the run is finishing.", "ok");
    } catch (err) {
      setOutcome(err.message, "error");
    }
    renderSummary();
  }

  function showConfirm(show) {
    ui.confirm.hidden = !show;
    ui.del.hidden = show;
    if (show) ui.confirm.querySelector("#confirm-delete").focus();
    else ui.del.focus();
  }

  async function doDelete() {
    ui.confirm.hidden = true;
    ui.del.hidden = false;
    ui.del.disabled = true;
    setOutcome("Deleting…", "pending");
    try {
      await api("DELETE", `/runs/${encodeURIComponent(runId)}`);
      markDeleted("Run deleted.");
    } catch (err) {
      setOutcome(err.message, "error");
      ui.del.disabled = false;
      ui.del.focus();
    }
  }

  function markDeleted(message) {
    deleted = true;
    stream?.close();
    setConn("deleted", "done");
    setOutcome(message, "ok");
    app.store.apply("deleted", { run_id: runId });
    renderSummary();
  }

  // ------------------------------------------------------------------ load
  function showError(err) {
    const title =
      err.status === 403
        ? "This run belongs to another user"
        : err.status === 404
          ? "No such run"
          : "Could not load this run";
    body.replaceChildren(
      el(
        "div",
        { class: "card run-error", role: "alert" },
        el("h2", {}, title),
        el("p", { class: "error-message" }, err.message),
        el("p", {}, el("a", { href: "/" }, "Back to your runs")),
      ),
    );
    badgeSlot.replaceChildren();
    root.dataset.status = "unavailable";
  }

  api("GET", `/runs/${encodeURIComponent(runId)}`)
    .then((record) => {
      if (destroyed) return;
      build(record);
      const events = [...record.events].sort((a, b) => a.seq - b.seq);
      for (const ev of events) {
        if (!addEvent(ev)) {
          // Should not happen; show what there is rather than nothing.
          console.warn(`runyard: the record skips from seq ${lastSeq} to ${ev.seq}`);
          lastSeq = ev.seq - 1;
          addEvent(ev);
        }
      }
      flush();
      if (TERMINAL.has(summary.status)) {
        if (ui.outcomePanel.hidden) renderOutcome(summary.status, record.result, record.error);
        setConn("finished", "done");
      } else {
        follow();
      }
    })
    .catch((err) => {
      if (destroyed || err.status === 401) return;
      showError(err);
    });

  // Lifecycle changes from the feed (another tab stopped or deleted it).
  const unsubscribe = app.store.subscribe((change) => {
    if (!summary || change.runId !== runId) return;
    if (change.change === "deleted" && !deleted) {
      markDeleted("This run was deleted.");
      return;
    }
    // The status itself comes only from this page's stream (its `done` event),
    // so the badge never says "finished" before the trace has caught up; the
    // feed's summary just brings the server's exact finish time.
    const s = app.store.runs.get(runId);
    if (s && TERMINAL.has(s.status) && TERMINAL.has(summary.status) && s.finished_at) {
      summary = { ...summary, finished_at: s.finished_at, duration_s: s.duration_s };
    }
    renderSummary();
  });

  const timer = setInterval(() => {
    if (summary?.status === "running" && ui.meta) {
      const node = ui.meta.querySelector(".duration");
      if (node) node.textContent = fmtDuration(runDuration(summary));
    }
  }, 1000);

  return {
    node: root,
    heading,
    destroy() {
      destroyed = true;
      stream?.close();
      ui.resize?.disconnect();
      unsubscribe();
      clearInterval(timer);
    },
  };
}
