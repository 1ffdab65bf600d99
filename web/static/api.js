// The authenticated JSON API, as the dashboard uses it.
//
// Every call rides on the HttpOnly session cookie (same origin), so no token
// is ever kept in JavaScript after sign-in.  Errors come back in the server's
// one shape, {error: {code, message}}, and are thrown as ApiError so views can
// show `message` next to the field that caused it.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

// Called when any request answers 401 (not signed in, or the session ended).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}
export function notifyUnauthorized() {
  onUnauthorized();
}

export async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText || "error"}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

/**
 * fetch + JSON + errors.  `opts.token` sends a bearer token instead of the
 * cookie (only POST /auth/session needs it); `opts.quiet401` keeps a 401 from
 * signing the page out (the sign-in form's own wrong-token answer).
 */
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "network_error", `cannot reach the server (${err.message})`);
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && !opts.quiet401) onUnauthorized();
    throw error;
  }
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}
