// Building the page safely: every piece of API data becomes a text node (never markup),
// plus the shared pieces every view uses (badges, tables, the banner, live refresh).

import { ApiError, subscribe } from "./api.js";

/** An element: props are attributes, `class`, `text` or on<event> handlers. */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

const TONES = {
  ok: ["done", "finished", "succeeded", "landed", "online", "approve", "completed", "continue", "provided", "applied"],
  info: ["running", "ready", "started", "pending", "modify", "in_progress"],
  warn: ["escalated", "escalate", "waiting", "released", "awaiting_human", "medium", "low"],
  bad: [
    "failed", "blocked", "lost", "reject", "rejected", "abort", "aborted", "offline",
    "high", "critical", "error", "rolled_back",
  ],
};

export function tone(status) {
  const value = String(status || "").toLowerCase();
  for (const [name, values] of Object.entries(TONES)) if (values.includes(value)) return name;
  return "";
}

export function badge(status) {
  if (status === null || status === undefined || status === "") return h("span", { class: "muted", text: "–" });
  return h("span", { class: `badge ${tone(status)}`.trim(), "data-status": status, text: status });
}

/** An ISO time as local "YYYY-MM-DD HH:MM:SS", just the clock for today (the full
 * value on hover). */
export function time(value) {
  if (!value) return h("span", { class: "muted", text: "–" });
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return h("span", { text: value });
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  const today = new Date();
  const sameDay = today.toDateString() === date.toDateString();
  const text = sameDay ? clock : `${day} ${clock}`;
  return h("time", { datetime: value, title: value, text });
}

export function ago(value) {
  if (!value) return "–";
  const seconds = Math.max(0, Math.round((Date.now() - new Date(value).getTime()) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

/**
 * A table: columns are [header, row => cell content, optional class]. An empty list
 * shows `empty` instead of an empty table.
 */
export function table(columns, rows, { empty = "Nothing here.", rowAttrs } = {}) {
  if (!rows.length) return h("div", { class: "empty", text: empty });
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { text: title })))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          rowAttrs ? rowAttrs(row) : {},
          columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row))),
        ),
      ),
    ),
  );
}

export function emptyState(text) {
  return h("div", { class: "empty", "data-empty": "true", text });
}

/** A unified diff with added, removed, hunk and header lines coloured. */
export function diffPane(text) {
  const pane = h("pre", { class: "pane diff", "data-pane": "diff" });
  for (const line of String(text).replace(/\n$/, "").split("\n")) {
    let cls = "ctx";
    if (/^(diff --git|index |--- |\+\+\+ |new file|deleted file|similarity|rename |Binary )/.test(line)) cls = "meta";
    else if (line.startsWith("@@")) cls = "hunk";
    else if (line.startsWith("+")) cls = "add";
    else if (line.startsWith("-")) cls = "del";
    pane.append(h("span", { class: cls, text: line === "" ? " " : line }));
  }
  return pane;
}

// -- the banner: errors from the API, shown where nobody can miss them ----------------

export function showError(error) {
  const text = error instanceof ApiError ? error.describe() : String(error && error.message ? error.message : error);
  const banner = document.getElementById("banner");
  banner.classList.remove("notice");
  document.getElementById("banner-text").textContent = text;
  banner.hidden = false;
}

export function showNotice(text) {
  const banner = document.getElementById("banner");
  banner.classList.add("notice");
  document.getElementById("banner-text").textContent = text;
  banner.hidden = false;
}

export function clearBanner() {
  document.getElementById("banner").hidden = true;
}

/** Run an API action from a button: disabled while it runs, errors in the banner. */
export async function act(button, action) {
  button.disabled = true;
  try {
    await action();
    return true;
  } catch (error) {
    showError(error);
    return false;
  } finally {
    button.disabled = false;
  }
}

/** A button that asks for a second click before doing something hard to undo. */
export function confirmButton(label, action, attrs = {}) {
  const button = h("button", { type: "button", class: "danger", ...attrs, text: label });
  let armed = null;
  button.addEventListener("click", () => {
    if (!armed) {
      button.textContent = `Confirm ${label.toLowerCase()}?`;
      button.classList.add("confirming");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove("confirming");
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    button.classList.remove("confirming");
    action(button);
  });
  return button;
}

// -- live refresh -----------------------------------------------------------------------

export function setLiveStatus(state) {
  const node = document.getElementById("live-status");
  if (!node) return;
  const labels = { live: "live", polling: "polling", reconnecting: "reconnecting…", refused: "no live updates" };
  node.className = `live-status ${state || ""}`.trim();
  node.textContent = labels[state] || "";
}

/**
 * Keep a view fresh: refresh() after matching events (debounced), or every
 * `pollSeconds` when the server has no event stream. `onEvent` sees every event first
 * (returning false skips the refresh); `onState` hears the stream's state changes.
 * Returns a function that stops it.
 */
export function live(params, refresh, { onEvent, onState, pollSeconds = 5, debounceMs = 300 } = {}) {
  let timer = null;
  let poller = null;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, debounceMs);
  };
  const stream = subscribe(
    params,
    (event) => {
      if (onEvent && onEvent(event) === false) return;
      later();
    },
    (state, error) => {
      if (onState) onState(state, error);
      if (state === "unavailable") {
        setLiveStatus("polling");
        poller = setInterval(refresh, pollSeconds * 1000);
      } else if (state === "refused") {
        setLiveStatus("refused");
        showError(error);
      } else {
        if (state === "live") later(); // catch up on what happened while disconnected
        setLiveStatus(state);
      }
    },
  );
  return () => {
    stream.close();
    clearTimeout(timer);
    clearInterval(poller);
  };
}
