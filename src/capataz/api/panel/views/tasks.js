// Tasks: the backlog filtered by status and paged, queueing a new task, requeue (with a
// backoff) and cancel, and the dependency graph as an indented tree.

import { api } from "../api.js";
import { act, badge, confirmButton, fill, h, live, showError, showNotice, table, time } from "../dom.js";

const STATUSES = ["pending", "ready", "running", "escalated", "done", "failed", "blocked", "cancelled"];
const REQUEUEABLE = new Set(["failed", "blocked", "cancelled", "escalated"]);
const ENDED = new Set(["done", "failed", "blocked", "cancelled"]);
const PAGE = 50;

function taskForm(onCreated) {
  const field = (label, input) => [h("label", { for: input.id, text: label }), input];
  const title = h("input", { id: "new-title", name: "title", placeholder: "(from the instruction)" });
  const instruction = h("textarea", { id: "new-instruction", name: "instruction", required: true });
  const agent = h("input", { id: "new-agent", name: "agent", placeholder: "(the project's default)" });
  const priority = h("input", { id: "new-priority", name: "priority", type: "number", value: "0", step: "1" });
  const depends = h("input", { id: "new-depends", name: "depends_on", placeholder: "t-…, t-… (comma separated)" });
  const submit = h("button", { type: "submit", class: "primary", text: "Queue task" });
  const form = h(
    "form",
    { class: "card form-grid", "data-form": "new-task" },
    field("Title", title),
    field("Instruction", instruction),
    field("Agent", agent),
    field("Priority", priority),
    field("Depends on", depends),
    h("span"),
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = {
      instruction: instruction.value,
      priority: Number(priority.value || 0),
      depends_on: depends.value.split(",").map((s) => s.trim()).filter(Boolean),
    };
    if (title.value.trim()) body.title = title.value.trim();
    if (agent.value.trim()) body.agent = agent.value.trim();
    act(submit, async () => {
      const { data } = await api("/ops/tasks", { method: "POST", body });
      showNotice(`Task ${data.id} queued (${data.status}).`);
      form.reset();
      onCreated();
    });
  });
  return form;
}

function dependencyTree(tasks) {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const dependents = new Map(tasks.map((t) => [t.id, []]));
  for (const task of tasks) {
    for (const dep of task.depends_on || []) if (dependents.has(dep)) dependents.get(dep).push(task.id);
  }
  const roots = tasks.filter((t) => !(t.depends_on || []).some((d) => byId.has(d)));
  const item = (task, path) => {
    const children = dependents.get(task.id).filter((id) => !path.has(id));
    const deps = task.depends_on || [];
    return h(
      "li",
      { "data-tree-task": task.id },
      badge(task.status),
      " ",
      h("span", { class: "mono", text: task.id }),
      " ",
      task.title,
      deps.length ? h("span", { class: "muted", text: `  ← needs ${deps.join(", ")}` }) : null,
      children.length
        ? h("ul", { class: "tree" }, children.map((id) => item(byId.get(id), new Set([...path, id]))))
        : null,
    );
  };
  if (!tasks.length) return h("div", { class: "empty", text: "No tasks yet." });
  return h(
    "div",
    { class: "card" },
    h("p", { class: "muted", text: "Each task is listed under the tasks it depends on; tasks without dependencies start a tree." }),
    h("ul", { class: "tree root" }, roots.map((t) => item(t, new Set([t.id])))),
  );
}

export function render(root) {
  const state = { status: "", offset: 0, mode: "table" };
  const select = h(
    "select",
    { name: "status", "aria-label": "Task status" },
    h("option", { value: "", text: "all statuses" }),
    STATUSES.map((s) => h("option", { value: s, text: s })),
  );
  const backoff = h("input", { id: "requeue-backoff", type: "number", min: "0", step: "1", value: "0", class: "narrow" });
  const body = h("div", { "data-view": "tasks" });
  const pager = h("div", { class: "pager" });
  const formSlot = h("div");
  const modeButton = h("button", { type: "button", text: "Dependencies" });
  const newButton = h("button", { type: "button", class: "primary", text: "New task" });

  select.addEventListener("change", () => {
    state.status = select.value;
    state.offset = 0;
    refresh();
  });
  modeButton.addEventListener("click", () => {
    state.mode = state.mode === "table" ? "tree" : "table";
    modeButton.textContent = state.mode === "table" ? "Dependencies" : "Table";
    refresh();
  });
  newButton.addEventListener("click", () => {
    if (formSlot.firstChild) fill(formSlot);
    else fill(formSlot, taskForm(refresh));
  });

  fill(
    root,
    h("h1", { text: "Tasks" }),
    h(
      "div",
      { class: "toolbar" },
      h("label", { text: "Status " }, select),
      h("label", { for: "requeue-backoff", text: "Requeue backoff (s)" }),
      backoff,
      h("span", { class: "spacer" }),
      modeButton,
      newButton,
    ),
    formSlot,
    body,
    pager,
  );

  function actions(task) {
    const buttons = [];
    if (REQUEUEABLE.has(task.status)) {
      const button = h("button", { type: "button", "data-action": "requeue", text: "Requeue" });
      button.addEventListener("click", () =>
        act(button, async () => {
          const backoffSeconds = Math.max(0, Number(backoff.value || 0));
          const { data } = await api(`/ops/tasks/${encodeURIComponent(task.id)}/requeue`, {
            method: "POST",
            body: { backoff_seconds: backoffSeconds },
          });
          showNotice(`Task ${data.id} requeued: ${data.status}.`);
          refresh();
        }),
      );
      buttons.push(button);
    }
    if (!ENDED.has(task.status)) {
      buttons.push(
        confirmButton(
          "Cancel",
          (button) =>
            act(button, async () => {
              const { data } = await api(`/ops/tasks/${encodeURIComponent(task.id)}/cancel`, { method: "POST", body: {} });
              showNotice(`Task ${data.id} cancelled.`);
              refresh();
            }),
          { "data-action": "cancel" },
        ),
      );
    }
    return h("div", { class: "actions" }, buttons);
  }

  let shown = null;
  let calls = 0; // only the newest call's answer is shown
  async function refresh() {
    const call = ++calls;
    const tree = state.mode === "tree";
    let found;
    try {
      found = await api("/ops/tasks", {
        params: { status: state.status, limit: tree ? 1000 : PAGE, offset: tree ? 0 : state.offset },
      });
    } catch (error) {
      if (call === calls) showError(error);
      return;
    }
    if (call !== calls) return; // a newer refresh was started meanwhile
    const rows = found.data;
    const key = JSON.stringify([state, found]);
    if (key === shown) return; // unchanged: keep the page (and any half-clicked button)
    shown = key;
    if (tree) {
      fill(body, dependencyTree(rows));
      fill(pager);
      return;
    }
    fill(
      body,
      table(
        [
          ["Task", (t) => [h("div", { text: t.title }), h("div", { class: "sub mono", text: t.id })], "wrap"],
          ["Status", (t) => badge(t.status)],
          ["Agent", (t) => t.agent],
          ["Prio", (t) => t.priority, "num"],
          ["Attempts", (t) => `${t.attempts}/${t.max_attempts}`, "num"],
          ["Depends on", (t) => h("span", { class: "mono", text: (t.depends_on || []).join(", ") || "–" }), "wrap"],
          ["Reason", (t) => t.reason || "–", "wrap"],
          ["Updated", (t) => time(t.updated_at)],
          ["", actions],
        ],
        rows,
        { empty: state.status ? `No ${state.status} tasks.` : "No tasks yet.", rowAttrs: (t) => ({ "data-task": t.id, "data-status": t.status }) },
      ),
    );
    const total = found.total ?? state.offset + rows.length;
    fill(
      pager,
      h("button", { type: "button", text: "← Previous", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - PAGE); refresh(); } }),
      h("button", { type: "button", text: "Next →", disabled: state.offset + rows.length >= total, onclick: () => { state.offset += PAGE; refresh(); } }),
      h("span", { class: "muted", text: `${rows.length ? state.offset + 1 : 0}–${state.offset + rows.length} of ${total}` }),
    );
  }

  refresh();
  return live({ types: "task.created,task.state" }, refresh);
}
