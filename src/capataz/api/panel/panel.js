// The panel's entry point: sign-in, sign-out, hash routing and the sidebar summary.
// Each section lives in views/*.js and exports render(root, params) -> cleanup.

import { api, session } from "./api.js";
import { clearBanner, fill, h, setLiveStatus, showError } from "./dom.js";
import * as runs from "./views/runs.js";
import * as tasks from "./views/tasks.js";
import * as ops from "./views/ops.js";
import * as features from "./views/features.js";

const ROUTES = [
  [/^runs$/, "runs", () => runs.renderList],
  [/^runs\/([^/]+)$/, "runs", () => runs.renderRun],
  [/^tasks$/, "tasks", () => tasks.render],
  [/^runners$/, "runners", () => ops.renderRunners],
  [/^escalations$/, "escalations", () => ops.renderEscalations],
  [/^directives$/, "directives", () => features.renderDirectives],
  [/^requests$/, "requests", () => features.renderRequests],
  [/^setup$/, "setup", () => features.renderSetup],
];

let cleanup = null;
let summaryTimer = null;

function $(id) {
  return document.getElementById(id);
}

function route() {
  const path = decodeURIComponent(window.location.hash.replace(/^#\/?/, "")) || "runs";
  for (const [pattern, section, view] of ROUTES) {
    const match = pattern.exec(path);
    if (match) return { section, view: view(), args: match.slice(1) };
  }
  return null;
}

function show() {
  if (!session.token()) return;
  if (cleanup) cleanup();
  cleanup = null;
  clearBanner();
  setLiveStatus("");
  const root = $("view");
  const found = route();
  for (const link of document.querySelectorAll(".sidebar a[data-section]")) {
    link.classList.toggle("active", Boolean(found) && link.dataset.section === found.section);
  }
  if (!found) {
    fill(root, h("div", { class: "empty", text: `No section ${window.location.hash}.` }));
    return;
  }
  fill(root);
  const done = found.view(root, ...found.args);
  cleanup = typeof done === "function" ? done : null;
}

async function summary() {
  try {
    const { data } = await api("/ops/metrics");
    const tasks = data.tasks || {};
    const lines = [
      `ready ${tasks.ready ?? 0} · running ${tasks.running ?? 0}`,
      `escalated ${tasks.escalated ?? 0} · failed ${tasks.failed ?? 0}`,
      `runners online ${data.runners ? data.runners.online : 0}`,
    ];
    $("summary").textContent = lines.join("\n");
  } catch {
    $("summary").textContent = "";
  }
}

function enter() {
  $("signin").hidden = true;
  $("app").hidden = false;
  show();
  summary();
  clearInterval(summaryTimer);
  summaryTimer = setInterval(summary, 10000);
}

function leave(message) {
  if (cleanup) cleanup();
  cleanup = null;
  clearInterval(summaryTimer);
  session.signOut();
  $("app").hidden = true;
  $("signin").hidden = false;
  $("token-input").value = "";
  const error = $("signin-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("token-input").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token-input").value.trim();
  const error = $("signin-error");
  error.hidden = true;
  if (!token) return;
  const button = $("signin-button");
  button.disabled = true;
  try {
    // Any read checks the token; /ops/metrics is the cheapest.
    await api("/ops/metrics", { token });
  } catch (err) {
    // A runner token is valid but may not read: say so instead of half-working.
    error.textContent = `Sign-in failed: ${err.describe ? err.describe() : err.message}`;
    error.hidden = false;
    return;
  } finally {
    button.disabled = false;
  }
  session.signIn(token);
  if (!window.location.hash) window.location.hash = "#/runs";
  enter();
}

function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => leave(""));
  $("banner-close").addEventListener("click", clearBanner);
  window.addEventListener("hashchange", show);
  window.addEventListener("unhandledrejection", (event) => showError(event.reason));
  if (session.token()) enter();
  else leave("");
}

start();
