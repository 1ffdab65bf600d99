// The home page: start a run, the "running now" panel and the runs list.

import { api } from "./api.js";
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

// Starting points for the built-in agents, used while the input is untouched.
const EXAMPLES = {
  ticker: '{"n": 20, "interval": 0.2}',
  sleeper: '{"seconds": 30}',
  echo: '{"hello": "world"}',
  failer: '{"events": 3, "message": "boom"}',
  chatty: '{"n": 1000}',
};

const CODE_PLACEHOLDER = `async def run(input_dict, ctx):
    for i in range(3):
        ctx.emit("step", i=i)
    return {"ok": True}`;

let formIds = 0;

/** A labelled control with its hint and its error line (aria-describedby both). */
function field({ label, control, hint, optional }) {
  const n = ++formIds;
  const id = control.id || `f${n}`;
  control.id = id;
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  control.setAttribute("aria-describedby", hint ? `${hintId} ${errorId}` : errorId);
  const error = el("p", { class: "field-error", id: errorId, role: "alert", hidden: true });
  const wrap = el(
    "div",
    { class: "field" },
    el("label", { for: id }, label, optional ? el("span", { class: "optional" }, " (optional)") : null),
    control,
    hint ? el("p", { class: "hint", id: hintId }, hint) : null,
    error,
  );
  return {
    wrap,
    control,
    hintEl: hint ? wrap.querySelector(".hint") : null,
    setError(message) {
      error.textContent = message || "";
      error.hidden = !message;
      if (message) control.setAttribute("aria-invalid", "true");
      else control.removeAttribute("aria-invalid");
    },
  };
}

/** Parse a JSON-object textarea; returns {value} or {error}. */
function parseInput(text) {
  const trimmed = text.trim();
  if (trimmed === "") return { value: {} };
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (err) {
    return { error: `Invalid JSON: ${err.message}` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { error: "The input must be a JSON object, like {\"n\": 5}." };
  }
  return { value };
}

/** Which field a server refusal is about (validation messages name it). */
function fieldOf(err, names) {
  const msg = err.message || "";
  if (err.code === "unknown_agent") return "agent";
  if (err.code === "invalid_code") return "code";
  if (err.code === "malformed_json") return "input";
  for (const name of names) {
    const re = new RegExp(`(^|[\\s:;])${name}([.\\[:]|$)`);
    if (re.test(msg.replace(/^invalid input:\s*/, ""))) return name;
  }
  return null;
}

function startForm(app, agents) {
  // ---- catalog agent tab
  const agentSelect = el(
    "select",
    { id: "start-agent", name: "agent", required: true },
    agents.map((a) => el("option", { value: a.name }, a.name)),
  );
  const agentField = field({ label: "Agent", control: agentSelect, hint: " " });
  const inputField = field({
    label: "Input (JSON object)",
    control: el("textarea", {
      id: "start-input",
      name: "input",
      rows: 4,
      spellcheck: "false",
      class: "mono",
    }),
  });
  const maxField = field({
    label: "Time limit in seconds",
    optional: true,
    control: el("input", {
      id: "start-max",
      name: "max_duration_s",
      type: "number",
      step: "any",
      inputmode: "decimal",
    }),
  });
  let edited = false;
  inputField.control.addEventListener("input", () => {
    edited = true;
    inputField.setError("");
  });
  const describe = () => {
    const agent = agents.find((a) => a.name === agentSelect.value);
    // Descriptions use `backticks` for names: show those as code.
    agentField.hintEl.replaceChildren(
      ...(agent?.description || "").split("`").map((part, i) => (i % 2 ? el("code", {}, part) : part)),
    );
    if (!edited) inputField.control.value = EXAMPLES[agentSelect.value] ?? "{}";
  };
  if (agents.some((a) => a.name === "ticker")) agentSelect.value = "ticker";
  agentSelect.addEventListener("change", () => {
    agentField.setError("");
    describe();
  });
  describe();

  const formError = el("p", { class: "form-error", role: "alert", hidden: true });
  const submit = el("button", { type: "submit", class: "primary" }, "Start run");
  const agentForm = el(
    "form",
    { class: "start-form", id: "start-form", novalidate: true, "aria-label": "Start a catalog agent" },
    agentField.wrap,
    inputField.wrap,
    maxField.wrap,
    el("div", { class: "form-actions" }, submit),
    formError,
  );
  const agentFields = { agent: agentField, input_dict: inputField, max_duration_s: maxField };

  agentForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const f of Object.values(agentFields)) f.setError("");
    showFormError(formError, "");
    const parsed = parseInput(inputField.control.value);
    if (parsed.error) {
      inputField.setError(parsed.error);
      inputField.control.focus();
      return; // never call the server with input we know is wrong
    }
    const body = { agent: agentSelect.value, input_dict: parsed.value };
    const max = maxField.control.value.trim();
    if (max !== "") {
      const seconds = Number(max);
      if (!Number.isFinite(seconds)) {
        maxField.setError("Enter a number of seconds.");
        return;
      }
      body.max_duration_s = seconds;
    }
    await submitStart(app, submit, "/runs", body, (err) => {
      const name = fieldOf(err, ["agent", "input_dict", "max_duration_s"]);
      const target = agentFields[name] || (err.status === 422 ? inputField : null);
      if (target) {
        target.setError(err.message);
        target.control.focus();
      } else {
        showFormError(formError, err.message);
      }
    });
  });

  // ---- run-code tab
  const codeField = field({
    label: "Agent code (Python)",
    hint: "Define async def run(input_dict, ctx). It runs in a separate process.",
    control: el("textarea", {
      id: "code-source",
      name: "code",
      rows: 9,
      spellcheck: "false",
      class: "mono",
      placeholder: CODE_PLACEHOLDER,
    }),
  });
  const codeInputField = field({
    label: "Input (JSON object)",
    control: el("textarea", { id: "code-input", name: "input", rows: 3, spellcheck: "false", class: "mono" }),
  });
  codeInputField.control.value = "{}";
  const nameField = field({
    label: "Name",
    optional: true,
    control: el("input", { id: "code-name", name: "agent_name", type: "text", autocomplete: "off" }),
  });
  codeField.control.addEventListener("input", () => codeField.setError(""));
  codeInputField.control.addEventListener("input", () => codeInputField.setError(""));
  codeField.control.addEventListener("keydown", (event) => {
    if (event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey && !event.metaKey) {
      // Indent in the code box; Escape then Tab leaves it (keyboard users are not trapped).
      if (codeField.control.dataset.escaped === "1") return;
      event.preventDefault();
      codeField.control.setRangeText("    ", codeField.control.selectionStart, codeField.control.selectionEnd, "end");
    } else if (event.key === "Escape") {
      codeField.control.dataset.escaped = "1";
    } else {
      delete codeField.control.dataset.escaped;
    }
  });
  const codeError = el("p", { class: "form-error", role: "alert", hidden: true });
  const codeSubmit = el("button", { type: "submit", class: "primary" }, "Run code");
  const codeForm = el(
    "form",
    { class: "start-form", id: "code-form", novalidate: true, "aria-label": "Run your own agent code" },
    codeField.wrap,
    codeInputField.wrap,
    nameField.wrap,
    el("div", { class: "form-actions" }, codeSubmit),
    codeError,
  );
  const codeFields = { code: codeField, input_dict: codeInputField, agent_name: nameField };
  codeForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const f of Object.values(codeFields)) f.setError("");
    showFormError(codeError, "");
    if (!codeField.control.value.trim()) {
      codeField.setError("Paste the agent's code first.");
      codeField.control.focus();
      return;
    }
    const parsed = parseInput(codeInputField.control.value);
    if (parsed.error) {
      codeInputField.setError(parsed.error);
      codeInputField.control.focus();
      return;
    }
    const body = { code: codeField.control.value, input_dict: parsed.value };
    const name = nameField.control.value.trim();
    if (name) body.agent_name = name;
    await submitStart(app, codeSubmit, "/agents/run-code/start", body, (err) => {
      const which = fieldOf(err, ["code", "input_dict", "agent_name"]);
      const target = codeFields[which];
      if (target) {
        target.setError(err.message);
        target.control.focus();
      } else {
        // e.g. 404 while the server has no run-code route
        codeField.setError(err.message);
        showFormError(codeError, `The server refused the request (${err.status || "no answer"}).`);
      }
    });
  });

  return tabs([
    { id: "agent", label: "Catalog agent", panel: agentForm },
    { id: "code", label: "Run code", panel: codeForm },
  ]);
}

function showFormError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

async function submitStart(app, button, path, body, onError) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const started = await api("POST", path, body);
    app.navigate(`/ui/runs/${encodeURIComponent(started.run_id)}`);
  } catch (err) {
    if (err.status !== 401) onError(err);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** WAI-ARIA tabs: arrow keys move between tabs, one tab stop. */
function tabs(items) {
  const list = el("div", { class: "tabs", role: "tablist", "aria-label": "How to start" });
  const panels = [];
  const buttons = items.map((item, i) => {
    const button = el(
      "button",
      {
        type: "button",
        role: "tab",
        id: `tab-${item.id}`,
        "aria-controls": `panel-${item.id}`,
        "aria-selected": i === 0 ? "true" : "false",
        tabindex: i === 0 ? "0" : "-1",
      },
      item.label,
    );
    const panel = el(
      "div",
      { role: "tabpanel", id: `panel-${item.id}`, "aria-labelledby": `tab-${item.id}`, hidden: i !== 0 },
      item.panel,
    );
    panels.push(panel);
    return button;
  });
  const select = (index) => {
    buttons.forEach((b, i) => {
      b.setAttribute("aria-selected", i === index ? "true" : "false");
      b.tabIndex = i === index ? 0 : -1;
      panels[i].hidden = i !== index;
    });
  };
  buttons.forEach((button, index) => {
    button.addEventListener("click", () => select(index));
    button.addEventListener("keydown", (event) => {
      const delta = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!delta) return;
      const next = (index + delta + buttons.length) % buttons.length;
      select(next);
      buttons[next].focus();
    });
  });
  list.append(...buttons);
  return el("div", { class: "tabbed" }, list, panels);
}

// ---------------------------------------------------------------------------

function runLink(summary) {
  return el(
    "a",
    { href: `/ui/runs/${encodeURIComponent(summary.run_id)}`, class: "run-link", title: summary.run_id },
    el("span", { class: "agent-name" }, summary.agent),
    el("span", { class: "run-id mono" }, shortId(summary.run_id)),
  );
}

function livePanel(app) {
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

function runsTable(app) {
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
    const errorLine = s.status === "error" && s.error ? [el("div", { class: "row-error" }, s.error)] : [];
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

export function homeView(app) {
  const root = el("div", { class: "home" });
  const heading = el("h1", { class: "visually-hidden", tabindex: "-1" }, "Runs");
  const startCard = el(
    "section",
    { class: "card start-card", "aria-labelledby": "start-title" },
    el("h2", { id: "start-title" }, "Start a run"),
    el("p", { class: "muted" }, "Loading agents…"),
  );
  const live = livePanel(app);
  const table = runsTable(app);
  root.append(heading, el("div", { class: "side" }, startCard, live.section), el("div", { class: "main-col" }, table.section));

  api("GET", "/agents")
    .then((agents) => {
      startCard.replaceChildren(startCard.firstChild, startForm(app, agents));
    })
    .catch((err) => {
      if (err.status !== 401) startCard.append(el("p", { class: "form-error", role: "alert" }, err.message));
    });

  const render = () => {
    live.render();
    table.render();
  };
  const unsubscribe = app.store.subscribe(render);
  const timer = setInterval(() => {
    // Running durations count up between feed changes.
    for (const node of root.querySelectorAll("[data-started]")) {
      if (node.dataset.started) {
        node.textContent = fmtDuration((Date.now() - Date.parse(node.dataset.started)) / 1000);
      }
    }
  }, 1000);
  render();
  document.title = "Runs · runyard";
  return {
    node: root,
    heading,
    destroy() {
      unsubscribe();
      clearInterval(timer);
    },
  };
}
