// Directives, credential requests and setup: sections whose API endpoints capataz does
// not serve yet. Each calls its endpoint and says so honestly on 404, and shows the data
// as soon as the endpoint exists.

import { api } from "../api.js";
import { act, badge, emptyState, fill, h, showError, showNotice, table } from "../dom.js";

const MISSING = {
  directives: "capataz has no planner directives yet — this section fills when the feature exists.",
  requests: "capataz has no credential requests yet — this section fills when the feature exists.",
  setup: "capataz has no credential setup yet — this section fills when credential requests exist.",
};

/** GET path: the data, or null (after showing the empty state) when it is not served. */
async function load(path, body, missing) {
  try {
    const { data } = await api(path);
    return data;
  } catch (error) {
    if (error.status === 404) fill(body, emptyState(missing));
    else {
      fill(body);
      showError(error);
    }
    return null;
  }
}

function cell(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "object") return h("span", { class: "mono", text: JSON.stringify(value) });
  return String(value);
}

/** Any list of objects as a table, columns from the keys (status-like ones as badges). */
function genericTable(rows, empty) {
  const keys = [...new Set(rows.flatMap((row) => Object.keys(row || {})))];
  return table(
    keys.map((key) => [key, (row) => (/status|state/.test(key) && row[key] ? badge(row[key]) : cell(row[key])), "wrap"]),
    rows,
    { empty },
  );
}

function section(root, title, intro) {
  const body = h("div", { "data-view": title.toLowerCase() });
  fill(root, h("h1", { text: title }), h("p", { class: "muted", text: intro }), body);
  return body;
}

export function renderDirectives(root) {
  const body = section(root, "Directives", "Instructions from the planner to the agents, and whether they were applied.");
  load("/ops/directives", body, MISSING.directives).then((data) => {
    if (data !== null) fill(body, genericTable(Array.isArray(data) ? data : [data], "No directives."));
  });
}

function requestsTable(requests) {
  return table(
    [
      ["Name", (r) => h("span", { class: "mono", text: r.name })],
      ["Description", (r) => r.description || "–", "wrap"],
      ["Status", (r) => badge(r.status)],
      ["Agents", (r) => (Array.isArray(r.agents) ? r.agents.join(", ") : cell(r.agents))],
    ],
    requests,
    { empty: "No credential requests.", rowAttrs: (r) => ({ "data-request": r.id }) },
  );
}

export function renderRequests(root) {
  const body = section(root, "Requests", "Credentials the agents asked for, and whether they were provided.");
  load("/ops/requests", body, MISSING.requests).then((data) => {
    if (data !== null) fill(body, requestsTable(Array.isArray(data) ? data : []));
  });
}

function valueForm(request, onSaved) {
  const input = h("input", { type: "password", name: "value", autocomplete: "off", "aria-label": `Value of ${request.name}`, required: true });
  const save = h("button", { type: "submit", class: "primary", text: "Save" });
  const form = h(
    "form",
    { class: "card form-grid", "data-setup": request.id },
    h("label", { text: request.name }),
    h("div", {}, h("div", { class: "muted", text: request.description || "" }), input),
    h("span"),
    h("div", { class: "actions" }, save, badge(request.status)),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(save, async () => {
      await api(`/ops/requests/${encodeURIComponent(request.id)}/value`, { method: "POST", body: { value: input.value } });
      input.value = "";
      showNotice(`${request.name} saved.`);
      onSaved();
    });
  });
  return form;
}

export function renderSetup(root) {
  const body = section(root, "Setup", "Provide the credentials the agents are waiting for; values are sent to the API once and never shown again.");
  const refresh = () =>
    load("/ops/requests", body, MISSING.setup).then((data) => {
      if (data === null) return;
      const requests = Array.isArray(data) ? data : [];
      const waiting = requests.filter((r) => r.status === "WAITING");
      fill(
        body,
        waiting.length ? waiting.map((r) => valueForm(r, refresh)) : emptyState("Every requested credential is provided."),
        h("h2", { text: "All requests" }),
        requestsTable(requests),
      );
    });
  refresh().catch(showError);
}
