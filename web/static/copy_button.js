// "Copy" buttons: put a text on the clipboard and say so on the button.
//
// The async Clipboard API needs a secure context (https, or localhost); over
// plain http elsewhere it is missing, so a hidden text field and the older
// copy command stand in.

import { el } from "./dom.js";

const SAID_MS = 1500;

async function writeText(text) {
  if (navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // refused (no permission, page not focused): try the old way
    }
  }
  const field = el("textarea", { class: "visually-hidden", readonly: true, "aria-hidden": "true" });
  field.value = text;
  document.body.append(field);
  field.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  field.remove();
  return ok;
}

/**
 * A small button that copies `text()` (a function: the value may change)
 * and reads "Copied" for a moment, or "Copy failed" if the browser refused.
 */
export function copyButton({ id, label, title, text }) {
  const button = el("button", { type: "button", class: "secondary small copy", id, title }, label);
  let timer = 0;
  button.addEventListener("click", async () => {
    const ok = await writeText(text());
    clearTimeout(timer);
    button.textContent = ok ? "Copied" : "Copy failed";
    button.dataset.copied = ok ? "yes" : "no";
    timer = setTimeout(() => {
      button.textContent = label;
      delete button.dataset.copied;
    }, SAID_MS);
  });
  return button;
}
