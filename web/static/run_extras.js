// The rest of a run's record on its page: how its result matched the output
// schema, what its operations (ctx.op) added up to, and the code a run-code
// run was started with, with "Run again".
//
// Filled from GET /runs/{id} when the page loads, and from the `done` event
// when the run ends while the page watches (its data carries
// `schema_warnings` and `ops_log` when the run has them).

import { el } from "./dom.js";

export class RunExtras {
  /** @param {App} app — "Run again" leaves a draft on it for the start form */
  constructor(app) {
    this.app = app;
    this.schemaCard = el("section", { class: "card schema-card", hidden: true, "aria-labelledby": "schema-title" });
    this.opsCard = el("section", { class: "card ops-card", hidden: true, "aria-labelledby": "ops-title" });
    this.codeCard = el("section", { class: "card code-card", hidden: true, "aria-labelledby": "code-title" });
    this.cards = [this.schemaCard, this.opsCard, this.codeCard];
    this._record = null;
  }

  /** The loaded record. */
  show(record) {
    this._record = record;
    this._showWarnings(record.schema_warnings);
    this._showOps(record.ops_log);
    this._showCode(record);
  }

  /** The run ended: its `done` event's data. */
  finish(done) {
    if (done.schema_warnings !== undefined) this._showWarnings(done.schema_warnings);
    if (done.ops_log !== undefined) this._showOps(done.ops_log);
  }

  _showWarnings(warnings) {
    if (!Array.isArray(warnings)) {
      this.schemaCard.hidden = true; // not checked: no schema, or no success
      return;
    }
    const parts = [el("h2", { id: "schema-title" }, "Output schema")];
    if (warnings.length === 0) {
      parts.push(el("p", { class: "schema-ok" }, "✓ The result matches its output schema."));
    } else {
      // The server lists at most 50, then one entry (path "") saying more were left out.
      const n = warnings.filter((w) => w.path !== "" || !w.message.startsWith("more mismatches")).length;
      parts.push(
        el("p", { class: "schema-note" }, `The result does not match its output schema (${n} warning${n === 1 ? "" : "s"}); the run still counts as a success.`),
        el(
          "ul",
          { class: "schema-warnings" },
          warnings.map((w) =>
            el("li", {}, el("code", { class: "mono schema-path" }, w.path || "(whole result)"), " ", el("span", {}, w.message)),
          ),
        ),
      );
    }
    this.schemaCard.classList.toggle("schema-mismatch", warnings.length > 0);
    this.schemaCard.replaceChildren(...parts);
    this.schemaCard.hidden = false;
  }

  _showOps(opsLog) {
    const kinds = Object.entries(opsLog || {});
    if (kinds.length === 0) {
      this.opsCard.hidden = true;
      return;
    }
    const num = (value, digits) =>
      typeof value === "number" ? value.toLocaleString(undefined, { maximumFractionDigits: digits }) : "—";
    const seconds = (value) => (typeof value === "number" ? `${num(value, 2)} s` : "—");
    const head = el("tr", {}, ["Kind", "Ops", "Time", "Tokens", "Cost"].map((h) => el("th", { scope: "col" }, h)));
    const rows = kinds.map(([kind, t]) =>
      el(
        "tr",
        { dataset: { kind } },
        el("th", { scope: "row", class: "mono" }, kind),
        el("td", {}, num(t.count, 0)),
        el("td", {}, seconds(t.duration_s)),
        el("td", {}, num(t.tokens, 0)),
        el("td", {}, num(t.cost, 6)),
      ),
    );
    this.opsCard.replaceChildren(
      el("h2", { id: "ops-title" }, "Operations"),
      el("div", { class: "table-wrap" }, el("table", { class: "ops-table" }, el("thead", {}, head), el("tbody", {}, rows))),
    );
    this.opsCard.hidden = false;
  }

  _showCode(record) {
    const code = record.options?.code;
    if (typeof code !== "string") {
      this.codeCard.hidden = true;
      return;
    }
    const again = el("button", { type: "button", class: "secondary", id: "run-again" }, "Run again");
    again.addEventListener("click", () => {
      // The start form takes the draft once (start_form.js); env is never kept, so not in it.
      this.app.startDraft = {
        code,
        input_dict: record.input_dict || {},
        agent_name: record.agent !== "run-code" ? record.agent : "",
      };
      this.app.navigate("/");
    });
    this.codeCard.replaceChildren(
      el("div", { class: "card-head" }, el("h2", { id: "code-title" }, "Code"), again),
      el("pre", { class: "mono run-code" }, code),
    );
    this.codeCard.hidden = false;
  }
}

/** The draft "Run again" left for the start form, taken once (null if none). */
export function takeStartDraft(app) {
  const draft = app.startDraft || null;
  app.startDraft = null;
  return draft;
}
