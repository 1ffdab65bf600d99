// The home page: start a run, the "running now" panel and the runs list.

import { api } from "./api.js";
import { el, fmtDuration } from "./dom.js";
import { livePanel, runsTable } from "./runs_list.js";
import { startForm } from "./start_form.js";

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
