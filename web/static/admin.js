// Operators' view of GET /ops/registry (admins only; others get the 403 message).
//
// A runaway run of any user can be stopped here (POST /runs/{id}/stop; the
// run records "stopped by admin <id>").  Only the admin's own runs link to
// their page: another user's trace stays private, even to an admin.

import { api } from "./api.js";
import { el, fmtBytes, fmtDuration, shortId, statusBadge } from "./dom.js";

const REFRESH_MS = 5000;

export function adminView(app) {
  const heading = el("h1", { tabindex: "-1" }, "Registry");
  const refresh = el("button", { type: "button", class: "secondary", id: "registry-refresh" }, "Refresh");
  const auto = el("input", { type: "checkbox", id: "registry-auto", checked: true });
  const stamp = el("span", { class: "muted stamp", "aria-live": "polite" });
  const body = el("div", { class: "registry-body" }, el("p", { class: "muted" }, "Loading…"));
  const root = el(
    "div",
    { class: "admin-page" },
    el("a", { href: "/", class: "back" }, "← All runs"),
    el(
      "div",
      { class: "title-row" },
      heading,
      el(
        "div",
        { class: "toolbar" },
        stamp,
        el("label", { class: "check", for: "registry-auto" }, auto, " Auto-refresh"),
        refresh,
      ),
    ),
    body,
  );
  document.title = "Registry · runyard";

  let timer = null;
  let destroyed = false;

  const stat = (label, value, extra = "") =>
    el("div", { class: `stat ${extra}` }, el("div", { class: "stat-value" }, value), el("div", { class: "stat-label" }, label));

  const confirming = new Set(); // run ids whose stop waits for a second click
  const outcome = el("p", { class: "outcome", id: "admin-outcome", role: "status", "aria-live": "polite" });
  let lastView = null;

  function runCell(r) {
    if (r.owner !== app.user?.user_id) return shortId(r.run_id);
    return el("a", { href: `/ui/runs/${encodeURIComponent(r.run_id)}` }, shortId(r.run_id));
  }

  function stopCell(r) {
    if (r.stopping) return el("span", { class: "muted" }, "stopping…");
    const whose = r.owner === app.user?.user_id ? "your" : `${r.owner}'s`;
    if (confirming.has(r.run_id)) {
      return el(
        "span",
        { class: "confirm", role: "group", "aria-label": `Confirm stopping run ${shortId(r.run_id)}` },
        el("button", { type: "button", class: "danger small", onclick: () => stopRun(r) }, `Stop ${whose} run`),
        el("button", { type: "button", class: "secondary small", onclick: () => setConfirm(r.run_id, false) }, "Cancel"),
      );
    }
    return el(
      "button",
      {
        type: "button",
        class: "danger-outline small",
        "aria-label": `Stop run ${shortId(r.run_id)} of ${r.owner}`,
        title: "Stop this run (its owner sees who stopped it)",
        onclick: () => setConfirm(r.run_id, true),
      },
      "Stop",
    );
  }

  function setConfirm(runId, on) {
    if (on) confirming.add(runId);
    else confirming.delete(runId);
    if (lastView) render(lastView);
  }

  async function stopRun(r) {
    confirming.delete(r.run_id);
    outcome.dataset.kind = "pending";
    outcome.textContent = `Stopping run ${shortId(r.run_id)} of ${r.owner}…`;
    try {
      await api("POST", `/runs/${encodeURIComponent(r.run_id)}/stop`);
      if (destroyed) return;
      outcome.dataset.kind = "ok";
      outcome.textContent = `Stop requested for run ${r.run_id} of ${r.owner}.`;
    } catch (err) {
      if (destroyed) return;
      outcome.dataset.kind = "error";
      outcome.textContent = err.message;
    }
    load();
  }

  function render(view) {
    lastView = view;
    const byStatus = Object.entries(view.runs_by_status || {});
    const live = view.live || [];
    body.replaceChildren(
      el(
        "section",
        { class: "card", "aria-label": "Process" },
        el(
          "div",
          { class: "stats" },
          stat("accepting runs", view.accepting ? "yes" : "no", view.accepting ? "ok" : "bad"),
          stat("live runs", String(live.length)),
          stat("cached finished", String(view.cached_finished)),
          stat("persistence backlog", view.persistence_backlog < 0 ? "unknown" : String(view.persistence_backlog), view.persistence_backlog > 0 ? "warn" : ""),
          stat("event-loop lag", `${view.event_loop_lag_ms.toFixed(1)} ms`, view.event_loop_lag_ms > 100 ? "warn" : ""),
          stat("memory (RSS)", fmtBytes(view.rss_bytes)),
          stat("uptime", fmtDuration(view.uptime_s)),
        ),
        el(
          "div",
          { class: "by-status" },
          el("h2", {}, "Runs by status"),
          byStatus.length
            ? el("ul", { class: "chips" }, byStatus.map(([s, n]) => el("li", {}, statusBadge(s), el("span", { class: "chip-count" }, String(n)))))
            : el("p", { class: "muted" }, "No runs."),
        ),
      ),
      el(
        "section",
        { class: "card", "aria-labelledby": "live-runs-title" },
        el("h2", { id: "live-runs-title" }, `Live runs (${live.length})`),
        outcome,
        live.length
          ? el(
              "div",
              { class: "table-wrap" },
              el(
                "table",
                { class: "registry-table" },
                el(
                  "thead",
                  {},
                  el(
                    "tr",
                    {},
                    ["Run", "Owner", "Agent", "Age", "Events", "Watchers", "State", "Action"].map((h) =>
                      el("th", { scope: "col", class: ["Age", "Events", "Watchers"].includes(h) ? "num" : null }, h),
                    ),
                  ),
                ),
                el(
                  "tbody",
                  {},
                  live.map((r) =>
                    el(
                      "tr",
                      { dataset: { runId: r.run_id } },
                      el("td", { "data-label": "Run", class: "mono run", title: r.run_id }, runCell(r)),
                      el("td", { "data-label": "Owner" }, r.owner),
                      el("td", { "data-label": "Agent" }, r.agent),
                      el("td", { "data-label": "Age", class: "num" }, fmtDuration(r.age_s)),
                      el("td", { "data-label": "Events", class: "num" }, String(r.trace_length)),
                      el("td", { "data-label": "Watchers", class: "num" }, String(r.subscribers)),
                      el("td", { "data-label": "State" }, statusBadge("running", { stopping: r.stopping })),
                      el("td", { "data-label": "Action", class: "action" }, stopCell(r)),
                    ),
                  ),
                ),
              ),
            )
          : el("p", { class: "muted empty" }, "Nothing is running."),
      ),
    );
  }

  async function load() {
    refresh.disabled = true;
    try {
      const view = await api("GET", "/ops/registry");
      if (destroyed) return;
      render(view);
      stamp.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (destroyed || err.status === 401) return;
      body.replaceChildren(
        el("div", { class: "card run-error", role: "alert" }, el("h2", {}, err.status === 403 ? "Admins only" : "Could not load the registry"), el("p", { class: "error-message" }, err.message)),
      );
      auto.checked = false;
      schedule();
    } finally {
      refresh.disabled = false;
    }
  }

  // Operators' numbers (lag, memory) change without run events, so this view
  // refreshes on a timer while it is open; the runs list never polls.
  function schedule() {
    clearInterval(timer);
    timer = auto.checked ? setInterval(load, REFRESH_MS) : null;
  }
  refresh.addEventListener("click", load);
  auto.addEventListener("change", schedule);
  load();
  schedule();

  return {
    node: root,
    heading,
    destroy() {
      destroyed = true;
      clearInterval(timer);
    },
  };
}
