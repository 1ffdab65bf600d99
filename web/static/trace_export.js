// A run's trace as a JSON Lines file (one event per line), from the events
// the page holds.
//
// The Blob is built from one small string per event, never one string of the
// whole trace: 100,000 events stay 100,000 small strings, which the browser
// writes out as the file without joining them first.

export const JSONL_TYPE = "application/x-ndjson";

/** Start a download of `events` as `filename` (JSON Lines). */
export function downloadJsonLines(events, filename) {
  const parts = new Array(events.length);
  for (let i = 0; i < events.length; i += 1) parts[i] = `${JSON.stringify(events[i])}\n`;
  const url = URL.createObjectURL(new Blob(parts, { type: JSONL_TYPE }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  // Revoked at once, Chromium may not have read it yet: free it a minute later.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
