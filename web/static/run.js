// One run's page (/ui/runs/{run_id}): status, live trace, result, stop, delete.
//
// The page is four parts wired together here: the header and its actions
// (run_header.js), the trace (run_trace.js), the rest of the record (schema
// warnings, operations, code: run_extras.js) and the loader that fetches the
// record and follows the live stream into the trace (run_loader.js).

import { el, shortId } from "./dom.js";
import { RunExtras } from "./run_extras.js";
import { RunHeader } from "./run_header.js";
import { RunLoader } from "./run_loader.js";
import { Trace } from "./run_trace.js";

export function runView(app, { runId }) {
  const root = el("div", { class: "run-page" });
  const body = el("div", { class: "run-body" }, el("p", { class: "muted" }, "Loading run…"));
  // The three parts call each other only after loading has begun, when all exist.
  const trace = new Trace(
    {
      onFlush: () => header.render(),
      onDone: (done, ts) => loader.finish(done, ts),
    },
    runId,
  );
  const header = new RunHeader(app, runId, root, {
    eventCount: () => trace.lastSeq,
    onDeleted: () => loader.runDeleted(),
  });
  const loader = new RunLoader(runId, header, trace, body, new RunExtras(app));
  root.append(el("a", { href: "/", class: "back" }, "← All runs"), header.head, body);
  document.title = `Run ${shortId(runId)} · runyard`;
  loader.load();

  // Lifecycle changes from the feed (another tab stopped or deleted it).
  const unsubscribe = app.store.subscribe((change) => {
    if (!header.summary || change.runId !== runId) return;
    if (change.change === "deleted" && !header.deleted) {
      header.markDeleted("This run was deleted.");
      return;
    }
    header.takeFinishTime(app.store.runs.get(runId));
  });

  const timer = setInterval(() => header.tick(), 1000);

  return {
    node: root,
    heading: header.heading,
    destroy() {
      loader.close();
      trace.destroy();
      unsubscribe();
      clearInterval(timer);
    },
  };
}
