// runyard dashboard: sign-in, routing and the page shell.
//
// Pages have real URLs: "/" (runs), "/ui/runs/{run_id}" (one run, bookmarkable)
// and "/ui/admin" (registry, admins only); the server answers index.html for
// all of them.  The sign-in link carries its token in the fragment,
// "/#token=...": browsers never send a fragment, so the token reaches no
// server or proxy log.  It is taken out of the address bar at once and traded
// for an HttpOnly session cookie.  Old "/?token=..." links still work.

import { api, setUnauthorizedHandler } from "./api.js";
import { adminView } from "./admin.js";
import { el } from "./dom.js";
import { homeView } from "./home.js";
import { runView } from "./run.js";
import { RunsStore } from "./store.js";

const ROUTES = [
  [/^\/$/, () => homeView],
  [/^\/ui\/runs\/([^/]+)\/?$/, (m) => (app) => runView(app, { runId: decodeURIComponent(m[1]) })],
  [/^\/ui\/admin\/?$/, () => adminView],
];

/**
 * The token of a sign-in link ("#token=..." or, from old links, "?token="),
 * removed from the address bar before anything else happens; null if none.
 */
function takeLinkToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const token = fragment.get("token") ?? query.get("token");
  if (token === null) return null;
  fragment.delete("token");
  query.delete("token");
  const search = query.toString();
  const hash = fragment.toString();
  history.replaceState(history.state, "", `${location.pathname}${search ? `?${search}` : ""}${hash ? `#${hash}` : ""}`);
  return token;
}

class App {
  constructor() {
    this.main = document.getElementById("main");
    this.header = document.getElementById("header-tools");
    this.nav = document.getElementById("nav");
    this.store = null;
    this.view = null;
    this.user = null; // {user_id, admin}
  }

  async boot() {
    setUnauthorizedHandler(() => this.signedOut("Your session has ended. Sign in again."));
    document.addEventListener("click", (event) => this._interceptLink(event));
    window.addEventListener("popstate", () => this.route());

    // A sign-in link opened while the page is already open changes only the fragment.
    window.addEventListener("hashchange", () => {
      const token = takeLinkToken();
      if (token !== null) this.signInWithLink(token);
    });
    const token = takeLinkToken();
    if (token !== null) {
      await this.signInWithLink(token);
      return;
    }
    let me;
    try {
      // "Who am I": whether the cookie is good, whose it is, and whether to offer admin pages.
      me = await this._whoAmI({ quiet401: true });
    } catch (err) {
      if (err.status === 401) this.showSignIn("");
      else this.showFatal(err);
      return;
    }
    await this.signedIn(me);
  }

  async _whoAmI(opts = {}) {
    const me = await api("GET", "/auth/session", undefined, opts);
    return { user_id: me.user_id, admin: Boolean(me.admin) };
  }

  async signInWithLink(token) {
    try {
      await this.signIn(token);
    } catch (err) {
      const message =
        err.status === 401 ? "The sign-in link's token was not accepted. Enter a token below." : err.message;
      if (this.user) this.signedOut(message);
      else this.showSignIn(message);
    }
  }

  async signIn(token) {
    const info = await api("POST", "/auth/session", undefined, { token, quiet401: true });
    await this.signedIn({ user_id: info.user_id, admin: Boolean(info.admin) });
  }

  async signedIn(user) {
    this.user = user;
    document.body.classList.remove("signed-out");
    this.store?.close();
    this.store = new RunsStore();
    this.store.subscribe((change) => {
      if (change.kind === "user" && this.store.userId && this.store.userId !== this.user.user_id) {
        // The cookie now belongs to someone else (another tab signed in): trust the server.
        this.user = { user_id: this.store.userId, admin: this.user.admin };
        this._whoAmI().then(
          (me) => {
            if (!this.user) return; // signed out meanwhile
            this.user = me;
            this.renderHeader();
          },
          () => {}, // a 401 has signed the page out; otherwise keep the old admin flag
        );
      }
      if (change.kind === "user" || change.kind === "feed") this.renderHeader();
    });
    this.store.connect();
    this.renderHeader();
    this.route();
  }

  async signOut() {
    try {
      await api("DELETE", "/auth/session", undefined, { quiet401: true });
    } catch {
      // the cookie is cleared server-side only; still forget everything here
    }
    history.pushState(null, "", "/");
    this.signedOut("You are signed out.");
  }

  signedOut(message) {
    if (!this.user && document.getElementById("signin-form")) return;
    this.user = null;
    this.view?.destroy();
    this.view = null;
    this.store?.close();
    this.store = null;
    this.showSignIn(message);
  }

  // ------------------------------------------------------------- shell
  renderHeader() {
    if (!this.user) {
      this.nav.replaceChildren();
      this.header.replaceChildren();
      return;
    }
    const path = location.pathname;
    const link = (href, text, active) =>
      el("a", { href, class: active ? "active" : null, "aria-current": active ? "page" : null }, text);
    const links = [link("/", "Runs", path === "/" || path.startsWith("/ui/runs"))];
    if (this.user.admin) links.push(link("/ui/admin", "Admin", path.startsWith("/ui/admin")));
    this.nav.replaceChildren(...links);
    const feed = this.store?.feedState || "connecting";
    const live = feed === "open";
    this.header.replaceChildren(
      el(
        "span",
        {
          class: `feed-state ${live ? "live" : "off"}`,
          title: live ? "Live updates are on" : "Reconnecting to live updates…",
          dataset: { state: feed },
        },
        el("span", { class: "dot", "aria-hidden": "true" }),
        el("span", { class: "feed-label" }, live ? "live" : "offline"),
      ),
      el("span", { class: "user", id: "current-user" }, this.store?.userId || this.user.user_id || ""),
      el("button", { type: "button", class: "secondary small", id: "sign-out", onclick: () => this.signOut() }, "Sign out"),
    );
  }

  showSignIn(message) {
    document.body.classList.add("signed-out");
    this.renderHeader();
    document.title = "Sign in · runyard";
    const input = el("input", {
      id: "token",
      name: "token",
      type: "password",
      autocomplete: "current-password",
      required: true,
      spellcheck: "false",
      "aria-describedby": "token-hint token-error",
    });
    const error = el("p", { class: "field-error", id: "token-error", role: "alert", hidden: !message }, message || "");
    const button = el("button", { type: "submit", class: "primary" }, "Sign in");
    const form = el(
      "form",
      { id: "signin-form", class: "card signin", novalidate: true },
      el("h1", { tabindex: "-1" }, "Sign in to runyard"),
      el(
        "div",
        { class: "field" },
        el("label", { for: "token" }, "Access token"),
        input,
        el(
          "p",
          { class: "hint", id: "token-hint" },
          "A token from RUNYARD_TOKENS, or open the link that ",
          el("code", {}, "runyard serve"),
          " printed.",
        ),
        error,
      ),
      el("div", { class: "form-actions" }, button),
    );
    const setError = (text) => {
      error.textContent = text;
      error.hidden = !text;
      if (text) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) {
        setError("Enter your token.");
        input.focus();
        return;
      }
      button.disabled = true;
      try {
        await this.signIn(token);
      } catch (err) {
        setError(err.status === 401 ? "That token was not accepted." : err.message);
        input.select();
      } finally {
        button.disabled = false;
      }
    });
    this.main.replaceChildren(el("div", { class: "signin-wrap" }, form));
    input.focus();
  }

  showFatal(err) {
    this.main.replaceChildren(
      el(
        "div",
        { class: "card run-error", role: "alert" },
        el("h1", {}, "The server did not answer"),
        el("p", { class: "error-message" }, err.message),
        el("button", { type: "button", class: "primary", onclick: () => location.reload() }, "Try again"),
      ),
    );
  }

  // ------------------------------------------------------------ routing
  navigate(path) {
    if (path !== location.pathname + location.search) history.pushState(null, "", path);
    this.route();
  }

  route() {
    if (!this.user) return;
    this.view?.destroy();
    this.view = null;
    const path = location.pathname;
    let make = null;
    for (const [re, factory] of ROUTES) {
      const m = path.match(re);
      if (m) {
        make = factory(m);
        break;
      }
    }
    if (!make) {
      document.title = "Not found · runyard";
      this.main.replaceChildren(
        el(
          "div",
          { class: "card run-error" },
          el("h1", { tabindex: "-1" }, "Page not found"),
          el("p", {}, el("a", { href: "/" }, "Go to your runs")),
        ),
      );
      this.renderHeader();
      return;
    }
    this.view = make(this);
    this.main.replaceChildren(this.view.node);
    this.renderHeader();
    // Move focus to the new page's heading (screen readers announce it), but
    // not on first load, where focus belongs to the browser.
    if (this._routed) this.view.heading?.focus({ preventScroll: false });
    this._routed = true;
    window.scrollTo(0, 0);
  }

  _interceptLink(event) {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const a = event.target.closest?.("a[href]");
    if (!a || a.target || a.hasAttribute("download")) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin) return;
    if (url.pathname !== "/" && !url.pathname.startsWith("/ui/")) return;
    event.preventDefault();
    this.navigate(url.pathname + url.search);
  }
}

const app = new App();
window.runyard = app; // for debugging in the console
app.boot();
