// The signed-in user's runs, kept current by GET /runs/feed (no polling).
//
// The feed carries no ids, so after every `ready` (first connect and each
// reconnect) the store lists the runs again.  Changes that arrive while that
// listing is in flight are buffered and applied on top of it, and a terminal
// status is never overwritten by an older `running` (a change from before the
// listing's snapshot), so the list converges on the truth either way.

import { api } from "./api.js";
import { EventStream } from "./sse.js";

const PAGE = 50;
const TERMINAL = new Set(["success", "error", "stopped"]);

export class RunsStore {
  constructor() {
    this.runs = new Map(); // run_id -> latest summary
    this.stopping = new Set(); // run_ids with a stop requested
    this.deleted = new Set();
    this.list = { ids: [], nextCursor: null, filter: "", loaded: false, loading: false, error: null };
    this.liveLoaded = false;
    this.userId = null;
    this.feedState = "connecting";
    this._listeners = new Set();
    this._buffer = null; // feed changes held while a listing is in flight
    this._gen = 0;
    this._stream = null;
  }

  subscribe(fn) {
    this._listeners.add(fn);
    return () => this._listeners.delete(fn);
  }

  _emit(change) {
    for (const fn of this._listeners) {
      try {
        fn(change);
      } catch (err) {
        console.error("runyard: store listener failed", err);
      }
    }
  }

  connect() {
    this._stream = new EventStream("/runs/feed", {
      onFrame: (frame) => this._onFrame(frame),
      onState: (state) => {
        this.feedState = state;
        this._emit({ kind: "feed" });
      },
      onFatal: (err) => {
        this.list.error = err.message;
        this._emit({ kind: "list" });
      },
    }).start();
  }

  close() {
    this._stream?.close();
    this._stream = null;
    this._listeners.clear();
  }

  _onFrame(frame) {
    let data;
    try {
      data = JSON.parse(frame.data);
    } catch {
      return;
    }
    if (frame.event === "ready") {
      if (data.user_id) this.userId = data.user_id;
      this.feedState = "open";
      this._emit({ kind: "user" });
      this.refresh();
    } else if (frame.event === "lagged") {
      this.refresh(); // we missed changes: list again
    } else if (frame.event.startsWith("run_") && data.run_id) {
      const kind = frame.event.slice(4);
      if (this._buffer) this._buffer.push([kind, data]);
      else this.apply(kind, data);
    }
  }

  /** List the first page (current filter) and every live run, then replay buffered changes. */
  async refresh() {
    const gen = ++this._gen;
    this._buffer = this._buffer || [];
    this.list.loading = true;
    this._emit({ kind: "list" });
    try {
      const [page, live] = await Promise.all([
        api("GET", this._listUrl(null)),
        api("GET", "/runs?status=running&limit=1000"),
      ]);
      if (gen !== this._gen) return;
      this.runs = new Map();
      for (const s of live.runs) this.runs.set(s.run_id, s);
      for (const s of page.runs) this.runs.set(s.run_id, s);
      this.list.ids = page.runs.map((s) => s.run_id);
      this.list.nextCursor = page.next_cursor;
      this.list.error = null;
      this.list.loaded = true;
      this.liveLoaded = true;
    } catch (err) {
      if (gen !== this._gen) return;
      this.list.error = err.message;
    } finally {
      if (gen === this._gen) {
        this.list.loading = false;
        const buffered = this._buffer || [];
        this._buffer = null;
        for (const [kind, summary] of buffered) this.apply(kind, summary, { quiet: true });
        this._emit({ kind: "list" });
      }
    }
  }

  _listUrl(cursor) {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (this.list.filter) q.set("status", this.list.filter);
    if (cursor) q.set("cursor", cursor);
    return `/runs?${q}`;
  }

  setFilter(status) {
    if (status === this.list.filter) return;
    this.list.filter = status;
    this.list.ids = [];
    this.list.nextCursor = null;
    this.list.loaded = false;
    this.refresh();
  }

  async loadMore() {
    const cursor = this.list.nextCursor;
    if (!cursor || this.list.loading) return;
    const gen = this._gen;
    this.list.loading = true;
    this._emit({ kind: "list" });
    try {
      const page = await api("GET", this._listUrl(cursor));
      if (gen !== this._gen) return;
      const have = new Set(this.list.ids);
      for (const s of page.runs) {
        if (!this.runs.has(s.run_id)) this.runs.set(s.run_id, s);
        if (!have.has(s.run_id)) this.list.ids.push(s.run_id);
      }
      this.list.nextCursor = page.next_cursor;
      this.list.error = null;
    } catch (err) {
      this.list.error = err.message;
    } finally {
      if (gen === this._gen) {
        this.list.loading = false;
        this._emit({ kind: "list" });
      }
    }
  }

  /** One lifecycle change: started | stopping | finished | deleted (also used after our own actions). */
  apply(kind, summary, { quiet = false } = {}) {
    const id = summary.run_id;
    if (kind === "deleted") {
      this.deleted.add(id);
      this.runs.delete(id);
      this.stopping.delete(id);
      this.list.ids = this.list.ids.filter((x) => x !== id);
    } else {
      if (this.deleted.has(id)) return;
      const known = this.runs.get(id);
      if (known && TERMINAL.has(known.status) && !TERMINAL.has(summary.status)) return; // stale
      this.runs.set(id, summary);
      if (kind === "stopping") this.stopping.add(id);
      if (TERMINAL.has(summary.status)) this.stopping.delete(id);
      this._placeInList(summary);
    }
    if (!quiet) this._emit({ kind: "run", runId: id, change: kind });
  }

  _placeInList(summary) {
    const ids = this.list.ids;
    const at = ids.indexOf(summary.run_id);
    const matches = !this.list.filter || summary.status === this.list.filter;
    if (!matches) {
      if (at !== -1) ids.splice(at, 1);
      return;
    }
    if (at !== -1 || !this.list.loaded) return;
    const key = summary.started_at;
    const last = ids.length ? this.runs.get(ids[ids.length - 1]) : null;
    // Older than everything loaded while more pages exist: "load more" will bring it.
    if (this.list.nextCursor && last && key < last.started_at) return;
    let i = 0;
    while (i < ids.length && (this.runs.get(ids[i])?.started_at ?? "") > key) i += 1;
    ids.splice(i, 0, summary.run_id);
  }

  live() {
    return [...this.runs.values()]
      .filter((s) => s.status === "running")
      .sort((a, b) => (a.started_at < b.started_at ? 1 : -1));
  }
}
