// Server-sent events over fetch(), with our own reconnection.
//
// Why not the browser's EventSource?
//  * EventSource hands a frame with `event: <name>` only to listeners added
//    with addEventListener(<name>); `onmessage` never sees it.  A run's trace
//    types are chosen by its agent (tick, chat, stdout, anything), so with
//    EventSource the page would silently drop every type it did not guess.
//    Reading the stream ourselves gives us every frame, whatever its name.
//  * We decide where to resume.  Each (re)connect asks the caller for the
//    resume point and sends it as `Last-Event-ID` — the seq of the last event
//    the page actually rendered, not merely the last id the parser saw — so
//    replay + live can neither skip nor repeat an event.  The page also drops
//    any seq it already has and restarts the stream on a gap (belt and braces:
//    the server already guarantees both).
//  * A 401/403/404 is visible as a status code (EventSource reports only a
//    bare "error"), so the page can show the reason or the sign-in screen.
//  * Reconnection: after a network error or the server closing the stream,
//    wait (the server's `retry:` hint, else 0.5 s doubling to 10 s) and
//    reconnect; `lagged`/`closing` frames are followed the same way.
//
// The parser follows the WHATWG event-stream rules (CR, LF or CRLF line ends,
// comments, multi-line data, `id`, `retry`).

import { errorFrom, notifyUnauthorized } from "./api.js";

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

export class EventStream {
  /**
   * @param {string} url
   * @param {object} handlers
   *   lastEventId(): string|number|null — resume point for each (re)connect
   *   onFrame({event, data, id}) — one parsed frame (`id` only if the frame had one)
   *   onBatch() — after each network chunk's frames (flush DOM work here)
   *   onState(state, detail) — "connecting" | "open" | "reconnecting" | "closed"
   *   onFatal(ApiError) — 4xx: the stream will not be retried
   */
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.closed = false;
    this.retryMs = null;
    this._controller = null;
    this._restartNow = false;
    this._wake = null;
    this._reset();
  }

  start() {
    this._loop();
    return this;
  }

  /** Stop for good (navigation away, run done, sign-out). */
  close() {
    if (this.closed) return;
    this.closed = true;
    this._controller?.abort();
    this._wake?.();
    this._state("closed");
  }

  /** Drop the connection and reconnect at once from lastEventId(). */
  restart() {
    if (this.closed) return;
    this._restartNow = true;
    this._controller?.abort();
    this._wake?.();
  }

  _state(state, detail) {
    this.h.onState?.(state, detail);
  }

  _reset() {
    this._event = "";
    this._data = [];
    this._id = null;
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this._wake = done;
    });
  }

  async _loop() {
    let delay = MIN_DELAY_MS;
    let first = true;
    while (!this.closed) {
      this._restartNow = false;
      this._controller = new AbortController();
      const headers = { Accept: "text/event-stream" };
      const resume = this.h.lastEventId?.();
      if (resume !== null && resume !== undefined && resume !== "") {
        headers["Last-Event-ID"] = String(resume);
      }
      this._state(first ? "connecting" : "reconnecting");
      first = false;
      let problem = null;
      try {
        const response = await fetch(this.url, {
          headers,
          signal: this._controller.signal,
          credentials: "same-origin",
          cache: "no-store",
        });
        if (!response.ok) {
          const error = await errorFrom(response);
          if (response.status === 401) notifyUnauthorized();
          if (response.status >= 400 && response.status < 500 && response.status !== 429) {
            this.closed = true;
            this._state("closed", error);
            this.h.onFatal?.(error);
            return;
          }
          problem = error;
        } else {
          this._state("open");
          delay = MIN_DELAY_MS;
          await this._read(response.body);
        }
      } catch (err) {
        if (this.closed) return;
        if (!this._restartNow) problem = err;
      }
      if (this.closed) return;
      if (this._restartNow) continue;
      // The stream ended (server closed it, network error, 5xx): come back.
      const wait = this.retryMs ?? delay;
      this.retryMs = null;
      delay = Math.min(delay * 2, MAX_DELAY_MS);
      this._state("reconnecting", problem);
      await this._sleep(wait);
    }
  }

  async _read(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    this._reset();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let start = 0;
        for (;;) {
          if (this.closed || this._restartNow) return;
          const cr = buffer.indexOf("\r", start);
          const lf = buffer.indexOf("\n", start);
          let end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
          if (end === -1) break;
          let next = end + 1;
          if (buffer[end] === "\r") {
            if (end + 1 === buffer.length) break; // maybe CRLF split across chunks
            if (buffer[end + 1] === "\n") next = end + 2;
          }
          this._line(buffer.slice(start, end));
          start = next;
        }
        buffer = buffer.slice(start);
        if (this.closed || this._restartNow) return;
        this.h.onBatch?.();
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  _line(line) {
    if (line === "") {
      this._dispatch();
      return;
    }
    if (line.startsWith(":")) return; // comment (heartbeat)
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this._event = value;
    else if (field === "data") this._data.push(value);
    else if (field === "id") {
      if (!value.includes("\0")) this._id = value;
    } else if (field === "retry") {
      if (/^\d+$/.test(value)) this.retryMs = Number(value);
    }
  }

  _dispatch() {
    const frame = { event: this._event || "message", data: this._data.join("\n"), id: this._id };
    const hasData = this._data.length > 0;
    this._reset();
    if (!hasData) return;
    try {
      this.h.onFrame(frame);
    } catch (err) {
      console.error("runyard: frame handler failed", err, frame);
    }
  }
}
