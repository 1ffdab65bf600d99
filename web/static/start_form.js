// The "Start a run" card: a catalog agent with its input, or your own agent code.
//
// Input we know is wrong (bad JSON, no code) is refused here, next to its
// field, without a call; the server's refusals are put next to the field they
// name.  A started run opens its page.

import { api } from "./api.js";
import { el } from "./dom.js";
import { field, fieldOf, parseInput, showFormError } from "./form.js";
import { takeStartDraft } from "./run_extras.js";

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

/** Both ways to start, as two tabs; "Run again" on a run-code run's page opens the
 * code tab filled in with its code and input. */
export function startForm(app, agents) {
  const draft = takeStartDraft(app);
  return tabs(
    [
      { id: "agent", label: "Catalog agent", panel: agentForm(app, agents) },
      { id: "code", label: "Run code", panel: codeForm(app, draft) },
    ],
    draft ? 1 : 0,
  );
}

/** A catalog agent: pick one, edit its example input, optionally a time limit. */
function agentForm(app, agents) {
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
  const form = el(
    "form",
    { class: "start-form", id: "start-form", novalidate: true, "aria-label": "Start a catalog agent" },
    agentField.wrap,
    inputField.wrap,
    maxField.wrap,
    el("div", { class: "form-actions" }, submit),
    formError,
  );
  const agentFields = { agent: agentField, input_dict: inputField, max_duration_s: maxField };

  form.addEventListener("submit", async (event) => {
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

  return form;
}

/** Your own `async def run(input_dict, ctx)`, run in a separate process;
 * `draft` ({code, input_dict, agent_name}) fills it in. */
function codeForm(app, draft) {
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
  codeInputField.control.value = draft ? JSON.stringify(draft.input_dict, null, 2) : "{}";
  const nameField = field({
    label: "Name",
    optional: true,
    control: el("input", { id: "code-name", name: "agent_name", type: "text", autocomplete: "off" }),
  });
  if (draft) {
    codeField.control.value = draft.code;
    nameField.control.value = draft.agent_name || "";
  }
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
  const form = el(
    "form",
    { class: "start-form", id: "code-form", novalidate: true, "aria-label": "Run your own agent code" },
    codeField.wrap,
    codeInputField.wrap,
    nameField.wrap,
    el("div", { class: "form-actions" }, codeSubmit),
    codeError,
  );
  const codeFields = { code: codeField, input_dict: codeInputField, agent_name: nameField };
  form.addEventListener("submit", async (event) => {
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

  return form;
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

/** WAI-ARIA tabs: arrow keys move between tabs, one tab stop; `selected` shown first. */
function tabs(items, selected = 0) {
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
        "aria-selected": i === selected ? "true" : "false",
        tabindex: i === selected ? "0" : "-1",
      },
      item.label,
    );
    const panel = el(
      "div",
      { role: "tabpanel", id: `panel-${item.id}`, "aria-labelledby": `tab-${item.id}`, hidden: i !== selected },
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
