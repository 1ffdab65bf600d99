// The runs on the home page: the "Running now" panel and the table of your runs.
//
// Both render from the runs store (store.js), which the live feed keeps
// current; the table updates its rows in place, so a row being read or
// hovered is not rebuilt on every change.

import {
  STATUSES,
  el,
  fmtDuration,
  fmtFull,
  fmtTime,
  runDuration,
  shortId,
  statusBadge,
} from "./dom.js";

function runLink(summary) {
  return el(
    "a",
    { href: `/ui/runs/${encodeURIComponent(summary.run_id)}`, class: "run-link", title: summary.run_id },
    el("span", { class: "agent-name" }, summary.agent),
    el("span", { class: "run-id mono" }, shortId(summary.run_id)),
  );
}

export function livePanel(app) {
  const body = el("div", { class: "live-body" });
  const count = el("span", { class: "count", "aria-live": "polite" });
  const section = el(
    "section",
    { class: "card live-panel", "aria-labelledby": "live-title" },
    el("h2", { id: "live-title" }, "Running now ", count),
    body,
  );
  const render = () => {
    const store = app.store;
    const live = store.live();
    count.textContent = live.length ? `(${live.length})` : "";
    if (!store.liveLoaded) {
      body.replaceChildren(el("p", { class: "muted" }, "Loading…"));
      return;
    }
    if (!live.length) {
      body.replaceChildren(el("p", { class: "muted empty" }, "Nothing is running."));
      return;
    }
    body.replaceChildren(
      el(
        "ul",
        { class: "live-list" },
        live.map((s) =>
          el(
            "li",
            { dataset: { runId: s.run_id } },
            statusBadge(s.status, { stopping: store.stopping.has(s.run_id) }),
            runLink(s),
            el("span", { class: "elapsed", dataset: { started: s.started_at } }, fmtDuration(runDuration(s))),
          ),
        ),
      ),
    );
  };
  return { section, render };
}

export function runsTable(app) {
  const store = app.store;
  const filter = el(
    "select",
    { id: "status-filter", name: "status" },
    el("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => el("option", { value: s }, s)),
  );
  filter.value = store.list.filter;
  filter.addEventListener("change", () => store.setFilter(filter.value));
  const tbody = el("tbody");
  const table = el(
    "table",
    { class: "runs-table" },
    el("caption", { class: "visually-hidden" }, "Your runs, newest first"),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Status"),
        el("th", { scope: "col" }, "Run"),
        el("th", { scope: "col" }, "Started"),
        el("th", { scope: "col", class: "num" }, "Duration"),
        el("th", { scope: "col", class: "num" }, "Events"),
      ),
    ),
    tbody,
  );
  const empty = el("p", { class: "muted empty", hidden: true });
  const error = el("p", { class: "form-error", role: "alert", hidden: true });
  const more = el("button", { type: "button", class: "secondary", id: "load-more", hidden: true }, "Load more");
  more.addEventListener("click", () => store.loadMore());
  const section = el(
    "section",
    { class: "card runs-card", "aria-labelledby": "runs-title" },
    el(
      "div",
      { class: "card-head" },
      el("h2", { id: "runs-title" }, "Your runs"),
      el("div", { class: "filter" }, el("label", { for: "status-filter" }, "Status"), filter),
    ),
    el("div", { class: "table-wrap" }, table),
    empty,
    error,
    el("div", { class: "more" }, more),
  );

  const rows = new Map(); // run_id -> {tr, cells}
  const makeRow = (id) => {
    const cells = {
      status: el("td", { class: "status", "data-label": "Status" }),
      run: el("td", { class: "run", "data-label": "Run" }),
      started: el("td", { class: "started", "data-label": "Started" }),
      duration: el("td", { class: "num duration", "data-label": "Duration" }),
      events: el("td", { class: "num events", "data-label": "Events" }),
    };
    const tr = el("tr", { dataset: { runId: id } }, Object.values(cells));
    return { tr, cells, key: "" };
  };
  const fill = (row, s) => {
    const stopping = store.stopping.has(s.run_id);
    const key = `${s.status}|${stopping}|${s.event_count}|${s.finished_at}`;
    if (row.key === key) return;
    row.key = key;
    row.tr.dataset.status = s.status;
    row.cells.status.replaceChildren(statusBadge(s.status, { stopping }));
    // replaceChildren() would render a null argument as the text "null".
    const errorLine = s.status === "error" && s.error ? [el("div", { class: "row-error", title: s.error }, s.error)] : [];
    row.cells.run.replaceChildren(runLink(s), ...errorLine);
    row.cells.started.replaceChildren(
      el("time", { datetime: s.started_at, title: fmtFull(s.started_at) }, fmtTime(s.started_at)),
    );
    row.cells.duration.textContent = fmtDuration(runDuration(s));
    row.cells.duration.dataset.started = s.status === "running" ? s.started_at : "";
    row.cells.events.textContent = s.status === "running" ? "…" : String(s.event_count);
    if (s.error) row.tr.title = s.error;
    else row.tr.removeAttribute("title");
  };

  const render = () => {
    const { ids, loaded, loading, nextCursor } = store.list;
    const wanted = new Set(ids);
    for (const [id, row] of rows) {
      if (!wanted.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    let previous = null;
    for (const id of ids) {
      const s = store.runs.get(id);
      if (!s) continue;
      let row = rows.get(id);
      if (!row) {
        row = makeRow(id);
        rows.set(id, row);
      }
      fill(row, s);
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (expected !== row.tr) tbody.insertBefore(row.tr, expected);
      previous = row.tr;
    }
    table.hidden = ids.length === 0;
    empty.hidden = ids.length !== 0 || !loaded;
    empty.textContent = store.list.filter
      ? `No ${store.list.filter} runs.`
      : "No runs yet. Start one with the form.";
    if (!loaded && loading) {
      empty.hidden = false;
      empty.textContent = "Loading…";
    }
    error.textContent = store.list.error || "";
    error.hidden = !store.list.error;
    more.hidden = !nextCursor;
    more.disabled = loading;
    more.textContent = loading && loaded ? "Loading…" : "Load more";
  };
  return { section, render };
}
