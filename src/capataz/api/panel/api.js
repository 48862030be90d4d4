// Talking to the control plane: JSON calls with the bearer token, and the live event
// stream read with fetch() (EventSource cannot send an Authorization header).

const TOKEN_KEY = "capataz.token";

export const session = {
  token() { return sessionStorage.getItem(TOKEN_KEY); },
  signIn(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  signOut() { sessionStorage.removeItem(TOKEN_KEY); },
};

/** An API refusal: the HTTP status and the API's own code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  describe() {
    return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
  }
}

function urlFor(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url;
}

function authHeaders() {
  const token = session.token();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function errorOf(response) {
  try {
    const payload = await response.json();
    if (payload && payload.error) {
      return new ApiError(response.status, payload.error.code, payload.error.message);
    }
  } catch {
    // not JSON: fall through to the status line
  }
  return new ApiError(response.status, "http", response.statusText || "unexpected answer");
}

/** Call the API; resolves to {data, total} or throws an ApiError with its message. */
export async function api(path, { method = "GET", body, params, token } = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(urlFor(path, params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "network", `cannot reach the server (${err.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  const payload = await response.json();
  if (!payload || payload.ok !== true) {
    throw new ApiError(response.status, "invalid", "the server answered without ok: true");
  }
  const total = response.headers.get("X-Total-Count");
  return { data: payload.data, total: total === null ? null : Number(total) };
}

/**
 * Server-Sent Events frames from text chunks: `id:`, `event:` and `data:` lines, a blank
 * line ends a frame, lines starting with ':' are comments (keep-alives).
 */
export class SseParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.id = null;
    this.event = "message";
    this.data = [];
  }

  push(chunk) {
    this.buffer += chunk;
    const lines = this.buffer.split(/\r?\n/);
    this.buffer = lines.pop();
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length || this.id !== null) {
        this.onFrame({ id: this.id, event: this.event, data: this.data.join("\n") });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id") this.id = value;
  }
}

/**
 * Follow GET /events with `params` (run_id, task_id, types). Calls onEvent(event) for
 * each parsed event and onStatus(state, detail) with "live" (detail.resumed: after
 * the last event seen, so nothing was missed), "reconnecting",
 * "unavailable" (the server has no /events: the caller polls instead) or "refused".
 * Reconnects after errors with Last-Event-ID so nothing is missed. Returns {close()}.
 */
export function subscribe(params, onEvent, onStatus = () => {}) {
  let lastId = null;
  let stopped = false;
  let controller = null;
  let timer = null;
  let delay = 1000;

  function retry(error) {
    if (stopped) return;
    onStatus("reconnecting", error);
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, 15000);
  }

  function dispatch(frame) {
    if (frame.id !== null) lastId = frame.id;
    if (!frame.data) return;
    let event;
    try {
      event = JSON.parse(frame.data);
    } catch {
      return;
    }
    if (event && typeof event === "object") onEvent(event);
  }

  async function connect() {
    if (stopped) return;
    controller = new AbortController();
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    const resumed = lastId !== null;
    if (resumed) headers["Last-Event-ID"] = lastId;
    let response;
    try {
      response = await fetch(urlFor("/events", params), {
        headers,
        signal: controller.signal,
        cache: "no-store",
      });
    } catch (err) {
      retry(err);
      return;
    }
    if (response.status === 404 || response.status === 405) {
      stopped = true;
      onStatus("unavailable", await errorOf(response));
      return;
    }
    if (response.status === 401 || response.status === 403) {
      stopped = true;
      onStatus("refused", await errorOf(response));
      return;
    }
    if (!response.ok || !response.body) {
      retry(await errorOf(response));
      return;
    }
    onStatus("live", { resumed });
    delay = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser(dispatch);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
    } catch (err) {
      if (stopped) return;
      retry(err);
      return;
    }
    retry(new Error("the event stream ended"));
  }

  connect();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      if (controller) controller.abort();
    },
  };
}
