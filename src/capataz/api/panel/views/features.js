// Directives, credential requests and setup. Directives are the planner's proposals
// (docs/planner.md): each with its tasks, and Apply / Reject while it is PENDING (the API
// refuses those to roles below operator, and the banner says so). Each section calls
// its endpoint and says so honestly on 404 (an older server without it).

import { api } from "../api.js";
import { act, badge, confirmButton, emptyState, fill, h, showError, showNotice, table, time } from "../dom.js";

const MISSING = {
  directives: "this server has no planner directives (GET /ops/directives answered 404).",
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

function section(root, title, intro) {
  const body = h("div", { "data-view": title.toLowerCase() });
  fill(root, h("h1", { text: title }), h("p", { class: "muted", text: intro }), body);
  return body;
}

function proposedTable(tasks) {
  return table(
    [
      ["Name", (t) => h("span", { class: "mono", text: t.name })],
      ["Title", (t) => t.title || "–", "wrap"],
      ["Agent", (t) => t.agent || "(default)"],
      ["Depends on", (t) => (t.depends_on.length ? t.depends_on.join(", ") : "–")],
    ],
    tasks,
    { empty: "No tasks proposed.", rowAttrs: (t) => ({ "data-proposed": t.name }) },
  );
}

function directiveCard(directive, onDecided) {
  const facts = [`model ${directive.model} · proposed `, time(directive.created_at)];
  if (directive.decided_at) facts.push(" · decided ", time(directive.decided_at), ` by ${directive.decided_by}`);
  const card = h(
    "div",
    { class: "card", "data-directive": directive.id },
    h("h2", {}, h("span", { text: `${directive.title} ` }), badge(directive.status)),
    h("p", { class: "wrap", text: directive.rationale || "" }),
    proposedTable(directive.tasks || []),
    directive.reason ? h("p", { class: "wrap", "data-reason": "", text: `Reason: ${directive.reason}` }) : null,
    directive.created_task_ids.length
      ? h("p", { class: "muted mono", text: `Tasks: ${directive.created_task_ids.join(", ")}` })
      : null,
    h("p", { class: "muted" }, facts),
  );
  if (directive.status !== "PENDING") return card;
  const path = `/ops/directives/${encodeURIComponent(directive.id)}`;
  const apply = h("button", { type: "button", class: "primary", "data-action": "apply", text: "Apply" });
  apply.addEventListener("click", () =>
    act(apply, async () => {
      const { data } = await api(`${path}/apply`, { method: "POST" });
      showNotice(`Directive ${data.id} applied: ${data.created_task_ids.length} task(s) queued.`);
      onDecided();
    }),
  );
  const reason = h("input", { type: "text", name: "reason", placeholder: "Why reject it?", "aria-label": "Reason" });
  const reject = confirmButton(
    "Reject",
    (button) =>
      act(button, async () => {
        const { data } = await api(`${path}/reject`, { method: "POST", body: { reason: reason.value || "rejected in the panel" } });
        showNotice(`Directive ${data.id} rejected.`);
        onDecided();
      }),
    { "data-action": "reject" },
  );
  card.append(h("div", { class: "actions" }, apply, reason, reject));
  return card;
}

export function renderDirectives(root) {
  const body = section(root, "Directives", "Proposals of the planner (`capataz plan`, POST /ops/gpt/run): apply one to queue its tasks, or reject it.");
  const refresh = () =>
    load("/ops/directives", body, MISSING.directives).then((data) => {
      if (data === null) return;
      const directives = Array.isArray(data) ? data : [];
      fill(
        body,
        directives.length
          ? directives.map((d) => directiveCard(d, refresh))
          : emptyState("No directives yet: `capataz plan` or POST /ops/gpt/run asks the planner for some."),
      );
    });
  refresh().catch(showError);
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
